//! GoCardless Bank Account Data (API v2, once Nordigen): thousands of
//! European banks through one aggregator.
//!
//! The connection's username is the user secret's `secret_id`, its password
//! the `secret_key`; they buy a token pair (`POST token/new/`), whose access
//! token is refreshed before it expires (`POST token/refresh/`) and bought
//! anew once the refresh token is near its end. The bank is the option
//! `institution_id`.
//!
//! **Linking.** A person links the bank once per end-user agreement (EUA):
//! the connector creates the agreement (`max_historical_days`,
//! `access_valid_for_days`, every scope) and a requisition that names it,
//! with the run's redirect address and a fresh reference, and raises the
//! requisition's `link` as a redirect challenge; once the browser is back it
//! polls the requisition until `LN` (linked) or `RJ`. An unfinished link is
//! reused when it returns to the same address and deleted otherwise, and an
//! agreement nobody accepted yet is reused: failed attempts waste nothing.
//! Without a person (a scheduled run) a link that is needed stops the sync
//! in `needs_user` with the instruction.
//!
//! **Accounts** are keyed by IBAN (the masked PAN for cards), not by
//! GoCardless's account id, which changes on every new link: a re-linked
//! connection continues the same accounts' history. Their details (currency,
//! name) are kept, so a re-link needs no details call.
//!
//! **The daily limit.** The service allows 4 successful calls a day per
//! account and scope (details, balances, transactions), reported in the
//! `X-RateLimit-Account-Success-*` headers. The connector counts calls per
//! account id, scope and service day (UTC, on the service's clock from its
//! `Date` header), believes the headers over its count, and paces an
//! unattended day: one call per scope in each quarter of the day, so hourly
//! syncs spread the four calls instead of spending them by breakfast. A call
//! the budget cannot afford is not made: the account waits
//! ([`ConnectorError::Deferred`], with when). A 429 is waited out until the
//! reset the service named.
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bankbridge_core::{
    Attendance, ConnectionSettings, Connector, ConnectorError, ConnectorLimits, ConsentInfo,
    Credentials, Currency, DateWindow, FetchedAccount, Iban, ScaAnswer, ScaChallenge, ScaProgress,
    Secret, TransientKind, TxStatus, WindowPage,
};
use chrono::{DateTime, NaiveDate, Utc};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use url::Url;

use crate::aggregator::{
    Answer, Counted, afford, base_url, exchange, http_client, no_return_address, number_option,
    redirect_option, relink_needed,
};
use crate::budget::Allowances;
use crate::common::{excerpt, malformed, status_error, text, transient};
use crate::xs2a::{map_balances, map_transaction};

/// The service's address.
pub const DEFAULT_BASE_URL: &str = "https://bankaccountdata.gocardless.com/api/v2";
/// Successful calls a day per account and scope.
pub const DAILY_LIMIT: u32 = 4;
/// The API's default `max_historical_days` and `access_valid_for_days`.
pub const DEFAULT_HISTORY_DAYS: u32 = 90;
pub const DEFAULT_ACCESS_DAYS: u32 = 90;
/// An access token this close to its end is refreshed first.
const TOKEN_MARGIN_SECS: i64 = 300;

/// Option names read from [`ConnectionSettings::options`].
pub mod option {
    /// The bank, as GoCardless names it (`SANDBOXFINANCE_SFIN0000`).
    pub const INSTITUTION_ID: &str = "institution_id";
    /// `max_historical_days` asked for (the bank's `transaction_total_days` at most).
    pub const HISTORY_DAYS: &str = "history_days";
    /// `access_valid_for_days` asked for (the bank's `max_access_valid_for_days` at most).
    pub const ACCESS_DAYS: &str = "access_days";
    /// Where the bank sends the browser back when the run offers no address.
    pub const REDIRECT_URI: &str = "redirect_uri";
    /// Successful calls a day per account and scope (default 4).
    pub const DAILY_LIMIT: &str = "daily_limit";
}

/// One connection's settings, read from its options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub institution_id: String,
    pub history_days: u32,
    pub access_days: u32,
    pub redirect_uri: Option<String>,
    pub daily_limit: u32,
}

impl Settings {
    pub fn from_options(options: &BTreeMap<String, String>) -> Result<Settings, String> {
        let number = |key: &str, default: u32, max: u32| number_option(options, key, default, max);
        let institution_id = options
            .get(option::INSTITUTION_ID)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                format!(
                    "{} is needed: the bank's id at GoCardless (`bankbridge connection add --connector gocardless --country CC --institution NAME` finds it)",
                    option::INSTITUTION_ID
                )
            })?;
        let redirect_uri = redirect_option(options, option::REDIRECT_URI)?;
        Ok(Settings {
            institution_id,
            history_days: number(option::HISTORY_DAYS, DEFAULT_HISTORY_DAYS, 730)?,
            access_days: number(option::ACCESS_DAYS, DEFAULT_ACCESS_DAYS, 180)?,
            redirect_uri,
            daily_limit: number(option::DAILY_LIMIT, DAILY_LIMIT, 1000)?,
        })
    }
}

/// A bank GoCardless reaches, as its institution list says.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct Institution {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub bic: Option<String>,
    /// Days of history the bank gives (a string in the API).
    #[serde(default, deserialize_with = "lenient_u32")]
    pub transaction_total_days: Option<u32>,
    #[serde(default, deserialize_with = "lenient_u32")]
    pub max_access_valid_for_days: Option<u32>,
    #[serde(default)]
    pub countries: Vec<String>,
}

/// A number the API sends as a string (`"730"`) or as a number.
fn lenient_u32<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) => s.trim().parse().ok(),
        Some(Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        _ => None,
    })
}

/// The institutions of `country` (ISO 3166 two letters) whose id or name
/// matches `wanted`: the exact id alone when one has it, else every name
/// that contains it (case aside).
pub fn pick_institution<'a>(all: &'a [Institution], wanted: &str) -> Vec<&'a Institution> {
    let w = wanted.trim();
    if let Some(exact) = all.iter().find(|i| i.id.eq_ignore_ascii_case(w)) {
        return vec![exact];
    }
    let lower = w.to_lowercase();
    let exact_name: Vec<_> = all
        .iter()
        .filter(|i| i.name.to_lowercase() == lower)
        .collect();
    if !exact_name.is_empty() {
        return exact_name;
    }
    all.iter()
        .filter(|i| i.name.to_lowercase().contains(&lower))
        .collect()
}

// ---- what is kept between runs ----

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Tokens {
    access: Option<String>,
    access_until: Option<DateTime<Utc>>,
    refresh: Option<String>,
    refresh_until: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct AgreementState {
    id: String,
    institution_id: String,
    /// When the user accepted it (on linking); the access runs from there.
    accepted: Option<DateTime<Utc>>,
    access_days: u32,
    history_days: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct RequisitionState {
    id: String,
    status: String,
    link: String,
    redirect: String,
    #[serde(default)]
    accounts: Vec<String>,
}

/// What the connector learnt of one GoCardless account id.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct KnownAccount {
    /// Our key: the IBAN, else the masked PAN, else the BBAN, else the id.
    key: String,
    iban: Option<String>,
    currency: String,
    name: Option<String>,
    kind: Option<String>,
    raw: Value,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Saved {
    #[serde(default)]
    tokens: Tokens,
    agreement: Option<AgreementState>,
    requisition: Option<RequisitionState>,
    /// GoCardless account id → what we know of it.
    #[serde(default)]
    accounts: BTreeMap<String, KnownAccount>,
    /// `scope:account id` → its allowance.
    #[serde(default)]
    budget: Allowances,
    /// Seconds the service's clock was ahead of ours at the last answer:
    /// token lifetimes and the budget's day are on its clock.
    #[serde(default)]
    skew_secs: i64,
}

/// An answer of the API.
/// The account-data scopes, each with its own daily limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    Details,
    Balances,
    Transactions,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Scope::Details => "details",
            Scope::Balances => "balances",
            Scope::Transactions => "transactions",
        }
    }
}

/// The GoCardless Bank Account Data connector.
pub struct GoCardlessConnector {
    base: Url,
    secret_id: String,
    secret_key: Option<Secret<String>>,
    settings: Settings,
    http: reqwest::Client,
    attendance: Attendance,
    saved: Saved,
    skew: AtomicI64,
    /// The allowance the call being sent counts against, if any.
    counting: Option<String>,
}

impl fmt::Debug for GoCardlessConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoCardlessConnector")
            .field("base_url", &self.base.as_str())
            .field("secret_id", &self.secret_id)
            .field(
                "secret_key",
                &self.secret_key.as_ref().map(|_| "[redacted]"),
            )
            .field("institution_id", &self.settings.institution_id)
            .finish_non_exhaustive()
    }
}

/// The institutions of `country`, for picking the bank when a connection
/// is added (a token is bought for the purpose).
pub async fn institutions(
    base: &str,
    secret_id: &str,
    secret_key: &Secret<String>,
    country: &str,
) -> Result<Vec<Institution>, ConnectorError> {
    let mut options = BTreeMap::new();
    options.insert(option::INSTITUTION_ID.to_owned(), "-".to_owned());
    let mut settings = ConnectionSettings::new(base, secret_id);
    settings.options = options;
    let mut c = GoCardlessConnector::new(&settings, Credentials::with_password(secret_key.clone()))
        .map_err(ConnectorError::Other)?;
    c.ensure_token().await?;
    let country = country.trim().to_ascii_uppercase();
    let answer = c
        .send(
            Method::GET,
            &format!("institutions/?country={country}"),
            "institutions",
            None,
        )
        .await?;
    serde_json::from_value(answer.body)
        .map_err(|e| malformed("institutions", format!("not a list of institutions: {e}")))
}

impl GoCardlessConnector {
    pub fn new(settings: &ConnectionSettings, credentials: Credentials) -> Result<Self, String> {
        Ok(GoCardlessConnector {
            base: base_url(&settings.base_url)?,
            secret_id: settings.username.trim().to_owned(),
            secret_key: credentials.get("password").cloned(),
            settings: Settings::from_options(&settings.options)?,
            http: http_client()?,
            attendance: Attendance::default(),
            saved: Saved::default(),
            skew: AtomicI64::new(0),
            counting: None,
        })
    }

    /// The service's clock, from its `Date` headers.
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::seconds(self.skew.load(Ordering::Relaxed))
    }

    fn url(&self, path: &str) -> Result<Url, ConnectorError> {
        self.base
            .join(path)
            .map_err(|e| malformed("request", format!("{path:?}: {e}")))
    }

    /// One request with the access token (none for the token calls).
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        what: &str,
        body: Option<Value>,
    ) -> Result<Answer, ConnectorError> {
        let url = self.url(path)?;
        let mut req = self
            .http
            .request(method, url)
            .header(reqwest::header::ACCEPT, "application/json");
        if !path.starts_with("token/")
            && let Some(access) = &self.saved.tokens.access
        {
            req = req.bearer_auth(access);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        // The service counts a call it served: so do we.
        let counted = self.counting.take().map(|key| Counted {
            budget: &mut self.saved.budget,
            key,
            remaining_header: Some("x-ratelimit-account-success-remaining"),
        });
        exchange("gocardless", what, req, &self.skew, counted).await
    }

    /// The service's own words on a refusal: `summary (detail)`.
    fn said(a: &Answer) -> String {
        let field = |k: &str| a.body.get(k).and_then(Value::as_str).map(excerpt);
        match (field("summary"), field("detail")) {
            (Some(s), Some(d)) if s != d => format!("{s} ({d})"),
            (Some(s), _) => s,
            (None, Some(d)) => d,
            (None, None) => format!("HTTP {}", a.status),
        }
    }

    /// A refused call that is not about the account's limit or the link.
    fn refusal(&mut self, what: &str, a: &Answer) -> ConnectorError {
        if let Some(e) = status_error(what, a.status, &a.headers) {
            return e;
        }
        let said = Self::said(a);
        match a.status {
            StatusCode::UNAUTHORIZED => {
                // The access token lapsed (or was revoked): buy another.
                self.saved.tokens.access = None;
                ConnectorError::SessionExpired
            }
            StatusCode::CONFLICT => transient(
                &format!("{what} ({said})"),
                TransientKind::Server(409),
                Some(Duration::from_secs(5)),
            ),
            _ => ConnectorError::Other(format!("{what}: GoCardless refused the request: {said}")),
        }
    }

    /// A usable access token: kept, refreshed, or bought with the secret.
    async fn ensure_token(&mut self) -> Result<(), ConnectorError> {
        let now = self.now();
        let t = &self.saved.tokens;
        let fresh = |until: Option<DateTime<Utc>>, margin: i64| {
            until.is_some_and(|u| u - chrono::Duration::seconds(margin) > now)
        };
        if t.access.is_some() && fresh(t.access_until, TOKEN_MARGIN_SECS) {
            return Ok(());
        }
        if let Some(refresh) = t.refresh.clone()
            && fresh(t.refresh_until, 3600)
        {
            let a = self
                .send(
                    Method::POST,
                    "token/refresh/",
                    "token refresh",
                    Some(json!({"refresh": refresh})),
                )
                .await?;
            if a.status.is_success()
                && let Some(access) = a.body.get("access").and_then(Value::as_str)
            {
                let secs = a
                    .body
                    .get("access_expires")
                    .and_then(Value::as_i64)
                    .unwrap_or(86_400);
                self.saved.tokens.access = Some(access.to_owned());
                self.saved.tokens.access_until = Some(self.now() + chrono::Duration::seconds(secs));
                return Ok(());
            }
            if let Some(e) = status_error("token refresh", a.status, &a.headers) {
                return Err(e);
            }
            tracing::info!(said = %Self::said(&a), "the refresh token was refused; buying a new pair");
        }
        let key = self.secret_key.clone().ok_or_else(|| {
            ConnectorError::InvalidCredentials("this connection has no secret_key".into())
        })?;
        let a = self
            .send(
                Method::POST,
                "token/new/",
                "token",
                Some(json!({"secret_id": self.secret_id, "secret_key": key.expose()})),
            )
            .await?;
        if a.status == StatusCode::UNAUTHORIZED || a.status == StatusCode::FORBIDDEN {
            return Err(ConnectorError::InvalidCredentials(format!(
                "GoCardless refused the secret id and key: {}",
                Self::said(&a)
            )));
        }
        if !a.status.is_success() {
            return Err(self.refusal("token", &a));
        }
        let get = |k: &str| a.body.get(k).and_then(Value::as_str).map(str::to_owned);
        let secs = |k: &str, d: i64| a.body.get(k).and_then(Value::as_i64).unwrap_or(d);
        let now = self.now();
        self.saved.tokens = Tokens {
            access: Some(get("access").ok_or_else(|| malformed("token", "no access token"))?),
            access_until: Some(now + chrono::Duration::seconds(secs("access_expires", 86_400))),
            refresh: get("refresh"),
            refresh_until: Some(
                now + chrono::Duration::seconds(secs("refresh_expires", 2_592_000)),
            ),
        };
        Ok(())
    }

    /// One call of the API outside the account data, token in hand.
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        what: &str,
        body: Option<Value>,
    ) -> Result<Answer, ConnectorError> {
        let a = self.authorised(method, path, what, body).await?;
        if a.status.is_success() || a.status == StatusCode::NOT_FOUND {
            return Ok(a);
        }
        Err(self.refusal(what, &a))
    }

    /// A call with a token the service takes: a 401 about the token (one
    /// that lapsed while this process thought the service's clock was
    /// ours) buys a fresh one and asks once more.
    async fn authorised(
        &mut self,
        method: Method,
        path: &str,
        what: &str,
        body: Option<Value>,
    ) -> Result<Answer, ConnectorError> {
        self.ensure_token().await?;
        let a = self.send(method.clone(), path, what, body.clone()).await?;
        if a.status != StatusCode::UNAUTHORIZED || Self::about_access(&Self::said(&a)) {
            return Ok(a);
        }
        tracing::debug!(said = %Self::said(&a), "the access token was refused; renewing it");
        self.saved.tokens.access = None;
        self.ensure_token().await?;
        self.send(method, path, what, body).await
    }

    /// A refusal about the end-user agreement or the link, not the token.
    fn about_access(said: &str) -> bool {
        [
            "EUA",
            "agreement",
            "Agreement",
            "re-connect",
            "reconnect",
            "suspended",
        ]
        .iter()
        .any(|w| said.contains(w))
    }

    // ---- linking ----

    fn attended(&self) -> bool {
        self.attendance.psu_present
    }

    /// The requisition as the service says now; `None` when it does not know it.
    async fn read_requisition(
        &mut self,
        id: &str,
    ) -> Result<Option<RequisitionState>, ConnectorError> {
        let a = self
            .call(
                Method::GET,
                &format!("requisitions/{id}/"),
                "requisition",
                None,
            )
            .await?;
        if a.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let o = a
            .body
            .as_object()
            .ok_or_else(|| malformed("requisition", "not a JSON object"))?;
        let r = RequisitionState {
            id: id.to_owned(),
            status: text(o, "status").unwrap_or("").to_owned(),
            link: text(o, "link").unwrap_or("").to_owned(),
            redirect: text(o, "redirect").unwrap_or("").to_owned(),
            accounts: o
                .get("accounts")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        };
        if r.status == "LN"
            && let Some(agreement) = text(o, "agreement").map(str::to_owned)
        {
            self.read_agreement(&agreement).await?;
        }
        self.saved.requisition = Some(r.clone());
        Ok(Some(r))
    }

    /// The agreement's acceptance and terms, as the service says.
    async fn read_agreement(&mut self, id: &str) -> Result<(), ConnectorError> {
        let known = self
            .saved
            .agreement
            .as_ref()
            .is_some_and(|a| a.id == id && a.accepted.is_some());
        if known {
            return Ok(());
        }
        let a = self
            .call(
                Method::GET,
                &format!("agreements/enduser/{id}/"),
                "agreement",
                None,
            )
            .await?;
        if a.status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        let days = |k: &str, d: u32| {
            a.body
                .get(k)
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(d)
        };
        self.saved.agreement = Some(AgreementState {
            id: id.to_owned(),
            institution_id: a
                .body
                .get("institution_id")
                .and_then(Value::as_str)
                .unwrap_or(&self.settings.institution_id)
                .to_owned(),
            accepted: a
                .body
                .get("accepted")
                .and_then(Value::as_str)
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&Utc)),
            access_days: days("access_valid_for_days", self.settings.access_days),
            history_days: days("max_historical_days", self.settings.history_days),
        });
        Ok(())
    }

    /// Start (or take up again) the user's visit to the bank: ends in a
    /// redirect challenge, or `needs_user` without a person.
    async fn start_link(&mut self, why: &str) -> Result<(), ConnectorError> {
        if !self.attended() {
            return Err(relink_needed(why));
        }
        let Some(redirect) = self
            .attendance
            .redirect_uri
            .clone()
            .or_else(|| self.settings.redirect_uri.clone())
        else {
            return Err(no_return_address(why));
        };
        // An unfinished link that comes back to the same place: take it up again.
        if let Some(r) = self.saved.requisition.clone()
            && !matches!(r.status.as_str(), "LN" | "EX" | "RJ" | "SU")
        {
            if r.redirect == redirect && !r.link.is_empty() {
                return self.redirect_to(r.link);
            }
            // It would send the browser to a dead address: give it back.
            let _ = self
                .call(
                    Method::DELETE,
                    &format!("requisitions/{}/", r.id),
                    "requisition",
                    None,
                )
                .await;
            self.saved.requisition = None;
        }
        let agreement = self.agreement_for_link().await?;
        let reference = uuid::Uuid::new_v4().to_string();
        let a = self
            .call(
                Method::POST,
                "requisitions/",
                "requisition",
                Some(json!({
                    "redirect": redirect,
                    "institution_id": self.settings.institution_id,
                    "agreement": agreement,
                    "reference": reference,
                    "user_language": "EN",
                })),
            )
            .await?;
        if !a.status.is_success() {
            return Err(ConnectorError::Other(format!(
                "requisition: GoCardless refused it: {}",
                Self::said(&a)
            )));
        }
        let o = a
            .body
            .as_object()
            .ok_or_else(|| malformed("requisition", "not a JSON object"))?;
        let id = text(o, "id").ok_or_else(|| malformed("requisition", "no id"))?;
        let link = text(o, "link").ok_or_else(|| malformed("requisition", "no link"))?;
        tracing::info!(requisition = %id, "a new link to the bank");
        self.saved.requisition = Some(RequisitionState {
            id: id.to_owned(),
            status: text(o, "status").unwrap_or("CR").to_owned(),
            link: link.to_owned(),
            redirect,
            accounts: Vec::new(),
        });
        self.redirect_to(link.to_owned())
    }

    fn redirect_to(&self, url: String) -> Result<(), ConnectorError> {
        bankbridge_core::net::secure_url(&url, "link").map_err(|e| malformed("requisition", e))?;
        Err(ConnectorError::ScaRequired(ScaChallenge::Redirect { url }))
    }

    /// An agreement nobody accepted yet is reused; otherwise a new one.
    async fn agreement_for_link(&mut self) -> Result<String, ConnectorError> {
        if let Some(a) = self.saved.agreement.clone()
            && a.institution_id == self.settings.institution_id
        {
            let now = self
                .call(
                    Method::GET,
                    &format!("agreements/enduser/{}/", a.id),
                    "agreement",
                    None,
                )
                .await?;
            if now.status.is_success() && now.body.get("accepted").is_some_and(Value::is_null) {
                return Ok(a.id);
            }
        }
        let a = self
            .call(
                Method::POST,
                "agreements/enduser/",
                "agreement",
                Some(json!({
                    "institution_id": self.settings.institution_id,
                    "max_historical_days": self.settings.history_days,
                    "access_valid_for_days": self.settings.access_days,
                    "access_scope": ["balances", "details", "transactions"],
                })),
            )
            .await?;
        if !a.status.is_success() {
            return Err(ConnectorError::Other(format!(
                "end-user agreement: GoCardless refused it: {}",
                Self::said(&a)
            )));
        }
        let id = a
            .body
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed("agreement", "no id"))?
            .to_owned();
        self.saved.agreement = Some(AgreementState {
            id: id.clone(),
            institution_id: self.settings.institution_id.clone(),
            accepted: None,
            access_days: self.settings.access_days,
            history_days: self.settings.history_days,
        });
        Ok(id)
    }

    /// When the agreement's access ends.
    fn access_ends(&self) -> Option<DateTime<Utc>> {
        let a = self.saved.agreement.as_ref()?;
        Some(a.accepted? + chrono::Duration::days(i64::from(a.access_days)))
    }

    fn expired_words(&self) -> String {
        match self.access_ends() {
            Some(end) => format!(
                "the end-user agreement with the bank ended on {}",
                end.date_naive()
            ),
            None => "the bank's link ended".to_owned(),
        }
    }

    // ---- account data, within the daily limit ----

    /// Can `scope` of account `id` be called now? `Err` says until when.
    fn afford(&self, scope: Scope, id: &str, account: &str) -> Result<(), ConnectorError> {
        afford(
            self.saved.budget.get(&Allowances::key(scope.name(), id)),
            self.settings.daily_limit,
            self.now(),
            self.attended(),
            account,
            scope.name(),
        )
    }

    /// One account-data call, within the limit.
    async fn account_call(
        &mut self,
        scope: Scope,
        id: &str,
        path: &str,
        account: &str,
    ) -> Result<Value, ConnectorError> {
        self.afford(scope, id, account)?;
        let what = scope.name();
        let key = Allowances::key(scope.name(), id);
        self.counting = Some(key.clone());
        let sent = self.authorised(Method::GET, path, what, None).await;
        self.counting = None;
        let a = sent?;
        let header = |name: &str| {
            a.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let remaining = header("x-ratelimit-account-success-remaining").map(|n| n as u32);
        if a.status.is_success() {
            // Counted in `send`, as soon as the status said so.
            return Ok(a.body);
        }
        let said = Self::said(&a);
        if a.status == StatusCode::TOO_MANY_REQUESTS
            && (remaining == Some(0) || said.contains("/day") || said.contains("per day"))
        {
            let wait = header("x-ratelimit-account-success-reset")
                .or_else(|| header("retry-after"))
                .map(Duration::from_secs);
            let now = self.now();
            self.saved.budget.refused(key, now, wait);
            tracing::warn!(%account, scope = what, %said, "the service refused a call over its daily limit");
            return Err(self.afford(scope, id, account).err().unwrap_or_else(|| {
                ConnectorError::Deferred(format!("{account}: the service's limit: {said}"))
            }));
        }
        if (a.status == StatusCode::UNAUTHORIZED || a.status == StatusCode::FORBIDDEN)
            && Self::about_access(&said)
        {
            if let Some(r) = self.saved.requisition.as_mut() {
                r.status = "EX".to_owned();
            }
            return Err(relink_needed(&format!("{} ({said})", self.expired_words())));
        }
        if a.status == StatusCode::NOT_FOUND {
            return Err(relink_needed(&format!(
                "GoCardless no longer knows account {account} under this link ({said})"
            )));
        }
        Err(self.refusal(what, &a))
    }

    /// What an account id is: kept, else learnt (metadata, then the details
    /// unless an earlier id of the same IBAN told them already).
    async fn know(&mut self, id: &str) -> Result<KnownAccount, ConnectorError> {
        if let Some(k) = self.saved.accounts.get(id) {
            return Ok(k.clone());
        }
        let meta = self
            .call(Method::GET, &format!("accounts/{id}/"), "account", None)
            .await?;
        if meta.status == StatusCode::NOT_FOUND {
            return Err(relink_needed(&format!(
                "GoCardless no longer knows account {id}"
            )));
        }
        let iban = meta
            .body
            .get("iban")
            .and_then(Value::as_str)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        // A re-link: the same IBAN under a new id needs no details call.
        if let Some(iban) = &iban
            && let Some(old) = self
                .saved
                .accounts
                .values()
                .find(|k| k.iban.as_deref() == Some(iban))
                .cloned()
        {
            self.saved.accounts.insert(id.to_owned(), old.clone());
            return Ok(old);
        }
        let label = iban.clone().unwrap_or_else(|| id.to_owned());
        let details = self
            .account_call(
                Scope::Details,
                id,
                &format!("accounts/{id}/details/"),
                &label,
            )
            .await?;
        let d = details
            .get("account")
            .and_then(Value::as_object)
            .ok_or_else(|| malformed("details", "no account object"))?;
        let currency = text(d, "currency")
            .ok_or_else(|| malformed("details", "an account without a currency"))?
            .to_owned();
        let iban = iban.or_else(|| text(d, "iban").map(str::to_owned));
        let key = iban
            .clone()
            .or_else(|| text(d, "maskedPan").map(str::to_owned))
            .or_else(|| text(d, "bban").map(str::to_owned))
            .unwrap_or_else(|| id.to_owned());
        let known = KnownAccount {
            key,
            iban,
            currency,
            name: text(d, "name")
                .or_else(|| text(d, "displayName"))
                .or_else(|| text(d, "product"))
                .or_else(|| text(d, "ownerName"))
                .map(str::to_owned),
            kind: text(d, "cashAccountType")
                .or_else(|| text(d, "product"))
                .map(str::to_owned),
            raw: details.clone(),
        };
        self.saved.accounts.insert(id.to_owned(), known.clone());
        Ok(known)
    }

    /// The current link's account id for one of our accounts.
    fn account_id(&self, account: &FetchedAccount) -> Option<String> {
        let current = self.saved.requisition.as_ref()?;
        current
            .accounts
            .iter()
            .find(|id| {
                self.saved
                    .accounts
                    .get(*id)
                    .is_some_and(|k| k.key == account.provider_id)
            })
            .cloned()
    }

    /// Forget allowances and accounts of ids no longer linked.
    fn prune(&mut self) {
        let Some(r) = &self.saved.requisition else {
            return;
        };
        let live: std::collections::HashSet<&str> = r.accounts.iter().map(String::as_str).collect();
        let today = self.now().date_naive();
        self.saved.budget.keep_live(&live, today);
        // Old ids stay as long as no new id has their key (a re-link in progress).
        let keys: std::collections::HashSet<String> = r
            .accounts
            .iter()
            .filter_map(|id| self.saved.accounts.get(id).map(|k| k.key.clone()))
            .collect();
        self.saved
            .accounts
            .retain(|id, k| live.contains(id.as_str()) || !keys.contains(&k.key));
    }
}

#[async_trait]
impl Connector for GoCardlessConnector {
    fn name(&self) -> &'static str {
        "gocardless"
    }

    fn limits(&self) -> ConnectorLimits {
        ConnectorLimits {
            // One call covers any range: a window as long as the history.
            max_window_days: None,
            max_history_days: Some(
                self.saved
                    .agreement
                    .as_ref()
                    .map_or(self.settings.history_days, |a| a.history_days),
            ),
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
        let r = self.saved.requisition.as_ref()?;
        let status = match r.status.as_str() {
            "LN" if self.access_ends().is_some_and(|end| end <= self.now()) => "expired",
            "LN" => "valid",
            "EX" => "expired",
            "RJ" => "rejected",
            "SU" => "suspended",
            _ => "linking",
        };
        Some(ConsentInfo {
            status: status.to_owned(),
            // The last whole day of access.
            valid_until: self
                .access_ends()
                .map(|end| end.date_naive().pred_opt().unwrap_or(end.date_naive())),
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
                tracing::warn!(error = %e, "the kept GoCardless session does not read; starting afresh")
            }
        }
    }

    async fn login(&mut self) -> Result<(), ConnectorError> {
        self.ensure_token().await?;
        let Some(kept) = self.saved.requisition.clone() else {
            return self.start_link("the bank is not linked yet").await;
        };
        let Some(r) = self.read_requisition(&kept.id).await? else {
            self.saved.requisition = None;
            return self
                .start_link("GoCardless no longer knows this connection's link")
                .await;
        };
        match r.status.as_str() {
            "LN" if self.access_ends().is_some_and(|end| end <= self.now()) => {
                let why = self.expired_words();
                self.start_link(&why).await
            }
            "LN" => {
                self.prune();
                Ok(())
            }
            "EX" => {
                let why = self.expired_words();
                self.start_link(&why).await
            }
            "RJ" => {
                self.start_link("the last link was turned down at the bank")
                    .await
            }
            "SU" => self.start_link("GoCardless suspended the link").await,
            _ => {
                self.start_link("the link to the bank was never finished")
                    .await
            }
        }
    }

    async fn resume_sca(&mut self, answer: &ScaAnswer) -> Result<ScaProgress, ConnectorError> {
        let Some(id) = self.saved.requisition.as_ref().map(|r| r.id.clone()) else {
            return Err(ConnectorError::ScaFailed("no link is under way".into()));
        };
        if matches!(answer, ScaAnswer::Declined) {
            return Err(ConnectorError::ScaFailed("declined".into()));
        }
        let Some(r) = self.read_requisition(&id).await? else {
            return Err(ConnectorError::ScaFailed("GoCardless lost the link".into()));
        };
        match r.status.as_str() {
            "LN" => Ok(ScaProgress::Done),
            "RJ" => Err(ConnectorError::ScaFailed(
                "the bank or you turned the link down".into(),
            )),
            "EX" | "SU" => Err(ConnectorError::ScaFailed(format!(
                "the link ended ({})",
                r.status
            ))),
            _ => Ok(ScaProgress::Pending {
                poll_after: Duration::from_secs(2),
            }),
        }
    }

    async fn accounts(&mut self) -> Result<Vec<FetchedAccount>, ConnectorError> {
        let ids = self
            .saved
            .requisition
            .as_ref()
            .map(|r| r.accounts.clone())
            .unwrap_or_default();
        let mut out: Vec<FetchedAccount> = Vec::with_capacity(ids.len());
        for id in ids {
            let k = self.know(&id).await?;
            if out.iter().any(|a| a.provider_id == k.key) {
                continue;
            }
            let iban = match &k.iban {
                Some(i) => Some(
                    Iban::parse(i).map_err(|e| malformed("account", format!("IBAN {i:?}: {e}")))?,
                ),
                None => None,
            };
            let currency: Currency = k
                .currency
                .parse()
                .map_err(|_| malformed("details", format!("currency {:?}", k.currency)))?;
            out.push(FetchedAccount {
                provider_id: k.key.clone(),
                iban,
                currency,
                name: k.name.clone(),
                kind: k.kind.clone(),
                raw: k.raw.clone(),
            });
        }
        self.prune();
        Ok(out)
    }

    async fn window(
        &mut self,
        account: &FetchedAccount,
        window: DateWindow,
    ) -> Result<WindowPage, ConnectorError> {
        let id = self.account_id(account).ok_or_else(|| {
            relink_needed(&format!(
                "account {} is not in this connection's link",
                account.provider_id
            ))
        })?;
        let label = account.provider_id.clone();
        let today = self.today();
        let mut page = WindowPage::default();
        // The transactions first: they are what the budget is for.
        let v = self
            .account_call(
                Scope::Transactions,
                &id,
                &format!(
                    "accounts/{id}/transactions/?date_from={}&date_to={}",
                    window.from, window.to
                ),
                &label,
            )
            .await?;
        let tx = v
            .get("transactions")
            .ok_or_else(|| malformed("transactions", "no transactions object"))?;
        for (field, status) in [("booked", TxStatus::Booked), ("pending", TxStatus::Pending)] {
            if let Some(list) = tx.get(field).and_then(Value::as_array) {
                for t in list {
                    let mapped = map_transaction(t, status, today)?;
                    if window.contains(mapped.booking_date) {
                        page.transactions.push(mapped);
                    }
                }
            }
        }
        // Balances with the window that reaches today, when the budget allows:
        // a skipped snapshot is only a snapshot.
        if window.to >= today {
            match self
                .account_call(
                    Scope::Balances,
                    &id,
                    &format!("accounts/{id}/balances/"),
                    &label,
                )
                .await
            {
                Ok(v) => page.balances = map_balances(&v, today),
                Err(e) if e.is_deferral() => {
                    tracing::info!(account = %label, reason = %e, "balances skipped this time");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn institutions_are_picked_by_id_or_name() {
        let list: Vec<Institution> = serde_json::from_value(json!([
            {"id": "SANDBOXFINANCE_SFIN0000", "name": "Sandbox Finance", "transaction_total_days": "730", "countries": ["XX"]},
            {"id": "REVOLUT_REVOLT21", "name": "Revolut", "transaction_total_days": 730, "countries": ["LV"]},
            {"id": "REVOLUT_BUSINESS", "name": "Revolut Business", "countries": ["LV"]},
        ]))
        .unwrap();
        assert_eq!(list[0].transaction_total_days, Some(730));
        assert_eq!(list[1].transaction_total_days, Some(730));
        assert_eq!(
            pick_institution(&list, "sandbox")[0].id,
            "SANDBOXFINANCE_SFIN0000"
        );
        assert_eq!(pick_institution(&list, "revolut_revolt21").len(), 1);
        assert_eq!(
            pick_institution(&list, "Revolut").len(),
            1,
            "an exact name wins"
        );
        assert_eq!(pick_institution(&list, "rev").len(), 2);
        assert!(pick_institution(&list, "nordea").is_empty());
    }

    #[test]
    fn settings_need_the_bank_and_keep_to_the_api_ranges() {
        let mut o = BTreeMap::new();
        assert!(
            Settings::from_options(&o)
                .unwrap_err()
                .contains("institution_id")
        );
        o.insert("institution_id".into(), "SANDBOXFINANCE_SFIN0000".into());
        let s = Settings::from_options(&o).unwrap();
        assert_eq!((s.history_days, s.access_days, s.daily_limit), (90, 90, 4));
        o.insert("access_days".into(), "181".into());
        assert!(
            Settings::from_options(&o)
                .unwrap_err()
                .contains("access_days")
        );
    }

    #[test]
    fn the_secret_key_never_shows() {
        let mut settings = ConnectionSettings::new(DEFAULT_BASE_URL, "id-1");
        settings.options.insert("institution_id".into(), "X".into());
        let c = GoCardlessConnector::new(
            &settings,
            Credentials::with_password(Secret::new("sk-very-secret".into())),
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("sk-very-secret"));
    }
}
