//! Maintenance through the API: list what is in effect (the files' `saltpeter_maintenance`, the
//! entries set here, and the union the engine applies), set an entry (global, a minion, or a
//! target expression; with why and until), end one. Operators only; each change is audited by the
//! maintenance task with the token's name.

use std::sync::Arc;

use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::State;
use super::api::Shared;
use super::auth::{Operator, Viewer};
use super::error::{self, ApiError, ErrorBody, Path, internal};
use crate::maintenance::{Entry, MaintenanceError, NewEntry, Scope};
use crate::salt::{Target, TargetType};

pub(super) fn routes() -> Router<Arc<State>> {
    Router::new()
        .route("/api/v1/maintenance", get(list).post(start))
        .route("/api/v1/maintenance/{id}", delete(end))
}

/// A maintenance entry set through the API.
#[derive(Serialize, ToSchema)]
pub(super) struct EntryDto {
    id: i64,
    /// `global`, `minion` or `target`.
    scope: &'static str,
    /// The minion id or the target expression.
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_type: Option<&'static str>,
    /// The token that set it.
    who: String,
    why: String,
    created: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
    /// The minions a target covers now; none before its first resolution.
    #[serde(skip_serializing_if = "Option::is_none")]
    minions: Option<Vec<String>>,
}

impl From<Entry> for EntryDto {
    fn from(e: Entry) -> Self {
        let (scope, target, target_type, minions) = match e.scope {
            Scope::Global => ("global", None, None, None),
            Scope::Minion(id) => ("minion", Some(id), None, None),
            Scope::Target(t) => ("target", Some(t.expr), Some(t.kind.as_str()), e.minions),
        };
        EntryDto {
            id: e.id,
            scope,
            target,
            target_type,
            who: e.who,
            why: e.why,
            created: e.created,
            until: e.until,
            minions,
        }
    }
}

/// Machines out of rotation.
#[derive(Serialize, ToSchema)]
pub(super) struct MaintenanceDto {
    global: bool,
    machines: Vec<String>,
}

impl From<&crate::config::Maintenance> for MaintenanceDto {
    fn from(m: &crate::config::Maintenance) -> Self {
        MaintenanceDto { global: m.global, machines: m.machines.clone() }
    }
}

/// What is in effect.
#[derive(Serialize, ToSchema)]
pub(super) struct MaintenanceView {
    /// `saltpeter_maintenance` from the config files (and pillar).
    file: MaintenanceDto,
    /// Entries set through the API.
    entries: Vec<EntryDto>,
    /// What runs honour: the union of both.
    effective: MaintenanceDto,
}

/// Maintenance in effect.
#[utoipa::path(get, path = "/api/v1/maintenance", tag = "maintenance",
    responses((status = 200, body = MaintenanceView), (status = 401, body = ErrorBody)))]
pub(super) async fn list(AxumState(state): Shared, _: Viewer) -> Json<MaintenanceView> {
    let snapshot = state.maintenance.snapshot();
    Json(MaintenanceView {
        file: (&snapshot.file).into(),
        entries: snapshot.entries.iter().cloned().map(EntryDto::from).collect(),
        effective: (&snapshot.effective).into(),
    })
}

/// A new maintenance entry.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewEntryDto {
    /// `global`, `minion` or `target`.
    scope: String,
    /// The minion id (scope `minion`) or the target expression (scope `target`).
    #[serde(default)]
    target: Option<String>,
    /// Salt's target type for scope `target` (default `glob`).
    #[serde(default)]
    target_type: Option<String>,
    /// Why (shown in the UI and the audit log).
    why: String,
    /// When it ends by itself (RFC 3339); none = until ended.
    #[serde(default)]
    until: Option<DateTime<Utc>>,
}

fn scope(body: &NewEntryDto) -> Result<Scope, ApiError> {
    let target =
        || {
            body.target.as_deref().map(str::trim).filter(|t| !t.is_empty()).ok_or_else(|| {
                ApiError::bad_request(format!("scope {} needs a target", body.scope))
            })
        };
    match body.scope.as_str() {
        "global" => Ok(Scope::Global),
        "minion" => Ok(Scope::Minion(target()?.to_owned())),
        "target" => {
            let kind = match body.target_type.as_deref() {
                None | Some("") => TargetType::Glob,
                Some(t) => t
                    .parse::<TargetType>()
                    .map_err(|_| ApiError::bad_request(format!("unknown target_type {t:?}")))?,
            };
            Ok(Scope::Target(Target::new(target()?, kind)))
        }
        other => Err(ApiError::bad_request(format!(
            "unknown scope {other:?}; one of global, minion, target"
        ))),
    }
}

/// Puts the fleet, a minion or a target in maintenance (operator).
#[utoipa::path(post, path = "/api/v1/maintenance", tag = "maintenance", request_body = NewEntryDto,
    responses((status = 201, body = EntryDto), (status = 400, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
pub(super) async fn start(
    AxumState(state): Shared,
    Operator(caller): Operator,
    error::Json(body): error::Json<NewEntryDto>,
) -> Result<(StatusCode, Json<EntryDto>), ApiError> {
    let scope = scope(&body)?;
    if body.why.trim().is_empty() {
        return Err(ApiError::bad_request("say why (the field `why`)"));
    }
    let entry = NewEntry { scope, who: caller.name, why: body.why, until: body.until };
    match state.maintenance.start(entry).await {
        Ok(e) => Ok((StatusCode::CREATED, Json(e.into()))),
        Err(MaintenanceError::Past(at)) => {
            Err(ApiError::bad_request(format!("until {} is in the past", at.to_rfc3339())))
        }
        Err(e) => Err(internal(e)),
    }
}

/// Ends a maintenance entry (operator).
#[utoipa::path(delete, path = "/api/v1/maintenance/{id}", tag = "maintenance",
    params(("id" = i64, Path)),
    responses((status = 200, body = EntryDto), (status = 404, body = ErrorBody)))]
pub(super) async fn end(
    AxumState(state): Shared,
    Operator(caller): Operator,
    Path(id): Path<i64>,
) -> Result<Json<EntryDto>, ApiError> {
    match state.maintenance.end(id, &caller.name).await {
        Ok(e) => Ok(Json(e.into())),
        Err(e @ MaintenanceError::NotFound(_)) => Err(ApiError::not_found(e.to_string())),
        Err(e) => Err(internal(e)),
    }
}
