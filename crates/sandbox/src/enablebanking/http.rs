//! The simulated Enable Banking API's HTTP face: the application's JWT
//! checked on every call, the API paths, the bank's authorisation page and
//! the control routes.
use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::{CONTROL_PREFIX, EnableBanking, MAX_JWT_SECS, PREFIX, Refusal};
use crate::fault::{self, FaultKind};
use crate::util::json_response;

type Service = State<Arc<EnableBanking>>;

pub fn routes(service: Arc<EnableBanking>) -> Router {
    let control = Router::new()
        .route("/truth", get(control_truth))
        .route("/credentials", get(control_credentials))
        .route("/advance", post(control_advance))
        .route("/usage", get(control_usage))
        .route("/auth/{id}", get(auth_page).post(auth_submit))
        .route("/auth/{id}/approve", post(control_approve));
    Router::new()
        .route(&format!("{PREFIX}/{{*rest}}"), any(api))
        .nest(CONTROL_PREFIX, control)
        .with_state(service)
}

fn refusal(r: &Refusal) -> Response {
    json_response(
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST),
        &r.body(),
    )
}

/// Check the application's JWT: RS256 over `header.claims` with the
/// application's key, `kid` its id, the audience and issuer of the API, and
/// at most a day of life (on the wall clock).
pub fn check_jwt(eb: &EnableBanking, token: &str) -> Result<(), Refusal> {
    use rsa::pkcs1v15::{Signature, VerifyingKey};
    use rsa::signature::Verifier;
    let unauthorized = |m: &str| Refusal::new(401, "UNAUTHORIZED_ACCESS", m);
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(unauthorized("The token is not a JWT"));
    };
    let decode = |p: &str| -> Result<Value, Refusal> {
        URL_SAFE_NO_PAD
            .decode(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| unauthorized("The token is not a JWT"))
    };
    let (header, claims) = (decode(h)?, decode(c)?);
    if header["alg"] != "RS256" {
        return Err(unauthorized("Only RS256 is accepted"));
    }
    if header["kid"].as_str() != Some(eb.app_id()) {
        return Err(unauthorized("Unknown application (kid)"));
    }
    if claims["iss"] != "enablebanking.com" || claims["aud"] != "api.enablebanking.com" {
        return Err(unauthorized("Wrong iss or aud"));
    }
    let now = chrono::Utc::now().timestamp();
    let (Some(iat), Some(exp)) = (claims["iat"].as_i64(), claims["exp"].as_i64()) else {
        return Err(unauthorized("iat and exp are required"));
    };
    if iat > now + 60 || exp <= now {
        return Err(unauthorized("The token is expired or not valid yet"));
    }
    if exp - iat > MAX_JWT_SECS {
        return Err(unauthorized("The token lives longer than a day"));
    }
    let signature = URL_SAFE_NO_PAD
        .decode(sig)
        .ok()
        .and_then(|b| Signature::try_from(b.as_slice()).ok())
        .ok_or_else(|| unauthorized("Bad signature"))?;
    VerifyingKey::<sha2::Sha256>::new(eb.key().to_public_key())
        .verify(format!("{h}.{c}").as_bytes(), &signature)
        .map_err(|_| unauthorized("Bad signature"))
}

/// Every API answer carries the bank's clock in `Date`.
async fn api(
    State(eb): Service,
    Path(rest): Path<String>,
    method: Method,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut response = answer(&eb, &rest, &method, &q, &headers, &body).await;
    let stamp = eb.now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    if let Ok(v) = HeaderValue::from_str(&stamp) {
        response.headers_mut().insert(header::DATE, v);
    }
    response
}

async fn answer(
    eb: &EnableBanking,
    rest: &str,
    method: &Method,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let fault = eb.fault();
    let latency = fault.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let parts: Vec<&str> = rest.trim_matches('/').split('/').collect();
    let rolled = if parts.first() == Some(&"accounts") {
        fault.roll()
    } else {
        None
    };
    match rolled {
        Some(FaultKind::ServerError) => {
            let status = fault::server_error_status();
            return refusal(&Refusal::new(
                status,
                "ASPSP_ERROR",
                "Error interacting with ASPSP",
            ));
        }
        Some(FaultKind::RateLimited) => {
            let mut r = refusal(&Refusal::new(429, "TOO_MANY_REQUESTS", "Too many requests"));
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
        _ => {}
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let result = match bearer {
        None => Err(Refusal::new(
            401,
            "AUTHORIZATION_NOT_PROVIDED",
            "Authorization header is not provided",
        )),
        Some(token) => {
            check_jwt(eb, token).and_then(|()| dispatch(eb, method, &parts, q, headers, body))
        }
    };
    match (result, rolled) {
        (Ok(v), Some(FaultKind::Truncated)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            fault::truncate(&v.to_string()),
        )
            .into_response(),
        (Ok(v), _) => json_response(StatusCode::OK, &v),
        (Err(e), _) => refusal(&e),
    }
}

fn dispatch(
    eb: &EnableBanking,
    method: &Method,
    parts: &[&str],
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Value, Refusal> {
    let json_body = || -> Result<Value, Refusal> {
        serde_json::from_slice(body).map_err(|e| {
            Refusal::new(
                422,
                "WRONG_REQUEST_PARAMETERS",
                format!("Invalid JSON: {e}"),
            )
        })
    };
    // Calls with the PSU's headers are made with the user there: no limit.
    let counted = headers.get("psu-ip-address").is_none();
    let get = |k: &str| q.get(k).map(String::as_str);
    match (method, parts) {
        (&Method::GET, ["application"]) => Ok(json!({
            "name": "bankbridge sandbox application", "description": null, "kid": eb.app_id(),
            "environment": "SANDBOX", "redirect_urls": ["http://127.0.0.1/callback"], "active": true,
            "countries": ["FI", "SE"], "services": ["AIS"],
        })),
        (&Method::GET, ["aspsps"]) => Ok(eb.aspsps(get("country"))),
        (&Method::POST, ["auth"]) => eb.start_auth(&json_body()?),
        (&Method::POST, ["sessions"]) => eb.create_session(&json_body()?),
        (&Method::GET, ["sessions", id]) => eb.session(id),
        (&Method::DELETE, ["sessions", id]) => eb.close_session(id),
        (&Method::GET, ["accounts", uid, "details"]) => eb.details(uid, counted),
        (&Method::GET, ["accounts", uid, "balances"]) => eb.balances(uid, counted),
        (&Method::GET, ["accounts", uid, "transactions"]) => eb.transactions(
            uid,
            get("date_from"),
            get("date_to"),
            get("continuation_key"),
            counted,
        ),
        _ => Err(Refusal::new(
            404,
            "NOT_FOUND",
            format!("no such endpoint: {method} /{}", parts.join("/")),
        )),
    }
}

// ---- the bank's page the authorisation URL opens ----

async fn auth_page(Path(id): Path<String>) -> Response {
    let id = id.replace(['<', '>', '&', '"'], "");
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sandbox Pankki</title></head>\
         <body><h1>Sandbox Pankki</h1><p>An application asks to read your accounts through Enable Banking. \
         Any user id and code work here.</p>\
         <form method=\"post\"><label>User id <input name=\"user\"></label> <label>Code <input name=\"code\" type=\"password\"></label>\
         <button name=\"action\" value=\"approve\">Authorise</button> <button name=\"action\" value=\"cancel\">Cancel</button></form>\
         <p><small>Authorisation {id}</small></p></body></html>"
    ))
    .into_response()
}

async fn auth_submit(
    State(eb): Service,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    let approve = form.get("action").map(String::as_str) != Some("cancel");
    match eb.authorize(&id, approve) {
        Ok(back) => Redirect::to(&back).into_response(),
        Err(e) => refusal(&e),
    }
}

// ---- control routes ----

async fn control_truth(State(eb): Service) -> Response {
    json_response(
        StatusCode::OK,
        &json!({"today": eb.today().to_string(), "accounts": eb.truth()}),
    )
}

async fn control_credentials(State(eb): Service) -> Response {
    json_response(StatusCode::OK, &json!(eb.credentials()))
}

/// `{"days": N}` or `{"hours": N}`.
async fn control_advance(State(eb): Service, body: Bytes) -> Response {
    crate::util::advance_request(&body, |by| eb.advance_by(by))
}

async fn control_usage(State(eb): Service) -> Response {
    let (max, refused) = eb.usage();
    json_response(
        StatusCode::OK,
        &json!({"maxUnattendedPerDay": max, "refused": refused}),
    )
}

/// `POST /_sandbox/enablebanking/auth/{id}/approve` `{"approve": true}`:
/// the user's visit to the bank, without a browser (tests).
async fn control_approve(State(eb): Service, Path(id): Path<String>, body: Bytes) -> Response {
    let approve = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("approve").and_then(Value::as_bool))
        .unwrap_or(true);
    match eb.authorize(&id, approve) {
        Ok(back) => json_response(StatusCode::OK, &json!({"redirect": back})),
        Err(e) => refusal(&e),
    }
}
