//! `GET /api/v1/instances`: the `serve` processes sharing this database.
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use bankbridge_store::Scope;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::{guarded, json};
use crate::AppState;
use crate::error::{ApiError, ErrorBody};

pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    Router::new().route("/api/v1/instances", guarded(state, Scope::Admin, get(list)))
}

#[derive(OpenApi)]
#[openapi(paths(list), components(schemas(InstanceView, InstanceList)))]
pub(crate) struct Doc;

/// One `serve` process that registered on this database.
#[derive(Serialize, ToSchema)]
pub(crate) struct InstanceView {
    /// `serve --instance-name` (default: host and port).
    #[schema(example = "web-1")]
    name: String,
    /// The process: "pid N on HOST (run R)", as it holds sync leases.
    owner: String,
    version: String,
    /// The address it listens on.
    listen: String,
    started_at: DateTime<Utc>,
    heartbeat_at: DateTime<Utc>,
    /// It counts as gone from then on unless it beats again.
    expires_at: DateTime<Utc>,
    /// Set by a clean stop.
    stopped_at: Option<DateTime<Utc>>,
    /// Beating now: not stopped, not expired.
    alive: bool,
    /// The instance that answered this request.
    this: bool,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct InstanceList {
    data: Vec<InstanceView>,
}

/// The `serve` instances that registered on this database, by name, with
/// their heartbeats; stopped and silent ones too, until a new process takes
/// their name. Needs scope `admin`.
#[utoipa::path(
    get,
    path = "/api/v1/instances",
    tag = "system",
    responses(
        (status = 200, body = InstanceList),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "Not an admin token", body = ErrorBody),
    )
)]
pub(crate) async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let now = Utc::now();
    let this = state.instance.get();
    let data: Vec<InstanceView> = state
        .store
        .instances
        .list_instances()
        .await?
        .into_iter()
        .map(|i| InstanceView {
            alive: i.alive(now),
            this: this == Some(&i.name),
            name: i.name,
            owner: i.owner,
            version: i.version,
            listen: i.listen,
            started_at: i.started_at,
            heartbeat_at: i.heartbeat_at,
            expires_at: i.expires_at,
            stopped_at: i.stopped_at,
        })
        .collect();
    Ok(json(StatusCode::OK, &InstanceList { data }, 512))
}
