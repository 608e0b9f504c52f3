//! The enablebanking connector against the sandbox's Enable Banking
//! simulator over loopback HTTP, driven by the real sync engine on SQLite
//! (and PostgreSQL when `BANKBRIDGE_TEST_PG_URL` is set): authorised with
//! the code the browser brings back and synced to the truth over paged
//! transactions, a re-sync that writes nothing, a week of hourly unattended
//! syncs within the bank's 4 calls a day, an expired session that stops in
//! `needs_user`, and a new session (new uids) that continues the same
//! accounts' history.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bankbridge_connectors::EnableBankingConnector;
use bankbridge_core::{
    Attendance, ConnectionSettings, Connector, Credentials, MasterKey, ScaAnswer, ScaChallenge,
    ScaSolver, ScaSolverError, Secret, TxStatus,
};
use bankbridge_sandbox::{FaultConfig, SandboxConfig, SandboxHandle};
use bankbridge_store::testing::{create_pg_database, drop_pg_database, pg_admin_url};
use bankbridge_store::{SqliteStore, Store, SyncOutcome, TxQuery};
use bankbridge_sync::{ConnectorFactory, SyncError, SyncSummary, Syncer};
use chrono::NaiveDate;
use rust_decimal::Decimal;

const NAME: &str = "eb";

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 5, 20).unwrap()
}

struct Env {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    syncer: Syncer,
    sb: SandboxHandle,
}

async fn env(store: Option<Arc<dyn Store>>, fault_rate: f64, options: &[(&str, &str)]) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let sb = bankbridge_sandbox::spawn(SandboxConfig {
        seed: 31,
        accounts: 2,
        transactions: 500,
        years: 1,
        today: today(),
        fault: FaultConfig {
            fault_rate,
            ..FaultConfig::default()
        },
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox starts");
    let store = match store {
        Some(s) => s,
        None => Arc::new(SqliteStore::open(&dir.path().join("x.db")).await.unwrap()),
    };
    let factory: ConnectorFactory = Arc::new(|_c, settings, credentials| {
        Ok(Box::new(EnableBankingConnector::new(settings, credentials)?) as Box<dyn Connector>)
    });
    let mut syncer = Syncer::new(store.clone(), Arc::new(MasterKey::generate()), factory);
    syncer.options.backoff_base = Duration::from_millis(5);
    syncer.options.max_retry_after = Duration::from_millis(50);
    let creds = sb.enablebanking().credentials();
    let mut settings =
        ConnectionSettings::new(creds.base_url.clone(), creds.application_id.clone());
    settings
        .options
        .insert("aspsp_name".into(), "Sandbox Pankki".into());
    settings.options.insert("aspsp_country".into(), "FI".into());
    for (k, v) in options {
        settings.options.insert((*k).into(), (*v).into());
    }
    settings.window_days = 366;
    bankbridge_sync::add_connection(
        store.as_ref(),
        &syncer.key,
        NAME,
        "enablebanking",
        &settings,
        &Credentials::with_password(Secret::new(creds.private_key_pem.clone())),
    )
    .await
    .unwrap();
    Env {
        _dir: dir,
        store,
        syncer,
        sb,
    }
}

/// The user at a browser: follows the link to the bank's page and agrees
/// (or cancels), as the page's form does; the browser's return is what the
/// CLI's loopback port or `serve`'s callback hands over.
struct Browser {
    approve: bool,
    links: Mutex<Vec<String>>,
}

impl Browser {
    fn new(approve: bool) -> Browser {
        Browser {
            approve,
            links: Mutex::new(Vec::new()),
        }
    }
}

#[async_trait]
impl ScaSolver for Browser {
    async fn solve(&self, challenge: &ScaChallenge) -> Result<ScaAnswer, ScaSolverError> {
        let ScaChallenge::Redirect { url } = challenge else {
            return Ok(ScaAnswer::NotNow);
        };
        self.links.lock().unwrap().push(url.clone());
        let action = if self.approve { "approve" } else { "cancel" };
        let res = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .post(url)
            .form(&[("user", "alex"), ("code", "1234"), ("action", action)])
            .send()
            .await
            .map_err(|e| ScaSolverError(e.to_string()))?;
        let back = res
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(back.starts_with(CALLBACK), "back to us: {back}");
        // What the callback route hands over: the query it came back with.
        let query = back.split_once('?').map(|(_, q)| q).unwrap_or_default();
        Ok(ScaAnswer::Returned(Secret::new(query.to_owned())))
    }

    fn attendance(&self) -> Attendance {
        Attendance {
            psu_present: true,
            redirect_uri: Some(CALLBACK.to_owned()),
        }
    }
}

const CALLBACK: &str = "http://127.0.0.1:9/callback";

impl Env {
    async fn sync(&self, solver: &dyn ScaSolver) -> Result<SyncSummary, SyncError> {
        let c = self.store.find_connection(NAME).await.unwrap().unwrap();
        self.syncer.sync_with_solver(&c, &|_| {}, solver).await
    }

    async fn unattended(&self) -> Result<SyncSummary, SyncError> {
        self.sync(&bankbridge_core::Unattended).await
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
            .enablebanking()
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

    async fn assert_matches_truth(&self, when: &str) {
        assert_eq!(
            self.stored().await,
            self.truth(),
            "{when}: stored differs from the bank's truth"
        );
    }
}

async fn linked_to_truth(store: Option<Arc<dyn Store>>) {
    let e = env(store, 0.0, &[]).await;
    let browser = Browser::new(true);
    let first = e.sync(&browser).await.unwrap();
    assert_eq!(first.accounts, 2);
    assert_eq!(browser.links.lock().unwrap().len(), 1, "one link");
    e.assert_matches_truth("first sync").await;
    // Attended or not, a second run writes nothing and needs no new link.
    let again = e.sync(&browser).await.unwrap();
    assert_eq!((again.inserted, again.updated, again.voided), (0, 0, 0));
    assert_eq!(browser.links.lock().unwrap().len(), 1);
    let c = e.store.find_connection(NAME).await.unwrap().unwrap();
    let consent = c.consent.expect("the session is recorded");
    assert_eq!(consent.status, "valid");
    // 90 days of access from the link (the bank allows 180), the last
    // whole day one before.
    assert_eq!(
        consent.valid_until,
        Some(today() + chrono::Days::new(89)),
        "{consent:?}"
    );
    // Balances were read: the newest booked balance matches the bank's.
    let accounts = e.store.list_accounts(None).await.unwrap();
    for t in e.sb.enablebanking().truth() {
        let a = accounts
            .iter()
            .find(|a| a.iban.as_ref().map(|i| i.to_string()) == Some(t.iban.clone()))
            .unwrap();
        let all = e.store.list_balances(a.id).await.unwrap();
        let b = bankbridge_store::current_balance(&all).expect("a closing balance");
        assert_eq!(b.balance.kind, bankbridge_core::BalanceKind::ClosingBooked);
        assert_eq!(
            b.balance.amount,
            t.balance.parse::<Decimal>().unwrap(),
            "{}",
            t.iban
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_and_synced_to_the_truth_on_sqlite() {
    linked_to_truth(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_and_synced_to_the_truth_on_postgres() {
    let Some(admin) = pg_admin_url() else { return };
    let (conn, db, url) = create_pg_database(&admin).await;
    linked_to_truth(Some(bankbridge_store::open(&url).await.unwrap())).await;
    drop_pg_database(conn, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_week_of_hourly_syncs_keeps_to_four_calls_a_day_and_converges() {
    // Service faults on top (5xx, 429 throttles, cut bodies): retried.
    let e = env(None, 0.05, &[]).await;
    e.sync(&Browser::new(true)).await.unwrap();
    let gc = e.sb.enablebanking();
    let mut deferred = 0;
    let mut reasons = Vec::new();
    for _ in 0..(7 * 24) {
        gc.advance_hours(1).unwrap();
        let s = e.unattended().await.unwrap();
        if s.deferred > 0 {
            deferred += 1;
            reasons.push(s.deferred_reason.unwrap());
        }
    }
    let (max_per_day, refused) = gc.usage();
    assert!(
        max_per_day <= 4,
        "at most 4 a day per account and scope: {max_per_day}"
    );
    assert_eq!(max_per_day, 4, "and the budget is used");
    assert_eq!(refused, 0, "no call the budget could not afford");
    assert!(deferred > 100, "most hours wait: {deferred}");
    assert!(
        reasons.iter().all(|r| r.contains("next call from")),
        "a wait says until when: {:?}",
        reasons.first()
    );
    assert!(
        reasons.iter().any(|r| r.contains("paced")),
        "unattended calls are spread over the day, not spent at once"
    );
    let c = e.store.find_connection(NAME).await.unwrap().unwrap();
    assert_eq!(c.last_sync_status, SyncOutcome::Ok, "waiting is no failure");
    // One more run in a new slot of the day reads the rest.
    gc.advance_hours(6).unwrap();
    e.unattended().await.unwrap();
    e.assert_matches_truth("after a week of hourly syncs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_needs_a_new_link_and_the_history_continues() {
    let e = env(None, 0.0, &[("consent_days", "10")]).await;
    e.sync(&Browser::new(true)).await.unwrap();
    let gc = e.sb.enablebanking();
    let before = e.store.list_accounts(None).await.unwrap();
    // Past the session's ten days: the scheduled run stops for the user.
    gc.advance(11).unwrap();
    let err = e.unattended().await.unwrap_err();
    assert!(err.needs_user(), "{err}");
    let text = err.to_string();
    assert!(text.contains("session ended"), "{text}");
    assert!(text.contains("link the bank again"), "{text}");
    let c = e.store.find_connection(NAME).await.unwrap().unwrap();
    assert_eq!(c.last_sync_status, SyncOutcome::NeedsUser);
    assert_eq!(c.consent.unwrap().status, "expired");

    // A link the user cancels opens no session and says why.
    let cancelled = e.sync(&Browser::new(false)).await.unwrap_err();
    assert!(cancelled.needs_user(), "{cancelled}");
    assert!(
        cancelled.to_string().contains("access_denied"),
        "{cancelled}"
    );
    assert_eq!(gc.session_count(), 1);

    // The user links again: a new session with new uids, the same accounts.
    let browser = Browser::new(true);
    let s = e.sync(&browser).await.unwrap();
    assert_eq!(s.accounts, 2);
    assert_eq!(gc.session_count(), 2);
    let after = e.store.list_accounts(None).await.unwrap();
    assert_eq!(
        after.iter().map(|a| a.id).collect::<Vec<_>>(),
        before.iter().map(|a| a.id).collect::<Vec<_>>(),
        "no new accounts: the IBANs map the new ids to the stored ones"
    );
    e.assert_matches_truth("after the re-link").await;
    let c = e.store.find_connection(NAME).await.unwrap().unwrap();
    assert_eq!(c.consent.unwrap().status, "valid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_service_does_not_know_is_refused_credentials() {
    let e = env(None, 0.0, &[]).await;
    let other = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
    let pem = rsa::pkcs8::EncodePrivateKey::to_pkcs8_pem(&other, rsa::pkcs8::LineEnding::LF)
        .unwrap()
        .to_string();
    let c = e.store.find_connection(NAME).await.unwrap().unwrap();
    bankbridge_sync::update_connection(
        e.store.as_ref(),
        &e.syncer.key,
        &c,
        &bankbridge_sync::ConnectionChange {
            password: Some(Secret::new(pem)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let err = e.sync(&Browser::new(true)).await.unwrap_err();
    assert!(err.credentials_refused(), "{err}");
    assert!(err.to_string().contains("private key"), "{err}");
}
