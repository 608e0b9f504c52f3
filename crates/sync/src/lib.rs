//! The sync engine: the only writer of bank data.
//!
//! [`Syncer::sync`] logs a connector in, lists accounts, plans date windows
//! from the connector's limits and the account's [`Checkpoint`], fetches each
//! window with retries, reconciles it against what is stored
//! ([`reconcile::plan`]) and commits it atomically with the new checkpoint.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use bankbridge_core::{
    ConnectionSettings, Connector, ConnectorError, Credentials, CryptoError, DateWindow, MasterKey,
    Secret,
};
use bankbridge_store::{Connection, NewConnection, Store, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub mod engine;
pub mod plan;
pub mod reconcile;

/// Builds the connector a connection names. Given by the binary (which knows
/// every connector) so this crate depends on no bank.
pub type ConnectorFactory = Arc<
    dyn Fn(&Connection, &ConnectionSettings, Credentials) -> Result<Box<dyn Connector>, String>
        + Send
        + Sync,
>;

/// Tunables of a sync run; the defaults suit a real bank.
#[derive(Clone, Debug)]
pub struct SyncOptions {
    /// Attempts per request before a transient fault fails the sync.
    pub max_attempts: u32,
    /// First retry pause; doubles each attempt, capped at `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How long a sync may hold its connection before another may take it over.
    pub lease_ttl: Duration,
    /// Backfill stops after this many consecutive empty windows.
    pub empty_streak_limit: u32,
    /// Who holds the lease (shown to a second sync that has to wait).
    pub owner: String,
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            lease_ttl: Duration::from_secs(120),
            empty_streak_limit: 12,
            owner: format!("pid {} on {}", std::process::id(), hostname()),
        }
    }
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}

/// Counts of one sync run, printed by `sync --json` and kept on the sync job.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncSummary {
    pub connection: String,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub voided: u64,
    pub windows: u64,
    pub accounts: u64,
}

impl SyncSummary {
    pub fn add(&mut self, s: &reconcile::ReconcileStats) {
        self.inserted += s.inserted;
        self.updated += s.updated;
        self.unchanged += s.unchanged;
        self.voided += s.voided;
    }
}

/// Progress of a running sync, for progress bars and logs.
#[derive(Clone, Debug)]
pub enum SyncEvent {
    LoggedIn,
    Accounts {
        count: usize,
    },
    Planned {
        account: String,
        windows: usize,
    },
    WindowDone {
        account: String,
        window: DateWindow,
        stats: reconcile::ReconcileStats,
    },
    Retrying {
        what: String,
        attempt: u32,
        delay: Duration,
        reason: String,
    },
    Relogin,
    WindowShrunk {
        account: String,
        window: DateWindow,
        new_days: u32,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(
        "connection {connection:?} is being synced by {owner} (lease until {until}); try again later"
    )]
    Busy {
        connection: String,
        owner: String,
        until: DateTime<Utc>,
    },
    #[error("connection {connection:?} has bad settings: {detail}")]
    Settings { connection: String, detail: String },
    #[error("cannot build the {connector} connector: {detail}")]
    Factory { connector: String, detail: String },
}

/// The sealing purpose of a connection's credentials (binds the blob to its row).
pub fn credentials_purpose(connection_name: &str) -> String {
    format!("bankbridge/connection/{connection_name}/credentials")
}

pub fn session_purpose(connection_name: &str) -> String {
    format!("bankbridge/connection/{connection_name}/session")
}

/// Seal credentials and create a connection.
pub async fn add_connection(
    store: &dyn Store,
    key: &MasterKey,
    name: &str,
    connector: &str,
    settings: &ConnectionSettings,
    credentials: &Credentials,
) -> Result<Connection, SyncError> {
    let sealed = key.seal(
        credentials.to_json_for_sealing().as_bytes(),
        &credentials_purpose(name),
    );
    let new = NewConnection {
        name: name.to_owned(),
        connector: connector.to_owned(),
        settings: serde_json::to_value(settings).expect("settings serialise"),
        credentials_sealed: sealed,
    };
    Ok(store.create_connection(&new).await?)
}

/// Runs syncs: owns the store, the master key and the connector factory.
#[derive(Clone)]
pub struct Syncer {
    pub store: Arc<dyn Store>,
    pub key: Arc<MasterKey>,
    pub factory: ConnectorFactory,
    pub options: SyncOptions,
}

impl Syncer {
    pub fn new(store: Arc<dyn Store>, key: Arc<MasterKey>, factory: ConnectorFactory) -> Self {
        Self {
            store,
            key,
            factory,
            options: SyncOptions::default(),
        }
    }

    /// Sync one connection to the bank's present: takes the connection's
    /// lease, logs in (reusing a kept session), syncs every account, keeps the
    /// session and records the outcome on the connection.
    pub async fn sync(
        &self,
        connection: &Connection,
        progress: &(dyn Fn(SyncEvent) + Send + Sync),
    ) -> Result<SyncSummary, SyncError> {
        engine::sync_connection(self, connection, progress).await
    }

    /// Decrypt a connection's credentials.
    pub fn credentials(&self, connection: &Connection) -> Result<Credentials, SyncError> {
        let json = self.key.open_str(
            &connection.credentials_sealed,
            &credentials_purpose(&connection.name),
        )?;
        Credentials::from_json(json.expose()).map_err(|e| SyncError::Settings {
            connection: connection.name.clone(),
            detail: format!("sealed credentials are not a JSON object: {e}"),
        })
    }

    pub fn settings(connection: &Connection) -> Result<ConnectionSettings, SyncError> {
        serde_json::from_value(connection.settings.clone()).map_err(|e| SyncError::Settings {
            connection: connection.name.clone(),
            detail: e.to_string(),
        })
    }

    pub(crate) fn open_session(&self, connection: &Connection) -> Option<Secret<String>> {
        let sealed = connection.session_sealed.as_ref()?;
        self.key
            .open_str(sealed, &session_purpose(&connection.name))
            .ok()
    }
}

#[cfg(test)]
mod send_check {
    /// The server runs syncs on tokio tasks: the future must be `Send`.
    #[allow(dead_code)]
    fn sync_future_is_send(s: &super::Syncer, c: &bankbridge_store::Connection) {
        fn assert_send<T: Send>(_: &T) {}
        let f = s.sync(c, &|_| {});
        assert_send(&f);
    }
}
