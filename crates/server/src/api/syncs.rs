//! Sync jobs: start one for a connection, poll it.
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use bankbridge_store::Scope;
use utoipa::OpenApi;

use super::{PathId, guarded, json};
use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::jobs::Trigger;

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

/// Start a sync of a connection in the background. Needs scope `write`.
///
/// Answers 202 with the job to poll at `Location`. While a sync of this
/// connection is already running in this server, the answer is that running
/// job (also 202), not a second sync.
#[utoipa::path(
    post,
    path = "/api/v1/connections/{id}/sync",
    tag = "syncs",
    params(("id" = i64, Path, description = "Connection id")),
    responses(
        (status = 202, description = "The new (or already running) job", body = super::schema::SyncJob),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub(crate) async fn start(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    let connection = state
        .store
        .get_connection(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no connection with id {id}")))?;
    let started = state.start_sync(connection, Trigger::Api).await?;
    let job = started.job();
    let mut res = json(StatusCode::ACCEPTED, job, 256);
    if let Ok(loc) = HeaderValue::from_str(&format!("/api/v1/syncs/{}", job.id)) {
        res.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(res)
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
        .get_sync_job(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no sync job with id {id}")))?;
    Ok(json(StatusCode::OK, &job, 512))
}
