//! Throughput of the data API over loopback HTTP, server and load generator
//! on the same machine. Prints a table; asserts nothing.
//!
//! `cargo bench -p bankbridge-server --bench api [-- ROWS SECONDS CONNECTIONS]`
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bankbridge_core::{FetchedAccount, MasterKey, TxStatus};
use bankbridge_server::{AppState, auth};
use bankbridge_store::{Checkpoint, Scope, SqliteStore, Store, TxWrite, WindowCommit};
use bankbridge_sync::Syncer;
use chrono::{Days, NaiveDate, Utc};
use rust_decimal::Decimal;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let rows: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let secs: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    let conns: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(32);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(rows, Duration::from_secs(secs), conns));
}

async fn run(rows: usize, duration: Duration, conns: usize) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&dir.path().join("bench.sqlite"))
            .await
            .unwrap(),
    );
    seed(store.as_ref(), rows).await;
    let factory: bankbridge_sync::ConnectorFactory =
        Arc::new(|_, _, _| Err("no connectors in the bench".into()));
    let syncer = Syncer::new(store.clone(), Arc::new(MasterKey::generate()), factory);
    let state = AppState::new(store.clone(), syncer, vec![]);
    let (plain, record) = auth::new_token("bench", Scope::Read);
    store.create_token(&record).await.unwrap();
    let token = plain.expose().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(bankbridge_server::serve(
        listener,
        state,
        std::future::pending(),
    ));

    // Where the time of one page goes, without HTTP.
    let q = bankbridge_store::TxQuery {
        limit: Some(101),
        ..Default::default()
    };
    let t = Instant::now();
    let mut n = 0;
    let mut page = Vec::new();
    while t.elapsed() < Duration::from_secs(2) {
        page = store.query_transactions(&q).await.unwrap();
        n += 1;
    }
    let per_query = t.elapsed().as_secs_f64() / n as f64 * 1e3;
    let t = Instant::now();
    let mut m = 0;
    let mut size = 0;
    while t.elapsed() < Duration::from_secs(1) {
        size = serde_json::to_vec(&page).unwrap().len();
        m += 1;
    }
    let per_json = t.elapsed().as_secs_f64() / m as f64 * 1e3;
    println!(
        "store.query_transactions(limit 101): {per_query:.3} ms; JSON of the page ({size} bytes): {per_json:.3} ms"
    );
    println!(
        "{rows} rows in SQLite, {conns} keep-alive connections, {}s per route",
        duration.as_secs()
    );
    println!(
        "{:<48} {:>10} {:>10} {:>10} {:>12}",
        "route", "req/s", "p50 ms", "p99 ms", "MB/s"
    );
    for path in [
        "/healthz",
        "/api/v1/accounts",
        "/api/v1/transactions?limit=100",
        "/api/v1/transactions?limit=100&text=coffee",
        "/api/v1/transactions?limit=1000",
    ] {
        let (rps, p50, p99, mbps) = load(&base, path, &token, duration, conns).await;
        println!("{path:<48} {rps:>10.0} {p50:>10.2} {p99:>10.2} {mbps:>12.1}");
    }
}

async fn load(
    base: &str,
    path: &str,
    token: &str,
    duration: Duration,
    conns: usize,
) -> (f64, f64, f64, f64) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(conns)
        .build()
        .unwrap();
    let url = format!("{base}{path}");
    let stop = Arc::new(AtomicBool::new(false));
    let bytes = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (client, url, token, stop, bytes) = (
            client.clone(),
            url.clone(),
            token.to_owned(),
            stop.clone(),
            bytes.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let res = client.get(&url).bearer_auth(&token).send().await.unwrap();
                assert!(res.status().is_success(), "{}", res.status());
                let body = res.bytes().await.unwrap();
                bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    let pct =
        |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1000.0;
    (
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        bytes.load(Ordering::Relaxed) as f64 / elapsed / 1e6,
    )
}

async fn seed(store: &dyn Store, n: usize) {
    let key = MasterKey::generate();
    let settings = bankbridge_core::ConnectionSettings::new("http://127.0.0.1:9", "bench");
    let creds = bankbridge_core::Credentials::with_password("pw".into());
    let conn = bankbridge_sync::add_connection(store, &key, "bench", "none", &settings, &creds)
        .await
        .unwrap();
    let now = Utc::now();
    let account = FetchedAccount {
        provider_id: "ACC".into(),
        iban: None,
        currency: "EUR".parse().unwrap(),
        name: Some("Bench".into()),
        kind: None,
        raw: serde_json::json!({}),
    };
    let lease = bankbridge_store::testing::hold_lease(store, conn.id).await;
    let account = store.upsert_account(lease, &account, now).await.unwrap();
    let start = NaiveDate::from_ymd_opt(2020, 1, 1).unwrap();
    for chunk in (0..n).collect::<Vec<_>>().chunks(5000) {
        let inserts = chunk
            .iter()
            .map(|&i| {
                let label = if i % 7 == 0 {
                    format!("COFFEE BAR {i}")
                } else {
                    format!("CARD PAYMENT SHOP {i}")
                };
                TxWrite {
                    provider_id: format!("T{i:08}"),
                    pending_provider_id: None,
                    fingerprint: format!("fp{i}"),
                    status: TxStatus::Booked,
                    booking_date: start + Days::new((i / 20) as u64),
                    value_date: Some(start + Days::new((i / 20) as u64)),
                    transaction_date: None,
                    amount: Decimal::from_str(&format!("-{}.{:02}", i % 300, i % 100)).unwrap(),
                    currency: "EUR".into(),
                    original_amount: None,
                    original_currency: None,
                    raw_label: label.clone(),
                    label,
                    counterparty_name: Some("Some Shop Ltd".into()),
                    counterparty_iban: None,
                    remittance_info: Some("Card payment 1234".into()),
                    bank_code: Some("POS".into()),
                    running_balance: Some(Decimal::from(10_000 - i as i64)),
                    raw: serde_json::json!({"id": i, "trnType": "POS", "amount": -1}).to_string(),
                }
            })
            .collect();
        let commit = WindowCommit {
            lease,
            account_id: account.id,
            now,
            inserts,
            updates: vec![],
            voids: vec![],
            touch: vec![],
            balances: vec![],
            checkpoint: Checkpoint::default(),
        };
        store.commit_window(&commit).await.unwrap();
    }
}
