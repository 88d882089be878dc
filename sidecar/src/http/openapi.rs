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
    modifiers(&Bearer),
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

/// The document.
pub(super) fn document() -> utoipa::openapi::OpenApi {
    let mut doc = Doc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

pub(super) fn routes() -> Router<Arc<State>> {
    Router::new().route("/api/v1/openapi.json", get(|| async { Json(document()) }))
}
