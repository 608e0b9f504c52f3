//! A simulated Enable Banking API (account information), served under
//! `/enablebanking/…`.
//!
//! **Observed** (the API's public reference and its official samples): an
//! application authenticates every call with a JWT it signs itself (RS256,
//! `kid` = the application id, `iss` `enablebanking.com`, `aud`
//! `api.enablebanking.com`, at most a day between `iat` and `exp`); `GET
//! /aspsps?country=` lists the banks with `maximum_consent_validity`; `POST
//! /auth` (`access.valid_until`, `aspsp{name,country}`, `state`,
//! `redirect_url`, `psu_type`) answers the URL the user goes to, and the
//! user comes back to `redirect_url?code=…&state=…`; `POST /sessions` with
//! the code opens a session whose accounts carry a `uid` that works only in
//! that session and an `identification_hash` that stays; `GET
//! /sessions/{id}` tells its status (`AUTHORIZED`, `EXPIRED`, `CLOSED`, …);
//! details, balances (`CLBD`, `ITAV`) and transactions (unsigned amounts with
//! `credit_debit_indicator`, status `BOOK`/`PDNG`, `entry_reference`) with
//! `date_from`/`date_to` and `continuation_key` paging; errors as
//! `{message, code, error, detail}` with the API's error names; calls
//! without the PSU's headers (`Psu-Ip-Address`) fall under the bank's
//! PSD2 limit of 4 a day.
//!
//! **Our modelling:**
//! - The application's key is made on first use; its private key is handed
//!   out at `/_sandbox/enablebanking/credentials`.
//! - Any loopback `redirect_url` counts as whitelisted; others are refused
//!   with `REDIRECT_URI_NOT_ALLOWED`.
//! - A cancelled authorisation returns `?error=access_denied&state=…`.
//! - Authorisation codes are single use and live 10 minutes.
//! - An expired session answers account calls with 401 `EXPIRED_SESSION`.
//! - The bank's limit: 4 successful calls per account, endpoint and UTC day
//!   without `Psu-Ip-Address`, then 429 `ASPSP_RATE_LIMIT_EXCEEDED`; pages
//!   after the first of one query are free.
//! - Pages hold 50 transactions.
//! - The JWT's times are checked against the wall clock, while the bank's
//!   clock (the `Date` of every answer) can be moved on by days or hours.
mod http;

pub use http::routes;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock, RwLock};

use chrono::{DateTime, NaiveDate, Utc};
use rsa::RsaPrivateKey;
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::SandboxConfig;
use crate::fault::FaultConfig;
use crate::fibank::AccountTruth;
use crate::fibank::render::money_string;
use crate::util::{lock, read, write};
use crate::xs2a::data;

/// Where the API answers.
pub const PREFIX: &str = "/enablebanking";
/// Control routes.
pub const CONTROL_PREFIX: &str = "/_sandbox/enablebanking";
/// Transactions per page.
pub const PAGE_SIZE: usize = 50;
/// Unattended calls a day per account and endpoint.
pub const DAILY_LIMIT: u32 = 4;
/// The longest a JWT may live.
pub const MAX_JWT_SECS: i64 = 86_400;

/// A refusal: `{message, code, error, detail}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub error: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(status: u16, error: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            error,
            message: message.into(),
        }
    }

    pub fn body(&self) -> Value {
        json!({"message": self.message, "code": self.status, "error": self.error, "detail": null})
    }
}

type Answer = Result<Value, Refusal>;

/// A bank the simulator offers (all backed by the same books).
#[derive(Clone, Debug, Serialize)]
pub struct Aspsp {
    pub name: &'static str,
    pub country: &'static str,
    pub bic: &'static str,
    /// Seconds.
    pub maximum_consent_validity: u64,
}

pub const ASPSPS: &[Aspsp] = &[
    Aspsp {
        name: "Sandbox Pankki",
        country: "FI",
        bic: "SANDFIHH",
        maximum_consent_validity: 180 * 86_400,
    },
    Aspsp {
        name: "Sandbox Bank",
        country: "SE",
        bic: "SANDSESS",
        maximum_consent_validity: 90 * 86_400,
    },
    Aspsp {
        name: "Exempelbanken",
        country: "SE",
        bic: "EXBKSESS",
        maximum_consent_validity: 90 * 86_400,
    },
];

#[derive(Clone, Debug)]
struct Authorization {
    aspsp: &'static Aspsp,
    valid_until: DateTime<Utc>,
    state: String,
    redirect_url: String,
    psu_type: String,
    /// Set once the user agreed.
    code: Option<(String, DateTime<Utc>)>,
    used: bool,
}

#[derive(Clone, Debug)]
struct Session {
    aspsp: &'static Aspsp,
    psu_type: String,
    created: DateTime<Utc>,
    valid_until: DateTime<Utc>,
    /// `AUTHORIZED`, `CLOSED`, `REVOKED` (`EXPIRED` is read off the clock).
    status: &'static str,
    accounts: Vec<String>,
}

#[derive(Clone, Debug)]
struct Page {
    uid: String,
    session: String,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    offset: usize,
}

#[derive(Default)]
struct State {
    authorizations: HashMap<String, Authorization>,
    sessions: BTreeMap<String, Session>,
    /// uid → (book index, session id).
    accounts: HashMap<String, (usize, String)>,
    pages: HashMap<String, Page>,
    /// (day, uid, endpoint) → unattended successful calls.
    usage: BTreeMap<(NaiveDate, String, &'static str), u32>,
    refused: u32,
}

/// The simulated service.
pub struct EnableBanking {
    app_id: String,
    key: OnceLock<RsaPrivateKey>,
    books: data::LazyBooks,
    clock: crate::util::ShiftedClock,
    state: Mutex<State>,
    fault: RwLock<FaultConfig>,
    root_url: RwLock<String>,
}

impl std::fmt::Debug for EnableBanking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnableBanking")
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

/// What the user of the simulated application holds.
#[derive(Clone, Debug, Serialize)]
pub struct EnableBankingCredentials {
    pub application_id: String,
    /// The application's private key, PKCS#8 PEM.
    pub private_key_pem: String,
    /// `http://127.0.0.1:PORT/enablebanking`
    pub base_url: String,
}

/// The endpoints with a daily limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
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

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn hash_of(iban: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("enablebanking-sim:{iban}").as_bytes());
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &digest[..24])
}

impl EnableBanking {
    pub fn new(config: &SandboxConfig) -> EnableBanking {
        let seed = config.seed ^ 0x6562_616e;
        EnableBanking {
            app_id: Uuid::from_u64_pair(seed, 7).to_string(),
            key: OnceLock::new(),
            books: data::LazyBooks::new(data::Params {
                seed,
                country: "FI",
                currency: "EUR",
                bank_code: "SAND",
                accounts: config.accounts,
                transactions: config.transactions,
                years: config.years,
                today: config.day_in(chrono_tz::UTC),
            }),
            clock: crate::util::ShiftedClock::starting_on(config.day_in(chrono_tz::UTC)),
            state: Mutex::new(State::default()),
            fault: RwLock::new(config.fault.clone()),
            root_url: RwLock::new(String::new()),
        }
    }

    /// The application's key pair, made on first use.
    pub fn key(&self) -> &RsaPrivateKey {
        self.key.get_or_init(|| {
            RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
                .expect("an RSA key can be generated")
        })
    }

    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    pub fn credentials(&self) -> EnableBankingCredentials {
        use rsa::pkcs8::EncodePrivateKey;
        EnableBankingCredentials {
            application_id: self.app_id.clone(),
            private_key_pem: self
                .key()
                .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
                .map(|p| p.to_string())
                .unwrap_or_default(),
            base_url: format!("{}{PREFIX}", read(&self.root_url)),
        }
    }

    pub(crate) fn set_root_url(&self, root: &str) {
        *write(&self.root_url) = root.trim_end_matches('/').to_owned();
    }

    pub fn fault(&self) -> FaultConfig {
        read(&self.fault).clone()
    }

    /// The bank's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn today(&self) -> NaiveDate {
        self.now().date_naive()
    }

    pub fn advance(&self, days: u32) -> Result<NaiveDate, String> {
        self.advance_by(chrono::Duration::days(i64::from(days)))
    }

    pub fn advance_hours(&self, hours: u32) -> Result<NaiveDate, String> {
        self.advance_by(chrono::Duration::hours(i64::from(hours)))
    }

    pub(crate) fn advance_by(&self, by: chrono::Duration) -> Result<NaiveDate, String> {
        self.clock.advance(by, self.books.last_day())
    }

    pub fn truth(&self) -> Vec<AccountTruth> {
        let today = self.today();
        self.books.get().iter().map(|a| a.truth(today)).collect()
    }

    /// The most unattended successful calls one account made on one
    /// endpoint on one day, and the calls refused with 429.
    pub fn usage(&self) -> (u32, u32) {
        let s = lock(&self.state);
        (s.usage.values().copied().max().unwrap_or(0), s.refused)
    }

    /// Sessions opened so far.
    pub fn session_count(&self) -> usize {
        lock(&self.state).sessions.len()
    }

    // ---- banks ----

    pub fn aspsps(&self, country: Option<&str>) -> Value {
        let list: Vec<Value> = ASPSPS
            .iter()
            .filter(|a| country.is_none_or(|c| a.country.eq_ignore_ascii_case(c)))
            .map(|a| {
                json!({"name": a.name, "country": a.country, "bic": a.bic,
                       "logo": format!("https://cdn.example/{}.png", a.bic.to_lowercase()),
                       "psu_types": ["personal", "business"],
                       "auth_methods": [{"name": "redirect", "title": "Online bank", "psu_type": "personal",
                                         "approach": "REDIRECT", "hidden_method": false, "credentials": []}],
                       "maximum_consent_validity": a.maximum_consent_validity, "beta": false,
                       "required_psu_headers": []})
            })
            .collect();
        json!({"aspsps": list})
    }

    // ---- authorisation ----

    pub fn start_auth(&self, body: &Value) -> Answer {
        let wrong = |m: &str| Refusal::new(422, "WRONG_REQUEST_PARAMETERS", m);
        let text = |p: &str| body.pointer(p).and_then(Value::as_str);
        let (name, country) = (
            text("/aspsp/name").ok_or_else(|| wrong("aspsp.name is required"))?,
            text("/aspsp/country").ok_or_else(|| wrong("aspsp.country is required"))?,
        );
        let aspsp = ASPSPS
            .iter()
            .find(|a| a.name == name && a.country == country)
            .ok_or_else(|| {
                Refusal::new(
                    422,
                    "WRONG_ASPSP_PROVIDED",
                    format!("ASPSP {name} ({country}) is not available"),
                )
            })?;
        let valid_until = text("/access/valid_until")
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| wrong("access.valid_until must be an RFC 3339 date-time"))?;
        let now = self.now();
        let longest = now + chrono::Duration::seconds(aspsp.maximum_consent_validity as i64);
        if valid_until <= now || valid_until > longest + chrono::Duration::minutes(5) {
            return Err(wrong(&format!(
                "access.valid_until must be in the future and at most {} days ahead",
                aspsp.maximum_consent_validity / 86_400
            )));
        }
        let state = text("/state").ok_or_else(|| wrong("state is required"))?;
        let redirect_url =
            text("/redirect_url").ok_or_else(|| wrong("redirect_url is required"))?;
        let allowed = url::Url::parse(redirect_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .is_some_and(|h| h == "127.0.0.1" || h == "localhost" || h == "[::1]");
        if !allowed {
            return Err(Refusal::new(
                400,
                "REDIRECT_URI_NOT_ALLOWED",
                "Redirect URI not allowed",
            ));
        }
        let id = Uuid::new_v4().to_string();
        let auth = Authorization {
            aspsp,
            valid_until,
            state: state.to_owned(),
            redirect_url: redirect_url.to_owned(),
            psu_type: text("/psu_type").unwrap_or("personal").to_owned(),
            code: None,
            used: false,
        };
        lock(&self.state).authorizations.insert(id.clone(), auth);
        Ok(json!({
            "url": format!("{}{CONTROL_PREFIX}/auth/{id}", read(&self.root_url)),
            "authorization_id": id,
            "psu_id_hash": hash_of(&format!("psu:{id}")),
        }))
    }

    /// The user at the bank agreed (or cancelled): where the browser goes next.
    pub fn authorize(&self, id: &str, approve: bool) -> Result<String, Refusal> {
        let now = self.now();
        let mut s = lock(&self.state);
        let a = s
            .authorizations
            .get_mut(id)
            .ok_or_else(|| Refusal::new(404, "NOT_FOUND", "Authorization not found"))?;
        if a.code.is_some() || a.used {
            return Err(Refusal::new(
                400,
                "ALREADY_AUTHORIZED",
                "Authorization already completed",
            ));
        }
        let sep = if a.redirect_url.contains('?') {
            '&'
        } else {
            '?'
        };
        let state = url::form_urlencoded::byte_serialize(a.state.as_bytes()).collect::<String>();
        if !approve {
            a.used = true;
            return Ok(format!(
                "{}{sep}error=access_denied&error_description=User+cancelled+the+authorization&state={state}",
                a.redirect_url
            ));
        }
        let code = Uuid::new_v4().to_string();
        a.code = Some((code.clone(), now + chrono::Duration::minutes(10)));
        Ok(format!("{}{sep}code={code}&state={state}", a.redirect_url))
    }

    pub fn create_session(&self, body: &Value) -> Answer {
        let code = body
            .get("code")
            .and_then(Value::as_str)
            .ok_or_else(|| Refusal::new(422, "WRONG_REQUEST_PARAMETERS", "code is required"))?;
        let now = self.now();
        let mut s = lock(&self.state);
        let (auth_id, auth) = s
            .authorizations
            .iter()
            .find(|(_, a)| a.code.as_ref().is_some_and(|(c, _)| c == code))
            .map(|(id, a)| (id.clone(), a.clone()))
            .ok_or_else(|| {
                Refusal::new(422, "WRONG_AUTHORIZATION_CODE", "Wrong authorization code")
            })?;
        if auth.used {
            return Err(Refusal::new(
                422,
                "WRONG_AUTHORIZATION_CODE",
                "The authorization code was used already",
            ));
        }
        if auth.code.as_ref().is_some_and(|(_, until)| *until < now) {
            return Err(Refusal::new(
                422,
                "EXPIRED_AUTHORIZATION_CODE",
                "Authorization code expired",
            ));
        }
        if let Some(a) = s.authorizations.get_mut(&auth_id) {
            a.used = true;
        }
        let session_id = Uuid::new_v4().to_string();
        let uids: Vec<String> = (0..self.books.len())
            .map(|_| Uuid::new_v4().to_string())
            .collect();
        for (i, uid) in uids.iter().enumerate() {
            s.accounts.insert(uid.clone(), (i, session_id.clone()));
        }
        let session = Session {
            aspsp: auth.aspsp,
            psu_type: auth.psu_type.clone(),
            created: now,
            valid_until: auth.valid_until,
            status: "AUTHORIZED",
            accounts: uids.clone(),
        };
        s.sessions.insert(session_id.clone(), session);
        drop(s);
        let accounts: Vec<Value> = uids
            .iter()
            .enumerate()
            .map(|(i, uid)| self.account_resource(uid, i))
            .collect();
        Ok(json!({
            "session_id": session_id,
            "accounts": accounts,
            "aspsp": {"name": auth.aspsp.name, "country": auth.aspsp.country},
            "psu_type": auth.psu_type,
            "access": {"valid_until": rfc3339(auth.valid_until)},
        }))
    }

    fn account_resource(&self, uid: &str, index: usize) -> Value {
        let a = &self.books.get()[index];
        let hash = hash_of(a.iban.as_str());
        json!({
            "uid": uid,
            "account_id": {"iban": a.iban.as_str()},
            "all_account_ids": [{"identification": a.iban.as_str(), "scheme_name": "IBAN"}],
            "account_servicer": {"bic_fi": "SANDFIHH"},
            "name": a.name,
            "details": a.product,
            "usage": "PRIV",
            "cash_account_type": "CACC",
            "product": a.product,
            "currency": a.currency,
            "identification_hash": hash,
            "identification_hashes": [hash],
        })
    }

    fn status_of(&self, s: &Session) -> &'static str {
        if s.status == "AUTHORIZED" && s.valid_until <= self.now() {
            "EXPIRED"
        } else {
            s.status
        }
    }

    pub fn session(&self, id: &str) -> Answer {
        let s = lock(&self.state);
        let session = s
            .sessions
            .get(id)
            .ok_or_else(|| Refusal::new(404, "SESSION_DOES_NOT_EXIST", "Session does not exist"))?;
        let data: Vec<Value> = session
            .accounts
            .iter()
            .filter_map(|uid| s.accounts.get(uid).map(|(i, _)| (uid, *i)))
            .map(|(uid, i)| {
                let hash = hash_of(self.books.get()[i].iban.as_str());
                json!({"uid": uid, "identification_hash": hash, "identification_hashes": [hash]})
            })
            .collect();
        Ok(json!({
            "status": self.status_of(session),
            "accounts": session.accounts,
            "accounts_data": data,
            "aspsp": {"name": session.aspsp.name, "country": session.aspsp.country},
            "psu_type": session.psu_type,
            "psu_id_hash": hash_of(&format!("psu:{id}")),
            "access": {"valid_until": rfc3339(session.valid_until)},
            "created": rfc3339(session.created),
            "authorized": rfc3339(session.created),
        }))
    }

    pub fn close_session(&self, id: &str) -> Answer {
        let mut s = lock(&self.state);
        let session = s
            .sessions
            .get_mut(id)
            .ok_or_else(|| Refusal::new(404, "SESSION_DOES_NOT_EXIST", "Session does not exist"))?;
        session.status = "CLOSED";
        Ok(json!({"message": "OK"}))
    }

    // ---- account data ----

    /// The book index of `uid`, its session live; counts the call against
    /// the bank's limit when the user is not there (`counted`).
    fn admit(&self, uid: &str, endpoint: Endpoint, counted: bool) -> Result<usize, Refusal> {
        let today = self.today();
        let mut s = lock(&self.state);
        let (index, session_id) =
            s.accounts.get(uid).cloned().ok_or_else(|| {
                Refusal::new(404, "ACCOUNT_DOES_NOT_EXIST", "Account does not exist")
            })?;
        let session = s
            .sessions
            .get(&session_id)
            .ok_or_else(|| Refusal::new(404, "ACCOUNT_DOES_NOT_EXIST", "Account does not exist"))?;
        match self.status_of(session) {
            "AUTHORIZED" => {}
            "EXPIRED" => {
                return Err(Refusal::new(401, "EXPIRED_SESSION", "Session expired"));
            }
            "REVOKED" => {
                return Err(Refusal::new(401, "REVOKED_SESSION", "Session revoked"));
            }
            _ => return Err(Refusal::new(401, "CLOSED_SESSION", "Session closed")),
        }
        if counted {
            let used = s
                .usage
                .entry((today, uid.to_owned(), endpoint.name()))
                .or_default();
            if *used >= DAILY_LIMIT {
                s.refused += 1;
                return Err(Refusal::new(
                    429,
                    "ASPSP_RATE_LIMIT_EXCEEDED",
                    "ASPSP rate limit exceeded",
                ));
            }
            *used += 1;
        }
        Ok(index)
    }

    pub fn details(&self, uid: &str, counted: bool) -> Answer {
        let i = self.admit(uid, Endpoint::Details, counted)?;
        Ok(self.account_resource(uid, i))
    }

    pub fn balances(&self, uid: &str, counted: bool) -> Answer {
        let i = self.admit(uid, Endpoint::Balances, counted)?;
        let a = &self.books.get()[i];
        let today = self.today();
        let booked = a.balance_at(today);
        let pending: i64 = a.pending(today).map(|r| r.minor).sum();
        let amount = |m: i64| json!({"currency": a.currency, "amount": money_string(m)});
        Ok(json!({"balances": [
            {"name": "Booked balance", "balance_amount": amount(booked), "balance_type": "CLBD",
             "reference_date": today.to_string()},
            {"name": "Available balance", "balance_amount": amount(booked + pending), "balance_type": "ITAV",
             "last_change_date_time": rfc3339(self.now())},
        ]}))
    }

    /// One page of transactions: the first of a query (counted), or the
    /// one a `continuation_key` names (free, in the same session only).
    pub fn transactions(
        &self,
        uid: &str,
        date_from: Option<&str>,
        date_to: Option<&str>,
        continuation_key: Option<&str>,
        counted: bool,
    ) -> Answer {
        let page = match continuation_key {
            Some(key) => {
                let p = lock(&self.state).pages.remove(key).ok_or_else(|| {
                    Refusal::new(422, "WRONG_CONTINUATION_KEY", "Wrong continuation key")
                })?;
                let session_of_uid = lock(&self.state).accounts.get(uid).map(|a| a.1.clone());
                if p.uid != uid || session_of_uid.as_deref() != Some(p.session.as_str()) {
                    return Err(Refusal::new(
                        422,
                        "WRONG_CONTINUATION_KEY",
                        "Wrong continuation key",
                    ));
                }
                self.admit(uid, Endpoint::Transactions, false)?;
                p
            }
            None => {
                let parse = |v: Option<&str>| -> Result<Option<NaiveDate>, Refusal> {
                    v.map(|s| {
                        NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
                            Refusal::new(422, "WRONG_REQUEST_PARAMETERS", "Dates are YYYY-MM-DD")
                        })
                    })
                    .transpose()
                };
                let (from, to) = (parse(date_from)?, parse(date_to)?);
                if from.is_none() && to.is_some() {
                    return Err(Refusal::new(
                        422,
                        "DATE_TO_WITHOUT_DATE_FROM",
                        "date_to given without date_from",
                    ));
                }
                if from.is_some_and(|f| f > self.today()) {
                    return Err(Refusal::new(
                        422,
                        "DATE_FROM_IN_FUTURE",
                        "date_from is in the future",
                    ));
                }
                if let (Some(f), Some(t)) = (from, to)
                    && f > t
                {
                    return Err(Refusal::new(
                        422,
                        "WRONG_DATE_INTERVAL",
                        "date_from is after date_to",
                    ));
                }
                self.admit(uid, Endpoint::Transactions, counted)?;
                let session = lock(&self.state)
                    .accounts
                    .get(uid)
                    .map(|a| a.1.clone())
                    .unwrap_or_default();
                Page {
                    uid: uid.to_owned(),
                    session,
                    from,
                    to,
                    offset: 0,
                }
            }
        };
        let index = lock(&self.state)
            .accounts
            .get(uid)
            .map(|a| a.0)
            .ok_or_else(|| Refusal::new(404, "ACCOUNT_DOES_NOT_EXIST", "Account does not exist"))?;
        let a = &self.books.get()[index];
        let today = self.today();
        let inside =
            |d: NaiveDate| page.from.is_none_or(|f| f <= d) && page.to.is_none_or(|t| d <= t);
        // Newest first, pending before booked.
        let mut all: Vec<Value> = a
            .pending(today)
            .filter(|r| inside(r.value))
            .map(|r| tx_json(a, r, false))
            .collect();
        all.extend(
            a.booked(today)
                .iter()
                .rev()
                .filter(|r| inside(r.booking))
                .map(|r| tx_json(a, r, true)),
        );
        let end = (page.offset + PAGE_SIZE).min(all.len());
        let slice = all.get(page.offset..end).unwrap_or_default().to_vec();
        let next = (end < all.len()).then(|| {
            let key = Uuid::new_v4().simple().to_string();
            lock(&self.state).pages.insert(
                key.clone(),
                Page {
                    offset: end,
                    ..page.clone()
                },
            );
            key
        });
        Ok(json!({"transactions": slice, "continuation_key": next}))
    }
}

fn tx_json(a: &data::Account, r: &data::Row, booked: bool) -> Value {
    let credit = r.minor >= 0;
    let mut t = json!({
        "transaction_amount": {"currency": a.currency, "amount": money_string(r.minor.abs())},
        "credit_debit_indicator": if credit { "CRDT" } else { "DBIT" },
        "status": if booked { "BOOK" } else { "PDNG" },
        "value_date": r.value.to_string(),
        "transaction_date": r.value.to_string(),
        "remittance_information": [r.remittance],
        "bank_transaction_code": {"description": r.kind.bank_transaction_code(), "code": null, "sub_code": null},
        "transaction_id": format!("{:x}", crate::fibank::data::mix(a.index as u64, r.seq, 17)),
    });
    if booked {
        t["entry_reference"] = json!(format!("{}-{:07}", a.index, r.seq));
        t["booking_date"] = json!(r.booking.to_string());
    }
    let party = json!({"name": r.party});
    if credit {
        t["debtor"] = party;
        if let Some(iban) = &r.party_iban {
            t["debtor_account"] = json!({"iban": iban});
        }
    } else {
        t["creditor"] = party;
        if let Some(iban) = &r.party_iban {
            t["creditor_account"] = json!({"iban": iban});
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> EnableBanking {
        EnableBanking::new(&SandboxConfig {
            accounts: 2,
            transactions: 400,
            years: 1,
            today: NaiveDate::from_ymd_opt(2026, 4, 1),
            ..SandboxConfig::default()
        })
    }

    /// A session of `days`, through the user's agreement.
    fn session(eb: &EnableBanking, days: i64) -> Value {
        let until = eb.now() + chrono::Duration::days(days);
        let auth = eb
            .start_auth(&json!({"access": {"valid_until": rfc3339(until)},
                                "aspsp": {"name": "Sandbox Pankki", "country": "FI"},
                                "state": "s1", "redirect_url": "http://127.0.0.1:9/cb", "psu_type": "personal"}))
            .unwrap();
        let back = eb
            .authorize(auth["authorization_id"].as_str().unwrap(), true)
            .unwrap();
        let code = back
            .split("code=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap();
        assert!(back.ends_with("&state=s1"), "{back}");
        eb.create_session(&json!({"code": code})).unwrap()
    }

    #[test]
    fn pages_cover_the_window_once_and_keys_are_single_use() {
        let eb = service();
        let s = session(&eb, 30);
        let uid = s["accounts"][0]["uid"].as_str().unwrap().to_owned();
        let mut seen = Vec::new();
        let mut key: Option<String> = None;
        loop {
            let v = eb
                .transactions(
                    &uid,
                    Some("2025-06-01"),
                    Some("2026-04-01"),
                    key.as_deref(),
                    true,
                )
                .unwrap();
            seen.extend(v["transactions"].as_array().unwrap().iter().cloned());
            match v["continuation_key"].as_str() {
                Some(k) => key = Some(k.to_owned()),
                None => break,
            }
        }
        assert!(seen.len() > PAGE_SIZE, "several pages: {}", seen.len());
        let booked = seen.iter().filter(|t| t["status"] == "BOOK").count() as u64;
        let truth = &eb.truth()[0];
        assert!(booked <= truth.booked_count);
        // One counted call for the whole query.
        assert_eq!(eb.usage(), (1, 0));
        let e = eb
            .transactions(&uid, None, None, Some("nope"), true)
            .unwrap_err();
        assert_eq!(e.error, "WRONG_CONTINUATION_KEY");
    }

    #[test]
    fn the_bank_limit_applies_without_the_user_and_sessions_expire() {
        let eb = service();
        let s = session(&eb, 3);
        let uid = s["accounts"][1]["uid"].as_str().unwrap().to_owned();
        for _ in 0..4 {
            eb.balances(&uid, true).unwrap();
        }
        assert_eq!(eb.balances(&uid, true).unwrap_err().status, 429);
        eb.balances(&uid, false).unwrap();
        assert_eq!(eb.usage(), (4, 1));
        eb.advance(4).unwrap();
        let e = eb.balances(&uid, false).unwrap_err();
        assert_eq!((e.status, e.error), (401, "EXPIRED_SESSION"));
        let id = s["session_id"].as_str().unwrap();
        assert_eq!(eb.session(id).unwrap()["status"], "EXPIRED");
        // A new session: new uids, the same identification hashes.
        let again = session(&eb, 30);
        assert_ne!(again["accounts"][1]["uid"], s["accounts"][1]["uid"]);
        assert_eq!(
            again["accounts"][1]["identification_hash"],
            s["accounts"][1]["identification_hash"]
        );
    }

    #[test]
    fn codes_are_single_use_and_redirects_must_be_whitelisted() {
        let eb = service();
        let until = rfc3339(eb.now() + chrono::Duration::days(10));
        let refused = eb
            .start_auth(&json!({"access": {"valid_until": until}, "aspsp": {"name": "Sandbox Pankki", "country": "FI"},
                                "state": "x", "redirect_url": "https://evil.example/cb"}))
            .unwrap_err();
        assert_eq!(refused.error, "REDIRECT_URI_NOT_ALLOWED");
        let too_long = rfc3339(eb.now() + chrono::Duration::days(200));
        let e = eb
            .start_auth(&json!({"access": {"valid_until": too_long}, "aspsp": {"name": "Sandbox Pankki", "country": "FI"},
                                "state": "x", "redirect_url": "http://127.0.0.1:1/cb"}))
            .unwrap_err();
        assert_eq!(e.error, "WRONG_REQUEST_PARAMETERS");
        let auth = eb
            .start_auth(&json!({"access": {"valid_until": until}, "aspsp": {"name": "Sandbox Pankki", "country": "FI"},
                                "state": "x", "redirect_url": "http://127.0.0.1:1/cb"}))
            .unwrap();
        let back = eb
            .authorize(auth["authorization_id"].as_str().unwrap(), true)
            .unwrap();
        let code = back
            .split("code=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap();
        eb.create_session(&json!({"code": code})).unwrap();
        assert_eq!(
            eb.create_session(&json!({"code": code})).unwrap_err().error,
            "WRONG_AUTHORIZATION_CODE"
        );
    }
}
