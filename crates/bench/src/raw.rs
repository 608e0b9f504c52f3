//! Benchmark helpers shared by `examples/commit_bench.rs` and `bankbridge
//! bench`: synthetic rows, and the raw SQLite bulk insert that
//! [`bankbridge_store::BankWrites::commit_window`] is measured against.
//!
//! Nothing here is used by a sync; it writes bank data without a checkpoint,
//! so it only ever targets a throwaway database.
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

use bankbridge_core::{FetchedAccount, TxStatus};
use chrono::{NaiveDate, Utc};
use rust_decimal::Decimal;
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Arguments, Connection, Executor};

use bankbridge_store::{Lease, LeaseToken, NewConnection, Result, Store, StoreError, TxWrite};

/// Columns a raw insert fills, in the order of its parameters.
pub const RAW_COLUMNS: &str = "connection_id, account_id, provider_id, pending_provider_id, fingerprint, status, \
     booking_date, value_date, transaction_date, amount, currency, original_amount, original_currency, \
     raw_label, label, counterparty_name, counterparty_iban, remittance_info, bank_code, running_balance, raw, \
     search_text, first_seen, last_seen, updated_at";
/// Parameters per row of a raw insert.
pub const RAW_PER_ROW: usize = 25;
/// SQLite's default limit on the parameters of one statement.
const SQLITE_MAX_PARAMS: usize = 32_766;

/// Rows `range` of a deterministic synthetic data set: `per_day` rows a day
/// from 2015-01-01, Latin and Cyrillic labels, booked, in BGN.
pub fn synthetic_rows(range: Range<usize>, per_day: usize) -> Vec<TxWrite> {
    let start = NaiveDate::from_ymd_opt(2015, 1, 1).unwrap_or_default();
    let per_day = per_day.max(1);
    let labels = [
        "POS PURCHASE  LIDL BULGARIA  SOFIA",
        "ПЛАЩАНЕ С КАРТА  ФАНТАСТИКО  СОФИЯ",
        "TRANSFER TO SAVINGS",
        "SALARY ACME LTD 04/2024",
        "ATM WITHDRAWAL  SOFIA CENTER",
    ];
    range
        .map(|i| {
            let day = start + chrono::Duration::days((i / per_day) as i64);
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

/// The `search_text` column the store writes for a row.
pub fn search_text(w: &TxWrite) -> String {
    bankbridge_store::testing::search_text(w)
}

/// A connection named `name` with one BGN account, ready to hold rows, and
/// its sync lease held for a day (writes of bank data carry it). Returns
/// (the lease, account id).
pub async fn bench_account(store: &dyn Store, name: &str) -> Result<(LeaseToken, i64)> {
    let c = store
        .create_connection(&NewConnection {
            name: name.into(),
            connector: "bench".into(),
            settings: serde_json::json!({}),
            credentials_sealed: vec![0],
        })
        .await?;
    let currency = "BGN"
        .parse()
        .map_err(|_| StoreError::Corrupt("currency BGN".into()))?;
    let now = Utc::now();
    let lease = match store
        .acquire_sync_lease(c.id, "bench", now, now + chrono::Duration::days(1))
        .await?
    {
        Lease::Acquired(lease) => lease,
        Lease::Held { owner, .. } => {
            return Err(StoreError::Conflict(format!(
                "the new connection {name:?} is already leased by {owner}"
            )));
        }
    };
    let a = store
        .upsert_account(
            lease,
            &FetchedAccount {
                provider_id: "ACC".into(),
                iban: None,
                currency,
                name: None,
                kind: None,
                raw: serde_json::json!({}),
            },
            Utc::now(),
        )
        .await?;
    Ok((lease, a.id))
}

/// The rows of one account to insert in one database transaction.
#[derive(Clone, Copy, Debug)]
pub struct RawWindow<'a> {
    pub connection_id: i64,
    pub account_id: i64,
    pub rows: &'a [TxWrite],
}

fn raw_insert_sql(rows: usize) -> String {
    let one = format!("({})", vec!["?"; RAW_PER_ROW].join(","));
    format!(
        "INSERT INTO transactions ({RAW_COLUMNS}) VALUES {}",
        vec![one; rows].join(",")
    )
}

/// The baseline: plain multi-row INSERTs (as many rows per statement as
/// SQLite's parameter limit allows), one database transaction per window, no
/// reads and no diff, on the SQLite file at `path` (which must already hold
/// the bankbridge schema and the windows' accounts, e.g. made by
/// [`bankbridge_store::SqliteStore::open`] and then closed).
///
/// Returns the time of the inserts alone (connecting, counting and the final
/// WAL checkpoint excluded). Fails if the file does not then hold every row.
pub async fn raw_sqlite_insert(path: &Path, windows: &[RawWindow<'_>]) -> Result<Duration> {
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal);
    let mut c = sqlx::SqliteConnection::connect_with(&opts).await?;
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM transactions")
        .fetch_one(&mut c)
        .await?;
    let per_stmt = SQLITE_MAX_PARAMS / RAW_PER_ROW;
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false);
    let mut sql_by_len: HashMap<usize, String> = HashMap::new();
    let encode = |e| StoreError::Database(sqlx::Error::Encode(e));
    let started = Instant::now();
    for win in windows {
        if win.rows.is_empty() {
            continue;
        }
        let mut tx = c.begin().await?;
        for chunk in win.rows.chunks(per_stmt) {
            let sql = sql_by_len
                .entry(chunk.len())
                .or_insert_with(|| raw_insert_sql(chunk.len()))
                .as_str();
            let mut a = SqliteArguments::default();
            for w in chunk {
                a.add(win.connection_id).map_err(encode)?;
                a.add(win.account_id).map_err(encode)?;
                a.add(w.provider_id.as_str()).map_err(encode)?;
                a.add(w.pending_provider_id.as_deref()).map_err(encode)?;
                a.add(w.fingerprint.as_str()).map_err(encode)?;
                a.add(w.status.as_str()).map_err(encode)?;
                a.add(w.booking_date).map_err(encode)?;
                a.add(w.value_date).map_err(encode)?;
                a.add(w.transaction_date).map_err(encode)?;
                a.add(w.amount.to_string()).map_err(encode)?;
                a.add(w.currency.as_str()).map_err(encode)?;
                a.add(w.original_amount.map(|d| d.to_string()))
                    .map_err(encode)?;
                a.add(w.original_currency.as_deref()).map_err(encode)?;
                a.add(w.raw_label.as_str()).map_err(encode)?;
                a.add(w.label.as_str()).map_err(encode)?;
                a.add(w.counterparty_name.as_deref()).map_err(encode)?;
                a.add(w.counterparty_iban.as_deref()).map_err(encode)?;
                a.add(w.remittance_info.as_deref()).map_err(encode)?;
                a.add(w.bank_code.as_deref()).map_err(encode)?;
                a.add(w.running_balance.map(|d| d.to_string()))
                    .map_err(encode)?;
                a.add(w.raw.as_str()).map_err(encode)?;
                a.add(search_text(w)).map_err(encode)?;
                a.add(now.as_str()).map_err(encode)?;
                a.add(now.as_str()).map_err(encode)?;
                a.add(now.as_str()).map_err(encode)?;
            }
            sqlx::query_with(sql, a).execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }
    let took = started.elapsed();
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM transactions")
        .fetch_one(&mut c)
        .await?;
    let expected: usize = windows.iter().map(|w| w.rows.len()).sum();
    if (after - before) as usize != expected {
        return Err(StoreError::Corrupt(format!(
            "raw insert of {expected} rows left {} new rows",
            after - before
        )));
    }
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)").await?;
    c.close().await?;
    Ok(took)
}
