//! Berlin Group NextGenPSD2 (XS2A 1.3.x) account information: the
//! standard open-banking API of most European banks.
//!
//! A sync needs a valid *consent*. Login checks the one kept from earlier
//! runs (`GET /v1/consents/{id}/status`); without one it creates a consent
//! (`POST /v1/consents`, all accounts, recurring, `validUntil` and
//! `frequencyPerDay` from the connection's options) and starts its
//! authorisation the way the bank's `_links` say:
//!
//! - *embedded*: `startAuthorisationWithPsuAuthentication` with the PSU's
//!   password, a method chosen (`CHIP_OTP` first, then the others), and the
//!   bank's `challengeData` raised as a card-reader challenge (one number: a
//!   login code over it; several: a signature over them) or a one-time code;
//! - *decoupled*: `startAuthorisationWithPsuIdentification`; a BankID
//!   autostart token in `challengeData.data` becomes a BankID challenge,
//!   anything else a decoupled approval; the status is polled;
//! - *redirect*: `scaRedirect` becomes a redirect challenge; the status is
//!   polled once the user is back.
//!
//! Accounts are keyed by IBAN (the bank's `resourceId` can change with a new
//! consent), transactions are read with `bookingStatus=both` over the
//! engine's window, following `_links.next`. Every request carries a fresh
//! `X-Request-ID`; account-information calls carry `Consent-ID`, and
//! `PSU-IP-Address` only while the user is present. Calls without the user
//! count against the consent's `frequencyPerDay` per endpoint and account:
//! the connector keeps the count (in its session, per bank day) and stops
//! with [`ConnectorError::BudgetExhausted`] before the bank would refuse.
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bankbridge_core::{
    Attendance, Balance, BalanceKind, ConnectionSettings, Connector, ConnectorError,
    ConnectorLimits, Credentials, Currency, DateWindow, FetchedAccount, FetchedTransaction, Iban,
    ScaAnswer, ScaChallenge, ScaProgress, Secret, TxStatus, WindowPage, clean_label, parse_decimal,
};
use chrono::{Days, NaiveDate, Utc};
use chrono_tz::Tz;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use url::Url;

use crate::common::{
    clock_skew_secs, date, excerpt, malformed, parse_json, status_error, text, transport,
};

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `frequencyPerDay` asked for: the most the RTS allows without an agreement.
pub const DEFAULT_FREQUENCY_PER_DAY: u32 = 4;
/// Default consent length asked for, in days.
pub const DEFAULT_CONSENT_DAYS: u32 = 90;
/// Default history the bank serves, in days (most serve at least 13 months).
pub const DEFAULT_HISTORY_DAYS: u32 = 730;
/// `_links.next` pages followed at most for one window.
const MAX_PAGES: usize = 10_000;
const USER_AGENT: &str = concat!("bankbridge/", env!("CARGO_PKG_VERSION"));

/// How a bank asks for strong customer authentication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Approach {
    Embedded,
    Decoupled,
    Redirect,
}

impl Approach {
    pub fn parse(s: &str) -> Option<Approach> {
        match s.to_ascii_lowercase().as_str() {
            "embedded" => Some(Approach::Embedded),
            "decoupled" => Some(Approach::Decoupled),
            "redirect" => Some(Approach::Redirect),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Approach::Embedded => "embedded",
            Approach::Decoupled => "decoupled",
            Approach::Redirect => "redirect",
        }
    }
}

/// What bankbridge knows about one bank's NextGenPSD2 API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BankProfile {
    /// `--bank` takes this name.
    pub name: &'static str,
    pub title: &'static str,
    /// The path under the server that the sandbox serves it at, when it is
    /// one of the sandbox's banks.
    pub sandbox_path: Option<&'static str>,
    pub approach: Approach,
    /// `POST /v1/consents` needs `PSU-ID` (the username).
    pub psu_id: bool,
    /// Where the bank keeps its books (its "today").
    pub zone: &'static str,
    pub history_days: u32,
}

/// Banks known by name (`--bank`); any other bank is configured with
/// `--base-url` and the options.
pub const BANKS: &[BankProfile] = &[
    BankProfile {
        name: "sandbox-be",
        title: "The sandbox's Belgian-style bank (embedded SCA, card reader)",
        sandbox_path: Some("/xs2a/be"),
        approach: Approach::Embedded,
        psu_id: true,
        zone: "Europe/Brussels",
        history_days: DEFAULT_HISTORY_DAYS,
    },
    BankProfile {
        name: "sandbox-se",
        title: "The sandbox's Swedish-style bank (decoupled SCA, BankID)",
        sandbox_path: Some("/xs2a/se"),
        approach: Approach::Decoupled,
        psu_id: true,
        zone: "Europe/Stockholm",
        history_days: DEFAULT_HISTORY_DAYS,
    },
    BankProfile {
        name: "sandbox-redirect",
        title: "The sandbox's German-style bank (redirect SCA)",
        sandbox_path: Some("/xs2a/redirect"),
        approach: Approach::Redirect,
        psu_id: false,
        zone: "Europe/Berlin",
        history_days: DEFAULT_HISTORY_DAYS,
    },
];

pub fn bank(name: &str) -> Option<&'static BankProfile> {
    BANKS.iter().find(|b| b.name == name)
}

/// Option names the connector reads from [`ConnectionSettings::options`].
pub mod option {
    /// A name from [`super::BANKS`]: its settings are the defaults.
    pub const BANK: &str = "bank";
    /// `embedded`, `decoupled` or `redirect`: the approach to prefer.
    pub const SCA_APPROACH: &str = "sca_approach";
    /// `true`: send the username as `PSU-ID`.
    pub const PSU_ID: &str = "psu_id";
    /// IANA zone of the bank's books.
    pub const TIMEZONE: &str = "timezone";
    /// Days of history the bank serves.
    pub const HISTORY_DAYS: &str = "history_days";
    /// `frequencyPerDay` to ask for.
    pub const FREQUENCY_PER_DAY: &str = "frequency_per_day";
    /// Consent length to ask for, in days.
    pub const CONSENT_DAYS: &str = "consent_days";
    /// `PSU-IP-Address` to send while the user is present (default: this
    /// machine's loopback address, as the TPP's own address).
    pub const PSU_IP_ADDRESS: &str = "psu_ip_address";
    /// `TPP-Redirect-URI` when the run itself offers none.
    pub const REDIRECT_URI: &str = "redirect_uri";
    /// PEM file of CA certificates to trust for the bank (besides the system's).
    pub const SERVER_CA: &str = "server_ca";
}

/// Credential fields the connector reads beside `password`.
pub mod credential {
    /// The TPP's client certificate chain and key as one PEM bundle.
    pub const TPP_IDENTITY_PEM: &str = "tpp_identity_pem";
}

/// The settings of one connection, resolved from options and the bank's profile.
#[derive(Clone, Debug, PartialEq)]
pub struct BankSettings {
    pub approach: Option<Approach>,
    pub psu_id: bool,
    pub zone: Tz,
    pub history_days: u32,
    pub frequency_per_day: u32,
    pub consent_days: u32,
    pub psu_ip: String,
    pub redirect_uri: Option<String>,
    pub server_ca: Option<String>,
}

impl BankSettings {
    pub fn from_options(options: &BTreeMap<String, String>) -> Result<BankSettings, String> {
        let profile = match options.get(option::BANK) {
            None => None,
            Some(name) => Some(bank(name).ok_or_else(|| {
                format!(
                    "unknown bank {name:?}: known banks are {}",
                    BANKS.iter().map(|b| b.name).collect::<Vec<_>>().join(", ")
                )
            })?),
        };
        let number = |key: &str, default: u32, range: std::ops::RangeInclusive<u32>| match options
            .get(key)
        {
            None => Ok(default),
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(|| {
                    format!(
                        "{key} must be a number from {} to {}",
                        range.start(),
                        range.end()
                    )
                }),
        };
        let approach = match options.get(option::SCA_APPROACH) {
            Some(a) => Some(Approach::parse(a).ok_or_else(|| {
                format!(
                    "{} must be embedded, decoupled or redirect",
                    option::SCA_APPROACH
                )
            })?),
            None => profile.map(|p| p.approach),
        };
        let psu_id = match options.get(option::PSU_ID).map(String::as_str) {
            Some("true") => true,
            Some("false") => false,
            Some(other) => {
                return Err(format!(
                    "{} must be true or false, not {other:?}",
                    option::PSU_ID
                ));
            }
            None => profile.is_none_or(|p| p.psu_id),
        };
        let zone_name = options
            .get(option::TIMEZONE)
            .map(String::as_str)
            .or(profile.map(|p| p.zone))
            .unwrap_or("UTC");
        let zone: Tz = zone_name
            .parse()
            .map_err(|_| format!("{zone_name:?} is not an IANA time zone"))?;
        let psu_ip = options
            .get(option::PSU_IP_ADDRESS)
            .cloned()
            .unwrap_or_else(|| "127.0.0.1".to_owned());
        if psu_ip.parse::<std::net::IpAddr>().is_err() {
            return Err(format!("{} must be an IP address", option::PSU_IP_ADDRESS));
        }
        Ok(BankSettings {
            approach,
            psu_id,
            zone,
            history_days: number(
                option::HISTORY_DAYS,
                profile.map_or(DEFAULT_HISTORY_DAYS, |p| p.history_days),
                1..=3650,
            )?,
            frequency_per_day: number(
                option::FREQUENCY_PER_DAY,
                DEFAULT_FREQUENCY_PER_DAY,
                1..=100,
            )?,
            consent_days: number(option::CONSENT_DAYS, DEFAULT_CONSENT_DAYS, 1..=365)?,
            psu_ip,
            redirect_uri: options.get(option::REDIRECT_URI).cloned(),
            server_ca: options.get(option::SERVER_CA).cloned(),
        })
    }
}

/// The consent as last seen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentState {
    pub id: String,
    /// `consentStatus` as the bank said it.
    pub status: String,
    pub valid_until: Option<NaiveDate>,
    pub frequency_per_day: Option<u32>,
}

/// Unattended calls made on one bank day, by endpoint and account.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Budget {
    day: Option<NaiveDate>,
    used: BTreeMap<String, u32>,
}

/// What is kept between runs (sealed by the engine): no secret of the
/// user's, only the consent's id (which the bank ties to this TPP).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Saved {
    consent: Option<ConsentState>,
    /// Our account key (IBAN) → the bank's `resourceId` under this consent.
    #[serde(default)]
    accounts: BTreeMap<String, String>,
    #[serde(default)]
    budget: Budget,
}

/// An authorisation the engine's solver is answering.
#[derive(Clone, Debug)]
enum Pending {
    /// A code goes to `href` (`PUT scaAuthenticationData`).
    Code { href: String },
    /// The status at `href` is polled until final.
    Poll { href: String },
}

/// The NextGenPSD2 connector.
pub struct Xs2aConnector {
    base: Url,
    username: String,
    password: Option<Secret<String>>,
    bank: BankSettings,
    has_card: bool,
    http: reqwest::Client,
    attendance: Attendance,
    saved: Saved,
    pending: Option<Pending>,
    skew: AtomicI64,
}

impl fmt::Debug for Xs2aConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Xs2aConnector")
            .field("base_url", &self.base.as_str())
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("consent", &self.saved.consent.as_ref().map(|c| &c.status))
            .finish_non_exhaustive()
    }
}

/// A refusal in NextGenPSD2's shape, read from the body.
struct TppMessage {
    code: String,
    text: String,
}

fn tpp_message(body: &[u8]) -> Option<TppMessage> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let first = v
        .get("tppMessages")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .cloned()
        // The RFC 7807 variant some banks use.
        .or_else(|| v.get("code").is_some().then(|| v.clone()))?;
    Some(TppMessage {
        code: first.get("code").and_then(Value::as_str)?.to_owned(),
        text: first
            .get("text")
            .or_else(|| first.get("detail"))
            .and_then(Value::as_str)
            .map(excerpt)
            .unwrap_or_default(),
    })
}

/// The engine's window and the consent's budget key of one call.
enum Call<'a> {
    /// Consent and authorisation calls: never counted.
    Consent,
    /// An account-information call, counted per this key when unattended.
    Ais { key: &'a str },
    /// A page after the first of one query: part of that access.
    NextPage,
}

impl Xs2aConnector {
    pub fn new(settings: &ConnectionSettings, credentials: Credentials) -> Result<Self, String> {
        let bank = BankSettings::from_options(&settings.options)?;
        let mut base = Url::parse(settings.base_url.trim_end_matches('/'))
            .map_err(|e| format!("base_url: {e}"))?;
        // Relative paths resolve under the base: `.../xs2a/be/` + `v1/accounts`.
        base.set_path(&format!("{}/", base.path().trim_end_matches('/')));
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(DEFAULT_TIMEOUT)
            .connect_timeout(Duration::from_secs(20))
            .user_agent(USER_AGENT);
        if let Some(pem) = credentials.get(credential::TPP_IDENTITY_PEM) {
            let identity = reqwest::Identity::from_pem(pem.expose().as_bytes()).map_err(|e| {
                format!("the TPP certificate and key are not usable PEM (the chain, then a PKCS#8, RSA or EC key): {e}")
            })?;
            builder = builder.identity(identity);
        }
        if let Some(path) = &bank.server_ca {
            let pem = std::fs::read(path).map_err(|e| format!("server_ca {path}: {e}"))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("server_ca {path}: not PEM certificates: {e}"))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
        Ok(Xs2aConnector {
            base,
            username: settings.username.clone(),
            password: credentials.get("password").cloned(),
            bank,
            has_card: settings.sca_card.is_some(),
            http,
            attendance: Attendance::default(),
            saved: Saved::default(),
            pending: None,
            skew: AtomicI64::new(0),
        })
    }

    /// The consent as last seen (for tests and the status line).
    pub fn consent(&self) -> Option<&ConsentState> {
        self.saved.consent.as_ref()
    }

    fn url(&self, href: &str) -> Result<Url, ConnectorError> {
        let joined = if href.starts_with("http://") || href.starts_with("https://") {
            Url::parse(href)
        } else if let Some(rooted) = href.strip_prefix('/') {
            // Rooted at the server: the bank's own prefix is in the href.
            let mut u = self.base.clone();
            u.set_path("");
            u.set_query(None);
            u.join(rooted)
        } else {
            self.base.join(href)
        };
        let url = joined.map_err(|e| malformed("link", format!("{href:?}: {e}")))?;
        // Never follow a bank's link off to another host with our certificate.
        if url.origin() != self.base.origin() {
            return Err(malformed(
                "link",
                format!(
                    "{href:?} leaves the bank's host {}",
                    self.base.origin().ascii_serialization()
                ),
            ));
        }
        Ok(url)
    }

    fn budget_day(&self) -> NaiveDate {
        self.today()
    }

    /// Refuse an unattended call the consent's budget has no room for.
    fn check_budget(&mut self, key: &str) -> Result<(), ConnectorError> {
        if self.attendance.psu_present {
            return Ok(());
        }
        let day = self.budget_day();
        if self.saved.budget.day != Some(day) {
            self.saved.budget = Budget {
                day: Some(day),
                used: BTreeMap::new(),
            };
        }
        let limit = self.frequency();
        if self.saved.budget.used.get(key).copied().unwrap_or(0) >= limit {
            tracing::info!(endpoint = key, limit, "the consent's daily budget is spent");
            return Err(ConnectorError::BudgetExhausted(limit));
        }
        Ok(())
    }

    fn count(&mut self, key: &str) {
        if !self.attendance.psu_present {
            *self.saved.budget.used.entry(key.to_owned()).or_default() += 1;
        }
    }

    fn frequency(&self) -> u32 {
        self.saved
            .consent
            .as_ref()
            .and_then(|c| c.frequency_per_day)
            .unwrap_or(self.bank.frequency_per_day)
    }

    /// One request: headers, budget, status mapping; the JSON answer.
    async fn send(
        &mut self,
        method: Method,
        url: Url,
        what: &str,
        call: Call<'_>,
        body: Option<Value>,
        extra: &[(&str, String)],
    ) -> Result<(StatusCode, reqwest::header::HeaderMap, Value), ConnectorError> {
        if let Call::Ais { key } = call {
            self.check_budget(key)?;
        }
        let mut req = self
            .http
            .request(method, url)
            .header("X-Request-ID", uuid::Uuid::new_v4().to_string())
            .header(reqwest::header::ACCEPT, "application/json");
        let ais = !matches!(call, Call::Consent);
        if ais {
            if let Some(c) = &self.saved.consent {
                req = req.header("Consent-ID", &c.id);
            }
            if self.attendance.psu_present {
                req = req.header("PSU-IP-Address", &self.bank.psu_ip);
            }
        }
        for (name, value) in extra {
            req = req.header(*name, value);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| transport("xs2a", what, &e, false))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        if let Some(skew) = clock_skew_secs(&headers) {
            self.skew.store(skew, Ordering::Relaxed);
        }
        // The bank may count every call that reached it (a body cut short
        // was served all the same): so do we, to stay under its count.
        if let Call::Ais { key } = call
            && status != StatusCode::TOO_MANY_REQUESTS
        {
            self.count(key);
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| transport("xs2a", what, &e, true))?;
        if status.is_success() {
            let value = if bytes.is_empty() {
                Value::Null
            } else {
                parse_json(what, &bytes)?
            };
            return Ok((status, headers, value));
        }
        Err(self.refusal(what, status, &headers, &bytes))
    }

    /// A refused call as a typed error.
    fn refusal(
        &mut self,
        what: &str,
        status: StatusCode,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
    ) -> ConnectorError {
        let message = tpp_message(body);
        let code = message.as_ref().map_or("", |m| m.code.as_str());
        let said = message
            .as_ref()
            .map(|m| format!("{} ({})", m.code, m.text))
            .unwrap_or_else(|| format!("HTTP {status}"));
        match code {
            "ACCESS_EXCEEDED" => {
                // The bank counted more than we did (another client on
                // this consent, or counts lost in a crash): spent all the same.
                return ConnectorError::BudgetExhausted(self.frequency());
            }
            "CONSENT_EXPIRED" | "CONSENT_INVALID" | "CONSENT_UNKNOWN" => {
                if let Some(c) = self.saved.consent.as_mut() {
                    c.status = match code {
                        "CONSENT_EXPIRED" => "expired",
                        "CONSENT_UNKNOWN" => "unknown",
                        _ => "invalid",
                    }
                    .to_owned();
                }
                return ConnectorError::NeedsUser(format!(
                    "the bank no longer accepts this connection's consent ({said}); give a new one: \
                     sync where you can authenticate (a terminal, or the dashboard)"
                ));
            }
            "PSU_CREDENTIALS_INVALID" => {
                return ConnectorError::InvalidCredentials(said);
            }
            "PERIOD_INVALID" => {
                return ConnectorError::Malformed {
                    what: what.to_owned(),
                    detail: format!("the bank refused the dates: {said}"),
                };
            }
            _ => {}
        }
        if let Some(e) = status_error(what, status, headers) {
            return e;
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return ConnectorError::Other(format!(
                "{what}: the bank refused the request: {said}. Check the TPP certificate and the connection's settings"
            ));
        }
        ConnectorError::Other(format!("{what}: the bank refused the request: {said}"))
    }

    // ---- consent and SCA ----

    fn can_give_consent(&self) -> bool {
        self.attendance.psu_present
            || (self.has_card && self.bank.approach.is_none_or(|a| a == Approach::Embedded))
    }

    fn sca_headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![("PSU-IP-Address", self.bank.psu_ip.clone())];
        if self.bank.psu_id {
            h.push(("PSU-ID", self.username.clone()));
        }
        match self.bank.approach {
            Some(Approach::Redirect) => h.push(("TPP-Redirect-Preferred", "true".into())),
            Some(Approach::Decoupled) => {
                h.push(("TPP-Redirect-Preferred", "false".into()));
                h.push(("TPP-Decoupled-Preferred", "true".into()));
            }
            Some(Approach::Embedded) => {
                h.push(("TPP-Redirect-Preferred", "false".into()));
                h.push(("TPP-Decoupled-Preferred", "false".into()));
            }
            None => {}
        }
        if let Some(uri) = self
            .attendance
            .redirect_uri
            .as_ref()
            .or(self.bank.redirect_uri.as_ref())
        {
            h.push(("TPP-Redirect-URI", uri.clone()));
        }
        h
    }

    /// `POST /v1/consents`, then the first step of its authorisation; ends
    /// in [`ConnectorError::ScaRequired`] unless the bank needs none.
    async fn create_consent(&mut self) -> Result<(), ConnectorError> {
        let valid_until = self.today() + Days::new(u64::from(self.bank.consent_days));
        let body = json!({
            "access": {"balances": [], "transactions": []},
            "recurringIndicator": true,
            "validUntil": valid_until.to_string(),
            "frequencyPerDay": self.bank.frequency_per_day,
            "combinedServiceIndicator": false,
        });
        let headers = self.sca_headers();
        let url = self.url("v1/consents")?;
        let (_, _, answer) = self
            .send(
                Method::POST,
                url,
                "consent",
                Call::Consent,
                Some(body),
                &headers,
            )
            .await?;
        let obj = answer
            .as_object()
            .ok_or_else(|| malformed("consent", "not a JSON object"))?;
        let id = text(obj, "consentId")
            .ok_or_else(|| malformed("consent", "no consentId"))?
            .to_owned();
        let status = text(obj, "consentStatus").unwrap_or("received").to_owned();
        tracing::info!(consent = %id, %status, "consent created");
        self.saved.consent = Some(ConsentState {
            id: id.clone(),
            status: status.clone(),
            valid_until: Some(valid_until),
            frequency_per_day: Some(self.bank.frequency_per_day),
        });
        // A new consent may come with new account ids.
        self.saved.accounts.clear();
        if status == "valid" {
            return self.read_consent().await;
        }
        self.start_authorisation(obj).await
    }

    async fn start_authorisation(
        &mut self,
        consent: &Map<String, Value>,
    ) -> Result<(), ConnectorError> {
        let links = consent.get("_links").and_then(Value::as_object);
        let href = |name: &str| {
            links
                .and_then(|l| l.get(name))
                .and_then(|l| l.get("href"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        if let Some(redirect) = href("scaRedirect") {
            let status = href("scaStatus").or_else(|| href("status"));
            return self.redirect(redirect, status);
        }
        if let Some(start) = href("startAuthorisationWithPsuAuthentication") {
            let password = self.password.clone().ok_or_else(|| {
                ConnectorError::InvalidCredentials(
                    "the bank asks for the online-banking password and this connection has none"
                        .into(),
                )
            })?;
            let url = self.url(&start)?;
            let headers = self.sca_headers();
            let (_, _, answer) = self
                .send(
                    Method::POST,
                    url,
                    "authorisation",
                    Call::Consent,
                    Some(json!({"psuData": {"password": password.expose()}})),
                    &headers,
                )
                .await?;
            return self.embedded_step(&answer).await;
        }
        let start = href("startAuthorisationWithPsuIdentification")
            .or_else(|| href("startAuthorisation"))
            .ok_or_else(|| {
                malformed(
                    "consent",
                    "no way to authorise it: none of scaRedirect, startAuthorisation… in _links",
                )
            })?;
        let url = self.url(&start)?;
        let headers = self.sca_headers();
        let (_, _, answer) = self
            .send(
                Method::POST,
                url,
                "authorisation",
                Call::Consent,
                Some(json!({})),
                &headers,
            )
            .await?;
        let obj = answer
            .as_object()
            .ok_or_else(|| malformed("authorisation", "not a JSON object"))?;
        if let Some(redirect) = obj
            .get("_links")
            .and_then(|l| l.get("scaRedirect"))
            .and_then(|l| l.get("href"))
            .and_then(Value::as_str)
        {
            let status = self.status_href(obj);
            return self.redirect(redirect.to_owned(), status);
        }
        let status = self
            .status_href(obj)
            .ok_or_else(|| malformed("authorisation", "no scaStatus link"))?;
        self.pending = Some(Pending::Poll { href: status });
        Err(ConnectorError::ScaRequired(decoupled_challenge(obj)))
    }

    fn status_href(&self, obj: &Map<String, Value>) -> Option<String> {
        obj.get("_links")
            .and_then(|l| l.get("scaStatus").or_else(|| l.get("self")))
            .and_then(|l| l.get("href"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    fn redirect(&mut self, url: String, status: Option<String>) -> Result<(), ConnectorError> {
        let status =
            status.ok_or_else(|| malformed("consent", "a redirect without a scaStatus link"))?;
        // The browser goes wherever the bank says, but only over https
        // (or http on this machine, for the sandbox).
        bankbridge_core::net::secure_url(&url, "scaRedirect")
            .map_err(|e| malformed("consent", e))?;
        self.pending = Some(Pending::Poll { href: status });
        Err(ConnectorError::ScaRequired(ScaChallenge::Redirect { url }))
    }

    /// After the password: choose a method if asked, then raise the challenge.
    async fn embedded_step(&mut self, answer: &Value) -> Result<(), ConnectorError> {
        let obj = answer
            .as_object()
            .ok_or_else(|| malformed("authorisation", "not a JSON object"))?;
        let status_href = self.status_href(obj);
        let link = |name: &str| {
            obj.get("_links")
                .and_then(|l| l.get(name))
                .and_then(|l| l.get("href"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        if obj.get("challengeData").is_some() || obj.get("chosenScaMethod").is_some() {
            let href = link("authoriseTransaction")
                .or(status_href)
                .ok_or_else(|| malformed("authorisation", "no authoriseTransaction link"))?;
            self.pending = Some(Pending::Code { href });
            return Err(ConnectorError::ScaRequired(embedded_challenge(obj)));
        }
        if text(obj, "scaStatus") == Some("finalised") || text(obj, "scaStatus") == Some("exempted")
        {
            return self.read_consent().await;
        }
        let methods = obj
            .get("scaMethods")
            .and_then(Value::as_array)
            .ok_or_else(|| malformed("authorisation", "neither a challenge nor scaMethods"))?;
        let method_of = |kind: &str| {
            methods.iter().find_map(|m| {
                (m.get("authenticationType").and_then(Value::as_str) == Some(kind))
                    .then(|| m.get("authenticationMethodId").and_then(Value::as_str))
                    .flatten()
            })
        };
        // A card reader first (it can answer unattended), then what a person can type.
        let chosen = ["CHIP_OTP", "SMS_OTP", "PHOTO_OTP", "SMTP_OTP", "PUSH_OTP"]
            .iter()
            .find_map(|k| method_of(k))
            .or_else(|| {
                methods
                    .first()
                    .and_then(|m| m.get("authenticationMethodId"))
                    .and_then(Value::as_str)
            })
            .ok_or_else(|| malformed("authorisation", "scaMethods is empty"))?
            .to_owned();
        let href = link("selectAuthenticationMethod")
            .or(status_href)
            .ok_or_else(|| malformed("authorisation", "no selectAuthenticationMethod link"))?;
        let url = self.url(&href)?;
        let headers = self.sca_headers();
        let (_, _, answer) = self
            .send(
                Method::PUT,
                url,
                "SCA method",
                Call::Consent,
                Some(json!({"authenticationMethodId": chosen})),
                &headers,
            )
            .await?;
        let obj = answer
            .as_object()
            .ok_or_else(|| malformed("SCA method", "not a JSON object"))?;
        let href = obj
            .get("_links")
            .and_then(|l| l.get("authoriseTransaction").or_else(|| l.get("scaStatus")))
            .and_then(|l| l.get("href"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or(href);
        self.pending = Some(Pending::Code { href });
        Err(ConnectorError::ScaRequired(embedded_challenge(obj)))
    }

    /// `GET /v1/consents/{id}`: what the bank granted.
    async fn read_consent(&mut self) -> Result<(), ConnectorError> {
        let Some(id) = self.saved.consent.as_ref().map(|c| c.id.clone()) else {
            return Ok(());
        };
        let url = self.url(&format!("v1/consents/{id}"))?;
        let (_, _, v) = self
            .send(Method::GET, url, "consent", Call::Consent, None, &[])
            .await?;
        let c = self.saved.consent.get_or_insert_with(ConsentState::default);
        if let Some(s) = v.get("consentStatus").and_then(Value::as_str) {
            c.status = s.to_owned();
        }
        if let Some(d) = v
            .get("validUntil")
            .and_then(Value::as_str)
            .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
        {
            c.valid_until = Some(d);
        }
        if let Some(f) = v.get("frequencyPerDay").and_then(Value::as_u64) {
            c.frequency_per_day = Some(f as u32);
        }
        Ok(())
    }

    /// The consent's status now, from the bank; `None` when the bank does
    /// not know it.
    async fn consent_status(&mut self, id: &str) -> Result<Option<String>, ConnectorError> {
        let url = self.url(&format!("v1/consents/{id}/status"))?;
        match self
            .send(Method::GET, url, "consent status", Call::Consent, None, &[])
            .await
        {
            Ok((_, _, v)) => Ok(v
                .get("consentStatus")
                .and_then(Value::as_str)
                .map(str::to_owned)),
            Err(ConnectorError::NeedsUser(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn ais(
        &mut self,
        href: &str,
        what: &str,
        call: Call<'_>,
    ) -> Result<Value, ConnectorError> {
        let url = self.url(href)?;
        let (_, _, v) = self.send(Method::GET, url, what, call, None, &[]).await?;
        Ok(v)
    }

    async fn resource_id(&mut self, account: &FetchedAccount) -> Result<String, ConnectorError> {
        if let Some(id) = self.saved.accounts.get(&account.provider_id) {
            return Ok(id.clone());
        }
        // A new consent: learn its ids.
        self.accounts().await?;
        self.saved
            .accounts
            .get(&account.provider_id)
            .cloned()
            .ok_or_else(|| {
                ConnectorError::NeedsUser(format!(
                    "the bank no longer lists account {} under this consent; give a new consent that covers it",
                    account.provider_id
                ))
            })
    }
}

/// The challenge of an embedded step: a card reader for `CHIP_OTP`, else a code.
fn embedded_challenge(obj: &Map<String, Value>) -> ScaChallenge {
    let kind = obj
        .get("chosenScaMethod")
        .and_then(|m| m.get("authenticationType"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let data: Vec<String> = obj
        .get("challengeData")
        .and_then(|c| c.get("data"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let info = obj
        .get("challengeData")
        .and_then(|c| c.get("additionalInformation"))
        .and_then(Value::as_str)
        .or_else(|| obj.get("psuMessage").and_then(Value::as_str))
        .map(excerpt);
    let digits = |s: &String| s.bytes().all(|b| b.is_ascii_digit());
    if kind == "CHIP_OTP" && data.iter().all(digits) {
        return match data.len() {
            0 => ScaChallenge::CardReaderLogin { challenge: None },
            1 => ScaChallenge::CardReaderLogin {
                challenge: data.into_iter().next(),
            },
            _ => ScaChallenge::CardReaderSign { numbers: data },
        };
    }
    ScaChallenge::Otp {
        prompt: info.unwrap_or_else(|| {
            format!(
                "the code of {}",
                if kind.is_empty() { "the bank" } else { kind }
            )
        }),
    }
}

/// The challenge of a decoupled start: BankID when the bank hands out a token.
fn decoupled_challenge(obj: &Map<String, Value>) -> ScaChallenge {
    let data: Vec<&str> = obj
        .get("challengeData")
        .and_then(|c| c.get("data"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let token = |s: &str| uuid::Uuid::parse_str(s).is_ok();
    if let Some(first) = data.first().filter(|s| token(s)) {
        let qr =
            (data.len() >= 3 && token(data[1])).then(|| (data[1].to_owned(), data[2].to_owned()));
        return ScaChallenge::BankId {
            auto_start_token: (*first).to_owned(),
            qr_start_token: qr.as_ref().map(|q| q.0.clone()),
            qr_start_secret: qr.map(|q| Secret::new(q.1)),
        };
    }
    ScaChallenge::Decoupled {
        message: obj
            .get("psuMessage")
            .and_then(Value::as_str)
            .map(excerpt)
            .unwrap_or_else(|| "approve the request in your bank's app".to_owned()),
        poll_after_secs: 2,
        reference: None,
        expires_at: None,
    }
}

fn amount_of(v: &Value, what: &str) -> Result<(rust_decimal::Decimal, Currency), ConnectorError> {
    let amount = v
        .get("amount")
        .and_then(Value::as_str)
        .and_then(parse_decimal)
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

/// The remittance text: unstructured, its array, or the structured reference
/// (a string in 1.3.4, an object since 1.3.9).
fn remittance(t: &Map<String, Value>) -> Option<String> {
    if let Some(s) = text(t, "remittanceInformationUnstructured") {
        return Some(s.to_owned());
    }
    if let Some(a) = t
        .get("remittanceInformationUnstructuredArray")
        .and_then(Value::as_array)
    {
        let joined: Vec<&str> = a.iter().filter_map(Value::as_str).collect();
        if !joined.is_empty() {
            return Some(joined.join(" "));
        }
    }
    match t.get("remittanceInformationStructured") {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Some(Value::Object(o)) => text(o, "reference").map(str::to_owned),
        _ => None,
    }
}

/// One Berlin Group transaction in our model.
pub fn map_transaction(
    t: &Value,
    status: TxStatus,
    today: NaiveDate,
) -> Result<FetchedTransaction, ConnectorError> {
    let obj = t
        .as_object()
        .ok_or_else(|| malformed("transactions", "a transaction is not an object"))?;
    let (amount, currency) = amount_of(
        obj.get("transactionAmount")
            .ok_or_else(|| malformed("transactions", "a transaction without transactionAmount"))?,
        "transactions",
    )?;
    let value_date = date(obj.get("valueDate")).or_else(|| date(obj.get("valueDateTime")));
    let booking = date(obj.get("bookingDate")).or_else(|| date(obj.get("bookingDateTime")));
    let booking_date = match (status, booking) {
        (_, Some(d)) => d,
        (TxStatus::Pending, None) => value_date
            .or_else(|| date(obj.get("transactionDate")))
            .unwrap_or(today),
        (_, None) => value_date
            .ok_or_else(|| malformed("transactions", "a booked transaction without bookingDate"))?,
    };
    let (name_key, account_key) = if amount.is_sign_negative() {
        ("creditorName", "creditorAccount")
    } else {
        ("debtorName", "debtorAccount")
    };
    let counterparty_name = text(obj, name_key).map(str::to_owned);
    let counterparty_iban = obj
        .get(account_key)
        .and_then(|a| a.get("iban"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let remittance_info = remittance(obj);
    let bank_code = text(obj, "bankTransactionCode")
        .or_else(|| text(obj, "proprietaryBankTransactionCode"))
        .map(str::to_owned);
    let raw_label = remittance_info
        .clone()
        .or_else(|| counterparty_name.clone())
        .or_else(|| text(obj, "additionalInformation").map(str::to_owned))
        .or_else(|| bank_code.clone())
        .unwrap_or_default();
    let provider_id = match status {
        TxStatus::Pending => text(obj, "transactionId").or_else(|| text(obj, "entryReference")),
        _ => text(obj, "entryReference").or_else(|| text(obj, "transactionId")),
    }
    .map(str::to_owned);
    let (original_amount, original_currency) = match obj
        .get("currencyExchange")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(|x| x.get("instructedAmount").or_else(|| x.get("sourceAmount")))
        .map(|v| amount_of(v, "transactions"))
    {
        Some(Ok((a, c))) => (Some(a), Some(c)),
        _ => (None, None),
    };
    Ok(FetchedTransaction {
        provider_id,
        status,
        booking_date,
        value_date,
        transaction_date: date(obj.get("transactionDate")),
        amount,
        currency,
        original_amount,
        original_currency,
        label: clean_label(&raw_label),
        raw_label,
        counterparty_name,
        counterparty_iban,
        remittance_info,
        bank_code,
        running_balance: obj
            .get("balanceAfterTransaction")
            .and_then(|b| b.get("balanceAmount"))
            .and_then(|a| a.get("amount"))
            .and_then(Value::as_str)
            .and_then(parse_decimal),
        raw: t.clone(),
    })
}

/// Berlin Group balances in our model (unknown types left out).
pub(crate) fn map_balances(v: &Value, today: NaiveDate) -> Vec<Balance> {
    let Some(list) = v.get("balances").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|b| {
            let kind = match b.get("balanceType").and_then(Value::as_str)? {
                "closingBooked" => BalanceKind::ClosingBooked,
                "openingBooked" => BalanceKind::OpeningBooked,
                "interimAvailable" | "forwardAvailable" => BalanceKind::Available,
                _ => return None,
            };
            let (amount, currency) = amount_of(b.get("balanceAmount")?, "balances").ok()?;
            Some(Balance {
                kind,
                amount,
                currency,
                reference_date: date(b.get("referenceDate"))
                    .or_else(|| date(b.get("lastChangeDateTime")))
                    .unwrap_or(today),
            })
        })
        .collect()
}

#[async_trait]
impl Connector for Xs2aConnector {
    fn name(&self) -> &'static str {
        "xs2a"
    }

    fn limits(&self) -> ConnectorLimits {
        ConnectorLimits {
            // Pages follow `_links.next`: a window may be as long as the plan likes.
            max_window_days: None,
            max_history_days: Some(self.bank.history_days),
            sca_after_days: None,
            daily_request_budget: Some(self.frequency()),
        }
    }

    fn today(&self) -> NaiveDate {
        let skew = chrono::Duration::seconds(self.skew.load(Ordering::Relaxed));
        (Utc::now() + skew)
            .with_timezone(&self.bank.zone)
            .date_naive()
    }

    fn attend(&mut self, attendance: &Attendance) {
        self.attendance = attendance.clone();
    }

    fn consent(&self) -> Option<bankbridge_core::ConsentInfo> {
        self.saved
            .consent
            .as_ref()
            .map(|c| bankbridge_core::ConsentInfo {
                status: c.status.clone(),
                valid_until: c.valid_until,
            })
    }

    fn session_state(&self) -> Option<Secret<String>> {
        serde_json::to_string(&self.saved).ok().map(Secret::new)
    }

    fn restore_session(&mut self, state: Secret<String>) {
        match serde_json::from_str::<Saved>(state.expose()) {
            Ok(saved) => self.saved = saved,
            Err(e) => {
                tracing::warn!(error = %e, "the kept xs2a session does not read; starting afresh")
            }
        }
    }

    async fn login(&mut self) -> Result<(), ConnectorError> {
        let kept = self.saved.consent.clone();
        let lapsed = match &kept {
            None => None,
            Some(c) => match self.consent_status(&c.id).await? {
                Some(s) if s == "valid" => {
                    let c = self.saved.consent.as_mut().expect("checked above");
                    c.status = s;
                    if c.frequency_per_day.is_none() || c.valid_until.is_none() {
                        self.read_consent().await?;
                    }
                    return Ok(());
                }
                // An authorisation never finished: start over.
                Some(s) if s == "received" || s == "partiallyAuthorised" => None,
                Some(s) => Some(s),
                None => Some("unknown to the bank".to_owned()),
            },
        };
        if let Some(status) = lapsed {
            if let Some(c) = self.saved.consent.as_mut() {
                c.status = status.clone();
            }
            if !self.can_give_consent() {
                let until = kept
                    .and_then(|c| c.valid_until)
                    .map(|d| format!(" (valid until {d})"))
                    .unwrap_or_default();
                return Err(ConnectorError::NeedsUser(format!(
                    "the bank's consent for this connection is {status}{until}; give a new one: \
                     sync where you can authenticate (a terminal, or the dashboard)"
                )));
            }
            tracing::info!(%status, "the consent lapsed; asking the bank for a new one");
        }
        self.create_consent().await
    }

    async fn resume_sca(&mut self, answer: &ScaAnswer) -> Result<ScaProgress, ConnectorError> {
        let pending = self.pending.clone().ok_or_else(|| {
            ConnectorError::ScaFailed("no authentication is under way".to_owned())
        })?;
        match (answer, pending) {
            (ScaAnswer::Code(code), Pending::Code { href }) => {
                let url = self.url(&href)?;
                let headers = self.sca_headers();
                let result = self
                    .send(
                        Method::PUT,
                        url,
                        "SCA code",
                        Call::Consent,
                        Some(json!({"scaAuthenticationData": code.expose()})),
                        &headers,
                    )
                    .await;
                self.pending = None;
                match result {
                    Ok((_, _, v)) => match v.get("scaStatus").and_then(Value::as_str) {
                        Some("finalised" | "exempted") | None => {
                            self.read_consent().await?;
                            Ok(ScaProgress::Done)
                        }
                        Some(other) => Err(ConnectorError::ScaFailed(format!(
                            "the bank left the authentication {other}"
                        ))),
                    },
                    Err(ConnectorError::InvalidCredentials(said)) => Err(
                        ConnectorError::ScaFailed(format!("the bank refused the code: {said}")),
                    ),
                    Err(e) => Err(e),
                }
            }
            (
                ScaAnswer::Approved | ScaAnswer::Code(_) | ScaAnswer::Returned(_),
                Pending::Poll { href },
            ) => {
                let url = self.url(&href)?;
                let (_, _, v) = self
                    .send(Method::GET, url, "SCA status", Call::Consent, None, &[])
                    .await?;
                match v.get("scaStatus").and_then(Value::as_str) {
                    Some("finalised" | "exempted") => {
                        self.pending = None;
                        self.read_consent().await?;
                        Ok(ScaProgress::Done)
                    }
                    Some("failed") => {
                        self.pending = None;
                        Err(ConnectorError::ScaFailed(
                            "the bank says the authentication failed (declined, expired or cancelled)".into(),
                        ))
                    }
                    Some(_) => Ok(ScaProgress::Pending {
                        poll_after: Duration::from_secs(1),
                    }),
                    None => Err(malformed("SCA status", "no scaStatus")),
                }
            }
            (ScaAnswer::Approved | ScaAnswer::Returned(_), Pending::Code { .. }) => Err(
                ConnectorError::ScaFailed("the bank waits for a code, not an approval".into()),
            ),
            (_, _) => {
                self.pending = None;
                Err(ConnectorError::ScaFailed("declined".into()))
            }
        }
    }

    async fn accounts(&mut self) -> Result<Vec<FetchedAccount>, ConnectorError> {
        let v = self
            .ais("v1/accounts", "account list", Call::Ais { key: "accounts" })
            .await?;
        let list = v
            .get("accounts")
            .and_then(Value::as_array)
            .ok_or_else(|| malformed("account list", "no accounts array"))?;
        let mut out = Vec::with_capacity(list.len());
        let mut ids = BTreeMap::new();
        for a in list {
            let obj = a
                .as_object()
                .ok_or_else(|| malformed("account list", "an account is not an object"))?;
            if text(obj, "status") == Some("deleted") {
                continue;
            }
            let resource_id = text(obj, "resourceId")
                .ok_or_else(|| malformed("account list", "an account without resourceId"))?
                .to_owned();
            let iban = match text(obj, "iban") {
                None => None,
                Some(i) => Some(
                    Iban::parse(i)
                        .map_err(|e| malformed("account list", format!("IBAN {i:?}: {e}")))?,
                ),
            };
            let currency: Currency = text(obj, "currency")
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| malformed("account list", "an account without a currency"))?;
            // The IBAN outlives consents; the resourceId may not.
            let provider_id = iban
                .as_ref()
                .map(|i| i.to_string())
                .or_else(|| text(obj, "bban").map(str::to_owned))
                .unwrap_or_else(|| resource_id.clone());
            ids.insert(provider_id.clone(), resource_id);
            out.push(FetchedAccount {
                provider_id,
                iban,
                currency,
                name: text(obj, "displayName")
                    .or_else(|| text(obj, "name"))
                    .or_else(|| text(obj, "product"))
                    .map(str::to_owned),
                kind: text(obj, "cashAccountType")
                    .or_else(|| text(obj, "product"))
                    .map(str::to_owned),
                raw: a.clone(),
            });
        }
        self.saved.accounts = ids;
        Ok(out)
    }

    async fn window(
        &mut self,
        account: &FetchedAccount,
        window: DateWindow,
    ) -> Result<WindowPage, ConnectorError> {
        let id = self.resource_id(account).await?;
        let today = self.today();
        let mut page = WindowPage::default();
        // Balances only with the window that reaches today: backfill windows
        // would spend the budget on the same numbers.
        if window.to >= today {
            let key = format!("balances:{}", account.provider_id);
            let v = self
                .ais(
                    &format!("v1/accounts/{id}/balances"),
                    "balances",
                    Call::Ais { key: &key },
                )
                .await?;
            page.balances = map_balances(&v, today);
        }
        let key = format!("transactions:{}", account.provider_id);
        let mut href = format!(
            "v1/accounts/{id}/transactions?bookingStatus=both&dateFrom={}&dateTo={}",
            window.from, window.to
        );
        let mut call = Call::Ais { key: &key };
        for _ in 0..MAX_PAGES {
            let v = self.ais(&href, "transactions", call).await?;
            let tx = v
                .get("transactions")
                .ok_or_else(|| malformed("transactions", "no transactions object"))?;
            if tx.get("booked").is_none()
                && tx.get("pending").is_none()
                && v.pointer("/_links/download").is_some()
            {
                return Err(ConnectorError::Unsupported {
                    connector: "xs2a",
                    what: "transaction reports only offered as a download (camt)",
                });
            }
            for (field, status) in [("booked", TxStatus::Booked), ("pending", TxStatus::Pending)] {
                if let Some(list) = tx.get(field).and_then(Value::as_array) {
                    for t in list {
                        let mapped = map_transaction(t, status, today)?;
                        // A bank may list pending rows outside the dates asked for.
                        if window.contains(mapped.booking_date) {
                            page.transactions.push(mapped);
                        }
                    }
                }
            }
            match tx.pointer("/_links/next/href").and_then(Value::as_str) {
                Some(next) => {
                    href = next.to_owned();
                    call = Call::NextPage;
                }
                None => return Ok(page),
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
    fn transactions_map_both_remittance_shapes_and_the_counterparty_by_sign() {
        let today = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        let t = json!({
            "transactionId": "T1", "entryReference": "E1",
            "bookingDate": "2026-02-27", "valueDate": "2026-02-26",
            "transactionAmount": {"currency": "EUR", "amount": "-12.30"},
            "creditorName": "Shop", "creditorAccount": {"iban": "BE68539007547034"},
            "remittanceInformationStructured": {"reference": "RF18539007547034"},
            "bankTransactionCode": "PMNT-CCRD-POSD",
        });
        let m = map_transaction(&t, TxStatus::Booked, today).unwrap();
        assert_eq!(m.provider_id.as_deref(), Some("E1"));
        assert_eq!(m.amount.to_string(), "-12.30");
        assert_eq!(m.counterparty_name.as_deref(), Some("Shop"));
        assert_eq!(m.counterparty_iban.as_deref(), Some("BE68539007547034"));
        assert_eq!(m.remittance_info.as_deref(), Some("RF18539007547034"));
        assert_eq!(m.bank_code.as_deref(), Some("PMNT-CCRD-POSD"));
        assert_eq!(m.value_date, NaiveDate::from_ymd_opt(2026, 2, 26));
        // 1.3.4 and GoCardless: the structured reference is a plain string.
        let old = json!({"transactionAmount": {"currency": "EUR", "amount": "5"},
                         "remittanceInformationStructured": "INV-7", "debtorName": "Ann",
                         "valueDate": "2026-02-28", "transactionId": "P9"});
        let p = map_transaction(&old, TxStatus::Pending, today).unwrap();
        assert_eq!(p.remittance_info.as_deref(), Some("INV-7"));
        assert_eq!(p.counterparty_name.as_deref(), Some("Ann"));
        assert_eq!(
            p.booking_date,
            NaiveDate::from_ymd_opt(2026, 2, 28).unwrap()
        );
        assert_eq!(p.provider_id.as_deref(), Some("P9"));
        // A float-looking amount is a decimal string, never a float.
        let bad = json!({"transactionAmount": {"currency": "EUR", "amount": 1.5}, "bookingDate": "2026-01-01"});
        assert!(map_transaction(&bad, TxStatus::Booked, today).is_err());
    }

    #[test]
    fn card_challenges_come_from_chip_otp_and_bankid_from_a_token() {
        let login = json!({"chosenScaMethod": {"authenticationType": "CHIP_OTP"},
                           "challengeData": {"data": ["12345678"]}});
        assert_eq!(
            embedded_challenge(login.as_object().unwrap()),
            ScaChallenge::CardReaderLogin {
                challenge: Some("12345678".into())
            }
        );
        let sign = json!({"chosenScaMethod": {"authenticationType": "CHIP_OTP"},
                          "challengeData": {"data": ["1000", "4711"]}});
        assert!(matches!(
            embedded_challenge(sign.as_object().unwrap()),
            ScaChallenge::CardReaderSign { numbers } if numbers == ["1000", "4711"]
        ));
        let sms = json!({"chosenScaMethod": {"authenticationType": "SMS_OTP"},
                         "challengeData": {"additionalInformation": "Type the SMS code"}});
        assert!(
            matches!(embedded_challenge(sms.as_object().unwrap()), ScaChallenge::Otp { prompt } if prompt == "Type the SMS code")
        );
        let token = uuid::Uuid::new_v4().to_string();
        let bankid = json!({"challengeData": {"data": [token]}});
        assert!(matches!(
            decoupled_challenge(bankid.as_object().unwrap()),
            ScaChallenge::BankId { auto_start_token, qr_start_token: None, .. } if auto_start_token == token
        ));
        let app = json!({"psuMessage": "Use your bank app"});
        assert!(
            matches!(decoupled_challenge(app.as_object().unwrap()), ScaChallenge::Decoupled { message, .. } if message == "Use your bank app")
        );
    }

    #[test]
    fn tpp_messages_read_in_both_shapes() {
        let m = tpp_message(
            br#"{"tppMessages":[{"category":"ERROR","code":"CONSENT_EXPIRED","text":"gone"}]}"#,
        )
        .unwrap();
        assert_eq!(
            (m.code.as_str(), m.text.as_str()),
            ("CONSENT_EXPIRED", "gone")
        );
        let r =
            tpp_message(br#"{"type":"https://x","code":"ACCESS_EXCEEDED","detail":"too many"}"#)
                .unwrap();
        assert_eq!(
            (r.code.as_str(), r.text.as_str()),
            ("ACCESS_EXCEEDED", "too many")
        );
        assert!(tpp_message(b"<html>").is_none());
    }

    #[test]
    fn options_resolve_from_the_bank_profile_and_refuse_nonsense() {
        let mut o = BTreeMap::new();
        o.insert("bank".to_owned(), "sandbox-se".to_owned());
        let s = BankSettings::from_options(&o).unwrap();
        assert_eq!(s.approach, Some(Approach::Decoupled));
        assert_eq!(s.zone, chrono_tz::Europe::Stockholm);
        assert_eq!(s.frequency_per_day, 4);
        o.insert("frequency_per_day".to_owned(), "0".to_owned());
        assert!(
            BankSettings::from_options(&o)
                .unwrap_err()
                .contains("frequency_per_day")
        );
        let mut o = BTreeMap::new();
        o.insert("bank".to_owned(), "nope".to_owned());
        assert!(
            BankSettings::from_options(&o)
                .unwrap_err()
                .contains("sandbox-be")
        );
    }

    #[test]
    fn links_never_leave_the_bank() {
        let settings = ConnectionSettings::new("https://bank.example/psd2", "u");
        let c = Xs2aConnector::new(&settings, Credentials::default()).unwrap();
        assert_eq!(
            c.url("v1/accounts").unwrap().as_str(),
            "https://bank.example/psd2/v1/accounts"
        );
        assert_eq!(
            c.url("/psd2/v1/accounts?page=2").unwrap().as_str(),
            "https://bank.example/psd2/v1/accounts?page=2"
        );
        assert!(c.url("https://evil.example/v1/accounts").is_err());
        assert!(!format!("{c:?}").contains("password\": Some"));
    }
}
