//! Enable Banking (account information): European banks through one API.
//!
//! The connection's username is the application id, its password the
//! application's RSA private key (PEM): every call carries a JWT the
//! connector signs with it (RS256, `kid` = the application id, an hour of
//! life, made anew before it runs out). The bank is the options
//! `aspsp_name` and `aspsp_country`.
//!
//! **Linking.** `POST /auth` names the bank, the access wanted (until
//! `consent_days` from now, within the bank's `maximum_consent_validity`),
//! a fresh `state` and the run's redirect address; its `url` is raised as a
//! redirect challenge. The browser comes back with `code` and `state` (the
//! engine hands the query over as [`ScaAnswer::Returned`]); `POST /sessions`
//! with the code opens the session. Without a person a link that is needed
//! stops the sync in `needs_user` with the instruction.
//!
//! **Accounts** are keyed by IBAN, else by the `identification_hash` that
//! stays across sessions; the `uid` in paths works only in its session, so a
//! new session continues the same accounts. Transactions are read with
//! `date_from`/`date_to` and `continuation_key` paging; the amount's sign
//! comes from `credit_debit_indicator`.
//!
//! **The bank's limit.** With the user there the calls carry
//! `Psu-Ip-Address` and `Psu-User-Agent`, and the PSD2 limit does not apply;
//! without, banks allow 4 calls a day per account and endpoint: counted in
//! the session and paced over the day (see [`crate::budget`]), a 429
//! `ASPSP_RATE_LIMIT_EXCEEDED` waited out.
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bankbridge_core::{
    Attendance, Balance, BalanceKind, ConnectionSettings, Connector, ConnectorError,
    ConnectorLimits, ConsentInfo, Credentials, Currency, DateWindow, FetchedAccount,
    FetchedTransaction, Iban, ScaAnswer, ScaChallenge, ScaProgress, Secret, TransientKind,
    TxStatus, WindowPage, clean_label, parse_decimal,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, NaiveDate, Utc};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use url::Url;

use crate::aggregator::{
    Answer, Counted, USER_AGENT, afford, base_url, exchange, http_client, no_return_address,
    number_option, psu_ip_option, redirect_option, relink_needed,
};
use crate::budget::Allowances;
use crate::common::date;
use crate::common::{excerpt, malformed, status_error, text, transient};

pub const DEFAULT_BASE_URL: &str = "https://api.enablebanking.com";
/// Unattended calls a day per account and endpoint (PSD2).
pub const DAILY_LIMIT: u32 = 4;
pub const DEFAULT_CONSENT_DAYS: u32 = 90;
pub const DEFAULT_HISTORY_DAYS: u32 = 730;
/// How long a JWT the connector signs lives.
const JWT_SECS: i64 = 3600;
/// `continuation_key` pages followed at most for one window.
const MAX_PAGES: usize = 10_000;

/// Option names read from [`ConnectionSettings::options`].
pub mod option {
    /// The bank's name as `GET /aspsps` gives it.
    pub const ASPSP_NAME: &str = "aspsp_name";
    /// Its country (two letters).
    pub const ASPSP_COUNTRY: &str = "aspsp_country";
    /// `personal` (default) or `business`.
    pub const PSU_TYPE: &str = "psu_type";
    /// Days of access to ask for (capped by the bank's maximum).
    pub const CONSENT_DAYS: &str = "consent_days";
    /// Days of history the bank serves.
    pub const HISTORY_DAYS: &str = "history_days";
    /// Unattended calls a day per account and endpoint (default 4).
    pub const DAILY_LIMIT: &str = "daily_limit";
    /// Where the bank sends the browser back when the run offers no address
    /// (it must be whitelisted for the application).
    pub const REDIRECT_URI: &str = "redirect_uri";
    /// `Psu-Ip-Address` sent while the user is there.
    pub const PSU_IP_ADDRESS: &str = "psu_ip_address";
}

/// One connection's settings, read from its options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub aspsp_name: String,
    pub aspsp_country: String,
    pub psu_type: String,
    pub consent_days: u32,
    pub history_days: u32,
    pub daily_limit: u32,
    pub redirect_uri: Option<String>,
    pub psu_ip: String,
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
                        "{key} is needed: the bank as Enable Banking names it (`bankbridge connection add --connector enablebanking --country CC --institution NAME` finds it)"
                    )
                })
        };
        let psu_type = options
            .get(option::PSU_TYPE)
            .cloned()
            .unwrap_or_else(|| "personal".to_owned());
        if psu_type != "personal" && psu_type != "business" {
            return Err(format!("{} must be personal or business", option::PSU_TYPE));
        }
        let redirect_uri = redirect_option(options, option::REDIRECT_URI)?;
        let psu_ip = psu_ip_option(options, option::PSU_IP_ADDRESS)?;
        Ok(Settings {
            aspsp_name: needed(option::ASPSP_NAME)?,
            aspsp_country: needed(option::ASPSP_COUNTRY)?.to_ascii_uppercase(),
            psu_type,
            consent_days: number(option::CONSENT_DAYS, DEFAULT_CONSENT_DAYS, 730)?,
            history_days: number(option::HISTORY_DAYS, DEFAULT_HISTORY_DAYS, 3650)?,
            daily_limit: number(option::DAILY_LIMIT, DAILY_LIMIT, 1000)?,
            redirect_uri,
            psu_ip,
        })
    }
}

/// A bank Enable Banking reaches, as `GET /aspsps` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct Aspsp {
    pub name: String,
    pub country: String,
    #[serde(default)]
    pub bic: Option<String>,
    /// Seconds.
    #[serde(default)]
    pub maximum_consent_validity: Option<u64>,
}

/// The banks whose name matches `wanted` (an exact name first, else every
/// name that contains it, case aside).
pub fn pick_aspsp<'a>(all: &'a [Aspsp], wanted: &str) -> Vec<&'a Aspsp> {
    let lower = wanted.trim().to_lowercase();
    let exact: Vec<_> = all
        .iter()
        .filter(|a| a.name.to_lowercase() == lower)
        .collect();
    if !exact.is_empty() {
        return exact;
    }
    all.iter()
        .filter(|a| a.name.to_lowercase().contains(&lower))
        .collect()
}

// ---- what is kept between runs ----

#[derive(Clone, Debug, Serialize, Deserialize)]
struct SessionState {
    id: String,
    /// As the service last said (`AUTHORIZED`, `EXPIRED`, …).
    status: String,
    valid_until: Option<DateTime<Utc>>,
    #[serde(default)]
    accounts: Vec<String>,
}

/// An authorisation under way: its `state` must come back.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PendingAuth {
    state: String,
    url: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct KnownAccount {
    /// Our key: the IBAN, else the identification hash.
    key: String,
    iban: Option<String>,
    currency: String,
    name: Option<String>,
    kind: Option<String>,
    raw: Value,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Saved {
    session: Option<SessionState>,
    pending: Option<PendingAuth>,
    /// uid → what we know of it.
    #[serde(default)]
    accounts: BTreeMap<String, KnownAccount>,
    /// `endpoint:uid` → its allowance.
    #[serde(default)]
    budget: Allowances,
    #[serde(default)]
    skew_secs: i64,
}

/// The endpoints with a daily limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Details,
    Balances,
    Transactions,
}

impl Endpoint {
    fn name(self) -> &'static str {
        match self {
            Endpoint::Details => "details",
            Endpoint::Balances => "balances",
            Endpoint::Transactions => "transactions",
        }
    }
}

/// The Enable Banking connector.
pub struct EnableBankingConnector {
    base: Url,
    app_id: String,
    key: Option<rsa::RsaPrivateKey>,
    settings: Settings,
    http: reqwest::Client,
    attendance: Attendance,
    saved: Saved,
    jwt: Option<(Secret<String>, i64)>,
    skew: AtomicI64,
    /// The allowance the call being sent counts against, if any.
    counting: Option<String>,
}

impl fmt::Debug for EnableBankingConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnableBankingConnector")
            .field("base_url", &self.base.as_str())
            .field("application_id", &self.app_id)
            .field("private_key", &self.key.as_ref().map(|_| "[redacted]"))
            .field("aspsp", &self.settings.aspsp_name)
            .finish_non_exhaustive()
    }
}

/// The application's private key from PEM (PKCS#8 or PKCS#1).
fn read_key(pem: &str) -> Result<rsa::RsaPrivateKey, String> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    rsa::RsaPrivateKey::from_pkcs8_pem(pem)
        .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(pem))
        .map_err(|_| {
            "the application's private key is not an RSA key in PEM (PKCS#8 `BEGIN PRIVATE KEY` or PKCS#1 `BEGIN RSA PRIVATE KEY`)".to_owned()
        })
}

/// A JWT for the application: RS256 over `header.claims`.
pub fn application_jwt(
    app_id: &str,
    key: &rsa::RsaPrivateKey,
    now: i64,
    lifetime_secs: i64,
) -> String {
    use rsa::pkcs1v15::SigningKey;
    use rsa::signature::{SignatureEncoding, Signer};
    let part = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let signed = format!(
        "{}.{}",
        part(json!({"typ": "JWT", "alg": "RS256", "kid": app_id})),
        part(
            json!({"iss": "enablebanking.com", "aud": "api.enablebanking.com",
                    "iat": now, "exp": now + lifetime_secs})
        )
    );
    let signature = SigningKey::<sha2::Sha256>::new(key.clone()).sign(signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

/// The banks of `country`, for picking the bank when a connection is added.
pub async fn aspsps(
    base: &str,
    app_id: &str,
    private_key: &Secret<String>,
    country: &str,
) -> Result<Vec<Aspsp>, ConnectorError> {
    let mut settings = ConnectionSettings::new(base, app_id);
    settings
        .options
        .insert(option::ASPSP_NAME.to_owned(), "-".to_owned());
    settings
        .options
        .insert(option::ASPSP_COUNTRY.to_owned(), country.to_owned());
    let mut c =
        EnableBankingConnector::new(&settings, Credentials::with_password(private_key.clone()))
            .map_err(ConnectorError::Other)?;
    let country = country.trim().to_ascii_uppercase();
    let a = c
        .call(
            Method::GET,
            &format!("aspsps?country={country}"),
            "banks",
            None,
        )
        .await?;
    let list = a
        .body
        .get("aspsps")
        .cloned()
        .ok_or_else(|| malformed("banks", "no aspsps list"))?;
    serde_json::from_value(list)
        .map_err(|e| malformed("banks", format!("not a list of banks: {e}")))
}

impl EnableBankingConnector {
    pub fn new(settings: &ConnectionSettings, credentials: Credentials) -> Result<Self, String> {
        let base = base_url(&settings.base_url)?;
        let key = match credentials.get("password") {
            Some(pem) => Some(read_key(pem.expose())?),
            None => None,
        };
        let http = http_client()?;
        Ok(EnableBankingConnector {
            base,
            app_id: settings.username.trim().to_owned(),
            key,
            settings: Settings::from_options(&settings.options)?,
            http,
            attendance: Attendance::default(),
            saved: Saved::default(),
            jwt: None,
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

    /// The application's JWT, signed anew when the last one nears its end
    /// (on our own clock: the JWT is about the key, not the bank's day).
    fn bearer(&mut self) -> Result<String, ConnectorError> {
        let now = Utc::now().timestamp();
        if let Some((jwt, exp)) = &self.jwt
            && *exp - now > 300
        {
            return Ok(jwt.expose().clone());
        }
        let key = self.key.as_ref().ok_or_else(|| {
            ConnectorError::InvalidCredentials(
                "this connection has no application private key".into(),
            )
        })?;
        let jwt = application_jwt(&self.app_id, key, now, JWT_SECS);
        self.jwt = Some((Secret::new(jwt.clone()), now + JWT_SECS));
        Ok(jwt)
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        what: &str,
        body: Option<Value>,
    ) -> Result<Answer, ConnectorError> {
        let url = self
            .base
            .join(path)
            .map_err(|e| malformed("request", format!("{path:?}: {e}")))?;
        let mut req = self
            .http
            .request(method, url)
            .bearer_auth(self.bearer()?)
            .header(reqwest::header::ACCEPT, "application/json");
        if self.attended() {
            req = req
                .header("Psu-Ip-Address", &self.settings.psu_ip)
                .header("Psu-User-Agent", USER_AGENT);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        // The bank counts a call it served: so do we.
        let counted = self.counting.take().map(|key| Counted {
            budget: &mut self.saved.budget,
            key,
            remaining_header: None,
        });
        exchange("enablebanking", what, req, &self.skew, counted).await
    }

    fn error_name(a: &Answer) -> &str {
        a.body.get("error").and_then(Value::as_str).unwrap_or("")
    }

    fn said(a: &Answer) -> String {
        let message = a.body.get("message").and_then(Value::as_str).map(excerpt);
        match (message, Self::error_name(a)) {
            (Some(m), "") => m,
            (Some(m), e) => format!("{e} ({m})"),
            (None, "") => format!("HTTP {}", a.status),
            (None, e) => e.to_owned(),
        }
    }

    /// A call outside the account data; a refusal as a typed error.
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        what: &str,
        body: Option<Value>,
    ) -> Result<Answer, ConnectorError> {
        let a = self.send(method, path, what, body).await?;
        if a.status.is_success() {
            return Ok(a);
        }
        Err(self.refusal(what, &a))
    }

    fn refusal(&mut self, what: &str, a: &Answer) -> ConnectorError {
        let said = Self::said(a);
        match Self::error_name(a) {
            "UNAUTHORIZED_ACCESS" | "AUTHORIZATION_NOT_PROVIDED" | "ACCESS_DENIED" => {
                return ConnectorError::InvalidCredentials(format!(
                    "Enable Banking refused the application's signed token ({said}): check the application id and its private key"
                ));
            }
            "EXPIRED_SESSION" | "REVOKED_SESSION" | "CLOSED_SESSION" | "SESSION_DOES_NOT_EXIST" => {
                if let Some(s) = self.saved.session.as_mut() {
                    s.status = match Self::error_name(a) {
                        "EXPIRED_SESSION" => "EXPIRED",
                        "REVOKED_SESSION" => "REVOKED",
                        _ => "CLOSED",
                    }
                    .to_owned();
                }
                return relink_needed(&format!("the bank's session ended ({said})"));
            }
            "ASPSP_TIMEOUT" => {
                return transient(what, TransientKind::Timeout, None);
            }
            // ASPSP_ERROR and the rest: by their status below.
            _ => {}
        }
        if a.status == StatusCode::REQUEST_TIMEOUT {
            return transient(what, TransientKind::Timeout, None);
        }
        if let Some(e) = status_error(what, a.status, &a.headers) {
            return e;
        }
        ConnectorError::Other(format!(
            "{what}: Enable Banking refused the request: {said}"
        ))
    }

    // ---- linking ----

    async fn start_auth(&mut self, why: &str) -> Result<(), ConnectorError> {
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
        let longest = self.longest_consent().await?;
        let days = chrono::Duration::days(i64::from(self.settings.consent_days));
        let valid_until = self.now() + longest.map_or(days, |l| l.min(days));
        let state = uuid::Uuid::new_v4().to_string();
        let a = self
            .call(
                Method::POST,
                "auth",
                "authorisation",
                Some(json!({
                    "access": {"valid_until": valid_until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)},
                    "aspsp": {"name": self.settings.aspsp_name, "country": self.settings.aspsp_country},
                    "state": state,
                    "redirect_url": redirect,
                    "psu_type": self.settings.psu_type,
                })),
            )
            .await?;
        let url = a
            .body
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed("authorisation", "no url"))?
            .to_owned();
        bankbridge_core::net::secure_url(&url, "url").map_err(|e| malformed("authorisation", e))?;
        self.saved.pending = Some(PendingAuth {
            state,
            url: url.clone(),
        });
        Err(ConnectorError::ScaRequired(ScaChallenge::Redirect { url }))
    }

    /// The bank's longest access, from its entry in `GET /aspsps`.
    async fn longest_consent(&mut self) -> Result<Option<chrono::Duration>, ConnectorError> {
        let country = self.settings.aspsp_country.clone();
        let a = self
            .call(
                Method::GET,
                &format!("aspsps?country={country}"),
                "banks",
                None,
            )
            .await?;
        let list: Vec<Aspsp> = a
            .body
            .get("aspsps")
            .cloned()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        let bank = list
            .iter()
            .find(|b| b.name == self.settings.aspsp_name)
            .ok_or_else(|| {
                ConnectorError::Other(format!(
                    "Enable Banking does not list the bank {:?} in {country} (any more)",
                    self.settings.aspsp_name
                ))
            })?;
        Ok(bank
            .maximum_consent_validity
            .map(|s| chrono::Duration::seconds(s as i64 - 60)))
    }

    /// Open the session with the code the browser came back with.
    async fn open_session(&mut self, query: &str) -> Result<(), ConnectorError> {
        let pairs: BTreeMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let pending = self
            .saved
            .pending
            .clone()
            .ok_or_else(|| ConnectorError::ScaFailed("no link is under way".into()))?;
        if pairs.get("state") != Some(&pending.state) {
            return Err(ConnectorError::ScaFailed(
                "the bank's answer is not for this link (its state differs)".into(),
            ));
        }
        if let Some(error) = pairs.get("error") {
            self.saved.pending = None;
            let why = pairs
                .get("error_description")
                .map(|d| excerpt(d))
                .unwrap_or_default();
            return Err(ConnectorError::ScaFailed(format!(
                "the bank said {error}: {why}"
            )));
        }
        let code = pairs
            .get("code")
            .ok_or_else(|| ConnectorError::ScaFailed("the bank sent no code back".into()))?;
        let a = self
            .send(
                Method::POST,
                "sessions",
                "session",
                Some(json!({"code": code})),
            )
            .await?;
        self.saved.pending = None;
        if !a.status.is_success() {
            return Err(ConnectorError::ScaFailed(format!(
                "Enable Banking did not open the session: {}",
                Self::said(&a)
            )));
        }
        let id = a
            .body
            .get("session_id")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed("session", "no session_id"))?
            .to_owned();
        let valid_until = a
            .body
            .pointer("/access/valid_until")
            .and_then(Value::as_str)
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc));
        let mut uids = Vec::new();
        for acc in a
            .body
            .get("accounts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(o) = acc.as_object() else { continue };
            let Some(uid) = text(o, "uid").map(str::to_owned) else {
                continue;
            };
            let known = known_account(o)?;
            self.saved.accounts.insert(uid.clone(), known);
            uids.push(uid);
        }
        tracing::info!(session = %id, accounts = uids.len(), "a new session with the bank");
        self.saved.session = Some(SessionState {
            id,
            status: "AUTHORIZED".to_owned(),
            valid_until,
            accounts: uids,
        });
        self.prune();
        Ok(())
    }

    /// Forget allowances and accounts of uids of sessions gone by.
    fn prune(&mut self) {
        let Some(s) = &self.saved.session else { return };
        let live: std::collections::HashSet<&str> = s.accounts.iter().map(String::as_str).collect();
        let today = self.now().date_naive();
        self.saved.budget.keep_live(&live, today);
        self.saved
            .accounts
            .retain(|uid, _| live.contains(uid.as_str()));
    }

    fn session_ended(&self) -> Option<String> {
        let s = self.saved.session.as_ref()?;
        match s.valid_until {
            Some(end) if end <= self.now() => {
                Some(format!("the bank's session ended on {}", end.date_naive()))
            }
            _ if s.status != "AUTHORIZED" => {
                Some(format!("the bank's session is {}", s.status.to_lowercase()))
            }
            _ => None,
        }
    }

    // ---- account data ----

    fn afford(&self, endpoint: Endpoint, uid: &str, account: &str) -> Result<(), ConnectorError> {
        afford(
            self.saved
                .budget
                .get(&Allowances::key(endpoint.name(), uid)),
            self.settings.daily_limit,
            self.now(),
            self.attended(),
            account,
            endpoint.name(),
        )
    }

    /// One account-data call (`counted`: the first page of a query), within the limit.
    async fn account_call(
        &mut self,
        endpoint: Endpoint,
        uid: &str,
        path: &str,
        account: &str,
        counted: bool,
    ) -> Result<Value, ConnectorError> {
        if counted {
            self.afford(endpoint, uid, account)?;
        }
        let what = endpoint.name();
        let key = Allowances::key(endpoint.name(), uid);
        // Calls with the user there carry the PSU headers: the bank does not count them.
        self.counting = (counted && !self.attended()).then(|| key.clone());
        let sent = self.send(Method::GET, path, what, None).await;
        self.counting = None;
        let a = sent?;
        if a.status.is_success() {
            // Counted in `send`, as soon as the status said so.
            return Ok(a.body);
        }
        if Self::error_name(&a) == "ASPSP_RATE_LIMIT_EXCEEDED" {
            let wait = a
                .headers
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let now = self.now();
            self.saved.budget.refused(key, now, wait);
            tracing::warn!(%account, endpoint = what, "the bank refused a call over its daily limit");
            return Err(self
                .afford(endpoint, uid, account)
                .err()
                .unwrap_or_else(|| {
                    ConnectorError::Deferred(format!(
                        "{account}: the bank's limit: {}",
                        Self::said(&a)
                    ))
                }));
        }
        let e = self.refusal(what, &a);
        // With the user there, an ended session is linked again at once.
        if matches!(e, ConnectorError::NeedsUser(_)) && self.attended() {
            return match self.start_auth("the bank's session ended").await {
                Err(e) => Err(e),
                Ok(()) => Err(ConnectorError::Other(
                    "linking ended without a challenge".into(),
                )),
            };
        }
        Err(e)
    }

    /// The current session's uid for one of our accounts.
    fn uid_of(&self, account: &FetchedAccount) -> Option<String> {
        let s = self.saved.session.as_ref()?;
        s.accounts
            .iter()
            .find(|uid| {
                self.saved
                    .accounts
                    .get(*uid)
                    .is_some_and(|k| k.key == account.provider_id)
            })
            .cloned()
    }
}

/// What an `AccountResource` tells.
fn known_account(o: &Map<String, Value>) -> Result<KnownAccount, ConnectorError> {
    let iban = o
        .get("account_id")
        .and_then(|a| a.get("iban"))
        .and_then(Value::as_str)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let key = iban
        .clone()
        .or_else(|| text(o, "identification_hash").map(str::to_owned))
        .ok_or_else(|| malformed("account", "neither an IBAN nor an identification_hash"))?;
    Ok(KnownAccount {
        key,
        iban,
        currency: text(o, "currency")
            .ok_or_else(|| malformed("account", "an account without a currency"))?
            .to_owned(),
        name: text(o, "name")
            .or_else(|| text(o, "product"))
            .or_else(|| text(o, "details"))
            .map(str::to_owned),
        kind: text(o, "cash_account_type")
            .or_else(|| text(o, "product"))
            .map(str::to_owned),
        raw: Value::Object(o.clone()),
    })
}

fn money(
    v: Option<&Value>,
    what: &str,
) -> Result<(rust_decimal::Decimal, Currency), ConnectorError> {
    let v = v.ok_or_else(|| malformed(what, "no amount"))?;
    let amount = v
        .get("amount")
        .and_then(|a| {
            a.as_str()
                .map(str::to_owned)
                .or_else(|| a.as_number().map(|n| n.to_string()))
        })
        .and_then(|a| parse_decimal(&a))
        .ok_or_else(|| {
            malformed(
                what,
                format!("no readable amount in {}", excerpt(&v.to_string())),
            )
        })?;
    let currency = v
        .get("currency")
        .and_then(Value::as_str)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| malformed(what, "no readable currency"))?;
    Ok((amount, currency))
}

/// One Enable Banking transaction in our model; `None` for rows that never
/// happened (cancelled, rejected).
pub fn map_transaction(
    t: &Value,
    today: NaiveDate,
) -> Result<Option<FetchedTransaction>, ConnectorError> {
    let o = t
        .as_object()
        .ok_or_else(|| malformed("transactions", "a transaction is not an object"))?;
    let status = match text(o, "status").unwrap_or("BOOK") {
        "BOOK" => TxStatus::Booked,
        "CNCL" | "RJCT" => return Ok(None),
        // PDNG, HOLD, SCHD, OTHR: not booked yet.
        _ => TxStatus::Pending,
    };
    let (unsigned, currency) = money(o.get("transaction_amount"), "transactions")?;
    let debit = match text(o, "credit_debit_indicator") {
        Some("DBIT") => true,
        Some("CRDT") => false,
        // A signed amount without the indicator.
        _ => unsigned.is_sign_negative(),
    };
    let amount = if debit {
        -unsigned.abs()
    } else {
        unsigned.abs()
    };
    let value_date = date(o.get("value_date"));
    let booking_date = match (status, date(o.get("booking_date"))) {
        (_, Some(d)) => d,
        (TxStatus::Pending, None) => value_date
            .or_else(|| date(o.get("transaction_date")))
            .unwrap_or(today),
        (_, None) => value_date
            .or_else(|| date(o.get("transaction_date")))
            .ok_or_else(|| malformed("transactions", "a booked transaction without a date"))?,
    };
    let (party, party_account) = if debit {
        ("creditor", "creditor_account")
    } else {
        ("debtor", "debtor_account")
    };
    let counterparty_name = o
        .get(party)
        .and_then(|p| p.get("name"))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let counterparty_iban = o
        .get(party_account)
        .and_then(|a| a.get("iban"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let remittance_info = o
        .get("remittance_information")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|s| !s.is_empty())
        .or_else(|| text(o, "reference_number").map(str::to_owned));
    let bank_code = o
        .get("bank_transaction_code")
        .and_then(|c| c.get("description").or_else(|| c.get("code")))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let raw_label = remittance_info
        .clone()
        .or_else(|| counterparty_name.clone())
        .or_else(|| text(o, "note").map(str::to_owned))
        .or_else(|| bank_code.clone())
        .unwrap_or_default();
    // entry_reference stays across sessions; transaction_id may not.
    let provider_id = match status {
        TxStatus::Booked => text(o, "entry_reference"),
        _ => text(o, "entry_reference").or_else(|| text(o, "transaction_id")),
    }
    .map(str::to_owned);
    Ok(Some(FetchedTransaction {
        provider_id,
        status,
        booking_date,
        value_date,
        transaction_date: date(o.get("transaction_date")),
        amount,
        currency,
        original_amount: None,
        original_currency: None,
        label: clean_label(&raw_label),
        raw_label,
        counterparty_name,
        counterparty_iban,
        remittance_info,
        bank_code,
        running_balance: None,
        raw: t.clone(),
    }))
}

fn map_balances(v: &Value, today: NaiveDate) -> Vec<Balance> {
    let Some(list) = v.get("balances").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|b| {
            let kind = match b.get("balance_type").and_then(Value::as_str)? {
                "CLBD" => BalanceKind::ClosingBooked,
                "OPBD" => BalanceKind::OpeningBooked,
                "ITAV" | "CLAV" | "FWAV" | "OPAV" => BalanceKind::Available,
                _ => return None,
            };
            let (amount, currency) = money(b.get("balance_amount"), "balances").ok()?;
            Some(Balance {
                kind,
                amount,
                currency,
                reference_date: date(b.get("reference_date"))
                    .or_else(|| date(b.get("last_change_date_time")))
                    .unwrap_or(today),
            })
        })
        .collect()
}

#[async_trait]
impl Connector for EnableBankingConnector {
    fn name(&self) -> &'static str {
        "enablebanking"
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
        let s = self.saved.session.as_ref()?;
        let ended = s.valid_until.is_some_and(|end| end <= self.now());
        let status = match s.status.as_str() {
            "AUTHORIZED" if ended => "expired".to_owned(),
            "AUTHORIZED" => "valid".to_owned(),
            other => other.to_lowercase(),
        };
        Some(ConsentInfo {
            status,
            valid_until: s
                .valid_until
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
                tracing::warn!(error = %e, "the kept Enable Banking session does not read; starting afresh")
            }
        }
    }

    async fn login(&mut self) -> Result<(), ConnectorError> {
        let Some(kept) = self.saved.session.clone() else {
            return self.start_auth("the bank is not linked yet").await;
        };
        if let Some(why) = self.session_ended() {
            return self.start_auth(&why).await;
        }
        let a = self
            .send(
                Method::GET,
                &format!("sessions/{}", kept.id),
                "session",
                None,
            )
            .await?;
        if !a.status.is_success() {
            let e = self.refusal("session", &a);
            return match e {
                ConnectorError::NeedsUser(_) => {
                    let why = self
                        .session_ended()
                        .unwrap_or_else(|| "the bank's session ended".to_owned());
                    self.start_auth(&why).await
                }
                other => Err(other),
            };
        }
        let status = a
            .body
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let accounts: Vec<String> = a
            .body
            .get("accounts")
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if let Some(s) = self.saved.session.as_mut() {
            s.status = status.clone();
            if !accounts.is_empty() {
                s.accounts = accounts;
            }
        }
        if status != "AUTHORIZED" {
            let why = self
                .session_ended()
                .unwrap_or_else(|| format!("the bank's session is {}", status.to_lowercase()));
            return self.start_auth(&why).await;
        }
        self.prune();
        Ok(())
    }

    async fn resume_sca(&mut self, answer: &ScaAnswer) -> Result<ScaProgress, ConnectorError> {
        match answer {
            ScaAnswer::Returned(query) => {
                self.open_session(query.expose()).await?;
                Ok(ScaProgress::Done)
            }
            ScaAnswer::Declined => {
                self.saved.pending = None;
                Err(ConnectorError::ScaFailed("declined".into()))
            }
            _ => Err(ConnectorError::ScaFailed(
                "the bank's answer (its code in the address the browser came back to) did not reach \
                 bankbridge: sync again and let the browser return to bankbridge, or paste that address"
                    .into(),
            )),
        }
    }

    async fn accounts(&mut self) -> Result<Vec<FetchedAccount>, ConnectorError> {
        let uids = self
            .saved
            .session
            .as_ref()
            .map(|s| s.accounts.clone())
            .unwrap_or_default();
        let mut out: Vec<FetchedAccount> = Vec::new();
        for uid in uids {
            let known = match self.saved.accounts.get(&uid) {
                Some(k) => k.clone(),
                None => {
                    let v = self
                        .account_call(
                            Endpoint::Details,
                            &uid,
                            &format!("accounts/{uid}/details"),
                            &uid,
                            true,
                        )
                        .await?;
                    let o = v
                        .as_object()
                        .ok_or_else(|| malformed("details", "not a JSON object"))?;
                    let k = known_account(o)?;
                    self.saved.accounts.insert(uid.clone(), k.clone());
                    k
                }
            };
            if out.iter().any(|a| a.provider_id == known.key) {
                continue;
            }
            let iban = match &known.iban {
                Some(i) => Some(
                    Iban::parse(i).map_err(|e| malformed("account", format!("IBAN {i:?}: {e}")))?,
                ),
                None => None,
            };
            out.push(FetchedAccount {
                provider_id: known.key.clone(),
                iban,
                currency: known
                    .currency
                    .parse()
                    .map_err(|_| malformed("account", format!("currency {:?}", known.currency)))?,
                name: known.name.clone(),
                kind: known.kind.clone(),
                raw: known.raw.clone(),
            });
        }
        Ok(out)
    }

    async fn window(
        &mut self,
        account: &FetchedAccount,
        window: DateWindow,
    ) -> Result<WindowPage, ConnectorError> {
        let uid = self.uid_of(account).ok_or_else(|| {
            relink_needed(&format!(
                "account {} is not in this connection's session",
                account.provider_id
            ))
        })?;
        let label = account.provider_id.clone();
        let today = self.today();
        let mut page = WindowPage::default();
        let first = format!(
            "accounts/{uid}/transactions?date_from={}&date_to={}",
            window.from, window.to
        );
        let mut path = first.clone();
        for n in 0..MAX_PAGES {
            let v = self
                .account_call(Endpoint::Transactions, &uid, &path, &label, n == 0)
                .await?;
            let list = v
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
            match v
                .get("continuation_key")
                .and_then(Value::as_str)
                .filter(|k| !k.is_empty())
            {
                Some(key) => {
                    let key: String =
                        url::form_urlencoded::byte_serialize(key.as_bytes()).collect();
                    path = format!("{first}&continuation_key={key}");
                }
                None => {
                    if window.to >= today {
                        match self
                            .account_call(
                                Endpoint::Balances,
                                &uid,
                                &format!("accounts/{uid}/balances"),
                                &label,
                                true,
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
                    return Ok(page);
                }
            }
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
    fn amounts_take_their_sign_from_the_indicator() {
        let today = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        let t = json!({"transaction_amount": {"currency": "EUR", "amount": "12.30"},
                       "credit_debit_indicator": "DBIT", "status": "BOOK", "entry_reference": "E1",
                       "booking_date": "2026-02-27", "creditor": {"name": "Shop"},
                       "remittance_information": ["Card", "purchase"]});
        let m = map_transaction(&t, today).unwrap().unwrap();
        assert_eq!(m.amount.to_string(), "-12.30");
        assert_eq!(m.counterparty_name.as_deref(), Some("Shop"));
        assert_eq!(m.remittance_info.as_deref(), Some("Card purchase"));
        assert_eq!(m.provider_id.as_deref(), Some("E1"));
        let p = json!({"transaction_amount": {"currency": "EUR", "amount": "5"},
                       "credit_debit_indicator": "CRDT", "status": "PDNG", "transaction_id": "T9",
                       "value_date": "2026-02-28"});
        let m = map_transaction(&p, today).unwrap().unwrap();
        assert_eq!(
            (m.status, m.amount.to_string().as_str()),
            (TxStatus::Pending, "5")
        );
        assert_eq!(m.provider_id.as_deref(), Some("T9"));
        let gone = json!({"transaction_amount": {"currency": "EUR", "amount": "5"},
                          "credit_debit_indicator": "CRDT", "status": "CNCL"});
        assert!(map_transaction(&gone, today).unwrap().is_none());
    }

    #[test]
    fn the_application_jwt_names_the_key_and_lives_an_hour() {
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
        let jwt = application_jwt("app-1", &key, 1_700_000_000, 3600);
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(
            header,
            json!({"typ": "JWT", "alg": "RS256", "kid": "app-1"})
        );
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            3600
        );
        use rsa::signature::Verifier;
        let sig = rsa::pkcs1v15::Signature::try_from(
            URL_SAFE_NO_PAD.decode(parts[2]).unwrap().as_slice(),
        )
        .unwrap();
        rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key.to_public_key())
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .unwrap();
    }

    #[test]
    fn settings_need_the_bank_and_a_key_that_reads() {
        let mut o = BTreeMap::new();
        assert!(
            Settings::from_options(&o)
                .unwrap_err()
                .contains("aspsp_name")
        );
        o.insert("aspsp_name".into(), "Sandbox Pankki".into());
        o.insert("aspsp_country".into(), "fi".into());
        let s = Settings::from_options(&o).unwrap();
        assert_eq!((s.aspsp_country.as_str(), s.daily_limit), ("FI", 4));
        let mut settings = ConnectionSettings::new(DEFAULT_BASE_URL, "app");
        settings.options = o;
        let e = EnableBankingConnector::new(
            &settings,
            Credentials::with_password(Secret::new("not a key".into())),
        )
        .unwrap_err();
        assert!(e.contains("PEM"), "{e}");
    }
}
