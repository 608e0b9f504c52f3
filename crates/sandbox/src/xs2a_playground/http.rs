//! The playground's HTTP routes (under [`PREFIX`]) and its control routes
//! (under [`CONTROL_PREFIX`]).
//!
//! Bodies and paths are parsed by hand so every bad input gets a JSON
//! `{"error": {"code", "message"}}` rather than an extractor's plain text.
//! Successful answers are `{"data": …}`, as the real playground's are.
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Map, Value, json};

use super::flow::{ConsentCall, FlowKind};
use super::{CONTROL_PREFIX, PREFIX, Playground, Refusal, Step};
use crate::util::{advance_request, json_response};

type Pg = State<Arc<Playground>>;
type IdPath = Result<Path<String>, PathRejection>;

/// Routes of the playground and its control routes.
pub fn routes(pg: Arc<Playground>) -> Router {
    let api = Router::new()
        .route("/xs2a/v1/sessions", put(start_session))
        .route(
            "/xs2a/v1/sessions/{session_id}",
            axum::routing::delete(close_session),
        )
        .route(
            "/xs2a/v1/sessions/{session_id}/flows/account-details",
            put(start_details_flow),
        )
        .route(
            "/xs2a/v1/sessions/{session_id}/flows/accounts",
            put(start_accounts_flow),
        )
        .route(
            "/xs2a/v1/sessions/{session_id}/flows/transactions",
            put(start_transactions_flow),
        )
        .route(
            "/xs2a/v1/sessions/{session_id}/flows/{flow_id}",
            get(flow_status),
        )
        .route(
            "/xs2a/v1/sessions/{session_id}/flows/{flow_id}/list",
            post(flow_page),
        )
        .route(
            "/xs2a/v1/sessions/{session_id}/consent/get",
            post(get_consent),
        )
        .route(
            "/branded/xs2a/v1/wizard/{flow_id}",
            get(get_flow).post(post_wizard),
        )
        .route(
            "/branded/xs2a/v1/wizard/{flow_id}/forms/{form_id}",
            post(submit_form),
        )
        .route(
            "/xs2a/v1/consents/{consent_id}/accounts/get",
            post(consent_accounts),
        )
        .route(
            "/xs2a/v1/consents/{consent_id}/account-details/get",
            post(consent_details),
        )
        .route(
            "/xs2a/v1/consents/{consent_id}/balances/get",
            post(consent_balances),
        )
        .route(
            "/xs2a/v1/consents/{consent_id}/transactions/get",
            post(consent_transactions),
        )
        .route(
            "/xs2a/v1/consents/{consent_id}/transactions/list",
            post(consent_transactions_next),
        )
        .route("/v1/banks", get(bank_list))
        .route(
            "/testbank/authorize",
            get(testbank_page).post(testbank_answer),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(axum::middleware::from_fn_with_state(pg.clone(), slow_down))
        .layer(axum::middleware::from_fn_with_state(pg.clone(), stamp_date));
    let control = Router::new()
        .route("/credentials", get(control_credentials))
        .route("/fail", get(control_get_fail).post(control_set_fail))
        .route("/stats", get(control_stats))
        .route("/latency", post(control_set_latency))
        .route("/truth", get(control_truth))
        .route("/advance", post(control_advance))
        .route("/usage", get(control_usage))
        .route("/renew-ids", post(control_renew_ids))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    Router::new()
        .nest(PREFIX, api)
        .nest(CONTROL_PREFIX, control)
        .with_state(pg)
}

/// `{"data": …}` or the refusal, counted in the stats.
fn answer(pg: &Playground, result: Result<Value, Refusal>) -> Response {
    match result {
        Ok(data) => json_response(StatusCode::OK, &json!({ "data": data })),
        Err(r) => {
            pg.count_refusal(&r);
            refusal_response(r)
        }
    }
}

fn refusal_response(r: Refusal) -> Response {
    let mut response = json_response(r.status, &r.body());
    if let Some(secs) = r.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

async fn not_found() -> Response {
    refusal_response(Refusal::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "no such playground route",
    ))
}

async fn method_not_allowed() -> Response {
    refusal_response(Refusal::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "this route does not take that method",
    ))
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()
}

/// `http://host[:port]` from the request, so the URLs handed out work on
/// whatever address the client reached the sandbox at.
fn root(headers: &HeaderMap, uri: &Uri) -> Result<String, Refusal> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .ok_or_else(|| Refusal::bad("missing Host header: the answers' URLs are built from it"))?;
    let sane = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b));
    if !sane {
        return Err(Refusal::bad("the Host header is not host[:port]"));
    }
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
    {
        Some(p) if p.eq_ignore_ascii_case("https") => "https",
        _ => "http",
    };
    Ok(format!("{scheme}://{host}"))
}

fn id(path: IdPath) -> Result<String, Refusal> {
    path.map(|Path(id)| id)
        .map_err(|e| Refusal::bad(format!("bad path: {e}")))
}

fn object(body: &[u8]) -> Result<Map<String, Value>, Refusal> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Refusal::bad("the body must be a JSON object")),
        Err(e) => Err(Refusal::bad(format!("the body is not JSON: {e}"))),
    }
}

fn internal(e: impl std::fmt::Display) -> Refusal {
    Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string())
}

async fn start_session(
    State(pg): Pg,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    body: Bytes,
) -> Response {
    pg.count(Step::StartSession);
    let result = (|| {
        pg.check_token(authorization(&headers))?;
        let root = root(&headers, &uri)?;
        pg.start_session(&root, &object(&body)?)
    })();
    answer(&pg, result)
}

fn start_flow(
    pg: &Playground,
    kind: FlowKind,
    path: IdPath,
    headers: &HeaderMap,
    uri: &Uri,
    body: &[u8],
) -> Response {
    pg.count(Step::StartFlow);
    let result = (|| {
        pg.check_token(authorization(headers))?;
        let root = root(headers, uri)?;
        pg.start_flow(&root, &id(path)?, kind, &object(body)?)
    })();
    answer(pg, result)
}

/// The handler that starts one kind of flow.
macro_rules! flow_route {
    ($name:ident, $kind:expr) => {
        async fn $name(
            State(pg): Pg,
            path: IdPath,
            headers: HeaderMap,
            OriginalUri(uri): OriginalUri,
            body: Bytes,
        ) -> Response {
            start_flow(&pg, $kind, path, &headers, &uri, &body)
        }
    };
}

flow_route!(start_details_flow, FlowKind::AccountDetails);
flow_route!(start_accounts_flow, FlowKind::Accounts);
flow_route!(start_transactions_flow, FlowKind::Transactions);

type TwoIds = Result<Path<(String, String)>, PathRejection>;

fn two_ids(path: TwoIds) -> Result<(String, String), Refusal> {
    path.map(|Path(ids)| ids)
        .map_err(|e| Refusal::bad(format!("bad path: {e}")))
}

async fn flow_status(
    State(pg): Pg,
    path: TwoIds,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
) -> Response {
    let result = (|| {
        pg.check_token(authorization(&headers))?;
        let (sid, fid) = two_ids(path)?;
        pg.flow_status(&root(&headers, &uri)?, &sid, &fid)
    })();
    answer(&pg, result)
}

async fn flow_page(
    State(pg): Pg,
    path: TwoIds,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    body: Bytes,
) -> Response {
    let result = (|| {
        pg.check_token(authorization(&headers))?;
        let (sid, fid) = two_ids(path)?;
        pg.flow_page(&root(&headers, &uri)?, &sid, &fid, &object(&body)?)
    })();
    answer(&pg, result)
}

async fn close_session(State(pg): Pg, path: IdPath, headers: HeaderMap) -> Response {
    let result = (|| {
        pg.check_token(authorization(&headers))?;
        pg.close_session(&id(path)?)
    })();
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => answer(&pg, Err(r)),
    }
}

/// Request 3 (`bank_code`) or 7 (`redirect_id`), told apart by the body.
async fn post_wizard(
    State(pg): Pg,
    path: IdPath,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    body: Bytes,
) -> Response {
    let result = async {
        let obj = object(&body)?;
        let step = if obj.contains_key("redirect_id") {
            Step::CompleteFlow
        } else {
            Step::SelectBank
        };
        pg.count(step);
        pg.check_token(authorization(&headers))?;
        let root = root(&headers, &uri)?;
        let flow_id = id(path)?;
        let key = pg.key().await?;
        match step {
            Step::CompleteFlow => pg.complete_flow(&root, &key, &flow_id, &obj),
            _ => pg.select_bank(&root, &key, &flow_id, &obj),
        }
    }
    .await;
    answer(&pg, result)
}

async fn get_flow(
    State(pg): Pg,
    path: IdPath,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
) -> Response {
    pg.count(Step::GetFlow);
    let result = (|| {
        pg.check_token(authorization(&headers))?;
        pg.get_flow(&root(&headers, &uri)?, &id(path)?)
    })();
    answer(&pg, result)
}

/// Requests 5, 6 and 8: an encrypted form posted to a `next` URL. No API
/// token is checked here (the real playground's clients send
/// `Token undefined`): the flow id in the URL is the capability.
async fn submit_form(
    State(pg): Pg,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    body: Bytes,
) -> Response {
    let result = async {
        let Path((flow_id, form_id)) = path.map_err(|e| Refusal::bad(format!("bad path: {e}")))?;
        let root = root(&headers, &uri)?;
        let kind = pg.pending_form(&flow_id, &form_id).inspect_err(|r| {
            if let Some(step) = r.injected {
                pg.count(step);
            }
        })?;
        pg.count(kind.step());
        let envelope: Value = serde_json::from_slice(&body).map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "INVALID_ENVELOPE",
                format!("the body is not JSON {{\"ct\", \"iv\", \"ek\"}}: {e}"),
            )
        })?;
        let key = pg.key().await?;
        let opener = key.clone();
        let form = tokio::task::spawn_blocking(move || opener.open(&envelope))
            .await
            .map_err(internal)?
            .map_err(|e| {
                Refusal::new(StatusCode::BAD_REQUEST, "INVALID_ENVELOPE", e.to_string())
            })?;
        pg.answer_form(&root, &key, &flow_id, &form_id, &form)
    }
    .await;
    answer(&pg, result)
}

async fn get_consent(
    State(pg): Pg,
    path: IdPath,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    body: Bytes,
) -> Response {
    pg.count(Step::GetConsent);
    let result = (|| {
        pg.check_token(authorization(&headers))?;
        let root = root(&headers, &uri)?;
        pg.get_consent(&root, &id(path)?, &object(&body)?)
    })();
    answer(&pg, result)
}

fn consent(
    pg: &Playground,
    path: IdPath,
    headers: &HeaderMap,
    uri: &Uri,
    body: &[u8],
    call: ConsentCall,
) -> Response {
    if let Some(step) = call.step() {
        pg.count(step);
    }
    let result = (|| {
        pg.check_token(authorization(headers))?;
        let root = root(headers, uri)?;
        pg.consent_call(&root, &id(path)?, call, &object(body)?)
    })();
    answer(pg, result)
}

/// The handler of one consent call.
macro_rules! consent_route {
    ($name:ident, $call:expr) => {
        async fn $name(
            State(pg): Pg,
            path: IdPath,
            headers: HeaderMap,
            OriginalUri(uri): OriginalUri,
            body: Bytes,
        ) -> Response {
            consent(&pg, path, &headers, &uri, &body, $call)
        }
    };
}

consent_route!(consent_accounts, ConsentCall::Accounts);
consent_route!(consent_details, ConsentCall::AccountDetails);
consent_route!(consent_balances, ConsentCall::Balances);
consent_route!(consent_transactions, ConsentCall::Transactions);
consent_route!(consent_transactions_next, ConsentCall::TransactionsNext);

#[derive(serde::Deserialize)]
struct BanksQuery {
    country_code: Option<String>,
    offset: Option<String>,
    size: Option<String>,
}

/// Bank Universe's `GET /v1/banks?country_code=`: the banks of a country
/// (here the test bank in DE), paged by `offset` and `size`. Its errors are
/// Bank Universe's own shape, not the XS2A API's.
async fn bank_list(State(pg): Pg, headers: HeaderMap, Query(q): Query<BanksQuery>) -> Response {
    let universe_error = |status: StatusCode, code: &str, message: &str| {
        json_response(
            status,
            &json!({"error_code": code, "error_messages": [message], "correlation_id": super::random_hex(16)}),
        )
    };
    if let Err(r) = pg.check_token(authorization(&headers)) {
        return universe_error(r.status, "UNAUTHORIZED", &r.message);
    }
    let Some(country) = q.country_code.filter(|c| c.len() == 2) else {
        return universe_error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "country_code is required (ISO 3166-1 alpha-2)",
        );
    };
    let number = |v: Option<String>, default: usize| match v {
        None => Some(default),
        Some(s) => s.parse::<usize>().ok(),
    };
    let (Some(offset), Some(size)) = (number(q.offset, 0), number(q.size, 100)) else {
        return universe_error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "offset and size must be numbers",
        );
    };
    let size = size.clamp(1, 1_000);
    let all = super::banks(&country);
    let page: Vec<Value> = all.iter().skip(offset).take(size).cloned().collect();
    json_response(
        StatusCode::OK,
        &json!({
            "banks": page,
            "pagination": {
                "count": page.len(),
                "total": all.len(),
                "offset": offset,
                "next": (offset + size < all.len()).then(|| format!("{PREFIX}/v1/banks?country_code={country}&offset={}&size={size}", offset + size)),
                "prev": (offset > 0).then(|| format!("{PREFIX}/v1/banks?country_code={country}&offset={}&size={size}", offset.saturating_sub(size))),
            },
        }),
    )
}

#[derive(serde::Deserialize)]
struct RedirectQuery {
    flow_id: Option<String>,
    redirect_id: Option<String>,
}

/// Where the redirect URL points: the bank's login page in real life. With
/// a `redirect_return_url` in the session it offers to agree or cancel (a
/// form posting back here); without, it tells a developer what to post.
async fn testbank_page(State(pg): Pg, Query(q): Query<RedirectQuery>) -> Response {
    let (Some(flow_id), Some(redirect_id)) = (q.flow_id, q.redirect_id) else {
        return refusal_response(Refusal::bad("flow_id and redirect_id are needed"));
    };
    let page = match pg.redirect_back(&flow_id, &redirect_id, true) {
        Err(r) => return refusal_response(r),
        Ok(Some(_)) => "<!doctype html><meta charset=utf-8><title>Test bank</title>\
             <h1>Testbank</h1><p>Klarna's playground asks for access to your accounts.</p>\
             <form method=post><button name=action value=approve>Agree</button> \
             <button name=action value=cancel>Cancel</button></form>"
            .to_owned(),
        Ok(None) => "<!doctype html><title>Test bank</title><p>The simulated PSU has authorized. \
             Complete the flow: POST /branded/xs2a/v1/wizard/{flow_id} with redirect_id and \
             return_url = this URL + <code>&amp;result=success</code>.</p>"
            .to_owned(),
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page,
    )
        .into_response()
}

/// The person agreed (or cancelled) on the bank's page: back to the
/// session's `redirect_return_url`.
async fn testbank_answer(State(pg): Pg, Query(q): Query<RedirectQuery>, body: Bytes) -> Response {
    let (Some(flow_id), Some(redirect_id)) = (q.flow_id, q.redirect_id) else {
        return refusal_response(Refusal::bad("flow_id and redirect_id are needed"));
    };
    let approved = !url::form_urlencoded::parse(&body).any(|(k, v)| k == "action" && v == "cancel");
    match pg.redirect_back(&flow_id, &redirect_id, approved) {
        Ok(Some(back)) => (StatusCode::SEE_OTHER, [(header::LOCATION, back)]).into_response(),
        Ok(None) => refusal_response(Refusal::conflict(
            "NO_RETURN_URL",
            "the session gave no redirect_return_url to send the browser back to",
        )),
        Err(r) => refusal_response(r),
    }
}

async fn control_credentials(
    State(pg): Pg,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
) -> Response {
    let mut body = serde_json::to_value(pg.credentials()).unwrap_or_default();
    let base = root(&headers, &uri)
        .map(|r| format!("{r}{PREFIX}"))
        .unwrap_or_else(|_| PREFIX.to_owned());
    body["base_url"] = json!(base);
    body["accounts"] = json!(
        pg.accounts()
            .iter()
            .map(|a| json!({"id": a.id, "iban": a.iban, "available": a.available, "balance": a.balance}))
            .collect::<Vec<_>>()
    );
    json_response(StatusCode::OK, &body)
}

async fn control_get_fail(State(pg): Pg) -> Response {
    json_response(StatusCode::OK, &json!({ "plan": pg.fail_plan() }))
}

/// `{"request": N, "runs"?: K, "persist"?: bool}`; `{"request": 0}` clears.
async fn control_set_fail(State(pg): Pg, body: Bytes) -> Response {
    let result = (|| {
        let obj = object(&body)?;
        let request = match obj.get("request") {
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .ok_or_else(|| Refusal::bad("request must be 0 (clear) or 1..=11"))?,
            _ => {
                return Err(Refusal::bad(
                    "request must be a number: 0 (clear) or 1..=11",
                ));
            }
        };
        let runs = match obj.get("runs") {
            None | Some(Value::Null) => 1,
            Some(Value::Number(n)) => n
                .as_u64()
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
                .ok_or_else(|| Refusal::bad("runs must be a positive integer"))?,
            Some(_) => return Err(Refusal::bad("runs must be a positive integer")),
        };
        let persist = match obj.get("persist") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(Refusal::bad("persist must be true or false")),
        };
        let plan = pg.set_fail(request, runs, persist).map_err(Refusal::bad)?;
        Ok(json!({ "plan": plan }))
    })();
    match result {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(r) => refusal_response(r),
    }
}

/// Injected latency before every playground answer (a slow bank).
async fn slow_down(
    State(pg): Pg,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let delay = pg.latency();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    next.run(request).await
}

/// The playground's clock in every answer's `Date` (errors included).
async fn stamp_date(
    State(pg): Pg,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(request).await;
    let stamp = pg.now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    if let Ok(v) = HeaderValue::from_str(&stamp) {
        response.headers_mut().insert(header::DATE, v);
    }
    response
}

async fn control_truth(State(pg): Pg) -> Response {
    json_response(
        StatusCode::OK,
        &json!({"today": pg.today().to_string(), "accounts": pg.truth()}),
    )
}

/// `{"days": N}` or `{"hours": N}`.
async fn control_advance(State(pg): Pg, body: Bytes) -> Response {
    advance_request(&body, |by| pg.advance_by(by))
}

async fn control_usage(State(pg): Pg) -> Response {
    let (max, refused) = pg.usage();
    json_response(
        StatusCode::OK,
        &json!({"daily_limit": super::DAILY_LIMIT, "max_calls_per_day": max, "limit_exceeded": refused}),
    )
}

async fn control_renew_ids(State(pg): Pg) -> Response {
    pg.renew_ids();
    json_response(StatusCode::OK, &json!({"accounts": pg.accounts()}))
}

/// `{"ms": N}`: delay every playground answer by N ms (0 turns it off).
async fn control_set_latency(State(pg): Pg, body: Bytes) -> Response {
    let result = (|| {
        let obj = object(&body)?;
        let ms = obj
            .get("ms")
            .and_then(Value::as_u64)
            .ok_or_else(|| Refusal::bad("ms must be a number of milliseconds (0 turns it off)"))?;
        pg.set_latency(ms);
        Ok(json!({ "latency_ms": pg.latency().as_millis() as u64 }))
    })();
    match result {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(r) => refusal_response(r),
    }
}

async fn control_stats(State(pg): Pg) -> Response {
    json_response(StatusCode::OK, &pg.stats())
}
