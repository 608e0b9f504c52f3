//! Simulated banks for bankbridge: deterministic data from a seed, a sandbox
//! clock, fault injection, and control routes that tell the truth the
//! simulation holds, so a sync can be checked end to end with no real bank.
//!
//! Banks live in their own modules ([`fibank`], [`keypad`]) and share one
//! HTTP router: each bank answers under its own prefix (`/fibank/...`,
//! `/keypad/...`) and has its control routes under `/_sandbox/<bank>/...`.
//!
//! The BankID simulator ([`bankid`]) is the exception that proves the rule:
//! the RP API needs mutual TLS, so it serves on its own HTTPS port, started
//! with the sandbox when [`SandboxConfig::bankid`] is set; its simulated
//! user is driven through `/_sandbox/bankid/...` on the plain-HTTP router.
//!
//! This crate is never a dependency of production code: only of tests,
//! benchmarks and the `sandbox`/`demo` commands.
#![forbid(unsafe_code)]

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

pub mod bankid;
pub mod cardbank;
pub mod enablebanking;
pub mod fault;
pub mod fibank;
pub mod gocardless;
pub mod keypad;
#[cfg(feature = "test-support")]
pub mod receivers;
mod util;
pub mod xs2a;
pub mod xs2a_playground;

pub use fault::{FaultConfig, FaultKind};
pub use fibank::{AccountTruth, SandboxCredentials};
pub use keypad::{KeypadAccountTruth, KeypadConfig, KeypadCredentials};

/// What a sandbox simulates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SandboxConfig {
    /// Every generated account, transaction and name derives from it.
    pub seed: u64,
    /// Accounts of the one customer. Fibank: the first in BGN, then EUR, USD,
    /// GBP, CHF, RON; the keypad bank: EUR current accounts over 1–2 contracts.
    pub accounts: usize,
    /// About this many booked transactions per account over `years`.
    pub transactions: usize,
    /// Length of the history that ends on `today`.
    pub years: u32,
    /// The day every simulated bank's clock starts on, in the bank's own
    /// time zone, at the real time of day there. `None` (the default): each
    /// bank runs on the real clock, so its day is today where it keeps its
    /// books (Sofia, Brussels, Stockholm, UTC for the aggregators).
    pub today: Option<NaiveDate>,
    /// Refuse statement requests spanning more days than this (both ends included).
    pub max_range_days: Option<u32>,
    pub fault: FaultConfig,
    /// Also run the BankID RP API simulator (HTTPS, its own port).
    pub bankid: Option<BankIdSandboxConfig>,
    /// The keypad bank's own settings (its data follows the fields above).
    pub keypad: KeypadConfig,
}

/// The BankID simulator of a sandbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BankIdSandboxConfig {
    /// Where its PEM files live (made on first run, reused after): `ca.pem`,
    /// `rp-cert.pem`, `rp-key.pem`, … The CLI uses
    /// `$BANKBRIDGE_HOME/sandbox/bankid/`.
    pub cert_dir: PathBuf,
    /// HTTPS port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    pub sim: bankid::BankIdSimConfig,
}

impl Default for BankIdSandboxConfig {
    fn default() -> Self {
        BankIdSandboxConfig {
            cert_dir: std::env::temp_dir().join("bankbridge-sandbox-bankid"),
            port: 0,
            sim: bankid::BankIdSimConfig::default(),
        }
    }
}

/// How to reach a running BankID simulator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BankIdEndpoint {
    /// `https://127.0.0.1:PORT/rp/v6.0/`
    pub base_url: String,
    /// The CA to trust for the server certificate.
    pub ca_cert: PathBuf,
    /// The RP client certificate and key (PEM).
    pub rp_cert: PathBuf,
    pub rp_key: PathBuf,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            seed: 0,
            accounts: 3,
            transactions: 2000,
            years: 5,
            today: None,
            max_range_days: None,
            fault: FaultConfig::default(),
            bankid: None,
            keypad: KeypadConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("accounts must be between 1 and {max}, got {got}")]
    Accounts { got: usize, max: usize },
    #[error("transactions per account must be at most {max}, got {got}")]
    Transactions { got: usize, max: usize },
    #[error("years must be between 1 and 30, got {0}")]
    Years(u32),
    #[error("fault_rate must be a number from 0 to 1, got {0}")]
    FaultRate(String),
    #[error("{0}")]
    BankId(String),
}

impl SandboxConfig {
    /// The day a bank keeping its books in `zone` starts on: the fixed
    /// `today`, or the date there now.
    pub fn day_in(&self, zone: chrono_tz::Tz) -> NaiveDate {
        self.today
            .unwrap_or_else(|| chrono::Utc::now().with_timezone(&zone).date_naive())
    }

    pub const MAX_ACCOUNTS: usize = 100;
    pub const MAX_TRANSACTIONS: usize = 2_000_000;

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.accounts == 0 || self.accounts > Self::MAX_ACCOUNTS {
            return Err(ConfigError::Accounts {
                got: self.accounts,
                max: Self::MAX_ACCOUNTS,
            });
        }
        if self.transactions > Self::MAX_TRANSACTIONS {
            return Err(ConfigError::Transactions {
                got: self.transactions,
                max: Self::MAX_TRANSACTIONS,
            });
        }
        if self.years == 0 || self.years > 30 {
            return Err(ConfigError::Years(self.years));
        }
        self.fault.validate()
    }
}

/// The simulated banks behind one router. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SandboxState {
    fibank: Arc<fibank::Fibank>,
    keypad: Arc<keypad::KeypadBank>,
    xs2a: Arc<xs2a_playground::Playground>,
    psd2: Arc<xs2a::Xs2aBanks>,
    gocardless: Arc<gocardless::GoCardless>,
    enablebanking: Arc<enablebanking::EnableBanking>,
    cardbank: Arc<cardbank::CardBank>,
    bankid: Option<Arc<EmbeddedBankId>>,
}

/// The BankID simulator inside a sandbox and its HTTPS server once started.
#[derive(Debug)]
struct EmbeddedBankId {
    sim: Arc<bankid::BankIdSim>,
    port: u16,
    server: tokio::sync::Mutex<Option<bankid::BankIdSimHandle>>,
}

impl SandboxState {
    /// Generate every bank's data. CPU-bound (about a second for 3 × 100,000
    /// transactions in a release build; the banks are generated on two
    /// threads): call it off the async runtime.
    ///
    /// With a BankID section it also loads (or makes) the simulator's
    /// certificates; [`SandboxState::start_bankid`] (called by
    /// [`serve_state`] and [`spawn`]) starts its HTTPS server.
    pub fn new(config: SandboxConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let bankid = match &config.bankid {
            None => None,
            Some(b) => Some(Arc::new(EmbeddedBankId {
                sim: bankid::BankIdSim::new(&b.cert_dir, b.sim.clone(), bankid::SimClock::new())
                    .map_err(|e| ConfigError::BankId(e.to_string()))?,
                port: b.port,
                server: tokio::sync::Mutex::new(None),
            })),
        };
        let (fibank, keypad) = std::thread::scope(|s| {
            let keypad = s.spawn(|| keypad::KeypadBank::new(&config));
            let fibank = fibank::Fibank::new(&config);
            let keypad = keypad
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (fibank, keypad)
        });
        let psd2 = Arc::new(xs2a::Xs2aBanks::new(
            &config,
            bankid.as_ref().map(|b| b.sim.clone()),
        ));
        Ok(SandboxState {
            fibank: Arc::new(fibank),
            keypad: Arc::new(keypad),
            xs2a: Arc::new(xs2a_playground::Playground::new(&config)),
            psd2,
            gocardless: Arc::new(gocardless::GoCardless::new(&config)),
            enablebanking: Arc::new(enablebanking::EnableBanking::new(&config)),
            cardbank: Arc::new(cardbank::CardBank::new(&config)),
            bankid,
        })
    }

    /// The BankID simulator, when the sandbox has one.
    pub fn bankid(&self) -> Option<&Arc<bankid::BankIdSim>> {
        self.bankid.as_ref().map(|b| &b.sim)
    }

    /// Start the BankID simulator's HTTPS server if the sandbox has one and
    /// it is not running yet; returns its base URL.
    pub async fn start_bankid(&self) -> io::Result<Option<String>> {
        let Some(b) = &self.bankid else {
            return Ok(None);
        };
        let mut server = b.server.lock().await;
        if server.is_none() {
            let handle = bankid::start_server(b.sim.clone(), b.port)
                .await
                .map_err(io::Error::other)?;
            tracing::info!(base_url = %handle.base_url(), "BankID simulator listening");
            *server = Some(handle);
        }
        Ok(server.as_ref().map(|h| h.base_url()))
    }

    /// Stop the BankID simulator's HTTPS server, if running.
    pub async fn stop_bankid(&self) {
        if let Some(b) = &self.bankid
            && let Some(handle) = b.server.lock().await.take()
        {
            handle.shutdown().await;
        }
    }

    pub fn fibank(&self) -> &fibank::Fibank {
        &self.fibank
    }

    pub fn keypad(&self) -> &keypad::KeypadBank {
        &self.keypad
    }

    /// The simulated GoCardless Bank Account Data API.
    pub fn gocardless(&self) -> &Arc<gocardless::GoCardless> {
        &self.gocardless
    }

    /// The simulated Enable Banking API.
    pub fn enablebanking(&self) -> &Arc<enablebanking::EnableBanking> {
        &self.enablebanking
    }

    /// The simulated NextGenPSD2 banks (`be`, `se`, `redirect`).
    pub fn xs2a(&self) -> &xs2a::Xs2aBanks {
        &self.psd2
    }

    /// The card-reader web bank (`/cardbank`).
    pub fn cardbank(&self) -> &Arc<cardbank::CardBank> {
        &self.cardbank
    }

    /// The Klarna-like XS2A playground (its API token, accounts, failure plan).
    pub fn xs2a_playground(&self) -> &Arc<xs2a_playground::Playground> {
        &self.xs2a
    }

    /// Tell the banks the absolute root URL they are served at
    /// (`http://127.0.0.1:PORT`), for the credentials routes.
    pub fn set_root_url(&self, root: &str) {
        let root = root.trim_end_matches('/');
        self.fibank
            .set_base_url(format!("{root}{}", fibank::PREFIX));
        self.keypad
            .set_base_url(format!("{root}{}", keypad::PREFIX));
        for bank in self.psd2.all() {
            bank.set_root_url(root);
        }
        self.gocardless.set_root_url(root);
        self.enablebanking.set_root_url(root);
    }
}

/// Every bank's routes and control routes.
pub fn router(state: SandboxState) -> axum::Router {
    let mut router = axum::Router::new()
        .merge(fibank::routes(state.fibank.clone()))
        .merge(keypad::routes(state.keypad.clone()))
        .merge(xs2a_playground::routes(state.xs2a.clone()))
        .merge(xs2a::routes(state.psd2.clone()))
        .merge(gocardless::routes(state.gocardless.clone()))
        .merge(enablebanking::routes(state.enablebanking.clone()))
        .merge(cardbank::routes(state.cardbank.clone()));
    if let Some(b) = &state.bankid {
        router = router.merge(bankid::control::routes(b.sim.clone()));
    }
    router.fallback(|| async {
        (
            axum::http::StatusCode::NOT_FOUND,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            r#"{"errorCode":"NOT_FOUND","message":"no such sandbox route"}"#,
        )
    })
}

fn root_url(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        Ipv4Addr::LOCALHOST.into()
    } else {
        addr.ip()
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// Generate the data for `config` and serve it on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, config: SandboxConfig) -> io::Result<()> {
    let state = tokio::task::spawn_blocking(move || SandboxState::new(config))
        .await
        .map_err(io::Error::other)?
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    serve_state(listener, state, std::future::pending()).await
}

/// Serve an existing state on `listener` until `shutdown` completes (with
/// the BankID simulator's HTTPS server beside it, when configured).
pub async fn serve_state(
    listener: tokio::net::TcpListener,
    state: SandboxState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    state.set_root_url(&root_url(listener.local_addr()?));
    state.start_bankid().await?;
    let served = axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(shutdown)
        .await;
    state.stop_bankid().await;
    served
}

/// A sandbox running in the background on a loopback port.
#[derive(Debug)]
pub struct SandboxHandle {
    addr: SocketAddr,
    state: SandboxState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<io::Result<()>>>,
}

/// Generate `config`'s data and serve it on `127.0.0.1` on a free port.
pub async fn spawn(config: SandboxConfig) -> io::Result<SandboxHandle> {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let state = tokio::task::spawn_blocking(move || SandboxState::new(config))
        .await
        .map_err(io::Error::other)?
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    state.start_bankid().await?;
    // Before the handle is out: its URLs must be absolute at once.
    state.set_root_url(&root_url(addr));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve_state(listener, state.clone(), async {
        let _ = rx.await;
    }));
    Ok(SandboxHandle {
        addr,
        state,
        shutdown: Some(tx),
        task: Some(task),
    })
}

impl SandboxHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn root_url(&self) -> String {
        root_url(self.addr)
    }

    /// The simulated Fibank's base URL: `http://127.0.0.1:PORT/fibank`.
    pub fn base_url(&self) -> String {
        format!("{}{}", self.root_url(), fibank::PREFIX)
    }

    /// The simulated keypad bank's base URL: `http://127.0.0.1:PORT/keypad`.
    pub fn keypad_base_url(&self) -> String {
        format!("{}{}", self.root_url(), keypad::PREFIX)
    }

    /// A simulated NextGenPSD2 bank (`be`, `se` or `redirect`).
    pub fn xs2a(&self, bank: &str) -> Option<&Arc<xs2a::Xs2aBank>> {
        self.state.xs2a().get(bank)
    }

    /// The simulated keypad bank (its credentials, truth, clock, 2FA requests).
    pub fn keypad(&self) -> &keypad::KeypadBank {
        self.state.keypad()
    }

    pub fn state(&self) -> &SandboxState {
        &self.state
    }

    /// The simulated GoCardless Bank Account Data API.
    pub fn gocardless(&self) -> &Arc<gocardless::GoCardless> {
        self.state.gocardless()
    }

    /// The simulated Enable Banking API.
    pub fn enablebanking(&self) -> &Arc<enablebanking::EnableBanking> {
        self.state.enablebanking()
    }

    /// The Klarna-like XS2A playground.
    pub fn klarna(&self) -> &Arc<xs2a_playground::Playground> {
        self.state.xs2a_playground()
    }

    pub fn fibank(&self) -> &fibank::Fibank {
        self.state.fibank()
    }

    /// The simulated Fibank's login.
    pub fn credentials(&self) -> SandboxCredentials {
        self.state.fibank().credentials()
    }

    /// The BankID simulator's URL and PEM paths, when the sandbox has one.
    pub fn bankid(&self) -> Option<BankIdEndpoint> {
        let sim = self.state.bankid()?;
        let paths = sim.paths();
        Some(BankIdEndpoint {
            base_url: sim.base_url()?.to_owned(),
            ca_cert: paths.ca_cert.clone(),
            rp_cert: paths.rp_cert.clone(),
            rp_key: paths.rp_key.clone(),
        })
    }

    /// The BankID simulator itself (its clock, its simulated user).
    pub fn bankid_sim(&self) -> Option<&Arc<bankid::BankIdSim>> {
        self.state.bankid()
    }

    /// Booked totals per account at the sandbox day (same as `GET /_sandbox/fibank/truth`).
    pub fn truth(&self) -> Vec<AccountTruth> {
        self.state.fibank().truth()
    }

    /// Stop serving and wait for the server task to end.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for SandboxHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
