//! The keypad connector against the simulated keypad bank over loopback
//! HTTP, driven by the real sync engine on a real SQLite store: the PIN
//! keypad, contract tokens, index paging, the 90-day 2FA gate (stop in
//! needs_user, then approve and complete), documents and token reuse.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bankbridge_connectors::KeypadConnector;
use bankbridge_core::{
    ConnectionSettings, Connector, ConnectorError, Credentials, MasterKey, ScaAnswer, ScaChallenge,
    ScaSolver, ScaSolverError, Secret,
};
use bankbridge_sandbox::{SandboxConfig, SandboxHandle};
use bankbridge_store::{DocumentQuery, SqliteStore, Store, TxQuery};
use bankbridge_sync::{ConnectorFactory, SyncError, Syncer};
use chrono::{Days, NaiveDate};
use rust_decimal::Decimal;

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 6, 15).unwrap()
}

async fn sandbox(accounts: usize, transactions: usize) -> SandboxHandle {
    bankbridge_sandbox::spawn(SandboxConfig {
        seed: 11,
        accounts,
        transactions,
        years: 3,
        today: Some(today()),
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox starts")
}

struct Env {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    syncer: Syncer,
}

async fn env(sb: &SandboxHandle, pin: Option<&str>) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("k.db")).await.unwrap());
    let factory: ConnectorFactory = Arc::new(|_c, settings, credentials| {
        Ok(Box::new(KeypadConnector::new(settings, credentials)?) as Box<dyn Connector>)
    });
    let mut syncer = Syncer::new(store.clone(), Arc::new(MasterKey::generate()), factory);
    syncer.options.backoff_base = Duration::from_millis(5);
    let creds = sb.keypad().credentials();
    let settings = ConnectionSettings::new(sb.keypad_base_url(), creds.identifier.clone());
    bankbridge_sync::add_connection(
        store.as_ref(),
        &syncer.key,
        "keypad",
        "keypad",
        &settings,
        &Credentials::with_password(Secret::new(pin.unwrap_or(&creds.pin).to_owned())),
    )
    .await
    .unwrap();
    Env {
        _dir: dir,
        store,
        syncer,
    }
}

/// The simulated user: approves exactly the request the challenge names.
struct Approver {
    state: bankbridge_sandbox::SandboxState,
    asked: Mutex<Vec<String>>,
}

#[async_trait]
impl ScaSolver for Approver {
    async fn solve(&self, challenge: &ScaChallenge) -> Result<ScaAnswer, ScaSolverError> {
        let ScaChallenge::Decoupled {
            reference: Some(id),
            ..
        } = challenge
        else {
            return Ok(ScaAnswer::NotNow);
        };
        self.asked.lock().unwrap().push(id.clone());
        self.state
            .keypad()
            .approve(Some(id))
            .map_err(|e| ScaSolverError(e.to_string()))?;
        Ok(ScaAnswer::Approved)
    }
}

fn approver(sb: &SandboxHandle) -> Approver {
    Approver {
        state: sb.state().clone(),
        asked: Mutex::default(),
    }
}

/// Per IBAN: (count, sum) stored, every status.
async fn stored(store: &Arc<dyn Store>) -> HashMap<String, (u64, Decimal)> {
    let mut out = HashMap::new();
    for a in store.list_accounts(None).await.unwrap() {
        let rows = store
            .query_transactions(&TxQuery {
                account_id: Some(a.id),
                ..Default::default()
            })
            .await
            .unwrap();
        out.insert(
            a.iban.unwrap().to_string(),
            (rows.len() as u64, rows.iter().map(|t| t.amount).sum()),
        );
    }
    out
}

fn truth(sb: &SandboxHandle) -> HashMap<String, (u64, Decimal)> {
    sb.keypad()
        .truth()
        .into_iter()
        .map(|t| (t.iban, (t.count, t.sum.parse().unwrap())))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn unattended_stops_at_90_days_then_one_approval_per_contract_completes_the_truth() {
    let sb = sandbox(3, 1500).await;
    let env = env(&sb, None).await;
    let conn = env.store.find_connection("keypad").await.unwrap().unwrap();

    let err = env.syncer.sync(&conn, &|_| {}).await.unwrap_err();
    let SyncError::NeedsUser {
        challenge,
        stored_from,
        summary,
        ..
    } = &err
    else {
        panic!("expected needs_user, got {err}");
    };
    let boundary = today().checked_sub_days(Days::new(90)).unwrap();
    assert_eq!(*stored_from, Some(boundary));
    assert!(matches!(
        challenge,
        ScaChallenge::Decoupled {
            reference: Some(_),
            ..
        }
    ));
    let w = sb.keypad();
    let at_boundary = stored(&env.store).await;
    assert_eq!(at_boundary.len(), 3);
    for a in env.store.list_accounts(None).await.unwrap() {
        let rows = env
            .store
            .query_transactions(&TxQuery {
                account_id: Some(a.id),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(!rows.is_empty());
        assert!(rows.iter().all(|t| t.booking_date >= boundary));
        let cp = env.store.checkpoint(a.id).await.unwrap();
        assert_eq!(cp.oldest_covered, Some(boundary), "{}", a.provider_id);
    }
    assert!(summary.inserted > 0);
    assert!(summary.documents > 0, "statements need no 2FA");
    // One 2FA request for the run, left pending (nobody approved it).
    assert_eq!(w.pending_requests().len(), 1);
    let conn = env.store.find_connection("keypad").await.unwrap().unwrap();
    assert_eq!(
        conn.last_sync_status,
        bankbridge_store::SyncOutcome::NeedsUser
    );

    // With someone to approve: one approval per contract, then the whole history.
    let solver = approver(&sb);
    let done = env
        .syncer
        .sync_with_solver(&conn, &|_| {}, &solver)
        .await
        .expect("approved sync");
    let contracts: std::collections::HashSet<_> =
        w.truth().into_iter().map(|t| t.contract_id).collect();
    assert_eq!(solver.asked.lock().unwrap().len(), contracts.len());
    assert_eq!(
        stored(&env.store).await,
        truth(&sb),
        "count and sum per IBAN"
    );
    // The unattended sync had stored exactly the rows from the boundary on.
    for a in env.store.list_accounts(None).await.unwrap() {
        let since = env
            .store
            .query_transactions(&TxQuery {
                account_id: Some(a.id),
                from: Some(boundary),
                ..Default::default()
            })
            .await
            .unwrap();
        let iban = a.iban.unwrap().to_string();
        assert_eq!(since.len() as u64, at_boundary[&iban].0, "{iban}");
        assert_eq!(
            since.iter().map(|t| t.amount).sum::<Decimal>(),
            at_boundary[&iban].1
        );
    }
    assert_eq!(
        done.inserted + summary.inserted,
        truth(&sb).values().map(|t| t.0).sum::<u64>()
    );

    // Statements byte for byte: every statement of the truth stored once.
    let docs = env
        .store
        .list_documents(&DocumentQuery::default())
        .await
        .unwrap();
    for t in w.truth() {
        for s in &t.statements {
            let found: Vec<_> = docs.iter().filter(|d| d.sha256 == s.sha256).collect();
            assert_eq!(found.len(), 1, "statement {} of {}", s.month, t.iban);
        }
    }

    // A re-sync with the kept tokens: no PIN, nothing new, no duplicate.
    let again = env.syncer.sync(&conn, &|_| {}).await.expect("re-sync");
    assert_eq!((again.inserted, again.updated, again.documents), (0, 0, 0));
    assert_eq!(stored(&env.store).await, truth(&sb));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_pin_is_sent_once_and_refused_clearly() {
    let sb = sandbox(1, 200).await;
    let real = sb.keypad().credentials().pin;
    let wrong = if real == "000000" { "111111" } else { "000000" };
    let env = env(&sb, Some(wrong)).await;
    let conn = env.store.find_connection("keypad").await.unwrap().unwrap();
    let err = env.syncer.sync(&conn, &|_| {}).await.unwrap_err();
    assert!(
        matches!(
            err,
            SyncError::Connector(ConnectorError::InvalidCredentials(_))
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("2 attempt(s) left"), "{text}");
    assert!(
        !text.contains(wrong),
        "the PIN is not in the message: {text}"
    );
}
