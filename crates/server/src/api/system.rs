//! `/healthz` (no token) and the OpenAPI document.
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bankbridge_store::Scope;
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::{guarded, json};
use crate::AppState;

pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route(
        "/api/v1/openapi.json",
        guarded(state, Scope::Read, get(openapi_json)),
    )
}

#[derive(OpenApi)]
#[openapi(paths(healthz, openapi_json), components(schemas(Health)))]
pub(crate) struct Doc;

/// Liveness and database reachability.
#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    /// `ok`, or `unavailable` when the database does not answer.
    status: &'static str,
    /// `sqlite` or `postgres`.
    database: &'static str,
}

/// Health check: the server runs and its database answers. Needs no token.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "system",
    security(()),
    responses(
        (status = 200, description = "Healthy", body = Health),
        (status = 503, description = "The database does not answer", body = Health),
    )
)]
pub(crate) async fn healthz(State(state): State<AppState>) -> Response {
    let database = state.store.backend();
    match state.store.get_connection(0).await {
        Ok(_) => json(
            StatusCode::OK,
            &Health {
                status: "ok",
                database,
            },
            64,
        ),
        Err(e) => {
            tracing::error!(error = %e, "health check: the database does not answer");
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                &Health {
                    status: "unavailable",
                    database,
                },
                64,
            )
        }
    }
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "system",
    responses(
        (status = 200, description = "The OpenAPI 3 document", content_type = "application/json"),
        (status = 401, description = "No or bad token", body = crate::error::ErrorBody),
    )
)]
pub(crate) async fn openapi_json(State(state): State<AppState>) -> Response {
    let mut res = state.openapi_json.clone().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}
