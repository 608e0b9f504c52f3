//! Windows that keep failing on transient faults, on SQLite: a long window
//! whose every attempt meets a fault (many pages, each may fail) is fetched
//! in halves and the sync converges; a bank that is down fails the sync
//! after a bounded number of attempts.
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bankbridge_core::{
    ConnectionSettings, Connector, ConnectorError, ConnectorLimits, Credentials, DateWindow,
    FetchedAccount, FetchedTransaction, MasterKey, TransientKind, TxStatus, WindowPage,
    clean_label,
};
use bankbridge_store::{SqliteStore, Store, TxQuery};
use bankbridge_sync::{ConnectorFactory, Syncer};
use chrono::{Days, NaiveDate};

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 6, 30).unwrap()
}

/// One payment a day over 120 days. A window longer than `longest_ok` days
/// always fails with a 503 (as if one of its pages always did); `None`:
/// every window fails (the bank is down).
struct FaultyBank {
    longest_ok: Option<u32>,
    calls: Arc<AtomicU32>,
}

#[async_trait]
impl Connector for FaultyBank {
    fn name(&self) -> &'static str {
        "faulty"
    }

    fn limits(&self) -> ConnectorLimits {
        ConnectorLimits {
            max_history_days: Some(120),
            ..Default::default()
        }
    }

    fn today(&self) -> NaiveDate {
        today()
    }

    async fn login(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }

    async fn accounts(&mut self) -> Result<Vec<FetchedAccount>, ConnectorError> {
        Ok(vec![FetchedAccount {
            provider_id: "acc".into(),
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
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.longest_ok.is_none_or(|days| w.days() > days) {
            return Err(ConnectorError::Transient {
                what: "transactions".into(),
                kind: TransientKind::Server(503),
                retry_after: None,
            });
        }
        let mut transactions = Vec::new();
        let mut day = w.from.max(today() - Days::new(119));
        while day <= w.to {
            transactions.push(FetchedTransaction {
                provider_id: Some(format!("t-{day}")),
                status: TxStatus::Booked,
                booking_date: day,
                value_date: None,
                transaction_date: None,
                amount: rust_decimal::Decimal::new(-100, 2),
                currency: "EUR".parse().unwrap(),
                original_amount: None,
                original_currency: None,
                label: clean_label("coffee"),
                raw_label: "coffee".into(),
                counterparty_name: None,
                counterparty_iban: None,
                remittance_info: None,
                bank_code: None,
                running_balance: None,
                raw: serde_json::Value::Null,
            });
            day = day + Days::new(1);
        }
        Ok(WindowPage {
            transactions,
            balances: Vec::new(),
        })
    }
}

async fn run(longest_ok: Option<u32>) -> (Result<(), String>, u32, usize) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("x.db")).await.unwrap());
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let factory: ConnectorFactory = Arc::new(move |_c, _s, _creds| {
        Ok(Box::new(FaultyBank {
            longest_ok,
            calls: counted.clone(),
        }) as Box<dyn Connector>)
    });
    let mut syncer = Syncer::new(store.clone(), Arc::new(MasterKey::generate()), factory);
    syncer.options.backoff_base = Duration::from_millis(1);
    syncer.options.backoff_max = Duration::from_millis(2);
    let mut settings = ConnectionSettings::new("http://127.0.0.1:9", "alice");
    settings.window_days = 120;
    let c = bankbridge_sync::add_connection(
        store.as_ref(),
        &syncer.key,
        "bank",
        "faulty",
        &settings,
        &Credentials::with_password("pw".into()),
    )
    .await
    .unwrap();
    let result = syncer
        .sync(&c, &|_| {})
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    let rows = store
        .query_transactions(&TxQuery::default())
        .await
        .unwrap()
        .len();
    (result, calls.load(Ordering::Relaxed), rows)
}

#[tokio::test]
async fn a_window_that_keeps_failing_is_fetched_in_halves() {
    let (result, calls, rows) = run(Some(40)).await;
    result.expect("the halves go through");
    assert_eq!(rows, 120, "every day of the history, once");
    eprintln!("{calls} window calls");
}

#[tokio::test]
async fn a_bank_that_is_down_fails_after_a_bounded_number_of_attempts() {
    let (result, calls, rows) = run(None).await;
    let e = result.unwrap_err();
    assert!(e.contains("still failing after"), "{e}");
    assert_eq!(rows, 0);
    // 3 tries at each of 4 halvings of the first half, then the default 8.
    assert!(calls <= 3 * 4 + 8, "{calls} calls");
}
