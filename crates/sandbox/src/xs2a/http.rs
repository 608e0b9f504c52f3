//! The NextGenPSD2 banks' HTTP face: the API under `/xs2a/{bank}/v1`, the
//! redirect bank's login page, and the control routes.
use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    CONTROL_PREFIX, Headers, MAX_ADVANCE_DAYS, PREFIX, Refusal, TxQuery, Xs2aBank, Xs2aBanks,
};
use crate::fault::{self, FaultConfig, FaultKind};
use crate::util::json_response;

type Banks = State<Arc<Xs2aBanks>>;

pub fn routes(banks: Arc<Xs2aBanks>) -> Router {
    let api = Router::new()
        .route("/v1/consents", post(create_consent))
        .route("/v1/consents/{id}", get(get_consent).delete(delete_consent))
        .route("/v1/consents/{id}/status", get(consent_status))
        .route(
            "/v1/consents/{id}/authorisations",
            post(start_authorisation),
        )
        .route(
            "/v1/consents/{id}/authorisations/{auth}",
            get(get_authorisation).put(update_authorisation),
        )
        .route("/v1/accounts", get(accounts))
        .route("/v1/accounts/{account}/balances", get(balances))
        .route("/v1/accounts/{account}/transactions", get(transactions))
        .route("/sca/{token}", get(login_page).post(login_submit));
    let control = Router::new()
        .route("/truth", get(control_truth))
        .route("/credentials", get(control_credentials))
        .route("/advance", post(control_advance))
        .route("/usage", get(control_usage))
        .route("/consents", get(control_consents))
        .route("/revoke", post(control_revoke))
        .route("/sms", get(control_sms))
        .route("/card", get(control_card))
        .route("/config", get(control_config).post(control_set_config));
    Router::new()
        .nest(&format!("{PREFIX}/{{bank}}"), api)
        .nest(&format!("{CONTROL_PREFIX}/{{bank}}"), control)
        .with_state(banks)
}

fn unknown_bank(name: &str) -> Response {
    refusal(
        None,
        None,
        Refusal::new(
            404,
            "RESOURCE_UNKNOWN",
            format!("no simulated bank {name:?}: be, se or redirect"),
        ),
    )
}

/// A `tppMessages` refusal, with the request id echoed and the bank's `Date`.
fn refusal(b: Option<&Xs2aBank>, request_id: Option<&str>, r: Refusal) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST);
    finish(b, request_id, json_response(status, &r.body()))
}

fn finish(b: Option<&Xs2aBank>, request_id: Option<&str>, mut response: Response) -> Response {
    let headers = response.headers_mut();
    if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(id).ok()) {
        headers.insert(HeaderName::from_static("x-request-id"), id);
    }
    if let Some(b) = b {
        let stamp = b.now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        if let Ok(v) = HeaderValue::from_str(&stamp) {
            headers.insert(header::DATE, v);
        }
    }
    response
}

fn header_text(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The headers of an API call; `X-Request-ID` (a UUID) is required on every one.
fn read_headers(h: &HeaderMap) -> Result<(String, Headers), Refusal> {
    let request_id = header_text(h, "x-request-id")
        .filter(|id| uuid::Uuid::parse_str(id).is_ok())
        .ok_or_else(|| Refusal::new(400, "FORMAT_ERROR", "X-Request-ID must be a UUID"))?;
    Ok((
        request_id,
        Headers {
            psu_ip: header_text(h, "psu-ip-address"),
            psu_id: header_text(h, "psu-id"),
            consent_id: header_text(h, "consent-id"),
            redirect_uri: header_text(h, "tpp-redirect-uri"),
            nok_redirect_uri: header_text(h, "tpp-nok-redirect-uri"),
            paging: false,
        },
    ))
}

fn json_body(body: &Bytes) -> Result<Value, Refusal> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body)
        .map_err(|e| Refusal::new(400, "FORMAT_ERROR", format!("the body is not JSON: {e}")))
}

/// Run one API call: resolve the bank, read the headers, answer.
async fn api(
    banks: &Xs2aBanks,
    name: &str,
    h: &HeaderMap,
    faults: bool,
    call: impl FnOnce(&Xs2aBank, &Headers) -> Result<Response, Refusal>,
) -> Response {
    let Some(b) = banks.get(name) else {
        return unknown_bank(name);
    };
    let fault = b.fault();
    let latency = fault.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let (request_id, headers) = match read_headers(h) {
        Ok(x) => x,
        Err(r) => return refusal(Some(b), None, r),
    };
    let rolled = if faults { fault.roll() } else { None };
    match rolled {
        Some(FaultKind::ServerError) => {
            let status = StatusCode::from_u16(fault::server_error_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return finish(Some(b), Some(&request_id), (status, "").into_response());
        }
        Some(FaultKind::RateLimited) => {
            // A gateway's throttle, not the consent's budget: no ACCESS_EXCEEDED.
            return finish(
                Some(b),
                Some(&request_id),
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, "1")],
                    "",
                )
                    .into_response(),
            );
        }
        _ => {}
    }
    match call(b, &headers) {
        Ok(mut response) => {
            if let Some(kind @ (FaultKind::Truncated | FaultKind::Malformed)) = rolled {
                response = corrupt(response, kind).await;
            }
            finish(Some(b), Some(&request_id), response)
        }
        Err(r) => refusal(Some(b), Some(&request_id), r),
    }
}

/// A fault on an answer already made: cut in half, or the wrong shape.
async fn corrupt(response: Response, kind: FaultKind) -> Response {
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = if kind == FaultKind::Truncated {
        fault::truncate(&text)
    } else {
        r#"{"accounts":"maintenance"}"#.to_owned()
    };
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn ok(body: Value) -> Result<Response, Refusal> {
    Ok(json_response(StatusCode::OK, &body))
}

async fn create_consent(
    State(banks): Banks,
    Path(name): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    api(&banks, &name, &h, false, |b, headers| {
        let (answer, id) = b.create_consent(headers, &json_body(&body)?)?;
        let mut response = json_response(StatusCode::CREATED, &answer);
        let hs = response.headers_mut();
        if let Ok(v) = HeaderValue::from_str(b.profile.approach.as_str()) {
            hs.insert(HeaderName::from_static("aspsp-sca-approach"), v);
        }
        if let Ok(v) =
            HeaderValue::from_str(&format!("{PREFIX}/{}/v1/consents/{id}", b.profile.name))
        {
            hs.insert(header::LOCATION, v);
        }
        Ok(response)
    })
    .await
}

async fn get_consent(
    State(banks): Banks,
    Path((name, id)): Path<(String, String)>,
    h: HeaderMap,
) -> Response {
    api(&banks, &name, &h, false, |b, _| ok(b.consent(&id)?)).await
}

async fn consent_status(
    State(banks): Banks,
    Path((name, id)): Path<(String, String)>,
    h: HeaderMap,
) -> Response {
    api(&banks, &name, &h, true, |b, _| ok(b.consent_status(&id)?)).await
}

async fn delete_consent(
    State(banks): Banks,
    Path((name, id)): Path<(String, String)>,
    h: HeaderMap,
) -> Response {
    api(&banks, &name, &h, false, |b, _| {
        b.delete_consent(&id)?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

async fn start_authorisation(
    State(banks): Banks,
    Path((name, id)): Path<(String, String)>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    api(&banks, &name, &h, false, |b, headers| {
        let answer = b.start_authorisation(&id, headers, &json_body(&body)?)?;
        Ok(json_response(StatusCode::CREATED, &answer))
    })
    .await
}

async fn get_authorisation(
    State(banks): Banks,
    Path((name, id, auth)): Path<(String, String, String)>,
    h: HeaderMap,
) -> Response {
    api(&banks, &name, &h, true, |b, _| {
        ok(b.authorisation(&id, &auth)?)
    })
    .await
}

async fn update_authorisation(
    State(banks): Banks,
    Path((name, id, auth)): Path<(String, String, String)>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    api(&banks, &name, &h, false, |b, _| {
        ok(b.update_authorisation(&id, &auth, &json_body(&body)?)?)
    })
    .await
}

async fn accounts(State(banks): Banks, Path(name): Path<String>, h: HeaderMap) -> Response {
    api(&banks, &name, &h, true, |b, headers| {
        ok(b.accounts(headers)?)
    })
    .await
}

async fn balances(
    State(banks): Banks,
    Path((name, account)): Path<(String, String)>,
    h: HeaderMap,
) -> Response {
    api(&banks, &name, &h, true, |b, headers| {
        ok(b.balances(headers, &account)?)
    })
    .await
}

async fn transactions(
    State(banks): Banks,
    Path((name, account)): Path<(String, String)>,
    Query(q): Query<TxQuery>,
    h: HeaderMap,
) -> Response {
    api(&banks, &name, &h, true, |b, headers| {
        ok(b.transactions(headers, &account, &q)?)
    })
    .await
}

// ---- the redirect bank's login page ----

const PAGE_STYLE: &str = "body{font-family:sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem}\
label{display:block;margin:.6rem 0}input{width:100%;padding:.4rem}button{margin:.6rem .4rem 0 0;padding:.4rem 1rem}\
.error{color:#a00}";

fn page(title: &str, body: &str) -> Response {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <meta name=\"viewport\" content=\"width=device-width\"><style>{PAGE_STYLE}</style></head>\
         <body><h1>{title}</h1>{body}</body></html>"
    ))
    .into_response()
}

fn login_form(b: &Xs2aBank, error: Option<&str>) -> Response {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{e}</p>"))
        .unwrap_or_default();
    page(
        b.profile.title,
        &format!(
            "<p>A third party asks to read your accounts' balances and transactions. Log in to agree.</p>{error}\
             <form method=\"post\"><label>User name <input name=\"username\" autocomplete=\"username\"></label>\
             <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\"></label>\
             <button name=\"action\" value=\"login\">Log in and agree</button>\
             <button name=\"action\" value=\"cancel\">Cancel</button></form>"
        ),
    )
}

async fn login_page(State(banks): Banks, Path((name, token)): Path<(String, String)>) -> Response {
    let Some(b) = banks.get(&name) else {
        return unknown_bank(&name);
    };
    match b.redirect_target(&token) {
        Some((_, "received")) => login_form(b, None),
        Some(_) => page(b.profile.title, "<p>This request is already answered.</p>"),
        None => (
            StatusCode::NOT_FOUND,
            page(b.profile.title, "<p>This link is not valid (any more).</p>"),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    action: String,
}

async fn login_submit(
    State(banks): Banks,
    Path((name, token)): Path<(String, String)>,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    let Some(b) = banks.get(&name) else {
        return unknown_bank(&name);
    };
    let login =
        (form.action != "cancel").then_some((form.username.as_str(), form.password.as_str()));
    match b.redirect_login(&token, login) {
        Ok(Some(back)) => Redirect::to(&back).into_response(),
        Ok(None) => page(b.profile.title, "<p>Done. You may close this page.</p>"),
        Err("wrong") => login_form(b, Some("The user name or password is wrong.")),
        Err(_) => page(b.profile.title, "<p>This request is already answered.</p>"),
    }
}

// ---- control routes ----

fn control(
    banks: &Xs2aBanks,
    name: &str,
    answer: impl FnOnce(&Xs2aBank) -> Result<Value, (StatusCode, String)>,
) -> Response {
    let Some(b) = banks.get(name) else {
        return unknown_bank(name);
    };
    match answer(b) {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err((status, message)) => json_response(status, &json!({"error": message})),
    }
}

async fn control_truth(State(banks): Banks, Path(name): Path<String>) -> Response {
    control(&banks, &name, |b| {
        Ok(json!({"today": b.today().to_string(), "accounts": b.truth()}))
    })
}

async fn control_credentials(State(banks): Banks, Path(name): Path<String>) -> Response {
    control(&banks, &name, |b| Ok(json!(b.credentials())))
}

async fn control_advance(State(banks): Banks, Path(name): Path<String>, body: Bytes) -> Response {
    control(&banks, &name, |b| {
        let days = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("days").and_then(Value::as_u64))
            .filter(|d| *d <= u64::from(MAX_ADVANCE_DAYS))
            .ok_or((
                StatusCode::BAD_REQUEST,
                format!("expected {{\"days\": N}} with 0 <= N <= {MAX_ADVANCE_DAYS}"),
            ))?;
        let today = b
            .advance(days as u32)
            .map_err(|e| (StatusCode::CONFLICT, e))?;
        Ok(json!({"today": today.to_string()}))
    })
}

async fn control_usage(State(banks): Banks, Path(name): Path<String>) -> Response {
    control(&banks, &name, |b| {
        Ok(json!({"usage": b.usage(), "maxUnattendedPerDay": b.max_unattended_per_day()}))
    })
}

async fn control_consents(State(banks): Banks, Path(name): Path<String>) -> Response {
    control(&banks, &name, |b| Ok(json!({"consents": b.consents()})))
}

async fn control_revoke(State(banks): Banks, Path(name): Path<String>) -> Response {
    control(&banks, &name, |b| Ok(json!({"revoked": b.revoke_all()})))
}

async fn control_sms(State(banks): Banks, Path(name): Path<String>) -> Response {
    control(&banks, &name, |b| match b.sms_code() {
        Some(code) => Ok(json!({"code": code})),
        None => Err((StatusCode::NOT_FOUND, "no SMS code is waiting".to_owned())),
    })
}

async fn control_card(State(banks): Banks, Path(name): Path<String>) -> Response {
    control(&banks, &name, |b| {
        let card = b.card();
        Ok(json!({
            "profile": card.profile.name(),
            "pan": card.pan,
            "pin": card.pin,
            "codesRefused": b.codes_refused(),
            "keySeed": b.card_key_seed(),
            "command": format!("bankbridge card virtual --profile cap-be --pin {} --key-seed {}", card.pin, b.card_key_seed()),
        }))
    })
}

async fn control_config(State(banks): Banks, Path(name): Path<String>) -> Response {
    control(&banks, &name, |b| Ok(json!({"fault": b.fault()})))
}

async fn control_set_config(
    State(banks): Banks,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    control(&banks, &name, |b| {
        let fault: FaultConfig = serde_json::from_slice::<HashMap<String, Value>>(&body)
            .ok()
            .and_then(|m| m.get("fault").cloned())
            .and_then(|f| serde_json::from_value(f).ok())
            .ok_or((
                StatusCode::BAD_REQUEST,
                "expected {\"fault\": {\"fault_rate\": 0.1, …}}".to_owned(),
            ))?;
        b.set_fault(fault)
            .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
        Ok(json!({"fault": b.fault()}))
    })
}
