//! How fast `commit_window` writes compared with a raw multi-row INSERT of the
//! same rows, on SQLite (and on PostgreSQL when a URL is given).
//!
//! ```text
//! cargo run --release -p bankbridge-bench --example commit_bench -- [ROWS] [WINDOWS]
//! BANKBRIDGE_BENCH_PG_URL=postgres://… cargo run --release -p bankbridge-bench --example commit_bench
//! ```
//!
//! Prints a table; it asserts nothing about time.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bankbridge_bench::raw::{self as bench, RAW_COLUMNS, RAW_PER_ROW, RawWindow};
use bankbridge_core::{Balance, BalanceKind};
use bankbridge_store::{Checkpoint, LeaseToken, SqliteStore, Store, TxWrite, WindowCommit};
use chrono::{TimeZone, Utc};
use rust_decimal::Decimal;
use sqlx::{Arguments, Connection};

/// Plain multi-row INSERTs into a fresh SQLite file, one transaction per window.
async fn raw_sqlite(
    path: &std::path::Path,
    conn_id: i64,
    acc: i64,
    rows: &[TxWrite],
    window: usize,
) -> Result<Duration, Box<dyn std::error::Error + Send + Sync>> {
    let windows: Vec<RawWindow<'_>> = rows
        .chunks(window)
        .map(|rows| RawWindow {
            connection_id: conn_id,
            account_id: acc,
            rows,
        })
        .collect();
    Ok(bench::raw_sqlite_insert(path, &windows).await?)
}

/// Plain multi-row INSERTs on PostgreSQL, one transaction per window.
async fn raw_pg(
    url: &str,
    conn_id: i64,
    acc: i64,
    rows: &[TxWrite],
    window: usize,
) -> Result<Duration, Box<dyn std::error::Error + Send + Sync>> {
    let mut c = sqlx::PgConnection::connect(url).await?;
    let per_stmt = 60_000 / RAW_PER_ROW;
    let now = Utc::now();
    let mut sql_by_len: std::collections::HashMap<usize, String> = std::collections::HashMap::new();
    let started = Instant::now();
    for win in rows.chunks(window) {
        let mut tx = c.begin().await?;
        for chunk in win.chunks(per_stmt) {
            let sql = sql_by_len
                .entry(chunk.len())
                .or_insert_with(|| {
                    let mut sql = format!("INSERT INTO transactions ({RAW_COLUMNS}) VALUES ");
                    for r in 0..chunk.len() {
                        let ps: Vec<String> = (1..=RAW_PER_ROW)
                            .map(|k| {
                                let n = r * RAW_PER_ROW + k;
                                if k == 21 {
                                    format!("${n}::json")
                                } else {
                                    format!("${n}")
                                }
                            })
                            .collect();
                        sql.push_str(if r == 0 { "(" } else { ",(" });
                        sql.push_str(&ps.join(","));
                        sql.push(')');
                    }
                    sql
                })
                .as_str();
            let mut a = sqlx::postgres::PgArguments::default();
            for w in chunk {
                let search = bench::search_text(w);
                a.add(conn_id)?;
                a.add(acc)?;
                a.add(w.provider_id.as_str())?;
                a.add(w.pending_provider_id.as_deref())?;
                a.add(w.fingerprint.as_str())?;
                a.add(w.status.as_str())?;
                a.add(w.booking_date)?;
                a.add(w.value_date)?;
                a.add(w.transaction_date)?;
                a.add(w.amount)?;
                a.add(w.currency.as_str())?;
                a.add(w.original_amount)?;
                a.add(w.original_currency.as_deref())?;
                a.add(w.raw_label.as_str())?;
                a.add(w.label.as_str())?;
                a.add(w.counterparty_name.as_deref())?;
                a.add(w.counterparty_iban.as_deref())?;
                a.add(w.remittance_info.as_deref())?;
                a.add(w.bank_code.as_deref())?;
                a.add(w.running_balance)?;
                a.add(w.raw.as_str())?;
                a.add(search)?;
                a.add(now)?;
                a.add(now)?;
                a.add(now)?;
            }
            sqlx::query_with(sql, a).execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }
    let took = started.elapsed();
    c.close().await?;
    Ok(took)
}

async fn setup(
    store: &dyn Store,
    name: &str,
) -> Result<(LeaseToken, i64), Box<dyn std::error::Error + Send + Sync>> {
    Ok(bench::bench_account(store, name).await?)
}

async fn via_commit_window(
    store: &dyn Store,
    lease: LeaseToken,
    acc: i64,
    rows: &[TxWrite],
    window: usize,
) -> Result<Duration, Box<dyn std::error::Error + Send + Sync>> {
    // The windows are built before the clock starts: only the store's work is timed.
    let mut commits = Vec::new();
    for (i, win) in rows.chunks(window).enumerate() {
        let last = win.last().map(|w| w.booking_date).unwrap_or_default();
        commits.push(WindowCommit {
            lease,
            account_id: acc,
            now: Utc
                .timestamp_opt(1_700_000_000 + i as i64, 0)
                .single()
                .unwrap_or_default(),
            inserts: win.to_vec(),
            updates: Vec::new(),
            voids: Vec::new(),
            touch: Vec::new(),
            balances: vec![Balance {
                kind: BalanceKind::ClosingBooked,
                amount: Decimal::from_str("1000.00")? + Decimal::from(i as i64),
                currency: "BGN".parse()?,
                reference_date: last,
            }],
            checkpoint: Checkpoint {
                oldest_covered: rows.first().map(|w| w.booking_date),
                newest_covered: Some(last),
                backfill_done: false,
                empty_streak: 0,
            },
        });
    }
    let started = Instant::now();
    for commit in &commits {
        store.commit_window(commit).await?;
    }
    let took = started.elapsed();
    let totals = store.account_totals(acc).await?;
    assert_eq!(totals.booked_count as usize, rows.len());
    Ok(took)
}

fn rate(n: usize, d: Duration) -> String {
    format!("{:>9.0} rows/s", n as f64 / d.as_secs_f64().max(1e-9))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(300_000);
    let windows: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(200)
        .max(1);
    let window = n.div_ceil(windows).max(1);
    let rows = bench::synthetic_rows(0..n, 100);
    let dir = tempfile::tempdir()?;
    println!(
        "{n} rows in windows of {window} ({} windows)",
        n.div_ceil(window)
    );
    println!(
        "{:<44} {:>10} {:>16} {:>8}",
        "backend / method", "seconds", "rate", "ratio"
    );

    // Raw first, then commit_window, then raw again: the file system cache is
    // warm for both and the order effect shows.
    let raw_store = SqliteStore::open(&dir.path().join("raw.db")).await?;
    let (rc, ra) = setup(&raw_store, "raw").await?;
    raw_store.close().await;
    let raw = raw_sqlite(
        &dir.path().join("raw.db"),
        rc.connection_id,
        ra,
        &rows,
        window,
    )
    .await?;

    let store = SqliteStore::open(&dir.path().join("store.db")).await?;
    let (c, a) = setup(&store, "store").await?;
    let commit = via_commit_window(&store, c, a, &rows, window).await?;
    store.close().await;

    let raw2_store = SqliteStore::open(&dir.path().join("raw2.db")).await?;
    let (rc, ra) = setup(&raw2_store, "raw").await?;
    raw2_store.close().await;
    let raw2 = raw_sqlite(
        &dir.path().join("raw2.db"),
        rc.connection_id,
        ra,
        &rows,
        window,
    )
    .await?;
    let raw_best = raw.min(raw2);

    for (name, d) in [
        ("sqlite raw multi-row INSERT (run 1)", raw),
        ("sqlite raw multi-row INSERT (run 2)", raw2),
        ("sqlite commit_window", commit),
    ] {
        println!(
            "{:<44} {:>10.3} {:>16} {:>7.2}x",
            name,
            d.as_secs_f64(),
            rate(n, d),
            d.as_secs_f64() / raw_best.as_secs_f64().max(1e-9)
        );
    }

    if let Ok(url) = std::env::var("BANKBRIDGE_BENCH_PG_URL") {
        let pg: Arc<dyn Store> = bankbridge_store::open(&url).await?;
        let name = format!("bench-raw-{}", std::process::id());
        let (c, a) = setup(pg.as_ref(), &name).await?;
        let raw = raw_pg(&url, c.connection_id, a, &rows, window).await?;
        pg.delete_connection(c.connection_id).await?;
        let name = format!("bench-{}", std::process::id());
        let (c, a) = setup(pg.as_ref(), &name).await?;
        let d = via_commit_window(pg.as_ref(), c, a, &rows, window).await?;
        pg.delete_connection(c.connection_id).await?;
        for (name, d) in [
            ("postgres raw multi-row INSERT", raw),
            ("postgres commit_window", d),
        ] {
            println!(
                "{:<44} {:>10.3} {:>16} {:>7.2}x",
                name,
                d.as_secs_f64(),
                rate(n, d),
                d.as_secs_f64() / raw.as_secs_f64().max(1e-9)
            );
        }
    }
    Ok(())
}
