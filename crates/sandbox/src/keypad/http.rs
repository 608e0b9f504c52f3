//! The keypad bank's HTTP routes and its sandbox control routes.
//!
//! Bodies and queries are parsed by hand, so every bad input gets the bank's
//! `400 {"code", "message"}` rather than an extractor's plain-text rejection.
use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::data::Row;
use super::{
    GATE_DAYS, KeypadBank, LoginOutcome, MAX_ADVANCE_DAYS, MAX_ATTEMPTS, MAX_ROWS, PREFIX,
    TokenError, Tokens, TwoFaError, docs, short_contract_id,
};
use crate::fibank::render::money_string;
use crate::util::json_response;

type Bank = State<Arc<KeypadBank>>;
type Answer = Result<Response, Fail>;

/// Routes of the simulated keypad bank (under [`PREFIX`]) and its control routes.
pub fn routes(bank: Arc<KeypadBank>) -> Router {
    let api = Router::new()
        .route("/api/login/keypad", get(keypad))
        .route("/api/login", post(login))
        .route("/api/login/contract", post(contract))
        .route("/api/login/refresh", post(refresh))
        .route("/api/user/accounts", get(accounts))
        .route("/api/user/{external_id}/transactions", get(transactions))
        .route("/api/auth/2fa", post(twofa_request))
        .route("/api/auth/2fa/{request_id}", get(twofa_poll))
        .route(
            "/api/user/documents/accounts_statements",
            get(statements_list),
        )
        .route("/api/user/documents/documents", get(documents_list))
        .route("/api/user/documents/download", get(download))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::map_response_with_state(
            bank.clone(),
            date_header,
        ));
    let control = Router::new()
        .route("/credentials", get(control_credentials))
        .route("/truth", get(control_truth))
        .route("/approve", post(control_approve))
        .route("/decline", post(control_decline))
        .route("/requests", get(control_requests))
        .route("/config", get(control_config).post(control_set_config))
        .route("/advance", post(control_advance))
        .route("/revoke", post(control_revoke))
        .route("/unlock", post(control_unlock))
        .route("/stats", get(control_stats))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    Router::new()
        .nest(PREFIX, api)
        .nest("/_sandbox/keypad", control)
        .with_state(bank)
}

/// Stamp every bank answer with the bank's clock (`Date`, IMF-fixdate), so
/// clients can take "today" and token expiry from the bank.
async fn date_header(State(bank): Bank, mut response: Response) -> Response {
    let stamp = bank.now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    if let Ok(v) = HeaderValue::from_str(&stamp) {
        response.headers_mut().insert(header::DATE, v);
    }
    response
}

fn ok(body: Value) -> Answer {
    Ok(json_response(StatusCode::OK, &body))
}

/// A refusal: `{"code", "message"}` (plus `remainingAttempts` after a wrong PIN).
pub(crate) struct Fail {
    status: StatusCode,
    code: &'static str,
    message: String,
    remaining: Option<u32>,
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        let mut body = json!({"code": self.code, "message": self.message});
        if let Some(n) = self.remaining {
            body["remainingAttempts"] = json!(n);
        }
        json_response(self.status, &body)
    }
}

fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Fail {
    Fail {
        status,
        code,
        message: message.into(),
        remaining: None,
    }
}

fn bad(message: impl Into<String>) -> Fail {
    error(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route").into_response()
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "this route does not take that method",
    )
    .into_response()
}

impl TokenError {
    fn fail(self) -> Fail {
        match self {
            TokenError::Missing => error(
                StatusCode::UNAUTHORIZED,
                "TOKEN_INVALID",
                "missing Authorization: Bearer <accessToken>",
            ),
            TokenError::Invalid(m) => error(StatusCode::UNAUTHORIZED, "TOKEN_INVALID", m),
            TokenError::Expired => error(
                StatusCode::UNAUTHORIZED,
                "TOKEN_EXPIRED",
                "token expired (tokens are valid 21 days)",
            ),
            TokenError::NeedContract => error(
                StatusCode::FORBIDDEN,
                "CONTRACT_TOKEN_REQUIRED",
                "this route needs a contract token (POST api/login/contract)",
            ),
            TokenError::NeedLogin => error(
                StatusCode::FORBIDDEN,
                "LOGIN_TOKEN_REQUIRED",
                "this route needs the login token, not a contract token",
            ),
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The contract a contract token opens, or the refusal.
fn contract_grant(bank: &KeypadBank, headers: &HeaderMap) -> Result<super::Grant, Fail> {
    bank.authorize(bearer(headers), true)
        .map_err(TokenError::fail)
}

fn object(body: &[u8]) -> Result<Map<String, Value>, Fail> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad("the body must be a JSON object")),
        Err(e) => Err(bad(format!("the body is not JSON: {e}"))),
    }
}

fn str_field<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a str, Fail> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(bad(format!("{key} must be a string"))),
        None => Err(bad(format!("missing field {key}"))),
    }
}

fn int_field(obj: &Map<String, Value>, key: &str) -> Result<i64, Fail> {
    match obj.get(key) {
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| bad(format!("{key} must be an integer (Unix seconds)"))),
        Some(_) => Err(bad(format!("{key} must be an integer (Unix seconds)"))),
        None => Err(bad(format!("missing field {key}"))),
    }
}

fn bool_field(obj: &Map<String, Value>, key: &str) -> Result<bool, Fail> {
    match obj.get(key) {
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad(format!("{key} must be true or false"))),
        None => Err(bad(format!("missing field {key}"))),
    }
}

/// Query parameters (the first value of each name).
fn query(raw: Option<String>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    out
}

fn tokens_json(t: &Tokens) -> Value {
    json!({
        "accessToken": t.access,
        "refreshToken": t.refresh,
        "expiresAt": t.expires_at,
    })
}

async fn keypad(State(bank): Bank) -> Answer {
    ok(json!({"keypad": bank.issue_keypad()}))
}

async fn login(State(bank): Bank, body: Bytes) -> Answer {
    let obj = object(&body)?;
    str_field(&obj, "callingUrl")?;
    int_field(&obj, "clientTimestamp")?;
    if bool_field(&obj, "encryptedIdentifier")? {
        return Err(bad(
            "encrypted identifiers are not supported: send it in clear with encryptedIdentifier false",
        ));
    }
    let identifier = str_field(&obj, "identifier")?;
    let keypad = str_field(&obj, "keypad")?;
    let session_id = str_field(&obj, "sessionId")?;
    if session_id.is_empty() || !session_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("sessionId must be a string of digits"));
    }
    if identifier.is_empty() {
        return Err(bad("identifier must not be empty"));
    }
    match bank.login(identifier, keypad) {
        LoginOutcome::Ok(tokens) => {
            let w = bank.world();
            let mut body = tokens_json(&tokens);
            body["multiFactorAuth"] = Value::Null;
            body["userName"] = json!(w.user_name);
            body["birthdate"] = json!(w.birthdate.format("%Y-%m-%d").to_string());
            body["contracts"] = w
                .contracts
                .iter()
                .map(|c| json!({"id": c.id, "label": c.label}))
                .collect();
            ok(body)
        }
        LoginOutcome::BadCredentials { remaining } => Err(Fail {
            remaining: Some(remaining),
            ..error(
                StatusCode::UNAUTHORIZED,
                "BAD_CREDENTIALS",
                format!(
                    "wrong identifier or PIN; {remaining} attempt(s) left before the identifier is locked"
                ),
            )
        }),
        LoginOutcome::Locked => Err(error(
            StatusCode::LOCKED,
            "ACCOUNT_LOCKED",
            format!("identifier locked after {MAX_ATTEMPTS} wrong PINs in a row"),
        )),
        LoginOutcome::KeypadInvalid(m) => Err(error(StatusCode::BAD_REQUEST, "KEYPAD_INVALID", m)),
    }
}

async fn contract(State(bank): Bank, headers: HeaderMap, body: Bytes) -> Answer {
    bank.authorize(bearer(&headers), false)
        .map_err(TokenError::fail)?;
    let obj = object(&body)?;
    int_field(&obj, "clientTimestamp")?;
    let wanted = str_field(&obj, "contractId")?;
    let found = bank
        .world()
        .contracts
        .iter()
        .position(|c| short_contract_id(&c.id) == wanted);
    let Some(c) = found else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "UNKNOWN_CONTRACT",
            "no such contract: contractId is base64(contract id) without its last 2 characters",
        ));
    };
    ok(tokens_json(&bank.open_contract(c)))
}

async fn refresh(State(bank): Bank, body: Bytes) -> Answer {
    let obj = object(&body)?;
    let token = str_field(&obj, "refreshToken")?;
    let tokens = bank.refresh(token).map_err(TokenError::fail)?;
    ok(tokens_json(&tokens))
}

/// `true`/`false` or absent.
fn check_bool_param(q: &HashMap<String, String>, key: &str) -> Result<(), Fail> {
    match q.get(key).map(String::as_str) {
        None | Some("true") | Some("false") => Ok(()),
        Some(v) => Err(bad(format!("{key} must be true or false, got {v:?}"))),
    }
}

async fn accounts(State(bank): Bank, headers: HeaderMap, RawQuery(raw): RawQuery) -> Answer {
    let grant = contract_grant(&bank, &headers)?;
    let c = grant.contract.unwrap_or_default();
    let q = query(raw);
    check_bool_param(&q, "is_eligible_for_identity")?;
    check_bool_param(&q, "include_aggregate_account")?;
    let w = bank.world();
    let Some(asked) = q.get("contract_id") else {
        return Err(bad("missing query parameter contract_id"));
    };
    if *asked != short_contract_id(&w.contracts[c].id) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "UNKNOWN_CONTRACT",
            "contract_id is not this token's contract (base64 of its id without the last 2 characters)",
        ));
    }
    // Every account of this bank is a current account.
    let current = q.get("type").is_none_or(|t| t == "current");
    let stamp = bank
        .now()
        .with_timezone(&chrono_tz::Europe::Paris)
        .format("%Y-%m-%dT%H:%M:%S%.3f%z")
        .to_string();
    let mine: Vec<_> = w
        .accounts
        .iter()
        .filter(|a| current && a.contract == c)
        .collect();
    let total: i64 = mine.iter().map(|a| a.balance).sum();
    let list: Vec<Value> = mine
        .iter()
        .map(|a| {
            json!({
                "type": "current",
                "iban": a.iban.as_str(),
                "amount": {"date": stamp, "value": money_string(a.balance), "currenty": "EUR"},
                "internal_id": a.internal_id,
                "external_id": a.external_id,
            })
        })
        .collect();
    ok(json!({"total": money_string(total), "accounts": list}))
}

/// `from-to`, both ends included, `from <= to`, at most [`MAX_ROWS`] rows.
pub(crate) fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let number = |p: &str| -> Option<u64> {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok()
    };
    let parsed = s
        .split_once('-')
        .and_then(|(a, b)| Some((number(a)?, number(b)?)));
    let Some((from, to)) = parsed else {
        return Err(format!(
            "range must be <from>-<to> with two non-negative integers, got {s:?}"
        ));
    };
    if from > to {
        return Err(format!("range {s:?} ends before it starts"));
    }
    if to - from >= MAX_ROWS {
        return Err(format!(
            "range {s:?} asks for {} rows; at most {MAX_ROWS} per call",
            (to - from).saturating_add(1)
        ));
    }
    Ok((from, to))
}

/// A JSON number with at most two decimals, as the bank's JavaScript writes
/// it: `-5.32`, `-5.3`, `12`.
fn amount_value(cents: i64) -> Value {
    if cents % 100 == 0 {
        json!(cents / 100)
    } else {
        json!(cents as f64 / 100.0)
    }
}

fn row_json(r: &Row) -> Value {
    let mut v = json!({
        "label": r.label(),
        "booking_date_time": format!("{}T00:00:00.000Z", r.date.format("%Y-%m-%d")),
        "is_accounted": true,
        "are_details_available": false,
        "amount": {"value": amount_value(r.cents), "currency": "EUR"},
        "nature": r.nature(),
    });
    if let Some(code) = r.code {
        v["movement_code_type"] = json!(code);
    }
    v
}

async fn transactions(
    State(bank): Bank,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> Answer {
    let grant = contract_grant(&bank, &headers)?;
    let Ok(Path(external_id)) = path else {
        return Err(bad("the account id in the path is not valid UTF-8"));
    };
    let q = query(raw);
    let w = bank.world();
    let Some(acct) = w
        .accounts
        .iter()
        .find(|a| a.external_id == external_id && Some(a.contract) == grant.contract)
    else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "UNKNOWN_ACCOUNT",
            format!(
                "no account {external_id:?} in this contract (use an external_id from api/user/accounts)"
            ),
        ));
    };
    match q.get("contract_id") {
        None => {
            return Err(bad(
                "missing query parameter contract_id (the account's internal_id)",
            ));
        }
        Some(id) if *id != acct.internal_id => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "UNKNOWN_ACCOUNT",
                "contract_id must be the account's internal_id",
            ));
        }
        Some(_) => {}
    }
    let Some(range) = q.get("range") else {
        return Err(bad(
            "missing query parameter range (<from>-<to>, 0 = newest)",
        ));
    };
    let (from, to) = parse_range(range).map_err(bad)?;
    let len = acct.rows.len() as u64;
    // API index i is storage index len - 1 - i.
    let rows: Vec<&Row> = (from..=to.min(len.saturating_sub(1)))
        .filter(|i| *i < len)
        .map(|i| &acct.rows[(len - 1 - i) as usize])
        .collect();
    let limit = w
        .day
        .checked_sub_days(chrono::Days::new(GATE_DAYS as u64))
        .unwrap_or(w.day);
    // Rows are newest first, so the last one is the oldest.
    if !grant.twofa && rows.last().is_some_and(|r| r.date < limit) {
        return Err(error(
            StatusCode::FORBIDDEN,
            "2FA_REQUIRED",
            format!("transactions booked before {limit} need a 2FA (POST api/auth/2fa)"),
        ));
    }
    ok(json!({
        "isFailover": false,
        "accountTransactions": rows.into_iter().map(row_json).collect::<Vec<_>>(),
    }))
}

async fn twofa_request(State(bank): Bank, headers: HeaderMap) -> Answer {
    let grant = contract_grant(&bank, &headers)?;
    let (id, expires_at) = bank.request_twofa(grant.session, grant.contract.unwrap_or_default());
    ok(json!({"requestId": id, "expiresAt": expires_at}))
}

async fn twofa_poll(
    State(bank): Bank,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Answer {
    let grant = contract_grant(&bank, &headers)?;
    let id = path.map(|Path(id)| id).unwrap_or_default();
    match bank.twofa_status(grant.session, &id) {
        Some(status) => ok(json!({"status": status})),
        None => Err(error(
            StatusCode::NOT_FOUND,
            "REQUEST_NOT_FOUND",
            "no such 2FA request for this token",
        )),
    }
}

async fn statements_list(State(bank): Bank, headers: HeaderMap) -> Answer {
    let grant = contract_grant(&bank, &headers)?;
    let w = bank.world();
    let list: Vec<Value> = docs::statements(&w, grant.contract.unwrap_or_default())
        .iter()
        .map(docs::Doc::json)
        .collect();
    ok(json!({"documents": list}))
}

async fn documents_list(State(bank): Bank, headers: HeaderMap) -> Answer {
    let grant = contract_grant(&bank, &headers)?;
    let w = bank.world();
    let list: Vec<Value> = docs::other_documents(&w, grant.contract.unwrap_or_default())
        .iter()
        .map(docs::Doc::json)
        .collect();
    ok(json!({"documents": list}))
}

async fn download(State(bank): Bank, headers: HeaderMap, RawQuery(raw): RawQuery) -> Answer {
    let grant = contract_grant(&bank, &headers)?;
    let q = query(raw);
    let Some(token) = q.get("token").filter(|t| !t.is_empty()) else {
        return Err(bad("missing query parameter token (a downloadToken)"));
    };
    let Some(pdf) = bank.document_of(token, grant.contract) else {
        return Err(error(
            StatusCode::NOT_FOUND,
            "DOCUMENT_NOT_FOUND",
            "no document with this downloadToken in this contract",
        ));
    };
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/pdf"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"document.pdf\"",
            ),
        ],
        pdf,
    )
        .into_response())
}

async fn control_credentials(State(bank): Bank, headers: HeaderMap) -> Answer {
    let mut creds = bank.credentials();
    if !creds.base_url.starts_with("http")
        && let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok())
    {
        creds.base_url = format!("http://{host}{PREFIX}");
    }
    ok(serde_json::to_value(&creds).unwrap_or_default())
}

async fn control_truth(State(bank): Bank) -> Answer {
    let truth = tokio::task::spawn_blocking(move || bank.truth())
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string()))?;
    ok(serde_json::to_value(&truth).unwrap_or_default())
}

/// `{"requestId": "..."}`, or an empty body / `{}` for every pending request.
fn request_id(body: &[u8]) -> Result<Option<String>, Fail> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let obj = object(body)?;
    match obj.get("requestId") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad("requestId must be a string")),
    }
}

fn settled(result: Result<Vec<String>, TwoFaError>, key: &str) -> Answer {
    match result {
        Ok(ids) => ok(json!({ key: ids })),
        Err(e @ TwoFaError::Unknown(_)) => Err(error(
            StatusCode::NOT_FOUND,
            "REQUEST_NOT_FOUND",
            e.to_string(),
        )),
        Err(e @ TwoFaError::NotPending(..)) => {
            Err(error(StatusCode::CONFLICT, "NOT_PENDING", e.to_string()))
        }
    }
}

async fn control_approve(State(bank): Bank, body: Bytes) -> Answer {
    let id = request_id(&body)?;
    settled(bank.approve(id.as_deref()), "approved")
}

async fn control_decline(State(bank): Bank, body: Bytes) -> Answer {
    let id = request_id(&body)?;
    settled(bank.decline(id.as_deref()), "declined")
}

async fn control_requests(State(bank): Bank) -> Answer {
    ok(serde_json::to_value(bank.pending_requests()).unwrap_or_default())
}

fn config_json(bank: &KeypadBank) -> Value {
    json!({"autoApprove": bank.auto_approve(), "today": bank.today().to_string()})
}

async fn control_config(State(bank): Bank) -> Answer {
    ok(config_json(&bank))
}

async fn control_set_config(State(bank): Bank, body: Bytes) -> Answer {
    let obj = object(&body)?;
    let mut auto = None;
    for (k, v) in &obj {
        match (k.as_str(), v) {
            ("autoApprove", Value::Bool(b)) => auto = Some(*b),
            ("autoApprove", _) => return Err(bad("autoApprove must be true or false")),
            (other, _) => {
                return Err(bad(format!(
                    "unknown setting {other:?}; known: autoApprove"
                )));
            }
        }
    }
    if let Some(b) = auto {
        bank.set_auto_approve(b);
    }
    ok(config_json(&bank))
}

async fn control_advance(State(bank): Bank, body: Bytes) -> Answer {
    let obj = object(&body)?;
    let days = match obj.get("days").and_then(Value::as_u64) {
        Some(d) if d <= u64::from(MAX_ADVANCE_DAYS) && obj.len() == 1 => d as u32,
        _ => {
            return Err(bad(format!(
                "expected {{\"days\": N}} with 0 <= N <= {MAX_ADVANCE_DAYS}"
            )));
        }
    };
    let today = tokio::task::spawn_blocking(move || bank.advance(days))
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", e.to_string()))?;
    ok(json!({"today": today.to_string()}))
}

async fn control_revoke(State(bank): Bank) -> Answer {
    ok(json!({"revokedTokens": bank.revoke_all()}))
}

async fn control_stats(State(bank): Bank) -> Answer {
    let (pin_logins, wrong_pins) = bank.pin_logins();
    ok(json!({"pinLogins": pin_logins, "wrongPins": wrong_pins}))
}

async fn control_unlock(State(bank): Bank) -> Answer {
    bank.unlock();
    ok(json!({"unlocked": true}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("0-99"), Ok((0, 99)));
        assert_eq!(parse_range("5-5"), Ok((5, 5)));
        for bad in [
            "",
            "x",
            "5-2",
            "0-100",
            "-1-3",
            "1-",
            "-",
            "a-b",
            "1-2-3",
            "+1-2",
            " 1-2",
            "99999999999999999999-1",
        ] {
            assert!(parse_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn amounts_as_javascript_writes_them() {
        assert_eq!(amount_value(-532).to_string(), "-5.32");
        assert_eq!(amount_value(-530).to_string(), "-5.3");
        assert_eq!(amount_value(1200).to_string(), "12");
        assert_eq!(amount_value(5).to_string(), "0.05");
        assert_eq!(amount_value(-1_234_567).to_string(), "-12345.67");
    }
}
