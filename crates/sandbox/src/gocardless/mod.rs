//! A simulated GoCardless Bank Account Data API (v2, ex-Nordigen), served
//! under `/gocardless/api/v2/…`, faithful enough that the official Python
//! client (`nordigen` on PyPI) runs its quick-start against it unchanged but
//! for `base_url`.
//!
//! **Observed** (the API's public docs and the official clients' sources):
//! the paths (all ending in `/`), the token pair (`access` for 24 h,
//! `refresh` for 30 days), institutions by country with the sandbox bank
//! `SANDBOXFINANCE_SFIN0000`, end-user agreements (`max_historical_days`
//! 1–730, `access_valid_for_days` 1–180, `access_scope`), requisitions with
//! `redirect`, `reference` and a `link`, their statuses (`CR`, `GC`, `UA`,
//! `GA`, `LN`, `RJ`, `EX`), the callback `redirect?ref=<reference>`,
//! accounts' metadata, details, balances and transactions with Berlin
//! Group field names, errors as `{summary, detail, status_code}`, and the
//! limit of 4 successful calls a day per account and scope (details,
//! balances, transactions) with `X-RateLimit-Account-Success-*` headers.
//!
//! **Our modelling:** every path is served with and without its trailing
//! slash (the client leaves it off on five calls) and never redirects; every
//! answer, DELETE included, is JSON (the client parses every body); an
//! expired agreement's accounts answer 401 `AccessExpiredError` and the
//! requisition turns `EX` on that access; linking a requisition again
//! gives the same bank accounts new ids; the daily limits reset at midnight
//! UTC; the service's clock (in every answer's `Date`) can be moved on by
//! days or hours. The link page is a simple consent
//! page; tests link without a browser at
//! `POST /_sandbox/gocardless/requisitions/{id}/link`.
mod http;

pub use http::routes;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, RwLock};

use chrono::{DateTime, Days, NaiveDate, Utc};
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
pub const PREFIX: &str = "/gocardless/api/v2";
/// Control routes.
pub const CONTROL_PREFIX: &str = "/_sandbox/gocardless";
/// The sandbox bank of the real service.
pub const SANDBOX_INSTITUTION: &str = "SANDBOXFINANCE_SFIN0000";
/// Seconds an access token lives; a refresh token.
pub const ACCESS_SECS: i64 = 86_400;
pub const REFRESH_SECS: i64 = 2_592_000;
/// Successful calls a day per account and scope.
pub const DAILY_LIMIT: u32 = 4;

/// A refusal: `{summary, detail, status_code}` (plus `type` where the API has one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub summary: &'static str,
    pub detail: String,
    pub kind: Option<&'static str>,
    /// Seconds until a rate limit resets.
    pub retry_after: Option<i64>,
}

impl Refusal {
    fn new(status: u16, summary: &'static str, detail: impl Into<String>) -> Refusal {
        Refusal {
            status,
            summary,
            detail: detail.into(),
            kind: None,
            retry_after: None,
        }
    }

    pub fn body(&self) -> Value {
        let mut v =
            json!({"summary": self.summary, "detail": self.detail, "status_code": self.status});
        if let Some(k) = self.kind {
            v["type"] = json!(k);
        }
        v
    }
}

type Answer = Result<Value, Refusal>;

/// One institution the simulator offers (all backed by the same books).
#[derive(Clone, Debug, Serialize)]
pub struct Institution {
    pub id: &'static str,
    pub name: &'static str,
    pub bic: &'static str,
    pub transaction_total_days: &'static str,
    pub max_access_valid_for_days: &'static str,
    pub countries: &'static [&'static str],
    pub logo: &'static str,
}

pub const INSTITUTIONS: &[Institution] = &[
    Institution {
        id: SANDBOX_INSTITUTION,
        name: "Sandbox Finance",
        bic: "SFIN0000",
        transaction_total_days: "730",
        max_access_valid_for_days: "180",
        countries: &["XX", "LV", "SE", "DE", "BE", "GB"],
        logo: "https://cdn.example/sandbox.png",
    },
    Institution {
        id: "REVOLUT_REVOLT21",
        name: "Revolut",
        bic: "REVOLT21",
        transaction_total_days: "730",
        max_access_valid_for_days: "180",
        countries: &["LV", "LT", "EE"],
        logo: "https://cdn.example/revolut.png",
    },
    Institution {
        id: "EXEMPEL_EXBKSESS",
        name: "Exempelbanken",
        bic: "EXBKSESS",
        transaction_total_days: "540",
        max_access_valid_for_days: "90",
        countries: &["SE"],
        logo: "https://cdn.example/exempel.png",
    },
];

#[derive(Clone, Debug)]
struct Agreement {
    created: DateTime<Utc>,
    institution_id: String,
    max_historical_days: u32,
    access_valid_for_days: u32,
    access_scope: Vec<String>,
    /// Set when a requisition with it is linked.
    accepted: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug)]
struct Requisition {
    created: DateTime<Utc>,
    redirect: String,
    status: &'static str,
    institution_id: String,
    agreement: Option<String>,
    reference: String,
    accounts: Vec<String>,
    user_language: String,
}

#[derive(Clone, Debug)]
struct LinkedAccount {
    /// Index into the books.
    index: usize,
    requisition: String,
    created: DateTime<Utc>,
    last_accessed: Option<DateTime<Utc>>,
}

#[derive(Default)]
struct State {
    access: HashMap<String, DateTime<Utc>>,
    refresh: HashMap<String, DateTime<Utc>>,
    agreements: BTreeMap<String, Agreement>,
    requisitions: BTreeMap<String, Requisition>,
    accounts: HashMap<String, LinkedAccount>,
    /// (day, account id, scope) → successful calls.
    usage: BTreeMap<(NaiveDate, String, &'static str), u32>,
    /// Calls refused with 429.
    refused: u32,
}

/// The simulated service.
pub struct GoCardless {
    secret_id: String,
    secret_key: String,
    books: data::LazyBooks,
    clock: crate::util::ShiftedClock,
    state: Mutex<State>,
    fault: RwLock<FaultConfig>,
    root_url: RwLock<String>,
    limit: RwLock<Option<u32>>,
}

impl std::fmt::Debug for GoCardless {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoCardless")
            .field("accounts", &self.books.len())
            .finish_non_exhaustive()
    }
}

/// The API keys of the simulated user secret.
#[derive(Clone, Debug, Serialize)]
pub struct GoCardlessCredentials {
    pub secret_id: String,
    pub secret_key: String,
    /// `http://127.0.0.1:PORT/gocardless/api/v2`
    pub base_url: String,
}

fn token() -> String {
    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

impl GoCardless {
    pub fn new(config: &SandboxConfig) -> GoCardless {
        let seed = config.seed ^ 0x6763_6c73;
        GoCardless {
            secret_id: Uuid::from_u64_pair(seed, 1).to_string(),
            secret_key: format!(
                "{:032x}{:032x}",
                crate::fibank::data::mix(seed, 2, 3),
                crate::fibank::data::mix(seed, 4, 5)
            ),
            books: data::LazyBooks::new(data::Params {
                seed,
                country: "LV",
                currency: "EUR",
                bank_code: "SFIN",
                accounts: config.accounts,
                transactions: config.transactions,
                years: config.years,
                today: config.day_in(chrono_tz::UTC),
            }),
            clock: crate::util::ShiftedClock::starting_on(config.day_in(chrono_tz::UTC)),
            state: Mutex::new(State::default()),
            fault: RwLock::new(config.fault.clone()),
            root_url: RwLock::new(String::new()),
            limit: RwLock::new(Some(DAILY_LIMIT)),
        }
    }

    pub fn credentials(&self) -> GoCardlessCredentials {
        GoCardlessCredentials {
            secret_id: self.secret_id.clone(),
            secret_key: self.secret_key.clone(),
            base_url: format!("{}{PREFIX}", read(&self.root_url)),
        }
    }

    pub(crate) fn set_root_url(&self, root: &str) {
        *write(&self.root_url) = root.trim_end_matches('/').to_owned();
    }

    /// The service's day (UTC, where its daily limits reset too).
    pub fn today(&self) -> NaiveDate {
        self.now().date_naive()
    }

    /// The service's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Move the clock on by whole days.
    pub fn advance(&self, days: u32) -> Result<NaiveDate, String> {
        self.advance_by(chrono::Duration::days(i64::from(days)))
    }

    /// Move the clock on by hours (a day of hourly syncs in a test).
    pub fn advance_hours(&self, hours: u32) -> Result<NaiveDate, String> {
        self.advance_by(chrono::Duration::hours(i64::from(hours)))
    }

    pub(crate) fn advance_by(&self, by: chrono::Duration) -> Result<NaiveDate, String> {
        self.clock.advance(by, self.books.last_day())
    }

    pub fn fault(&self) -> FaultConfig {
        read(&self.fault).clone()
    }

    /// Successful calls allowed a day per account and scope (`None`: no limit).
    pub fn set_daily_limit(&self, limit: Option<u32>) {
        *write(&self.limit) = limit;
    }

    /// Booked and pending totals per IBAN at the sandbox day.
    pub fn truth(&self) -> Vec<AccountTruth> {
        let today = self.today();
        self.books.get().iter().map(|a| a.truth(today)).collect()
    }

    /// The most successful calls any account made in one scope on one day,
    /// and the calls refused with 429.
    pub fn usage(&self) -> (u32, u32) {
        let s = lock(&self.state);
        (s.usage.values().copied().max().unwrap_or(0), s.refused)
    }

    /// End-user agreements created so far (a re-link should reuse one
    /// nobody accepted).
    pub fn agreement_count(&self) -> usize {
        lock(&self.state).agreements.len()
    }

    // ---- tokens ----

    pub fn new_token(&self, body: &Value) -> Answer {
        let id = body.get("secret_id").and_then(Value::as_str);
        let key = body.get("secret_key").and_then(Value::as_str);
        if id != Some(self.secret_id.as_str()) || key != Some(self.secret_key.as_str()) {
            return Err(Refusal::new(
                401,
                "Authentication failed",
                "No active account found with the given credentials",
            ));
        }
        let now = self.now();
        let (access, refresh) = (token(), token());
        let mut s = lock(&self.state);
        s.access
            .insert(access.clone(), now + chrono::Duration::seconds(ACCESS_SECS));
        s.refresh.insert(
            refresh.clone(),
            now + chrono::Duration::seconds(REFRESH_SECS),
        );
        Ok(json!({"access": access, "access_expires": ACCESS_SECS,
                  "refresh": refresh, "refresh_expires": REFRESH_SECS}))
    }

    pub fn refresh_token(&self, body: &Value) -> Answer {
        let now = self.now();
        let mut s = lock(&self.state);
        let valid = body
            .get("refresh")
            .and_then(Value::as_str)
            .and_then(|r| s.refresh.get(r))
            .is_some_and(|until| *until > now);
        if !valid {
            return Err(Refusal {
                kind: Some("TokenInvalid"),
                ..Refusal::new(401, "Invalid token", "Token is invalid or expired")
            });
        }
        let access = token();
        s.access
            .insert(access.clone(), now + chrono::Duration::seconds(ACCESS_SECS));
        Ok(json!({"access": access, "access_expires": ACCESS_SECS}))
    }

    /// The bearer token of a call, checked.
    pub fn authorise(&self, bearer: Option<&str>) -> Result<(), Refusal> {
        let now = self.now();
        let s = lock(&self.state);
        match bearer.and_then(|t| s.access.get(t)) {
            Some(until) if *until > now => Ok(()),
            Some(_) => Err(Refusal {
                kind: Some("AccessExpiredError"),
                ..Refusal::new(
                    401,
                    "Token is invalid or expired",
                    "Access token expired; refresh it",
                )
            }),
            None => Err(Refusal::new(
                401,
                "Authentication credentials were not provided.",
                "Authentication credentials were not provided.",
            )),
        }
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn not_found(what: &str) -> Refusal {
    Refusal::new(404, "Not found.", format!("{what} not found"))
}

fn bad(field: &'static str, detail: impl Into<String>) -> Refusal {
    Refusal {
        kind: Some(field),
        ..Refusal::new(400, "Invalid request", detail)
    }
}

impl GoCardless {
    // ---- institutions ----

    pub fn institutions(&self, country: Option<&str>) -> Value {
        json!(
            INSTITUTIONS
                .iter()
                .filter(|i| country
                    .is_none_or(|c| i.countries.iter().any(|x| x.eq_ignore_ascii_case(c))))
                .collect::<Vec<_>>()
        )
    }

    pub fn institution(&self, id: &str) -> Answer {
        INSTITUTIONS
            .iter()
            .find(|i| i.id == id)
            .map(|i| json!(i))
            .ok_or_else(|| not_found("Institution"))
    }

    // ---- agreements ----

    fn agreement_json(id: &str, a: &Agreement) -> Value {
        json!({"id": id, "created": rfc3339(a.created), "institution_id": a.institution_id,
               "max_historical_days": a.max_historical_days, "access_valid_for_days": a.access_valid_for_days,
               "access_scope": a.access_scope, "accepted": a.accepted.map(rfc3339), "reconfirmation": false})
    }

    pub fn create_agreement(&self, body: &Value) -> Answer {
        let institution_id = body
            .get("institution_id")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("institution_id", "This field is required."))?;
        if !INSTITUTIONS.iter().any(|i| i.id == institution_id) {
            return Err(bad(
                "institution_id",
                format!("Unknown Institution ID {institution_id}"),
            ));
        }
        let days = |key: &'static str, default: u64, max: u64| -> Result<u32, Refusal> {
            match body.get(key) {
                None | Some(Value::Null) => Ok(default as u32),
                Some(v) => v
                    .as_u64()
                    .filter(|d| (1..=max).contains(d))
                    .map(|d| d as u32)
                    .ok_or_else(|| bad(key, format!("{key} must be from 1 to {max}"))),
            }
        };
        let max_historical_days = days("max_historical_days", 90, 730)?;
        let access_valid_for_days = days("access_valid_for_days", 90, 180)?;
        let all = ["balances", "details", "transactions"];
        let access_scope: Vec<String> = match body.get("access_scope") {
            None | Some(Value::Null) => all.iter().map(|s| s.to_string()).collect(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .filter(|s| all.contains(s))
                        .map(str::to_owned)
                        .ok_or_else(|| {
                            bad(
                                "access_scope",
                                "Choose from balances, details, transactions",
                            )
                        })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(bad("access_scope", "A list is expected")),
        };
        let id = Uuid::new_v4().to_string();
        let a = Agreement {
            created: self.now(),
            institution_id: institution_id.to_owned(),
            max_historical_days,
            access_valid_for_days,
            access_scope,
            accepted: None,
        };
        let v = Self::agreement_json(&id, &a);
        lock(&self.state).agreements.insert(id, a);
        Ok(v)
    }

    pub fn agreement(&self, id: &str) -> Answer {
        let s = lock(&self.state);
        s.agreements
            .get(id)
            .map(|a| Self::agreement_json(id, a))
            .ok_or_else(|| not_found("End User Agreement"))
    }

    pub fn agreements(&self, limit: usize, offset: usize) -> Value {
        let s = lock(&self.state);
        let all: Vec<Value> = s
            .agreements
            .iter()
            .map(|(id, a)| Self::agreement_json(id, a))
            .collect();
        page(all, limit, offset)
    }

    pub fn delete_agreement(&self, id: &str) -> Answer {
        lock(&self.state)
            .agreements
            .remove(id)
            .ok_or_else(|| not_found("End User Agreement"))?;
        Ok(
            json!({"summary": "End User Agreement deleted", "detail": format!("End User Agreement {id} deleted")}),
        )
    }

    // ---- requisitions ----

    fn requisition_json(&self, id: &str, r: &Requisition) -> Value {
        json!({"id": id, "created": rfc3339(r.created), "redirect": r.redirect, "status": r.status,
               "institution_id": r.institution_id, "agreement": r.agreement, "reference": r.reference,
               "accounts": r.accounts, "user_language": r.user_language,
               "link": format!("{}{CONTROL_PREFIX}/psd2/start/{id}/{}", read(&self.root_url), r.institution_id),
               "ssn": null, "account_selection": false, "redirect_immediate": false})
    }

    pub fn create_requisition(&self, body: &Value) -> Answer {
        let text = |k: &'static str| body.get(k).and_then(Value::as_str).map(str::to_owned);
        let redirect =
            text("redirect").ok_or_else(|| bad("redirect", "This field is required."))?;
        let institution_id = text("institution_id")
            .ok_or_else(|| bad("institution_id", "This field is required."))?;
        if !INSTITUTIONS.iter().any(|i| i.id == institution_id) {
            return Err(bad(
                "institution_id",
                format!("Unknown Institution ID {institution_id}"),
            ));
        }
        let reference = text("reference").unwrap_or_else(|| Uuid::new_v4().to_string());
        let mut s = lock(&self.state);
        if s.requisitions.values().any(|r| r.reference == reference) {
            return Err(bad(
                "reference",
                format!("Client reference '{reference}' already exists"),
            ));
        }
        let agreement = text("agreement");
        if let Some(a) = &agreement {
            match s.agreements.get(a) {
                None => return Err(bad("agreement", format!("Unknown agreement {a}"))),
                Some(a) if a.institution_id != institution_id => {
                    return Err(bad("agreement", "The agreement is for another institution"));
                }
                Some(_) => {}
            }
        }
        let id = Uuid::new_v4().to_string();
        let r = Requisition {
            created: self.now(),
            redirect,
            status: "CR",
            institution_id,
            agreement,
            reference,
            accounts: Vec::new(),
            user_language: text("user_language").unwrap_or_else(|| "EN".to_owned()),
        };
        let v = self.requisition_json(&id, &r);
        s.requisitions.insert(id, r);
        Ok(v)
    }

    pub fn requisition(&self, id: &str) -> Answer {
        let mut s = lock(&self.state);
        self.expire_lazily(&mut s);
        s.requisitions
            .get(id)
            .map(|r| self.requisition_json(id, r))
            .ok_or_else(|| not_found("Requisition"))
    }

    pub fn requisitions(&self, limit: usize, offset: usize) -> Value {
        let s = lock(&self.state);
        let all: Vec<Value> = s
            .requisitions
            .iter()
            .map(|(id, r)| self.requisition_json(id, r))
            .collect();
        page(all, limit, offset)
    }

    pub fn delete_requisition(&self, id: &str) -> Answer {
        let mut s = lock(&self.state);
        let r = s
            .requisitions
            .remove(id)
            .ok_or_else(|| not_found("Requisition"))?;
        for a in r.accounts {
            s.accounts.remove(&a);
        }
        Ok(
            json!({"summary": "Requisition deleted", "detail": format!("Requisition {id} deleted with all its End User Agreements")}),
        )
    }

    /// The user went through the bank: the requisition is linked (new
    /// account ids for the same bank accounts), or refused. The answer is
    /// where the browser goes next.
    pub fn link(&self, id: &str, approve: bool) -> Result<String, Refusal> {
        let now = self.now();
        let mut s = lock(&self.state);
        let r = s
            .requisitions
            .get(id)
            .cloned()
            .ok_or_else(|| not_found("Requisition"))?;
        if r.status != "CR" && r.status != "GC" && r.status != "UA" {
            return Err(Refusal::new(
                409,
                "Conflict",
                format!("the requisition is {}", r.status),
            ));
        }
        if !approve {
            if let Some(r) = s.requisitions.get_mut(id) {
                r.status = "RJ";
            }
            return Ok(format!(
                "{}?ref={}&error=UserCancelledSession&details=User+cancelled+the+session",
                r.redirect, r.reference
            ));
        }
        let ids: Vec<String> = (0..self.books.len())
            .map(|_| Uuid::new_v4().to_string())
            .collect();
        for (index, a) in ids.iter().enumerate() {
            s.accounts.insert(
                a.clone(),
                LinkedAccount {
                    index,
                    requisition: id.to_owned(),
                    created: now,
                    last_accessed: None,
                },
            );
        }
        if let Some(agreement) = r.agreement.as_ref().and_then(|a| s.agreements.get_mut(a)) {
            agreement.accepted = Some(now);
        }
        let req = s.requisitions.get_mut(id).expect("read above");
        req.status = "LN";
        req.accounts = ids;
        let sep = if r.redirect.contains('?') { '&' } else { '?' };
        Ok(format!("{}{sep}ref={}", r.redirect, r.reference))
    }

    /// A linked requisition whose agreement ran out turns `EX`.
    fn expire_lazily(&self, s: &mut State) {
        let now = self.now();
        let agreements = s.agreements.clone();
        for r in s.requisitions.values_mut() {
            if r.status == "LN"
                && r.agreement
                    .as_ref()
                    .and_then(|a| agreements.get(a))
                    .and_then(|a| {
                        a.accepted
                            .map(|t| t + chrono::Duration::days(i64::from(a.access_valid_for_days)))
                    })
                    .is_some_and(|end| end <= now)
            {
                r.status = "EX";
            }
        }
    }
}

fn page(all: Vec<Value>, limit: usize, offset: usize) -> Value {
    let count = all.len();
    let results: Vec<Value> = all.into_iter().skip(offset).take(limit.max(1)).collect();
    json!({"count": count, "next": null, "previous": null, "results": results})
}

/// A scope of account data, each with its own daily limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Metadata,
    Details,
    Balances,
    Transactions,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Scope::Metadata => "metadata",
            Scope::Details => "details",
            Scope::Balances => "balances",
            Scope::Transactions => "transactions",
        }
    }
}

/// The rate-limit headers of an account call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the next day at the service.
    pub reset: i64,
}

impl GoCardless {
    fn seconds_to_midnight(&self) -> i64 {
        let now = self.now();
        let midnight = (now.date_naive() + Days::new(1))
            .and_time(chrono::NaiveTime::MIN)
            .and_utc();
        (midnight - now).num_seconds().max(1)
    }

    /// Admit a call on account `id` in `scope`: the account is linked, its
    /// agreement still valid and covering the scope, and the day's limit
    /// not reached. Returns the account's index and the limits after it.
    fn admit(&self, id: &str, scope: Scope) -> Result<(usize, Option<Limits>), Refusal> {
        let now = self.now();
        let today = self.today();
        let limit = *read(&self.limit);
        let reset = self.seconds_to_midnight();
        let mut s = lock(&self.state);
        self.expire_lazily(&mut s);
        let acc = s
            .accounts
            .get(id)
            .cloned()
            .ok_or_else(|| not_found("Account"))?;
        let req = s
            .requisitions
            .get(&acc.requisition)
            .cloned()
            .ok_or_else(|| not_found("Account"))?;
        if req.status == "EX" {
            return Err(Refusal {
                kind: Some("AccessExpiredError"),
                ..Refusal::new(
                    401,
                    "End User Agreement (EUA) has expired",
                    "EUA was valid for 90 days and has expired. The user must re-connect the account (a new requisition).",
                )
            });
        }
        if scope != Scope::Metadata
            && let Some(a) = req.agreement.as_ref().and_then(|a| s.agreements.get(a))
            && !a.access_scope.iter().any(|x| x == scope.name())
        {
            return Err(Refusal::new(
                403,
                "Access scope missing",
                format!("the End User Agreement does not allow {}", scope.name()),
            ));
        }
        let mut limits = None;
        if scope != Scope::Metadata
            && let Some(limit) = limit
        {
            let used = s
                .usage
                .entry((today, id.to_owned(), scope.name()))
                .or_default();
            if *used >= limit {
                s.refused += 1;
                return Err(Refusal {
                    retry_after: Some(reset),
                    ..Refusal::new(
                        429,
                        "Rate limit exceeded",
                        format!(
                            "The rate limit for this resource is {limit}/day. Please try again in {reset} seconds"
                        ),
                    )
                });
            }
            *used += 1;
            limits = Some(Limits {
                limit,
                remaining: limit - *used,
                reset,
            });
        }
        if let Some(a) = s.accounts.get_mut(id) {
            a.last_accessed = Some(now);
        }
        Ok((acc.index, limits))
    }

    pub fn account(&self, id: &str) -> Result<(Value, Option<Limits>), Refusal> {
        let (i, limits) = self.admit(id, Scope::Metadata)?;
        let s = lock(&self.state);
        let acc = &s.accounts[id];
        let a = &self.books.get()[i];
        let req = &s.requisitions[&acc.requisition];
        Ok((
            json!({"id": id, "created": rfc3339(acc.created), "last_accessed": acc.last_accessed.map(rfc3339),
                   "iban": a.iban.as_str(), "institution_id": req.institution_id, "status": "READY",
                   "owner_name": "Alex Example"}),
            limits,
        ))
    }

    pub fn details(&self, id: &str) -> Result<(Value, Option<Limits>), Refusal> {
        let (i, limits) = self.admit(id, Scope::Details)?;
        let a = &self.books.get()[i];
        Ok((
            json!({"account": {"resourceId": format!("{:016x}", crate::fibank::data::mix(7, i as u64, 1)),
                               "iban": a.iban.as_str(), "currency": a.currency, "ownerName": "Alex Example",
                               "name": a.name, "product": a.product, "cashAccountType": "CACC"}}),
            limits,
        ))
    }

    pub fn balances(&self, id: &str) -> Result<(Value, Option<Limits>), Refusal> {
        let (i, limits) = self.admit(id, Scope::Balances)?;
        let a = &self.books.get()[i];
        let today = self.today();
        let booked = a.balance_at(today);
        let pending: i64 = a.pending(today).map(|r| r.minor).sum();
        let amount = |m: i64| json!({"amount": money_string(m), "currency": a.currency});
        Ok((
            json!({"balances": [
                {"balanceAmount": amount(booked), "balanceType": "closingBooked", "referenceDate": today.to_string()},
                {"balanceAmount": amount(booked + pending), "balanceType": "interimAvailable", "referenceDate": today.to_string()},
            ]}),
            limits,
        ))
    }

    /// Transactions between the dates (both optional), within the agreement's history.
    pub fn transactions(
        &self,
        id: &str,
        date_from: Option<&str>,
        date_to: Option<&str>,
    ) -> Result<(Value, Option<Limits>), Refusal> {
        let parse = |v: Option<&str>, field: &'static str| -> Result<Option<NaiveDate>, Refusal> {
            v.map(|s| {
                NaiveDate::parse_from_str(s, "%Y-%m-%d")
                    .map_err(|_| bad(field, format!("{field} must be a date YYYY-MM-DD")))
            })
            .transpose()
        };
        let (from, to) = (parse(date_from, "date_from")?, parse(date_to, "date_to")?);
        if let (Some(f), Some(t)) = (from, to)
            && f > t
        {
            return Err(bad(
                "date_from",
                "Starting date cannot be after the end date",
            ));
        }
        let today = self.today();
        if to.is_some_and(|t| t > today) {
            return Err(bad("date_to", "Date can't be in future"));
        }
        let history = {
            let s = lock(&self.state);
            s.accounts
                .get(id)
                .and_then(|a| s.requisitions.get(&a.requisition))
                .and_then(|r| r.agreement.as_ref())
                .and_then(|a| s.agreements.get(a))
                .map_or(90, |a| a.max_historical_days)
        };
        let oldest = today - Days::new(u64::from(history.saturating_sub(1)));
        if from.is_some_and(|f| f < oldest) {
            return Err(bad(
                "date_from",
                format!("Date is outside the {history} days of access the agreement gives"),
            ));
        }
        let (i, limits) = self.admit(id, Scope::Transactions)?;
        let a = &self.books.get()[i];
        let from = from.unwrap_or(oldest);
        let to = to.unwrap_or(today);
        let booked: Vec<Value> = a
            .booked(today)
            .iter()
            .rev()
            .filter(|r| from <= r.booking && r.booking <= to)
            .map(|r| tx_json(a, r, true))
            .collect();
        let pending: Vec<Value> = a
            .pending(today)
            .filter(|r| from <= r.value && r.value <= to)
            .map(|r| tx_json(a, r, false))
            .collect();
        Ok((
            json!({"transactions": {"booked": booked, "pending": pending}}),
            limits,
        ))
    }
}

fn tx_json(a: &data::Account, r: &data::Row, booked: bool) -> Value {
    let mut t = json!({
        "transactionAmount": {"amount": money_string(r.minor), "currency": a.currency},
        "valueDate": r.value.to_string(),
        "remittanceInformationUnstructured": r.remittance,
        "bankTransactionCode": r.kind.bank_transaction_code(),
    });
    if booked {
        t["transactionId"] = json!(format!("{}-{:07}", a.index, r.seq));
        t["internalTransactionId"] = json!(format!(
            "{:032x}",
            crate::fibank::data::mix(a.index as u64, r.seq, 9)
        ));
        t["bookingDate"] = json!(r.booking.to_string());
    }
    let (name, account) = if r.minor < 0 {
        ("creditorName", "creditorAccount")
    } else {
        ("debtorName", "debtorAccount")
    };
    t[name] = json!(r.party);
    if let Some(iban) = &r.party_iban {
        t[account] = json!({"iban": iban});
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> GoCardless {
        GoCardless::new(&SandboxConfig {
            accounts: 2,
            transactions: 200,
            years: 1,
            today: NaiveDate::from_ymd_opt(2026, 4, 1),
            ..SandboxConfig::default()
        })
    }

    /// A linked requisition's account ids, with an agreement of `days`.
    fn linked(gc: &GoCardless, days: u64) -> (String, Vec<String>) {
        let a = gc
            .create_agreement(&json!({"institution_id": SANDBOX_INSTITUTION,
                                      "max_historical_days": 365, "access_valid_for_days": days}))
            .unwrap();
        let r = gc
            .create_requisition(&json!({"redirect": "http://127.0.0.1:9/back",
                                        "institution_id": SANDBOX_INSTITUTION,
                                        "agreement": a["id"], "reference": Uuid::new_v4().to_string()}))
            .unwrap();
        assert_eq!(r["status"], "CR");
        let id = r["id"].as_str().unwrap().to_owned();
        let back = gc.link(&id, true).unwrap();
        assert!(back.starts_with("http://127.0.0.1:9/back?ref="));
        let r = gc.requisition(&id).unwrap();
        assert_eq!(r["status"], "LN");
        let ids = r["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        (id, ids)
    }

    #[test]
    fn four_successful_calls_a_day_per_account_and_scope() {
        let gc = service();
        let (_, ids) = linked(&gc, 90);
        for n in 0..4 {
            let (_, limits) = gc.balances(&ids[0]).unwrap();
            assert_eq!(limits.unwrap().remaining, 3 - n);
        }
        let e = gc.balances(&ids[0]).unwrap_err();
        assert_eq!((e.status, e.summary), (429, "Rate limit exceeded"));
        assert!(e.retry_after.is_some_and(|s| s > 0));
        // Another scope, another account: their own budgets.
        gc.details(&ids[0]).unwrap();
        gc.balances(&ids[1]).unwrap();
        assert_eq!(gc.usage(), (4, 1));
        gc.advance(1).unwrap();
        gc.balances(&ids[0]).unwrap();
    }

    #[test]
    fn an_expired_agreement_ends_access_and_a_new_link_gives_new_ids() {
        let gc = service();
        let (req, ids) = linked(&gc, 10);
        gc.transactions(&ids[0], None, None).unwrap();
        gc.advance(10).unwrap();
        let e = gc.transactions(&ids[0], None, None).unwrap_err();
        assert_eq!((e.status, e.kind), (401, Some("AccessExpiredError")));
        assert_eq!(gc.requisition(&req).unwrap()["status"], "EX");
        let (_, again) = linked(&gc, 90);
        assert!(again.iter().all(|id| !ids.contains(id)), "new ids");
        let iban = |id: &str| gc.account(id).unwrap().0["iban"].clone();
        assert_eq!(iban(&again[0]), gc.truth()[0].iban.as_str());
    }

    #[test]
    fn tokens_expire_and_refresh() {
        let gc = service();
        let creds = gc.credentials();
        assert_eq!(
            gc.new_token(&json!({"secret_id": creds.secret_id, "secret_key": "wrong"}))
                .unwrap_err()
                .status,
            401
        );
        let pair = gc
            .new_token(&json!({"secret_id": creds.secret_id, "secret_key": creds.secret_key}))
            .unwrap();
        let access = pair["access"].as_str().unwrap().to_owned();
        gc.authorise(Some(&access)).unwrap();
        gc.advance(1).unwrap();
        assert_eq!(gc.authorise(Some(&access)).unwrap_err().status, 401, "24 h");
        let fresh = gc
            .refresh_token(&json!({"refresh": pair["refresh"]}))
            .unwrap();
        gc.authorise(fresh["access"].as_str()).unwrap();
    }

    #[test]
    fn transactions_stay_within_the_agreements_history() {
        let gc = service();
        let (_, ids) = linked(&gc, 90);
        let e = gc
            .transactions(&ids[0], Some("2020-01-01"), None)
            .unwrap_err();
        assert_eq!(e.status, 400);
        let e = gc
            .transactions(&ids[0], Some("2026-03-10"), Some("2026-03-01"))
            .unwrap_err();
        assert_eq!(e.status, 400);
        let (v, _) = gc
            .transactions(&ids[0], Some("2026-03-01"), Some("2026-03-31"))
            .unwrap();
        for t in v["transactions"]["booked"].as_array().unwrap() {
            let d = t["bookingDate"].as_str().unwrap();
            assert!(("2026-03-01"..="2026-03-31").contains(&d), "{d}");
        }
    }
}
