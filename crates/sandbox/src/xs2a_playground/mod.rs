//! A Klarna-like XS2A playground: the open-banking flows a multi-step
//! monitoring check drives against Klarna's public playground, and the
//! consent API a sync source reads, so a flow monitor can be run, timed and
//! broken on purpose, and the `klarna` connector synced, with no real bank.
//!
//! **The monitoring story's run** is 8 steps and 11 requests ([`Step`]):
//! start a session, start an account-details flow, select the German test
//! bank, read the wizard's form, post three encrypted forms (transport,
//! credentials, account) to the `next` URLs the server hands out, complete
//! the bank redirect, get the consent, then read account details and
//! balances with a consent token that rotates on every use.
//!
//! **Observed** (Klarna's public XS2A documentation and the clients written
//! against it): `Authorization: Token …`; every success wrapped in
//! `{"data": …}`; `PUT /xs2a/v1/sessions` with a `consent_scope` answers
//! `session_id`, `self`, `consent` and a `flows` map; flows start with `PUT`
//! on their URL (`account-details`, `accounts`, `transactions`) and answer
//! `flow_id`, `client_token`, `self`, `state` (`CONSUMER_INPUT_NEEDED` …
//! `FINISHED`/`ABORTED`); `GET /xs2a/v1/sessions/{sid}/flows/{fid}` reads a
//! flow and `POST …/flows/{fid}/list` `{offset}` pages its transactions;
//! the transactions flow takes `account_id`/`iban`, `from_date`/`to_date` or
//! `last_days` (30 days when none) and `preferred_pagination_size`;
//! `POST …/consent/get` answers `consent_id`, `consent_token` and the
//! consent URLs by scope (`…/consents/{cid}/{accounts|account-details|
//! balances|transactions}/get`); every consent call answers a new
//! `consent_token` and the old one is spent; `…/transactions/list`
//! `{offset, consent_token}` pages; transactions carry `transaction_id`,
//! `reference`, `bank_references`, `counter_party`, `date`, `value_date`,
//! `booking_date`, `state` (`PROCESSED`/`PENDING`), `type` (`DEBIT`/
//! `CREDIT`) and an unsigned `amount{amount, currency}` in minor units;
//! balances `balance`, `available`, `limit`, `reserved`; consent errors are
//! `{"error": {code, message}, "consent_token"?}` with 400
//! `CONSENT.EXPIRED` / `CONSENT.LIMIT_EXCEEDED`, the token present only when
//! it may be used again; `DELETE /xs2a/v1/sessions/{sid}` closes a session.
//!
//! **Our modelling** (where the documentation is silent):
//! - The wizard's forms and the bank redirect are the test bank's; the
//!   redirect page sends the browser to the session's
//!   `redirect_return_url` with `redirect_id` and `result=success` (or
//!   `result=failure` when the person cancels); the client completes the
//!   flow with that address as `return_url`.
//! - An accounts flow consents to every account of the login; the other
//!   flows to the account chosen.
//! - The account-details flow answers an empty `client_token` (observed on
//!   the playground by the monitoring story); the accounts and transactions
//!   flows answer one, for clients that hand it to the XS2A App.
//! - `consent_scope.lifetime` is days (default and most 90), on the
//!   playground's clock, which tests move on (`…/advance`).
//! - A consent call without a `psu` object is unattended: 4 a day per
//!   account and call (PSD2), then 400 `CONSENT.LIMIT_EXCEEDED`.
//! - Account ids stay for an instance until `…/renew-ids` changes them
//!   (a bank that renumbers); IBANs stay.
//! - Pages hold `preferred_pagination_size` transactions (default 100,
//!   at most 1,000); a page's `pagination` names the next offset.
//! - Random faults (the sandbox's `fault_rate`) hit consent calls before
//!   they spend the token, as 503 or 429, with the token to retry with.
//! - Bank Universe's bank list (`GET /v1/banks?country_code=`, observed:
//!   its fields and paging) is served on the same host, with the test bank.
//! - Account balances: `balance` is the booked balance; `limit` a fixed
//!   overdraft of 1,000.00; `reserved` the pending card payments;
//!   `available` = balance + limit − reserved, never below 0.
//!
//! Both of the real playground's hosts (`authapi…` and `api…`) map to
//! [`PREFIX`]; absolute URLs in answers are built from the request's `Host`
//! header. Control routes live under [`CONTROL_PREFIX`]: `credentials`,
//! `fail` (failure injection by request number), `stats`, `latency`,
//! `truth`, `advance`, `usage` and `renew-ids`.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use axum::http::StatusCode;
use chrono::{DateTime, NaiveDate, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::SandboxConfig;
use crate::fault::FaultConfig;
use crate::fibank::AccountTruth;
use crate::util::{ShiftedClock, read, write};
use crate::xs2a::data::{LazyBooks, Params};

pub mod crypto;
mod flow;
mod http;

pub use http::routes;

use crypto::ServerKey;

/// The path prefix every playground route answers under.
pub const PREFIX: &str = "/xs2a-playground";
/// The control routes' prefix.
pub const CONTROL_PREFIX: &str = "/_sandbox/xs2a-playground";
/// The test bank's login for redirect authentication.
pub const USERNAME: &str = "redirect";
pub const PASSWORD: &str = "123456";
/// The only bank of the playground: the German test bank.
pub const BANK_CODE: &str = "00000";
pub const COUNTRY_CODE: &str = "DE";
/// The transport the first form offers.
pub const INTERFACE: &str = "de_testbank_bias";
/// Form keys of the credentials form.
pub const USERNAME_KEY: &str = "bias.apis.forms.elements.UsernameElement";
pub const PASSWORD_KEY: &str = "bias.apis.forms.elements.PasswordElement";
/// Wrong logins in a row that abort a flow.
pub const MAX_LOGIN_ATTEMPTS: u32 = 3;
/// A session (and everything of it) is forgotten after this long.
pub const SESSION_TTL: std::time::Duration = std::time::Duration::from_secs(3600);
/// Beyond this many live sessions the expired, then the oldest, are dropped.
const MAX_SESSIONS: usize = 20_000;
/// Unattended consent calls a day per account and call.
pub const DAILY_LIMIT: u32 = 4;
/// Days a consent lives when `consent_scope.lifetime` does not say (and at most).
pub const LIFETIME_DAYS: u32 = 90;
/// Transactions per page unless `preferred_pagination_size` says otherwise.
pub const PAGE_SIZE: usize = 100;
pub const MAX_PAGE_SIZE: usize = 1_000;
/// The test bank's overdraft, in cents: every account's `limit`.
pub const OVERDRAFT: i64 = 100_000;
/// The test bank's code inside its IBANs.
const BLZ: &str = "88888888";

/// The 11 requests of one run, in order. `number()` is what failure
/// injection and the stats use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    StartSession,
    StartFlow,
    SelectBank,
    GetFlow,
    Transport,
    Credentials,
    CompleteFlow,
    SelectAccount,
    GetConsent,
    AccountDetails,
    Balances,
}

impl Step {
    pub const ALL: [Step; 11] = [
        Step::StartSession,
        Step::StartFlow,
        Step::SelectBank,
        Step::GetFlow,
        Step::Transport,
        Step::Credentials,
        Step::CompleteFlow,
        Step::SelectAccount,
        Step::GetConsent,
        Step::AccountDetails,
        Step::Balances,
    ];

    /// 1..=11
    pub fn number(self) -> u8 {
        self as u8 + 1
    }

    pub fn from_number(n: u8) -> Option<Step> {
        Step::ALL.get(usize::from(n).checked_sub(1)?).copied()
    }

    pub fn describe(self) -> &'static str {
        match self {
            Step::StartSession => "PUT /xs2a/v1/sessions (start session)",
            Step::StartFlow => "PUT /xs2a/v1/sessions/{id}/flows/account-details",
            Step::SelectBank => "POST /branded/xs2a/v1/wizard/{flow_id} (select bank)",
            Step::GetFlow => "GET /branded/xs2a/v1/wizard/{flow_id}",
            Step::Transport => "POST next (encrypted transport form)",
            Step::Credentials => "POST next (encrypted credentials form)",
            Step::CompleteFlow => "POST /branded/xs2a/v1/wizard/{flow_id} (complete redirect)",
            Step::SelectAccount => "POST next (encrypted account form)",
            Step::GetConsent => "POST /xs2a/v1/sessions/{id}/consent/get",
            Step::AccountDetails => "POST consents.account_details",
            Step::Balances => "POST consents.balances",
        }
    }
}

/// Failure injection: the `request`-th request of the next `runs_left`
/// runs (every run while `persist`) answers 503.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailPlan {
    pub request: u8,
    pub runs_left: u32,
    pub persist: bool,
}

/// A refusal: `{"error": {"code", "message", …}}`, optionally with the
/// `data` a client can continue from (a re-shown form).
#[derive(Debug)]
pub(crate) struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub injected: Option<Step>,
    pub attempts_left: Option<u32>,
    pub data: Option<Box<Value>>,
    /// A consent token the client may use again (next to `error`).
    pub consent_token: Option<String>,
    /// `Retry-After`, seconds.
    pub retry_after: Option<u64>,
}

impl Refusal {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            code,
            message: message.into(),
            injected: None,
            attempts_left: None,
            data: None,
            consent_token: None,
            retry_after: None,
        }
    }

    pub fn bad(message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::CONFLICT, code, message)
    }

    pub fn injected(step: Step) -> Refusal {
        Refusal {
            injected: Some(step),
            ..Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "SANDBOX_INJECTED_FAILURE",
                format!(
                    "failure injected by the sandbox at request {} of this run: {}",
                    step.number(),
                    step.describe()
                ),
            )
        }
    }

    pub fn body(&self) -> Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(step) = self.injected {
            error["injected"] = json!(true);
            error["request"] = json!(step.number());
        }
        if let Some(n) = self.attempts_left {
            error["attempts_left"] = json!(n);
        }
        let mut body = json!({ "error": error });
        if let Some(data) = &self.data {
            body["data"] = (**data).clone();
        }
        if let Some(token) = &self.consent_token {
            body["consent_token"] = json!(token);
        }
        body
    }
}

/// A test-bank account as the playground shows it today.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Account {
    pub id: String,
    pub alias: String,
    pub iban: String,
    pub account_number: String,
    /// Minor units (cents), never negative.
    pub available: i64,
    /// The booked balance, minor units.
    pub balance: i64,
}

/// What a developer (or a flow file) needs to run the flow.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct Xs2aCredentials {
    pub api_token: String,
    pub username: String,
    pub password: String,
    pub bank_code: String,
    pub country_code: String,
    pub interface: String,
}

impl std::fmt::Debug for Xs2aCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xs2aCredentials")
            .field("api_token", &"[redacted]")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Stats {
    sessions: AtomicU64,
    flows_finished: AtomicU64,
    consents: AtomicU64,
    injected: AtomicU64,
    refused: AtomicU64,
    requests: [AtomicU64; 11],
}

/// The simulated playground: its API token and RSA key, sessions with their
/// flows and consents, the failure plan and counters.
pub struct Playground {
    api_token: String,
    /// Signs the form JWTs (nobody verifies them; they only look the part).
    jwt_secret: [u8; 32],
    /// Made on first use: most sandboxes never run this flow.
    key: tokio::sync::OnceCell<Arc<ServerKey>>,
    books: LazyBooks,
    /// Account ids by book index (renewable, see the module docs).
    ids: RwLock<Vec<String>>,
    clock: ShiftedClock,
    fault: RwLock<FaultConfig>,
    inner: Mutex<flow::Inner>,
    stats: Stats,
    /// Injected latency (ms) before every playground answer, for testing
    /// slow-bank (degraded) alerts; 0 = none.
    latency_ms: AtomicU64,
}

impl std::fmt::Debug for Playground {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Playground")
            .field("accounts", &self.books.len())
            .finish_non_exhaustive()
    }
}

impl Default for Playground {
    fn default() -> Self {
        Playground::new(&SandboxConfig::default())
    }
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

impl Playground {
    pub fn new(config: &SandboxConfig) -> Playground {
        let mut jwt_secret = [0u8; 32];
        rand::rng().fill_bytes(&mut jwt_secret);
        Playground {
            api_token: random_hex(24),
            jwt_secret,
            key: tokio::sync::OnceCell::new(),
            books: LazyBooks::new(Params {
                seed: config.seed ^ 0x6b6c_6172,
                country: COUNTRY_CODE,
                currency: "EUR",
                bank_code: BLZ,
                // The test bank login has at least two accounts (the story picks one of several).
                accounts: config.accounts.max(2),
                transactions: config.transactions,
                years: config.years,
                today: config.day_in(chrono_tz::UTC),
            }),
            ids: RwLock::new(Vec::new()),
            clock: ShiftedClock::starting_on(config.day_in(chrono_tz::UTC)),
            fault: RwLock::new(config.fault.clone()),
            inner: Mutex::new(flow::Inner::default()),
            stats: Stats::default(),
            latency_ms: AtomicU64::new(0),
        }
    }

    /// The playground's clock (consent lifetimes, daily limits, the books' day).
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn today(&self) -> NaiveDate {
        self.now().date_naive()
    }

    /// Move the clock on (not past the end of the books).
    pub fn advance_by(&self, by: chrono::Duration) -> Result<NaiveDate, String> {
        self.clock.advance(by, self.books.last_day())
    }

    pub fn advance(&self, days: u32) -> Result<NaiveDate, String> {
        self.advance_by(chrono::Duration::days(i64::from(days)))
    }

    pub fn advance_hours(&self, hours: u32) -> Result<NaiveDate, String> {
        self.advance_by(chrono::Duration::hours(i64::from(hours)))
    }

    pub(crate) fn books(&self) -> &[crate::xs2a::data::Account] {
        self.books.get()
    }

    pub(crate) fn fault(&self) -> FaultConfig {
        read(&self.fault).clone()
    }

    /// The account ids, made on first use and by [`Playground::renew_ids`].
    pub(crate) fn account_ids(&self) -> Vec<String> {
        {
            let ids = read(&self.ids);
            if !ids.is_empty() {
                return ids.clone();
            }
        }
        let mut ids = write(&self.ids);
        if ids.is_empty() {
            *ids = (0..self.books.len()).map(|_| random_hex(12)).collect();
        }
        ids.clone()
    }

    /// Give every account a new id, as a bank that renumbers does: consents
    /// answer the new ids from now on.
    pub fn renew_ids(&self) {
        *write(&self.ids) = (0..self.books.len()).map(|_| random_hex(12)).collect();
    }

    /// Every account's booked and pending totals today.
    pub fn truth(&self) -> Vec<AccountTruth> {
        let today = self.today();
        self.books().iter().map(|a| a.truth(today)).collect()
    }

    /// The most unattended consent calls of one account and call on one
    /// day, and how many were refused with `CONSENT.LIMIT_EXCEEDED`.
    pub fn usage(&self) -> (u32, u32) {
        self.lock().usage()
    }

    /// Delay every playground answer by `ms` milliseconds (0 turns it off).
    pub fn set_latency(&self, ms: u64) {
        self.latency_ms.store(ms.min(60_000), Ordering::Relaxed);
    }

    pub fn latency(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.latency_ms.load(Ordering::Relaxed))
    }

    pub fn credentials(&self) -> Xs2aCredentials {
        Xs2aCredentials {
            api_token: self.api_token.clone(),
            username: USERNAME.to_owned(),
            password: PASSWORD.to_owned(),
            bank_code: BANK_CODE.to_owned(),
            country_code: COUNTRY_CODE.to_owned(),
            interface: INTERFACE.to_owned(),
        }
    }

    /// The test bank's accounts today, in the order the account form offers them.
    pub fn accounts(&self) -> Vec<Account> {
        let today = self.today();
        let ids = self.account_ids();
        self.books()
            .iter()
            .zip(ids)
            .map(|(a, id)| {
                let iban = a.iban.to_string();
                let balance = a.balance_at(today);
                Account {
                    id,
                    alias: a.name.clone(),
                    account_number: iban[12..].to_owned(),
                    iban,
                    available: available(a, today),
                    balance,
                }
            })
            .collect()
    }

    /// `Authorization: Token <api token>` (the scheme case-insensitive).
    pub(crate) fn check_token(&self, authorization: Option<&str>) -> Result<(), Refusal> {
        let unauthorized = |m: &str| Refusal::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", m);
        let Some(value) = authorization else {
            return Err(unauthorized("missing Authorization: Token <api token>"));
        };
        let value = value.trim();
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("token") {
            return Err(unauthorized(
                "the Authorization scheme must be Token (Authorization: Token <api token>)",
            ));
        }
        let (a, b) = (token.trim().as_bytes(), self.api_token.as_bytes());
        let same = a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0;
        if same {
            Ok(())
        } else {
            Err(unauthorized("invalid API token"))
        }
    }

    /// The instance's RSA key, generated (off the runtime) on first use.
    pub(crate) async fn key(&self) -> Result<Arc<ServerKey>, Refusal> {
        self.key
            .get_or_try_init(|| async {
                tokio::task::spawn_blocking(ServerKey::generate)
                    .await
                    .map_err(|e| e.to_string())?
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .await
            .cloned()
            .map_err(|e| {
                Refusal::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL",
                    format!("could not make the RSA key: {e}"),
                )
            })
    }

    fn lock(&self) -> MutexGuard<'_, flow::Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fail the `request`-th request (1..=11) of the next `runs` runs, or of
    /// every run while `persist`; `request` 0 clears the plan.
    pub fn set_fail(
        &self,
        request: u8,
        runs: u32,
        persist: bool,
    ) -> Result<Option<FailPlan>, String> {
        if request == 0 {
            self.lock().plan = None;
            return Ok(None);
        }
        if Step::from_number(request).is_none() {
            return Err(format!(
                "request must be 0 (clear) or 1..=11, got {request}"
            ));
        }
        if runs == 0 {
            return Err("runs must be at least 1".into());
        }
        let plan = FailPlan {
            request,
            runs_left: runs,
            persist,
        };
        self.lock().plan = Some(plan);
        Ok(Some(plan))
    }

    /// The failure plan still pending, if any.
    pub fn fail_plan(&self) -> Option<FailPlan> {
        self.lock().plan
    }

    pub(crate) fn count(&self, step: Step) {
        self.stats.requests[usize::from(step.number() - 1)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_refusal(&self, r: &Refusal) {
        let counter = if r.injected.is_some() {
            &self.stats.injected
        } else {
            &self.stats.refused
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counters since the instance started.
    pub fn stats(&self) -> Value {
        let (live, plan) = {
            let inner = self.lock();
            (inner.live_sessions(), inner.plan)
        };
        let requests: serde_json::Map<String, Value> = Step::ALL
            .iter()
            .map(|s| {
                let n = self.stats.requests[usize::from(s.number() - 1)].load(Ordering::Relaxed);
                (s.number().to_string(), json!(n))
            })
            .collect();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "sessions_created": get(&self.stats.sessions),
            "sessions_live": live,
            "flows_finished": get(&self.stats.flows_finished),
            "consents_issued": get(&self.stats.consents),
            "injected_failures": get(&self.stats.injected),
            "refused": get(&self.stats.refused),
            "requests": requests,
            "fail_plan": plan,
        })
    }
}

/// The banks of `country` as Bank Universe lists them: the test bank in DE.
pub fn banks(country: &str) -> Vec<Value> {
    if !country.eq_ignore_ascii_case(COUNTRY_CODE) {
        return Vec::new();
    }
    let flow = json!({"supported": true});
    vec![json!({
        "bank_name": "Testbank",
        "country_code": COUNTRY_CODE,
        "bank_codes": [BANK_CODE, BLZ],
        "bics": ["TESTDE88XXX"],
        "address": {"street_address": "Teststraße 1", "postal_code": "10115", "city": "Berlin", "country": COUNTRY_CODE},
        "popularity": 100,
        "authentication_methods": ["PASSWORD"],
        "authorization_methods": ["REDIRECT"],
        "transfer_methods": ["SCT"],
        "tokenizable": {"ais": true, "pis": false},
        "flows": {
            "account_details": flow, "accounts": flow, "balances": flow, "transactions": flow,
            "transfer": {"supported": false},
        },
    })]
}

/// `balance + limit − reserved` (pending card payments), never below 0.
pub(crate) fn available(a: &crate::xs2a::data::Account, today: NaiveDate) -> i64 {
    let reserved: i64 = a.pending(today).map(|r| -r.minor.min(0)).sum();
    (a.balance_at(today) + OVERDRAFT - reserved).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_are_german_test_bank_ibans_with_money_available() {
        let pg = Playground::default();
        let accounts = pg.accounts();
        assert_eq!(accounts.len(), SandboxConfig::default().accounts.max(2));
        for a in &accounts {
            assert!(a.iban.starts_with("DE") && a.iban[4..12] == *BLZ, "{a:?}");
            assert!(bankbridge_core::Iban::parse(&a.iban).is_ok());
            assert!(a.available >= 0);
        }
        assert_ne!(accounts[0].id, accounts[1].id);
        pg.renew_ids();
        let renewed = pg.accounts();
        assert_ne!(renewed[0].id, accounts[0].id);
        assert_eq!(renewed[0].iban, accounts[0].iban);
    }

    #[test]
    fn step_numbers_round_trip() {
        for n in 1..=11 {
            assert_eq!(Step::from_number(n).map(Step::number), Some(n));
        }
        assert_eq!(Step::from_number(0), None);
        assert_eq!(Step::from_number(12), None);
    }

    #[test]
    fn token_check() {
        let pg = Playground::default();
        let t = pg.credentials().api_token;
        assert!(pg.check_token(Some(&format!("Token {t}"))).is_ok());
        assert!(pg.check_token(Some(&format!("token {t}"))).is_ok());
        assert!(pg.check_token(Some(&format!("Bearer {t}"))).is_err());
        assert!(pg.check_token(Some("Token undefined")).is_err());
        assert!(pg.check_token(None).is_err());
        assert!(pg.check_token(Some("Token")).is_err());
    }

    #[test]
    fn fail_plan_validation() {
        let pg = Playground::default();
        assert!(pg.set_fail(12, 1, false).is_err());
        assert!(pg.set_fail(3, 0, false).is_err());
        assert_eq!(
            pg.set_fail(3, 2, false).unwrap(),
            Some(FailPlan {
                request: 3,
                runs_left: 2,
                persist: false
            })
        );
        assert_eq!(pg.set_fail(0, 1, false).unwrap(), None);
        assert_eq!(pg.fail_plan(), None);
    }
}
