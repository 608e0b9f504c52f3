//! The RP endpoints under `/rp/v6.0/`, answered the way the service does:
//! every refusal is JSON `{"errorCode", "details"}` with the service's HTTP
//! status (pybankid, for one, calls `.json()` on every error), and cancel
//! answers exactly `{}`.
//!
//! Checks run in this order: client certificate (401), path (404), method
//! (405), Content-Type (415), body size and JSON (400), then the request.
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::BankIdSim;
use super::validate::{self, OrderKind};

/// Who is calling, as the TLS layer saw it.
#[derive(Clone, Debug, Default)]
pub struct Peer {
    /// Subject of the verified client certificate; `None` when the client
    /// presented none.
    pub client_subject: Option<String>,
}

/// An error answer of the RP API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub details: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, details: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            details: details.into(),
        }
    }
    pub fn invalid_parameters(details: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalidParameters", details)
    }
    pub fn already_in_progress(existing_cancelled: bool) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "alreadyInProgress",
            if existing_cancelled {
                "an order for this personal number was already in progress: it has been cancelled, and no new order was created"
            } else {
                "an order for this personal number is already in progress: no new order was created"
            },
        )
    }
    pub fn maintenance(details: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "maintenance", details)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "errorCode": self.code, "details": self.details });
        json_response(self.status, &body)
    }
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Start(OrderKind),
    Collect,
    Cancel,
}

fn endpoint(path: &str) -> Option<Endpoint> {
    Some(match path.strip_prefix(super::API_PREFIX)? {
        "auth" => Endpoint::Start(OrderKind::Auth),
        "sign" => Endpoint::Start(OrderKind::Sign),
        "payment" => Endpoint::Start(OrderKind::Payment),
        "phone/auth" => Endpoint::Start(OrderKind::PhoneAuth),
        "phone/sign" => Endpoint::Start(OrderKind::PhoneSign),
        "collect" => Endpoint::Collect,
        "cancel" => Endpoint::Cancel,
        _ => return None,
    })
}

/// Every RP route: one handler, so each refusal has the service's JSON shape.
pub fn router(sim: Arc<BankIdSim>) -> Router {
    Router::new().fallback(handle).with_state(sim)
}

async fn handle(State(sim): State<Arc<BankIdSim>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let result = answer(&sim, req).await;
    match result {
        Ok(body) => {
            tracing::debug!(path, "BankID simulator: 200");
            json_response(StatusCode::OK, &body)
        }
        Err(e) => {
            tracing::debug!(path, status = e.status.as_u16(), code = e.code, details = %e.details, "BankID simulator: refused");
            let method_not_allowed = e.status == StatusCode::METHOD_NOT_ALLOWED;
            let mut r = e.into_response();
            if method_not_allowed {
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            r
        }
    }
}

fn is_json(value: Option<&HeaderValue>) -> bool {
    let Some(v) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    v.split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

async fn answer(sim: &BankIdSim, req: Request) -> Result<serde_json::Value, ApiError> {
    let cfg = sim.config();
    let Some(peer) = req.extensions().get::<Peer>().cloned() else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "no client certificate: present the RP certificate (rp-cert.pem / rp-key.pem)",
        ));
    };
    let Some(rp_name) = peer.client_subject else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "no client certificate: present the RP certificate (rp-cert.pem / rp-key.pem)",
        ));
    };
    let path = req.uri().path();
    let Some(endpoint) = endpoint(path) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "notFound",
            format!(
                "no such endpoint: {}; the API is under /rp/v6.0/ (auth, sign, payment, phone/auth, phone/sign, collect, cancel)",
                validate::truncate(path, 100)
            ),
        ));
    };
    if req.method() != Method::POST {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "methodNotAllowed",
            format!("{} is not allowed here: use POST", req.method()),
        ));
    }
    if !is_json(req.headers().get(header::CONTENT_TYPE)) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupportedMediaType",
            "Content-Type must be application/json",
        ));
    }
    let max = cfg.max_body_bytes;
    let too_big =
        || ApiError::invalid_parameters(format!("the request body is larger than {max} bytes"));
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_big());
    }
    let bytes = axum::body::to_bytes(req.into_body(), max)
        .await
        .map_err(|_| too_big())?;
    let body: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::invalid_parameters(format!("the request body is not valid JSON: {e}"))
    })?;
    let strict = cfg.reject_unknown_fields;
    match endpoint {
        Endpoint::Start(kind) => {
            let start = validate::start_request(kind, &body, strict)?;
            sim.start(start, rp_name)
        }
        Endpoint::Collect => sim.collect(validate::order_ref(&body, strict)?),
        Endpoint::Cancel => {
            sim.cancel(validate::order_ref(&body, strict)?)?;
            Ok(serde_json::json!({}))
        }
    }
}

/// Wrap a plain body for the router (used by the TLS layer).
pub fn with_peer(mut req: Request<hyper::body::Incoming>, peer: Peer) -> Request {
    req.extensions_mut().insert(peer);
    req.map(Body::new)
}
