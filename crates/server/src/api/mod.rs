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
pub(crate) mod bankid;
mod card_agent;
pub(crate) mod cards;
mod check_secrets;
pub(crate) mod checks;
pub(crate) mod connections;
mod de;
pub(crate) mod documents;
pub(crate) mod export;
mod instances;
pub(crate) mod schema;
mod simplefin;
pub(crate) mod syncs;
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
        .merge(card_agent::routes(state))
        .merge(bankid::routes(state))
        .merge(checks::routes(state))
        .merge(check_secrets::routes(state))
        .merge(instances::routes(state))
        .merge(simplefin::routes())
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

/// Where clients reach this server, for absolute links: the request's
/// `Host`, or behind a trusted proxy its `X-Forwarded-Host` and
/// `X-Forwarded-Proto` (`serve` itself speaks plain HTTP).
pub(crate) fn origin(
    state: &AppState,
    peer: Option<std::net::IpAddr>,
    headers: &axum::http::HeaderMap,
) -> String {
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let via_proxy = peer.is_some_and(|p| state.config.trusted_proxies.contains(&p));
    let host = via_proxy
        .then(|| first("x-forwarded-host"))
        .flatten()
        .or_else(|| first("host"))
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("localhost");
    let scheme = match via_proxy.then(|| first("x-forwarded-proto")).flatten() {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}")
}

/// An agent token (check or card agent) serves the place it was created
/// for (a check location, a card host: `noun`), and no other; admin tokens
/// serve all. `create` is what `token create --scope` needs for one.
fn check_served(
    who: &crate::Principal,
    place: &str,
    noun: &str,
    create: &str,
) -> Result<(), ApiError> {
    if who.serves_location(place) {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        match &who.location {
            Some(own) => format!(
                "this agent token serves {noun} {own:?}, not {place:?}; create one with \
                 `bankbridge token create --scope {create} {place}`"
            ),
            None => format!(
                "this token is bound to no {noun}; agents need \
                 `bankbridge token create --scope {create} {place}`"
            ),
        },
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
                        "Scopes: read (GET routes, but the check agents' jobs), write (also syncs, connections, card logins/signs and check runs started by hand), admin (all, including card registration, card readers, the card audit, check secrets, the check agents' and card agents' routes); agent (only the check agents' routes: their jobs carry stored secrets); card-agent (only the card agents' routes of one card host: their jobs carry sealed PINs).",
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
        card_agent::Doc::openapi(),
        bankid::Doc::openapi(),
        checks::Doc::openapi(),
        check_secrets::Doc::openapi(),
        instances::Doc::openapi(),
    ] {
        doc.merge(part);
    }
    standard_responses(&mut doc);
    doc
}

/// The OpenAPI document this server serves: [`openapi`] with the values
/// known only at run time or kept as constants elsewhere written in (the
/// connectors this server knows, the patterns of names and URLs), so the
/// document says exactly what the server accepts.
pub(crate) fn document_for(connectors: &[String]) -> String {
    let mut doc = serde_json::to_value(openapi()).expect("the OpenAPI document serialises");
    // Every request body is read with unknown fields refused: say so.
    let mut bodies: Vec<String> = vec!["UpdateLogin".into()];
    if let Some(paths) = doc["paths"].as_object() {
        for item in paths.values() {
            for op in item.as_object().into_iter().flat_map(|o| o.values()) {
                if let Some(name) =
                    op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                        .as_str()
                        .and_then(|r| r.strip_prefix("#/components/schemas/"))
                {
                    bodies.push(name.to_owned());
                }
            }
        }
    }
    let schemas = &mut doc["components"]["schemas"];
    for name in bodies {
        schemas[name.as_str()]["additionalProperties"] = serde_json::json!(false);
    }
    for (schema, field) in [
        ("CreateConnection", "base_url"),
        ("UpdateLogin", "base_url"),
    ] {
        schemas[schema]["properties"][field]["pattern"] =
            serde_json::json!(bankbridge_core::net::SECURE_URL_PATTERN);
    }
    schemas["CreateConnection"]["properties"]["connector"]["enum"] = serde_json::json!(connectors);
    schemas["CreateConnection"]["properties"]["name"]["pattern"] =
        serde_json::json!(bankbridge_sync::connections::NAME_PATTERN);
    // `[name, value]` pairs are tuples of two; a status is a u16.
    for record in ["CheckRequestRecord", "CheckResponseRecord"] {
        let items = &mut schemas[record]["properties"]["headers"]["items"];
        items["minItems"] = serde_json::json!(2);
        items["maxItems"] = serde_json::json!(2);
    }
    schemas["CheckResponseRecord"]["properties"]["status"]["maximum"] = serde_json::json!(65535);
    serde_json::to_string(&doc).expect("the OpenAPI document serialises")
}

/// Answers every route may give, added where a route does not name them
/// itself: 401/403 on guarded routes, 400/413/415 on routes with a body,
/// 400 on routes with parameters, 404 on routes with a path parameter. The
/// document is a contract: each status a client can meet is in it.
fn standard_responses(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{Content, Ref, RefOr, ResponseBuilder};
    let error = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    Content::new(Some(Ref::from_schema_name("ErrorBody"))),
                )
                .build(),
        )
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        let has_path_param = path.contains('{');
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            let public = op.security.as_ref().is_some_and(|reqs| {
                reqs.iter()
                    .all(|r| serde_json::to_value(r).is_ok_and(|v| v == serde_json::json!({})))
            });
            let mut add = |code: &str, description: &str| {
                op.responses
                    .responses
                    .entry(code.to_owned())
                    .or_insert_with(|| error(description));
            };
            if !public {
                add(
                    "401",
                    "`unauthorized`: no token, or one that is unknown, malformed or revoked",
                );
                add(
                    "403",
                    "`forbidden`: the token's scope does not allow this route",
                );
            }
            let has_body = op.request_body.is_some();
            let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
            if has_body || has_params || has_path_param {
                add(
                    "400",
                    "A bad parameter or body (`invalid_parameter` names it)",
                );
            }
            if has_body {
                add(
                    "413",
                    "`payload_too_large`: the body is over the server's limit",
                );
                add(
                    "415",
                    "`unsupported_media_type`: the body is not `application/json`",
                );
                add("408", "`request_timeout`: the body did not arrive in time");
            }
            if has_path_param {
                add("404", "`not_found`: nothing has this id");
            }
        }
    }
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

/// A JSON object body (`Content-Type: application/json`), read into `T`;
/// rejections are [`ApiError`]s. Anything but an object is refused: serde
/// would read a struct from an array too (`[null, null]`), which no route
/// documents.
pub(crate) struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<mime::Mime>().ok())
            .is_some_and(|m| {
                m.type_() == "application"
                    && (m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json"))
            });
        if !is_json {
            return Err(ApiError::for_status(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::for_status(e.status()))?;
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object ({ ... })",
            ));
        }
        let mut value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::bad_request(format!("the request body is not valid JSON: {e}"))
        })?;
        de::whole_numbers(&mut value);
        serde_path_to_error::deserialize(value)
            .map(ApiJson)
            .map_err(|e| crate::error::body_field_error(&e.path().to_string(), e.inner()))
    }
}

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
