//! Connections: list, create (credentials are write-only), delete.
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{delete, get, post};
use bankbridge_core::{ConnectionSettings, Credentials, Secret};
use bankbridge_store::{Connection, Scope};
use bankbridge_sync::{SyncError, Syncer, add_connection};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::{ApiJson, List, PathId, guarded, json};
use crate::AppState;
use crate::error::{ApiError, ErrorBody};

pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/connections",
            guarded(state, Scope::Read, get(list)).merge(guarded(
                state,
                Scope::Write,
                post(create),
            )),
        )
        .route(
            "/api/v1/connections/{id}",
            guarded(state, Scope::Write, delete(remove)),
        )
}

#[derive(OpenApi)]
#[openapi(
    paths(list, create, remove),
    components(schemas(ConnectionView, ConnectionList, SettingsView, CreateConnection))
)]
pub(crate) struct Doc;

/// A connection as the API shows it: never its credentials nor its bank session.
#[derive(Serialize, ToSchema)]
pub(crate) struct ConnectionView {
    id: i64,
    name: String,
    /// The bank API it uses, e.g. `fibank`.
    connector: String,
    settings: SettingsView,
    created_at: DateTime<Utc>,
    last_sync_at: Option<DateTime<Utc>>,
    /// `ok`, `failed`, `needs_user` or `never`.
    last_sync_status: String,
    last_sync_error: Option<String>,
    /// The job of the sync running now in this server, if any.
    running_sync_job: Option<i64>,
}

/// The non-secret settings of a connection.
#[derive(Serialize, ToSchema)]
pub(crate) struct SettingsView {
    base_url: String,
    username: String,
    window_days: u32,
    overlap_days: u32,
    since: Option<NaiveDate>,
    interval_secs: Option<u64>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct ConnectionList {
    data: Vec<ConnectionView>,
}

impl ConnectionView {
    fn new(state: &AppState, c: &Connection) -> Result<Self, ApiError> {
        let s = Syncer::settings(c).map_err(ApiError::internal)?;
        Ok(ConnectionView {
            id: c.id,
            name: c.name.clone(),
            connector: c.connector.clone(),
            settings: SettingsView {
                base_url: s.base_url,
                username: s.username,
                window_days: s.window_days,
                overlap_days: s.overlap_days,
                since: s.since,
                interval_secs: s.interval_secs,
            },
            created_at: c.created_at,
            last_sync_at: c.last_sync_at,
            last_sync_status: c.last_sync_status.clone(),
            last_sync_error: c.last_sync_error.clone(),
            running_sync_job: state.running_sync(c.id),
        })
    }
}

/// A new connection. `password` is write-only: it is sealed with the master
/// key at once and no route ever returns it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateConnection {
    /// Unique name (letters, digits, `-`, `_`, `.`, spaces; not only digits).
    #[schema(example = "fibank-main")]
    name: String,
    /// One of the connectors this server knows.
    #[schema(example = "fibank")]
    connector: String,
    /// The bank API's base URL (http or https).
    base_url: String,
    username: String,
    #[schema(value_type = String, format = Password, write_only)]
    password: Secret<String>,
    /// Longest window to ask the bank for, 1 to 366 days (default 30).
    window_days: Option<u32>,
    /// Days re-read before the last synced day, 0 to 365 (default 7).
    overlap_days: Option<u32>,
    /// Oldest day to backfill to (YYYY-MM-DD).
    since: Option<NaiveDate>,
    /// Sync on this interval in `serve` (at least 60 seconds); absent means manual only.
    interval_secs: Option<u64>,
}

const MIN_INTERVAL_SECS: u64 = 60;

impl CreateConnection {
    fn settings(&self, connectors: &[String]) -> Result<ConnectionSettings, ApiError> {
        let name = self.name.trim();
        let name_ok = (1..=64).contains(&name.chars().count())
            && name
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ' '))
            && !name.chars().all(|c| c.is_ascii_digit());
        if !name_ok {
            return Err(ApiError::invalid_parameter(
                "name",
                "name must be 1 to 64 letters, digits, '-', '_', '.' or spaces, and not only digits",
            ));
        }
        if !connectors.contains(&self.connector) {
            return Err(ApiError::invalid_parameter(
                "connector",
                format!(
                    "unknown connector {:?}; this server knows: {}",
                    self.connector,
                    connectors.join(", ")
                ),
            ));
        }
        let url_ok = url::Url::parse(self.base_url.trim())
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if !url_ok {
            return Err(ApiError::invalid_parameter(
                "base_url",
                "base_url must be an http or https URL such as https://bank.example/api",
            ));
        }
        if self.username.trim().is_empty() || self.username.len() > 256 {
            return Err(ApiError::invalid_parameter(
                "username",
                "username must be 1 to 256 characters",
            ));
        }
        if self.password.expose().is_empty() || self.password.expose().len() > 1024 {
            return Err(ApiError::invalid_parameter(
                "password",
                "password must be 1 to 1024 characters",
            ));
        }
        let mut s = ConnectionSettings::new(self.base_url.trim(), self.username.trim());
        if let Some(w) = self.window_days {
            if !(1..=366).contains(&w) {
                return Err(ApiError::invalid_parameter(
                    "window_days",
                    "window_days must be 1 to 366",
                ));
            }
            s.window_days = w;
        }
        if let Some(o) = self.overlap_days {
            if o > 365 {
                return Err(ApiError::invalid_parameter(
                    "overlap_days",
                    "overlap_days must be 0 to 365",
                ));
            }
            s.overlap_days = o;
        }
        s.since = self.since;
        if let Some(i) = self.interval_secs {
            if i < MIN_INTERVAL_SECS {
                return Err(ApiError::invalid_parameter(
                    "interval_secs",
                    format!(
                        "interval_secs must be at least {MIN_INTERVAL_SECS} (banks do not like being polled)"
                    ),
                ));
            }
            s.interval_secs = Some(i);
        }
        Ok(s)
    }
}

/// Every connection (without credentials).
#[utoipa::path(
    get,
    path = "/api/v1/connections",
    tag = "connections",
    responses((status = 200, body = ConnectionList), (status = 401, body = ErrorBody))
)]
pub(crate) async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let views = state
        .store
        .list_connections()
        .await?
        .iter()
        .map(|c| ConnectionView::new(&state, c))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json(
        StatusCode::OK,
        &List { data: &views },
        views.len() * 400,
    ))
}

/// Create a connection. Needs scope `write`.
#[utoipa::path(
    post,
    path = "/api/v1/connections",
    tag = "connections",
    request_body = CreateConnection,
    responses(
        (status = 201, body = ConnectionView),
        (status = 400, description = "A bad field, named in `parameter`", body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody),
    )
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateConnection>,
) -> Result<Response, ApiError> {
    let settings = body.settings(&state.connectors)?;
    let name = body.name.trim();
    let credentials = Credentials::with_password(body.password.clone());
    let connection = add_connection(
        state.store.as_ref(),
        &state.syncer.key,
        name,
        &body.connector,
        &settings,
        &credentials,
    )
    .await
    .map_err(|e| match e {
        SyncError::Store(e) => ApiError::from(e),
        other => ApiError::internal(other),
    })?;
    tracing::info!(connection = %connection.name, connector = %connection.connector, "connection created");
    state.data_changed();
    let mut res = json(
        StatusCode::CREATED,
        &ConnectionView::new(&state, &connection)?,
        400,
    );
    if let Ok(loc) = HeaderValue::from_str(&format!("/api/v1/connections/{}", connection.id)) {
        res.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(res)
}

/// Delete a connection with its accounts, transactions and balances. Needs scope `write`.
#[utoipa::path(
    delete,
    path = "/api/v1/connections/{id}",
    tag = "connections",
    params(("id" = i64, Path, description = "Connection id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = ErrorBody),
        (status = 409, description = "`sync_in_progress`: wait for the running sync", body = ErrorBody),
    )
)]
pub(crate) async fn remove(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    if let Some(job) = state.running_sync(id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "sync_in_progress",
            format!(
                "connection {id} is syncing (job {job}); delete it once /api/v1/syncs/{job} has finished"
            ),
        ));
    }
    if !state.store.delete_connection(id).await? {
        return Err(ApiError::not_found(format!("no connection with id {id}")));
    }
    tracing::info!(connection_id = id, "connection deleted");
    state.data_changed();
    Ok(StatusCode::NO_CONTENT)
}
