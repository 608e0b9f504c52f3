//! The engine against a fake bank with a 90-day SCA gate and statements, on
//! a real SQLite store: an unattended sync stops at the boundary in
//! `needs_user` with everything up to it committed; a sync with a solver
//! approves once, polls, and completes without duplicates; documents are
//! downloaded once.
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bankbridge_core::{
    ConnectionSettings, Connector, ConnectorError, ConnectorLimits, Credentials, DateWindow,
    DocumentContent, FetchedAccount, FetchedDocument, FetchedTransaction, MasterKey, ScaAnswer,
    ScaChallenge, ScaProgress, ScaSolver, ScaSolverError, Secret, TxStatus, WindowPage,
    clean_label,
};
use bankbridge_store::{DocumentQuery, SqliteStore, Store, TxQuery};
use bankbridge_sync::{ConnectorFactory, SyncError, SyncEvent, Syncer};
use chrono::{Days, NaiveDate};
use rust_decimal::Decimal;

const GATE_DAYS: u32 = 90;
const HISTORY_DAYS: u64 = 400;

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 6, 30).unwrap()
}

/// What the fake bank knows and counts, shared with the test.
#[derive(Default)]
struct BankState {
    /// The user approved the pending request on the "device".
    device_approved: AtomicBool,
    /// 2FA went through: the whole history is open.
    open: AtomicBool,
    requests_started: AtomicU32,
    polls: AtomicU32,
    /// Polls answered `pending` before the approval shows.
    pending_polls: AtomicU32,
    downloads: AtomicU32,
    gated_calls: AtomicU32,
    logins: AtomicU32,
}

struct GateBank {
    state: Arc<BankState>,
    pending: Option<String>,
}

/// One row a day per account, twins every tenth day (two identical coffees).
fn rows(account: &str) -> Vec<FetchedTransaction> {
    let mut out = vec![];
    for ago in 0..HISTORY_DAYS {
        let date = today() - Days::new(ago);
        let n = if ago % 10 == 0 { 2 } else { 1 };
        for _ in 0..n {
            let label = format!("CB SHOP {account} {}", ago % 7);
            out.push(FetchedTransaction {
                provider_id: None,
                status: TxStatus::Booked,
                booking_date: date,
                value_date: None,
                transaction_date: None,
                amount: Decimal::from_str(&format!("-{}.{:02}", ago % 50 + 1, ago % 100)).unwrap(),
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
                raw: serde_json::json!({"label": label, "day": date.to_string()}),
            });
        }
    }
    out
}

fn sca_from() -> NaiveDate {
    today() - Days::new(GATE_DAYS as u64)
}

#[async_trait]
impl Connector for GateBank {
    fn name(&self) -> &'static str {
        "gate"
    }

    fn limits(&self) -> ConnectorLimits {
        ConnectorLimits {
            max_window_days: Some(30),
            sca_after_days: Some(GATE_DAYS),
            ..Default::default()
        }
    }

    fn today(&self) -> NaiveDate {
        today()
    }

    async fn login(&mut self) -> Result<(), ConnectorError> {
        self.state.logins.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn accounts(&mut self) -> Result<Vec<FetchedAccount>, ConnectorError> {
        Ok(["A", "B"]
            .iter()
            .map(|id| FetchedAccount {
                provider_id: (*id).into(),
                iban: None,
                currency: "EUR".parse().unwrap(),
                name: None,
                kind: None,
                raw: serde_json::Value::Null,
            })
            .collect())
    }

    async fn window(
        &mut self,
        account: &FetchedAccount,
        w: DateWindow,
    ) -> Result<WindowPage, ConnectorError> {
        if w.from < sca_from() && !self.state.open.load(Ordering::SeqCst) {
            self.state.gated_calls.fetch_add(1, Ordering::SeqCst);
            if self.pending.is_none() {
                let n = self.state.requests_started.fetch_add(1, Ordering::SeqCst);
                self.pending = Some(format!("req-{n}"));
            }
            return Err(ConnectorError::ScaRequired(ScaChallenge::Decoupled {
                message: "approve the request on your trusted device".into(),
                poll_after_secs: 0,
                reference: self.pending.clone(),
                expires_at: None,
            }));
        }
        Ok(WindowPage {
            transactions: rows(&account.provider_id)
                .into_iter()
                .filter(|t| w.contains(t.booking_date))
                .collect(),
            balances: vec![],
        })
    }

    async fn resume_sca(&mut self, answer: &ScaAnswer) -> Result<ScaProgress, ConnectorError> {
        assert!(self.pending.is_some(), "resume without a pending request");
        if answer == &ScaAnswer::Declined {
            self.pending = None;
            return Err(ConnectorError::ScaFailed("declined".into()));
        }
        assert_eq!(answer, &ScaAnswer::Approved);
        self.state.polls.fetch_add(1, Ordering::SeqCst);
        if self.state.pending_polls.load(Ordering::SeqCst) > 0 {
            self.state.pending_polls.fetch_sub(1, Ordering::SeqCst);
            return Ok(ScaProgress::Pending {
                poll_after: Duration::from_millis(10),
            });
        }
        if !self.state.device_approved.load(Ordering::SeqCst) {
            return Err(ConnectorError::ScaFailed("the request was declined".into()));
        }
        self.state.open.store(true, Ordering::SeqCst);
        self.pending = None;
        Ok(ScaProgress::Done)
    }

    async fn documents(&mut self) -> Result<Vec<FetchedDocument>, ConnectorError> {
        Ok((1..=3)
            .map(|m| FetchedDocument {
                provider_id: format!("stmt-{m}"),
                account: Some("A".into()),
                kind: "statement".into(),
                category: Some("AST".into()),
                title: format!("Statement {m}"),
                date: NaiveDate::from_ymd_opt(2024, m, 28),
                locator: Secret::from(format!("token-{m}")),
            })
            // The same statement listed twice (two lists of the bank).
            .chain(std::iter::once(FetchedDocument {
                provider_id: "stmt-1".into(),
                account: None,
                kind: "document".into(),
                category: None,
                title: "Statement 1 again".into(),
                date: None,
                locator: Secret::from("token-1"),
            }))
            .collect())
    }

    async fn download(&mut self, doc: &FetchedDocument) -> Result<DocumentContent, ConnectorError> {
        self.state.downloads.fetch_add(1, Ordering::SeqCst);
        // Statements 2 and 3 have identical bytes: stored once.
        let body = if doc.provider_id == "stmt-1" {
            "%PDF-1 one".to_owned()
        } else {
            "%PDF-1 same".to_owned()
        };
        Ok(DocumentContent {
            content_type: "application/pdf".into(),
            bytes: body.into_bytes(),
        })
    }
}

/// The simulated user: approves on the "device" when asked.
struct Approver {
    state: Arc<BankState>,
    asked: Mutex<Vec<ScaChallenge>>,
    answer: ScaAnswer,
}

#[async_trait]
impl ScaSolver for Approver {
    async fn solve(&self, challenge: &ScaChallenge) -> Result<ScaAnswer, ScaSolverError> {
        self.asked.lock().unwrap().push(challenge.clone());
        if self.answer == ScaAnswer::Approved {
            self.state.device_approved.store(true, Ordering::SeqCst);
        }
        Ok(self.answer.clone())
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    syncer: Syncer,
    state: Arc<BankState>,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("t.db")).await.unwrap());
    let state = Arc::new(BankState::default());
    let s = state.clone();
    let factory: ConnectorFactory = Arc::new(move |_c, _s, _cr| {
        Ok(Box::new(GateBank {
            state: s.clone(),
            pending: None,
        }) as Box<dyn Connector>)
    });
    let mut syncer = Syncer::new(store.clone(), Arc::new(MasterKey::generate()), factory);
    syncer.options.backoff_base = Duration::from_millis(1);
    let settings = ConnectionSettings::new("http://127.0.0.1:1", "u");
    bankbridge_sync::add_connection(
        store.as_ref(),
        &syncer.key,
        "gate",
        "gate",
        &settings,
        &Credentials::with_password(Secret::from("pw")),
    )
    .await
    .unwrap();
    Fixture {
        _dir: dir,
        store,
        syncer,
        state,
    }
}

async fn stored(store: &Arc<dyn Store>) -> Vec<bankbridge_core::Transaction> {
    store.query_transactions(&TxQuery::default()).await.unwrap()
}

fn expected(account: &str, from: NaiveDate) -> usize {
    rows(account)
        .iter()
        .filter(|t| t.booking_date >= from)
        .count()
}

#[tokio::test]
async fn unattended_sync_stops_at_the_boundary_then_an_approved_one_completes() {
    let f = fixture().await;
    let conn = f.store.find_connection("gate").await.unwrap().unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    let err = f
        .syncer
        .sync(&conn, &move |e| ev.lock().unwrap().push(e))
        .await
        .unwrap_err();
    let SyncError::NeedsUser {
        challenge,
        stored_from,
        summary,
        ..
    } = &err
    else {
        panic!("expected NeedsUser, got {err}");
    };
    assert!(err.needs_user());
    assert!(
        matches!(challenge, ScaChallenge::Decoupled { reference: Some(r), .. } if r == "req-0")
    );
    assert_eq!(*stored_from, Some(sca_from()));
    // Every row up to the boundary, for both accounts, is committed.
    let rows_now = stored(&f.store).await;
    let want = expected("A", sca_from()) + expected("B", sca_from());
    assert_eq!(rows_now.len(), want);
    assert_eq!(summary.inserted as usize, want, "{summary:?}");
    assert!(rows_now.iter().all(|t| t.booking_date >= sca_from()));
    assert_eq!(
        summary.documents, 3,
        "documents need no SCA: fetched anyway"
    );
    // One approval request for the whole run; the second account did not ask the bank.
    assert_eq!(f.state.requests_started.load(Ordering::SeqCst), 1);
    assert_eq!(f.state.gated_calls.load(Ordering::SeqCst), 1);
    let stops = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, SyncEvent::ScaStopped { .. }))
        .count();
    assert_eq!(stops, 2, "both accounts stopped at the boundary");
    let conn = f.store.find_connection("gate").await.unwrap().unwrap();
    assert_eq!(
        conn.last_sync_status,
        bankbridge_store::SyncOutcome::NeedsUser
    );
    assert!(
        conn.last_sync_error
            .as_deref()
            .unwrap()
            .contains("approve the request on your trusted device")
    );
    for a in f.store.list_accounts(None).await.unwrap() {
        let cp = f.store.checkpoint(a.id).await.unwrap();
        assert_eq!(cp.oldest_covered, Some(sca_from()));
        assert!(!cp.backfill_done);
    }

    // Again unattended: nothing new, still needs_user, no duplicate.
    let again = f.syncer.sync(&conn, &|_| {}).await.unwrap_err();
    assert!(again.needs_user());
    assert_eq!(again.partial_summary().unwrap().inserted, 0);
    assert_eq!(again.partial_summary().unwrap().documents, 0);
    assert_eq!(stored(&f.store).await.len(), want);

    // Now with someone to approve: the approval is polled (pending twice), then the rest.
    f.state.pending_polls.store(2, Ordering::SeqCst);
    let approver = Approver {
        state: f.state.clone(),
        asked: Mutex::default(),
        answer: ScaAnswer::Approved,
    };
    let summary = f
        .syncer
        .sync_with_solver(&conn, &|_| {}, &approver)
        .await
        .unwrap();
    assert_eq!(
        approver.asked.lock().unwrap().len(),
        1,
        "approved once for both accounts"
    );
    assert_eq!(f.state.polls.load(Ordering::SeqCst), 3);
    let all = stored(&f.store).await;
    let total = rows("A").len() + rows("B").len();
    assert_eq!(
        all.len(),
        total,
        "every row once: no duplicate at the old boundary"
    );
    assert_eq!(summary.inserted as usize, total - want);
    let keys: std::collections::HashSet<_> = all
        .iter()
        .map(|t| (t.account_id, t.provider_id.clone()))
        .collect();
    assert_eq!(keys.len(), all.len());
    assert!(all.iter().all(|t| t.provider_id.starts_with("fp:")));
    let conn = f.store.find_connection("gate").await.unwrap().unwrap();
    assert_eq!(conn.last_sync_status, bankbridge_store::SyncOutcome::Ok);
    for a in f.store.list_accounts(None).await.unwrap() {
        assert!(f.store.checkpoint(a.id).await.unwrap().backfill_done);
    }
}

#[tokio::test]
async fn a_declined_approval_fails_the_sync_and_keeps_what_was_committed() {
    let f = fixture().await;
    let conn = f.store.find_connection("gate").await.unwrap().unwrap();
    let solver = Approver {
        state: f.state.clone(),
        asked: Mutex::default(),
        answer: ScaAnswer::Declined,
    };
    let err = f
        .syncer
        .sync_with_solver(&conn, &|_| {}, &solver)
        .await
        .unwrap_err();
    assert!(
        matches!(err, SyncError::Connector(ConnectorError::ScaFailed(_))),
        "{err}"
    );
    assert!(!err.needs_user());
    assert_eq!(stored(&f.store).await.len(), expected("A", sca_from()));
    let conn = f.store.find_connection("gate").await.unwrap().unwrap();
    assert_eq!(conn.last_sync_status, bankbridge_store::SyncOutcome::Failed);
}

#[tokio::test]
async fn documents_are_downloaded_once_and_bytes_stored_once() {
    let f = fixture().await;
    f.state.open.store(true, Ordering::SeqCst);
    let conn = f.store.find_connection("gate").await.unwrap().unwrap();
    let first = f.syncer.sync(&conn, &|_| {}).await.unwrap();
    assert_eq!(first.documents, 3);
    assert_eq!(
        f.state.downloads.load(Ordering::SeqCst),
        3,
        "a document listed twice is fetched once"
    );
    let docs = f
        .store
        .list_documents(&DocumentQuery::default())
        .await
        .unwrap();
    assert_eq!(docs.len(), 3);
    let accounts = f.store.list_accounts(None).await.unwrap();
    let a = accounts.iter().find(|a| a.provider_id == "A").unwrap();
    assert!(docs.iter().all(|d| d.account_id == Some(a.id)));
    assert_eq!(docs[1].sha256, docs[2].sha256);
    let (_, bytes) = f.store.document_content(docs[0].id).await.unwrap().unwrap();
    assert_eq!(bytes, b"%PDF-1 one");

    let second = f.syncer.sync(&conn, &|_| {}).await.unwrap();
    assert_eq!(second.documents, 0);
    assert_eq!(second.inserted, 0);
    assert_eq!(
        f.state.downloads.load(Ordering::SeqCst),
        3,
        "nothing downloaded again"
    );
    assert_eq!(
        f.store
            .list_documents(&DocumentQuery::default())
            .await
            .unwrap()
            .len(),
        3
    );
}
