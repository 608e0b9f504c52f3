//! Sync jobs: start one for a connection, poll it.
use std::sync::Arc;

use axum::Router;
use axum::extract::{Extension, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use bankbridge_store::Scope;
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi};

use super::{PathId, guarded, json};
use crate::error::{ApiError, ErrorBody};
use crate::jobs::Trigger;
use crate::{AppState, Principal};

pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/connections/{id}/sync",
            guarded(state, Scope::Write, post(start)),
        )
        .route(
            "/api/v1/syncs/{id}",
            guarded(state, Scope::Read, get(get_one)),
        )
}

#[derive(OpenApi)]
#[openapi(
    paths(start, get_one),
    components(schemas(super::schema::SyncJob, super::schema::SyncSummary))
)]
pub(crate) struct Doc;

/// Options of a manual sync.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct StartParams {
    /// Send credentials the bank refused before once more (scope `admin`).
    force: Option<bool>,
}

/// Start a sync of a connection in the background. Needs scope `write`.
///
/// Answers 202 with the job to poll at `Location`. While a sync of this
/// connection is already running in this server, the answer is that running
/// job (also 202), not a second sync. A connection whose credentials the bank
/// refused is not synced (409 `credentials_refused`) until they change
/// (`PATCH /api/v1/connections/{id}`) or an admin forces it (`force=true`):
/// each try would count another failed login at the bank.
#[utoipa::path(
    post,
    path = "/api/v1/connections/{id}/sync",
    tag = "syncs",
    params(("id" = i64, Path, description = "Connection id"), StartParams),
    responses(
        (status = 202, description = "The new (or already running) job", body = super::schema::SyncJob),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "`force` needs scope `admin`", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "`credentials_refused`: change the credentials first; `sync_in_progress`: another process syncs this connection now", body = ErrorBody),
    )
)]
pub(crate) async fn start(
    State(state): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
    PathId(id): PathId,
    Query(params): Query<StartParams>,
) -> Result<Response, ApiError> {
    let force = params.force.unwrap_or(false);
    if force && !who.scope.allows(Scope::Admin) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "force=true sends credentials the bank refused once more: it needs an admin token",
        ));
    }
    let trigger = if force {
        Trigger::ApiForced
    } else {
        Trigger::Api
    };
    let started = start_checked(&state, id, trigger).await?;
    let job = started.job();
    let mut res = json(StatusCode::ACCEPTED, job, 256);
    if let Ok(loc) = HeaderValue::from_str(&format!("/api/v1/syncs/{}", job.id)) {
        res.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(res)
}

/// Start a sync of connection `id` for `trigger` (the API, the dashboard),
/// unless the bank refused its credentials (not for a forced sync) or
/// another process syncs it now.
pub(crate) async fn start_checked(
    state: &AppState,
    id: i64,
    trigger: Trigger,
) -> Result<crate::jobs::SyncStart, ApiError> {
    let connection = state
        .store
        .connections
        .get_connection(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no connection with id {id}")))?;
    if connection.credentials_refused() && trigger != Trigger::ApiForced {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "credentials_refused",
            bankbridge_sync::SyncError::CredentialsRefusedBefore {
                connection: connection.name.clone(),
                at: connection.last_sync_at,
            }
            .to_string(),
        ));
    }
    // A sync in another process (a CLI `sync`, another server) holds the
    // connection: a job queued now would only fail. Our own running job is
    // answered by `start_sync` below.
    if bankbridge_sync::SyncActivity::of(&connection, chrono::Utc::now())
        == bankbridge_sync::SyncActivity::Running
        && connection.lease_owner.as_deref() != Some(state.syncer.options.owner.as_str())
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "sync_in_progress",
            format!(
                "connection {} is being synced by {}; try again when it ends",
                connection.name,
                connection
                    .lease_owner
                    .as_deref()
                    .unwrap_or("another process")
            ),
        ));
    }
    Ok(state.start_sync(connection, trigger).await?)
}

/// A sync job.
#[utoipa::path(
    get,
    path = "/api/v1/syncs/{id}",
    tag = "syncs",
    params(("id" = i64, Path, description = "Sync job id")),
    responses((status = 200, body = super::schema::SyncJob), (status = 404, body = ErrorBody))
)]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    let job = state
        .store
        .jobs
        .get_sync_job(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no sync job with id {id}")))?;
    Ok(json(StatusCode::OK, &job, 512))
}
