//! Connections: list, create and change (credentials are write-only),
//! delete. Bank usernames show to admin tokens only; changing and deleting
//! a connection need admin.
use std::sync::Arc;

use axum::Router;
use axum::extract::{Extension, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use bankbridge_core::{ConnectionSettings, Credentials, Secret};
use bankbridge_store::{Connection, Scope, SyncOutcome};
use bankbridge_sync::{
    ConnectionChange, SyncError, Syncer, add_connection, check_settings, update_connection,
};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::{ApiJson, List, PathId, guarded, json};
use crate::error::{ApiError, ErrorBody};
use crate::{AppState, Principal};

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
            guarded(
                state,
                Scope::Admin,
                axum::routing::patch(update).delete(remove),
            ),
        )
}

#[derive(OpenApi)]
#[openapi(
    paths(list, create, update, remove),
    components(schemas(
        ConnectionView,
        ConnectionList,
        SettingsView,
        CreateConnection,
        UpdateConnection,
        super::schema::SyncOutcome
    ))
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
    #[schema(value_type = super::schema::SyncOutcome)]
    last_sync_status: SyncOutcome,
    /// Why the last sync did not succeed, in our words.
    last_sync_error: Option<String>,
    /// The bank refused the current credentials: no sync sends them again
    /// until they change (`PATCH`) or an admin forces one (`?force=true`).
    credentials_refused: bool,
    /// The job of the sync running now in this server, if any.
    running_sync_job: Option<i64>,
}

/// The non-secret settings of a connection.
#[derive(Serialize, ToSchema)]
pub(crate) struct SettingsView {
    base_url: String,
    /// The bank login name; shown to admin tokens only (null otherwise).
    username: Option<String>,
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
    fn new(state: &AppState, c: &Connection, who: &Principal) -> Result<Self, ApiError> {
        let s = Syncer::settings(c).map_err(ApiError::internal)?;
        Ok(ConnectionView {
            id: c.id,
            name: c.name.clone(),
            connector: c.connector.clone(),
            settings: SettingsView {
                base_url: s.base_url,
                username: who.scope.allows(Scope::Admin).then_some(s.username),
                window_days: s.window_days,
                overlap_days: s.overlap_days,
                since: s.since,
                interval_secs: s.interval_secs,
            },
            created_at: c.created_at,
            last_sync_at: c.last_sync_at,
            last_sync_status: c.last_sync_status,
            last_sync_error: c.last_sync_error.clone(),
            credentials_refused: c.credentials_refused(),
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
        if self.password.expose().is_empty() || self.password.expose().len() > 1024 {
            return Err(ApiError::invalid_parameter(
                "password",
                "password must be 1 to 1024 characters",
            ));
        }
        let mut s = ConnectionSettings::new(self.base_url.trim(), self.username.trim());
        if let Some(w) = self.window_days {
            s.window_days = w;
        }
        if let Some(o) = self.overlap_days {
            s.overlap_days = o;
        }
        s.since = self.since;
        s.interval_secs = self.interval_secs;
        check_settings(&s).map_err(field_error)?;
        Ok(s)
    }
}

/// A refused field as the API's `invalid_parameter` error.
fn field_error(e: SyncError) -> ApiError {
    match e {
        SyncError::InvalidField { field, message } => ApiError::invalid_parameter(field, message),
        SyncError::Store(e) => ApiError::from(e),
        other => ApiError::internal(other),
    }
}

/// Every connection (without credentials).
#[utoipa::path(
    get,
    path = "/api/v1/connections",
    tag = "connections",
    responses((status = 200, body = ConnectionList), (status = 401, body = ErrorBody))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
) -> Result<Response, ApiError> {
    let views = state
        .store
        .list_connections()
        .await?
        .iter()
        .map(|c| ConnectionView::new(&state, c, &who))
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
    Extension(who): Extension<Arc<Principal>>,
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
    .map_err(field_error)?;
    tracing::info!(connection = %connection.name, connector = %connection.connector, "connection created");
    state.data_changed();
    let mut res = json(
        StatusCode::CREATED,
        &ConnectionView::new(&state, &connection, &who)?,
        400,
    );
    if let Ok(loc) = HeaderValue::from_str(&format!("/api/v1/connections/{}", connection.id)) {
        res.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(res)
}

/// Delete a connection with its accounts, transactions and balances. Needs scope `admin`.
#[utoipa::path(
    delete,
    path = "/api/v1/connections/{id}",
    tag = "connections",
    params(("id" = i64, Path, description = "Connection id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
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

/// What to change on a connection; absent fields stay. `password` is
/// write-only. A new `base_url` or `username` needs a new `password` in the
/// same request: stored credentials never go to another bank or account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateConnection {
    /// The bank API's base URL: https, or http to a loopback address.
    base_url: Option<String>,
    username: Option<String>,
    #[schema(value_type = Option<String>, format = Password, write_only)]
    password: Option<Secret<String>>,
    /// 1 to 366.
    window_days: Option<u32>,
    /// 0 to 365.
    overlap_days: Option<u32>,
    /// Oldest day to backfill to (YYYY-MM-DD).
    since: Option<NaiveDate>,
    /// At least 60; `0` turns scheduled syncs off.
    interval_secs: Option<u64>,
}

/// Change a connection's credentials or settings. Needs scope `admin`.
///
/// New credentials lift the block a refused login put on the connection.
#[utoipa::path(
    patch,
    path = "/api/v1/connections/{id}",
    tag = "connections",
    params(("id" = i64, Path, description = "Connection id")),
    request_body = UpdateConnection,
    responses(
        (status = 200, body = ConnectionView),
        (status = 400, description = "A bad field, named in `parameter`", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "`sync_in_progress`: wait for the running sync", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody),
    )
)]
pub(crate) async fn update(
    State(state): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
    PathId(id): PathId,
    ApiJson(body): ApiJson<UpdateConnection>,
) -> Result<Response, ApiError> {
    let connection = state
        .store
        .get_connection(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no connection with id {id}")))?;
    if let Some(job) = state.running_sync(id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "sync_in_progress",
            format!(
                "connection {id} is syncing (job {job}); change it once that sync has finished"
            ),
        ));
    }
    let change = ConnectionChange {
        base_url: body.base_url,
        username: body.username,
        password: body.password,
        window_days: body.window_days,
        overlap_days: body.overlap_days,
        since: body.since.map(Some),
        interval_secs: body.interval_secs.map(|i| (i > 0).then_some(i)),
    };
    let updated = update_connection(
        state.store.as_ref(),
        &state.syncer.key,
        &connection,
        &change,
    )
    .await
    .map_err(field_error)?
    .ok_or_else(|| ApiError::not_found(format!("no connection with id {id}")))?;
    tracing::info!(
        connection = %updated.name,
        credentials_changed = change.password.is_some(),
        "connection updated"
    );
    Ok(json(
        StatusCode::OK,
        &ConnectionView::new(&state, &updated, &who)?,
        400,
    ))
}
