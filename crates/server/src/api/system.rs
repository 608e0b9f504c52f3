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
    Router::new()
        .route("/healthz", get(healthz))
        .route(
            "/api/v1/openapi.json",
            guarded(state, Scope::Read, get(openapi_json)),
        )
        .route("/api/v1", guarded(state, Scope::Read, get(index)))
        .route("/api/v1/", guarded(state, Scope::Read, get(index)))
}

#[derive(OpenApi)]
#[openapi(
    paths(healthz, openapi_json, index),
    components(schemas(Health, Index, Resource))
)]
pub(crate) struct Doc;

/// The API's front page: what there is, where.
#[derive(Serialize, ToSchema)]
pub(crate) struct Index {
    #[schema(example = "bankbridge")]
    name: &'static str,
    version: &'static str,
    /// Absolute URL of the OpenAPI document (every route, parameter and answer).
    openapi: String,
    resources: Vec<Resource>,
}

/// One collection of the API.
#[derive(Serialize, ToSchema)]
pub(crate) struct Resource {
    #[schema(example = "transactions")]
    name: &'static str,
    /// Absolute URL.
    href: String,
    /// The least token scope that reads it.
    scope: &'static str,
    description: &'static str,
}

/// Collections listed by the index: name, path, scope, what it holds.
const RESOURCES: &[(&str, &str, &str, &str)] = &[
    (
        "accounts",
        "/api/v1/accounts",
        "read",
        "bank accounts with their balance now",
    ),
    (
        "transactions",
        "/api/v1/transactions",
        "read",
        "transactions, filtered and paged by cursor",
    ),
    (
        "export",
        "/api/v1/export",
        "read",
        "transactions as CSV, JSON or OFX",
    ),
    (
        "documents",
        "/api/v1/documents",
        "read",
        "statements and notices from the banks",
    ),
    (
        "connections",
        "/api/v1/connections",
        "read",
        "bank connections and how their last sync went",
    ),
    (
        "financial-institutions",
        "/api/v1/financial-institutions",
        "read",
        "banks whose cards sit in readers, with their cards (EMV-CAP logins and signs)",
    ),
    (
        "checks",
        "/api/v1/checks",
        "read",
        "flow checks and their runs",
    ),
    (
        "bankid",
        "/api/v1/bankid/orders",
        "write",
        "the BankID gateway's orders",
    ),
    (
        "instances",
        "/api/v1/instances",
        "admin",
        "the serve instances sharing this database, with their heartbeats",
    ),
];

/// The resources this server offers, with links (flow checks and the BankID
/// gateway only when they are on). Needs scope `read`.
#[utoipa::path(
    get,
    path = "/api/v1",
    tag = "system",
    responses(
        (status = 200, description = "What there is, where", body = Index),
        (status = 401, description = "No or bad token", body = crate::error::ErrorBody),
    )
)]
pub(crate) async fn index(
    State(state): State<AppState>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: axum::http::HeaderMap,
) -> Response {
    let peer = peer.map(|axum::Extension(axum::extract::ConnectInfo(a))| a.ip());
    let origin = super::origin(&state, peer, &headers);
    let body = Index {
        name: "bankbridge",
        version: env!("CARGO_PKG_VERSION"),
        openapi: format!("{origin}/api/v1/openapi.json"),
        resources: RESOURCES
            .iter()
            // Only what this server runs: checks and the BankID gateway are
            // switched on by `serve --checks` and `--bankid-*`.
            .filter(|(name, ..)| match *name {
                "checks" => state.checks.get().is_some(),
                "bankid" => state.bankid.get().is_some(),
                _ => true,
            })
            .map(|&(name, path, scope, description)| Resource {
                name,
                href: format!("{origin}{path}"),
                scope,
                description,
            })
            .collect(),
    };
    json(StatusCode::OK, &body, 2048)
}

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
    let database = state.store.connections.backend();
    match state.store.connections.get_connection(0).await {
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
