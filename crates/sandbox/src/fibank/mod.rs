//! A simulated Fibank web API (`my.fibank.bg`), faithful to what the web
//! client and the Python connector of the user story rely on.
//!
//! Everything answers under [`PREFIX`]; redirects carry the prefix so a
//! client with base URL `http://127.0.0.1:PORT/fibank` works unchanged.
//! Control routes live under `/_sandbox/fibank/`.
//!
//! # Observed (from the reference: the story's connector and its article)
//!
//! * the login dance: an OAuth2 implicit flow mixed with a server session
//!   (`JSESSIONID` cookie, a CSRF token bound to the session, the authorize
//!   request saved in the session and replayed after the login form, the
//!   access token in the fragment of the second redirect);
//! * the API under `/EBank/api/v1/` behind `Authorization: Bearer`, with the
//!   `EBank-Cust-Id` header from `getCustQuery`'s `customer[0].ibCustomerId`;
//! * `getFilteredAccounts` as a bare array with `ibanAcNo` and `ccy`;
//! * `GetCustBal` answering `acc[0].stmt`: `OP`/`CL`/`DT`/`CT` summary lines
//!   the client skips, and booked lines each carrying `acEntrySrNo` (a number,
//!   unique bank-wide), `reference`, `acBal` (running balance), `amount`,
//!   `dtkt`, `dateTime` and `valueDt` (`%Y-%m-%dT%H:%M:%S%z`), `contragent`,
//!   `benOrderParty`, `trname`, `trnAccount`, `trnType`, `trnCode`,
//!   `isEbankOper`, `isPayment`, `loadAsNew` and `remI`/`remIi`/`remIii`,
//!   every one present on every booked line; the three spellings of the `+`
//!   in `FromDate`/`ToDate` that real clients send; the 30-day range limit of
//!   the web UI (a knob, off by default, as the story's code never hit it).
//!
//! # Our modelling (not in the reference)
//!
//! * Values: strings are never `null` (an empty string where a bank would
//!   have nothing), money is a JSON number with two decimals, `dtkt` is `D`
//!   or `K`, `isEbankOper`/`isPayment`/`loadAsNew` are `Y`/`N`, and
//!   `trnType`/`trnCode` values are our own codes.
//! * Card holds not yet booked are **not** statement lines: a statement holds
//!   booked entries only, so a client that stores every line keeps working.
//!   They come from `sywsquery/sywsquery/getBlockedAmounts?Iban=…` (as the
//!   site's "blocked amounts" view most plausibly does), with their own id
//!   space (`blockId`); a hold books later under a new `acEntrySrNo`, or
//!   lapses and vanishes.
//! * Error bodies (`{"errorCode", "message"}` in Bulgarian), the `Date`
//!   header as the bank's clock, token lifetimes and the fault knobs.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use chrono_tz::Europe::Sofia;
use serde::{Deserialize, Serialize};

use crate::fault::{self, FaultConfig, FaultKind};
use crate::util::{lock, read, write};
use crate::{ConfigError, SandboxConfig};

pub mod data;
pub mod render;

use data::{Params, World};

/// The path prefix every simulated Fibank route answers under.
pub const PREFIX: &str = "/fibank";
/// The OAuth client id of Fibank's web banking.
pub const CLIENT_ID: &str = "E_BANK";
const SESSION_COOKIE: &str = "JSESSIONID";
/// Seconds an access token claims to live (`expires_in`) when no TTL knob is set.
const DEFAULT_EXPIRES_IN: u64 = 1800;
/// Beyond this many live sessions or tokens the oldest are forgotten.
const MAX_SESSIONS: usize = 10_000;
/// The sandbox clock moves at most this many days per call.
const MAX_ADVANCE_DAYS: u32 = 3660;

/// Booked totals of one account at the sandbox day, for checking a sync.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountTruth {
    pub iban: String,
    pub currency: String,
    /// Booked transactions up to the sandbox day (summary lines excluded).
    pub booked_count: u64,
    /// Their signed sum (debits negative), as a decimal string.
    pub booked_sum: String,
    /// Card authorisations pending at the sandbox day.
    pub pending_count: u64,
    pub pending_sum: String,
    /// Booked balance at the end of the sandbox day.
    pub balance: String,
}

/// The login of the simulated customer.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxCredentials {
    pub username: String,
    pub password: String,
    /// The bank's base URL (absolute once the server knows its address).
    pub base_url: String,
}

impl std::fmt::Debug for SandboxCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxCredentials")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("base_url", &self.base_url)
            .finish()
    }
}

#[derive(Clone, Debug)]
struct Knobs {
    fault: FaultConfig,
    max_range_days: Option<u32>,
}

#[derive(Clone, Debug)]
struct WebSession {
    csrf: String,
    /// The query of the authorize request the login form will resume.
    saved_authorize: Option<String>,
    authenticated: bool,
    public_token: String,
    created: Instant,
}

#[derive(Clone, Debug)]
struct Token {
    created: Instant,
    used: u32,
}

/// The simulated Fibank: its books (behind the sandbox clock), knobs and sessions.
pub struct Fibank {
    world: RwLock<World>,
    knobs: Mutex<Knobs>,
    sessions: Mutex<HashMap<String, WebSession>>,
    tokens: Mutex<HashMap<String, Token>>,
    username: String,
    password: String,
    base_url: RwLock<Option<String>>,
}

impl std::fmt::Debug for Fibank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fibank")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

impl Fibank {
    pub fn new(config: &SandboxConfig) -> Fibank {
        let world = World::new(Params {
            seed: config.seed,
            accounts: config.accounts,
            transactions: config.transactions,
            years: config.years,
            today: config.day_in(chrono_tz::Europe::Sofia),
        });
        Fibank {
            world: RwLock::new(world),
            knobs: Mutex::new(Knobs {
                fault: config.fault.clone(),
                max_range_days: config.max_range_days,
            }),
            sessions: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            username: "demo".to_owned(),
            password: format!("demo-{}", config.seed),
            base_url: RwLock::new(None),
        }
    }

    pub(crate) fn set_base_url(&self, url: String) {
        *write(&self.base_url) = Some(url);
    }

    pub fn credentials(&self) -> SandboxCredentials {
        SandboxCredentials {
            username: self.username.clone(),
            password: self.password.clone(),
            base_url: read(&self.base_url)
                .clone()
                .unwrap_or_else(|| PREFIX.to_owned()),
        }
    }

    /// The sandbox day `D`.
    pub fn today(&self) -> NaiveDate {
        read(&self.world).day
    }

    /// The bank's wall clock: the sandbox day at the real time of day in Sofia.
    /// Sent as the HTTP `Date` header, so clients that take "today" from the
    /// bank follow the sandbox clock when it is advanced.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        crate::util::wall_clock_on(self.today(), chrono_tz::Europe::Sofia, chrono::Utc::now())
    }

    pub fn customer_id(&self) -> u64 {
        read(&self.world).customer_id
    }

    /// IBANs of the accounts, in the bank's order.
    pub fn ibans(&self) -> Vec<String> {
        read(&self.world)
            .accounts
            .iter()
            .map(|a| a.iban.to_string())
            .collect()
    }

    /// Move the sandbox clock forward: pending card payments book (under new
    /// ids) or vanish, new transactions appear. Returns the new day.
    pub fn advance(&self, days: u32) -> NaiveDate {
        let mut w = write(&self.world);
        w.advance(days.min(MAX_ADVANCE_DAYS));
        w.day
    }

    pub fn truth(&self) -> Vec<AccountTruth> {
        let w = read(&self.world);
        w.accounts
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let pending: Vec<_> = w.pending.iter().filter(|p| p.account == i).collect();
                AccountTruth {
                    iban: a.iban.to_string(),
                    currency: a.currency.to_owned(),
                    booked_count: a.booked.len() as u64,
                    booked_sum: render::money_string(a.booked_sum),
                    pending_count: pending.len() as u64,
                    pending_sum: render::money_string(pending.iter().map(|p| p.cents).sum()),
                    balance: render::money_string(a.balance),
                }
            })
            .collect()
    }

    /// The `GetCustBal` body for `iban` over `from..=to`, as served (no faults).
    pub fn statement_json(&self, iban: &str, from: NaiveDate, to: NaiveDate) -> Option<String> {
        let w = read(&self.world);
        let a = w.account_by_iban(iban)?;
        Some(render::cust_bal(&w, a, from, to))
    }

    /// The blocked-amounts body for `iban`, as served (no faults).
    pub fn blocked_json(&self, iban: &str) -> Option<String> {
        let w = read(&self.world);
        let a = w.account_by_iban(iban)?;
        Some(render::blocked_amounts(&w, a))
    }

    pub fn fault(&self) -> FaultConfig {
        lock(&self.knobs).fault.clone()
    }

    pub fn set_fault(&self, fault: FaultConfig) -> Result<(), ConfigError> {
        fault.validate()?;
        lock(&self.knobs).fault = fault;
        Ok(())
    }

    pub fn max_range_days(&self) -> Option<u32> {
        lock(&self.knobs).max_range_days
    }

    pub fn set_max_range_days(&self, days: Option<u32>) {
        lock(&self.knobs).max_range_days = days;
    }

    fn config_json(&self) -> serde_json::Value {
        let k = lock(&self.knobs).clone();
        serde_json::json!({
            "today": self.today().to_string(),
            "max_range_days": k.max_range_days,
            "fault": k.fault,
        })
    }

    async fn latency(&self) {
        let d = lock(&self.knobs).fault.latency();
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }

    /// The session named by the request's cookie, or a new one (then the
    /// `Set-Cookie` value to send).
    fn session(&self, headers: &HeaderMap) -> (String, WebSession, Option<String>) {
        let mut sessions = lock(&self.sessions);
        if let Some(id) = cookie(headers, SESSION_COOKIE)
            && let Some(s) = sessions.get(&id)
        {
            return (id, s.clone(), None);
        }
        if sessions.len() >= MAX_SESSIONS {
            evict_oldest(&mut sessions, |s| s.created);
        }
        let id = random_hex(16).to_ascii_uppercase();
        let s = WebSession {
            csrf: uuid::Uuid::new_v4().to_string(),
            saved_authorize: None,
            authenticated: false,
            public_token: random_hex(20),
            created: Instant::now(),
        };
        sessions.insert(id.clone(), s.clone());
        let set = format!("{SESSION_COOKIE}={id}; Path=/; HttpOnly");
        (id, s, Some(set))
    }

    fn update_session(&self, id: &str, f: impl FnOnce(&mut WebSession)) {
        if let Some(s) = lock(&self.sessions).get_mut(id) {
            f(s);
        }
    }

    fn mint_token(&self) -> String {
        let token = uuid::Uuid::new_v4().to_string();
        let mut tokens = lock(&self.tokens);
        if tokens.len() >= MAX_SESSIONS {
            evict_oldest(&mut tokens, |t| t.created);
        }
        tokens.insert(
            token.clone(),
            Token {
                created: Instant::now(),
                used: 0,
            },
        );
        token
    }

    /// Check the bearer token of an API request and count the request.
    fn authorize_api(&self, headers: &HeaderMap) -> Result<(), Reject> {
        let Some(token) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
        else {
            return Err(Reject::Unauthorized(
                "Full authentication is required to access this resource",
            ));
        };
        let fault = lock(&self.knobs).fault.clone();
        let mut tokens = lock(&self.tokens);
        let Some(t) = tokens.get_mut(token) else {
            return Err(Reject::Unauthorized("Invalid access token"));
        };
        let too_old = fault
            .session_ttl_secs
            .is_some_and(|s| t.created.elapsed().as_secs() >= s);
        let too_used = fault.session_ttl_requests.is_some_and(|n| t.used >= n);
        if too_old || too_used {
            tokens.remove(token);
            return Err(Reject::Unauthorized("Access token expired"));
        }
        t.used += 1;
        Ok(())
    }
}

fn evict_oldest<T>(map: &mut HashMap<String, T>, created: impl Fn(&T) -> Instant) {
    let mut by_age: Vec<(Instant, String)> =
        map.iter().map(|(k, v)| (created(v), k.clone())).collect();
    by_age.sort();
    for (_, k) in by_age.into_iter().take(map.len() / 2 + 1) {
        map.remove(&k);
    }
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
}

fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
        body,
    )
        .into_response()
}

/// A bank-style JSON error.
fn bank_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(
        status,
        serde_json::json!({"errorCode": code, "message": message}).to_string(),
    )
}

/// Why an API request is refused, turned into the bank's error response.
enum Reject {
    Unauthorized(&'static str),
    Bank {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
}

impl Reject {
    fn bad(code: &'static str, message: impl Into<String>) -> Reject {
        Reject::Bank {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        match self {
            Reject::Unauthorized(d) => unauthorized(d),
            Reject::Bank {
                status,
                code,
                message,
            } => bank_error(status, code, &message),
        }
    }
}

fn unauthorized(description: &str) -> Response {
    let body =
        serde_json::json!({"error": "invalid_token", "error_description": description}).to_string();
    let mut r = json_response(StatusCode::UNAUTHORIZED, body);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"E_BANK\", error=\"invalid_token\""),
    );
    r
}

fn html(status: StatusCode, body: String, set_cookie: Option<String>) -> Response {
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "text/html;charset=UTF-8")],
        body,
    )
        .into_response();
    if let Some(c) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

fn redirect(location: &str) -> Response {
    let mut r = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The login page. Its `_csrf` meta tag stands on a line of its own, as the
/// real page's does, and is the first line naming `"_csrf"`.
fn login_html(csrf: &str, error: bool) -> String {
    let csrf = escape_html(csrf);
    let error = if error {
        "    <div class=\"alert alert-danger\" id=\"loginError\">Грешно потребителско име или парола.</div>\n"
    } else {
        ""
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"bg\">\n<head>\n<meta charset=\"UTF-8\" />\n\
<title>Fibank - Електронно банкиране</title>\n\
<meta name=\"_csrf\" content=\"{csrf}\" />\n\
<meta name=\"_csrf_header\" content=\"X-CSRF-TOKEN\" />\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\" />\n\
</head>\n<body>\n<div id=\"login\">\n{error}\
    <form method=\"post\" action=\"{PREFIX}/oauth2-server/login\" id=\"loginForm\">\n\
    <input type=\"text\" name=\"username\" autocomplete=\"username\" />\n\
    <input type=\"password\" name=\"password\" autocomplete=\"current-password\" />\n\
    <input type=\"hidden\" name=\"client_id\" value=\"{CLIENT_ID}\" />\n\
    <input type=\"hidden\" name=\"lang\" value=\"bg\" />\n\
    <button type=\"submit\">Вход</button>\n    </form>\n</div>\n</body>\n</html>\n"
    )
}

fn ebank_html(public_token: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"bg\">\n<head>\n<meta charset=\"UTF-8\" />\n\
<title>Fibank - My Fibank</title>\n<base href=\"{PREFIX}/EBank/\" />\n\
<meta name=\"EBank_publicToken\" content=\"{}\" />\n\
</head>\n<body>\n<app-root></app-root>\n<script src=\"main.js\"></script>\n</body>\n</html>\n",
        escape_html(public_token)
    )
}

/// Routes of the simulated Fibank (under [`PREFIX`]) and its control routes.
pub fn routes(bank: Arc<Fibank>) -> Router {
    let api = Router::new()
        .route("/sywsquery/sywsquery/getCustQuery", get(cust_query))
        .route(
            "/sywspicklist/sywspicklist/getFilteredAccounts",
            get(filtered_accounts),
        )
        .route("/sywsquery/sywsquery/GetCustBal", get(cust_bal))
        .route(
            "/sywsquery/sywsquery/getBlockedAmounts",
            get(blocked_amounts),
        )
        .fallback(|| async {
            bank_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Няма такъв ресурс")
        });
    let bank_routes = Router::new()
        .route("/oauth2-server/login", get(login_page).post(login_submit))
        .route("/oauth2-server/oauth/authorize", get(authorize))
        .route(
            "/oauth2-server/api/v1/sywscertificate/fnGetCertsForLogin",
            get(certs_for_login),
        )
        .route("/EBank/", get(ebank_page))
        .route(
            "/EBank",
            get(|| async { redirect(&format!("{PREFIX}/EBank/")) }),
        )
        .nest("/EBank/api/v1", api);
    let control = Router::new()
        .route("/truth", get(control_truth))
        .route("/credentials", get(control_credentials))
        .route("/advance", post(control_advance))
        .route("/config", get(control_config).post(control_set_config));
    let bank_routes = bank_routes.layer(axum::middleware::map_response_with_state(
        bank.clone(),
        bank_date_header,
    ));
    Router::new()
        .nest(PREFIX, bank_routes)
        .nest("/_sandbox/fibank", control)
        .with_state(bank)
}

/// Stamp every bank answer with the sandbox clock (`Date`, IMF-fixdate).
async fn bank_date_header(State(bank): Bank, mut response: Response) -> Response {
    let stamp = bank.now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    if let Ok(v) = axum::http::HeaderValue::from_str(&stamp) {
        response.headers_mut().insert(axum::http::header::DATE, v);
    }
    response
}

type Bank = State<Arc<Fibank>>;

async fn login_page(
    State(bank): Bank,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    bank.latency().await;
    let (_, session, set_cookie) = bank.session(&headers);
    html(
        StatusCode::OK,
        login_html(&session.csrf, q.contains_key("error")),
        set_cookie,
    )
}

async fn authorize(
    State(bank): Bank,
    Query(q): Query<HashMap<String, String>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    bank.latency().await;
    let param = |k: &str| q.get(k).map(String::as_str).unwrap_or("");
    if param("client_id") != CLIENT_ID
        || param("response_type") != "token"
        || param("redirect_uri") != "/EBank/"
    {
        return html(
            StatusCode::BAD_REQUEST,
            "<html><body><h1>OAuth Error</h1><p>error=\"invalid_request\", error_description=\"Invalid client, response type or redirect uri\"</p></body></html>\n".into(),
            None,
        );
    }
    let (id, session, set_cookie) = bank.session(&headers);
    if session.authenticated {
        let token = bank.mint_token();
        let expires_in = lock(&bank.knobs)
            .fault
            .session_ttl_secs
            .unwrap_or(DEFAULT_EXPIRES_IN);
        let state = url_encode(param("state"));
        bank.update_session(&id, |s| s.saved_authorize = None);
        let location = format!(
            "{PREFIX}/EBank/#access_token={token}&token_type=bearer&state={state}&expires_in={expires_in}"
        );
        return redirect(&location);
    }
    let saved = raw.unwrap_or_default();
    bank.update_session(&id, |s| s.saved_authorize = Some(saved));
    html(StatusCode::OK, login_html(&session.csrf, false), set_cookie)
}

/// Percent-encode everything but unreserved characters.
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn certs_for_login(State(bank): Bank, Query(q): Query<HashMap<String, String>>) -> Response {
    bank.latency().await;
    if q.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
        return bank_error(
            StatusCode::BAD_REQUEST,
            "INVALID_CLIENT",
            "Невалиден клиент",
        );
    }
    json_response(StatusCode::OK, "[]".into())
}

async fn login_submit(State(bank): Bank, headers: HeaderMap, body: Bytes) -> Response {
    bank.latency().await;
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let failed = || redirect(&format!("{PREFIX}/oauth2-server/login?error"));
    let Some(id) = cookie(&headers, SESSION_COOKIE) else {
        return failed();
    };
    let Some(session) = lock(&bank.sessions).get(&id).cloned() else {
        return failed();
    };
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let csrf_ok = !field("_csrf").is_empty() && field("_csrf") == session.csrf;
    let login_ok = field("username") == bank.username && field("password") == bank.password;
    if !(csrf_ok && login_ok) {
        return failed();
    }
    bank.update_session(&id, |s| s.authenticated = true);
    match session.saved_authorize {
        Some(q) => redirect(&format!("{PREFIX}/oauth2-server/oauth/authorize?{q}")),
        None => redirect(&format!("{PREFIX}/EBank/")),
    }
}

async fn ebank_page(State(bank): Bank, headers: HeaderMap) -> Response {
    bank.latency().await;
    let (_, session, set_cookie) = bank.session(&headers);
    html(
        StatusCode::OK,
        ebank_html(&session.public_token),
        set_cookie,
    )
}

/// Which API endpoint a request is for (faults differ per endpoint).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    CustQuery,
    Accounts,
    CustBal,
    Blocked,
}

/// Common path of every API request: latency, bearer token, fault roll, the
/// endpoint's own answer, then the fault applied to that answer.
async fn api(
    bank: &Fibank,
    headers: &HeaderMap,
    endpoint: Endpoint,
    answer: impl FnOnce(&Fibank, Option<FaultKind>) -> Result<String, Reject>,
) -> Response {
    bank.latency().await;
    if let Err(r) = bank.authorize_api(headers) {
        return r.into_response();
    }
    let fault = lock(&bank.knobs).fault.roll();
    match fault {
        Some(FaultKind::ServerError) => {
            let status = fault::server_error_status();
            return if status == 500 {
                bank_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL_ERROR",
                    "Възникна грешка. Моля, опитайте отново.",
                )
            } else {
                let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
                html(
                    code,
                    format!("<html><body><h1>{code}</h1></body></html>\n"),
                    None,
                )
            };
        }
        Some(FaultKind::RateLimited) => {
            let mut r = bank_error(
                StatusCode::TOO_MANY_REQUESTS,
                "TOO_MANY_REQUESTS",
                "Твърде много заявки",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
        _ => {}
    }
    let body = match answer(bank, fault) {
        Ok(body) => body,
        Err(r) => return r.into_response(),
    };
    let body = match fault {
        Some(FaultKind::Truncated) => fault::truncate(&body),
        Some(FaultKind::Malformed) => match endpoint {
            Endpoint::CustQuery => r#"{"customer":{"ibCustomerId":"n/a"}}"#.to_owned(),
            Endpoint::Accounts => r#"{"accounts":null,"status":"OK"}"#.to_owned(),
            Endpoint::CustBal => {
                r#"{"acc":[{"stmt":[{"trnType":"PO","amount":"много","dtkt":"?"}]}]}"#.to_owned()
            }
            Endpoint::Blocked => r#"{"blockedAmounts":[{"amount":null}]}"#.to_owned(),
        },
        _ => body,
    };
    json_response(StatusCode::OK, body)
}

fn check_cust_id(bank: &Fibank, headers: &HeaderMap) -> Result<(), Reject> {
    let expected = bank.customer_id().to_string();
    match headers.get("EBank-Cust-Id").and_then(|v| v.to_str().ok()) {
        Some(v) if v.trim() == expected => Ok(()),
        Some(_) => Err(Reject::bad(
            "INVALID_CUST_ID",
            "Невалиден идентификатор на клиент",
        )),
        None => Err(Reject::bad(
            "MISSING_CUST_ID",
            "Липсва идентификатор на клиент (EBank-Cust-Id)",
        )),
    }
}

async fn cust_query(State(bank): Bank, headers: HeaderMap) -> Response {
    api(&bank, &headers, Endpoint::CustQuery, |bank, _| {
        Ok(render::cust_query(&read(&bank.world)))
    })
    .await
}

async fn filtered_accounts(State(bank): Bank, headers: HeaderMap) -> Response {
    api(&bank, &headers, Endpoint::Accounts, |bank, fault| {
        check_cust_id(bank, &headers)?;
        Ok(render::accounts(
            &read(&bank.world),
            fault == Some(FaultKind::BadIban),
        ))
    })
    .await
}

/// Parse a `FromDate`/`ToDate` value into the Sofia calendar day it names.
///
/// Accepts `2024-01-31T00:00:00+0200` as sent properly encoded, the same with
/// a space where an unencoded `+` was decoded as one, and with a literal
/// `%2B` left by a client that encoded the `+` twice (the Python connector of
/// the story does). Also `+02:00`, fractional seconds, a bare local date-time
/// and a bare date.
pub fn parse_bank_date(raw: &str) -> Option<NaiveDate> {
    let mut s = raw.trim().replace("%2B", "+").replace("%2b", "+");
    if s.len() > 19 && s.as_bytes().get(19) == Some(&b' ') {
        s.replace_range(19..20, "+");
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%dT%H:%M:%S%:z",
        "%Y-%m-%dT%H:%M:%S%.f%:z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(&s, fmt) {
            return Some(t.with_timezone(&Sofia).date_naive());
        }
    }
    if s.ends_with('Z')
        && let Ok(t) = DateTime::parse_from_rfc3339(&s)
    {
        return Some(t.with_timezone(&Sofia).date_naive());
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(&s, "%Y-%m-%dT%H:%M:%S") {
        return Some(t.date());
    }
    NaiveDate::parse_from_str(&s, "%Y-%m-%d").ok()
}

async fn cust_bal(
    State(bank): Bank,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    api(&bank, &headers, Endpoint::CustBal, |bank, _| {
        check_cust_id(bank, &headers)?;
        let bad = |m: &str| Reject::bad("INVALID_PARAMETERS", m);
        let (Some(from), Some(to), Some(iban)) =
            (q.get("FromDate"), q.get("ToDate"), q.get("Iban"))
        else {
            return Err(bad("Липсват задължителни параметри FromDate, ToDate, Iban"));
        };
        let Some(from) = parse_bank_date(from) else {
            return Err(bad("Невалидна начална дата"));
        };
        let Some(to) = parse_bank_date(to) else {
            return Err(bad("Невалидна крайна дата"));
        };
        if to < from {
            return Err(Reject::bad(
                "INVALID_PERIOD",
                "Началната дата е след крайната",
            ));
        }
        if let Some(max) = bank.max_range_days() {
            let days = (to - from).num_days() + 1;
            if days > i64::from(max) {
                return Err(Reject::bad(
                    "PERIOD_TOO_LONG",
                    format!("Периодът не може да надвишава {max} дни"),
                ));
            }
        }
        let world = read(&bank.world);
        let Some(a) = world.account_by_iban(iban) else {
            return Err(Reject::bad(
                "ACCOUNT_NOT_FOUND",
                "Няма достъп до сметка с този IBAN",
            ));
        };
        Ok(render::cust_bal(&world, a, from, to))
    })
    .await
}

/// Card holds not yet booked, apart from the statement (see
/// [`render::blocked_line`] for what is modelled).
async fn blocked_amounts(
    State(bank): Bank,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    api(&bank, &headers, Endpoint::Blocked, |bank, _| {
        check_cust_id(bank, &headers)?;
        let Some(iban) = q.get("Iban") else {
            return Err(Reject::bad(
                "INVALID_PARAMETERS",
                "Липсва задължителен параметър Iban",
            ));
        };
        let world = read(&bank.world);
        let Some(a) = world.account_by_iban(iban) else {
            return Err(Reject::bad(
                "ACCOUNT_NOT_FOUND",
                "Няма достъп до сметка с този IBAN",
            ));
        };
        Ok(render::blocked_amounts(&world, a))
    })
    .await
}

async fn control_truth(State(bank): Bank) -> Response {
    json_response(
        StatusCode::OK,
        serde_json::to_string(&bank.truth()).unwrap_or_else(|_| "[]".into()),
    )
}

async fn control_credentials(State(bank): Bank, headers: HeaderMap) -> Response {
    let mut creds = bank.credentials();
    if !creds.base_url.starts_with("http")
        && let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok())
    {
        creds.base_url = format!("http://{host}{PREFIX}");
    }
    json_response(
        StatusCode::OK,
        serde_json::to_string(&creds).unwrap_or_default(),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Advance {
    days: u32,
}

async fn control_advance(State(bank): Bank, body: Bytes) -> Response {
    let advance: Advance = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            return bank_error(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                &format!("expected {{\"days\": N}} with 0 <= N <= {MAX_ADVANCE_DAYS}: {e}"),
            );
        }
    };
    if advance.days > MAX_ADVANCE_DAYS {
        return bank_error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            &format!("days must be at most {MAX_ADVANCE_DAYS}"),
        );
    }
    let bank2 = bank.clone();
    let today = match tokio::task::spawn_blocking(move || bank2.advance(advance.days)).await {
        Ok(d) => d,
        Err(e) => {
            return bank_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                &e.to_string(),
            );
        }
    };
    json_response(
        StatusCode::OK,
        serde_json::json!({"today": today.to_string()}).to_string(),
    )
}

async fn control_config(State(bank): Bank) -> Response {
    json_response(StatusCode::OK, bank.config_json().to_string())
}

const FAULT_KEYS: &[&str] = &[
    "latency_ms",
    "fault_rate",
    "kinds",
    "session_ttl_requests",
    "session_ttl_secs",
];

/// Apply a partial configuration: `max_range_days` (a number or null),
/// `fault` (an object of fault fields) and the fault fields at top level.
fn apply_config(bank: &Fibank, patch: &serde_json::Value) -> Result<(), String> {
    let obj = patch.as_object().ok_or("expected a JSON object")?;
    let mut fault = serde_json::to_value(bank.fault()).map_err(|e| e.to_string())?;
    let mut max_range = bank.max_range_days();
    for (k, v) in obj {
        match k.as_str() {
            "max_range_days" => {
                max_range = match v {
                    serde_json::Value::Null => None,
                    v => Some(
                        v.as_u64()
                            .and_then(|n| u32::try_from(n).ok())
                            .filter(|n| *n > 0)
                            .ok_or("max_range_days must be a positive number or null")?,
                    ),
                }
            }
            "fault" => {
                let f = v.as_object().ok_or("fault must be an object")?;
                for (fk, fv) in f {
                    fault[fk] = fv.clone();
                }
            }
            k if FAULT_KEYS.contains(&k) => fault[k] = v.clone(),
            other => {
                return Err(format!(
                    "unknown setting {other:?}; known: max_range_days, fault, {}",
                    FAULT_KEYS.join(", ")
                ));
            }
        }
    }
    let fault: FaultConfig =
        serde_json::from_value(fault).map_err(|e| format!("bad fault settings: {e}"))?;
    bank.set_fault(fault).map_err(|e| e.to_string())?;
    bank.set_max_range_days(max_range);
    Ok(())
}

async fn control_set_config(State(bank): Bank, body: Bytes) -> Response {
    let patch: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return bank_error(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                &format!("not JSON: {e}"),
            );
        }
    };
    match apply_config(&bank, &patch) {
        Ok(()) => json_response(StatusCode::OK, bank.config_json().to_string()),
        Err(m) => bank_error(StatusCode::BAD_REQUEST, "BAD_REQUEST", &m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bank_dates_in_every_spelling() {
        let d = NaiveDate::from_ymd_opt(2024, 1, 31).unwrap();
        for s in [
            "2024-01-31T00:00:00+0200",
            "2024-01-31T00:00:00 0200",
            "2024-01-31T00:00:00%2B0200",
            "2024-01-31T23:59:59+02:00",
            "2024-01-31T10:00:00.123+0200",
            "2024-01-31",
            "2024-01-31T10:00:00",
            "2024-01-31T20:00:00Z",
        ] {
            assert_eq!(parse_bank_date(s), Some(d), "{s}");
        }
        // An instant is read in Sofia time.
        assert_eq!(
            parse_bank_date("2024-01-31T23:30:00+0000"),
            NaiveDate::from_ymd_opt(2024, 2, 1)
        );
        for bad in [
            "",
            "yesterday",
            "2024-13-01",
            "2024-01-31T00:00:00+",
            "ЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖЖ",
        ] {
            assert_eq!(parse_bank_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn cookies_parse() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; JSESSIONID=ABC ; b=2"),
        );
        assert_eq!(cookie(&h, "JSESSIONID").as_deref(), Some("ABC"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
