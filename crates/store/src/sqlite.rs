//! SQLite backend: one file, created on first use, WAL journal.
//!
//! Writes go through a pool of exactly one connection (SQLite allows one
//! writer at a time; serialising in-process avoids busy retries) and write
//! transactions start with `BEGIN IMMEDIATE`, so a second process waits on
//! `busy_timeout` instead of failing on a lock upgrade. Reads use a small
//! pool of their own and never wait for the writer (WAL).
//!
//! Money is stored as exact decimal TEXT, dates as `YYYY-MM-DD`, instants as
//! RFC 3339 UTC text (which sorts correctly as text).

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use bankbridge_core::{Account, Balance, BalanceKind, Document, FetchedAccount, Transaction};
use chrono::{DateTime, NaiveDate, Utc};
use futures::stream::BoxStream;
use futures::{SinkExt, StreamExt};
use rust_decimal::Decimal;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Arguments, Row};

use crate::checks::{self, CheckRun, CheckRunQuery, CheckStep, NewCheckRun};
use crate::common::{
    self, Arg, Dialect, PreparedTx, corrupt, encode_err, is_foreign_key_violation,
    is_unique_violation, micros, opt_micros,
};
use crate::common::{CardAuditRow, CardRow, InstitutionRow};
use crate::documents::{self, DocumentQuery, NewDocument, SavedDocument};
use crate::sqlite_json::JsonReaders;
use crate::{
    AccountTotals, Card, CardAuditEntry, CardAuditQuery, CardStatus, CardUpdate, Checkpoint,
    CommitStats, Connection, ConnectionFootprint, ConnectionUpdate, Institution, Lease, LeaseToken,
    NewCard, NewConnection, NewInstitution, Result, Scope, StoreError, StoredBalance, SyncJob,
    SyncOutcome, TokenRecord, TxQuery, WindowCommit, codec,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Rows per multi-row INSERT of a full batch: 25 bound values each, under
/// SQLite's 32,766-parameter limit. Smaller tails are cut into powers of two
/// so only a handful of statement shapes ever get prepared (and cached).
///
/// Parameters are anonymous (`?`): with numbered ones (`?NNN`) binding is
/// quadratic in the parameter count (SQLite looks each name up in a list).
const INSERT_BATCH: usize = 1024;
const INSERT_PARAMS_PER_ROW: usize = 25;
const READERS: u32 = 4;

pub struct SqliteStore {
    path: PathBuf,
    writer: SqlitePool,
    reader: SqlitePool,
    /// The JSON read path's own connections (see `sqlite_json`).
    json: Arc<JsonReaders>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn describe_open_error(location: &str, e: &sqlx::Error) -> String {
    if let sqlx::Error::Database(d) = e {
        let msg = d.message();
        if msg.contains("not a database") || d.code().as_deref() == Some("26") {
            return format!(
                "{location} is not a bankbridge SQLite database: file is not a database \
                 (point to another file, or move this one away)"
            );
        }
        if d.code().as_deref() == Some("14") {
            return format!("{msg}: check that the folder exists and is writable");
        }
        return msg.to_owned();
    }
    e.to_string()
}

/// An existing, non-empty file must start with SQLite's magic header. SQLite
/// itself would take a file shorter than one page for an empty database and
/// overwrite it.
fn check_header(path: &Path) -> std::result::Result<(), String> {
    use std::io::Read;
    const MAGIC: &[u8; 16] = b"SQLite format 3\0";
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot read the file: {e}")),
    };
    let mut head = Vec::with_capacity(16);
    file.by_ref()
        .take(16)
        .read_to_end(&mut head)
        .map_err(|e| format!("cannot read the file: {e}"))?;
    if head.is_empty() || head == MAGIC {
        return Ok(());
    }
    Err(format!(
        "{} is not a bankbridge SQLite database: file is not a database \
         (point to another file, or move this one away)",
        path.display()
    ))
}

/// Create `dir` (and its parents) readable by its owner only; an existing
/// folder is left as it is.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Create the database file with mode 0600 when missing (SQLite opens an
/// empty file as an empty database).
fn new_private_file(path: &Path) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Drop group and other permissions of `path`, if it exists.
fn owner_only(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = match std::fs::metadata(path) {
            Ok(m) => m.permissions().mode(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if mode & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))?;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

impl SqliteStore {
    /// Open (creating it and its parent folders if needed) the database file
    /// at `path` and bring its schema up to date.
    pub async fn open(path: &Path) -> Result<Self> {
        let location = path.display().to_string();
        let open_err = |detail: String| StoreError::Open {
            location: location.clone(),
            detail,
        };
        if path.as_os_str().is_empty() {
            return Err(open_err(
                "the path is empty: give the file to keep the database in".into(),
            ));
        }
        if path.is_dir() {
            return Err(open_err(
                "it is a folder: give a file path such as bankbridge.db".into(),
            ));
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            private_dir(parent).map_err(|e| {
                open_err(format!(
                    "cannot create the folder {}: {e}",
                    parent.display()
                ))
            })?;
        }
        check_header(path).map_err(open_err)?;
        new_private_file(path).map_err(|e| open_err(format!("cannot create the file: {e}")))?;
        let base = SqliteConnectOptions::new()
            .filename(path)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5))
            .synchronous(SqliteSynchronous::Normal)
            .statement_cache_capacity(200);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(
                base.clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal),
            )
            .await
            .map_err(|e| open_err(describe_open_error(&location, &e)))?;

        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )
        .fetch_all(&writer)
        .await
        .map_err(|e| open_err(describe_open_error(&location, &e)))?;
        if !tables.is_empty() && !tables.iter().any(|t| t == "_sqlx_migrations") {
            writer.close().await;
            return Err(open_err(format!(
                "{location} is a SQLite database of another program (it has tables such as {:?} but no \
                 bankbridge schema); bankbridge will not write into it: choose another file",
                tables[0]
            )));
        }
        if let Err(e) = MIGRATOR.run(&writer).await {
            writer.close().await;
            return Err(common::migrate_error(&location, &e));
        }
        // Ours now: bank data is for its owner only. SQLite gives -wal and
        // -shm the database file's mode; files an older version left may
        // be wider.
        for suffix in ["", "-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            if let Err(e) = owner_only(Path::new(&side)) {
                tracing::warn!(file = ?side, error = %e, "cannot make the file private");
            }
        }
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(base)
            .await
            .map_err(|e| open_err(describe_open_error(&location, &e)))?;
        Ok(Self {
            path: path.to_owned(),
            writer,
            reader,
            json: JsonReaders::new(path),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Close both pools, waiting for connections to be returned (checkpoints the WAL).
    pub async fn close(&self) {
        self.json.close();
        self.reader.close().await;
        self.writer.close().await;
    }

    // What `shared_store!` reaches for (see `shared.rs`).

    const NAME: &'static str = "sqlite";
    const DIALECT: Dialect = Dialect::Sqlite;
    const JSON_CAST: &'static str = "";
    const JSONB_CAST: &'static str = "";
    const BYTEA_CAST: &'static str = "";

    fn reads(&self) -> &SqlitePool {
        &self.reader
    }

    fn writes(&self) -> &SqlitePool {
        &self.writer
    }

    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// One read transaction: one WAL snapshot.
    async fn read_snapshot(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.reader.begin().await?)
    }
}

/// Money is exact decimal TEXT here.
fn decimal_at(r: &SqliteRow, i: usize) -> Result<Decimal> {
    codec::decimal(r.try_get(i)?)
}

fn opt_decimal_at(r: &SqliteRow, i: usize) -> Result<Option<Decimal>> {
    common::opt_decimal(r.try_get(i)?)
}

// ---------------------------------------------------------------- decoding

const CONNECTION_COLUMNS: &str = "id, name, connector, settings, credentials_sealed, session_sealed, created_at, \
     last_sync_at, last_sync_status, last_sync_error, credentials_version, last_sync_credentials_version, lease_owner, lease_until, consent_status, consent_valid_until, consent_warned_for";

/// Also the JSON read path's columns (`sqlite_json`).
pub(crate) fn tx_columns() -> &'static str {
    static COLUMNS: OnceLock<String> = OnceLock::new();
    COLUMNS.get_or_init(|| common::tx_columns("raw"))
}

const JOB_COLUMNS: &str =
    "id, connection_id, status, created_at, started_at, finished_at, summary, error";

// ---------------------------------------------------------------- window writes

const TX_WRITE_COLUMNS: &str = "provider_id, pending_provider_id, fingerprint, status, booking_date, value_date, \
     transaction_date, amount, currency, original_amount, original_currency, raw_label, label, \
     counterparty_name, counterparty_iban, remittance_info, bank_code, running_balance, raw, search_text";

/// The multi-row upsert for `rows` rows (a power of two up to INSERT_BATCH):
/// per row, connection, account, the 20 written fields, then now three times
/// (first seen, last seen, updated).
fn insert_sql(rows: usize) -> Cow<'static, str> {
    static SQL: OnceLock<Vec<String>> = OnceLock::new();
    let all = SQL.get_or_init(|| {
        let mut v = Vec::new();
        let mut n = 1;
        while n <= INSERT_BATCH {
            v.push(build_insert_sql(n));
            n *= 2;
        }
        v
    });
    if rows.is_power_of_two()
        && let Some(sql) = all.get(rows.trailing_zeros() as usize)
    {
        return Cow::Borrowed(sql.as_str());
    }
    Cow::Owned(build_insert_sql(rows))
}

fn build_insert_sql(rows: usize) -> String {
    let mut sql = format!(
        "INSERT INTO transactions (connection_id, account_id, {TX_WRITE_COLUMNS}, first_seen, last_seen, updated_at) \
         VALUES "
    );
    let one_row = format!("({}?)", "?,".repeat(INSERT_PARAMS_PER_ROW - 1));
    for r in 0..rows {
        if r > 0 {
            sql.push(',');
        }
        sql.push_str(&one_row);
    }
    sql.push_str(" ON CONFLICT (account_id, provider_id) DO UPDATE SET ");
    let sets: Vec<String> = TX_WRITE_COLUMNS
        .split(',')
        .map(str::trim)
        .filter(|c| *c != "provider_id")
        .chain(["last_seen", "updated_at"])
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    sql.push_str(&sets.join(", "));
    sql
}

fn add_tx_values<'q>(args: &mut SqliteArguments<'q>, p: &'q PreparedTx<'q>) -> Result<()> {
    let w = p.w;
    args.add(w.provider_id.as_str()).map_err(encode_err)?;
    args.add(w.pending_provider_id.as_deref())
        .map_err(encode_err)?;
    args.add(w.fingerprint.as_str()).map_err(encode_err)?;
    args.add(w.status.as_str()).map_err(encode_err)?;
    args.add(w.booking_date).map_err(encode_err)?;
    args.add(w.value_date).map_err(encode_err)?;
    args.add(w.transaction_date).map_err(encode_err)?;
    args.add(w.amount.to_string()).map_err(encode_err)?;
    args.add(p.currency.as_str()).map_err(encode_err)?;
    args.add(w.original_amount.map(|d| d.to_string()))
        .map_err(encode_err)?;
    args.add(p.original_currency_str()).map_err(encode_err)?;
    args.add(w.raw_label.as_str()).map_err(encode_err)?;
    args.add(w.label.as_str()).map_err(encode_err)?;
    args.add(w.counterparty_name.as_deref())
        .map_err(encode_err)?;
    args.add(w.counterparty_iban.as_deref())
        .map_err(encode_err)?;
    args.add(w.remittance_info.as_deref()).map_err(encode_err)?;
    args.add(w.bank_code.as_deref()).map_err(encode_err)?;
    args.add(w.running_balance.map(|d| d.to_string()))
        .map_err(encode_err)?;
    args.add(w.raw.as_str()).map_err(encode_err)?;
    args.add(p.search_text.as_str()).map_err(encode_err)?;
    Ok(())
}

const UPDATE_SQL: &str = "UPDATE transactions SET provider_id = ?1, pending_provider_id = ?2, fingerprint = ?3, \
     status = ?4, booking_date = ?5, value_date = ?6, transaction_date = ?7, amount = ?8, currency = ?9, \
     original_amount = ?10, original_currency = ?11, raw_label = ?12, label = ?13, counterparty_name = ?14, \
     counterparty_iban = ?15, remittance_info = ?16, bank_code = ?17, running_balance = ?18, raw = ?19, \
     search_text = ?20, updated_at = ?21, last_seen = ?21 WHERE id = ?22 AND account_id = ?23";

fn ids_json(ids: &[i64]) -> String {
    let mut s = String::with_capacity(ids.len() * 8 + 2);
    s.push('[');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&id.to_string());
    }
    s.push(']');
    s
}

crate::outbound::outbound_store!(SqliteStore, SqliteRow);
crate::instances::instances_store!(SqliteStore);
crate::bankid_orders::bankid_orders_store!(SqliteStore);
crate::check_work::check_work_store!(SqliteStore);

crate::shared::shared_store! {
    SqliteStore, SqliteRow;
    bank_data {
    async fn transactions_page_json(
        &self,
        query: &TxQuery,
        out: &mut Vec<u8>,
    ) -> Result<crate::JsonPage> {
        self.json.page(query, out).await
    }

    fn stream_transactions_json(&self, query: TxQuery) -> BoxStream<'_, Result<crate::JsonChunk>> {
        self.json.stream(query)
    }

    async fn months_changed_since(&self, since: DateTime<Utc>) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT substr(booking_date, 1, 7) FROM transactions WHERE updated_at > ?1 ORDER BY 1",
        )
        .bind(since)
        .fetch_all(&self.reader)
        .await?)
    }

    async fn flows(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        grouping: crate::FlowGrouping,
    ) -> Result<Vec<crate::Flow>> {
        // SUM over floats would drift: amounts are summed as integers of
        // 1/10,000 of the unit (exact for |amount| < 10^11).
        let (key, account, group) = match grouping {
            crate::FlowGrouping::AccountMonth => ("substr(booking_date, 1, 7)", "account_id", "account_id, 1"),
            crate::FlowGrouping::Category => ("category", "NULL", "1"),
        };
        let sql = format!(
            "SELECT {key}, {account}, currency, \
             SUM(CASE WHEN amount LIKE '-%' THEN CAST(ROUND(CAST(amount AS REAL) * 10000) AS INTEGER) ELSE 0 END), \
             SUM(CASE WHEN amount LIKE '-%' THEN 0 ELSE CAST(ROUND(CAST(amount AS REAL) * 10000) AS INTEGER) END), \
             COUNT(*) \
             FROM transactions WHERE status = 'booked' AND booking_date >= ?1 AND booking_date <= ?2 \
             GROUP BY {group}, currency ORDER BY 1 NULLS FIRST, 2, 3"
        );
        let rows = sqlx::query(&sql)
            .bind(from)
            .bind(to)
            .fetch_all(&self.reader)
            .await?;
        rows.iter()
            .map(|r| {
                let currency: String = r.try_get(2)?;
                let count: i64 = r.try_get(5)?;
                Ok(crate::Flow {
                    key: r.try_get(0)?,
                    account_id: r.try_get(1)?,
                    currency: codec::currency(&currency)?,
                    debit: Decimal::new(r.try_get(3)?, 4).normalize(),
                    credit: Decimal::new(r.try_get(4)?, 4).normalize(),
                    count: u64::try_from(count).unwrap_or(0),
                })
            })
            .collect()
    }

    async fn account_totals(&self, account_id: i64) -> Result<AccountTotals> {
        // Summed in Rust over the exact decimal strings: SQLite's SUM would use floats.
        let mut rows = sqlx::query_scalar::<_, String>(
            "SELECT amount FROM transactions WHERE account_id = ?1 AND status = 'booked'",
        )
        .bind(account_id)
        .fetch(&self.reader);
        let mut count = 0u64;
        let mut sum = Decimal::ZERO;
        while let Some(amount) = rows.next().await {
            let amount = codec::decimal(&amount?)?;
            sum = sum.checked_add(amount).ok_or_else(|| {
                StoreError::Conflict(format!("the booked sum of account {account_id} overflows"))
            })?;
            count += 1;
        }
        Ok(AccountTotals {
            booked_count: count,
            booked_sum: sum,
        })
    }
    }
}

/// A window's new rows: multi-row INSERTs of at most [`INSERT_BATCH`] rows.
async fn insert_rows(
    tx: &mut sqlx::SqliteConnection,
    connection_id: i64,
    account_id: i64,
    now: DateTime<Utc>,
    rows: &[PreparedTx<'_>],
) -> Result<()> {
    // Encoded once, as sqlx encodes a DateTime<Utc> for SQLite.
    let now_text = now.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false);
    let mut rest = rows;
    while !rest.is_empty() {
        let n = common::batch_len(rest.len(), INSERT_BATCH);
        let (chunk, tail) = rest.split_at(n);
        let mut args = SqliteArguments::default();
        for p in chunk {
            args.add(connection_id).map_err(encode_err)?;
            args.add(account_id).map_err(encode_err)?;
            add_tx_values(&mut args, p)?;
            for _ in 0..3 {
                args.add(now_text.as_str()).map_err(encode_err)?;
            }
        }
        sqlx::query_with(&insert_sql(n), args)
            .execute(&mut *tx)
            .await?;
        rest = tail;
    }

    Ok(())
}

/// A window's changed rows, one UPDATE each (SQLite has no array to join).
async fn update_rows(
    tx: &mut sqlx::SqliteConnection,
    account_id: i64,
    now: DateTime<Utc>,
    updates: &[(i64, PreparedTx<'_>)],
) -> Result<()> {
    for (id, p) in updates {
        let mut args = SqliteArguments::default();
        add_tx_values(&mut args, p)?;
        args.add(now).map_err(encode_err)?;
        args.add(*id).map_err(encode_err)?;
        args.add(account_id).map_err(encode_err)?;
        let done = sqlx::query_with(UPDATE_SQL, args).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(common::not_in_account(
                "transaction to update",
                &[*id],
                account_id,
            ));
        }
    }

    Ok(())
}

/// Money as bound here: exact decimal text.
fn money(d: Decimal) -> String {
    d.to_string()
}

/// A set of row ids as bound here: a JSON array for `json_each`.
fn id_set(ids: &[i64]) -> String {
    ids_json(ids)
}

/// `id` belongs to the set bound as parameter `param`.
fn in_id_set(param: usize) -> String {
    format!("IN (SELECT value FROM json_each(${param}))")
}
