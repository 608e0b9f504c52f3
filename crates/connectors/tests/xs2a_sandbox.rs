//! The xs2a connector against the sandbox's three NextGenPSD2 banks over
//! loopback HTTP, driven by the real sync engine on SQLite (and PostgreSQL
//! when `BANKBRIDGE_TEST_PG_URL` is set): each bank synced to its truth,
//! a re-sync that writes nothing, faults, the daily budget, consent expiry,
//! a refused card code and a declined BankID.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bankbridge_cap::emv::{self, CapRequest, PinPolicy};
use bankbridge_cap::transport::{Readers, VirtualReaders};
use bankbridge_cap::virtual_card::VirtualCard;
use bankbridge_connectors::Xs2aConnector;
use bankbridge_core::{
    Attendance, ConnectionSettings, Connector, Credentials, MasterKey, ScaAnswer, ScaChallenge,
    ScaSolver, ScaSolverError, Secret, TxStatus,
};
use bankbridge_sandbox::bankid::Approval;
use bankbridge_sandbox::{BankIdSandboxConfig, FaultConfig, SandboxConfig, SandboxHandle};
use bankbridge_store::testing::{create_pg_database, drop_pg_database, pg_admin_url};
use bankbridge_store::{SqliteStore, Store, SyncOutcome, TxQuery};
use bankbridge_sync::{ConnectorFactory, SyncError, Syncer};
use chrono::NaiveDate;
use rust_decimal::Decimal;

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 5, 20).unwrap()
}

async fn sandbox(dir: &std::path::Path, fault_rate: f64) -> SandboxHandle {
    bankbridge_sandbox::spawn(SandboxConfig {
        seed: 23,
        accounts: 2,
        transactions: 600,
        years: 1,
        today: Some(today()),
        fault: FaultConfig {
            fault_rate,
            ..FaultConfig::default()
        },
        bankid: Some(BankIdSandboxConfig {
            cert_dir: dir.join("bankid"),
            ..BankIdSandboxConfig::default()
        }),
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox starts")
}

struct Env {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    syncer: Syncer,
    sb: SandboxHandle,
    bank: &'static str,
}

async fn env(bank: &'static str, fault_rate: f64, store: Option<Arc<dyn Store>>) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), fault_rate).await;
    let store = match store {
        Some(s) => s,
        None => Arc::new(SqliteStore::open(&dir.path().join("x.db")).await.unwrap()),
    };
    let factory: ConnectorFactory = Arc::new(|_c, settings, credentials| {
        Ok(Box::new(Xs2aConnector::new(settings, credentials)?) as Box<dyn Connector>)
    });
    let mut syncer = Syncer::new(store.clone(), Arc::new(MasterKey::generate()), factory);
    syncer.options.backoff_base = Duration::from_millis(5);
    syncer.options.max_retry_after = Duration::from_millis(50);
    let b = sb.xs2a(bank).unwrap();
    let creds = b.credentials();
    let mut settings = ConnectionSettings::new(creds.base_url.clone(), creds.psu_id.clone());
    settings
        .options
        .insert("bank".into(), format!("sandbox-{bank}"));
    settings.window_days = 366;
    let credentials = if creds.password.is_empty() {
        Credentials::default()
    } else {
        Credentials::with_password(Secret::new(creds.password.clone()))
    };
    bankbridge_sync::add_connection(
        store.as_ref(),
        &syncer.key,
        bank,
        "xs2a",
        &settings,
        &credentials,
    )
    .await
    .unwrap();
    Env {
        _dir: dir,
        store,
        syncer,
        sb,
        bank,
    }
}

impl Env {
    async fn sync(
        &self,
        solver: &dyn ScaSolver,
    ) -> Result<bankbridge_sync::SyncSummary, SyncError> {
        let c = self
            .store
            .find_connection(self.bank)
            .await
            .unwrap()
            .unwrap();
        self.syncer.sync_with_solver(&c, &|_| {}, solver).await
    }

    /// Per IBAN: booked (count, sum) and pending count, as stored.
    async fn stored(&self) -> HashMap<String, ((u64, Decimal), u64)> {
        let mut out = HashMap::new();
        for a in self.store.list_accounts(None).await.unwrap() {
            let rows = self
                .store
                .query_transactions(&TxQuery {
                    account_id: Some(a.id),
                    ..Default::default()
                })
                .await
                .unwrap();
            let booked: Vec<_> = rows
                .iter()
                .filter(|t| t.status == TxStatus::Booked)
                .collect();
            let pending = rows
                .iter()
                .filter(|t| t.status == TxStatus::Pending)
                .count();
            out.insert(
                a.iban.unwrap().to_string(),
                (
                    (booked.len() as u64, booked.iter().map(|t| t.amount).sum()),
                    pending as u64,
                ),
            );
        }
        out
    }

    fn truth(&self) -> HashMap<String, ((u64, Decimal), u64)> {
        self.sb
            .xs2a(self.bank)
            .unwrap()
            .truth()
            .into_iter()
            .map(|t| {
                (
                    t.iban,
                    (
                        (t.booked_count, t.booked_sum.parse().unwrap()),
                        t.pending_count,
                    ),
                )
            })
            .collect()
    }

    async fn assert_matches_truth(&self) {
        assert_eq!(
            self.stored().await,
            self.truth(),
            "{}: stored differs from the bank's truth",
            self.bank
        );
    }
}

/// The user's bank card in a (virtual, in-process) reader, answering card
/// challenges with the reader algorithm; unattended, like the card service.
struct CardSolver {
    readers: VirtualReaders,
    codes: Mutex<u32>,
}

impl CardSolver {
    fn for_bank(sb: &SandboxHandle) -> CardSolver {
        let readers = VirtualReaders::new();
        let card = VirtualCard::new(sb.xs2a("be").unwrap().card().clone()).unwrap();
        readers.insert("reader", Box::new(card));
        CardSolver {
            readers,
            codes: Mutex::new(0),
        }
    }
}

#[async_trait]
impl ScaSolver for CardSolver {
    async fn solve(&self, challenge: &ScaChallenge) -> Result<ScaAnswer, ScaSolverError> {
        let request = match challenge {
            ScaChallenge::CardReaderLogin { challenge } => CapRequest::Login {
                challenge: challenge.clone(),
            },
            ScaChallenge::CardReaderSign { numbers } => CapRequest::Sign {
                numbers: numbers.clone(),
            },
            _ => return Ok(ScaAnswer::NotNow),
        };
        let mut session = self
            .readers
            .connect("reader")
            .map_err(|e| ScaSolverError(e.to_string()))?;
        let r = emv::run(
            session.as_mut(),
            &request,
            &Secret::from("1234"),
            None,
            PinPolicy { min_tries: 1 },
        )
        .map_err(|e| ScaSolverError(e.to_string()))?;
        *self.codes.lock().unwrap() += 1;
        Ok(ScaAnswer::Code(Secret::new(r.response)))
    }
}

/// The simulated BankID user: opens the app with the autostart token and
/// approves (or declines).
struct BankIdUser {
    sb_state: bankbridge_sandbox::SandboxState,
    approve: bool,
}

#[async_trait]
impl ScaSolver for BankIdUser {
    async fn solve(&self, challenge: &ScaChallenge) -> Result<ScaAnswer, ScaSolverError> {
        let ScaChallenge::BankId {
            auto_start_token,
            qr_start_token,
            ..
        } = challenge
        else {
            return Ok(ScaAnswer::NotNow);
        };
        assert!(qr_start_token.is_some(), "the QR tokens come along");
        let sim = self.sb_state.bankid().unwrap();
        let order = sim
            .autostart(auto_start_token)
            .map_err(|e| ScaSolverError(e.to_string()))?;
        if self.approve {
            sim.approve(order.order_ref, Approval::default())
                .map_err(|e| ScaSolverError(e.to_string()))?;
        } else {
            sim.decline(order.order_ref)
                .map_err(|e| ScaSolverError(e.to_string()))?;
        }
        Ok(ScaAnswer::Approved)
    }

    fn attendance(&self) -> Attendance {
        Attendance {
            psu_present: true,
            redirect_uri: None,
        }
    }
}

/// A person in a browser: logs in on the bank's redirect page.
struct Browser {
    password: String,
    user: String,
}

#[async_trait]
impl ScaSolver for Browser {
    async fn solve(&self, challenge: &ScaChallenge) -> Result<ScaAnswer, ScaSolverError> {
        let ScaChallenge::Redirect { url } = challenge else {
            return Ok(ScaAnswer::NotNow);
        };
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let page = http.get(url).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("<form"), "{page}");
        let back = http
            .post(url)
            .form(&[
                ("username", self.user.as_str()),
                ("password", self.password.as_str()),
                ("action", "login"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(back.status(), 303, "the bank sends the browser back");
        assert_eq!(
            back.headers()["location"],
            "http://127.0.0.1:9/callback",
            "to the TPP-Redirect-URI"
        );
        Ok(ScaAnswer::Approved)
    }

    fn attendance(&self) -> Attendance {
        Attendance {
            psu_present: true,
            redirect_uri: Some("http://127.0.0.1:9/callback".into()),
        }
    }
}

async fn each_bank_to_truth(store: impl Fn() -> Option<Arc<dyn Store>>) {
    // Belgian-style: embedded, the card answers unattended.
    let be = env("be", 0.0, store()).await;
    let card = CardSolver::for_bank(&be.sb);
    let s = be.sync(&card).await.unwrap();
    assert!(s.inserted > 0);
    assert_eq!(*card.codes.lock().unwrap(), 1, "one code for the consent");
    be.assert_matches_truth().await;
    let again = be.sync(&card).await.unwrap();
    assert_eq!(
        (again.inserted, again.updated),
        (0, 0),
        "a re-sync writes nothing"
    );
    assert_eq!(*card.codes.lock().unwrap(), 1, "the consent is reused");
    // Swedish-style: decoupled, the BankID user approves.
    let se = env("se", 0.0, store()).await;
    let user = BankIdUser {
        sb_state: se.sb.state().clone(),
        approve: true,
    };
    se.sync(&user).await.unwrap();
    se.assert_matches_truth().await;
    let again = se.sync(&bankbridge_core::Unattended).await.unwrap();
    assert_eq!(
        (again.inserted, again.updated),
        (0, 0),
        "the consent is reused unattended"
    );
    // German-style: redirect, a person logs in at the bank.
    let de = env("redirect", 0.0, store()).await;
    let creds = de.sb.xs2a("redirect").unwrap().credentials();
    let browser = Browser {
        user: creds.psu_id,
        password: creds.password,
    };
    de.sync(&browser).await.unwrap();
    de.assert_matches_truth().await;
    let again = de.sync(&browser).await.unwrap();
    assert_eq!((again.inserted, again.updated), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bank_syncs_to_its_truth_on_sqlite() {
    each_bank_to_truth(|| None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bank_syncs_to_its_truth_on_postgres() {
    let Some(admin) = pg_admin_url() else { return };
    // One database per bank: each env is its own installation.
    let mut dbs = Vec::new();
    for _ in 0..3 {
        dbs.push(create_pg_database(&admin).await);
    }
    let mut stores = Vec::new();
    for (_, _, url) in &dbs {
        stores.push(bankbridge_store::open(url).await.unwrap());
    }
    let stores = Mutex::new(stores);
    each_bank_to_truth(|| stores.lock().unwrap().pop()).await;
    for (conn, db, _) in dbs {
        drop_pg_database(conn, &db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_at_a_tenth_of_the_calls_still_converge() {
    for bank in ["be", "se", "redirect"] {
        let e = env(bank, 0.1, None).await;
        // Retries spend budget: the user is there (a terminal sync).
        let card = CardSolver::for_bank(&e.sb);
        let user = BankIdUser {
            sb_state: e.sb.state().clone(),
            approve: true,
        };
        let creds = e.sb.xs2a("redirect").unwrap().credentials();
        let browser = Browser {
            user: creds.psu_id,
            password: creds.password,
        };
        let card = PresentCard(&card);
        let solver: &dyn ScaSolver = match bank {
            "be" => &card,
            "se" => &user,
            _ => &browser,
        };
        e.sync(solver).await.unwrap();
        e.assert_matches_truth().await;
        let again = e.sync(solver).await.unwrap();
        assert_eq!((again.inserted, again.updated), (0, 0), "{bank}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tpp_certificate_is_presented_over_mutual_tls() {
    // The sandbox's BankID simulator stands in for a bank's mTLS gateway:
    // it answers only a client that presents a certificate its CA signed
    // (401 "no client certificate" otherwise), so a 404 for the XS2A path
    // proves the TLS handshake carried the TPP certificate.
    let dir = tempfile::tempdir().unwrap();
    let sb = sandbox(dir.path(), 0.0).await;
    let endpoint = sb.bankid().unwrap();
    let connect = |identity: bool| {
        let mut settings = ConnectionSettings::new(endpoint.base_url.clone(), "psu");
        settings
            .options
            .insert("server_ca".into(), endpoint.ca_cert.display().to_string());
        let mut credentials = Credentials::default();
        if identity {
            let pem = bankbridge_core::tls::pem_bundle(
                &std::fs::read(&endpoint.rp_cert).unwrap(),
                &std::fs::read(&endpoint.rp_key).unwrap(),
            );
            credentials.fields.insert(
                "tpp_identity_pem".into(),
                Secret::new(String::from_utf8(pem.expose().clone()).unwrap()),
            );
        }
        Xs2aConnector::new(&settings, credentials).unwrap()
    };
    let with = connect(true).login().await.unwrap_err().to_string();
    assert!(
        with.contains("404"),
        "the handshake passed, the path is unknown: {with}"
    );
    let without = connect(false).login().await.unwrap_err().to_string();
    assert!(
        !without.contains("404"),
        "no certificate, no entry: {without}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_unattended_runs_in_a_day_stay_within_frequency_per_day() {
    let e = env("be", 0.0, None).await;
    let card = CardSolver::for_bank(&e.sb);
    // The first run, with the user there, reads the history.
    e.sync(&PresentCard(&card)).await.unwrap();
    let bank = e.sb.xs2a("be").unwrap();
    bank.advance(1).unwrap();
    let mut spent = 0;
    for _ in 0..10 {
        // A run past the budget is no failure: it waits, and says why.
        let s = e.sync(&card).await.unwrap();
        if s.deferred > 0 {
            spent += 1;
            let why = s.deferred_reason.unwrap();
            assert!(why.contains("4 requests"), "{why}");
        }
    }
    assert!(
        spent >= 6,
        "runs past the budget stop before calling the bank ({spent})"
    );
    let c = e.store.find_connection("be").await.unwrap().unwrap();
    assert_eq!(c.last_sync_status, SyncOutcome::Ok);
    assert_eq!(bank.max_unattended_per_day(), 4, "{:?}", bank.usage());
    let refused: u64 = bank
        .usage()
        .iter()
        .map(|u| u["refused"].as_u64().unwrap())
        .sum();
    assert_eq!(
        refused,
        0,
        "the bank never had to refuse: {:?}",
        bank.usage()
    );
    e.assert_matches_truth().await;
}

/// The card solver with the user present (a first sync at a terminal).
struct PresentCard<'a>(&'a CardSolver);

#[async_trait]
impl ScaSolver for PresentCard<'_> {
    async fn solve(&self, challenge: &ScaChallenge) -> Result<ScaAnswer, ScaSolverError> {
        self.0.solve(challenge).await
    }

    fn attendance(&self) -> Attendance {
        Attendance {
            psu_present: true,
            redirect_uri: None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_consent_stops_in_needs_user_and_says_so() {
    let e = env("se", 0.0, None).await;
    let user = BankIdUser {
        sb_state: e.sb.state().clone(),
        approve: true,
    };
    e.sync(&user).await.unwrap();
    let bank = e.sb.xs2a("se").unwrap();
    // The consent asked for 90 days; the clock goes past them.
    bank.advance(60).unwrap();
    e.sync(&bankbridge_core::Unattended).await.unwrap();
    let consents = bank.consents();
    assert_eq!(consents[0]["consentStatus"], "valid");
    // The bank granted what it grants; the clock goes past it.
    let until: NaiveDate = consents[0]["validUntil"].as_str().unwrap().parse().unwrap();
    let recorded = e
        .store
        .find_connection("se")
        .await
        .unwrap()
        .unwrap()
        .consent
        .unwrap();
    assert_eq!(
        (recorded.status.as_str(), recorded.valid_until),
        ("valid", Some(until))
    );
    bank.advance((until - bank.today()).num_days() as u32 + 1)
        .unwrap();
    let err = e.sync(&bankbridge_core::Unattended).await.unwrap_err();
    assert!(err.needs_user(), "{err}");
    assert!(err.to_string().contains("consent"), "{err}");
    let c = e.store.find_connection("se").await.unwrap().unwrap();
    assert_eq!(c.last_sync_status, SyncOutcome::NeedsUser);
    let consent = c.consent.expect("the consent is recorded");
    assert_eq!(
        (consent.status.as_str(), consent.valid_until),
        ("expired", Some(until))
    );
    // The user gives a new consent; the history stays, the accounts are the same.
    let accounts_before = e.store.list_accounts(None).await.unwrap().len();
    e.sync(&user).await.unwrap();
    assert_eq!(
        e.store.list_accounts(None).await.unwrap().len(),
        accounts_before
    );
    e.assert_matches_truth().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_card_code_stops_in_needs_user_without_a_second_try() {
    let e = env("be", 0.0, None).await;
    struct WrongCard(Mutex<u32>);
    #[async_trait]
    impl ScaSolver for WrongCard {
        async fn solve(&self, _c: &ScaChallenge) -> Result<ScaAnswer, ScaSolverError> {
            *self.0.lock().unwrap() += 1;
            Ok(ScaAnswer::Code(Secret::from("00000000")))
        }
    }
    let wrong = WrongCard(Mutex::new(0));
    let err = e.sync(&wrong).await.unwrap_err();
    assert!(err.needs_user(), "{err}");
    assert!(err.to_string().contains("refused the code"), "{err}");
    assert_eq!(*wrong.0.lock().unwrap(), 1, "asked once");
    assert_eq!(e.sb.xs2a("be").unwrap().codes_refused(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_bankid_stops_in_needs_user() {
    let e = env("se", 0.0, None).await;
    let user = BankIdUser {
        sb_state: e.sb.state().clone(),
        approve: false,
    };
    let err = e.sync(&user).await.unwrap_err();
    assert!(err.needs_user(), "{err}");
    assert!(err.to_string().contains("did not succeed"), "{err}");
    assert!(e.stored().await.is_empty(), "nothing was read");
    let c = e.store.find_connection("se").await.unwrap().unwrap();
    assert_eq!(c.last_sync_status, SyncOutcome::NeedsUser);
}
