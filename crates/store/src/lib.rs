//! The bankbridge store: one [`Store`] trait, two backends.
//!
//! - [`sqlite::SqliteStore`]: the embedded default, one file, created on first
//!   use, WAL journal.
//! - [`postgres::PgStore`]: for several `serve` instances sharing one database.
//!
//! Both run the same versioned migrations (one folder per backend, same
//! version numbers) and pass the same test-suite (`tests/store_suite.rs`).
//! The sync engine is the only writer of bank data, through
//! [`Store::commit_window`], which applies a whole window atomically together
//! with its checkpoint.
#![forbid(unsafe_code)]

use std::fmt;

use async_trait::async_trait;
use bankbridge_core::{Account, Balance, FetchedAccount, Transaction, TxStatus};
use chrono::{DateTime, NaiveDate, Utc};
use futures::stream::BoxStream;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

pub mod bench;
mod common;
pub mod postgres;
pub mod sqlite;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {location}: {detail}")]
    Open { location: String, detail: String },
    #[error("database migration failed: {0}")]
    Migrate(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("stored data is corrupt ({0})")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Open the store a location names: a `postgres://` / `postgresql://` URL, or
/// a SQLite file path (created with its parent folders on first use).
pub async fn open(location: &str) -> Result<std::sync::Arc<dyn Store>> {
    if location.starts_with("postgres://") || location.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(PgStore::connect(location).await?))
    } else {
        let path = location.strip_prefix("sqlite://").unwrap_or(location);
        Ok(std::sync::Arc::new(
            SqliteStore::open(std::path::Path::new(path)).await?,
        ))
    }
}

// ---------------------------------------------------------------- connections

/// A connection to be created. Credentials arrive already encrypted: the store
/// never sees a plaintext secret.
#[derive(Clone, Debug)]
pub struct NewConnection {
    pub name: String,
    pub connector: String,
    /// `ConnectionSettings` as JSON (no secrets in it).
    pub settings: serde_json::Value,
    /// AEAD-sealed credentials (see the server/cli `secrets` module).
    pub credentials_sealed: Vec<u8>,
}

#[derive(Clone, PartialEq)]
pub struct Connection {
    pub id: i64,
    pub name: String,
    pub connector: String,
    pub settings: serde_json::Value,
    pub credentials_sealed: Vec<u8>,
    /// AEAD-sealed connector session state (tokens, cookies), if one was kept.
    pub session_sealed: Option<Vec<u8>>,
    pub created_at: DateTime<Utc>,
    pub last_sync_at: Option<DateTime<Utc>>,
    /// `ok`, `failed`, `needs_user` or `never`.
    pub last_sync_status: String,
    pub last_sync_error: Option<String>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("connector", &self.connector)
            .field("settings", &self.settings)
            .field("credentials_sealed", &"[sealed]")
            .field(
                "session_sealed",
                &self.session_sealed.as_ref().map(|_| "[sealed]"),
            )
            .field("last_sync_at", &self.last_sync_at)
            .field("last_sync_status", &self.last_sync_status)
            .finish()
    }
}

/// Outcome of asking for the right to sync one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lease {
    Acquired,
    /// Someone else holds it until `until`.
    Held {
        owner: String,
        until: DateTime<Utc>,
    },
}

// ---------------------------------------------------------------- sync state

/// How far one account has been synced. Windows are committed one by one; the
/// covered range is always contiguous so a resumed sync has no gap.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Oldest day fully synced (backfill goes below it).
    pub oldest_covered: Option<NaiveDate>,
    /// Newest day fully synced (incremental syncs start near it).
    pub newest_covered: Option<NaiveDate>,
    /// The backfill reached the start of the account's history.
    pub backfill_done: bool,
    /// Consecutive empty windows seen while backfilling.
    pub empty_streak: u32,
}

/// Fields of a transaction to write (insert or update).
#[derive(Clone, Debug, PartialEq)]
pub struct TxWrite {
    pub provider_id: String,
    pub pending_provider_id: Option<String>,
    pub fingerprint: String,
    pub status: TxStatus,
    pub booking_date: NaiveDate,
    pub value_date: Option<NaiveDate>,
    pub transaction_date: Option<NaiveDate>,
    pub amount: Decimal,
    pub currency: String,
    pub original_amount: Option<Decimal>,
    pub original_currency: Option<String>,
    pub raw_label: String,
    pub label: String,
    pub counterparty_name: Option<String>,
    pub counterparty_iban: Option<String>,
    pub remittance_info: Option<String>,
    pub bank_code: Option<String>,
    pub running_balance: Option<Decimal>,
    /// Raw bank JSON, serialised.
    pub raw: String,
}

/// One window's worth of changes, applied in one database transaction
/// together with the new checkpoint. Either all of it lands or none.
#[derive(Clone, Debug)]
pub struct WindowCommit {
    pub connection_id: i64,
    pub account_id: i64,
    pub now: DateTime<Utc>,
    pub inserts: Vec<TxWrite>,
    /// (row id, new content).
    pub updates: Vec<(i64, TxWrite)>,
    /// Pending rows the bank no longer reports: set status `void`.
    pub voids: Vec<i64>,
    /// Unchanged rows whose `last_seen` is stale enough to refresh.
    pub touch: Vec<i64>,
    pub balances: Vec<Balance>,
    pub checkpoint: Checkpoint,
}

/// What [`Store::commit_window`] wrote: balances only count when their value changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    pub balances_written: u64,
}

// ---------------------------------------------------------------- queries

#[derive(Clone, Debug, Default, PartialEq)]
pub struct TxQuery {
    pub account_id: Option<i64>,
    pub connection_id: Option<i64>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub min_amount: Option<Decimal>,
    pub max_amount: Option<Decimal>,
    /// Case-insensitive substring of label, raw label, counterparty or remittance.
    pub text: Option<String>,
    pub status: Option<TxStatus>,
    pub updated_since: Option<DateTime<Utc>>,
    /// Keyset position: rows strictly after (booking_date, id).
    pub after: Option<(NaiveDate, i64)>,
    /// `None` for streams (export); pages are capped by the caller.
    pub limit: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Read,
    Write,
    Admin,
}

impl Scope {
    pub fn as_str(&self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Some(match s {
            "read" => Scope::Read,
            "write" => Scope::Write,
            "admin" => Scope::Admin,
            _ => return None,
        })
    }

    /// Admin may do what write may, write what read may.
    pub fn allows(&self, needed: Scope) -> bool {
        self.rank() >= needed.rank()
    }

    fn rank(&self) -> u8 {
        match self {
            Scope::Read => 0,
            Scope::Write => 1,
            Scope::Admin => 2,
        }
    }
}

/// An API token as stored: only a hash of the secret part is kept.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenRecord {
    /// Public id, the part of the token before the secret (`bb_<id>_<secret>`).
    pub id: String,
    pub name: String,
    pub scope: Scope,
    /// SHA-256 of the whole token.
    pub hash: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A sync run requested through the API, pollable at `/api/v1/syncs/{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncJob {
    pub id: i64,
    pub connection_id: i64,
    /// `queued`, `running`, `succeeded`, `failed`, `needs_user`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The sync summary (inserted, updated, unchanged, voided, windows) once known.
    pub summary: Option<serde_json::Value>,
    pub error: Option<String>,
}

/// A stored balance snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredBalance {
    pub account_id: i64,
    #[serde(flatten)]
    pub balance: Balance,
    pub fetched_at: DateTime<Utc>,
}

/// Count and sum of booked transactions of one account (to check against a bank's truth).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountTotals {
    pub booked_count: u64,
    #[serde(with = "rust_decimal::serde::str")]
    pub booked_sum: Decimal,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    // connections
    async fn create_connection(&self, new: &NewConnection) -> Result<Connection>;
    async fn list_connections(&self) -> Result<Vec<Connection>>;
    async fn get_connection(&self, id: i64) -> Result<Option<Connection>>;
    /// By numeric id or by name.
    async fn find_connection(&self, id_or_name: &str) -> Result<Option<Connection>>;
    /// Deletes the connection with its accounts, transactions, balances and checkpoints.
    async fn delete_connection(&self, id: i64) -> Result<bool>;
    async fn save_session(&self, connection_id: i64, session_sealed: Option<&[u8]>) -> Result<()>;
    async fn record_sync_result(
        &self,
        connection_id: i64,
        at: DateTime<Utc>,
        status: &str,
        error: Option<&str>,
    ) -> Result<()>;
    /// Take (or renew) the right to sync a connection until `until`. Atomic
    /// across processes sharing the database.
    async fn acquire_sync_lease(
        &self,
        connection_id: i64,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Lease>;
    async fn release_sync_lease(&self, connection_id: i64, owner: &str) -> Result<()>;

    // accounts and balances
    /// Insert or refresh an account; `last_seen` moves to `now`.
    async fn upsert_account(
        &self,
        connection_id: i64,
        account: &FetchedAccount,
        now: DateTime<Utc>,
    ) -> Result<Account>;
    async fn list_accounts(&self, connection_id: Option<i64>) -> Result<Vec<Account>>;
    async fn get_account(&self, id: i64) -> Result<Option<Account>>;
    async fn list_balances(&self, account_id: i64) -> Result<Vec<StoredBalance>>;
    async fn account_totals(&self, account_id: i64) -> Result<AccountTotals>;

    // sync
    async fn checkpoint(&self, account_id: i64) -> Result<Checkpoint>;
    /// Stored rows of an account with booking date in `from..=to`.
    async fn load_window(
        &self,
        account_id: i64,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<Transaction>>;
    async fn commit_window(&self, commit: &WindowCommit) -> Result<CommitStats>;

    // queries
    /// Rows ordered by (booking_date, id).
    async fn query_transactions(&self, query: &TxQuery) -> Result<Vec<Transaction>>;
    /// The same rows as a stream, for exports in constant memory.
    fn stream_transactions(&self, query: TxQuery) -> BoxStream<'_, Result<Transaction>>;

    // API tokens
    async fn create_token(&self, record: &TokenRecord) -> Result<()>;
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>>;
    async fn find_token(&self, id: &str) -> Result<Option<TokenRecord>>;
    /// By id or name; false when none matched.
    async fn revoke_token(&self, id_or_name: &str, at: DateTime<Utc>) -> Result<bool>;
    async fn touch_token(&self, id: &str, at: DateTime<Utc>) -> Result<()>;

    // sync jobs
    async fn create_sync_job(&self, connection_id: i64, at: DateTime<Utc>) -> Result<SyncJob>;
    async fn update_sync_job(&self, job: &SyncJob) -> Result<()>;
    async fn get_sync_job(&self, id: i64) -> Result<Option<SyncJob>>;
}

/// Helpers shared by both backends.
pub mod codec {
    use bankbridge_core::Currency;
    use rust_decimal::Decimal;
    use std::str::FromStr;

    use crate::StoreError;

    pub fn currency(s: &str) -> Result<Currency, StoreError> {
        s.parse()
            .map_err(|_| StoreError::Corrupt(format!("currency {s:?}")))
    }

    pub fn decimal(s: &str) -> Result<Decimal, StoreError> {
        Decimal::from_str(s).map_err(|_| StoreError::Corrupt(format!("decimal {s:?}")))
    }
}
