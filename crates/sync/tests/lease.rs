//! The sync lease under a long wait, on SQLite and on PostgreSQL
//! (`BANKBRIDGE_TEST_PG_URL`, see `bankbridge_store::testing`).
//!
//! The bank here is a small in-process connector: its login asks for a
//! decoupled approval, and the test's solver takes twice the lease's
//! lifetime to give it (a person finding their phone).
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bankbridge_core::{
    ConnectionSettings, Connector, ConnectorError, ConnectorLimits, Credentials, DateWindow,
    FetchedAccount, FetchedTransaction, MasterKey, ScaAnswer, ScaChallenge, ScaProgress, ScaSolver,
    ScaSolverError, TxStatus, WindowPage, clean_label,
};
use bankbridge_store::testing::{create_pg_database, drop_pg_database, pg_admin_url};
use bankbridge_store::{Connection, Lease, SqliteStore, Store, SyncOutcome, TxQuery};
use bankbridge_sync::{ConnectorFactory, SyncError, Syncer};
use chrono::{Days, NaiveDate, Utc};
use tokio::sync::Notify;

const LEASE_TTL: Duration = Duration::from_millis(600);

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 6, 30).unwrap()
}

/// Asks for one decoupled approval at login; then one account with a
/// payment a day over the last 20 days.
struct ApprovalBank {
    approved: bool,
}

#[async_trait]
impl Connector for ApprovalBank {
    fn name(&self) -> &'static str {
        "approval"
    }

    fn limits(&self) -> ConnectorLimits {
        ConnectorLimits {
            max_window_days: Some(30),
            ..Default::default()
        }
    }

    fn today(&self) -> NaiveDate {
        today()
    }

    async fn login(&mut self) -> Result<(), ConnectorError> {
        if self.approved {
            return Ok(());
        }
        Err(ConnectorError::ScaRequired(ScaChallenge::Decoupled {
            message: "approve the login in your banking app".into(),
            poll_after_secs: 0,
            reference: None,
            expires_at: None,
        }))
    }

    async fn resume_sca(&mut self, answer: &ScaAnswer) -> Result<ScaProgress, ConnectorError> {
        self.approved = matches!(answer, ScaAnswer::Approved);
        Ok(ScaProgress::Done)
    }

    async fn accounts(&mut self) -> Result<Vec<FetchedAccount>, ConnectorError> {
        Ok(vec![FetchedAccount {
            provider_id: "A".into(),
            iban: None,
            currency: "EUR".parse().unwrap(),
            name: None,
            kind: None,
            raw: serde_json::Value::Null,
        }])
    }

    async fn window(
        &mut self,
        _account: &FetchedAccount,
        w: DateWindow,
    ) -> Result<WindowPage, ConnectorError> {
        let mut page = WindowPage::default();
        for ago in 0..20 {
            let date = today() - Days::new(ago);
            if date < w.from || date > w.to {
                continue;
            }
            let label = format!("CARD PAYMENT {ago}");
            page.transactions.push(FetchedTransaction {
                provider_id: Some(format!("t{ago}")),
                status: TxStatus::Booked,
                booking_date: date,
                value_date: None,
                transaction_date: None,
                amount: format!("-{}.50", ago + 1).parse().unwrap(),
                currency: "EUR".parse().unwrap(),
                original_amount: None,
                original_currency: None,
                raw_label: label.clone(),
                label: clean_label(&label),
                counterparty_name: None,
                counterparty_iban: None,
                remittance_info: None,
                bank_code: None,
                running_balance: None,
                raw: serde_json::json!({ "id": ago }),
            });
        }
        Ok(page)
    }
}

/// Approves after `wait`, telling `asked` when the wait begins.
struct SlowPerson {
    wait: Duration,
    asked: Arc<Notify>,
}

#[async_trait]
impl ScaSolver for SlowPerson {
    async fn solve(&self, _challenge: &ScaChallenge) -> Result<ScaAnswer, ScaSolverError> {
        self.asked.notify_one();
        tokio::time::sleep(self.wait).await;
        Ok(ScaAnswer::Approved)
    }
}

fn syncer(store: Arc<dyn Store>, key: &Arc<MasterKey>, owner: &str) -> Syncer {
    let factory: ConnectorFactory = Arc::new(|_c, _s, _creds| {
        Ok(Box::new(ApprovalBank { approved: false }) as Box<dyn Connector>)
    });
    let mut s = Syncer::new(store, key.clone(), factory);
    s.options.lease_ttl = LEASE_TTL;
    s.options.backoff_base = Duration::from_millis(5);
    s.options.owner = owner.to_owned();
    s
}

async fn connection(store: &dyn Store, s: &Syncer) -> Connection {
    bankbridge_sync::add_connection(
        store,
        &s.key,
        "bank",
        "approval",
        &ConnectionSettings::new("http://127.0.0.1:9", "alice"),
        &Credentials::with_password("pw".into()),
    )
    .await
    .unwrap()
}

async fn stored_rows(store: &dyn Store) -> usize {
    store
        .query_transactions(&TxQuery::default())
        .await
        .unwrap()
        .len()
}

/// A person takes twice the lease's lifetime to approve: meanwhile a second
/// sync of the same connection is refused (the heartbeat kept the lease),
/// and the first completes.
async fn a_sync_waiting_for_approval_is_not_overtaken(store: Arc<dyn Store>) {
    let key = Arc::new(MasterKey::generate());
    let first = syncer(store.clone(), &key, "first");
    let second = syncer(store.clone(), &key, "second");
    let conn = connection(store.as_ref(), &first).await;
    let asked = Arc::new(Notify::new());
    let person = SlowPerson {
        wait: LEASE_TTL * 2,
        asked: asked.clone(),
    };
    let running = {
        let conn = conn.clone();
        tokio::spawn(async move { first.sync_with_solver(&conn, &|_| {}, &person).await })
    };
    asked.notified().await;
    // Well past the lease's lifetime, still inside the wait.
    tokio::time::sleep(LEASE_TTL * 3 / 2).await;
    let overtaking = second.sync(&conn, &|_| {}).await;
    match overtaking {
        Err(SyncError::Busy { owner, .. }) => assert_eq!(owner, "first"),
        other => panic!("the second sync should find the lease held, got {other:?}"),
    }
    let summary = running.await.unwrap().expect("the first sync completes");
    assert_eq!(summary.inserted, 20);
    assert_eq!(stored_rows(store.as_ref()).await, 20);
    let after = store.get_connection(conn.id).await.unwrap().unwrap();
    assert_eq!(after.last_sync_status, SyncOutcome::Ok);
    // Released at the end: the next sync may start at once.
    assert!(after.lease_owner.is_none());
}

/// While the person takes their time, the lease passes to another holder
/// (as when this process froze past the lease and another took over). The
/// approved sync then writes nothing (no account, no row, no session, no
/// outcome) and stops with a clear error.
async fn a_sync_whose_lease_was_taken_over_writes_nothing(store: Arc<dyn Store>) {
    let first = syncer(store.clone(), &Arc::new(MasterKey::generate()), "first");
    let conn = connection(store.as_ref(), &first).await;
    let asked = Arc::new(Notify::new());
    let person = SlowPerson {
        wait: LEASE_TTL,
        asked: asked.clone(),
    };
    let took_over = Arc::new(AtomicBool::new(false));
    let intruder = {
        let (store, took_over, asked) = (store.clone(), took_over.clone(), asked.clone());
        tokio::spawn(async move {
            asked.notified().await;
            // Seen from a clock past the lease's end, the lease has lapsed.
            let later = Utc::now() + chrono::Duration::hours(1);
            let lease = store
                .acquire_sync_lease(
                    conn.id,
                    "intruder",
                    later,
                    later + chrono::Duration::hours(1),
                )
                .await
                .unwrap();
            took_over.store(matches!(lease, Lease::Acquired(_)), Ordering::SeqCst);
        })
    };
    let result = first.sync_with_solver(&conn, &|_| {}, &person).await;
    intruder.await.unwrap();
    assert!(
        took_over.load(Ordering::SeqCst),
        "the intruder got the lease"
    );
    match result {
        Err(e @ SyncError::LeaseLost { .. }) => {
            assert!(e.to_string().contains("took over"), "{e}");
        }
        other => panic!("expected LeaseLost, got {other:?}"),
    }
    assert!(store.list_accounts(None).await.unwrap().is_empty());
    assert_eq!(stored_rows(store.as_ref()).await, 0);
    let after = store.get_connection(conn.id).await.unwrap().unwrap();
    assert_eq!(after.last_sync_status, SyncOutcome::Never);
    assert!(after.session_sealed.is_none());
    assert_eq!(after.lease_owner.as_deref(), Some("intruder"));
}

async fn on_sqlite(body: fn(Arc<dyn Store>) -> futures::future::BoxFuture<'static, ()>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("lease.db"))
        .await
        .unwrap();
    body(Arc::new(store)).await;
}

async fn on_postgres(body: fn(Arc<dyn Store>) -> futures::future::BoxFuture<'static, ()>) {
    let Some(admin) = pg_admin_url() else { return };
    let (admin_conn, db, url) = create_pg_database(&admin).await;
    let store: Arc<dyn Store> = bankbridge_store::open(&url).await.unwrap();
    let result = tokio::spawn(body(store)).await;
    drop_pg_database(admin_conn, &db).await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::on_sqlite(|s| Box::pin(crate::$name(s))).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::on_postgres(|s| Box::pin(crate::$name(s))).await
                }
            )*
        }
    };
}

both_backends!(
    a_sync_waiting_for_approval_is_not_overtaken,
    a_sync_whose_lease_was_taken_over_writes_nothing,
);
