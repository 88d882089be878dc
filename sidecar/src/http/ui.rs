//! The web UI: plain ES modules and CSS from `ui/`, embedded in the binary at build time (no
//! bundler, no CDN, works offline). `/` is the shell; `/assets/NAME` the modules and styles. The
//! shell and assets need no token: the UI asks for one and sends it with every API call.

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::State;
use super::error::Path;

/// (name, content type, content).
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", "text/javascript", include_str!("../../../ui/app.js")),
    ("api.js", "text/javascript", include_str!("../../../ui/api.js")),
    ("views.js", "text/javascript", include_str!("../../../ui/views.js")),
    ("run.js", "text/javascript", include_str!("../../../ui/run.js")),
    ("timeline.js", "text/javascript", include_str!("../../../ui/timeline.js")),
    ("term.js", "text/javascript", include_str!("../../../ui/term.js")),
    ("util.js", "text/javascript", include_str!("../../../ui/util.js")),
    ("style.css", "text/css", include_str!("../../../ui/style.css")),
    ("favicon.svg", "image/svg+xml", include_str!("../../../ui/favicon.svg")),
];

const INDEX: &str = include_str!("../../../ui/index.html");

pub(super) fn routes() -> Router<Arc<State>> {
    Router::new().route("/", get(index)).route("/assets/{name}", get(asset))
}

/// Every response of the UI forbids framing and inline scripts from elsewhere.
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
                   style-src 'self'; script-src 'self'; frame-ancestors 'none'";

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX,
    )
        .into_response()
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, body)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::CONTENT_SECURITY_POLICY, CSP),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}
