//! PostgreSQL backend, for several `serve` instances sharing one database.
//!
//! Money is NUMERIC, dates DATE, instants TIMESTAMPTZ. A window's inserts and
//! updates each go in one statement over `UNNEST`ed arrays: one prepared
//! statement whatever the number of rows, and one round trip.

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use bankbridge_core::{
    Account, Balance, BalanceKind, Currency, Document, FetchedAccount, Transaction,
};
use chrono::{DateTime, NaiveDate, Utc};
use futures::stream::BoxStream;
use futures::{SinkExt, StreamExt};
use rust_decimal::Decimal;
use sqlx::postgres::{PgArguments, PgPool, PgPoolOptions, PgRow};
use sqlx::{Arguments, Row};

use crate::checks::{self, CheckRun, CheckRunQuery, CheckStep, NewCheckRun};
use crate::common::{
    self, Arg, Dialect, PreparedTx, corrupt, encode_err, is_foreign_key_violation,
    is_unique_violation, micros, opt_micros,
};
use crate::common::{CardAuditRow, CardRow, InstitutionRow};
use crate::documents::{self, DocumentQuery, NewDocument, SavedDocument};
use crate::{
    AccountTotals, Card, CardAuditEntry, CardAuditQuery, CardStatus, CardUpdate, Checkpoint,
    CommitStats, Connection, ConnectionFootprint, ConnectionUpdate, Institution, Lease, LeaseToken,
    NewCard, NewConnection, NewInstitution, Result, Scope, StoreError, StoredBalance, SyncJob,
    SyncOutcome, TokenRecord, TxQuery, WindowCommit, codec,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Rows per INSERT … SELECT FROM UNNEST statement (bounds one message's size).
const INSERT_CHUNK: usize = 5_000;

pub struct PgStore {
    location: String,
    pool: PgPool,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connect to `url` (`postgres://user:pass@host:port/db`) and bring the
    /// schema up to date.
    pub async fn connect(url: &str) -> Result<Self> {
        let location = common::redact_url(url);
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(30))
            .connect(url)
            .await
            .map_err(|e| StoreError::Open {
                location: location.clone(),
                detail: format!(
                    "{e} (check the URL, that the server runs and that the database exists)"
                ),
            })?;
        if let Err(e) = MIGRATOR.run(&pool).await {
            pool.close().await;
            return Err(common::migrate_error(&location, &e));
        }
        Ok(Self { location, pool })
    }

    /// Close the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    // What `shared_store!` reaches for (see `shared.rs`).

    const NAME: &'static str = "postgres";
    const DIALECT: Dialect = Dialect::Postgres;
    const JSON_CAST: &'static str = "::json";
    const JSONB_CAST: &'static str = "::jsonb";
    const BYTEA_CAST: &'static str = "::bytea";

    fn reads(&self) -> &PgPool {
        &self.pool
    }

    fn writes(&self) -> &PgPool {
        &self.pool
    }

    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        Ok(self.pool.begin().await?)
    }

    /// One snapshot for several reads.
    async fn read_snapshot(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        Ok(self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?)
    }
}

/// Money is NUMERIC here.
fn decimal_at(r: &PgRow, i: usize) -> Result<Decimal> {
    Ok(r.try_get(i)?)
}

fn opt_decimal_at(r: &PgRow, i: usize) -> Result<Option<Decimal>> {
    Ok(r.try_get(i)?)
}

// ---------------------------------------------------------------- decoding

const CONNECTION_COLUMNS: &str = "id, name, connector, settings::text, credentials_sealed, session_sealed, \
     created_at, last_sync_at, last_sync_status, last_sync_error, credentials_version, \
     last_sync_credentials_version, lease_owner, lease_until, consent_status, consent_valid_until, consent_warned_for";

fn tx_columns() -> &'static str {
    static COLUMNS: OnceLock<String> = OnceLock::new();
    COLUMNS.get_or_init(|| common::tx_columns("raw::text"))
}

const JOB_COLUMNS: &str =
    "id, connection_id, status, created_at, started_at, finished_at, summary::text, error";

/// Write a row of [`tx_columns`] as the JSON object of its `Transaction`;
/// returns its key.
fn tx_json_row(r: &PgRow, out: &mut Vec<u8>) -> Result<(NaiveDate, i64)> {
    crate::tx_json::write_transaction(r, out)?;
    Ok((r.try_get(7)?, r.try_get(0)?))
}

/// Each value decoded in place from the row's wire buffer.
impl crate::tx_json::TxRow for PgRow {
    fn int(&self, column: usize) -> Result<i64> {
        Ok(self.try_get(column)?)
    }

    fn text(&self, out: &mut Vec<u8>, column: usize) -> Result<()> {
        let text: Option<&str> = self.try_get(column)?;
        crate::tx_json::opt_string_bytes(out, text.map(str::as_bytes));
        Ok(())
    }

    fn date(&self, out: &mut Vec<u8>, column: usize) -> Result<()> {
        crate::tx_json::opt_date(out, self.try_get(column)?);
        Ok(())
    }

    fn currency(&self, column: usize) -> Result<Option<Currency>> {
        let code: Option<&str> = self.try_get(column)?;
        code.map(codec::currency).transpose()
    }

    fn money(&self, out: &mut Vec<u8>, column: usize, currency: Currency) -> Result<()> {
        match self.try_get::<Option<Decimal>, _>(column)? {
            Some(amount) => crate::tx_json::money(out, amount, currency),
            None => out.extend_from_slice(b"null"),
        }
        Ok(())
    }

    fn instant(&self, out: &mut Vec<u8>, column: usize) -> Result<()> {
        crate::tx_json::instant(out, self.try_get(column)?);
        Ok(())
    }

    fn raw(&self, out: &mut Vec<u8>, column: usize) -> Result<()> {
        // A `json` column holds valid JSON: PostgreSQL checks it on the way in.
        out.extend_from_slice(self.try_get::<&str, _>(column)?.as_bytes());
        Ok(())
    }
}

// ---------------------------------------------------------------- window writes

/// The transaction fields as parallel arrays, for `UNNEST`.
#[derive(Default)]
struct Columns<'a> {
    provider_id: Vec<&'a str>,
    pending_provider_id: Vec<Option<&'a str>>,
    fingerprint: Vec<&'a str>,
    status: Vec<&'a str>,
    booking_date: Vec<NaiveDate>,
    value_date: Vec<Option<NaiveDate>>,
    transaction_date: Vec<Option<NaiveDate>>,
    amount: Vec<Decimal>,
    currency: Vec<&'a str>,
    original_amount: Vec<Option<Decimal>>,
    original_currency: Vec<Option<&'a str>>,
    raw_label: Vec<&'a str>,
    label: Vec<&'a str>,
    counterparty_name: Vec<Option<&'a str>>,
    counterparty_iban: Vec<Option<&'a str>>,
    remittance_info: Vec<Option<&'a str>>,
    bank_code: Vec<Option<&'a str>>,
    running_balance: Vec<Option<Decimal>>,
    raw: Vec<&'a str>,
    search_text: Vec<&'a str>,
}

impl<'a> Columns<'a> {
    fn push(&mut self, p: &'a PreparedTx<'a>) {
        let w = p.w;
        self.provider_id.push(&w.provider_id);
        self.pending_provider_id
            .push(w.pending_provider_id.as_deref());
        self.fingerprint.push(&w.fingerprint);
        self.status.push(w.status.as_str());
        self.booking_date.push(w.booking_date);
        self.value_date.push(w.value_date);
        self.transaction_date.push(w.transaction_date);
        self.amount.push(w.amount);
        self.currency.push(p.currency.as_str());
        self.original_amount.push(w.original_amount);
        self.original_currency.push(p.original_currency_str());
        self.raw_label.push(&w.raw_label);
        self.label.push(&w.label);
        self.counterparty_name.push(w.counterparty_name.as_deref());
        self.counterparty_iban.push(w.counterparty_iban.as_deref());
        self.remittance_info.push(w.remittance_info.as_deref());
        self.bank_code.push(w.bank_code.as_deref());
        self.running_balance.push(w.running_balance);
        self.raw.push(&w.raw);
        self.search_text.push(&p.search_text);
    }

    fn add_to(self, args: &mut PgArguments) -> Result<()> {
        args.add(self.provider_id).map_err(encode_err)?;
        args.add(self.pending_provider_id).map_err(encode_err)?;
        args.add(self.fingerprint).map_err(encode_err)?;
        args.add(self.status).map_err(encode_err)?;
        args.add(self.booking_date).map_err(encode_err)?;
        args.add(self.value_date).map_err(encode_err)?;
        args.add(self.transaction_date).map_err(encode_err)?;
        args.add(self.amount).map_err(encode_err)?;
        args.add(self.currency).map_err(encode_err)?;
        args.add(self.original_amount).map_err(encode_err)?;
        args.add(self.original_currency).map_err(encode_err)?;
        args.add(self.raw_label).map_err(encode_err)?;
        args.add(self.label).map_err(encode_err)?;
        args.add(self.counterparty_name).map_err(encode_err)?;
        args.add(self.counterparty_iban).map_err(encode_err)?;
        args.add(self.remittance_info).map_err(encode_err)?;
        args.add(self.bank_code).map_err(encode_err)?;
        args.add(self.running_balance).map_err(encode_err)?;
        args.add(self.raw).map_err(encode_err)?;
        args.add(self.search_text).map_err(encode_err)?;
        Ok(())
    }
}

/// `UNNEST(...) AS u(...)` over the 20 field arrays, starting at parameter `$first`.
fn unnest_fields(first: usize) -> String {
    let types = [
        "text", "text", "text", "text", "date", "date", "date", "numeric", "text", "numeric",
        "text", "text", "text", "text", "text", "text", "text", "numeric", "text", "text",
    ];
    let params: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, t)| format!("${}::{t}[]", first + i))
        .collect();
    format!(
        "UNNEST({}) AS u(provider_id, pending_provider_id, fingerprint, status, booking_date, value_date, \
         transaction_date, amount, currency, original_amount, original_currency, raw_label, label, \
         counterparty_name, counterparty_iban, remittance_info, bank_code, running_balance, raw, search_text)",
        params.join(", ")
    )
}

const FIELD_LIST: &str = "provider_id, pending_provider_id, fingerprint, status, booking_date, value_date, \
     transaction_date, amount, currency, original_amount, original_currency, raw_label, label, \
     counterparty_name, counterparty_iban, remittance_info, bank_code, running_balance, raw, search_text";

fn insert_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        let select: Vec<String> =
            FIELD_LIST.split(',').map(str::trim).map(|c| if c == "raw" { "u.raw::json".into() } else { format!("u.{c}") }).collect();
        let sets: Vec<String> = FIELD_LIST
            .split(',')
            .map(str::trim)
            .filter(|c| *c != "provider_id")
            .chain(["last_seen", "updated_at"])
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect();
        format!(
            "INSERT INTO transactions (connection_id, account_id, {FIELD_LIST}, first_seen, last_seen, updated_at) \
             SELECT $1, $2, {}, $3, $3, $3 FROM {} \
             ON CONFLICT (account_id, provider_id) DO UPDATE SET {}",
            select.join(", "),
            unnest_fields(4),
            sets.join(", ")
        )
    })
}

fn update_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        let sets: Vec<String> = FIELD_LIST
            .split(',')
            .map(str::trim)
            .map(|c| {
                if c == "raw" {
                    "raw = u.raw::json".into()
                } else {
                    format!("{c} = u.{c}")
                }
            })
            .collect();
        // $1 now, $2 account, $3 row ids, then the 20 field arrays from $4,
        // all unnested side by side.
        format!(
            "UPDATE transactions AS t SET {}, updated_at = $1, last_seen = $1 \
             FROM (SELECT * FROM {} ) AS u \
             WHERE t.id = u.id AND t.account_id = $2",
            sets.join(", "),
            unnest_with_ids()
        )
    })
}

fn unnest_with_ids() -> String {
    let types = [
        "bigint", "text", "text", "text", "text", "date", "date", "date", "numeric", "text",
        "numeric", "text", "text", "text", "text", "text", "text", "text", "numeric", "text",
        "text",
    ];
    let params: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, t)| format!("${}::{t}[]", 3 + i))
        .collect();
    format!(
        "UNNEST({}) AS x(id, provider_id, pending_provider_id, fingerprint, status, booking_date, value_date, \
         transaction_date, amount, currency, original_amount, original_currency, raw_label, label, \
         counterparty_name, counterparty_iban, remittance_info, bank_code, running_balance, raw, search_text)",
        params.join(", ")
    )
}

crate::outbound::outbound_store!(PgStore, PgRow);
crate::instances::instances_store!(PgStore);
crate::bankid_orders::bankid_orders_store!(PgStore);
crate::check_work::check_work_store!(PgStore);

crate::shared::shared_store! {
    PgStore, PgRow;
    bank_data {
        async fn transactions_page_json(
            &self,
            query: &TxQuery,
            out: &mut Vec<u8>,
        ) -> Result<crate::JsonPage> {
            // One row more than the page tells whether another page follows.
            let probe = TxQuery {
                limit: query.limit.map(|l| l.saturating_add(1)),
                ..query.clone()
            };
            let (sql, args) = common::tx_query_sql(&probe, Self::DIALECT, tx_columns());
            let mut rows = sqlx::query_with(&sql, bind_args(args)?).fetch(self.reads());
            let mut page = crate::JsonPage::default();
            let mut last = None;
            while let Some(row) = rows.next().await {
                let row = row?;
                if query.limit.is_some_and(|l| page.rows >= l as usize) {
                    page.more_after = last;
                    break;
                }
                if page.rows > 0 {
                    out.push(b',');
                }
                last = Some(tx_json_row(&row, out)?);
                page.rows += 1;
            }
            Ok(page)
        }

        fn stream_transactions_json(
            &self,
            query: TxQuery,
        ) -> BoxStream<'_, Result<crate::JsonChunk>> {
            use crate::tx_json::{CHUNK_BYTES, ROW_SEPARATOR};
            let fresh = || crate::JsonChunk {
                bytes: Vec::with_capacity(CHUNK_BYTES + 4096),
                rows: 0,
            };
            common::produced_stream(2, move |mut sender| async move {
                let (sql, args) = common::tx_query_sql(&query, Self::DIALECT, tx_columns());
                let args = match bind_args(args) {
                    Ok(a) => a,
                    Err(e) => {
                        let _ = sender.send(Err(e)).await;
                        return;
                    }
                };
                let mut rows = sqlx::query_with(&sql, args).fetch(self.reads());
                let mut chunk = fresh();
                while let Some(row) = rows.next().await {
                    if chunk.rows > 0 {
                        chunk.bytes.extend_from_slice(ROW_SEPARATOR);
                    }
                    if let Err(e) = row
                        .map_err(StoreError::from)
                        .and_then(|r| tx_json_row(&r, &mut chunk.bytes))
                    {
                        let _ = sender.send(Err(e)).await;
                        return;
                    }
                    chunk.rows += 1;
                    if chunk.bytes.len() >= CHUNK_BYTES
                        && sender.send(Ok(std::mem::replace(&mut chunk, fresh()))).await.is_err()
                    {
                        return;
                    }
                }
                if chunk.rows > 0 {
                    let _ = sender.send(Ok(chunk)).await;
                }
            })
        }

    async fn months_changed_since(&self, since: DateTime<Utc>) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT to_char(booking_date, 'YYYY-MM') FROM transactions WHERE updated_at > $1 ORDER BY 1",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn flows(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        grouping: crate::FlowGrouping,
    ) -> Result<Vec<crate::Flow>> {
        let (key, account, group) = match grouping {
            crate::FlowGrouping::AccountMonth => {
                ("to_char(booking_date, 'YYYY-MM')", "account_id", "account_id, 1")
            }
            crate::FlowGrouping::Category => ("category", "NULL::BIGINT", "1"),
        };
        let sql = format!(
            "SELECT {key}, {account}, currency, \
             COALESCE(SUM(amount) FILTER (WHERE amount < 0), 0), \
             COALESCE(SUM(amount) FILTER (WHERE amount >= 0), 0), COUNT(*) \
             FROM transactions WHERE status = 'booked' AND booking_date >= $1 AND booking_date <= $2 \
             GROUP BY {group}, currency ORDER BY 1 NULLS FIRST, 2, 3"
        );
        let rows = sqlx::query(&sql)
            .bind(from)
            .bind(to)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let currency: String = r.try_get(2)?;
                let count: i64 = r.try_get(5)?;
                Ok(crate::Flow {
                    key: r.try_get(0)?,
                    account_id: r.try_get(1)?,
                    currency: codec::currency(&currency)?,
                    debit: r.try_get::<Decimal, _>(3)?.normalize(),
                    credit: r.try_get::<Decimal, _>(4)?.normalize(),
                    count: u64::try_from(count).unwrap_or(0),
                })
            })
            .collect()
    }

    async fn account_totals(&self, account_id: i64) -> Result<AccountTotals> {
        let (count, sum): (i64, Decimal) = sqlx::query_as(
            "SELECT count(*), COALESCE(SUM(amount), 0) FROM transactions WHERE account_id = $1 AND status = 'booked'",
        )
        .bind(account_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(AccountTotals {
            booked_count: u64::try_from(count).map_err(|_| corrupt(format!("count {count}")))?,
            booked_sum: sum,
        })
    }
    }
}

/// A window's new rows: one INSERT … SELECT FROM UNNEST per [`INSERT_CHUNK`] rows.
async fn insert_rows(
    tx: &mut sqlx::PgConnection,
    connection_id: i64,
    account_id: i64,
    now: DateTime<Utc>,
    rows: &[PreparedTx<'_>],
) -> Result<()> {
    for chunk in rows.chunks(INSERT_CHUNK) {
        let mut cols = Columns::default();
        for p in chunk {
            cols.push(p);
        }
        let mut args = PgArguments::default();
        args.add(connection_id).map_err(encode_err)?;
        args.add(account_id).map_err(encode_err)?;
        args.add(now).map_err(encode_err)?;
        cols.add_to(&mut args)?;
        sqlx::query_with(insert_sql(), args)
            .execute(&mut *tx)
            .await?;
    }

    Ok(())
}

/// A window's changed rows, all in one UPDATE joined to UNNESTed arrays.
async fn update_rows(
    tx: &mut sqlx::PgConnection,
    account_id: i64,
    now: DateTime<Utc>,
    updates: &[(i64, PreparedTx<'_>)],
) -> Result<()> {
    if !updates.is_empty() {
        let mut cols = Columns::default();
        let mut ids = Vec::with_capacity(updates.len());
        for (id, p) in updates {
            ids.push(*id);
            cols.push(p);
        }
        let mut args = PgArguments::default();
        args.add(now).map_err(encode_err)?;
        args.add(account_id).map_err(encode_err)?;
        args.add(&ids).map_err(encode_err)?;
        cols.add_to(&mut args)?;
        let done = sqlx::query_with(update_sql(), args)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() != ids.len() as u64 {
            let missing = missing_ids(tx, account_id, &ids).await?;
            return Err(common::not_in_account(
                "transaction to update",
                &missing,
                account_id,
            ));
        }
    }

    Ok(())
}

/// Money as bound here: NUMERIC.
fn money(d: Decimal) -> Decimal {
    d
}

/// A set of row ids as bound here: a BIGINT[].
fn id_set(ids: &[i64]) -> &[i64] {
    ids
}

/// `id` belongs to the set bound as parameter `param`.
fn in_id_set(param: usize) -> String {
    format!("= ANY(${param})")
}
