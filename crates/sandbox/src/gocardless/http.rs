//! The simulated GoCardless API's HTTP face: one handler for every API path
//! (with or without its trailing slash, never a redirect, always JSON), the
//! bank's link page and the control routes.
use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};
use serde_json::{Value, json};

use super::{CONTROL_PREFIX, GoCardless, Limits, PREFIX, Refusal};
use crate::fault::{self, FaultKind};
use crate::util::json_response;

type Service = State<Arc<GoCardless>>;

pub fn routes(service: Arc<GoCardless>) -> Router {
    let control = Router::new()
        .route("/truth", get(control_truth))
        .route("/credentials", get(control_credentials))
        .route("/advance", post(control_advance))
        .route("/usage", get(control_usage))
        .route("/requisitions/{id}/link", post(control_link))
        .route(
            "/psd2/start/{id}/{institution}",
            get(link_page).post(link_submit),
        );
    Router::new()
        .route(&format!("{PREFIX}/{{*rest}}"), any(api))
        .nest(CONTROL_PREFIX, control)
        .with_state(service)
}

fn refusal(r: Refusal) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = json_response(status, &r.body());
    if let Some(secs) = r.retry_after
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        let h = response.headers_mut();
        h.insert(header::RETRY_AFTER, v.clone());
        h.insert("x-ratelimit-account-success-reset", v);
        h.insert(
            "x-ratelimit-account-success-remaining",
            HeaderValue::from_static("0"),
        );
    }
    response
}

fn ok(status: StatusCode, body: Value, limits: Option<Limits>) -> Response {
    let mut response = json_response(status, &body);
    if let Some(l) = limits {
        let h = response.headers_mut();
        for (name, value) in [
            ("x-ratelimit-account-success-limit", l.limit.to_string()),
            (
                "x-ratelimit-account-success-remaining",
                l.remaining.to_string(),
            ),
            ("x-ratelimit-account-success-reset", l.reset.to_string()),
        ] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        }
    }
    response
}

fn json_body(body: &Bytes) -> Result<Value, Refusal> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|e| Refusal::new(400, "Parse error", format!("JSON parse error - {e}")))
}

/// Every API answer carries the service's clock in `Date` (moved on by
/// `advance`, as a real service's clock moves on with the days).
async fn api(
    State(gc): Service,
    Path(rest): Path<String>,
    method: Method,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut response = answer(&gc, rest, method, q, headers, body).await;
    let stamp = gc.now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    if let Ok(v) = HeaderValue::from_str(&stamp) {
        response.headers_mut().insert(header::DATE, v);
    }
    response
}

async fn answer(
    gc: &GoCardless,
    rest: String,
    method: Method,
    q: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fault = gc.fault();
    let latency = fault.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let parts: Vec<&str> = rest.trim_matches('/').split('/').collect();
    // Faults hit the account data only (a token call that failed would
    // only be asked again).
    let account_call = parts.first() == Some(&"accounts");
    let rolled = if account_call { fault.roll() } else { None };
    match rolled {
        Some(FaultKind::ServerError) => {
            let status = StatusCode::from_u16(fault::server_error_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return json_response(
                status,
                &json!({"summary": "Internal error", "detail": "Try again later", "status_code": status.as_u16()}),
            );
        }
        Some(FaultKind::RateLimited) => {
            // The service's own throttle (not the per-account limit).
            let mut r = json_response(
                StatusCode::TOO_MANY_REQUESTS,
                &json!({"summary": "Rate limit exceeded", "detail": "Please try again in 1 seconds", "status_code": 429}),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
        _ => {}
    }
    let answer = dispatch(gc, &method, &parts, &q, &headers, &body);
    match (answer, rolled) {
        (Ok(r), Some(FaultKind::Truncated)) => {
            let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
                .await
                .unwrap_or_default();
            let cut = fault::truncate(&String::from_utf8_lossy(&bytes));
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                cut,
            )
                .into_response()
        }
        (Ok(r), _) => r,
        (Err(e), _) => refusal(e),
    }
}

fn dispatch(
    gc: &GoCardless,
    method: &Method,
    parts: &[&str],
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, Refusal> {
    // Token calls take no token (the official client sends a stale one).
    match (method, parts) {
        (&Method::POST, ["token", "new"]) => {
            return Ok(ok(StatusCode::OK, gc.new_token(&json_body(body)?)?, None));
        }
        (&Method::POST, ["token", "refresh"]) => {
            return Ok(ok(
                StatusCode::OK,
                gc.refresh_token(&json_body(body)?)?,
                None,
            ));
        }
        _ => {}
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    gc.authorise(bearer)?;
    let page = |key: &str, default: usize| {
        q.get(key)
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(default)
    };
    Ok(match (method, parts) {
        (&Method::GET, ["institutions"]) => ok(
            StatusCode::OK,
            gc.institutions(q.get("country").map(String::as_str)),
            None,
        ),
        (&Method::GET, ["institutions", id]) => ok(StatusCode::OK, gc.institution(id)?, None),
        (&Method::POST, ["agreements", "enduser"]) => ok(
            StatusCode::CREATED,
            gc.create_agreement(&json_body(body)?)?,
            None,
        ),
        (&Method::GET, ["agreements", "enduser"]) => ok(
            StatusCode::OK,
            gc.agreements(page("limit", 100), page("offset", 0)),
            None,
        ),
        (&Method::GET, ["agreements", "enduser", id]) => {
            ok(StatusCode::OK, gc.agreement(id)?, None)
        }
        (&Method::DELETE, ["agreements", "enduser", id]) => {
            ok(StatusCode::OK, gc.delete_agreement(id)?, None)
        }
        (&Method::POST, ["requisitions"]) => ok(
            StatusCode::CREATED,
            gc.create_requisition(&json_body(body)?)?,
            None,
        ),
        (&Method::GET, ["requisitions"]) => ok(
            StatusCode::OK,
            gc.requisitions(page("limit", 100), page("offset", 0)),
            None,
        ),
        (&Method::GET, ["requisitions", id]) => ok(StatusCode::OK, gc.requisition(id)?, None),
        (&Method::DELETE, ["requisitions", id]) => {
            ok(StatusCode::OK, gc.delete_requisition(id)?, None)
        }
        (&Method::GET, ["accounts", id]) => {
            let (v, l) = gc.account(id)?;
            ok(StatusCode::OK, v, l)
        }
        (&Method::GET, ["accounts", id, "details"]) => {
            let (v, l) = gc.details(id)?;
            ok(StatusCode::OK, v, l)
        }
        (&Method::GET, ["accounts", id, "balances"]) => {
            let (v, l) = gc.balances(id)?;
            ok(StatusCode::OK, v, l)
        }
        (&Method::GET, ["accounts", id, "transactions"]) => {
            let (v, l) = gc.transactions(
                id,
                q.get("date_from").map(String::as_str),
                q.get("date_to").map(String::as_str),
            )?;
            ok(StatusCode::OK, v, l)
        }
        _ => {
            return Err(Refusal::new(
                404,
                "Not found.",
                format!("no such endpoint: {method} /{}/", parts.join("/")),
            ));
        }
    })
}

// ---- the bank's page a requisition's link opens ----

async fn link_page(Path((id, institution)): Path<(String, String)>) -> Response {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sandbox Finance</title></head>\
         <body><h1>Sandbox Finance ({})</h1><p>A service asks to read your accounts. Any user id and code work here.</p>\
         <form method=\"post\"><label>User id <input name=\"user\"></label> <label>Code <input name=\"code\" type=\"password\"></label>\
         <button name=\"action\" value=\"approve\">Agree</button> <button name=\"action\" value=\"cancel\">Cancel</button></form>\
         <p><small>Requisition {}</small></p></body></html>",
        html_escape(&institution),
        html_escape(&id)
    ))
    .into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn link_submit(
    State(gc): Service,
    Path((id, _institution)): Path<(String, String)>,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    let approve = form.get("action").map(String::as_str) != Some("cancel");
    match gc.link(&id, approve) {
        Ok(back) => Redirect::to(&back).into_response(),
        Err(e) => refusal(e),
    }
}

// ---- control routes ----

async fn control_truth(State(gc): Service) -> Response {
    json_response(
        StatusCode::OK,
        &json!({"today": gc.today().to_string(), "accounts": gc.truth()}),
    )
}

async fn control_credentials(State(gc): Service) -> Response {
    json_response(StatusCode::OK, &json!(gc.credentials()))
}

/// `{"days": N}` or `{"hours": N}`.
async fn control_advance(State(gc): Service, body: Bytes) -> Response {
    crate::util::advance_request(&body, |by| gc.advance_by(by))
}

async fn control_usage(State(gc): Service) -> Response {
    let (max, refused) = gc.usage();
    json_response(
        StatusCode::OK,
        &json!({"maxSuccessfulPerDay": max, "refused": refused}),
    )
}

/// `POST /_sandbox/gocardless/requisitions/{id}/link` `{"approve": true}`:
/// the user's visit to the bank, without a browser (tests).
async fn control_link(State(gc): Service, Path(id): Path<String>, body: Bytes) -> Response {
    let approve = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("approve").and_then(Value::as_bool))
        .unwrap_or(true);
    match gc.link(&id, approve) {
        Ok(back) => json_response(StatusCode::OK, &json!({"redirect": back})),
        Err(e) => refusal(e),
    }
}
