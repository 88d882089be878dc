//! Who is calling, and may they. Clients send `Authorization: Bearer SECRET` (the UI's WebSocket,
//! which cannot set headers, sends `?token=SECRET`); the secret's SHA-256 is looked up among the
//! configured `api_tokens`. With no token configured the API answers loopback callers only, as
//! `local` with the admin role, so a fresh install is usable from the master itself and from
//! nowhere else.
//!
//! The middleware puts a [`Caller`] in the request; handlers name the role they need with the
//! [`Viewer`], [`Operator`] and [`Admin`] extractors (401 without a token, 403 with a weaker one).
//! The rules are swapped on reload, so tokens can be added and revoked without a restart.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State as AxumState};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::State;
use super::error::ApiError;
use crate::config::{ApiToken, Role, Settings};

/// The rules in force: tokens and CORS origins. Cheap to clone; all clones see `update`s.
#[derive(Clone, Default)]
pub struct Access {
    inner: Arc<RwLock<Rules>>,
}

#[derive(Default)]
struct Rules {
    tokens: Vec<ApiToken>,
    cors_origins: Vec<String>,
}

impl Access {
    pub fn new(settings: &Settings) -> Access {
        let access = Access::default();
        access.update(settings);
        access
    }

    /// Takes the tokens and origins of a (re)loaded configuration.
    pub fn update(&self, settings: &Settings) {
        let mut rules = self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        rules.tokens.clone_from(&settings.api_tokens);
        rules.cors_origins.clone_from(&settings.api_cors_origins);
    }

    fn rules(&self) -> std::sync::RwLockReadGuard<'_, Rules> {
        self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether any token is configured (without one, only loopback is served).
    pub fn has_tokens(&self) -> bool {
        !self.rules().tokens.is_empty()
    }

    /// Who presents `secret`, if anyone.
    fn identify(&self, secret: &str) -> Option<Caller> {
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        self.rules()
            .tokens
            .iter()
            .find(|t| same(&t.sha256, &digest))
            .map(|t| Caller { name: t.name.clone(), role: t.role })
    }

    /// The CORS layer: browsers on the allow-listed origins only (none by default).
    pub fn cors(&self) -> CorsLayer {
        let access = self.clone();
        CorsLayer::new()
            .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
                let origin = origin.to_str().unwrap_or_default();
                access.rules().cors_origins.iter().any(|o| o == origin)
            }))
            .allow_methods([
                axum::http::Method::GET,
                axum::http::Method::POST,
                axum::http::Method::DELETE,
            ])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
    }
}

/// Compares two digests in time independent of where they differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh secret and its SHA-256 in hex (for `saltpeter token new`).
pub fn new_secret() -> (String, String) {
    use rand::RngCore as _;
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("sp_{}", hex::encode(bytes));
    let digest = hex::encode(Sha256::digest(secret.as_bytes()));
    (secret, digest)
}

/// The authenticated caller of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The token's name (what the audit log records).
    pub name: String,
    pub role: Role,
}

/// Paths served without a token: the UI's shell and assets (its login form asks for one) and the
/// API description.
fn is_public(path: &str) -> bool {
    path == "/" || path.starts_with("/assets/") || path == "/api/v1/openapi.json"
}

fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, secret) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| secret.trim())
}

/// `?token=` for the WebSocket only (browsers cannot set headers on it).
fn query_token(req: &Request) -> Option<String> {
    if req.uri().path() != "/ws" {
        return None;
    }
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == "token").then(|| v.to_owned())
    })
}

/// The middleware: identifies the caller or answers 401.
pub(super) async fn authenticate(
    AxumState(state): AxumState<Arc<State>>,
    mut req: Request,
    next: Next,
) -> Response {
    if is_public(req.uri().path()) {
        return next.run(req).await;
    }
    let presented = bearer(&req).map(str::to_owned).or_else(|| query_token(&req));
    let caller = match presented {
        Some(secret) => match state.access.identify(&secret) {
            Some(caller) => caller,
            None => return unauthorized("this token is not valid (unknown, or revoked)"),
        },
        None if !state.access.has_tokens() => {
            let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
            if !peer.is_some_and(|ip| ip.is_loopback()) {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "no api_tokens are configured, so the API answers loopback only; \
                     configure api_tokens (see `saltpeter token new`)",
                )
                .into_response();
            }
            Caller { name: "local".to_owned(), role: Role::Admin }
        }
        None => return unauthorized("send a token: Authorization: Bearer <secret>"),
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

fn unauthorized(message: &str) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn caller_with(parts: &Parts, role: Role) -> Result<Caller, ApiError> {
    let caller = parts
        .extensions
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "send a token"))?;
    if caller.role < role {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "token {:?} has the {} role; this needs {}",
                caller.name,
                caller.role.as_str(),
                role.as_str()
            ),
        ));
    }
    Ok(caller)
}

macro_rules! role_extractor {
    ($(#[$meta:meta])* $name:ident, $role:expr) => {
        $(#[$meta])*
        pub struct $name(pub Caller);

        impl<S: Send + Sync> FromRequestParts<S> for $name {
            type Rejection = ApiError;
            async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
                caller_with(parts, $role).map($name)
            }
        }
    };
}

role_extractor!(
    /// Any valid token.
    Viewer,
    Role::Viewer
);
role_extractor!(
    /// A token that may run, kill and set maintenance.
    Operator,
    Role::Operator
);
role_extractor!(
    /// A token that may do anything.
    Admin,
    Role::Admin
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_secret_matches_its_digest_and_nothing_else() {
        let (secret, digest) = new_secret();
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(&digest, &mut sha256).unwrap();
        let settings = Settings {
            api_tokens: vec![ApiToken { name: "ci".into(), sha256, role: Role::Operator }],
            ..Settings::default()
        };
        let access = Access::new(&settings);
        assert_eq!(
            access.identify(&secret),
            Some(Caller { name: "ci".into(), role: Role::Operator })
        );
        assert_eq!(access.identify("sp_wrong"), None);
        assert_ne!(new_secret().0, secret);
    }
}
