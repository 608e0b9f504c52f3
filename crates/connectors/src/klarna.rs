//! Klarna open banking (the XS2A API of Klarna's Open Banking, ex-Sofort):
//! thousands of European banks through one consent.
//!
//! The connection's password is the API token (`Authorization: Token …`),
//! its username the login name at the bank, which the bank's own form asks
//! for when the bank is linked; the options `bank_code` and `country_code`
//! pick the bank.
//!
//! **Linking** (only with the user there): a session with a
//! `consent_scope` for accounts, details, balances and transactions and a
//! `lifetime` of `consent_days`, then an accounts flow. The flow runs the
//! wizard the XS2A App itself drives: the bank is selected, and each form
//! the bank shows is answered in an encrypted envelope
//! ([`bankbridge_core::envelope`]): a choice with the option the connection
//! names (an option of the element's key) or the only one, a text field
//! with the username, a password field with what the person types for this
//! link only ([`ScaChallenge::Secret`], never stored). The bank's redirect
//! is raised as a redirect challenge; the browser comes back to the run's
//! address, which completes the flow as its `return_url`. Once the flow is
//! finished the consent is fetched (its id, its URLs by scope, its first
//! token) and the session is closed.
//!
//! **Syncing** reads the consent: the account list, balances and
//! transactions (`from_date`/`to_date`, `transactions/list` pages). Every
//! answer carries a new `consent_token` and spends the old one, so the
//! newest is kept after every call (the engine seals the session after
//! every window); an error that says the token may be used again carries it
//! too. Accounts are keyed by IBAN: account ids may change over time, and a
//! new consent's ids map to the stored accounts.
//!
//! **The bank's limit.** With the user there the calls carry the `psu`
//! object and do not count; without, 4 a day per account and call (PSD2),
//! counted in the session and paced over the day (see [`crate::budget`]);
//! `CONSENT.LIMIT_EXCEEDED` is waited out. An expired or revoked consent
//! stops in `needs_user` with the re-link instruction.
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};

use async_trait::async_trait;
use bankbridge_core::{
    Attendance, Balance, BalanceKind, ConnectionSettings, Connector, ConnectorError,
    ConnectorLimits, ConsentInfo, Credentials, Currency, DateWindow, FetchedAccount,
    FetchedTransaction, Iban, ScaAnswer, ScaChallenge, ScaProgress, Secret, TxStatus, WindowPage,
    clean_label,
};
use chrono::{DateTime, NaiveDate, Utc};
use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use url::Url;

use crate::aggregator::{
    Answer, Counted, USER_AGENT, afford, base_url, exchange, http_client, no_return_address,
    number_option, psu_ip_option, redirect_option, relink_needed,
};
use crate::budget::Allowances;
use crate::common::{clock_skew_secs, date, excerpt, malformed, status_error, text};

pub const DEFAULT_BASE_URL: &str = "https://api.openbanking.klarna.com";
/// Unattended consent calls a day per account and call (PSD2).
pub const DAILY_LIMIT: u32 = 4;
/// Days a consent is asked for (Klarna's clients ask for 30 to 90).
pub const DEFAULT_CONSENT_DAYS: u32 = 90;
pub const DEFAULT_HISTORY_DAYS: u32 = 730;
/// Transactions asked for per page.
const PAGE_SIZE: u32 = 500;
/// Pages followed at most for one window.
const MAX_PAGES: usize = 10_000;
/// Wizard answers followed at most in one link (a loop is a bug).
const MAX_WIZARD_STEPS: usize = 24;

/// Option names read from [`ConnectionSettings::options`].
pub mod option {
    /// The bank's code as Klarna knows it (the German test bank: `00000`).
    pub const BANK_CODE: &str = "bank_code";
    /// Its country (two letters).
    pub const COUNTRY_CODE: &str = "country_code";
    /// Days of consent to ask for (at most 90).
    pub const CONSENT_DAYS: &str = "consent_days";
    /// Days of history the bank serves.
    pub const HISTORY_DAYS: &str = "history_days";
    /// Unattended calls a day per account and call (default 4).
    pub const DAILY_LIMIT: &str = "daily_limit";
    /// Where the bank sends the browser back when the run offers no address.
    pub const REDIRECT_URI: &str = "redirect_uri";
    /// The `psu.ip_address` sent while the user is there.
    pub const PSU_IP_ADDRESS: &str = "psu_ip_address";
}

/// One connection's settings, read from its options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub bank_code: String,
    pub country_code: String,
    pub consent_days: u32,
    pub history_days: u32,
    pub daily_limit: u32,
    pub redirect_uri: Option<String>,
    pub psu_ip: String,
    /// Options naming a wizard choice (`interface=…`): the rest of the options.
    pub choices: BTreeMap<String, String>,
}

impl Settings {
    pub fn from_options(options: &BTreeMap<String, String>) -> Result<Settings, String> {
        let number = |key: &str, default: u32, max: u32| number_option(options, key, default, max);
        let needed = |key: &str| {
            options
                .get(key)
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    format!(
                        "{key} is needed: the bank as Klarna knows it (bank_code=00000 and country_code=DE for the test bank)"
                    )
                })
        };
        let country_code = needed(option::COUNTRY_CODE)?.to_ascii_uppercase();
        if country_code.len() != 2 || !country_code.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(format!("{} must be two letters", option::COUNTRY_CODE));
        }
        let redirect_uri = redirect_option(options, option::REDIRECT_URI)?;
        let psu_ip = psu_ip_option(options, option::PSU_IP_ADDRESS)?;
        let known = [
            option::BANK_CODE,
            option::COUNTRY_CODE,
            option::CONSENT_DAYS,
            option::HISTORY_DAYS,
            option::DAILY_LIMIT,
            option::REDIRECT_URI,
            option::PSU_IP_ADDRESS,
        ];
        Ok(Settings {
            bank_code: needed(option::BANK_CODE)?,
            country_code,
            consent_days: number(option::CONSENT_DAYS, DEFAULT_CONSENT_DAYS, 90)?,
            history_days: number(option::HISTORY_DAYS, DEFAULT_HISTORY_DAYS, 3650)?,
            daily_limit: number(option::DAILY_LIMIT, DAILY_LIMIT, 1000)?,
            redirect_uri,
            psu_ip,
            choices: options
                .iter()
                .filter(|(k, _)| !known.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }
}

/// A bank as Klarna's Bank Universe lists it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct Bank {
    pub bank_name: String,
    pub country_code: String,
    #[serde(default)]
    pub bank_codes: Vec<String>,
    #[serde(default)]
    pub bics: Vec<String>,
}

/// The banks whose name or code is `wanted` (exactly, case aside), else
/// every bank whose name contains it.
pub fn pick_bank<'a>(all: &'a [Bank], wanted: &str) -> Vec<&'a Bank> {
    let lower = wanted.trim().to_lowercase();
    let exact: Vec<_> = all
        .iter()
        .filter(|b| {
            b.bank_name.to_lowercase() == lower
                || b.bank_codes.iter().any(|c| c.to_lowercase() == lower)
        })
        .collect();
    if !exact.is_empty() {
        return exact;
    }
    all.iter()
        .filter(|b| b.bank_name.to_lowercase().contains(&lower))
        .collect()
}

/// The banks of `country` (Bank Universe's `GET /v1/banks`, on the API's
/// host), for picking the bank when a connection is added.
pub async fn banks(
    base: &str,
    token: &Secret<String>,
    country: &str,
) -> Result<Vec<Bank>, ConnectorError> {
    let base = base_url(base).map_err(ConnectorError::Other)?;
    let http = http_client().map_err(ConnectorError::Other)?;
    let country = country.trim().to_ascii_uppercase();
    let mut out: Vec<Bank> = Vec::new();
    let mut offset = 0usize;
    loop {
        let url = base
            .join(&format!(
                "v1/banks?country_code={country}&offset={offset}&size=1000"
            ))
            .map_err(|e| malformed("banks", e.to_string()))?;
        let req = http.get(url).header(
            reqwest::header::AUTHORIZATION,
            format!("Token {}", token.expose()),
        );
        let a = exchange("klarna", "banks", req, &AtomicI64::new(0), None).await?;
        if !a.status.is_success() {
            let said = a
                .body
                .get("error_messages")
                .and_then(Value::as_array)
                .and_then(|m| m.first())
                .and_then(Value::as_str)
                .map(excerpt)
                .unwrap_or_else(|| format!("HTTP {}", a.status));
            if a.status == StatusCode::UNAUTHORIZED {
                return Err(ConnectorError::InvalidCredentials(format!(
                    "Klarna refused the API token ({said}): check the token"
                )));
            }
            return Err(
                status_error("banks", a.status, &a.headers).unwrap_or_else(|| {
                    ConnectorError::Other(format!("Klarna did not list the banks: {said}"))
                }),
            );
        }
        let page: Vec<Bank> = a
            .body
            .get("banks")
            .cloned()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| malformed("banks", format!("not a list of banks: {e}")))?
            .unwrap_or_default();
        let total = a.body.pointer("/pagination/total").and_then(Value::as_u64);
        offset += page.len();
        let more = !page.is_empty() && total.is_some_and(|t| (offset as u64) < t);
        out.extend(page);
        if !more {
            return Ok(out);
        }
    }
}

// ---- what is kept between runs (sealed) ----

#[derive(Clone, Serialize, Deserialize)]
struct ConsentState {
    id: String,
    /// The newest token: the only one the service takes next.
    token: String,
    /// Scope (`accounts`, `balances`, `transactions`, …) → its URL.
    urls: BTreeMap<String, String>,
    valid_until: DateTime<Utc>,
    /// `valid`, `expired`, `revoked` or `invalid` (a token the service no longer takes).
    status: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct KnownAccount {
    /// The service's id now (it may change).
    id: String,
    iban: Option<String>,
    currency: String,
    name: Option<String>,
    kind: Option<String>,
    raw: Value,
}

#[derive(Clone, Default, Serialize, Deserialize)]
struct Saved {
    consent: Option<ConsentState>,
    /// Our key (the IBAN, else the id) → the account.
    #[serde(default)]
    accounts: BTreeMap<String, KnownAccount>,
    /// The day the account list was last read.
    #[serde(default)]
    accounts_day: Option<NaiveDate>,
    /// `call:account` → its allowance.
    #[serde(default)]
    budget: Allowances,
    #[serde(default)]
    skew_secs: i64,
}

/// A link under way: what the person is asked now. Lives only in the run.
#[derive(Clone, Debug)]
struct Link {
    session_url: String,
    consent_url: String,
    wizard_url: String,
    /// Where the bank's page sends the browser back.
    return_to: String,
    waiting: Option<Waiting>,
}

#[derive(Clone)]
enum Waiting {
    /// A form with a password element: everything else is filled in.
    Secret {
        next: String,
        key: String,
        form_identifier: String,
        filled: Vec<(String, String)>,
        secret_key: String,
    },
    /// The bank's page, by the redirect's id.
    Redirect { id: String },
}

/// Form answers hold what the person typed: never printed.
impl fmt::Debug for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Waiting::Secret { .. } => f.write_str("Secret"),
            Waiting::Redirect { id } => write!(f, "Redirect({id})"),
        }
    }
}

/// Klarna's wrapping: `data` on success, `{error: {code, message}}` on a refusal.
trait Wrapped {
    fn data(&self) -> &Value;
    fn error_code(&self) -> &str;
    fn said(&self) -> String;
}

impl Wrapped for Answer {
    fn data(&self) -> &Value {
        self.body.get("data").unwrap_or(&Value::Null)
    }

    fn error_code(&self) -> &str {
        self.body
            .pointer("/error/code")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    fn said(&self) -> String {
        let message = self
            .body
            .pointer("/error/message")
            .and_then(Value::as_str)
            .map(excerpt);
        match (message, self.error_code()) {
            (Some(m), "") => m,
            (Some(m), c) => format!("{c} ({m})"),
            (None, "") => format!("HTTP {}", self.status),
            (None, c) => c.to_owned(),
        }
    }
}

/// The consent calls the connector makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Accounts,
    Balances,
    Transactions,
}

impl Call {
    fn scope(self) -> &'static str {
        match self {
            Call::Accounts => "accounts",
            Call::Balances => "balances",
            Call::Transactions => "transactions",
        }
    }
}

/// The Klarna open-banking connector.
pub struct KlarnaConnector {
    base: Url,
    token: Option<Secret<String>>,
    username: String,
    settings: Settings,
    http: reqwest::Client,
    attendance: Attendance,
    saved: Saved,
    link: Option<Link>,
    skew: AtomicI64,
    /// The allowance the call being sent counts against, if any.
    counting: Option<String>,
}

impl fmt::Debug for KlarnaConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KlarnaConnector")
            .field("base_url", &self.base.as_str())
            .field("api_token", &self.token.as_ref().map(|_| "[redacted]"))
            .field("bank_code", &self.settings.bank_code)
            .field("country_code", &self.settings.country_code)
            .finish_non_exhaustive()
    }
}

impl KlarnaConnector {
    pub fn new(settings: &ConnectionSettings, credentials: Credentials) -> Result<Self, String> {
        Ok(KlarnaConnector {
            base: base_url(&settings.base_url)?,
            token: credentials.get("password").cloned(),
            username: settings.username.trim().to_owned(),
            settings: Settings::from_options(&settings.options)?,
            http: http_client()?,
            attendance: Attendance::default(),
            saved: Saved::default(),
            link: None,
            skew: AtomicI64::new(0),
            counting: None,
        })
    }

    fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::seconds(self.skew.load(Ordering::Relaxed))
    }

    fn attended(&self) -> bool {
        self.attendance.psu_present
    }

    fn psu(&self) -> Value {
        json!({"ip_address": self.settings.psu_ip, "user_agent": USER_AGENT})
    }

    /// A URL the service handed out, only on its own origin (the API token
    /// goes with every call).
    fn own_url(&self, raw: &str, what: &str) -> Result<Url, ConnectorError> {
        let url = self
            .base
            .join(raw)
            .map_err(|e| malformed(what, format!("{raw:?}: {e}")))?;
        if url.origin() != self.base.origin() {
            return Err(malformed(
                what,
                format!(
                    "the service sent an address on another host ({}); the API token is not sent there",
                    url.origin().ascii_serialization()
                ),
            ));
        }
        Ok(url)
    }

    async fn send(
        &mut self,
        method: Method,
        url: Url,
        what: &str,
        body: Option<Value>,
    ) -> Result<Answer, ConnectorError> {
        let token = self.token.as_ref().ok_or_else(|| {
            ConnectorError::InvalidCredentials("this connection has no Klarna API token".into())
        })?;
        let mut req = self
            .http
            .request(method, url)
            .header(
                reqwest::header::AUTHORIZATION,
                format!("Token {}", token.expose()),
            )
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            req = req.json(&body);
        }
        // The bank counts a call it served: so do we.
        let counted = self.counting.take().map(|key| Counted {
            budget: &mut self.saved.budget,
            key,
            remaining_header: None,
        });
        let answer = exchange("klarna", what, req, &self.skew, counted).await?;
        // A consent token in any answer is the one to use next.
        let next = answer
            .data()
            .get("consent_token")
            .or_else(|| answer.body.get("consent_token"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        if let (Some(next), Some(c)) = (next, self.saved.consent.as_mut()) {
            c.token = next;
        }
        Ok(answer)
    }

    /// A call outside the consent; a refusal as a typed error.
    async fn call(
        &mut self,
        method: Method,
        url: Url,
        what: &str,
        body: Option<Value>,
    ) -> Result<Value, ConnectorError> {
        let a = self.send(method, url, what, body).await?;
        if a.status.is_success() {
            return Ok(a.data().clone());
        }
        Err(self.refusal(what, &a))
    }

    fn refusal(&mut self, what: &str, a: &Answer) -> ConnectorError {
        let said = a.said();
        if a.status == StatusCode::UNAUTHORIZED {
            return ConnectorError::InvalidCredentials(format!(
                "Klarna refused the API token ({said}): check the token of this connection"
            ));
        }
        let code = a.error_code();
        let ended = match code {
            "CONSENT.EXPIRED" => Some("expired"),
            "CONSENT.REVOKED" => Some("revoked"),
            "CONSENT_TOKEN_USED" | "CONSENT_TOKEN_INVALID" | "CONSENT_NOT_FOUND" => Some("invalid"),
            c if c == "CONSENT" || (c.starts_with("CONSENT.") && c != "CONSENT.LIMIT_EXCEEDED") => {
                Some("invalid")
            }
            _ => None,
        };
        if let Some(status) = ended {
            let why = match self.consent_ended() {
                Some(why) => format!("{why} ({said})"),
                None => format!("Klarna no longer takes the consent ({said})"),
            };
            if let Some(c) = self.saved.consent.as_mut() {
                c.status = status.to_owned();
            }
            return relink_needed(&why);
        }
        if let Some(e) = status_error(what, a.status, &a.headers) {
            return e;
        }
        ConnectorError::Other(format!("{what}: Klarna refused the request: {said}"))
    }

    // ---- linking ----

    /// Start a new link: a session, an accounts flow, the bank selected;
    /// then on through the wizard until the person is needed.
    async fn start_link(&mut self, why: &str) -> Result<(), ConnectorError> {
        if !self.attended() {
            return Err(relink_needed(why));
        }
        let Some(return_to) = self
            .attendance
            .redirect_uri
            .clone()
            .or_else(|| self.settings.redirect_uri.clone())
        else {
            return Err(no_return_address(why));
        };
        tracing::info!(reason = why, "linking the bank through Klarna");
        let url = self.own_url("xs2a/v1/sessions", "session")?;
        let session = self
            .call(
                Method::PUT,
                url,
                "session",
                Some(json!({
                    "language": "en",
                    "selected_bank": {"bank_code": self.settings.bank_code, "country_code": self.settings.country_code},
                    "psu": self.psu(),
                    "consent_scope": {
                        "accounts": {}, "account_details": {}, "balances": {}, "transactions": {},
                        "lifetime": self.settings.consent_days,
                    },
                    "redirect_return_url": return_to,
                })),
            )
            .await?;
        let session_url = text_at(&session, "self")
            .or_else(|| text_at(&session, "session_id").map(|id| format!("xs2a/v1/sessions/{id}")))
            .ok_or_else(|| malformed("session", "no session id"))?;
        let flows_url = session
            .pointer("/flows/accounts")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{session_url}/flows/accounts"));
        let consent_url =
            text_at(&session, "consent").unwrap_or_else(|| format!("{session_url}/consent/get"));
        let url = self.own_url(&flows_url, "flow")?;
        let flow = self.call(Method::PUT, url, "flow", Some(json!({}))).await?;
        let flow_id = text_at(&flow, "flow_id").ok_or_else(|| malformed("flow", "no flow_id"))?;
        let wizard_url = format!("branded/xs2a/v1/wizard/{flow_id}");
        self.link = Some(Link {
            session_url,
            consent_url,
            wizard_url: wizard_url.clone(),
            return_to,
            waiting: None,
        });
        let url = self.own_url(&wizard_url, "bank selection")?;
        let state = self
            .call(
                Method::POST,
                url,
                "bank selection",
                Some(json!({"bank_code": self.settings.bank_code, "country_code": self.settings.country_code})),
            )
            .await?;
        self.follow(state).await
    }

    /// Go on through the wizard from `state` until the flow is finished
    /// (the consent is then fetched) or the person is needed.
    async fn follow(&mut self, mut state: Value) -> Result<(), ConnectorError> {
        for _ in 0..MAX_WIZARD_STEPS {
            let link = self
                .link
                .clone()
                .ok_or_else(|| ConnectorError::ScaFailed("no link is under way".into()))?;
            match state.get("state").and_then(Value::as_str).unwrap_or("") {
                "FINISHED" => return self.finish(&link).await,
                "ABORTED" | "EXCEPTION" => {
                    self.link = None;
                    let why = state
                        .pointer("/result/reason")
                        .and_then(Value::as_str)
                        .unwrap_or("the bank ended the flow");
                    return Err(ConnectorError::ScaFailed(format!(
                        "Klarna's flow was aborted: {}",
                        excerpt(why)
                    )));
                }
                "PROCESSING" => {
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    let url = self.own_url(&link.wizard_url, "wizard")?;
                    state = self.call(Method::GET, url, "wizard", None).await?;
                    continue;
                }
                "CONSUMER_INPUT_NEEDED" => {}
                other => {
                    return Err(malformed("wizard", format!("unknown flow state {other:?}")));
                }
            }
            let result = state.get("result").cloned().unwrap_or(Value::Null);
            if let Some(redirect) = result.get("redirect") {
                let url = text_at(redirect, "url")
                    .ok_or_else(|| malformed("wizard", "a redirect without a url"))?;
                // The bank's page: a web page, over TLS unless on this machine.
                let page = Url::parse(&url).map_err(|e| malformed("wizard", e.to_string()))?;
                let web = page.scheme() == "https"
                    || (page.scheme() == "http" && bankbridge_core::net::is_loopback(&page));
                if !web {
                    return Err(malformed(
                        "wizard",
                        format!("the bank's page {url:?} is not an https address"),
                    ));
                }
                let id = text_at(redirect, "id").unwrap_or_default();
                if let Some(l) = self.link.as_mut() {
                    l.waiting = Some(Waiting::Redirect { id });
                }
                return Err(ConnectorError::ScaRequired(ScaChallenge::Redirect { url }));
            }
            if let Some(form) = result.get("form") {
                state = match self.answer_form(&state, form)? {
                    Some((next, envelope)) => {
                        let url = self.own_url(&next, "form")?;
                        self.call(Method::POST, url, "form", Some(envelope)).await?
                    }
                    None => {
                        let prompt = self.secret_prompt(form);
                        return Err(ConnectorError::ScaRequired(ScaChallenge::Secret { prompt }));
                    }
                };
                continue;
            }
            if result.get("context").and_then(Value::as_str) == Some("bank_selection") {
                let url = self.own_url(&link.wizard_url, "bank selection")?;
                state = self
                    .call(
                        Method::POST,
                        url,
                        "bank selection",
                        Some(json!({"bank_code": self.settings.bank_code, "country_code": self.settings.country_code})),
                    )
                    .await?;
                continue;
            }
            return Err(malformed(
                "wizard",
                format!(
                    "the flow waits for something bankbridge cannot give: {}",
                    excerpt(&result.to_string())
                ),
            ));
        }
        Err(malformed(
            "wizard",
            format!("the flow did not finish within {MAX_WIZARD_STEPS} steps"),
        ))
    }

    /// Fill a wizard form: `Some((next, envelope))` when the connection can
    /// answer all of it; `None` when a password element needs the person
    /// (the rest is kept in the link, waiting for the secret).
    fn answer_form(
        &mut self,
        state: &Value,
        form: &Value,
    ) -> Result<Option<(String, Value)>, ConnectorError> {
        let next = text_at(state, "next").ok_or_else(|| malformed("form", "no next URL"))?;
        let key = state
            .pointer("/result/key")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed("form", "no form key"))?
            .to_owned();
        let form_identifier = text_at(form, "form_identifier")
            .ok_or_else(|| malformed("form", "no form_identifier"))?;
        let mut filled = Vec::new();
        let mut secret_key = None;
        for element in form
            .get("elements")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let el_key = text_at(element, "key")
                .ok_or_else(|| malformed("form", "an element without a key"))?;
            match element.get("type").and_then(Value::as_str).unwrap_or("") {
                "select" => {
                    let options: Vec<String> = element
                        .get("options")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|o| text_at(o, "value"))
                        .collect();
                    let chosen = match self.settings.choices.get(&el_key) {
                        Some(wanted) if options.contains(wanted) => wanted.clone(),
                        Some(wanted) => {
                            return Err(ConnectorError::Other(format!(
                                "the bank's form offers no {wanted:?} for {el_key}: it offers {}",
                                options.join(", ")
                            )));
                        }
                        None => options.first().cloned().ok_or_else(|| {
                            malformed("form", format!("a choice ({el_key}) without options"))
                        })?,
                    };
                    if options.len() > 1 && !self.settings.choices.contains_key(&el_key) {
                        tracing::info!(element = %el_key, %chosen, "the bank's form offers several options; taking the first (set the option {el_key}=… to choose)");
                    }
                    filled.push((el_key, chosen));
                }
                "password" => secret_key = Some(el_key),
                // Text: the login name at the bank.
                _ => filled.push((el_key, self.username.clone())),
            }
        }
        if let Some(secret_key) = secret_key {
            if let Some(l) = self.link.as_mut() {
                l.waiting = Some(Waiting::Secret {
                    next,
                    key,
                    form_identifier,
                    filled,
                    secret_key,
                });
            }
            return Ok(None);
        }
        Ok(Some((next, seal_form(&key, &form_identifier, &filled)?)))
    }

    fn secret_prompt(&self, form: &Value) -> String {
        let label = form
            .get("elements")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|e| e.get("type").and_then(Value::as_str) == Some("password"))
            .and_then(|e| text_at(e, "label"))
            .unwrap_or_else(|| "Password".to_owned());
        format!(
            "your {} at the bank (Klarna's form for bank {} asks for it)",
            excerpt(&label),
            self.settings.bank_code
        )
    }

    /// The flow is finished: fetch the consent, close the session.
    async fn finish(&mut self, link: &Link) -> Result<(), ConnectorError> {
        self.link = None;
        let url = self.own_url(&link.consent_url, "consent")?;
        let c = self
            .call(Method::POST, url, "consent", Some(json!({})))
            .await?;
        let id = text_at(&c, "consent_id").ok_or_else(|| malformed("consent", "no consent_id"))?;
        let token =
            text_at(&c, "consent_token").ok_or_else(|| malformed("consent", "no consent_token"))?;
        let urls: BTreeMap<String, String> = c
            .get("consents")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| v.as_str().map(|u| (k.clone(), u.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        for needed in ["accounts", "transactions"] {
            if !urls.contains_key(needed) {
                return Err(ConnectorError::Other(format!(
                    "Klarna's consent does not cover {needed}: the bank may not offer it through Klarna"
                )));
            }
        }
        let valid_until =
            self.now() + chrono::Duration::days(i64::from(self.settings.consent_days));
        tracing::info!(consent = %id, until = %valid_until.date_naive(), "a new consent from Klarna");
        self.saved.consent = Some(ConsentState {
            id,
            token,
            urls,
            valid_until,
            status: "valid".to_owned(),
        });
        // A new consent may know the accounts by new ids.
        self.saved.accounts_day = None;
        if let Ok(url) = self.own_url(&link.session_url, "session") {
            match self.send(Method::DELETE, url, "session end", None).await {
                Ok(a) if a.status.is_success() => {}
                Ok(a) => tracing::debug!(said = %a.said(), "Klarna did not close the session"),
                Err(e) => tracing::debug!(error = %e, "Klarna did not close the session"),
            }
        }
        Ok(())
    }

    /// The service's clock, from the `Date` of an answer that touches no
    /// consent (the sessions route without a method): the daily limit and
    /// the consent's end are reckoned on the service's day, and a run whose
    /// calls all wait would otherwise never hear it.
    async fn read_clock(&mut self) {
        let Ok(url) = self.own_url("xs2a/v1/sessions", "clock") else {
            return;
        };
        match self.http.head(url).send().await {
            Ok(resp) => {
                if let Some(skew) = clock_skew_secs(resp.headers()) {
                    self.skew.store(skew, Ordering::Relaxed);
                }
            }
            Err(e) => tracing::debug!(error = %e, "could not read Klarna's clock"),
        }
    }

    fn consent_ended(&self) -> Option<String> {
        let c = self.saved.consent.as_ref()?;
        if c.status != "valid" {
            return Some(format!("Klarna's consent is {}", c.status));
        }
        (c.valid_until <= self.now())
            .then(|| format!("Klarna's consent ended on {}", c.valid_until.date_naive()))
    }

    // ---- consent calls ----

    fn afford(&self, call: Call, account: &str) -> Result<(), ConnectorError> {
        afford(
            self.saved
                .budget
                .get(&Allowances::key(call.scope(), account)),
            self.settings.daily_limit,
            self.now(),
            self.attended(),
            account,
            call.scope(),
        )
    }

    /// One consent call: `first` ones count against the bank's limit
    /// (`account` names the allowance); later pages are free.
    async fn consent_call(
        &mut self,
        call: Call,
        url: &str,
        account: &str,
        mut body: Map<String, Value>,
        first: bool,
    ) -> Result<Value, ConnectorError> {
        if first {
            self.afford(call, account)?;
        }
        let token = self
            .saved
            .consent
            .as_ref()
            .map(|c| c.token.clone())
            .ok_or_else(|| relink_needed("the bank is not linked yet"))?;
        body.insert("consent_token".into(), json!(token));
        if self.attended() {
            body.insert("psu".into(), self.psu());
        }
        let what = call.scope();
        let url = self.own_url(url, what)?;
        let key = Allowances::key(what, account);
        self.counting = (first && !self.attended()).then(|| key.clone());
        let sent = self
            .send(Method::POST, url, what, Some(Value::Object(body)))
            .await;
        self.counting = None;
        let a = sent?;
        if a.status.is_success() {
            return Ok(a.data().get("result").cloned().unwrap_or(Value::Null));
        }
        if a.error_code() == "CONSENT.LIMIT_EXCEEDED" {
            let now = self.now();
            self.saved.budget.refused(key, now, None);
            tracing::warn!(%account, call = what, "Klarna refused a call over the daily limit");
            return Err(self.afford(call, account).err().unwrap_or_else(|| {
                ConnectorError::Deferred(format!("{account}: the bank's limit: {}", a.said()))
            }));
        }
        if a.error_code() == "ACCOUNT_NOT_FOUND" && call != Call::Accounts {
            // Klarna renumbered the account (its ids may change): read the
            // list again, and the engine retries the call with the new id.
            tracing::info!(%account, "Klarna no longer knows the account's id; reading the accounts again");
            self.saved.accounts_day = None;
            Box::pin(self.read_accounts()).await?;
            return Err(ConnectorError::SessionExpired);
        }
        let e = self.refusal(what, &a);
        // With the user there, an ended consent is linked again at once.
        if matches!(e, ConnectorError::NeedsUser(_)) && self.attended() {
            let why = self
                .consent_ended()
                .unwrap_or_else(|| "Klarna no longer takes the consent".to_owned());
            return match self.start_link(&why).await {
                Err(e) => Err(e),
                Ok(()) => Err(ConnectorError::SessionExpired),
            };
        }
        Err(e)
    }

    fn consent_url(&self, scope: &str) -> Result<String, ConnectorError> {
        self.saved
            .consent
            .as_ref()
            .and_then(|c| c.urls.get(scope).cloned())
            .ok_or_else(|| {
                ConnectorError::Other(format!("Klarna's consent does not cover {scope}"))
            })
    }

    /// Read the account list into `saved.accounts`.
    async fn read_accounts(&mut self) -> Result<(), ConnectorError> {
        let url = self.consent_url("accounts")?;
        let result = self
            .consent_call(Call::Accounts, &url, "consent", Map::new(), true)
            .await?;
        let list = result
            .get("accounts")
            .and_then(Value::as_array)
            .ok_or_else(|| malformed("accounts", "no accounts list"))?;
        let mut accounts = BTreeMap::new();
        for a in list {
            let o = a
                .as_object()
                .ok_or_else(|| malformed("accounts", "an account is not an object"))?;
            let known = known_account(o)?;
            let key = known.iban.clone().unwrap_or_else(|| known.id.clone());
            accounts.insert(key, known);
        }
        self.saved.accounts = accounts;
        self.saved.accounts_day = Some(self.now().date_naive());
        let keys: Vec<String> = self.saved.accounts.keys().cloned().collect();
        let mut live: std::collections::HashSet<&str> = keys.iter().map(String::as_str).collect();
        live.insert("consent");
        let today = self.now().date_naive();
        self.saved.budget.keep_live(&live, today);
        Ok(())
    }
}

fn text_at(v: &Value, key: &str) -> Option<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// A form answer, sealed for the service whose key the form came with.
fn seal_form(
    key: &str,
    form_identifier: &str,
    filled: &[(String, String)],
) -> Result<Value, ConnectorError> {
    let data: Vec<Value> = filled
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect();
    let plain = zeroize::Zeroizing::new(
        json!({"form_identifier": form_identifier, "data": data}).to_string(),
    );
    let sealed = bankbridge_core::envelope::seal(key, plain.as_bytes())
        .map_err(|e| malformed("form", e.to_string()))?;
    serde_json::to_value(sealed).map_err(|e| malformed("form", e.to_string()))
}

/// What a Klarna account object tells.
fn known_account(o: &Map<String, Value>) -> Result<KnownAccount, ConnectorError> {
    let id = text(o, "id")
        .ok_or_else(|| malformed("accounts", "an account without an id"))?
        .to_owned();
    let iban = text(o, "iban")
        .map(|s| s.replace(' ', "").to_ascii_uppercase())
        .filter(|s| !s.is_empty());
    // Klarna carries the currency in amounts; an account without a balance
    // is taken to be in euros (the service's home currency).
    let currency = o
        .get("balance")
        .and_then(|b| b.get("currency"))
        .and_then(Value::as_str)
        .unwrap_or("EUR")
        .to_owned();
    Ok(KnownAccount {
        id,
        iban,
        currency,
        name: text(o, "alias").map(str::to_owned),
        kind: text(o, "account_type").map(str::to_owned),
        raw: Value::Object(o.clone()),
    })
}

/// `{amount, currency}` in minor units as a decimal.
fn money(v: Option<&Value>, what: &str) -> Result<(Decimal, Currency), ConnectorError> {
    let v = v.ok_or_else(|| malformed(what, "no amount"))?;
    let currency: Currency = v
        .get("currency")
        .and_then(Value::as_str)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| malformed(what, "no readable currency"))?;
    let minor = v
        .get("amount")
        .and_then(|a| {
            a.as_i64()
                .or_else(|| a.as_str().and_then(|s| s.trim().parse().ok()))
        })
        .ok_or_else(|| {
            malformed(
                what,
                format!("no amount in minor units in {}", excerpt(&v.to_string())),
            )
        })?;
    Ok((Decimal::new(minor, currency.minor_units()), currency))
}

/// One Klarna transaction in our model; `None` for rows that never
/// happened (cancelled, failed).
pub fn map_transaction(
    t: &Value,
    today: NaiveDate,
) -> Result<Option<FetchedTransaction>, ConnectorError> {
    let o = t
        .as_object()
        .ok_or_else(|| malformed("transactions", "a transaction is not an object"))?;
    let status = match text(o, "state").unwrap_or("PROCESSED") {
        "PROCESSED" => TxStatus::Booked,
        "PENDING" => TxStatus::Pending,
        // CANCELED, FAILED
        _ => return Ok(None),
    };
    let (unsigned, currency) = money(o.get("amount"), "transactions")?;
    let amount = match text(o, "type") {
        Some("DEBIT") => -unsigned.abs(),
        Some("CREDIT") => unsigned.abs(),
        _ => unsigned,
    };
    let value_date = date(o.get("value_date"));
    let day = date(o.get("date"));
    let booking_date = match (status, date(o.get("booking_date"))) {
        (_, Some(d)) => d,
        (TxStatus::Pending, None) => day.or(value_date).unwrap_or(today),
        (_, None) => day
            .or(value_date)
            .ok_or_else(|| malformed("transactions", "a transaction without a date"))?,
    };
    let party = o.get("counter_party");
    let counterparty_name = party
        .and_then(|p| p.get("holder_name"))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let counterparty_iban = party
        .and_then(|p| p.get("iban"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let remittance_info = text(o, "reference")
        .or_else(|| {
            o.get("bank_references")
                .and_then(|r| r.get("unstructured"))
                .and_then(Value::as_str)
        })
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let method = text(o, "method").map(str::to_owned);
    let raw_label = remittance_info
        .clone()
        .or_else(|| counterparty_name.clone())
        .or_else(|| method.clone())
        .unwrap_or_default();
    let original = o
        .get("original_amount")
        .and_then(|v| money(Some(v), "transactions").ok());
    Ok(Some(FetchedTransaction {
        provider_id: text(o, "transaction_id").map(str::to_owned),
        status,
        booking_date,
        value_date,
        transaction_date: day,
        amount,
        currency,
        original_amount: original.map(|(a, _)| a),
        original_currency: original.map(|(_, c)| c),
        label: clean_label(&raw_label),
        raw_label,
        counterparty_name,
        counterparty_iban,
        remittance_info,
        bank_code: method,
        running_balance: None,
        raw: t.clone(),
    }))
}

/// `balance` (booked) and `available`, as of `today`.
fn map_balances(v: &Value, today: NaiveDate) -> Vec<Balance> {
    [
        ("balance", BalanceKind::ClosingBooked),
        ("available", BalanceKind::Available),
    ]
    .iter()
    .filter_map(|(field, kind)| {
        let (amount, currency) = money(v.get(*field), "balances").ok()?;
        Some(Balance {
            kind: *kind,
            amount,
            currency,
            reference_date: today,
        })
    })
    .collect()
}

#[async_trait]
impl Connector for KlarnaConnector {
    fn name(&self) -> &'static str {
        "klarna"
    }

    fn limits(&self) -> ConnectorLimits {
        ConnectorLimits {
            max_window_days: None,
            max_history_days: Some(self.settings.history_days),
            sca_after_days: None,
            daily_request_budget: Some(self.settings.daily_limit),
        }
    }

    fn today(&self) -> NaiveDate {
        self.now().date_naive()
    }

    fn attend(&mut self, attendance: &Attendance) {
        self.attendance = attendance.clone();
    }

    fn consent(&self) -> Option<ConsentInfo> {
        let c = self.saved.consent.as_ref()?;
        let status = if c.status == "valid" && c.valid_until <= self.now() {
            "expired".to_owned()
        } else {
            c.status.clone()
        };
        let end = c.valid_until.date_naive();
        Some(ConsentInfo {
            status,
            valid_until: Some(end.pred_opt().unwrap_or(end)),
        })
    }

    fn session_state(&self) -> Option<Secret<String>> {
        let mut saved = self.saved.clone();
        saved.skew_secs = self.skew.load(Ordering::Relaxed);
        serde_json::to_string(&saved).ok().map(Secret::new)
    }

    fn restore_session(&mut self, state: Secret<String>) {
        match serde_json::from_str::<Saved>(state.expose()) {
            Ok(saved) => {
                self.skew.store(saved.skew_secs, Ordering::Relaxed);
                self.saved = saved;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the kept Klarna consent does not read; starting afresh")
            }
        }
    }

    async fn login(&mut self) -> Result<(), ConnectorError> {
        if let Some(link) = &self.link {
            // A link under way, the person's last answer taken: the
            // wizard's next question.
            let url = self.own_url(&link.wizard_url.clone(), "wizard")?;
            let state = self.call(Method::GET, url, "wizard", None).await?;
            return self.follow(state).await;
        }
        if self.saved.consent.is_none() {
            return self.start_link("the bank is not linked yet").await;
        }
        self.read_clock().await;
        match self.consent_ended() {
            Some(why) => self.start_link(&why).await,
            None => Ok(()),
        }
    }

    async fn resume_sca(&mut self, answer: &ScaAnswer) -> Result<ScaProgress, ConnectorError> {
        let Some(link) = self.link.clone() else {
            return Err(ConnectorError::ScaFailed("no link is under way".into()));
        };
        let Some(waiting) = &link.waiting else {
            return Err(ConnectorError::ScaFailed("nothing was asked".into()));
        };
        let state = match (waiting, answer) {
            (_, ScaAnswer::Declined) => {
                self.link = None;
                return Err(ConnectorError::ScaFailed("declined".into()));
            }
            (
                Waiting::Secret {
                    next,
                    key,
                    form_identifier,
                    filled,
                    secret_key,
                },
                ScaAnswer::Code(secret),
            ) => {
                let mut filled = filled.clone();
                filled.push((secret_key.clone(), secret.expose().clone()));
                let sealed = seal_form(key, form_identifier, &filled);
                // The typed secret lives only in the sealed envelope.
                if let Some((_, typed)) = filled.last_mut() {
                    zeroize::Zeroize::zeroize(typed);
                }
                let envelope = sealed?;
                let url = self.own_url(next, "form")?;
                let a = self.send(Method::POST, url, "form", Some(envelope)).await?;
                if !a.status.is_success() {
                    self.link = None;
                    return Err(ConnectorError::ScaFailed(format!(
                        "the bank did not take the login: {}",
                        a.said()
                    )));
                }
                a.data().clone()
            }
            (Waiting::Redirect { id }, ScaAnswer::Returned(query)) => {
                let return_to = &link.return_to;
                let sep = if return_to.contains('?') { '&' } else { '?' };
                let return_url = format!("{return_to}{sep}{}", query.expose());
                let url = self.own_url(&link.wizard_url, "redirect")?;
                let a = self
                    .send(
                        Method::POST,
                        url,
                        "redirect",
                        Some(json!({"redirect_id": id, "return_url": return_url})),
                    )
                    .await?;
                if !a.status.is_success() {
                    self.link = None;
                    return Err(ConnectorError::ScaFailed(format!(
                        "the bank did not authorise the access: {}",
                        a.said()
                    )));
                }
                a.data().clone()
            }
            (Waiting::Redirect { .. }, _) => {
                return Err(ConnectorError::ScaFailed(
                    "the bank's answer (in the address the browser came back to) did not reach \
                     bankbridge: sync again and let the browser return to bankbridge, or paste that address"
                        .into(),
                ));
            }
            (Waiting::Secret { .. }, _) => {
                self.link = None;
                return Err(ConnectorError::ScaFailed(
                    "the bank's form needs what you type at your bank; nothing was typed".into(),
                ));
            }
        };
        match self.follow(state).await {
            Ok(()) => Ok(ScaProgress::Done),
            // The next question (the bank's page after the login): the
            // engine asks again when it retries the login.
            Err(ConnectorError::ScaRequired(_)) => Ok(ScaProgress::Done),
            Err(e) => Err(e),
        }
    }

    async fn accounts(&mut self) -> Result<Vec<FetchedAccount>, ConnectorError> {
        let today = self.now().date_naive();
        let stale = self.saved.accounts.is_empty() || self.saved.accounts_day != Some(today);
        if stale {
            match self.read_accounts().await {
                Ok(()) => {}
                // Yesterday's list serves while the budget waits.
                Err(e) if e.is_deferral() && !self.saved.accounts.is_empty() => {
                    tracing::info!(reason = %e, "the account list is not read again today");
                }
                Err(e) => return Err(e),
            }
        }
        self.saved
            .accounts
            .iter()
            .map(|(key, k)| {
                Ok(FetchedAccount {
                    provider_id: key.clone(),
                    iban: match &k.iban {
                        Some(i) => Some(
                            Iban::parse(i)
                                .map_err(|e| malformed("accounts", format!("IBAN {i:?}: {e}")))?,
                        ),
                        None => None,
                    },
                    currency: k
                        .currency
                        .parse()
                        .map_err(|_| malformed("accounts", format!("currency {:?}", k.currency)))?,
                    name: k.name.clone(),
                    kind: k.kind.clone(),
                    raw: k.raw.clone(),
                })
            })
            .collect()
    }

    async fn window(
        &mut self,
        account: &FetchedAccount,
        window: DateWindow,
    ) -> Result<WindowPage, ConnectorError> {
        let label = account.provider_id.clone();
        let id = self
            .saved
            .accounts
            .get(&label)
            .map(|k| k.id.clone())
            .ok_or_else(|| {
                relink_needed(&format!(
                    "account {label} is not in Klarna's consent any more"
                ))
            })?;
        let today = self.today();
        let mut page = WindowPage::default();
        let url = self.consent_url("transactions")?;
        let mut body = Map::new();
        body.insert("account_id".into(), json!(id));
        body.insert("from_date".into(), json!(window.from.to_string()));
        body.insert("to_date".into(), json!(window.to.to_string()));
        body.insert("preferred_pagination_size".into(), json!(PAGE_SIZE));
        let mut result = self
            .consent_call(Call::Transactions, &url, &label, body, true)
            .await?;
        for _ in 0..MAX_PAGES {
            let list = result
                .get("transactions")
                .and_then(Value::as_array)
                .ok_or_else(|| malformed("transactions", "no transactions list"))?;
            for t in list {
                if let Some(mapped) = map_transaction(t, today)?
                    && window.contains(mapped.booking_date)
                {
                    page.transactions.push(mapped);
                }
            }
            let next = result.pointer("/pagination/next/offset").and_then(|o| {
                o.as_str()
                    .map(str::to_owned)
                    .or_else(|| o.as_u64().map(|n| n.to_string()))
            });
            let Some(offset) = next else {
                if window.to >= today
                    && self
                        .saved
                        .consent
                        .as_ref()
                        .is_some_and(|c| c.urls.contains_key("balances"))
                {
                    let url = self.consent_url("balances")?;
                    let mut body = Map::new();
                    body.insert("account_id".into(), json!(id));
                    match self
                        .consent_call(Call::Balances, &url, &label, body, true)
                        .await
                    {
                        Ok(v) => page.balances = map_balances(&v, today),
                        Err(e) if e.is_deferral() => {
                            tracing::info!(account = %label, reason = %e, "balances skipped this time");
                        }
                        Err(e) => return Err(e),
                    }
                }
                return Ok(page);
            };
            let list_url = result
                .pointer("/pagination/url")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{}/list", url.trim_end_matches("/get")));
            let mut body = Map::new();
            body.insert("offset".into(), json!(offset));
            result = self
                .consent_call(Call::Transactions, &list_url, &label, body, false)
                .await?;
        }
        Err(malformed(
            "transactions",
            format!("more than {MAX_PAGES} pages for one window"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_minor_units_signed_by_type() {
        let today = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        let t = json!({"transaction_id": "a1", "reference": "Card payment Shop",
                       "counter_party": {"holder_name": "Shop", "iban": "DE02100100109307118603"},
                       "date": "2026-02-26", "value_date": "2026-02-26", "booking_date": "2026-02-27",
                       "state": "PROCESSED", "type": "DEBIT", "method": "CARD",
                       "amount": {"amount": 1230, "currency": "EUR"}});
        let m = map_transaction(&t, today).unwrap().unwrap();
        assert_eq!(m.amount.to_string(), "-12.30");
        assert_eq!(m.booking_date.to_string(), "2026-02-27");
        assert_eq!(m.counterparty_name.as_deref(), Some("Shop"));
        assert_eq!(m.provider_id.as_deref(), Some("a1"));
        let yen = json!({"state": "PENDING", "type": "CREDIT", "date": "2026-02-28",
                         "amount": {"amount": 1500, "currency": "JPY"}});
        let m = map_transaction(&yen, today).unwrap().unwrap();
        assert_eq!(
            (m.status, m.amount.to_string().as_str()),
            (TxStatus::Pending, "1500")
        );
        assert_eq!(m.booking_date.to_string(), "2026-02-28");
        let failed = json!({"state": "FAILED", "type": "DEBIT", "date": "2026-02-28",
                            "amount": {"amount": 5, "currency": "EUR"}});
        assert!(map_transaction(&failed, today).unwrap().is_none());
        let fractional = json!({"state": "PROCESSED", "date": "2026-02-28",
                                "amount": {"amount": 12.5, "currency": "EUR"}});
        assert!(map_transaction(&fractional, today).is_err());
    }

    #[test]
    fn settings_need_the_bank_and_keep_wizard_choices() {
        let mut o = BTreeMap::new();
        assert!(
            Settings::from_options(&o)
                .unwrap_err()
                .contains("bank_code")
        );
        o.insert("bank_code".into(), "00000".into());
        o.insert("country_code".into(), "de".into());
        o.insert("interface".into(), "de_testbank_bias".into());
        let s = Settings::from_options(&o).unwrap();
        assert_eq!(
            (s.country_code.as_str(), s.consent_days, s.daily_limit),
            ("DE", 90, 4)
        );
        assert_eq!(
            s.choices.get("interface").map(String::as_str),
            Some("de_testbank_bias")
        );
        o.insert("consent_days".into(), "120".into());
        assert!(
            Settings::from_options(&o)
                .unwrap_err()
                .contains("consent_days")
        );
    }

    #[test]
    fn the_api_token_never_shows_in_debug() {
        let mut settings = ConnectionSettings::new(DEFAULT_BASE_URL, "login");
        settings.options.insert("bank_code".into(), "00000".into());
        settings.options.insert("country_code".into(), "DE".into());
        let c = KlarnaConnector::new(
            &settings,
            Credentials::with_password(Secret::new("tok-123456".into())),
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("tok-123456"), "{shown}");
        assert!(shown.contains("[redacted]"));
    }
}
