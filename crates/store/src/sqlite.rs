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
use std::sync::OnceLock;
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
use crate::{
    AccountTotals, Card, CardAuditEntry, CardAuditQuery, CardStatus, CardUpdate, Checkpoint,
    CommitStats, Connection, ConnectionFootprint, ConnectionUpdate, Institution, Lease, LeaseToken,
    NewCard, NewConnection, NewInstitution, Result, Scope, Store, StoreError, StoredBalance,
    SyncJob, SyncOutcome, TokenRecord, TxQuery, WindowCommit, codec,
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
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Close both pools, waiting for connections to be returned (checkpoints the WAL).
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }
}

// ---------------------------------------------------------------- decoding

const CONNECTION_COLUMNS: &str = "id, name, connector, settings, credentials_sealed, session_sealed, created_at, \
     last_sync_at, last_sync_status, last_sync_error, credentials_version, last_sync_credentials_version, lease_owner, lease_until";

fn connection_from_row(r: &SqliteRow) -> Result<Connection> {
    Ok(Connection {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        connector: r.try_get(2)?,
        settings: common::json(r.try_get(3)?, "connection settings")?,
        credentials_sealed: r.try_get(4)?,
        session_sealed: r.try_get(5)?,
        created_at: r.try_get(6)?,
        last_sync_at: r.try_get(7)?,
        last_sync_status: common::sync_outcome(r.try_get(8)?)?,
        last_sync_error: r.try_get(9)?,
        credentials_version: r.try_get(10)?,
        last_sync_credentials_version: r.try_get(11)?,
        lease_owner: r.try_get(12)?,
        lease_until: r.try_get(13)?,
    })
}

const ACCOUNT_COLUMNS: &str =
    "id, connection_id, provider_id, iban, currency, name, kind, first_seen, last_seen";

fn account_from_row(r: &SqliteRow) -> Result<Account> {
    Ok(Account {
        id: r.try_get(0)?,
        connection_id: r.try_get(1)?,
        provider_id: r.try_get(2)?,
        iban: common::opt_iban(r.try_get(3)?)?,
        currency: codec::currency(r.try_get(4)?)?,
        name: r.try_get(5)?,
        kind: r.try_get(6)?,
        first_seen: r.try_get(7)?,
        last_seen: r.try_get(8)?,
    })
}

fn tx_columns() -> &'static str {
    static COLUMNS: OnceLock<String> = OnceLock::new();
    COLUMNS.get_or_init(|| common::tx_columns("raw"))
}

fn tx_from_row(r: &SqliteRow) -> Result<Transaction> {
    Ok(Transaction {
        id: r.try_get(0)?,
        connection_id: r.try_get(1)?,
        account_id: r.try_get(2)?,
        provider_id: r.try_get(3)?,
        pending_provider_id: r.try_get(4)?,
        fingerprint: r.try_get(5)?,
        status: common::tx_status(r.try_get(6)?)?,
        booking_date: r.try_get(7)?,
        value_date: r.try_get(8)?,
        transaction_date: r.try_get(9)?,
        amount: codec::decimal(r.try_get(10)?)?,
        currency: codec::currency(r.try_get(11)?)?,
        original_amount: common::opt_decimal(r.try_get(12)?)?,
        original_currency: common::opt_currency(r.try_get(13)?)?,
        raw_label: r.try_get(14)?,
        label: r.try_get(15)?,
        counterparty_name: r.try_get(16)?,
        counterparty_iban: r.try_get(17)?,
        remittance_info: r.try_get(18)?,
        bank_code: r.try_get(19)?,
        running_balance: common::opt_decimal(r.try_get(20)?)?,
        raw: common::raw_json(r.try_get(21)?, "transaction raw")?,
        first_seen: r.try_get(22)?,
        last_seen: r.try_get(23)?,
        updated_at: r.try_get(24)?,
        category: r.try_get(25)?,
    }
    .as_money())
}

const TOKEN_COLUMNS: &str =
    "id, name, scope, hash, created_at, last_used_at, revoked_at, location, expires_at";

fn token_from_row(r: &SqliteRow) -> Result<TokenRecord> {
    let scope: &str = r.try_get(2)?;
    Ok(TokenRecord {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        scope: Scope::parse(scope).ok_or_else(|| corrupt(format!("token scope {scope:?}")))?,
        hash: r.try_get(3)?,
        created_at: r.try_get(4)?,
        last_used_at: r.try_get(5)?,
        revoked_at: r.try_get(6)?,
        location: r.try_get(7)?,
        expires_at: r.try_get(8)?,
    })
}

const JOB_COLUMNS: &str =
    "id, connection_id, status, created_at, started_at, finished_at, summary, error";

fn job_from_row(r: &SqliteRow) -> Result<SyncJob> {
    let summary: Option<&str> = r.try_get(6)?;
    Ok(SyncJob {
        id: r.try_get(0)?,
        connection_id: r.try_get(1)?,
        status: r.try_get(2)?,
        created_at: r.try_get(3)?,
        started_at: r.try_get(4)?,
        finished_at: r.try_get(5)?,
        summary: summary
            .map(|s| common::json(s, "sync job summary"))
            .transpose()?,
        error: r.try_get(7)?,
    })
}

/// The lease check a sync's write transaction starts with (see [`common::LEASE_FENCE`]).
async fn fence(tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>, lease: LeaseToken) -> Result<()> {
    let done = sqlx::query(common::LEASE_FENCE)
        .bind(lease.connection_id)
        .bind(lease.generation)
        .execute(&mut **tx)
        .await?;
    common::fenced(done.rows_affected(), lease)
}

fn bind_args(args: Vec<Arg>) -> Result<SqliteArguments<'static>> {
    let mut out = SqliteArguments::default();
    for a in args {
        match a {
            Arg::I64(v) => out.add(v),
            Arg::Date(v) => out.add(v),
            Arg::Text(v) => out.add(v),
            Arg::Decimal(v) => out.add(v.to_string()),
            Arg::Time(v) => out.add(v),
            Arg::I32(v) => out.add(v),
            Arg::OptText(v) => out.add(v),
            Arg::Bytes(v) => out.add(v),
        }
        .map_err(encode_err)?;
    }
    Ok(out)
}

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

fn not_in_account(what: &str, ids: &[i64], account_id: i64) -> StoreError {
    StoreError::NotFound(format!("{what} {ids:?} of account {account_id}"))
}

async fn missing_ids(
    tx: &mut sqlx::SqliteConnection,
    account_id: i64,
    ids: &[i64],
) -> Result<Vec<i64>> {
    let found: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM transactions WHERE account_id = ?1 AND id IN (SELECT value FROM json_each(?2))",
    )
    .bind(account_id)
    .bind(ids_json(ids))
    .fetch_all(&mut *tx)
    .await?;
    let found: std::collections::HashSet<i64> = found.into_iter().collect();
    Ok(ids
        .iter()
        .copied()
        .filter(|id| !found.contains(id))
        .collect())
}

async fn update_ids(
    tx: &mut sqlx::SqliteConnection,
    sql: &str,
    now: DateTime<Utc>,
    account_id: i64,
    ids: &[i64],
    what: &str,
) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let done = sqlx::query(sql)
        .bind(now)
        .bind(account_id)
        .bind(ids_json(ids))
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() != ids.len() as u64 {
        let missing = missing_ids(tx, account_id, ids).await?;
        return Err(not_in_account(what, &missing, account_id));
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    // ------------------------------------------------------------ connections

    async fn create_connection(&self, new: &NewConnection) -> Result<Connection> {
        let settings = serde_json::to_string(&new.settings).map_err(|e| {
            StoreError::Conflict(format!("connection settings cannot be serialised: {e}"))
        })?;
        let row = sqlx::query(&format!(
            "INSERT INTO connections (name, connector, settings, credentials_sealed, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) RETURNING {CONNECTION_COLUMNS}"
        ))
        .bind(&new.name)
        .bind(&new.connector)
        .bind(settings)
        .bind(&new.credentials_sealed)
        .bind(micros(Utc::now()))
        .fetch_one(&self.writer)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Conflict(format!("a connection named {:?} already exists", new.name))
            } else {
                e.into()
            }
        })?;
        connection_from_row(&row)
    }

    async fn list_connections(&self) -> Result<Vec<Connection>> {
        let rows = sqlx::query(&format!(
            "SELECT {CONNECTION_COLUMNS} FROM connections ORDER BY id"
        ))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(connection_from_row).collect()
    }

    async fn get_connection(&self, id: i64) -> Result<Option<Connection>> {
        let row = sqlx::query(&format!(
            "SELECT {CONNECTION_COLUMNS} FROM connections WHERE id = ?1"
        ))
        .bind(id)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(connection_from_row).transpose()
    }

    async fn find_connection(&self, id_or_name: &str) -> Result<Option<Connection>> {
        if let Ok(id) = id_or_name.trim().parse::<i64>()
            && let Some(c) = self.get_connection(id).await?
        {
            return Ok(Some(c));
        }
        let row = sqlx::query(&format!(
            "SELECT {CONNECTION_COLUMNS} FROM connections WHERE name = ?1"
        ))
        .bind(id_or_name)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(connection_from_row).transpose()
    }

    async fn delete_connection(&self, id: i64) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query("DELETE FROM connections WHERE id = ?1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(documents::ORPHAN_BLOBS_DELETE)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn connection_footprint(&self, id: i64) -> Result<Option<ConnectionFootprint>> {
        let row: Option<(i64, i64, i64)> = sqlx::query_as(&common::footprint_sql(Dialect::Sqlite))
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        Ok(common::footprint(row))
    }

    async fn save_session(&self, lease: LeaseToken, session_sealed: Option<&[u8]>) -> Result<()> {
        let mut tx = self.write_tx().await?;
        fence(&mut tx, lease).await?;
        sqlx::query("UPDATE connections SET session_sealed = ?1 WHERE id = ?2")
            .bind(session_sealed)
            .bind(lease.connection_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn meta(&self, name: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.writer)
            .await?)
    }

    async fn init_meta(&self, name: &str, value: &str) -> Result<String> {
        sqlx::query("INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(value)
            .execute(&self.writer)
            .await?;
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE name = $1")
            .bind(name)
            .fetch_one(&self.writer)
            .await?)
    }

    async fn update_connection(
        &self,
        id: i64,
        update: &ConnectionUpdate,
    ) -> Result<Option<Connection>> {
        let settings = common::settings_text(update)?;
        let row = sqlx::query(&format!(
            "UPDATE connections SET settings = COALESCE(?1, settings), \
             credentials_sealed = COALESCE(?2, credentials_sealed), \
             credentials_version = credentials_version + (CASE WHEN ?2 IS NULL THEN 0 ELSE 1 END), \
             session_sealed = CASE WHEN ?3 THEN NULL ELSE session_sealed END \
             WHERE id = ?4 RETURNING {CONNECTION_COLUMNS}"
        ))
        .bind(settings)
        .bind(update.credentials_sealed.as_deref())
        .bind(update.clear_session)
        .bind(id)
        .fetch_optional(&self.writer)
        .await?;
        row.as_ref().map(connection_from_row).transpose()
    }

    async fn record_sync_result(
        &self,
        lease: LeaseToken,
        at: DateTime<Utc>,
        outcome: SyncOutcome,
        error: Option<&str>,
        credentials_version: i64,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE connections SET last_sync_at = ?1, last_sync_status = ?2, last_sync_error = ?3, \
             last_sync_credentials_version = ?4 WHERE id = ?5 AND lease_generation = ?6 \
             AND lease_owner IS NOT NULL",
        )
        .bind(micros(at))
        .bind(outcome.as_str())
        .bind(error)
        .bind(credentials_version)
        .bind(lease.connection_id)
        .bind(lease.generation)
        .execute(&self.writer)
        .await?;
        common::fenced(done.rows_affected(), lease)
    }

    async fn acquire_sync_lease(
        &self,
        connection_id: i64,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Lease> {
        let (now, until) = (micros(now), micros(until));
        // One write transaction: the take and the read of who holds it see
        // the same state.
        let mut tx = self.write_tx().await?;
        let generation: Option<i64> = sqlx::query_scalar(common::LEASE_ACQUIRE)
            .bind(owner)
            .bind(until)
            .bind(connection_id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
        let lease = match generation {
            Some(generation) => Lease::Acquired(LeaseToken {
                connection_id,
                generation,
            }),
            None => {
                let row = sqlx::query_as(common::LEASE_HOLDER)
                    .bind(connection_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                common::lease_held(connection_id, row, now)?.ok_or_else(|| {
                    StoreError::Conflict(format!(
                        "the sync lease of connection {connection_id} changed hands while it was taken; try again"
                    ))
                })?
            }
        };
        tx.commit().await?;
        Ok(lease)
    }

    async fn renew_sync_lease(&self, lease: LeaseToken, until: DateTime<Utc>) -> Result<()> {
        let done = sqlx::query(common::LEASE_RENEW)
            .bind(micros(until))
            .bind(lease.connection_id)
            .bind(lease.generation)
            .execute(&self.writer)
            .await?;
        common::fenced(done.rows_affected(), lease)
    }

    async fn release_sync_lease(&self, lease: LeaseToken) -> Result<()> {
        sqlx::query(common::LEASE_RELEASE)
            .bind(lease.connection_id)
            .bind(lease.generation)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    // ------------------------------------------------------------ accounts

    async fn upsert_account(
        &self,
        lease: LeaseToken,
        account: &FetchedAccount,
        now: DateTime<Utc>,
    ) -> Result<Account> {
        let raw = serde_json::to_string(&account.raw)
            .map_err(|e| StoreError::Conflict(format!("account raw cannot be serialised: {e}")))?;
        let connection_id = lease.connection_id;
        let mut tx = self.write_tx().await?;
        fence(&mut tx, lease).await?;
        let row = sqlx::query(&format!(
            "INSERT INTO accounts (connection_id, provider_id, iban, currency, name, kind, raw, first_seen, \
             last_seen, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?8) \
             ON CONFLICT (connection_id, provider_id) DO UPDATE SET \
             updated_at = CASE WHEN accounts.iban IS NOT excluded.iban OR accounts.currency IS NOT excluded.currency \
               OR accounts.name IS NOT excluded.name OR accounts.kind IS NOT excluded.kind \
               OR accounts.raw IS NOT excluded.raw THEN excluded.updated_at ELSE accounts.updated_at END, \
             iban = excluded.iban, currency = excluded.currency, name = excluded.name, kind = excluded.kind, \
             raw = excluded.raw, last_seen = excluded.last_seen \
             RETURNING {ACCOUNT_COLUMNS}"
        ))
        .bind(connection_id)
        .bind(&account.provider_id)
        .bind(account.iban.as_ref().map(|i| i.as_str()))
        .bind(account.currency.as_str())
        .bind(account.name.as_deref())
        .bind(account.kind.as_deref())
        .bind(raw)
        .bind(micros(now))
        .fetch_one(&mut *tx)
        .await?;
        let account = account_from_row(&row)?;
        tx.commit().await?;
        Ok(account)
    }

    async fn list_accounts(&self, connection_id: Option<i64>) -> Result<Vec<Account>> {
        let rows =
            match connection_id {
                Some(c) => sqlx::query(&format!(
                    "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE connection_id = ?1 ORDER BY id"
                ))
                .bind(c)
                .fetch_all(&self.reader)
                .await?,
                None => {
                    sqlx::query(&format!(
                        "SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY id"
                    ))
                    .fetch_all(&self.reader)
                    .await?
                }
            };
        rows.iter().map(account_from_row).collect()
    }

    async fn get_account(&self, id: i64) -> Result<Option<Account>> {
        let row = sqlx::query(&format!(
            "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1"
        ))
        .bind(id)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(account_from_row).transpose()
    }

    async fn list_balances(&self, account_id: i64) -> Result<Vec<StoredBalance>> {
        let rows = sqlx::query(
            "SELECT account_id, kind, amount, currency, reference_date, fetched_at FROM balances \
             WHERE account_id = ?1 ORDER BY reference_date, kind, id",
        )
        .bind(account_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                let kind: &str = r.try_get(1)?;
                Ok(StoredBalance {
                    account_id: r.try_get(0)?,
                    balance: Balance {
                        kind: BalanceKind::parse(kind)
                            .ok_or_else(|| corrupt(format!("balance kind {kind:?}")))?,
                        amount: codec::decimal(r.try_get(2)?)?,
                        currency: codec::currency(r.try_get(3)?)?,
                        reference_date: r.try_get(4)?,
                    }
                    .as_money(),
                    fetched_at: r.try_get(5)?,
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

    // ------------------------------------------------------------ sync

    async fn checkpoint(&self, account_id: i64) -> Result<Checkpoint> {
        let row: Option<(Option<NaiveDate>, Option<NaiveDate>, bool, i64)> = sqlx::query_as(
            "SELECT oldest_covered, newest_covered, backfill_done, empty_streak FROM checkpoints WHERE account_id = ?1",
        )
        .bind(account_id)
        .fetch_optional(&self.reader)
        .await?;
        Ok(match row {
            Some((oldest, newest, done, streak)) => Checkpoint {
                oldest_covered: oldest,
                newest_covered: newest,
                backfill_done: done,
                empty_streak: common::streak(streak)?,
            },
            None => Checkpoint::default(),
        })
    }

    async fn load_window(
        &self,
        account_id: i64,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<Transaction>> {
        let rows = sqlx::query(&format!(
            "SELECT {} FROM transactions WHERE account_id = ?1 AND booking_date >= ?2 AND booking_date <= ?3 \
             ORDER BY booking_date, id",
            tx_columns()
        ))
        .bind(account_id)
        .bind(from)
        .bind(to)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(tx_from_row).collect()
    }

    async fn commit_window(&self, commit: &WindowCommit) -> Result<CommitStats> {
        let prepared = common::prepare_commit(commit)?;
        let now = prepared.now;
        let account_id = commit.account_id;
        let connection_id = commit.lease.connection_id;
        let mut tx = self.write_tx().await?;
        fence(&mut tx, commit.lease).await?;

        let owner: Option<i64> =
            sqlx::query_scalar("SELECT connection_id FROM accounts WHERE id = ?1")
                .bind(account_id)
                .fetch_optional(&mut *tx)
                .await?;
        match owner {
            None => return Err(StoreError::NotFound(format!("account {account_id}"))),
            Some(c) if c != connection_id => {
                return Err(StoreError::Conflict(format!(
                    "account {account_id} belongs to connection {c}, not {connection_id}"
                )));
            }
            Some(_) => {}
        }

        // Encoded once, as sqlx encodes a DateTime<Utc> for SQLite.
        let now_text = now.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false);
        let mut rest = &prepared.inserts[..];
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

        for (id, p) in &prepared.updates {
            let mut args = SqliteArguments::default();
            add_tx_values(&mut args, p)?;
            args.add(now).map_err(encode_err)?;
            args.add(*id).map_err(encode_err)?;
            args.add(account_id).map_err(encode_err)?;
            let done = sqlx::query_with(UPDATE_SQL, args).execute(&mut *tx).await?;
            if done.rows_affected() == 0 {
                return Err(not_in_account("transaction to update", &[*id], account_id));
            }
        }

        update_ids(
            &mut tx,
            "UPDATE transactions SET status = 'void', updated_at = ?1 \
             WHERE account_id = ?2 AND id IN (SELECT value FROM json_each(?3))",
            now,
            account_id,
            &prepared.voids,
            "transactions to void",
        )
        .await?;
        update_ids(
            &mut tx,
            "UPDATE transactions SET last_seen = ?1 WHERE account_id = ?2 AND id IN (SELECT value FROM json_each(?3))",
            now,
            account_id,
            &prepared.touch,
            "transactions to touch",
        )
        .await?;

        let mut stats = CommitStats::default();
        for b in &commit.balances {
            let existing: Option<(String, String)> = sqlx::query_as(
                "SELECT amount, currency FROM balances WHERE account_id = ?1 AND kind = ?2 AND reference_date = ?3",
            )
            .bind(account_id)
            .bind(b.kind.as_str())
            .bind(b.reference_date)
            .fetch_optional(&mut *tx)
            .await?;
            let changed = match &existing {
                None => true,
                Some((amount, currency)) => {
                    codec::decimal(amount)? != b.amount || currency.as_str() != b.currency.as_str()
                }
            };
            if changed {
                sqlx::query(
                    "INSERT INTO balances (account_id, kind, amount, currency, reference_date, fetched_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (account_id, kind, reference_date) DO UPDATE SET \
                     amount = excluded.amount, currency = excluded.currency, fetched_at = excluded.fetched_at",
                )
                .bind(account_id)
                .bind(b.kind.as_str())
                .bind(b.amount.to_string())
                .bind(b.currency.as_str())
                .bind(b.reference_date)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                stats.balances_written += 1;
            }
        }

        let cp = &commit.checkpoint;
        sqlx::query(
            "INSERT INTO checkpoints (account_id, oldest_covered, newest_covered, backfill_done, empty_streak, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (account_id) DO UPDATE SET \
             oldest_covered = excluded.oldest_covered, newest_covered = excluded.newest_covered, \
             backfill_done = excluded.backfill_done, empty_streak = excluded.empty_streak, updated_at = excluded.updated_at",
        )
        .bind(account_id)
        .bind(cp.oldest_covered)
        .bind(cp.newest_covered)
        .bind(cp.backfill_done)
        .bind(i64::from(cp.empty_streak))
        .bind(now)
        .execute(&mut *tx)
        .await?;

        tx.commit().await?;
        Ok(stats)
    }

    // ------------------------------------------------------------ queries

    async fn query_transactions(&self, query: &TxQuery) -> Result<Vec<Transaction>> {
        let (sql, args) = common::tx_query_sql(query, Dialect::Sqlite, tx_columns());
        let rows = sqlx::query_with(&sql, bind_args(args)?)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(tx_from_row).collect()
    }

    fn stream_transactions(&self, query: TxQuery) -> BoxStream<'_, Result<Transaction>> {
        let (mut sender, receiver) = futures::channel::mpsc::channel::<Result<Transaction>>(64);
        // The producer owns the SQL text its row stream borrows; it is driven
        // by polling the returned stream, and the bounded channel keeps
        // memory constant whatever the number of rows.
        let producer = async move {
            let (sql, args) = common::tx_query_sql(&query, Dialect::Sqlite, tx_columns());
            let args = match bind_args(args) {
                Ok(a) => a,
                Err(e) => {
                    let _ = sender.send(Err(e)).await;
                    return;
                }
            };
            let mut rows = sqlx::query_with(&sql, args).fetch(&self.reader);
            while let Some(row) = rows.next().await {
                let item = row.map_err(StoreError::from).and_then(|r| tx_from_row(&r));
                let failed = item.is_err();
                if sender.send(item).await.is_err() || failed {
                    return;
                }
            }
        };
        let producer =
            futures::stream::once(producer).filter_map(|()| futures::future::ready(None));
        futures::stream::select(receiver, producer).boxed()
    }

    // ------------------------------------------------------------ tokens

    async fn create_token(&self, record: &TokenRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_tokens (id, name, scope, hash, created_at, last_used_at, revoked_at, location, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .bind(&record.id)
        .bind(&record.name)
        .bind(record.scope.as_str())
        .bind(&record.hash)
        .bind(micros(record.created_at))
        .bind(opt_micros(record.last_used_at))
        .bind(opt_micros(record.revoked_at))
        .bind(record.location.as_deref())
        .bind(opt_micros(record.expires_at))
        .execute(&self.writer)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Conflict(format!(
                    "a token with id {:?} or name {:?} already exists",
                    record.id, record.name
                ))
            } else {
                e.into()
            }
        })?;
        Ok(())
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at, id"
        ))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(token_from_row).collect()
    }

    async fn find_token(&self, id: &str) -> Result<Option<TokenRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = ?1"
        ))
        .bind(id)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn revoke_token(&self, id_or_name: &str, at: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ?1) WHERE id = COALESCE(\
             (SELECT id FROM api_tokens WHERE id = ?2), (SELECT id FROM api_tokens WHERE name = ?2))",
        )
        .bind(micros(at))
        .bind(id_or_name)
        .execute(&self.writer)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn touch_token(&self, id: &str, at: DateTime<Utc>) -> Result<()> {
        sqlx::query("UPDATE api_tokens SET last_used_at = ?1 WHERE id = ?2")
            .bind(micros(at))
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    // ------------------------------------------------------------ sync jobs

    async fn create_sync_job(&self, connection_id: i64, at: DateTime<Utc>) -> Result<SyncJob> {
        let row = sqlx::query(&format!(
            "INSERT INTO sync_jobs (connection_id, status, created_at) VALUES (?1, 'queued', ?2) RETURNING {JOB_COLUMNS}"
        ))
        .bind(connection_id)
        .bind(micros(at))
        .fetch_one(&self.writer)
        .await
        .map_err(|e| {
            if is_foreign_key_violation(&e) {
                StoreError::NotFound(format!("connection {connection_id}"))
            } else {
                e.into()
            }
        })?;
        job_from_row(&row)
    }

    async fn update_sync_job(&self, job: &SyncJob) -> Result<()> {
        let summary = job
            .summary
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| {
                StoreError::Conflict(format!("sync job summary cannot be serialised: {e}"))
            })?;
        let done = sqlx::query(
            "UPDATE sync_jobs SET status = ?1, started_at = ?2, finished_at = ?3, summary = ?4, error = ?5 WHERE id = ?6",
        )
        .bind(&job.status)
        .bind(opt_micros(job.started_at))
        .bind(opt_micros(job.finished_at))
        .bind(summary)
        .bind(job.error.as_deref())
        .bind(job.id)
        .execute(&self.writer)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("sync job {}", job.id)));
        }
        Ok(())
    }

    async fn get_sync_job(&self, id: i64) -> Result<Option<SyncJob>> {
        let row = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM sync_jobs WHERE id = ?1"
        ))
        .bind(id)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    // ------------------------------------------------------------ categories

    async fn set_categories(
        &self,
        changes: &[(i64, Option<String>)],
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let mut tx = self.write_tx().await?;
        let mut changed = 0;
        for (id, category) in changes {
            changed += sqlx::query(common::category_update(Dialect::Sqlite))
                .bind(category.as_deref())
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(changed)
    }

    // ------------------------------------------------------------ documents

    async fn document_keys(&self, connection_id: i64) -> Result<std::collections::HashSet<String>> {
        let keys: Vec<String> = sqlx::query_scalar(documents::DOCUMENT_KEYS)
            .bind(connection_id)
            .fetch_all(&self.reader)
            .await?;
        Ok(keys.into_iter().collect())
    }

    async fn save_document(
        &self,
        lease: LeaseToken,
        doc: &NewDocument,
        content: &[u8],
    ) -> Result<SavedDocument> {
        documents::check_new_document(doc, lease)?;
        let sha256 = documents::sha256_hex(content);
        let size = documents::stored_size(content)?;
        let now = micros(doc.now);
        let mut tx = self.write_tx().await?;
        fence(&mut tx, lease).await?;
        if let Some(account_id) = doc.account_id {
            let owner: Option<i64> = sqlx::query_scalar(documents::ACCOUNT_OWNER)
                .bind(account_id)
                .fetch_optional(&mut *tx)
                .await?;
            documents::check_account_owner(doc, account_id, owner)?;
        }
        let blob = sqlx::query(documents::BLOB_INSERT)
            .bind(&sha256)
            .bind(size)
            .bind(content)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let row: Option<documents::DocumentRow> = sqlx::query_as(documents::DOCUMENT_INSERT)
            .bind(doc.connection_id)
            .bind(doc.account_id)
            .bind(&doc.provider_id)
            .bind(&doc.kind)
            .bind(doc.category.as_deref())
            .bind(&doc.title)
            .bind(doc.date)
            .bind(&doc.content_type)
            .bind(&sha256)
            .bind(size)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| {
                if is_foreign_key_violation(&e) {
                    StoreError::NotFound(format!("connection {}", doc.connection_id))
                } else {
                    e.into()
                }
            })?;
        let (row, inserted) = match row {
            Some(r) => (r, true),
            None => {
                let existing: documents::DocumentRow = sqlx::query_as(documents::DOCUMENT_BY_KEY)
                    .bind(doc.connection_id)
                    .bind(&doc.provider_id)
                    .fetch_one(&mut *tx)
                    .await?;
                (existing, false)
            }
        };
        // Bytes only this call brought and no document keeps are not kept.
        let blob_inserted = blob.rows_affected() == 1 && inserted;
        if blob.rows_affected() == 1 && !inserted {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        Ok(SavedDocument {
            document: row.try_into()?,
            inserted,
            blob_inserted,
        })
    }

    async fn list_documents(&self, query: &DocumentQuery) -> Result<Vec<Document>> {
        let (sql, args) = documents::list_sql(query);
        let rows: Vec<documents::DocumentRow> = sqlx::query_as_with(&sql, bind_args(args)?)
            .fetch_all(&self.reader)
            .await?;
        documents::documents(rows)
    }

    async fn get_document(&self, id: i64) -> Result<Option<Document>> {
        let row: Option<documents::DocumentRow> = sqlx::query_as(documents::DOCUMENT_GET)
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.map(Document::try_from).transpose()
    }

    async fn document_content(&self, id: i64) -> Result<Option<(Document, Vec<u8>)>> {
        let Some(doc) = self.get_document(id).await? else {
            return Ok(None);
        };
        let content: Option<Vec<u8>> = sqlx::query_scalar(documents::BLOB_CONTENT)
            .bind(&doc.sha256)
            .fetch_optional(&self.reader)
            .await?;
        documents::with_content(doc, content).map(Some)
    }

    // ------------------------------------------------------------ card service

    async fn create_institution(&self, new: &NewInstitution) -> Result<Institution> {
        common::check_new_institution(new)?;
        let row: InstitutionRow = sqlx::query_as(common::INSTITUTION_INSERT)
            .bind(&new.id)
            .bind(&new.name)
            .bind(new.country.as_deref())
            .bind(micros(Utc::now()))
            .fetch_one(&self.writer)
            .await
            .map_err(|e| common::institution_insert_error(e, new))?;
        Ok(row.into())
    }

    async fn list_institutions(&self) -> Result<Vec<Institution>> {
        let rows: Vec<InstitutionRow> = sqlx::query_as(common::INSTITUTION_LIST)
            .fetch_all(&self.reader)
            .await?;
        Ok(rows.into_iter().map(Institution::from).collect())
    }

    async fn get_institution(&self, id: &str) -> Result<Option<Institution>> {
        let row: Option<InstitutionRow> = sqlx::query_as(common::INSTITUTION_GET)
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.map(Institution::from))
    }

    async fn delete_institution(&self, id: &str) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let cards: Vec<String> = sqlx::query_scalar(common::INSTITUTION_CARD_IDS)
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
        if !cards.is_empty() {
            return Err(common::institution_has_cards(id, &cards));
        }
        let done = sqlx::query(common::INSTITUTION_DELETE)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                if is_foreign_key_violation(&e) {
                    common::institution_has_cards(id, &[])
                } else {
                    e.into()
                }
            })?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    async fn create_card(&self, new: &NewCard) -> Result<Card> {
        common::check_new_card(new)?;
        let mut tx = self.write_tx().await?;
        let institution: Option<String> = sqlx::query_scalar(common::INSTITUTION_EXISTS)
            .bind(&new.institution_id)
            .fetch_optional(&mut *tx)
            .await?;
        if institution.is_none() {
            return Err(common::institution_not_found(&new.institution_id));
        }
        let holder: Option<(String, String)> = sqlx::query_as(common::CARD_IN_READER)
            .bind(&new.reader)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some((card, label)) = &holder {
            return Err(common::reader_taken(&new.reader, Some((card, label))));
        }
        let existing: Option<String> = sqlx::query_scalar(common::CARD_EXISTS)
            .bind(&new.id)
            .fetch_optional(&mut *tx)
            .await?;
        if existing.is_some() {
            return Err(common::card_exists(&new.id));
        }
        let row: CardRow = sqlx::query_as(common::CARD_INSERT)
            .bind(&new.id)
            .bind(&new.institution_id)
            .bind(&new.label)
            .bind(&new.account_reference)
            .bind(&new.reader)
            .bind(new.pan_last4.as_deref())
            .bind(new.psn.as_deref())
            .bind(new.records_digest.as_deref())
            .bind(new.application.as_deref())
            .bind(&new.pin_sealed)
            .bind(i32::from(new.min_pin_tries))
            .bind(micros(new.created_at))
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| common::card_insert_error(e, new))?;
        let card = Card::try_from(row)?;
        tx.commit().await?;
        Ok(card)
    }

    async fn list_cards(&self, institution_id: Option<&str>) -> Result<Vec<Card>> {
        let rows: Vec<CardRow> = match institution_id {
            Some(i) => {
                sqlx::query_as(common::CARD_LIST_OF_INSTITUTION)
                    .bind(i)
                    .fetch_all(&self.reader)
                    .await?
            }
            None => {
                sqlx::query_as(common::CARD_LIST)
                    .fetch_all(&self.reader)
                    .await?
            }
        };
        common::cards(rows)
    }

    async fn get_card(&self, id: &str) -> Result<Option<Card>> {
        let row: Option<CardRow> = sqlx::query_as(common::CARD_GET)
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.map(Card::try_from).transpose()
    }

    async fn find_card_by_reader(&self, reader: &str) -> Result<Option<Card>> {
        let row: Option<CardRow> = sqlx::query_as(common::CARD_BY_READER)
            .bind(reader)
            .fetch_optional(&self.reader)
            .await?;
        row.map(Card::try_from).transpose()
    }

    async fn update_card(
        &self,
        id: &str,
        update: &CardUpdate,
        now: DateTime<Utc>,
    ) -> Result<Option<Card>> {
        common::check_card_update(id, update)?;
        let (sql, args) = common::card_update_sql(id, update, now);
        let row: Option<CardRow> = sqlx::query_as_with(&sql, bind_args(args)?)
            .fetch_optional(&self.writer)
            .await?;
        if row.is_none() && common::activates_without_pin(update) {
            let refused: Option<bool> = sqlx::query_scalar(common::CARD_PIN_REFUSED)
                .bind(id)
                .fetch_optional(&self.writer)
                .await?;
            if refused == Some(true) {
                return Err(common::pin_refused_needs_new_pin(id));
            }
        }
        row.map(Card::try_from).transpose()
    }

    async fn mark_card_pin_refused(
        &self,
        id: &str,
        reason: &str,
        blocked: bool,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let done = sqlx::query(common::CARD_MARK_PIN_REFUSED)
            .bind(blocked)
            .bind(reason)
            .bind(micros(now))
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_card_status(
        &self,
        id: &str,
        status: CardStatus,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        common::check_set_status(id, status)?;
        let done = sqlx::query(common::CARD_SET_STATUS)
            .bind(status.as_str())
            .bind(reason)
            .bind(micros(now))
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn touch_card(&self, id: &str, at: DateTime<Utc>) -> Result<()> {
        sqlx::query(common::CARD_TOUCH)
            .bind(micros(at))
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn delete_card(&self, id: &str) -> Result<bool> {
        let done = sqlx::query(common::CARD_DELETE)
            .bind(id)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn record_card_audit(&self, entry: &CardAuditEntry) -> Result<i64> {
        let (atc, duration_ms) = common::audit_numbers(entry)?;
        let id: i64 = sqlx::query_scalar(common::CARD_AUDIT_INSERT)
            .bind(micros(entry.at))
            .bind(&entry.token_name)
            .bind(&entry.card_id)
            .bind(&entry.institution_id)
            .bind(&entry.mode)
            .bind(&entry.outcome)
            .bind(entry.detail.as_deref())
            .bind(atc)
            .bind(duration_ms)
            .fetch_one(&self.writer)
            .await?;
        Ok(id)
    }

    async fn list_card_audit(&self, query: &CardAuditQuery) -> Result<Vec<CardAuditEntry>> {
        let (sql, args) = common::card_audit_query_sql(query);
        let rows: Vec<CardAuditRow> = sqlx::query_as_with(&sql, bind_args(args)?)
            .fetch_all(&self.reader)
            .await?;
        rows.into_iter().map(CardAuditEntry::try_from).collect()
    }

    // ------------------------------------------------------------ flow checks

    async fn save_check_run(&self, run: &NewCheckRun) -> Result<CheckRun> {
        checks::check_new_run(run)?;
        let mut tx = self.write_tx().await?;
        let row: checks::CheckRunRow = sqlx::query_as(checks::RUN_INSERT)
            .bind(&run.check_id)
            .bind(&run.check_name)
            .bind(&run.location)
            .bind(&run.round_id)
            .bind(&run.trigger)
            .bind(micros(run.started_at))
            .bind(micros(run.finished_at))
            .bind(run.duration_ms)
            .bind(&run.outcome)
            .bind(run.attempts)
            .bind(run.failed_step.as_deref())
            .bind(run.error.as_deref())
            .fetch_one(&mut *tx)
            .await?;
        let saved = CheckRun::from(row);
        for step in &run.steps {
            sqlx::query(checks::step_insert(Dialect::Sqlite))
                .bind(saved.id)
                .bind(step.index)
                .bind(&step.name)
                .bind(&step.kind)
                .bind(&step.outcome)
                .bind(step.duration_ms)
                .bind(&step.detail)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(saved)
    }

    async fn list_check_runs(&self, query: &CheckRunQuery) -> Result<Vec<CheckRun>> {
        let (sql, args) = checks::list_sql(query);
        let rows: Vec<checks::CheckRunRow> = sqlx::query_as_with(&sql, bind_args(args)?)
            .fetch_all(&self.reader)
            .await?;
        Ok(rows.into_iter().map(CheckRun::from).collect())
    }

    async fn get_check_run(&self, id: i64) -> Result<Option<(CheckRun, Vec<CheckStep>)>> {
        // One read transaction (one WAL snapshot): a run pruned between the
        // two reads would otherwise come back without its steps.
        let mut tx = self.reader.begin().await?;
        let row: Option<checks::CheckRunRow> = sqlx::query_as(checks::RUN_GET)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let steps: Vec<checks::CheckStepRow> =
            sqlx::query_as(checks::steps_of_run(Dialect::Sqlite))
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(Some((
            row.into(),
            steps.into_iter().map(CheckStep::from).collect(),
        )))
    }

    async fn prune_check_runs(&self, older_than: DateTime<Utc>, keep_latest: u32) -> Result<u64> {
        let done = sqlx::query(checks::RUNS_PRUNE)
            .bind(micros(older_than))
            .bind(i64::from(keep_latest))
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }

    async fn put_check_state(
        &self,
        check_id: &str,
        state_json: &str,
        at: DateTime<Utc>,
    ) -> Result<()> {
        checks::check_state(check_id, state_json)?;
        sqlx::query(checks::state_upsert(Dialect::Sqlite))
            .bind(check_id)
            .bind(state_json)
            .bind(micros(at))
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn check_states(&self) -> Result<Vec<(String, String)>> {
        Ok(sqlx::query_as(checks::states_list(Dialect::Sqlite))
            .fetch_all(&self.reader)
            .await?)
    }

    async fn put_check_secret(&self, name: &str, sealed: &[u8], at: DateTime<Utc>) -> Result<bool> {
        checks::check_secret_name(name)?;
        let mut tx = self.write_tx().await?;
        let existed = sqlx::query(checks::SECRET_EXISTS)
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        sqlx::query(checks::SECRET_UPSERT)
            .bind(name)
            .bind(sealed)
            .bind(micros(at))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(!existed)
    }

    async fn get_check_secret(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(sqlx::query_scalar(checks::SECRET_GET)
            .bind(name)
            .fetch_optional(&self.reader)
            .await?)
    }

    async fn list_check_secrets(&self) -> Result<Vec<checks::CheckSecretInfo>> {
        let rows: Vec<(String, DateTime<Utc>)> = sqlx::query_as(checks::SECRET_LIST)
            .fetch_all(&self.reader)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(name, updated_at)| checks::CheckSecretInfo { name, updated_at })
            .collect())
    }

    async fn delete_check_secret(&self, name: &str) -> Result<bool> {
        let done = sqlx::query(checks::SECRET_DELETE)
            .bind(name)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
