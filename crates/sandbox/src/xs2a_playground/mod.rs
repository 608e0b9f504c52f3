//! A Klarna-like XS2A playground: the open-banking flow a multi-step
//! monitoring check drives against Klarna's public playground, so a flow
//! monitor can be run, timed and broken on purpose with no real bank.
//!
//! One run is 8 steps and 11 requests ([`Step`]): start a session, start an
//! account-details flow, select the German test bank, read the wizard's
//! form, post three encrypted forms (transport, credentials, account) to
//! the `next` URLs the server hands out, complete the bank redirect, get the
//! consent, then read account details and balances with a consent token
//! that rotates on every use.
//!
//! Both of the real playground's hosts (`authapi…` and `api…`) map to
//! [`PREFIX`]; absolute URLs in answers are built from the request's `Host`
//! header. Control routes live under [`CONTROL_PREFIX`]: `credentials`,
//! `fail` (failure injection by request number) and `stats`.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::http::StatusCode;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

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
    pub data: Option<Value>,
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
            body["data"] = data.clone();
        }
        body
    }
}

/// A test-bank account (the same for every session of an instance).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Account {
    pub id: String,
    pub alias: String,
    pub iban: String,
    pub account_number: String,
    /// Minor units (cents), never negative.
    pub available: i64,
    pub booked: i64,
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
    accounts: Vec<Account>,
    inner: Mutex<flow::Inner>,
    stats: Stats,
    /// Injected latency (ms) before every playground answer, for testing
    /// slow-bank (degraded) alerts; 0 = none.
    latency_ms: AtomicU64,
}

impl std::fmt::Debug for Playground {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Playground")
            .field("accounts", &self.accounts.len())
            .finish_non_exhaustive()
    }
}

impl Default for Playground {
    fn default() -> Self {
        Playground::new()
    }
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// `DE` + mod-97 check digits + the 18-digit BBAN.
fn german_iban(bank: &str, account: &str) -> String {
    let digits = format!("{bank}{account}131400");
    let r = digits
        .bytes()
        .fold(0u32, |r, d| (r * 10 + u32::from(d - b'0')) % 97);
    format!("DE{:02}{bank}{account}", 98 - r)
}

impl Playground {
    pub fn new() -> Playground {
        let mut rng = rand::rng();
        let mut jwt_secret = [0u8; 32];
        rng.fill_bytes(&mut jwt_secret);
        let accounts = ["Girokonto", "Tagesgeld"]
            .iter()
            .map(|alias| {
                let number = format!("{:010}", rng.next_u64() % 10_000_000_000);
                let available = i64::from(rng.next_u32() % 2_500_000) + 10_000;
                Account {
                    id: random_hex(12),
                    alias: (*alias).to_owned(),
                    iban: german_iban("88888888", &number),
                    account_number: number,
                    available,
                    booked: available,
                }
            })
            .collect();
        Playground {
            api_token: random_hex(24),
            jwt_secret,
            key: tokio::sync::OnceCell::new(),
            accounts,
            inner: Mutex::new(flow::Inner::default()),
            stats: Stats::default(),
            latency_ms: AtomicU64::new(0),
        }
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

    /// The test bank's accounts, in the order the account form offers them.
    pub fn accounts(&self) -> &[Account] {
        &self.accounts
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ibans_pass_mod_97() {
        let iban = german_iban("88888888", "0123456789");
        assert_eq!(iban.len(), 22);
        let rearranged = format!("{}{}", &iban[4..], "1314") + &iban[2..4];
        let r = rearranged
            .bytes()
            .fold(0u32, |r, d| (r * 10 + u32::from(d - b'0')) % 97);
        assert_eq!(r, 1);
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
        let pg = Playground::new();
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
        let pg = Playground::new();
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
