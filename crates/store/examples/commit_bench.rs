//! How fast `commit_window` writes compared with a raw multi-row INSERT of the
//! same rows, on SQLite (and on PostgreSQL when a URL is given).
//!
//! ```text
//! cargo run --release -p bankbridge-store --example commit_bench -- [ROWS] [WINDOWS]
//! BANKBRIDGE_BENCH_PG_URL=postgres://… cargo run --release -p bankbridge-store --example commit_bench
//! ```
//!
//! Prints a table; it asserts nothing about time.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bankbridge_core::{Balance, BalanceKind, FetchedAccount, TxStatus};
use bankbridge_store::{Checkpoint, NewConnection, SqliteStore, Store, TxWrite, WindowCommit};
use chrono::{NaiveDate, TimeZone, Utc};
use rust_decimal::Decimal;
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Arguments, Connection, Executor};

fn synthetic_rows(n: usize) -> Vec<TxWrite> {
    let start = NaiveDate::from_ymd_opt(2015, 1, 1).unwrap_or_default();
    let labels = [
        "POS PURCHASE  LIDL BULGARIA  SOFIA",
        "ПЛАЩАНЕ С КАРТА  ФАНТАСТИКО  СОФИЯ",
        "TRANSFER TO SAVINGS",
        "SALARY ACME LTD 04/2024",
        "ATM WITHDRAWAL  SOFIA CENTER",
    ];
    (0..n)
        .map(|i| {
            let day = start + chrono::Duration::days((i / 100) as i64);
            let cents = ((i * 7919) % 200_000) as i64 - 100_000;
            let amount = Decimal::new(cents, 2);
            let raw_label = labels[i % labels.len()];
            TxWrite {
                provider_id: format!("TRN{i:010}"),
                pending_provider_id: None,
                fingerprint: format!("{:024x}", (i as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                status: TxStatus::Booked,
                booking_date: day,
                value_date: Some(day),
                transaction_date: None,
                amount,
                currency: "BGN".into(),
                original_amount: None,
                original_currency: None,
                raw_label: raw_label.to_owned(),
                label: raw_label.split_whitespace().collect::<Vec<_>>().join(" "),
                counterparty_name: (i % 3 == 0).then(|| "ACME Ltd".to_owned()),
                counterparty_iban: None,
                remittance_info: (i % 4 == 0).then(|| format!("invoice {i}")),
                bank_code: Some("POS/17".into()),
                running_balance: None,
                raw: format!(
                    r#"{{"id":"TRN{i:010}","dateTime":"{day}T10:00:00","amount":"{amount}","ccy":"BGN","descr":"{raw_label}","trnType":"POS","trnCode":"17"}}"#
                ),
            }
        })
        .collect()
}

fn lower(s: &str) -> String {
    s.to_lowercase()
}

const RAW_COLUMNS: &str = "connection_id, account_id, provider_id, pending_provider_id, fingerprint, status, \
     booking_date, value_date, transaction_date, amount, currency, original_amount, original_currency, \
     raw_label, label, counterparty_name, counterparty_iban, remittance_info, bank_code, running_balance, raw, \
     search_text, first_seen, last_seen, updated_at";
const RAW_PER_ROW: usize = 25;

fn raw_insert_sql(rows: usize) -> String {
    let one = format!("({})", vec!["?"; RAW_PER_ROW].join(","));
    format!(
        "INSERT INTO transactions ({RAW_COLUMNS}) VALUES {}",
        vec![one; rows].join(",")
    )
}

/// Plain multi-row INSERTs (as many rows per statement as SQLite's parameter
/// limit allows), one transaction per window.
async fn raw_sqlite(
    path: &std::path::Path,
    conn_id: i64,
    acc: i64,
    rows: &[TxWrite],
    window: usize,
) -> Result<Duration, Box<dyn std::error::Error + Send + Sync>> {
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal);
    let mut c = sqlx::SqliteConnection::connect_with(&opts).await?;
    let per_stmt = 32_766 / RAW_PER_ROW;
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false);
    let mut sql_by_len: std::collections::HashMap<usize, String> = std::collections::HashMap::new();
    let started = Instant::now();
    for win in rows.chunks(window) {
        let mut tx = c.begin().await?;
        for chunk in win.chunks(per_stmt) {
            let sql = sql_by_len
                .entry(chunk.len())
                .or_insert_with(|| raw_insert_sql(chunk.len()))
                .as_str();
            let mut a = SqliteArguments::default();
            for w in chunk {
                let search = lower(&format!(
                    "{}\u{1f}{}\u{1f}{}\u{1f}{}",
                    w.label,
                    w.raw_label,
                    w.counterparty_name.as_deref().unwrap_or(""),
                    w.remittance_info.as_deref().unwrap_or("")
                ));
                a.add(conn_id)?;
                a.add(acc)?;
                a.add(w.provider_id.as_str())?;
                a.add(w.pending_provider_id.as_deref())?;
                a.add(w.fingerprint.as_str())?;
                a.add(w.status.as_str())?;
                a.add(w.booking_date)?;
                a.add(w.value_date)?;
                a.add(w.transaction_date)?;
                a.add(w.amount.to_string())?;
                a.add(w.currency.as_str())?;
                a.add(w.original_amount.map(|d| d.to_string()))?;
                a.add(w.original_currency.as_deref())?;
                a.add(w.raw_label.as_str())?;
                a.add(w.label.as_str())?;
                a.add(w.counterparty_name.as_deref())?;
                a.add(w.counterparty_iban.as_deref())?;
                a.add(w.remittance_info.as_deref())?;
                a.add(w.bank_code.as_deref())?;
                a.add(w.running_balance.map(|d| d.to_string()))?;
                a.add(w.raw.as_str())?;
                a.add(search)?;
                a.add(now.as_str())?;
                a.add(now.as_str())?;
                a.add(now.as_str())?;
            }
            sqlx::query_with(sql, a).execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }
    let took = started.elapsed();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM transactions WHERE account_id = ?")
        .bind(acc)
        .fetch_one(&mut c)
        .await?;
    assert_eq!(n as usize, rows.len());
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)").await?;
    c.close().await?;
    Ok(took)
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
                let search = lower(&format!(
                    "{}\u{1f}{}\u{1f}{}\u{1f}{}",
                    w.label,
                    w.raw_label,
                    w.counterparty_name.as_deref().unwrap_or(""),
                    w.remittance_info.as_deref().unwrap_or("")
                ));
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
) -> Result<(i64, i64), Box<dyn std::error::Error + Send + Sync>> {
    let c = store
        .create_connection(&NewConnection {
            name: name.into(),
            connector: "bench".into(),
            settings: serde_json::json!({}),
            credentials_sealed: vec![0],
        })
        .await?;
    let a = store
        .upsert_account(
            c.id,
            &FetchedAccount {
                provider_id: "ACC".into(),
                iban: None,
                currency: "BGN".parse()?,
                name: None,
                kind: None,
                raw: serde_json::json!({}),
            },
            Utc::now(),
        )
        .await?;
    Ok((c.id, a.id))
}

async fn via_commit_window(
    store: &dyn Store,
    conn_id: i64,
    acc: i64,
    rows: &[TxWrite],
    window: usize,
) -> Result<Duration, Box<dyn std::error::Error + Send + Sync>> {
    // The windows are built before the clock starts: only the store's work is timed.
    let mut commits = Vec::new();
    for (i, win) in rows.chunks(window).enumerate() {
        let last = win.last().map(|w| w.booking_date).unwrap_or_default();
        commits.push(WindowCommit {
            connection_id: conn_id,
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
    let rows = synthetic_rows(n);
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
    let raw = raw_sqlite(&dir.path().join("raw.db"), rc, ra, &rows, window).await?;

    let store = SqliteStore::open(&dir.path().join("store.db")).await?;
    let (c, a) = setup(&store, "store").await?;
    let commit = via_commit_window(&store, c, a, &rows, window).await?;
    store.close().await;

    let raw2_store = SqliteStore::open(&dir.path().join("raw2.db")).await?;
    let (rc, ra) = setup(&raw2_store, "raw").await?;
    raw2_store.close().await;
    let raw2 = raw_sqlite(&dir.path().join("raw2.db"), rc, ra, &rows, window).await?;
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
        let raw = raw_pg(&url, c, a, &rows, window).await?;
        pg.delete_connection(c).await?;
        let name = format!("bench-{}", std::process::id());
        let (c, a) = setup(pg.as_ref(), &name).await?;
        let d = via_commit_window(pg.as_ref(), c, a, &rows, window).await?;
        pg.delete_connection(c).await?;
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
