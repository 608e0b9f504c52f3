//! The bankbridge store: one [`Store`] trait, two backends.
//!
//! - [`sqlite::SqliteStore`]: the embedded default, one file, created on first
//!   use, WAL journal.
//! - [`postgres::PgStore`]: for several `serve` instances sharing one database.
//!
//! Both run the same versioned migrations (one folder per backend, same
//! version numbers) and pass the same test-suite (`tests/store_suite.rs`).
//! The sync engine is the only writer of bank data, through
//! [`BankWrites::commit_window`], which applies a whole window atomically together
//! with its checkpoint.
//!
//! The store also keeps the records of the card-reader authentication
//! service: [`Institution`]s, EMV-CAP [`Card`]s with their AEAD-sealed PIN
//! (never plaintext here), and the audit of every card use
//! ([`CardAuditEntry`]).
//!
//! And the results of flow checks: each [`CheckRun`] with its [`CheckStep`]s,
//! and the scheduler's per-check state, so history and alerting survive a
//! restart.
#![forbid(unsafe_code)]

use std::fmt;

use async_trait::async_trait;
use bankbridge_core::{
    Account, Balance, BalanceKind, Document, FetchedAccount, Transaction, TxStatus,
};
use chrono::{DateTime, NaiveDate, Utc};
use futures::stream::BoxStream;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

mod bankid_orders;
mod cards;
mod check_work;
pub mod checks;
mod common;
pub mod documents;
mod instances;
mod outbound;
pub mod postgres;
mod shared;
pub mod sqlite;
mod sqlite_json;
#[cfg(feature = "test-support")]
pub mod testing;
mod tx_json;

pub use bankid_orders::{BankIdOrders, StoredBankIdOrder};
pub use cards::{
    Card, CardAuditEntry, CardAuditQuery, CardStatus, CardUpdate, Institution, NewCard,
    NewInstitution,
};
pub use check_work::{CheckJobReport, CheckWork, LapsedRound, OutboxAlert, QueuedCheckJob};
pub use checks::{CheckRun, CheckRunQuery, CheckSecretInfo, CheckStep, NewCheckRun, NewCheckStep};
pub use documents::{DocumentQuery, NewDocument, SavedDocument, sha256_hex};
pub use instances::{Instance, Instances};
pub use outbound::{ExportMark, Outbound, SimplefinToken};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use tx_json::{JsonChunk, JsonPage};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {location}: {detail}")]
    Open { location: String, detail: String },
    #[error("database migration failed: {0}")]
    Migrate(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A failure of the JSON read path's SQLite connections.
    #[error("database error: {0}")]
    Read(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("stored data is corrupt ({0})")]
    Corrupt(String),
    /// A write of a sync whose lease was taken over by another sync.
    #[error(
        "connection {connection_id}: this sync no longer holds its sync lease (generation {generation}): another sync took it over or the connection was deleted; nothing was written"
    )]
    LeaseLost { connection_id: i64, generation: i64 },
}

impl StoreError {
    pub(crate) fn lease_lost(token: LeaseToken) -> StoreError {
        StoreError::LeaseLost {
            connection_id: token.connection_id,
            generation: token.generation,
        }
    }
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
    pub last_sync_status: SyncOutcome,
    /// Our own summary of why the last sync did not succeed.
    pub last_sync_error: Option<String>,
    /// Goes up each time the credentials change.
    pub credentials_version: i64,
    /// The `credentials_version` the last sync used.
    pub last_sync_credentials_version: Option<i64>,
    /// Who holds the sync lease ("pid N on HOST"), while a sync runs or
    /// after one was killed before it could let go.
    pub lease_owner: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    /// An open-banking connection's consent as its last sync saw it.
    pub consent: Option<ConsentRecord>,
}

/// The bank's consent of an open-banking connection.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConsentRecord {
    /// The bank's `consentStatus` (`valid`, `expired`, `revokedByPsu`, …).
    pub status: String,
    pub valid_until: Option<NaiveDate>,
    /// The expiry a warning was sent for, if one was.
    pub warned_for: Option<NaiveDate>,
}

impl Connection {
    /// The bank refused these very credentials (not ones replaced since):
    /// sending them again would count another failed login, and banks lock
    /// the customer after a few.
    pub fn credentials_refused(&self) -> bool {
        self.last_sync_status == SyncOutcome::CredentialsRefused
            && self.last_sync_credentials_version == Some(self.credentials_version)
    }
}

/// How the last sync of a connection ended, stored as its snake_case name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncOutcome {
    /// Not synced yet.
    Never,
    Ok,
    /// The bank wants a person (strong customer authentication).
    NeedsUser,
    /// The bank refused the login: not tried again until the credentials
    /// change or an admin forces it.
    CredentialsRefused,
    Failed,
}

impl SyncOutcome {
    pub const ALL: [SyncOutcome; 5] = [
        SyncOutcome::Never,
        SyncOutcome::Ok,
        SyncOutcome::NeedsUser,
        SyncOutcome::CredentialsRefused,
        SyncOutcome::Failed,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            SyncOutcome::Never => "never",
            SyncOutcome::Ok => "ok",
            SyncOutcome::NeedsUser => "needs_user",
            SyncOutcome::CredentialsRefused => "credentials_refused",
            SyncOutcome::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<SyncOutcome> {
        SyncOutcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

impl fmt::Display for SyncOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`Connections::update_connection`] changes; `None` leaves a field as it is.
#[derive(Clone, Default, PartialEq)]
pub struct ConnectionUpdate {
    /// New `ConnectionSettings` as JSON.
    pub settings: Option<serde_json::Value>,
    /// New AEAD-sealed credentials: `credentials_version` goes up.
    pub credentials_sealed: Option<Vec<u8>>,
    /// Forget the kept bank session (the login it came from no longer holds).
    pub clear_session: bool,
}

impl fmt::Debug for ConnectionUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionUpdate")
            .field("settings", &self.settings)
            .field(
                "credentials_sealed",
                &self.credentials_sealed.as_ref().map(|_| "[sealed]"),
            )
            .field("clear_session", &self.clear_session)
            .finish()
    }
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
            .field("credentials_version", &self.credentials_version)
            .finish()
    }
}

/// Outcome of asking for the right to sync one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lease {
    Acquired(LeaseToken),
    /// Someone else holds it until `until`.
    Held {
        owner: String,
        until: DateTime<Utc>,
    },
}

/// Proof of holding a connection's sync lease: the lease generation this
/// acquisition got. The generation grows with every acquisition, so a sync
/// whose lease lapsed and was taken by another holds a stale token, and every
/// write of a sync carries its token: the store checks it in the write's own
/// database transaction and refuses a stale one with
/// [`StoreError::LeaseLost`], writing nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LeaseToken {
    pub connection_id: i64,
    pub generation: i64,
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
    /// The sync's lease on the account's connection: checked in the commit's
    /// transaction.
    pub lease: LeaseToken,
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

/// What [`BankWrites::commit_window`] wrote: balances only count when their value changed.
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
    /// Only rows of this category.
    pub category: Option<String>,
    /// Keyset position: rows strictly after (booking_date, id) in the
    /// query's order (before it when `newest_first`).
    pub after: Option<(NaiveDate, i64)>,
    /// Newest first: booking date, then id, both descending.
    pub newest_first: bool,
    /// `None` for streams (export); pages are capped by the caller.
    pub limit: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Read,
    Write,
    Admin,
    /// A flow-check agent: the agent routes only (their jobs carry stored
    /// secrets), so a remote agent's token can do nothing else.
    Agent,
    /// A card agent: takes and answers the card jobs of its own card host
    /// (they carry a PIN sealed to the host), nothing else.
    CardAgent,
}

impl Scope {
    pub fn as_str(&self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
            Scope::Agent => "agent",
            Scope::CardAgent => "card-agent",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Some(match s {
            "read" => Scope::Read,
            "write" => Scope::Write,
            "admin" => Scope::Admin,
            "agent" => Scope::Agent,
            "card-agent" => Scope::CardAgent,
            _ => return None,
        })
    }

    /// Admin may do what write may, write what read may; the two agent
    /// scopes stand apart: each may do only what needs it, which admin may
    /// do too.
    pub fn allows(&self, needed: Scope) -> bool {
        match (*self, needed) {
            (have @ (Scope::Agent | Scope::CardAgent), needed) => needed == have,
            (have, Scope::Agent | Scope::CardAgent) => have == Scope::Admin,
            (have, needed) => have.rank() >= needed.rank(),
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Scope::Read => 0,
            Scope::Write => 1,
            Scope::Admin => 2,
            // Not on the ladder: `allows` settles agents before comparing ranks.
            Scope::Agent | Scope::CardAgent => 0,
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
    /// An `agent` token serves this check location only.
    pub location: Option<String>,
    /// When the token stops working; `None`: never.
    pub expires_at: Option<DateTime<Utc>>,
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

/// An account's balance now, as a person asks for it: the newest booked
/// (closing) balance, else the newest available one.
pub fn current_balance(balances: &[StoredBalance]) -> Option<&StoredBalance> {
    let newest = |kind: BalanceKind| {
        balances
            .iter()
            .filter(|b| b.balance.kind == kind)
            .max_by_key(|b| (b.balance.reference_date, b.fetched_at))
    };
    newest(BalanceKind::ClosingBooked).or_else(|| newest(BalanceKind::Available))
}

/// What deleting a connection deletes with it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionFootprint {
    pub accounts: u64,
    /// Every row: booked, pending and void.
    pub transactions: u64,
    pub documents: u64,
}

/// Count and sum of booked transactions of one account (to check against a bank's truth).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountTotals {
    pub booked_count: u64,
    #[serde(with = "rust_decimal::serde::str")]
    pub booked_sum: Decimal,
}

/// Booked money out (`debit`, zero or negative) and in (`credit`) of one
/// group of transactions, in one currency: a month of an account, or a
/// category over a period (see [`BankData::flows`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// The group: `YYYY-MM` for a month, the category (`None`: none) for a category.
    pub key: Option<String>,
    /// The account, for months; `None` for categories.
    pub account_id: Option<i64>,
    pub currency: bankbridge_core::Currency,
    pub debit: Decimal,
    pub credit: Decimal,
    pub count: u64,
}

/// How [`BankData::flows`] groups booked transactions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowGrouping {
    /// Per account, calendar month and currency.
    AccountMonth,
    /// Per category and currency, all accounts together.
    Category,
}

/// Connections, their sync leases, and facts about the database. Held by
/// the commands and routes that manage connections, and by the sync engine.
#[async_trait]
pub trait Connections: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    async fn create_connection(&self, new: &NewConnection) -> Result<Connection>;
    async fn list_connections(&self) -> Result<Vec<Connection>>;
    async fn get_connection(&self, id: i64) -> Result<Option<Connection>>;
    /// By numeric id or by name.
    async fn find_connection(&self, id_or_name: &str) -> Result<Option<Connection>>;
    /// Deletes the connection with its accounts, transactions, balances,
    /// checkpoints and documents (and the document bytes no other document shares).
    async fn delete_connection(&self, id: i64) -> Result<bool>;
    /// Note that the warning for the consent that expires on `valid_until`
    /// went out; false when it already had (another process sent it).
    async fn mark_consent_warned(&self, id: i64, valid_until: NaiveDate) -> Result<bool>;
    /// How many accounts, transactions and documents the connection holds
    /// (`None`: no such connection).
    async fn connection_footprint(&self, id: i64) -> Result<Option<ConnectionFootprint>>;
    /// Changes what `update` carries. `None` when there is no such connection.
    async fn update_connection(
        &self,
        id: i64,
        update: &ConnectionUpdate,
    ) -> Result<Option<Connection>>;
    /// A fact about the database (see migration 0010), if recorded.
    async fn meta(&self, name: &str) -> Result<Option<String>>;
    /// Record `value` under `name` unless something is recorded already;
    /// returns what is recorded now (atomic: of two racing callers, both
    /// get the first value).
    async fn init_meta(&self, name: &str, value: &str) -> Result<String>;
    /// Take the right to sync a connection until `until`, if nobody holds
    /// it at `now` (free, released, or lapsed). Each acquisition gets a new,
    /// higher generation in its [`LeaseToken`]. Atomic across processes
    /// sharing the database; an owner that already holds the lease gets
    /// `Held` like anyone else (two syncs of one process stay apart too).
    async fn acquire_sync_lease(
        &self,
        connection_id: i64,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Lease>;
    /// The scheduler's claim on one scheduled sync: the lease, as
    /// [`Connections::acquire_sync_lease`], but only while the connection's
    /// `last_sync_at` is still `seen` (what made it due). Instances sharing
    /// the database each see a connection due; the first claim wins, and
    /// once its sync has recorded a new `last_sync_at` a stale claim fails
    /// too. `None`: held, or synced since.
    async fn claim_scheduled_sync(
        &self,
        connection_id: i64,
        owner: &str,
        seen: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<LeaseToken>>;
    /// Extend a held lease to `until`; [`StoreError::LeaseLost`] when
    /// another acquisition has happened since `lease` was taken.
    async fn renew_sync_lease(&self, lease: LeaseToken, until: DateTime<Utc>) -> Result<()>;
    /// Let go of a lease; a no-op when it was taken over meanwhile.
    async fn release_sync_lease(&self, lease: LeaseToken) -> Result<()>;
}

/// Bank data, read: accounts, balances, transactions, documents, sync
/// checkpoints. What the API, the dashboard and the exports hold.
#[async_trait]
pub trait BankData: Send + Sync + 'static {
    async fn list_accounts(&self, connection_id: Option<i64>) -> Result<Vec<Account>>;
    async fn get_account(&self, id: i64) -> Result<Option<Account>>;
    async fn list_balances(&self, account_id: i64) -> Result<Vec<StoredBalance>>;
    async fn account_totals(&self, account_id: i64) -> Result<AccountTotals>;
    /// When a transaction last changed (inserted, updated, voided, given a
    /// category): the newest `updated_at`; None with no transactions. What
    /// is computed from transactions stays valid while this and the set of
    /// accounts (a deleted connection takes its rows along) stay the same.
    async fn transactions_changed_at(&self) -> Result<Option<DateTime<Utc>>>;
    /// The months (`YYYY-MM`) of the transactions changed after `since`:
    /// what to sum anew after a sync or an edit, instead of everything.
    async fn months_changed_since(&self, since: DateTime<Utc>) -> Result<Vec<String>>;
    /// Booked money out and in between `from` and `to` (inclusive), grouped
    /// by `grouping`, ordered by the group. Exact on PostgreSQL; on SQLite
    /// exact to 1/10,000 of the currency unit for amounts below 10^11.
    async fn flows(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        grouping: FlowGrouping,
    ) -> Result<Vec<Flow>>;
    async fn checkpoint(&self, account_id: i64) -> Result<Checkpoint>;
    /// Stored rows of an account with booking date in `from..=to`.
    async fn load_window(
        &self,
        account_id: i64,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<Transaction>>;
    /// Rows ordered by (booking_date, id).
    async fn query_transactions(&self, query: &TxQuery) -> Result<Vec<Transaction>>;
    /// The same rows as a stream, for exports in constant memory.
    fn stream_transactions(&self, query: TxQuery) -> BoxStream<'_, Result<Transaction>>;
    /// A page of the rows `query` selects (at most `query.limit`) written
    /// into `out` as JSON objects separated by commas, each the bytes
    /// `serde_json` writes for its [`Transaction`]; says whether more follow.
    /// The API's page path: no `Transaction` is built (see `tx_json`).
    async fn transactions_page_json(&self, query: &TxQuery, out: &mut Vec<u8>) -> Result<JsonPage>;
    /// Every row `query` selects as JSON, in chunks of whole rows, in
    /// constant memory: the JSON export's path.
    fn stream_transactions_json(&self, query: TxQuery) -> BoxStream<'_, Result<JsonChunk>>;
    /// Provider keys of the documents a connection already has (a sync skips them).
    async fn document_keys(&self, connection_id: i64) -> Result<std::collections::HashSet<String>>;
    /// Ordered by date (undated last), then id.
    async fn list_documents(&self, query: &DocumentQuery) -> Result<Vec<Document>>;
    async fn get_document(&self, id: i64) -> Result<Option<Document>>;
    /// A document with its bytes (checked against its SHA-256).
    async fn document_content(&self, id: i64) -> Result<Option<(Document, Vec<u8>)>>;
}

/// Bank data, written. Only the sync engine (every write fenced by its
/// lease) and `categorize` (category columns) hold this trait: routes and
/// commands get [`BankData`], so the compiler keeps them read-only.
#[async_trait]
pub trait BankWrites: Send + Sync + 'static {
    /// Insert or refresh an account of the lease's connection; `last_seen`
    /// moves to `now`.
    async fn upsert_account(
        &self,
        lease: LeaseToken,
        account: &FetchedAccount,
        now: DateTime<Utc>,
    ) -> Result<Account>;
    async fn commit_window(&self, commit: &WindowCommit) -> Result<CommitStats>;
    /// Store a document and its bytes in one transaction: the bytes once per
    /// SHA-256 (computed here), the document once per (connection, provider
    /// key). A document already stored is returned unchanged (`inserted`
    /// false), whatever bytes came with it. `NotFound` for an unknown
    /// connection or account; `Conflict` for an empty key, kind, title or
    /// content type, or a document of another connection than the lease's.
    async fn save_document(
        &self,
        lease: LeaseToken,
        doc: &NewDocument,
        content: &[u8],
    ) -> Result<SavedDocument>;
    /// Keep the bank session a sync holds (fenced by its lease).
    async fn save_session(&self, lease: LeaseToken, session_sealed: Option<&[u8]>) -> Result<()>;
    /// The consent the sync's bank reports (fenced by its lease).
    async fn record_consent(
        &self,
        lease: LeaseToken,
        status: &str,
        valid_until: Option<NaiveDate>,
    ) -> Result<()>;
    /// The outcome of a sync that used the credentials of version
    /// `credentials_version` (fenced by its lease: a sync that lost it leaves
    /// the outcome to the sync that took over).
    async fn record_sync_result(
        &self,
        lease: LeaseToken,
        at: DateTime<Utc>,
        outcome: SyncOutcome,
        error: Option<&str>,
        credentials_version: i64,
    ) -> Result<()>;
    /// Set the category of rows by id (one transaction); rows whose category
    /// is already the wanted one, and rows whose category a person set by
    /// hand ([`UserEdits`]), are not touched. Returns the rows changed.
    async fn set_categories(
        &self,
        changes: &[(i64, Option<String>)],
        now: DateTime<Utc>,
    ) -> Result<u64>;
}

/// API tokens (only hashes of their secrets are kept).
#[async_trait]
pub trait Tokens: Send + Sync + 'static {
    async fn create_token(&self, record: &TokenRecord) -> Result<()>;
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>>;
    async fn find_token(&self, id: &str) -> Result<Option<TokenRecord>>;
    /// By id or name; false when none matched.
    async fn revoke_token(&self, id_or_name: &str, at: DateTime<Utc>) -> Result<bool>;
    async fn touch_token(&self, id: &str, at: DateTime<Utc>) -> Result<()>;
    /// Keep a one-time sign-in link: the SHA-256 of its secret, for `token_id`.
    async fn create_login_link(
        &self,
        hash: &[u8],
        token_id: &str,
        created_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<()>;
    /// Use the link whose secret hashes to `hash`, once: its token id, or
    /// None when no unused, unexpired link matches. A link is spent by this
    /// call whatever it answers.
    async fn use_login_link(&self, hash: &[u8], now: DateTime<Utc>) -> Result<Option<String>>;
}

/// What a person changes by hand in bank data: only their own choices (a
/// transaction's category), never a field the bank sent.
#[async_trait]
pub trait UserEdits: Send + Sync + 'static {
    /// Set a transaction's category by hand (category rules never overwrite
    /// it), or with `None` clear it and hand it back to the rules. False
    /// when there is no such transaction.
    async fn set_manual_category(
        &self,
        id: i64,
        category: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool>;
}

/// Sync runs requested through the API, pollable by id.
#[async_trait]
pub trait SyncJobs: Send + Sync + 'static {
    async fn create_sync_job(&self, connection_id: i64, at: DateTime<Utc>) -> Result<SyncJob>;
    async fn update_sync_job(&self, job: &SyncJob) -> Result<()>;
    async fn get_sync_job(&self, id: i64) -> Result<Option<SyncJob>>;
}

/// The card-reader service's records: institutions, cards (their PIN
/// sealed), and the audit of every use.
#[async_trait]
pub trait CardRecords: Send + Sync + 'static {
    /// `Conflict` when the id or the name is taken, or a field is malformed
    /// (empty id or name, country not an upper-case ISO 3166-1 alpha-2 code).
    async fn create_institution(&self, new: &NewInstitution) -> Result<Institution>;
    /// Ordered by name.
    async fn list_institutions(&self) -> Result<Vec<Institution>>;
    async fn get_institution(&self, id: &str) -> Result<Option<Institution>>;
    /// False when there was no such institution; `Conflict` (naming its
    /// cards) while it still has cards.
    async fn delete_institution(&self, id: &str) -> Result<bool>;
    /// The card starts `active`. `NotFound` for an unknown institution;
    /// `Conflict` when the reader already holds a card (naming it), the id is
    /// taken, or a field is malformed (empty id, reader or label; `pan_last4`
    /// not four digits; `psn` not two hex digits; `records_digest` not 64 hex
    /// digits; neither of those two; empty sealed PIN).
    async fn create_card(&self, new: &NewCard) -> Result<Card>;
    /// All cards, or one institution's; ordered by label, then id.
    async fn list_cards(&self, institution_id: Option<&str>) -> Result<Vec<Card>>;
    async fn get_card(&self, id: &str) -> Result<Option<Card>>;
    /// The card in `reader` of card host `host` (`None`: the server's own readers).
    async fn find_card_by_reader(&self, host: Option<&str>, reader: &str) -> Result<Option<Card>>;
    /// Changes the fields `update` carries and sets `updated_at` to `now`;
    /// `None` when there is no such card. A new PIN clears `pin_refused`;
    /// enabling a `pin_refused` card without a new PIN is a `Conflict`.
    async fn update_card(
        &self,
        id: &str,
        update: &CardUpdate,
        now: DateTime<Utc>,
    ) -> Result<Option<Card>>;
    /// Take a card out of use (`Disabled` or `Blocked`) only if it is still
    /// active: an atomic compare-and-set, so that of two requests racing on a
    /// wrong PIN only one sees `true` (and both stop using the card). False
    /// when the card was no longer active or no longer exists; `Conflict`
    /// when `status` is `Active` (re-activate with [`CardRecords::update_card`]).
    async fn set_card_status(
        &self,
        id: &str,
        status: CardStatus,
        reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    /// Take a card out of use because it may have counted a wrong PIN:
    /// `pin_refused`, and `blocked` (when `blocked` or already so) or else
    /// `disabled`, whatever its status was. Idempotent (the card service
    /// retries it until it lands). False when there is no such card.
    async fn mark_card_pin_refused(
        &self,
        id: &str,
        reason: &str,
        blocked: bool,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    /// Record a use: `last_used_at` moves to `at` (never backwards). A card
    /// deleted meanwhile is no error (like [`Tokens::touch_token`]): the use
    /// itself succeeded.
    /// A successful use at `at`, with the PIN tries the card said it has left.
    async fn touch_card(
        &self,
        id: &str,
        at: DateTime<Utc>,
        pin_tries_left: Option<u8>,
    ) -> Result<()>;
    /// False when there was no such card. Its audit entries are kept.
    async fn delete_card(&self, id: &str) -> Result<bool>;
    /// Appends the entry (its `id` is ignored) and returns the id it got.
    /// Ids are handed out in increasing order; pages are keyed on them.
    async fn record_card_audit(&self, entry: &CardAuditEntry) -> Result<i64>;
    /// Newest first (by id), at most `query.limit` entries.
    async fn list_card_audit(&self, query: &CardAuditQuery) -> Result<Vec<CardAuditEntry>>;
}

/// Flow-check results, the scheduler's state, and flow secrets (sealed).
#[async_trait]
pub trait FlowChecks: Send + Sync + 'static {
    /// One database transaction: the run row and all its step rows, or
    /// nothing. `Conflict` (nothing written) for an empty check id, location
    /// or round id, an unknown trigger or outcome, a negative duration or
    /// index, attempts below 1, two steps with one index, or a step detail
    /// that is not valid JSON.
    async fn save_check_run(&self, run: &NewCheckRun) -> Result<CheckRun>;
    /// Newest first (id descending), filtered; `before_id` pages backwards.
    async fn list_check_runs(&self, query: &CheckRunQuery) -> Result<Vec<CheckRun>>;
    /// The run with its steps in index order.
    async fn get_check_run(&self, id: i64) -> Result<Option<(CheckRun, Vec<CheckStep>)>>;
    /// Retention: delete runs (and their steps) that started before
    /// `older_than`, except the newest `keep_latest` runs of each check id
    /// (so a check that stopped running keeps its last results). Returns how
    /// many runs were deleted.
    async fn prune_check_runs(&self, older_than: DateTime<Utc>, keep_latest: u32) -> Result<u64>;
    /// The scheduler's per-check state (health, streaks, last alerts) as JSON
    /// text, so a restart resumes without re-alerting. Replaces the check's
    /// previous state; `Conflict` for an empty check id or invalid JSON.
    async fn put_check_state(
        &self,
        check_id: &str,
        state_json: &str,
        at: DateTime<Utc>,
    ) -> Result<()>;
    /// Every check's state as (check id, state JSON), ordered by check id.
    async fn check_states(&self) -> Result<Vec<(String, String)>>;
    /// One check's state JSON, exactly as stored.
    async fn check_state(&self, check_id: &str) -> Result<Option<String>>;
    /// Replace a check's state only if it is still `old` (`None`: there is
    /// none yet); false when another server changed it first. Servers that
    /// share the database close rounds of one check: each reads, observes
    /// and swaps, so every change of health is counted (and alerted) once.
    async fn swap_check_state(
        &self,
        check_id: &str,
        old: Option<&str>,
        new: &str,
        at: DateTime<Utc>,
    ) -> Result<bool>;
    /// [`FlowChecks::swap_check_state`], and in the same transaction the
    /// alerts that the change calls for go to the outbox (see
    /// [`CheckWork::claim_alerts`]): a change and its alerts are stored
    /// together, or neither is.
    async fn swap_check_state_with_alerts(
        &self,
        check_id: &str,
        old: Option<&str>,
        new: &str,
        at: DateTime<Utc>,
        alerts: &[OutboxAlert],
    ) -> Result<bool>;
    /// Claim the work of one slot of `check_id` (a scheduled round, a
    /// day's certificate alert): true for the first claim only, whichever
    /// server makes it. Old claims go with [`FlowChecks::prune_check_claims`].
    async fn claim_check_slot(
        &self,
        check_id: &str,
        slot_ms: i64,
        owner: &str,
        at: DateTime<Utc>,
    ) -> Result<bool>;
    /// Delete the slot claims made before `older_than` (a claim matters
    /// only while its slot is current); returns how many.
    async fn prune_check_claims(&self, older_than: DateTime<Utc>) -> Result<u64>;
    /// Stores a flow secret, already sealed by the caller (replacing one of
    /// the same name); true when it is new. `Conflict` for a name that is
    /// not 1–100 of `A-Z a-z 0-9 _ - .`.
    async fn put_check_secret(&self, name: &str, sealed: &[u8], at: DateTime<Utc>) -> Result<bool>;
    /// The sealed value of a flow secret.
    async fn get_check_secret(&self, name: &str) -> Result<Option<Vec<u8>>>;
    /// Names and change times of the flow secrets (never their values).
    async fn list_check_secrets(&self) -> Result<Vec<CheckSecretInfo>>;
    async fn delete_check_secret(&self, name: &str) -> Result<bool>;
}

/// The whole store: every part above. Only composition roots (the binary's
/// commands, the server's constructor, tests) hold it, to hand each part to
/// the code that needs it; the sync engine holds it as the one writer.
pub trait Store:
    Connections
    + BankData
    + BankWrites
    + UserEdits
    + Tokens
    + SyncJobs
    + CardRecords
    + FlowChecks
    + Outbound
    + Instances
    + BankIdOrders
    + CheckWork
{
}

impl<T> Store for T where
    T: Connections
        + BankData
        + BankWrites
        + UserEdits
        + Tokens
        + SyncJobs
        + CardRecords
        + FlowChecks
        + Outbound
        + Instances
        + BankIdOrders
        + CheckWork
{
}

/// The store split by domain, for code that must not write bank data: the
/// API's handlers, the card and check services, the commands that only
/// read. [`BankWrites`] is not among the parts, so the compiler keeps all of
/// them away from bank data; the sync engine (and `categorize`) hold the
/// whole [`Store`] instead.
#[derive(Clone)]
pub struct StoreParts {
    pub bank: std::sync::Arc<dyn BankData>,
    pub edits: std::sync::Arc<dyn UserEdits>,
    pub connections: std::sync::Arc<dyn Connections>,
    pub tokens: std::sync::Arc<dyn Tokens>,
    pub jobs: std::sync::Arc<dyn SyncJobs>,
    pub cards: std::sync::Arc<dyn CardRecords>,
    pub checks: std::sync::Arc<dyn FlowChecks>,
    pub outbound: std::sync::Arc<dyn Outbound>,
    pub instances: std::sync::Arc<dyn Instances>,
    pub bankid_orders: std::sync::Arc<dyn BankIdOrders>,
    pub check_work: std::sync::Arc<dyn CheckWork>,
}

impl StoreParts {
    pub fn of(store: &std::sync::Arc<dyn Store>) -> Self {
        Self {
            bank: store.clone(),
            edits: store.clone(),
            connections: store.clone(),
            tokens: store.clone(),
            jobs: store.clone(),
            cards: store.clone(),
            checks: store.clone(),
            outbound: store.clone(),
            instances: store.clone(),
            bankid_orders: store.clone(),
            check_work: store.clone(),
        }
    }
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
