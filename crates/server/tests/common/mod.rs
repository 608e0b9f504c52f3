//! Test harness: a real server on a loopback port over a real SQLite file,
//! a log capture, and a fake bank connector.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bankbridge_core::{
    Balance, BalanceKind, Connector, ConnectorError, ConnectorLimits, DateWindow, FetchedAccount,
    FetchedTransaction, Iban, MasterKey, ScaChallenge, TxStatus, WindowPage, clean_label,
};
use bankbridge_server::{AppState, ServerConfig, auth};
use bankbridge_store::{Checkpoint, Scope, SqliteStore, Store, TxWrite, WindowCommit};
use bankbridge_sync::{ConnectorFactory, Syncer};
use chrono::{Days, NaiveDate, Utc};
use rust_decimal::Decimal;

// ---------------------------------------------------------------- logs

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

/// Capture every log line of this test binary (all levels, all targets).
pub fn capture_logs() {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Capture(buf.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        buf
    });
}

/// Everything logged so far.
pub fn logs() -> String {
    LOGS.get()
        .map(|b| String::from_utf8_lossy(&b.lock().unwrap()).into_owned())
        .unwrap_or_default()
}

// ---------------------------------------------------------------- fake bank

/// The password the fake bank accepts.
pub const FAKE_PASSWORD: &str = "hunter2-Pa55-very-secret";

/// A stand-in for a bank: one account with a few fixed transactions. It lets
/// these tests check the sync *job lifecycle* (queued → running → succeeded,
/// one sync per connection at a time) through the HTTP API, not a bank: the
/// real-bank path (connectors against the sandbox banks) is tested end to end
/// in the connectors and cli crates.
pub struct FakeBank {
    password: String,
    delay: Duration,
    /// What the bank asks for at login (strong customer authentication),
    /// until it is answered.
    sca: Option<ScaChallenge>,
    /// A BankID order the bank waits on: approved this long after login.
    approved_at: Option<std::time::Instant>,
}

/// The challenge the `card` fake bank shows.
pub const FAKE_CHALLENGE: &str = "13572468";

/// The code the `otp` fake bank asks for.
pub const FAKE_OTP: &str = "246810";

pub fn fake_today() -> NaiveDate {
    Utc::now().date_naive()
}

fn fake_rows() -> Vec<FetchedTransaction> {
    let today = fake_today();
    [
        (1, "-4.50", "COFFEE  BAR"),
        (5, "1200.00", "SALARY MARCH"),
        (10, "-60.10", "GROCERIES"),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (ago, amount, label))| FetchedTransaction {
        provider_id: Some(format!("FAKE-{i}")),
        status: TxStatus::Booked,
        booking_date: today - Days::new(ago),
        value_date: Some(today - Days::new(ago)),
        transaction_date: None,
        amount: Decimal::from_str(amount).unwrap(),
        currency: "EUR".parse().unwrap(),
        original_amount: None,
        original_currency: None,
        raw_label: label.into(),
        label: clean_label(label),
        counterparty_name: None,
        counterparty_iban: None,
        remittance_info: None,
        bank_code: None,
        running_balance: None,
        raw: serde_json::json!({"id": i, "label": label}),
    })
    .collect()
}

#[async_trait]
impl Connector for FakeBank {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn limits(&self) -> ConnectorLimits {
        ConnectorLimits {
            max_window_days: Some(30),
            max_history_days: Some(40),
            ..Default::default()
        }
    }

    async fn login(&mut self) -> Result<(), ConnectorError> {
        tokio::time::sleep(self.delay).await;
        if self.password != FAKE_PASSWORD {
            return Err(ConnectorError::InvalidCredentials("wrong password".into()));
        }
        match &self.sca {
            Some(challenge @ ScaChallenge::BankId { .. }) => {
                self.approved_at = Some(std::time::Instant::now() + FAKE_BANKID_WAIT);
                Err(ConnectorError::ScaRequired(challenge.clone()))
            }
            Some(challenge) => Err(ConnectorError::ScaRequired(challenge.clone())),
            None => Ok(()),
        }
    }

    async fn resume_sca(
        &mut self,
        answer: &bankbridge_core::ScaAnswer,
    ) -> Result<bankbridge_core::ScaProgress, ConnectorError> {
        use bankbridge_core::ScaAnswer::{Approved, Code};
        let accepted = match (&self.sca, answer) {
            (Some(ScaChallenge::Otp { .. }), Code(c)) => c.expose() == FAKE_OTP,
            // An EMV-CAP login code: 6 to 10 digits (its cryptogram is
            // checked in the cap crate's tests, not by this stand-in).
            (Some(ScaChallenge::CardReaderLogin { .. }), Code(c)) => {
                (6..=10).contains(&c.expose().len())
                    && c.expose().bytes().all(|b| b.is_ascii_digit())
            }
            (Some(ScaChallenge::Redirect { .. }), Approved) => true,
            // The simulated user approves in their BankID app after a while.
            (Some(ScaChallenge::BankId { .. }), Approved) => {
                if self
                    .approved_at
                    .is_some_and(|t| std::time::Instant::now() < t)
                {
                    return Ok(bankbridge_core::ScaProgress::Pending {
                        poll_after: Duration::from_millis(100),
                    });
                }
                true
            }
            _ => false,
        };
        if !accepted {
            return Err(ConnectorError::ScaFailed("wrong answer".into()));
        }
        self.sca = None;
        Ok(bankbridge_core::ScaProgress::Done)
    }

    async fn accounts(&mut self) -> Result<Vec<FetchedAccount>, ConnectorError> {
        Ok(vec![FetchedAccount {
            provider_id: "FAKE-ACC".into(),
            iban: Some(Iban::from_parts("BG", "BNBG96611020345678").unwrap()),
            currency: "EUR".parse().unwrap(),
            name: Some("Current".into()),
            kind: Some("current".into()),
            raw: serde_json::json!({}),
        }])
    }

    async fn window(
        &mut self,
        _a: &FetchedAccount,
        w: DateWindow,
    ) -> Result<WindowPage, ConnectorError> {
        Ok(WindowPage {
            transactions: fake_rows()
                .into_iter()
                .filter(|t| w.contains(t.booking_date))
                .collect(),
            balances: vec![],
        })
    }
}

/// How long the `bankid` fake bank's user takes to approve.
pub const FAKE_BANKID_WAIT: Duration = Duration::from_secs(2);

/// Builds `fake` (instant), `slow` (login takes 1.5 s), and fake banks that
/// ask at login for [`FAKE_OTP`] (`otp`), a card reader's login code over
/// [`FAKE_CHALLENGE`] (`card`), a visit to their page (`redirect`) or a
/// BankID identification the user approves after [`FAKE_BANKID_WAIT`] (`bankid`).
pub fn fake_factory() -> ConnectorFactory {
    Arc::new(|connection, _settings, credentials| {
        let password = credentials
            .get("password")
            .map(|p| p.expose().clone())
            .unwrap_or_default();
        let (delay, sca) = match connection.connector.as_str() {
            "fake" => (Duration::ZERO, None),
            "slow" => (Duration::from_millis(1500), None),
            "otp" => (
                Duration::ZERO,
                Some(ScaChallenge::Otp {
                    prompt: "SMS to +359 ••• 42".into(),
                }),
            ),
            "card" => (
                Duration::ZERO,
                Some(ScaChallenge::CardReaderLogin {
                    challenge: Some(FAKE_CHALLENGE.into()),
                }),
            ),
            "redirect" => (
                Duration::ZERO,
                Some(ScaChallenge::Redirect {
                    url: "https://bank.example/sca/approve?id=42".into(),
                }),
            ),
            "bankid" => (
                Duration::ZERO,
                Some(ScaChallenge::BankId {
                    auto_start_token: "7c40b5c9-fa74-49cf-b98c-bfe651f9a7c6".into(),
                    qr_start_token: Some("67df3917-fa0d-44e5-b327-edcc928297f8".into()),
                    qr_start_secret: Some("d28db9a7-4cde-429e-a983-359be676944c".to_owned().into()),
                }),
            ),
            other => return Err(format!("no connector {other}")),
        };
        Ok(Box::new(FakeBank {
            password,
            delay,
            sca,
            approved_at: None,
        }) as Box<dyn Connector>)
    })
}

// ---------------------------------------------------------------- server

pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    pub store: Arc<dyn Store>,
    pub state: AppState,
    pub db_path: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(ServerConfig::default()).await
    }

    pub async fn start_with(config: ServerConfig) -> Self {
        Self::start_with_readers(config, None).await
    }

    /// With card readers `readers` (this machine's PC/SC readers when `None`).
    pub async fn start_with_readers(
        config: ServerConfig,
        readers: Option<Arc<dyn bankbridge_cap::Readers>>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db_path = dir.path().join("bankbridge.sqlite");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db_path).await.unwrap());
        let syncer = Syncer::new(
            store.clone(),
            Arc::new(MasterKey::generate()),
            fake_factory(),
        );
        let connectors = ["fake", "slow", "otp", "card", "redirect", "bankid"]
            .map(String::from)
            .to_vec();
        let state = match readers {
            Some(readers) => {
                AppState::with_readers(store.clone(), syncer, connectors, config, readers)
            }
            None => AppState::with_config(store.clone(), syncer, connectors, config),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(bankbridge_server::serve(
            listener,
            state.clone(),
            async move {
                let _ = rx.await;
            },
        ));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        TestServer {
            base,
            client,
            store,
            state,
            db_path,
            shutdown: Some(tx),
            server: Some(server),
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A new token of `scope`, stored; returns its plaintext.
    pub async fn token(&self, scope: Scope) -> String {
        self.token_at(scope, None).await
    }

    /// A token of `scope`; an agent token serves `location`.
    pub async fn token_at(&self, scope: Scope, location: Option<&str>) -> String {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (plain, mut record) = auth::new_token(&format!("test-{}-{n}", scope.as_str()), scope);
        record.location = location.map(str::to_owned);
        self.store.create_token(&record).await.unwrap();
        plain.expose().clone()
    }

    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn get_json(&self, path: &str, token: &str) -> serde_json::Value {
        let res = self.get(path, token).await;
        let status = res.status();
        let text = res.text().await.unwrap();
        assert!(status.is_success(), "GET {path}: {status} {text}");
        serde_json::from_str(&text).unwrap()
    }

    pub async fn post_json(
        &self,
        path: &str,
        token: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Stop accepting, finish requests in flight, return once the server is done.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(10), server)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
    }
}

/// The JSON error body of a response, asserting its status and that it is JSON.
pub async fn expect_error(res: reqwest::Response, status: u16, code: &str) -> serde_json::Value {
    assert_eq!(res.status().as_u16(), status, "status");
    let ct = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(ct.starts_with("application/json"), "content-type {ct:?}");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body
}

// ---------------------------------------------------------------- data

/// Seed `n` transactions over two accounts of one connection (created directly in
/// the store). Row `i`: booking date 2024-01-01 + (i % 97) days, amount
/// (i - 150).25, status booked (pending for i % 10 == 0, void for i % 25 == 0),
/// label "row {i}" ("COFFEE shop {i}" for i % 7 == 0).
pub async fn seed(store: &dyn Store, n: usize) -> (i64, [i64; 2]) {
    let key = MasterKey::generate();
    let settings = bankbridge_core::ConnectionSettings::new("http://127.0.0.1:9", "alice");
    let creds = bankbridge_core::Credentials::with_password("pw".into());
    let conn = bankbridge_sync::add_connection(store, &key, "seeded", "fake", &settings, &creds)
        .await
        .unwrap();
    let now = Utc::now();
    let lease = bankbridge_store::testing::hold_lease(store, conn.id).await;
    let mut accounts = [0i64; 2];
    for (k, acc) in accounts.iter_mut().enumerate() {
        let fetched = FetchedAccount {
            provider_id: format!("ACC-{k}"),
            iban: (k == 0).then(|| Iban::from_parts("BG", "BNBG96611020345678").unwrap()),
            currency: "EUR".parse().unwrap(),
            name: Some(format!("Account {k}")),
            kind: Some("current".into()),
            raw: serde_json::json!({}),
        };
        *acc = store.upsert_account(lease, &fetched, now).await.unwrap().id;
    }
    let start = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
    let mut per_account: [Vec<TxWrite>; 2] = [vec![], vec![]];
    for i in 0..n {
        let status = if i % 25 == 0 {
            TxStatus::Void
        } else if i % 10 == 0 {
            TxStatus::Pending
        } else {
            TxStatus::Booked
        };
        let label = if i % 7 == 0 {
            format!("COFFEE shop {i}")
        } else {
            format!("row {i}")
        };
        per_account[i % 2].push(TxWrite {
            provider_id: format!("P{i:05}"),
            pending_provider_id: None,
            fingerprint: format!("fp{i}"),
            status,
            booking_date: start + Days::new((i % 97) as u64),
            value_date: Some(start + Days::new((i % 97) as u64 + 1)),
            transaction_date: None,
            amount: Decimal::from_str(&format!("{}.25", i as i64 - 150)).unwrap(),
            currency: "EUR".into(),
            original_amount: None,
            original_currency: None,
            raw_label: label.clone(),
            label,
            counterparty_name: (i % 3 == 0).then(|| format!("Shop \"Ünïcode\" & <Co> {i}, Ltd")),
            counterparty_iban: None,
            remittance_info: (i % 5 == 0).then(|| "line one\nline two, with comma".to_owned()),
            bank_code: Some("TRF".into()),
            running_balance: Some(Decimal::from(1000 + i as i64)),
            raw: serde_json::json!({"i": i}).to_string(),
        });
    }
    for (k, inserts) in per_account.into_iter().enumerate() {
        let commit = WindowCommit {
            lease,
            account_id: accounts[k],
            now,
            inserts,
            updates: vec![],
            voids: vec![],
            touch: vec![],
            balances: vec![Balance {
                kind: BalanceKind::ClosingBooked,
                amount: Decimal::from_str("1234.56").unwrap(),
                currency: "EUR".parse().unwrap(),
                reference_date: start + Days::new(96),
            }],
            checkpoint: Checkpoint::default(),
        };
        store.commit_window(&commit).await.unwrap();
    }
    store.release_sync_lease(lease).await.unwrap();
    (conn.id, accounts)
}
