//! The audit log: every run-now, kill, maintenance change and reload, with the token's name.
//! `record` writes an entry (durably, before the handler answers); `GET /api/v1/audit` lists them.

use std::sync::Arc;

use axum::extract::State as AxumState;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::{Caller, Viewer};
use super::error::{ApiError, ErrorBody, Query, internal};
use super::{State, api::Shared};
use crate::store::{AuditRow, Write};

pub(super) fn routes() -> Router<Arc<State>> {
    Router::new().route("/api/v1/audit", get(list))
}

/// Writes an audit entry; a failure is logged, never hidden from the log.
pub(super) async fn record(state: &State, caller: &Caller, action: &str, detail: String) {
    let write = Write::Audit {
        at: Utc::now(),
        actor: caller.name.clone(),
        action: action.to_owned(),
        detail,
    };
    if let Err(e) = state.store.write_durable(write).await {
        tracing::error!(error = %e, action, actor = %caller.name, "Cannot write an audit record.");
    }
}

/// Who did what.
#[derive(Serialize, ToSchema)]
pub(super) struct AuditDto {
    id: i64,
    at: DateTime<Utc>,
    /// The token's name.
    actor: String,
    /// `run`, `kill`, `maintenance.start`, `maintenance.end`, `reload`.
    action: String,
    detail: String,
}

impl From<AuditRow> for AuditDto {
    fn from(r: AuditRow) -> Self {
        AuditDto { id: r.id, at: r.at, actor: r.actor, action: r.action, detail: r.detail }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditQuery {
    /// Only entries with an id below this (the last id of the previous page).
    before: Option<i64>,
    /// Entries per page (default 100, at most 1000).
    limit: Option<u32>,
}

/// The audit log, newest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = [AuditDto]), (status = 401, body = ErrorBody)))]
pub(super) async fn list(
    AxumState(state): Shared,
    _: Viewer,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<AuditDto>>, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = state.store.audit(q.before, limit).await.map_err(internal)?;
    Ok(Json(rows.into_iter().map(AuditDto::from).collect()))
}
