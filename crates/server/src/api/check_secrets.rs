//! Flow-check secrets (`{ secret = "name" }` in a flow file): write-only.
//! They can be set, replaced, listed by name and deleted; no route answers
//! a value. The sealing lives in [`crate::check_secrets`].
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use bankbridge_core::Secret;
use bankbridge_store::Scope;
use bankbridge_store::checks::valid_secret_name;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::{ApiJson, guarded, json};
use crate::AppState;
use crate::error::{ApiError, ErrorBody};

/// The longest value accepted (a token or a password, not a file).
/// Longest value, in characters.
const MAX_VALUE_CHARS: usize = 16 * 1024;

pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/check-secrets",
            guarded(state, Scope::Admin, get(list)),
        )
        .route(
            "/api/v1/check-secrets/{name}",
            guarded(state, Scope::Admin, put(set).delete(remove)),
        )
}

#[derive(OpenApi)]
#[openapi(
    paths(list, set, remove),
    components(schemas(SecretView, SecretList, SetSecret))
)]
pub(crate) struct Doc;

/// A stored secret as the API shows it: its name and when it changed, never its value.
#[derive(Serialize, ToSchema)]
pub(crate) struct SecretView {
    name: String,
    updated_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct SecretList {
    data: Vec<SecretView>,
}

/// The new value of a secret.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetSecret {
    /// 1 to 16,384 characters; never shown again.
    #[schema(value_type = String, min_length = 1, max_length = 16384)]
    value: Secret<String>,
}

/// The stored secrets' names. Needs scope `admin`.
#[utoipa::path(
    get,
    path = "/api/v1/check-secrets",
    tag = "checks",
    responses(
        (status = 200, body = SecretList),
        (status = 403, body = ErrorBody),
    )
)]
pub(crate) async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let data: Vec<SecretView> = state
        .check_secrets
        .list()
        .await?
        .into_iter()
        .map(|s| SecretView {
            name: s.name,
            updated_at: s.updated_at,
        })
        .collect();
    Ok(json(StatusCode::OK, &SecretList { data }, 1024))
}

/// Set (or replace) the secret that flows name with `{ secret = "NAME" }`.
/// It is sealed with the server's master key; no route shows it again.
/// Needs scope `admin`.
#[utoipa::path(
    put,
    path = "/api/v1/check-secrets/{name}",
    tag = "checks",
    params(("name" = String, Path, pattern = "^[A-Za-z0-9_.-]{1,100}$", description = "1 to 100 of A-Z a-z 0-9 _ - .")),
    request_body = SetSecret,
    responses(
        (status = 201, description = "Stored under a new name", body = SecretView),
        (status = 200, description = "Replaced", body = SecretView),
        (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody),
    )
)]
pub(crate) async fn set(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<SetSecret>,
) -> Result<Response, ApiError> {
    if !valid_secret_name(&name) {
        return Err(ApiError::invalid_parameter(
            "name",
            "1 to 100 of A-Z a-z 0-9 _ - .",
        ));
    }
    let len = body.value.expose().chars().count();
    if len == 0 || len > MAX_VALUE_CHARS {
        return Err(ApiError::invalid_parameter(
            "value",
            "a non-empty string of at most 16,384 characters",
        ));
    }
    let (created, updated_at) = state.check_secrets.put(&name, &body.value).await?;
    tracing::info!(secret = %name, created, "checks: secret stored");
    let view = SecretView { name, updated_at };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json(status, &view, 256))
}

/// Delete a secret (flows naming it then fail, saying so). Needs scope `admin`.
#[utoipa::path(
    delete,
    path = "/api/v1/check-secrets/{name}",
    tag = "checks",
    params(("name" = String, Path, pattern = "^[A-Za-z0-9_.-]{1,100}$")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub(crate) async fn remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    if state.check_secrets.delete(&name).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found(format!("no secret {name:?}")))
    }
}
