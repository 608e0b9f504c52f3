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
    ConnectionChange, SyncError, Syncer, add_connection, check_name, check_password,
    check_settings, update_connection,
};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::{ApiJson, List, PathId, de, guarded, json};
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
        ConsentView,
        CreateConnection,
        UpdateConnection,
        UpdateLogin,
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
    /// An open-banking connection's consent as its last sync saw it (null
    /// for connectors without one, and before the first sync).
    consent: Option<ConsentView>,
}

/// The bank's consent of an open-banking connection.
#[derive(Serialize, ToSchema)]
pub(crate) struct ConsentView {
    /// The bank's `consentStatus`: `valid`, `expired`, `revokedByPsu`, `terminatedByTpp`, `rejected`, …
    status: String,
    /// The last day the bank honours it.
    valid_until: Option<NaiveDate>,
    /// Days from today (UTC) to `valid_until`; negative once past.
    days_left: Option<i64>,
    /// Valid, and ending within 7 days: sync where you can authenticate to give a new one.
    expires_soon: bool,
    /// The day an expiry warning went out for (`valid_until` of the consent warned about).
    warned_for: Option<NaiveDate>,
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
    /// Connector settings beyond these (the `xs2a` connector's bank, SCA approach, …).
    options: std::collections::BTreeMap<String, String>,
    /// The registered card that answers this connection's card-reader challenges.
    sca_card: Option<String>,
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
                options: s.options,
                sca_card: s.sca_card,
            },
            created_at: c.created_at,
            last_sync_at: c.last_sync_at,
            last_sync_status: c.last_sync_status,
            last_sync_error: c.last_sync_error.clone(),
            credentials_refused: c.credentials_refused(),
            running_sync_job: state.running_sync(c.id),
            consent: c.consent.as_ref().map(|k| {
                let today = Utc::now().date_naive();
                let days_left = k.valid_until.map(|u| crate::consents::days_left(u, today));
                ConsentView {
                    expires_soon: k.status == "valid"
                        && days_left.is_some_and(|d| d <= crate::consents::DEFAULT_WARNING_DAYS),
                    status: k.status.clone(),
                    valid_until: k.valid_until,
                    days_left,
                    warned_for: k.warned_for,
                }
            }),
        })
    }
}

/// A new connection. `password` is write-only: it is sealed with the master
/// key at once and no route ever returns it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateConnection {
    /// Unique name: a letter, then up to 63 letters, digits, spaces, `.`, `_` or `-`.
    #[schema(example = "fibank-main")]
    pub(crate) name: String,
    /// One of the connectors this server knows.
    #[schema(example = "fibank")]
    pub(crate) connector: String,
    /// The bank API's base URL: https, or http to this machine.
    #[schema(example = "https://my.fibank.bg", max_length = 2048)]
    pub(crate) base_url: String,
    #[schema(min_length = 1, max_length = 256)]
    pub(crate) username: String,
    #[schema(value_type = String, format = Password, write_only, min_length = 1, max_length = 16384)]
    pub(crate) password: Secret<String>,
    /// Longest window to ask the bank for, 1 to 366 days (default 30).
    #[schema(minimum = 1, maximum = 366)]
    pub(crate) window_days: Option<u32>,
    /// Days re-read before the last synced day, 0 to 365 (default 7).
    #[schema(minimum = 0, maximum = 365)]
    pub(crate) overlap_days: Option<u32>,
    /// Oldest day to backfill to (YYYY-MM-DD).
    pub(crate) since: Option<NaiveDate>,
    /// Sync on this interval in `serve` (at least 60 seconds); absent or null means manual only.
    #[schema(minimum = 60, maximum = 31_622_400)]
    pub(crate) interval_secs: Option<u64>,
    /// Connector settings beyond the above: for `xs2a`, `bank` (e.g.
    /// `sandbox-be`), `sca_approach`, `psu_id`, `timezone`, `history_days`,
    /// `frequency_per_day`, `consent_days`, `psu_ip_address`, `redirect_uri`;
    /// for `gocardless`, `institution_id` (needed), `history_days`,
    /// `access_days`, `daily_limit`, `redirect_uri`. A bad value is refused by the connector when the connection syncs.
    #[serde(default)]
    pub(crate) options: Option<std::collections::BTreeMap<String, String>>,
    /// A registered card (its id) that answers this connection's card-reader
    /// challenges, also in unattended syncs; 404 when no such card is registered.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128)]
    pub(crate) sca_card: Option<String>,
}

impl CreateConnection {
    fn settings(&self, connectors: &[String]) -> Result<ConnectionSettings, ApiError> {
        check_name(&self.name).map_err(field_error)?;
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
        check_password(&self.password).map_err(field_error)?;
        let mut s = ConnectionSettings::new(self.base_url.clone(), self.username.clone());
        if let Some(w) = self.window_days {
            s.window_days = w;
        }
        if let Some(o) = self.overlap_days {
            s.overlap_days = o;
        }
        s.since = self.since;
        s.interval_secs = self.interval_secs;
        if let Some(options) = &self.options {
            s.options = options.clone();
        }
        s.sca_card = self.sca_card.clone();
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

/// Create a connection (the API's `POST`, the dashboard's add form).
pub(crate) async fn create_connection(
    state: &AppState,
    body: &CreateConnection,
) -> Result<Connection, ApiError> {
    let settings = body.settings(&state.connectors)?;
    if let Some(card) = &settings.sca_card
        && state.store.cards.get_card(card).await?.is_none()
    {
        return Err(ApiError::not_found(format!(
            "sca_card: no registered card {card:?}; register it first (POST /api/v1/financial-institutions/{{id}}/cards)"
        )));
    }
    let credentials = Credentials::with_password(body.password.clone());
    let connection = add_connection(
        state.store.connections.as_ref(),
        &state.syncer.key,
        body.name.trim(),
        &body.connector,
        &settings,
        &credentials,
    )
    .await
    .map_err(field_error)?;
    tracing::info!(connection = %connection.name, connector = %connection.connector, "connection created");
    state.data_changed();
    Ok(connection)
}

/// Delete connection `id` with its data, unless it is syncing now.
pub(crate) async fn delete_connection(state: &AppState, id: i64) -> Result<(), ApiError> {
    if let Some(job) = state.running_sync(id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "sync_in_progress",
            format!(
                "connection {id} is syncing (job {job}); delete it once /api/v1/syncs/{job} has finished"
            ),
        ));
    }
    if !state.store.connections.delete_connection(id).await? {
        return Err(ApiError::not_found(format!("no connection with id {id}")));
    }
    tracing::info!(connection_id = id, "connection deleted");
    state.data_changed();
    Ok(())
}

/// Change connection `id`, unless it is syncing now.
pub(crate) async fn change_connection(
    state: &AppState,
    id: i64,
    change: &ConnectionChange,
) -> Result<Connection, ApiError> {
    let connection = state
        .store
        .connections
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
    let updated = update_connection(
        state.store.connections.as_ref(),
        &state.syncer.key,
        &connection,
        change,
    )
    .await
    .map_err(field_error)?
    .ok_or_else(|| ApiError::not_found(format!("no connection with id {id}")))?;
    tracing::info!(
        connection = %updated.name,
        credentials_changed = change.password.is_some(),
        "connection updated"
    );
    Ok(updated)
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
        .connections
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
        (status = 404, description = "`sca_card` names no registered card", body = ErrorBody),
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
    let connection = create_connection(&state, &body).await?;
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
    delete_connection(&state, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What to change on a connection; absent fields stay, `null` clears `since`
/// and `interval_secs`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateConnection {
    /// New credentials, and where they go.
    login: Option<UpdateLogin>,
    /// 1 to 366.
    #[schema(minimum = 1, maximum = 366)]
    window_days: Option<u32>,
    /// 0 to 365.
    #[schema(minimum = 0, maximum = 365)]
    overlap_days: Option<u32>,
    /// Oldest day to backfill to (YYYY-MM-DD); null: as far back as the bank goes.
    #[schema(value_type = Option<NaiveDate>)]
    #[serde(default, deserialize_with = "de::patch")]
    since: Option<Option<NaiveDate>>,
    /// Seconds between scheduled syncs (at least 60); null: manual only.
    #[schema(value_type = Option<u64>, minimum = 60, maximum = 31_622_400)]
    #[serde(default, deserialize_with = "de::patch")]
    interval_secs: Option<Option<u64>>,
    /// The connector's options, all of them (they replace the stored ones).
    #[serde(default)]
    options: Option<std::collections::BTreeMap<String, String>>,
    /// The registered card that answers card-reader challenges (404 when
    /// none has this id); null: none.
    #[schema(value_type = Option<String>, min_length = 1, max_length = 128)]
    #[serde(default, deserialize_with = "de::patch")]
    sca_card: Option<Option<String>>,
}

/// The login: the password always, and where and as whom it is used when
/// that changes too. Stored credentials never go to another bank or
/// account without the password given anew.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateLogin {
    #[schema(value_type = String, format = Password, write_only, min_length = 1, max_length = 16384)]
    password: Secret<String>,
    /// The bank API's base URL: https, or http to this machine.
    #[schema(max_length = 2048)]
    base_url: Option<String>,
    #[schema(min_length = 1, max_length = 256)]
    username: Option<String>,
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
    let (password, base_url, username) = match body.login {
        Some(l) => (Some(l.password), l.base_url, l.username),
        None => (None, None, None),
    };
    let change = ConnectionChange {
        base_url,
        username,
        password,
        window_days: body.window_days,
        overlap_days: body.overlap_days,
        since: body.since,
        interval_secs: body.interval_secs,
        options: body.options,
        sca_card: body.sca_card,
    };
    if let Some(Some(card)) = &change.sca_card
        && state.store.cards.get_card(card).await?.is_none()
    {
        return Err(ApiError::not_found(format!(
            "sca_card: no registered card {card:?}"
        )));
    }
    let updated = change_connection(&state, id, &change).await?;
    Ok(json(
        StatusCode::OK,
        &ConnectionView::new(&state, &updated, &who)?,
        400,
    ))
}
