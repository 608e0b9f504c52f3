//! Routes, one module per area. Each area exposes `routes(&AppState)` (with
//! the scope every route needs, declared beside the route) and an OpenAPI
//! `Doc` merged into [`openapi`]. Handlers stay thin: parse, call the store,
//! the syncer or a library module, answer.
use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use bankbridge_store::Scope;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::ApiError;
use crate::{AppState, guard};

mod accounts;
mod bankid;
mod cards;
mod check_secrets;
mod checks;
mod connections;
mod documents;
mod export;
pub(crate) mod schema;
mod syncs;
mod system;
mod transactions;

/// Every route of the application (before the outer layers).
pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .merge(system::routes(state))
        .merge(accounts::routes(state))
        .merge(transactions::routes(state))
        .merge(connections::routes(state))
        .merge(syncs::routes(state))
        .merge(documents::routes(state))
        .merge(export::routes(state))
        .merge(cards::routes(state))
        .merge(bankid::routes(state))
        .merge(checks::routes(state))
        .merge(check_secrets::routes(state))
}

/// `method_router`, reachable only with a token whose scope allows `scope`.
pub(crate) fn guarded(
    state: &AppState,
    scope: Scope,
    method_router: MethodRouter<AppState>,
) -> MethodRouter<AppState> {
    method_router.route_layer(middleware::from_fn_with_state(
        (state.clone(), scope),
        guard::require,
    ))
}

/// Fallback for unknown routes.
pub(crate) async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!(
        "no route {}; the API is described at /api/v1/openapi.json",
        uri.path()
    ))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "bankbridge API",
        description = "Your bank data, synced into your own database. Every route but /healthz needs \
                       `Authorization: Bearer <token>` (create one with `bankbridge token create`). \
                       Errors are JSON `{\"code\", \"message\"}` with a stable code.",
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(crate::error::ErrorBody)),
)]
struct RootDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("bb_<id>_<secret>")
                    .description(Some(
                        "Scopes: read (GET routes, but the check agents' jobs), write (also syncs, connections, card logins/signs and check runs started by hand), admin (all, including card registration, card readers, the card audit, check secrets and the check agents' routes); agent (only the check agents' routes: their jobs carry stored secrets).",
                    ))
                    .build(),
            ),
        );
    }
}

/// The OpenAPI 3 document of the whole API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = RootDoc::openapi();
    for part in [
        system::Doc::openapi(),
        accounts::Doc::openapi(),
        transactions::Doc::openapi(),
        connections::Doc::openapi(),
        syncs::Doc::openapi(),
        documents::Doc::openapi(),
        export::Doc::openapi(),
        cards::Doc::openapi(),
        bankid::Doc::openapi(),
        checks::Doc::openapi(),
        check_secrets::Doc::openapi(),
    ] {
        doc.merge(part);
    }
    doc
}

/// A JSON response, serialised into a buffer of about `size_hint` bytes.
pub(crate) fn json<T: Serialize + ?Sized>(
    status: StatusCode,
    value: &T,
    size_hint: usize,
) -> Response {
    match to_json(value, size_hint) {
        Ok(body) => json_bytes(status, body),
        Err(e) => e.into_response(),
    }
}

pub(crate) fn to_json<T: Serialize + ?Sized>(
    value: &T,
    size_hint: usize,
) -> Result<Bytes, ApiError> {
    let mut buf = Vec::with_capacity(size_hint.max(128));
    serde_json::to_writer(&mut buf, value)
        .map_err(|e| ApiError::internal(format!("cannot serialise a response: {e}")))?;
    Ok(Bytes::from(buf))
}

/// A response of already serialised JSON.
pub(crate) fn json_bytes(status: StatusCode, body: Bytes) -> Response {
    let mut res = (status, body).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// `{"data": [...]}`.
#[derive(Serialize)]
pub(crate) struct List<'a, T> {
    pub data: &'a [T],
}

/// `axum::Json` whose rejections are [`ApiError`]s.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub(crate) struct ApiJson<T>(pub T);

/// The numeric `{id}` of a route's path; a bad one is `invalid_parameter` naming `id`.
pub(crate) struct PathId(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(ApiError::internal)?;
        let value = params
            .iter()
            .find_map(|(k, v)| (k == "id").then_some(v))
            .ok_or_else(|| ApiError::internal("a route using PathId has no {id}"))?;
        value
            .parse::<i64>()
            .map(PathId)
            .map_err(|_| ApiError::invalid_parameter("id", "id must be a numeric id"))
    }
}
