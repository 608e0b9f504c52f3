//! Fibank (First Investment Bank, Bulgaria): the web-banking API behind
//! `my.fibank.bg`.
//!
//! Login is an OAuth2 implicit flow mixed with a server session:
//!
//! 1. `GET /oauth2-server/login?client_id=E_BANK` opens the session (cookie);
//! 2. `GET /oauth2-server/oauth/authorize?response_type=token&...&state=<uuid>`
//!    saves the authorize request in the session and answers a page whose
//!    `<meta name="_csrf">` carries the session's CSRF token;
//! 3. `GET /oauth2-server/api/v1/sywscertificate/fnGetCertsForLogin` (as the
//!    web client does before posting);
//! 4. `POST /oauth2-server/login` (form) → 302 back to the saved authorize
//!    request → 302 to `/EBank/#access_token=...`: the token is read from the
//!    fragment of that second redirect, so redirects are followed by hand.
//!
//! The API under `/EBank/api/v1/` then takes `Authorization: Bearer`. The
//! customer id (`getCustQuery`) goes into `EBank-Cust-Id`; accounts come from
//! `getFilteredAccounts`; a window of one account from `GetCustBal`, whose
//! `stmt` mixes booked transactions with summary lines (`OP`/`CL` balances,
//! `DT`/`CT` turnovers). Card holds not booked yet are not statement lines:
//! they come from `getBlockedAmounts` (read once per account and connector
//! run), and each window gets the holds dated inside it as pending rows.
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bankbridge_core::{
    Balance, BalanceKind, ConnectionSettings, Connector, ConnectorError, ConnectorLimits,
    Credentials, Currency, DateWindow, FetchedAccount, FetchedTransaction, Iban, Secret, TxStatus,
    WindowPage, clean_label, parse_decimal,
};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use chrono_tz::Europe::Sofia;
use reqwest::header::{self, HeaderValue};
use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use url::Url;

use crate::common::{clock_skew_secs, excerpt, malformed, status_error, text, transport};
pub use crate::common::{parse_json, parse_retry_after};

/// The real bank.
pub const DEFAULT_BASE_URL: &str = "https://my.fibank.bg";
/// The OAuth client id of Fibank's web banking.
const CLIENT_ID: &str = "E_BANK";
/// The web UI never asks for more than 30 days at once.
pub const MAX_WINDOW_DAYS: u32 = 30;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Responses larger than this are refused instead of filling memory.
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024 * 1024;
/// A restored or live token this close to its expiry is not reused.
const EXPIRY_MARGIN_SECS: i64 = 30;
const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
const APP_VERSION: &str = "3.2.16";

/// A logged-in API session.
#[derive(Clone)]
struct Session {
    token: Secret<String>,
    customer_id: Option<String>,
    expires_at: Option<DateTime<Utc>>,
}

impl Session {
    fn usable(&self, now: DateTime<Utc>) -> bool {
        self.expires_at
            .is_none_or(|t| t - chrono::Duration::seconds(EXPIRY_MARGIN_SECS) > now)
    }
}

/// The Fibank web-API connector.
pub struct FibankConnector {
    base: String,
    username: String,
    password: Secret<String>,
    http: reqwest::Client,
    timeout: Duration,
    max_body: usize,
    device_id: String,
    session: Option<Session>,
    /// Card holds per account IBAN, read once per run: the list is the bank's
    /// current state, not a function of the window asked for.
    blocked: std::collections::HashMap<String, Vec<FetchedTransaction>>,
    /// Bank clock minus ours, in seconds, from the last `Date` header: "today"
    /// is the bank's today, whatever the local clock says.
    clock_skew_secs: std::sync::atomic::AtomicI64,
}

impl fmt::Debug for FibankConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FibankConnector")
            .field("base_url", &self.base)
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("logged_in", &self.session.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn http_client(timeout: Duration) -> Result<reqwest::Client, ConnectorError> {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(20)))
        .user_agent(USER_AGENT)
        .build()
        .map_err(|e| ConnectorError::Other(format!("cannot set up the HTTP client: {e}")))
}

/// The value of the `content` attribute on the first line of `html` that
/// names `"<name>"` (the bank puts each `<meta>` tag on a line of its own).
pub fn meta_content(html: &str, name: &str) -> Option<String> {
    let needle = format!("\"{name}\"");
    let line = html.lines().find(|l| l.contains(&needle))?;
    let start = line.find("content=\"")? + "content=\"".len();
    let rest = &line[start..];
    let end = rest.find('"')?;
    Some(rest[..end].to_owned()).filter(|s| !s.is_empty())
}

/// `2024-05-03T14:22:10+0300`: `now` as Sofia local time with its offset.
fn sofia_now(millis: bool) -> String {
    let now = Utc::now().with_timezone(&Sofia);
    if millis {
        now.format("%Y-%m-%dT%H:%M:%S%.3f%z").to_string()
    } else {
        now.format("%Y-%m-%dT%H:%M:%S%z").to_string()
    }
}

/// `<date>T<time><offset>` with Sofia's offset on that day and time.
fn sofia_stamp(date: NaiveDate, h: u32, m: u32, s: u32) -> String {
    use chrono::TimeZone;
    let local = date
        .and_hms_opt(h, m, s)
        .unwrap_or_else(|| date.and_time(chrono::NaiveTime::MIN));
    match Sofia.from_local_datetime(&local).earliest() {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%z").to_string(),
        None => format!("{}+0300", local.format("%Y-%m-%dT%H:%M:%S")),
    }
}

/// The Sofia calendar day of a Fibank timestamp (`2024-05-03T14:22:10+0300`).
pub fn bank_date(s: &str) -> Option<NaiveDate> {
    let t = s.trim();
    for fmt in ["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S%.f%z"] {
        if let Ok(dt) = DateTime::parse_from_str(t, fmt) {
            return Some(dt.with_timezone(&Sofia).date_naive());
        }
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Some(dt.with_timezone(&Sofia).date_naive());
    }
    if let Ok(dt) = NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S") {
        return Some(dt.date());
    }
    t.get(..10)
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
}

fn device_id(username: &str) -> String {
    let h = Sha256::digest(format!("bankbridge-fibank-device:{username}").as_bytes());
    hex::encode_upper(&h[..5])
}

impl FibankConnector {
    /// A connector for one connection. The password comes from the
    /// `password` credential; the base URL from the settings (the real bank
    /// when empty).
    pub fn new(settings: &ConnectionSettings, credentials: Credentials) -> Result<Self, String> {
        let password = credentials
            .get("password")
            .cloned()
            .ok_or("the fibank connector needs a `password` credential")?;
        if settings.username.trim().is_empty() {
            return Err("the fibank connector needs a username".into());
        }
        let base = if settings.base_url.trim().is_empty() {
            DEFAULT_BASE_URL
        } else {
            settings.base_url.trim()
        };
        bankbridge_core::net::secure_url(base, "the fibank base URL")?;
        let http = http_client(DEFAULT_TIMEOUT).map_err(|e| e.to_string())?;
        Ok(FibankConnector {
            base: base.trim_end_matches('/').to_owned(),
            username: settings.username.clone(),
            password,
            http,
            timeout: DEFAULT_TIMEOUT,
            max_body: DEFAULT_MAX_BODY_BYTES,
            device_id: device_id(&settings.username),
            session: None,
            blocked: Default::default(),
            clock_skew_secs: Default::default(),
        })
    }

    /// Timeout of each HTTP request (default 60 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        if let Ok(http) = http_client(timeout) {
            self.http = http;
        }
        self
    }

    /// Largest response body accepted (default 256 MiB).
    pub fn with_max_body_bytes(mut self, max: usize) -> Self {
        self.max_body = max;
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn referer(&self) -> String {
        self.url("/EBank/")
    }

    async fn send(
        &self,
        what: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ConnectorError> {
        let resp = req
            .header(header::ACCEPT_LANGUAGE, "bg")
            .send()
            .await
            .map_err(|e| transport("fibank", what, &e, false))?;
        if let Some(skew) = clock_skew_secs(resp.headers()) {
            self.clock_skew_secs
                .store(skew, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(resp)
    }

    /// Read a whole body, refusing more than `max_body` bytes.
    async fn body(
        &self,
        what: &str,
        mut resp: reqwest::Response,
    ) -> Result<Vec<u8>, ConnectorError> {
        let too_big = || {
            malformed(
                what,
                format!("response larger than {} bytes", self.max_body),
            )
        };
        if resp
            .content_length()
            .is_some_and(|n| n > self.max_body as u64)
        {
            return Err(too_big());
        }
        let mut buf = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| transport("fibank", what, &e, true))?
        {
            if buf.len() + chunk.len() > self.max_body {
                return Err(too_big());
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf)
    }

    /// A login-dance page that must answer 2xx; returns its text.
    async fn page(
        &self,
        what: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<String, ConnectorError> {
        let resp = self.send(what, req).await?;
        let status = resp.status();
        if let Some(e) = status_error(what, status, resp.headers()) {
            return Err(e);
        }
        if !status.is_success() {
            return Err(malformed(what, format!("unexpected HTTP {status}")));
        }
        let body = self.body(what, resp).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// A login-dance request that must redirect; returns the absolute target.
    async fn redirect(
        &self,
        what: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<Url, ConnectorError> {
        let resp = self.send(what, req).await?;
        let status = resp.status();
        if let Some(e) = status_error(what, status, resp.headers()) {
            return Err(e);
        }
        let base = resp.url().clone();
        if !status.is_redirection() {
            return Err(ConnectorError::InvalidCredentials(format!(
                "{what} answered HTTP {status} instead of redirecting with an access token"
            )));
        }
        let location = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| malformed(what, format!("HTTP {status} without a Location header")))?;
        let target = base
            .join(location)
            .map_err(|e| malformed(what, format!("bad Location {location:?}: {e}")))?;
        // The dance never leaves the bank: a redirect elsewhere would carry
        // the session (and the token in its fragment) to another host.
        if target.origin() != base.origin() {
            return Err(malformed(
                what,
                format!(
                    "redirected to another host ({}); refusing to follow",
                    target.origin().ascii_serialization()
                ),
            ));
        }
        Ok(target)
    }

    /// The whole login dance, from a fresh cookie jar.
    async fn full_login(&mut self) -> Result<(), ConnectorError> {
        self.session = None;
        self.http = http_client(self.timeout)?;
        let client = self.http.clone();

        // 1. The login page opens the server session.
        let what = "login page";
        self.page(
            what,
            client
                .get(self.url("/oauth2-server/login"))
                .query(&[("client_id", CLIENT_ID)]),
        )
        .await?;

        // 2. The authorize request, saved in the session, shows the CSRF token.
        let state = uuid::Uuid::new_v4().to_string();
        let what = "authorize page";
        let html = self
            .page(
                what,
                client
                    .get(self.url("/oauth2-server/oauth/authorize"))
                    .query(&[
                        ("response_type", "token"),
                        ("client_id", CLIENT_ID),
                        ("redirect_uri", "/EBank/"),
                        ("scope", CLIENT_ID),
                        ("state", state.as_str()),
                    ]),
            )
            .await?;
        let csrf = meta_content(&html, "_csrf")
            .ok_or_else(|| malformed(what, "no <meta name=\"_csrf\"> tag"))?;

        // 3. The certificate probe the web client makes before posting.
        let what = "fnGetCertsForLogin";
        let resp = self
            .send(
                what,
                client
                    .get(self.url("/oauth2-server/api/v1/sywscertificate/fnGetCertsForLogin"))
                    .query(&[
                        ("client_id", CLIENT_ID),
                        ("userName", self.username.as_str()),
                    ]),
            )
            .await?;
        if let Some(e) = status_error(what, resp.status(), resp.headers()) {
            return Err(e);
        }
        let _ = self.body(what, resp).await?;

        // 4. The login form; then the two redirects.
        let time = sofia_now(true);
        let form = [
            ("username", self.username.as_str()),
            ("password", self.password.expose().as_str()),
            ("system", ""),
            ("client_id", CLIENT_ID),
            ("lang", "bg"),
            ("time", time.as_str()),
            ("_csrf", csrf.as_str()),
            ("sig", ""),
        ];
        let what = "login form";
        let first = self
            .redirect(
                what,
                client.post(self.url("/oauth2-server/login")).form(&form),
            )
            .await?;
        if first.query_pairs().any(|(k, _)| k == "error")
            || first.path().ends_with("/oauth2-server/login")
        {
            return Err(ConnectorError::InvalidCredentials(
                "the bank answered the login form with its login error page (wrong username or password)".into(),
            ));
        }
        let what = "authorize redirect";
        let second = self.redirect(what, client.get(first.as_str())).await?;
        let fragment: Vec<(String, String)> = second
            .fragment()
            .map(|f| {
                url::form_urlencoded::parse(f.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        let get = |k: &str| {
            fragment
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let Some(token) = get("access_token").filter(|t| !t.is_empty()) else {
            return Err(ConnectorError::InvalidCredentials(
                "the bank's redirect after login carries no access token".into(),
            ));
        };
        if let Some(s) = get("state")
            && s != state
        {
            return Err(malformed(
                what,
                "the state in the redirect is not the one sent",
            ));
        }
        let expires_at = get("expires_in")
            .and_then(|s| s.parse::<i64>().ok())
            .map(|secs| Utc::now() + chrono::Duration::seconds(secs.clamp(0, 10 * 365 * 86_400)));

        // The single-page app's shell carries a public token; the API does
        // not need it, but the web client loads the page, so do we.
        let mut page_url = second.clone();
        page_url.set_fragment(None);
        let html = self
            .page("EBank page", client.get(page_url.as_str()))
            .await?;
        if meta_content(&html, "EBank_publicToken").is_none() {
            tracing::debug!("fibank: no EBank_publicToken on the EBank page");
        }

        self.session = Some(Session {
            token: Secret::new(token),
            customer_id: None,
            expires_at,
        });
        self.customer_id().await?;
        tracing::info!(base = %self.base, "fibank: logged in");
        Ok(())
    }

    /// The customer id, asked once per session.
    async fn customer_id(&mut self) -> Result<String, ConnectorError> {
        if let Some(id) = self.session.as_ref().and_then(|s| s.customer_id.clone()) {
            return Ok(id);
        }
        let what = "getCustQuery";
        let v = self
            .api(what, "sywsquery/sywsquery/getCustQuery", &[], false)
            .await?;
        let id = v
            .get("customer")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
            .and_then(|c| c.get("ibCustomerId"))
            .and_then(|id| match id {
                Value::Number(n) => Some(n.to_string()),
                Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
                _ => None,
            })
            .ok_or_else(|| malformed(what, "no customer[0].ibCustomerId"))?;
        if let Some(s) = self.session.as_mut() {
            s.customer_id = Some(id.clone());
        }
        Ok(id)
    }

    /// One API call. A 4xx answer other than 401/429 comes back as
    /// `Ok(Err((status, body)))` for the caller to interpret.
    async fn api_raw(
        &mut self,
        what: &str,
        path: &str,
        query: &[(&str, String)],
        with_customer: bool,
    ) -> Result<Result<Value, (StatusCode, Value)>, ConnectorError> {
        let Some(session) = self.session.clone() else {
            return Err(ConnectorError::SessionExpired);
        };
        if !session.usable(Utc::now()) {
            self.session = None;
            return Err(ConnectorError::SessionExpired);
        }
        let mut req = self
            .http
            .request(Method::GET, self.url(&format!("/EBank/api/v1/{path}")))
            .query(query)
            .bearer_auth(session.token.expose())
            .header(header::ACCEPT, "application/json, text/plain, */*")
            .header(header::REFERER, self.referer())
            .header("EBank-Client-Time", sofia_now(true))
            .header("EBank-Device-Id", &self.device_id)
            .header("EBank-App-Version", APP_VERSION);
        if with_customer {
            let id = session
                .customer_id
                .clone()
                .ok_or(ConnectorError::SessionExpired)?;
            req = req.header(
                "EBank-Cust-Id",
                HeaderValue::from_str(&id).map_err(|e| malformed(what, e.to_string()))?,
            );
        }
        let resp = self.send(what, req).await?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status.is_redirection() {
            // The token is dead: the next login must do the whole dance.
            self.session = None;
            return Err(ConnectorError::SessionExpired);
        }
        if let Some(e) = status_error(what, status, resp.headers()) {
            return Err(e);
        }
        let body = self.body(what, resp).await?;
        if status.is_success() {
            return parse_json(what, &body).map(Ok);
        }
        let v = serde_json::from_slice(&body)
            .unwrap_or(Value::String(String::from_utf8_lossy(&body).into_owned()));
        Ok(Err((status, v)))
    }

    async fn api(
        &mut self,
        what: &str,
        path: &str,
        query: &[(&str, String)],
        with_customer: bool,
    ) -> Result<Value, ConnectorError> {
        match self.api_raw(what, path, query, with_customer).await? {
            Ok(v) => Ok(v),
            Err((status, body)) => Err(rejected(what, status, &body)),
        }
    }
}

/// The bank's own message of a JSON error body.
fn error_message(body: &Value) -> String {
    ["message", "error_description", "errorMessage", "error"]
        .iter()
        .find_map(|k| body.get(k).and_then(Value::as_str))
        .map(excerpt)
        .unwrap_or_else(|| match body.as_str() {
            Some(s) => excerpt(s),
            None => excerpt(&body.to_string()),
        })
}

fn rejected(what: &str, status: StatusCode, body: &Value) -> ConnectorError {
    let code = body.get("errorCode").and_then(Value::as_str).unwrap_or("");
    ConnectorError::Other(format!(
        "{what}: the bank rejected the request (HTTP {status}{}): {}",
        if code.is_empty() {
            String::new()
        } else {
            format!(", {code}")
        },
        error_message(body)
    ))
}

fn is_window_refusal(body: &Value) -> bool {
    let code = body.get("errorCode").and_then(Value::as_str).unwrap_or("");
    code.to_ascii_uppercase().contains("PERIOD")
        || error_message(body).to_lowercase().contains("период")
}

/// A JSON number or string as an exact decimal (`None` when absent or null).
fn decimal(
    what: &str,
    line: &Map<String, Value>,
    field: &str,
) -> Result<Option<Decimal>, ConnectorError> {
    match line.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => parse_decimal(&n.to_string())
            .map(Some)
            .ok_or_else(|| malformed(what, format!("{field} {n} is not a decimal"))),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => parse_decimal(s)
            .map(Some)
            .ok_or_else(|| malformed(what, format!("{field} {s:?} is not a decimal"))),
        Some(other) => Err(malformed(what, format!("{field} is {other}, not a number"))),
    }
}

/// Amount signed by the debit/credit flag (`D` debit; `K`/`C` credit).
fn signed_amount(what: &str, line: &Map<String, Value>) -> Result<Decimal, ConnectorError> {
    let amount = decimal(what, line, "amount")?
        .ok_or_else(|| malformed(what, "a stmt line has no amount"))?;
    match text(line, "dtkt").map(str::to_ascii_uppercase).as_deref() {
        Some("D" | "DT" | "Д" | "ДТ") => Ok(-amount.abs()),
        Some("K" | "C" | "KT" | "CT" | "К" | "КТ") => Ok(amount.abs()),
        other => Err(malformed(
            what,
            format!("a stmt line has dtkt {other:?}, expected D or K"),
        )),
    }
}

/// Map one `GetCustBal` answer to a window page.
pub fn map_statement(
    account: &FetchedAccount,
    window: DateWindow,
    answer: &Value,
) -> Result<WindowPage, ConnectorError> {
    let what = "GetCustBal";
    let acc = answer
        .get("acc")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed(what, "no acc array in the answer"))?;
    if acc.len() != 1 {
        return Err(malformed(
            what,
            format!("expected exactly one account in acc, got {}", acc.len()),
        ));
    }
    let stmt = acc[0]
        .get("stmt")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed(what, "acc[0].stmt is not an array"))?;
    let currency = account.currency;
    let mut page = WindowPage::default();
    for (i, line) in stmt.iter().enumerate() {
        let obj = line
            .as_object()
            .ok_or_else(|| malformed(what, format!("stmt[{i}] is not an object")))?;
        let trn_type = text(obj, "trnType").unwrap_or("");
        match trn_type {
            "DT" | "CT" => continue,
            "OP" | "CL" => {
                let amount = match decimal(what, obj, "acBal")? {
                    Some(b) => b,
                    None => signed_amount(what, obj)?,
                };
                let (kind, reference_date) = if trn_type == "OP" {
                    (BalanceKind::OpeningBooked, window.from)
                } else {
                    (BalanceKind::ClosingBooked, window.to)
                };
                page.balances.push(Balance {
                    kind,
                    amount,
                    currency,
                    reference_date,
                });
                continue;
            }
            _ => {}
        }
        page.transactions
            .push(map_line(what, i, obj, line, currency)?);
    }
    Ok(page)
}

fn map_line(
    what: &str,
    i: usize,
    obj: &Map<String, Value>,
    raw: &Value,
    currency: Currency,
) -> Result<FetchedTransaction, ConnectorError> {
    let id = match obj.get("acEntrySrNo") {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
        _ => return Err(malformed(what, format!("stmt[{i}] has no acEntrySrNo"))),
    };
    let amount = signed_amount(what, obj).map_err(|e| match e {
        ConnectorError::Malformed { what, detail } => ConnectorError::Malformed {
            what,
            detail: format!("{detail} (acEntrySrNo {id})"),
        },
        e => e,
    })?;
    let date_time = text(obj, "dateTime")
        .ok_or_else(|| malformed(what, format!("entry {id} has no dateTime")))?;
    let booking_date = bank_date(date_time)
        .ok_or_else(|| malformed(what, format!("entry {id} has dateTime {date_time:?}")))?;
    let value_date = text(obj, "valueDt").and_then(bank_date);
    let LineTexts {
        raw_label,
        label,
        counterparty_name,
        remittance_info,
    } = line_texts(obj);
    let trn_type = text(obj, "trnType").unwrap_or("");
    let bank_code = match (trn_type, text(obj, "trnCode").unwrap_or("")) {
        ("", "") => None,
        (t, c) => Some(format!("{t}/{c}")),
    };
    Ok(FetchedTransaction {
        provider_id: Some(id),
        status: TxStatus::Booked,
        booking_date,
        value_date,
        transaction_date: None,
        amount,
        currency,
        original_amount: None,
        original_currency: None,
        raw_label,
        label,
        counterparty_name,
        counterparty_iban: text(obj, "trnAccount")
            .and_then(|s| Iban::parse(s).ok())
            .map(String::from),
        remittance_info,
        bank_code,
        running_balance: decimal(what, obj, "acBal")?,
        raw: raw.clone(),
    })
}

/// The texts of a statement line or a hold.
struct LineTexts {
    /// `trname` as the bank sent it.
    raw_label: String,
    /// Cleaned; the counterparty or the first remark when `trname` is empty.
    label: String,
    counterparty_name: Option<String>,
    /// `remI`/`remIi`/`remIii`, one per line.
    remittance_info: Option<String>,
}

fn line_texts(obj: &Map<String, Value>) -> LineTexts {
    let raw_label = obj
        .get("trname")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let remarks: Vec<&str> = ["remI", "remIi", "remIii"]
        .iter()
        .filter_map(|k| text(obj, k))
        .collect();
    let counterparty_name = text(obj, "contragent")
        .or_else(|| text(obj, "benOrderParty"))
        .map(str::to_owned);
    let mut label = clean_label(&raw_label);
    if label.is_empty() {
        label = clean_label(
            counterparty_name
                .as_deref()
                .or(remarks.first().copied())
                .unwrap_or(""),
        );
    }
    LineTexts {
        raw_label,
        label,
        counterparty_name,
        remittance_info: (!remarks.is_empty()).then(|| remarks.join("\n")),
    }
}

/// Map the `getBlockedAmounts` answer: each hold becomes a pending row keyed
/// `block:<blockId>` (its own id space, never an `acEntrySrNo`).
pub fn map_blocked(
    answer: &Value,
    currency: Currency,
) -> Result<Vec<FetchedTransaction>, ConnectorError> {
    let what = "getBlockedAmounts";
    let list = match answer.get("blockedAmounts") {
        Some(Value::Array(list)) => list,
        // No holds: some answers leave the list out or null.
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(other) => {
            return Err(malformed(
                what,
                format!("blockedAmounts is {}, not an array", kind_of(other)),
            ));
        }
    };
    list.iter()
        .enumerate()
        .map(|(i, raw)| {
            let obj = raw
                .as_object()
                .ok_or_else(|| malformed(what, format!("blockedAmounts[{i}] is not an object")))?;
            let id = match obj.get("blockId") {
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
                _ => {
                    return Err(malformed(
                        what,
                        format!("blockedAmounts[{i}] has no blockId"),
                    ));
                }
            };
            let amount = signed_amount(what, obj)?;
            let stamp = text(obj, "dateTime")
                .ok_or_else(|| malformed(what, format!("hold {id} has no dateTime")))?;
            let date = bank_date(stamp)
                .ok_or_else(|| malformed(what, format!("hold {id} has dateTime {stamp:?}")))?;
            let currency = match text(obj, "ccy") {
                Some(c) => c
                    .parse()
                    .map_err(|e| malformed(what, format!("hold {id} has currency {c:?}: {e}")))?,
                None => currency,
            };
            let LineTexts {
                raw_label,
                label,
                counterparty_name,
                remittance_info,
            } = line_texts(obj);
            Ok(FetchedTransaction {
                provider_id: Some(format!("block:{id}")),
                status: TxStatus::Pending,
                booking_date: date,
                value_date: None,
                transaction_date: Some(date),
                amount,
                currency,
                original_amount: None,
                original_currency: None,
                raw_label,
                label,
                counterparty_name,
                counterparty_iban: None,
                remittance_info,
                bank_code: text(obj, "trnType").map(str::to_owned),
                running_balance: None,
                raw: raw.clone(),
            })
        })
        .collect()
}

/// Map the `getFilteredAccounts` answer.
pub fn map_accounts(answer: &Value) -> Result<Vec<FetchedAccount>, ConnectorError> {
    let what = "getFilteredAccounts";
    let list = answer.as_array().ok_or_else(|| {
        malformed(
            what,
            format!("expected a JSON array of accounts, got {}", kind_of(answer)),
        )
    })?;
    list.iter()
        .enumerate()
        .map(|(i, a)| {
            let obj = a
                .as_object()
                .ok_or_else(|| malformed(what, format!("account {i} is not an object")))?;
            let iban_text = text(obj, "ibanAcNo")
                .ok_or_else(|| malformed(what, format!("account {i} has no ibanAcNo")))?;
            let iban = Iban::parse(iban_text)
                .map_err(|e| malformed(what, format!("account {i} has an invalid IBAN: {e}")))?;
            let ccy = text(obj, "ccy")
                .ok_or_else(|| malformed(what, format!("account {iban} has no ccy")))?;
            let currency: Currency = ccy.parse().map_err(|e| {
                malformed(what, format!("account {iban} has currency {ccy:?}: {e}"))
            })?;
            Ok(FetchedAccount {
                provider_id: iban.to_string(),
                iban: Some(iban),
                currency,
                name: text(obj, "acDesc").map(str::to_owned),
                kind: text(obj, "acType")
                    .or_else(|| text(obj, "acTypeDesc"))
                    .map(str::to_owned),
                raw: a.clone(),
            })
        })
        .collect()
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// What [`FibankConnector::session_state`] keeps between runs.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedSession {
    v: u32,
    access_token: String,
    customer_id: Option<String>,
    expires_at: Option<DateTime<Utc>>,
}

#[async_trait]
impl Connector for FibankConnector {
    fn name(&self) -> &'static str {
        "fibank"
    }

    /// The web UI refuses ranges over 30 days; history goes back as far as
    /// the account; no SCA for history; no published request quota.
    fn limits(&self) -> ConnectorLimits {
        ConnectorLimits {
            max_window_days: Some(MAX_WINDOW_DAYS),
            max_history_days: None,
            sca_after_days: None,
            daily_request_budget: None,
        }
    }

    fn today(&self) -> NaiveDate {
        let skew = self
            .clock_skew_secs
            .load(std::sync::atomic::Ordering::Relaxed);
        (Utc::now() + chrono::Duration::seconds(skew))
            .with_timezone(&Sofia)
            .date_naive()
    }

    /// Reuse a live (or restored, unexpired) token; otherwise the whole dance.
    async fn login(&mut self) -> Result<(), ConnectorError> {
        if self.session.as_ref().is_some_and(|s| s.usable(Utc::now())) {
            tracing::debug!("fibank: reusing the current session");
            match self.customer_id().await {
                Ok(_) => return Ok(()),
                Err(ConnectorError::SessionExpired) => {}
                Err(e) => return Err(e),
            }
        }
        self.full_login().await
    }

    fn session_state(&self) -> Option<Secret<String>> {
        let s = self.session.as_ref()?;
        let saved = SavedSession {
            v: 1,
            access_token: s.token.expose().clone(),
            customer_id: s.customer_id.clone(),
            expires_at: s.expires_at,
        };
        serde_json::to_string(&saved).ok().map(Secret::new)
    }

    fn restore_session(&mut self, state: Secret<String>) {
        match serde_json::from_str::<SavedSession>(state.expose()) {
            Ok(saved) if saved.v == 1 && !saved.access_token.is_empty() => {
                self.session = Some(Session {
                    token: Secret::new(saved.access_token),
                    customer_id: saved.customer_id,
                    expires_at: saved.expires_at,
                });
            }
            _ => tracing::warn!("fibank: ignoring a saved session in an unknown format"),
        }
    }

    async fn accounts(&mut self) -> Result<Vec<FetchedAccount>, ConnectorError> {
        let v = self
            .api(
                "getFilteredAccounts",
                "sywspicklist/sywspicklist/getFilteredAccounts",
                &[],
                true,
            )
            .await?;
        map_accounts(&v)
    }

    async fn window(
        &mut self,
        account: &FetchedAccount,
        window: DateWindow,
    ) -> Result<WindowPage, ConnectorError> {
        let what = "GetCustBal";
        let iban = account
            .iban
            .as_ref()
            .map(|i| i.to_string())
            .unwrap_or_else(|| account.provider_id.clone());
        let query = [
            ("FromDate", sofia_stamp(window.from, 0, 0, 0)),
            ("ToDate", sofia_stamp(window.to, 23, 59, 59)),
            ("Iban", iban),
            ("StmtType", "T".to_owned()),
            ("isAccountFromPSD2", "false".to_owned()),
        ];
        let mut page = match self
            .api_raw(what, "sywsquery/sywsquery/GetCustBal", &query, true)
            .await?
        {
            Ok(v) => map_statement(account, window, &v)?,
            Err((status, body))
                if status == StatusCode::BAD_REQUEST && is_window_refusal(&body) =>
            {
                return Err(ConnectorError::WindowRefused {
                    window,
                    message: error_message(&body),
                });
            }
            Err((status, body)) => return Err(rejected(what, status, &body)),
        };
        let iban = query[2].1.clone();
        if !self.blocked.contains_key(&iban) {
            let v = self
                .api(
                    "getBlockedAmounts",
                    "sywsquery/sywsquery/getBlockedAmounts",
                    &[("Iban", iban.clone())],
                    true,
                )
                .await?;
            self.blocked
                .insert(iban.clone(), map_blocked(&v, account.currency)?);
        }
        page.transactions.extend(
            self.blocked[&iban]
                .iter()
                .filter(|t| window.from <= t.booking_date && t.booking_date <= window.to)
                .cloned(),
        );
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bankbridge_core::TransientKind;
    use serde_json::json;

    fn account() -> FetchedAccount {
        FetchedAccount {
            provider_id: "BG80BNBG96611020345678".into(),
            iban: Some(Iban::parse("BG80BNBG96611020345678").unwrap()),
            currency: "BGN".parse().unwrap(),
            name: None,
            kind: None,
            raw: Value::Null,
        }
    }

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn csrf_and_public_token_are_scraped_by_line() {
        let html = "<head>\n<meta name=\"_csrf\" content=\"abc-123\" />\n<meta name=\"_csrf_header\" content=\"X\" />\n<input name=\"_csrf\" value=\"zzz\"/>\n";
        assert_eq!(meta_content(html, "_csrf").as_deref(), Some("abc-123"));
        assert_eq!(meta_content(html, "EBank_publicToken"), None);
        assert_eq!(
            meta_content("<meta name=\"_csrf\" content=\"\" />", "_csrf"),
            None
        );
    }

    #[test]
    fn stamps_use_the_offset_of_the_day() {
        assert_eq!(
            sofia_stamp(d(2024, 1, 31), 0, 0, 0),
            "2024-01-31T00:00:00+0200"
        );
        assert_eq!(
            sofia_stamp(d(2024, 7, 31), 23, 59, 59),
            "2024-07-31T23:59:59+0300"
        );
        assert_eq!(bank_date("2024-05-03T00:30:00+0300"), Some(d(2024, 5, 3)));
        assert_eq!(bank_date("2024-05-02T22:30:00+0000"), Some(d(2024, 5, 3)));
        assert_eq!(bank_date("2024-05-03"), Some(d(2024, 5, 3)));
        assert_eq!(bank_date("soon"), None);
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:20:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("later", now), None);
    }

    #[test]
    fn truncated_vs_malformed_json() {
        assert!(matches!(
            parse_json("x", b"{\"acc\":[{\"st"),
            Err(ConnectorError::Transient {
                kind: TransientKind::Truncated,
                ..
            })
        ));
        assert!(matches!(
            parse_json("x", b"<html>"),
            Err(ConnectorError::Malformed { .. })
        ));
    }

    #[test]
    fn statement_lines_map_exactly() {
        let answer = json!({"acc": [{"stmt": [
            {"trnType": "OP", "amount": 100.5, "dtkt": "K", "acBal": 100.5, "acEntrySrNo": 0},
            {"acEntrySrNo": 310000001u64, "reference": "FT24001310000001", "dateTime": "2024-01-02T10:00:00+0200",
             "valueDt": "2024-01-01T00:00:00+0200", "amount": 12.3, "dtkt": "D", "acBal": "88.20",
             "trnType": "PO", "trnCode": "205", "trname": "Плащане  ПОС  SHOP", "contragent": "SHOP",
             "benOrderParty": "", "trnAccount": "BG80BNBG96611020345678", "remI": "SHOP SOFIA", "remIi": "", "remIii": "Авт.код 1"},
            {"acEntrySrNo": "310000002", "dateTime": "2024-01-03T10:00:00+0200", "amount": "0,10", "dtkt": "D",
             "acBal": null, "trnType": "PO", "trname": "", "contragent": "", "benOrderParty": "CAFE",
             "trnAccount": "not an iban"},
            {"trnType": "DT", "amount": 12.3, "dtkt": "D"},
            {"trnType": "CT", "amount": 0, "dtkt": "K"},
            {"trnType": "CL", "amount": 88.2, "dtkt": "K"}
        ]}]});
        let w = DateWindow::new(d(2024, 1, 1), d(2024, 1, 31));
        let page = map_statement(&account(), w, &answer).unwrap();
        assert_eq!(page.balances.len(), 2);
        assert_eq!(page.balances[0].kind, BalanceKind::OpeningBooked);
        assert_eq!(page.balances[0].amount.to_string(), "100.5");
        assert_eq!(page.balances[0].reference_date, w.from);
        assert_eq!(page.balances[1].amount.to_string(), "88.2");
        assert_eq!(page.balances[1].reference_date, w.to);
        let [t, p] = &page.transactions[..] else {
            panic!("two transactions")
        };
        assert_eq!(t.provider_id.as_deref(), Some("310000001"));
        assert_eq!(t.amount.to_string(), "-12.3");
        assert_eq!(t.status, TxStatus::Booked);
        assert_eq!(t.booking_date, d(2024, 1, 2));
        assert_eq!(t.value_date, Some(d(2024, 1, 1)));
        assert_eq!(t.raw_label, "Плащане  ПОС  SHOP");
        assert_eq!(t.label, "Плащане ПОС SHOP");
        assert_eq!(t.remittance_info.as_deref(), Some("SHOP SOFIA\nАвт.код 1"));
        assert_eq!(
            t.counterparty_iban.as_deref(),
            Some("BG80BNBG96611020345678")
        );
        assert_eq!(t.bank_code.as_deref(), Some("PO/205"));
        assert_eq!(
            t.running_balance.map(|b| b.to_string()).as_deref(),
            Some("88.20")
        );
        assert_eq!(t.raw, answer["acc"][0]["stmt"][1]);
        // A thin line (a string id, a comma decimal, a null balance) still maps.
        assert_eq!(p.status, TxStatus::Booked);
        assert_eq!(p.provider_id.as_deref(), Some("310000002"));
        assert_eq!(p.amount.to_string(), "-0.10");
        assert_eq!(p.counterparty_name.as_deref(), Some("CAFE"));
        assert_eq!(p.label, "CAFE");
        assert_eq!(p.counterparty_iban, None);
        assert_eq!(p.running_balance, None);
    }

    #[test]
    fn blocked_amounts_become_pending_rows_in_their_own_id_space() {
        let bgn: Currency = "BGN".parse().unwrap();
        let answer = json!({"iban": "BG80BNBG96611020345678", "ccy": "BGN", "blockedAmounts": [
            {"blockId": 900000000001u64, "dateTime": "2024-01-03T10:00:00+0200", "amount": 4.5, "dtkt": "D",
             "ccy": "BGN", "trnType": "PO", "trname": "Плащане ПОС CAFE", "contragent": "CAFE", "remI": "CAFE SOFIA"},
            {"blockId": "900000000002", "dateTime": "2024-01-04T00:10:00+0200", "amount": "1.00", "dtkt": "K"}
        ]});
        let rows = map_blocked(&answer, bgn).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].provider_id.as_deref(), Some("block:900000000001"));
        assert_eq!(rows[0].status, TxStatus::Pending);
        assert_eq!(rows[0].amount.to_string(), "-4.5");
        assert_eq!(rows[0].booking_date, d(2024, 1, 3));
        assert_eq!(rows[0].label, "Плащане ПОС CAFE");
        assert_eq!(rows[0].remittance_info.as_deref(), Some("CAFE SOFIA"));
        assert_eq!(rows[1].amount.to_string(), "1.00");
        assert_eq!(rows[1].label, "");
        // No holds at all, in either spelling.
        assert!(
            map_blocked(&json!({"blockedAmounts": []}), bgn)
                .unwrap()
                .is_empty()
        );
        assert!(map_blocked(&json!({"iban": "x"}), bgn).unwrap().is_empty());
        // A hold without an amount or an id is malformed, not a panic.
        for bad in [
            json!({"blockedAmounts": [{"amount": null}]}),
            json!({"blockedAmounts": [{"blockId": 1, "dtkt": "D", "amount": 1}]}),
            json!({"blockedAmounts": {"x": 1}}),
        ] {
            assert!(matches!(
                map_blocked(&bad, bgn),
                Err(ConnectorError::Malformed { .. })
            ));
        }
    }

    #[test]
    fn wrong_shapes_are_malformed_not_panics() {
        let w = DateWindow::new(d(2024, 1, 1), d(2024, 1, 31));
        for bad in [
            json!({}),
            json!({"acc": []}),
            json!({"acc": [{"stmt": {"x": 1}}]}),
            json!({"acc": [{"stmt": [1]}]}),
            json!({"acc": [{"stmt": [{"trnType": "PO", "amount": "много", "dtkt": "?"}]}]}),
            json!({"acc": [{"stmt": [{"acEntrySrNo": 1, "amount": 1, "dtkt": "X", "dateTime": "2024-01-01"}]}]}),
            json!({"acc": [{"stmt": [{"acEntrySrNo": 1, "amount": 1, "dtkt": "D"}]}]}),
        ] {
            assert!(
                matches!(
                    map_statement(&account(), w, &bad),
                    Err(ConnectorError::Malformed { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            map_accounts(&json!({"accounts": null})),
            Err(ConnectorError::Malformed { .. })
        ));
        let e = map_accounts(&json!([{"ibanAcNo": "BG08BNBG96611020345678", "ccy": "BGN"}]))
            .unwrap_err();
        assert!(e.to_string().contains("BG08BNBG96611020345678"), "{e}");
    }

    #[test]
    fn debug_hides_secrets_and_factory_checks_names() {
        let settings = ConnectionSettings::new("http://127.0.0.1:1/fibank", "alice");
        let mut c = FibankConnector::new(
            &settings,
            Credentials::with_password(Secret::from("hunter2")),
        )
        .unwrap();
        c.restore_session(Secret::from(
            r#"{"v":1,"access_token":"tok-SECRET","customer_id":"7","expires_at":null}"#,
        ));
        let printed = format!("{c:?}");
        assert!(
            !printed.contains("hunter2") && !printed.contains("tok-SECRET"),
            "{printed}"
        );
        let state = c.session_state().unwrap();
        assert!(state.expose().contains("tok-SECRET"));
        assert_eq!(format!("{state:?}"), "[redacted]");
        let err = crate::build("nope", &settings, Credentials::default())
            .err()
            .unwrap();
        assert!(err.contains("fibank"), "{err}");
        assert!(crate::build("fibank", &settings, Credentials::default()).is_err());
        assert!(
            FibankConnector::new(
                &ConnectionSettings::new("ftp://x", "a"),
                Credentials::with_password("p".into())
            )
            .is_err()
        );
    }
}
