//! The OpenAPI 3.1 document at `/api/v1/openapi.json`, generated from the handlers' `utoipa`
//! annotations, so it cannot drift from the code.

use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{State, api, audit, compat, jobs, maint};

#[derive(OpenApi)]
#[openapi(
    info(title = "Saltpeter", description = "Distributed cron for SaltStack fleets: the sidecar's API. \
        Send `Authorization: Bearer <secret>`; roles: viewer (read), operator (run, kill, \
        maintenance), admin (reload)."),
    paths(
        api::version, api::whoami, api::runs, api::run, api::output, api::kill,
        jobs::list, jobs::one, jobs::preview, jobs::matrix, jobs::run_now, jobs::reload,
        maint::list, maint::start, maint::end,
        audit::list,
        compat::status, compat::kill,
    ),
    modifiers(&Bearer, &Errors),
    security(("token" = [])),
)]
struct Doc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The error answers every route can give, added to each operation that does not say them: 401
/// (no token), 400 (a bad path or query value) where it takes parameters, 403 for actions, and
/// for JSON bodies 413 (too large), 415 (not JSON) and 422 (wrong fields).
struct Errors;

impl Modify for Errors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::HttpMethod;
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |what: &str| {
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build(),
                )
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            let ops = [
                (HttpMethod::Get, item.get.as_mut()),
                (HttpMethod::Post, item.post.as_mut()),
                (HttpMethod::Delete, item.delete.as_mut()),
            ];
            for (method, op) in ops {
                let Some(op) = op else { continue };
                let mut add = |code: &str, what: &str| {
                    op.responses
                        .responses
                        .entry(code.to_owned())
                        .or_insert_with(|| error(what).into());
                };
                add("401", "No valid token.");
                if op.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
                    add("400", "A path or query value is not valid.");
                }
                if method != HttpMethod::Get {
                    add("403", "The token's role may not do this.");
                }
                if op.request_body.is_some() {
                    add("400", "The body is not valid JSON.");
                    add("413", "The body is larger than 64 KiB.");
                    add("415", "The body is not sent as application/json.");
                    add("422", "The body's fields are wrong or missing.");
                }
            }
        }
    }
}

/// The document.
pub(super) fn document() -> utoipa::openapi::OpenApi {
    let mut doc = Doc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

pub(super) fn routes() -> Router<Arc<State>> {
    Router::new().route("/api/v1/openapi.json", get(|| async { Json(document()) }))
}
