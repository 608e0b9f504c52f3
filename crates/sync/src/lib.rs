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
    ScaChallenge, ScaSolver, Secret, Unattended,
};
use bankbridge_store::{Connection, LeaseToken, Store, StoreError, SyncOutcome};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

pub mod connections;
pub mod engine;
pub mod plan;
pub mod reconcile;
pub mod window;

pub use engine::SyncActivity;

pub use connections::{
    ConnectionChange, add_connection, check_master_key, check_name, check_password, check_settings,
    credentials_purpose, same_login, session_purpose, update_connection,
};

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
    /// How long the sync lease lasts without renewal. A heartbeat renews it
    /// every third of this while the sync runs, whatever the sync waits on;
    /// a sync that died is taken over once it lapses.
    pub lease_ttl: Duration,
    /// Longest pause a bank's `Retry-After` may impose before a retry (a
    /// bank asking for an hour would otherwise hold the sync that long).
    pub max_retry_after: Duration,
    /// Backfill stops after this many consecutive empty windows.
    pub empty_streak_limit: u32,
    /// Who holds the lease (shown to a second sync that has to wait): pid,
    /// host and a random id drawn at process start, so a restarted process
    /// that got the same pid is still another owner.
    pub owner: String,
    /// Longest wait for a strong customer authentication the bank did not
    /// give an expiry for (a decoupled approval, a code).
    pub sca_timeout: Duration,
    /// Category rules applied to the rows each sync writes (first match wins).
    pub categories: Option<std::sync::Arc<bankbridge_core::categories::Rules>>,
    /// Send credentials the bank refused before (an admin's explicit
    /// choice); otherwise such a connection is not synced until they change.
    pub retry_refused_credentials: bool,
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            lease_ttl: Duration::from_secs(120),
            max_retry_after: Duration::from_secs(300),
            empty_streak_limit: 12,
            owner: process_owner().to_owned(),
            sca_timeout: Duration::from_secs(600),
            categories: None,
            retry_refused_credentials: false,
        }
    }
}

/// This process's lease owner name: "pid N on HOST (run XXXXXXXX)", the
/// run id drawn once per process start.
pub fn process_owner() -> &'static str {
    static OWNER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    OWNER.get_or_init(|| {
        format!(
            "pid {} on {} (run {:08x})",
            std::process::id(),
            hostname(),
            rand::random::<u32>()
        )
    })
}

/// This machine's name, as lease owners and default instance names carry it.
pub fn hostname() -> String {
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
    /// Documents (statements) stored by this run; already stored ones are not counted.
    #[serde(default)]
    pub documents: u64,
    /// Accounts (or, before the account list, the whole connection: 1)
    /// whose fetching waits for the bank's request budget: a later sync goes
    /// on from where this one stopped.
    #[serde(default)]
    pub deferred: u64,
    /// Why, and until when, in the connector's words.
    #[serde(default)]
    pub deferred_reason: Option<String>,
}

impl SyncSummary {
    /// Note a fetch the bank's budget could not afford.
    pub fn defer(&mut self, reason: String) {
        self.deferred += 1;
        self.deferred_reason = Some(reason);
    }

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
    /// The bank asked for strong customer authentication; the solver is asked.
    ScaRequired {
        challenge: ScaChallenge,
    },
    /// The authentication went through; the sync goes on.
    ScaDone,
    /// Nobody could answer: this account's sync stops at the boundary (what
    /// came before is committed).
    ScaStopped {
        account: String,
        oldest_stored: Option<NaiveDate>,
    },
    /// The bank's request budget has no room for this account's next call:
    /// it waits for a later sync (why, until when).
    Deferred {
        account: String,
        reason: String,
    },
    /// Documents listed by the bank and how many of them were new and stored.
    Documents {
        listed: usize,
        stored: u64,
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
    /// The heartbeat found the lease taken over (this sync stalled longer
    /// than the lease, and another sync took it): this one stops, writing
    /// nothing more.
    #[error(
        "connection {connection:?}: another sync took over the sync lease while this one was stalled; \
         this one stopped without writing more (the other carries on)"
    )]
    LeaseLost { connection: String },
    #[error("connection {connection:?} has bad settings: {detail}")]
    Settings { connection: String, detail: String },
    /// The master key is not the one this database's secrets are sealed with.
    #[error(
        "the master key in use (check value {given}) is not the one this database's secrets are sealed \
         with (check value {recorded}). Set BANKBRIDGE_MASTER_KEY or the master.key file to the key the \
         database was created with; nothing was sealed under the wrong key"
    )]
    WrongMasterKey { recorded: String, given: String },
    /// A connection setting or credential given is not acceptable.
    #[error("{field}: {message}")]
    InvalidField {
        field: &'static str,
        message: String,
    },
    #[error("cannot build the {connector} connector: {detail}")]
    Factory { connector: String, detail: String },
    /// The bank wants a person (strong customer authentication) and none
    /// answered: everything fetched before that point is committed.
    #[error(
        "the bank needs strong customer authentication to go on ({challenge}); the sync stopped there{}. \
         Sync again where someone can approve, e.g. `bankbridge sync --connection {connection}` in a terminal",
        stored_from.map(|d| format!(" with every transaction from {d} on stored")).unwrap_or_default()
    )]
    NeedsUser {
        connection: String,
        challenge: ScaChallenge,
        /// The oldest day stored of the account that stopped, when known.
        stored_from: Option<NaiveDate>,
        /// What the run did before it stopped.
        summary: Box<SyncSummary>,
    },
    #[error("the strong customer authentication could not be answered: {0}")]
    Solver(String),
    /// The bank refused these credentials before: they are not sent again.
    #[error(
        "the bank refused the credentials of connection {connection:?}{}; they are not sent again \
         (banks lock the customer after a few failed logins). Change them with \
         `bankbridge connection update {connection} --password-stdin`, or force one more try \
         with `bankbridge sync --connection {connection} --force`",
        at.map(|t| format!(" at {}", t.format("%Y-%m-%d %H:%M UTC"))).unwrap_or_default()
    )]
    CredentialsRefusedBefore {
        connection: String,
        at: Option<DateTime<Utc>>,
    },
}

impl SyncError {
    /// The bank waits for a person: `needs_user`, not a failure.
    pub fn needs_user(&self) -> bool {
        matches!(
            self,
            SyncError::NeedsUser { .. }
                | SyncError::Connector(
                    ConnectorError::ScaRequired(_) | ConnectorError::NeedsUser(_)
                )
        )
    }

    /// The bank refused the connection's credentials: syncing again on a
    /// clock would only count more failed logins (banks lock after a few).
    pub fn credentials_refused(&self) -> bool {
        matches!(
            self,
            SyncError::Connector(ConnectorError::InvalidCredentials(_))
                | SyncError::CredentialsRefusedBefore { .. }
        )
    }

    /// How a sync that ended this way is recorded on its connection.
    pub fn outcome_of<T>(result: &Result<T, SyncError>) -> SyncOutcome {
        result
            .as_ref()
            .err()
            .map_or(SyncOutcome::Ok, SyncError::outcome)
    }

    /// How a sync that failed this way is recorded.
    pub fn outcome(&self) -> SyncOutcome {
        if self.needs_user() {
            SyncOutcome::NeedsUser
        } else if self.credentials_refused() {
            SyncOutcome::CredentialsRefused
        } else {
            SyncOutcome::Failed
        }
    }

    /// What a run that stopped for a person had done.
    pub fn partial_summary(&self) -> Option<&SyncSummary> {
        match self {
            SyncError::NeedsUser { summary, .. } => Some(summary),
            _ => None,
        }
    }
}

#[cfg(test)]
mod error_tests {
    use super::*;

    #[test]
    fn refused_credentials_have_their_own_outcome() {
        let e = SyncError::Connector(ConnectorError::InvalidCredentials("wrong PIN".into()));
        assert!(e.credentials_refused());
        assert_eq!(
            SyncError::outcome_of::<()>(&Err(e)),
            SyncOutcome::CredentialsRefused
        );
        let again = SyncError::CredentialsRefusedBefore {
            connection: "bank".into(),
            at: None,
        };
        assert!(
            again.to_string().contains("connection update bank"),
            "{again}"
        );
        let n = SyncError::NeedsUser {
            connection: "bank".into(),
            challenge: ScaChallenge::Decoupled {
                message: "approve on your trusted device".into(),
                poll_after_secs: 2,
                reference: None,
                expires_at: None,
            },
            stored_from: NaiveDate::from_ymd_opt(2024, 4, 1),
            summary: Box::default(),
        };
        assert!(n.needs_user());
        let text = n.to_string();
        assert!(text.contains("approve on your trusted device"), "{text}");
        assert!(text.contains("from 2024-04-01 on stored"), "{text}");
        assert!(text.contains("bankbridge sync --connection bank"), "{text}");
    }
}

/// Runs syncs: owns the store, the master key and the connector factory.
#[derive(Clone)]
pub struct Syncer {
    /// The whole store, bank writes included: private, so holding a `Syncer`
    /// (as the server's handlers do) gives no way to write bank data except
    /// by running a sync.
    store: Arc<dyn Store>,
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

    /// Sync one connection to the bank's present, unattended: takes the
    /// connection's lease, logs in (reusing a kept session), syncs every
    /// account and its documents, keeps the session and records the outcome
    /// on the connection. Strong customer authentication stops it in
    /// [`SyncError::NeedsUser`] with everything before it committed.
    pub async fn sync(
        &self,
        connection: &Connection,
        progress: &(dyn Fn(SyncEvent) + Send + Sync),
    ) -> Result<SyncSummary, SyncError> {
        self.sync_with_solver(connection, progress, &Unattended)
            .await
    }

    /// [`Syncer::sync`] with someone (or something) to answer strong
    /// customer authentication: the sync asks `solver` and goes on.
    pub async fn sync_with_solver(
        &self,
        connection: &Connection,
        progress: &(dyn Fn(SyncEvent) + Send + Sync),
        solver: &dyn ScaSolver,
    ) -> Result<SyncSummary, SyncError> {
        self.sync_under(connection, None, progress, solver).await
    }

    /// [`Syncer::sync_with_solver`] under a lease the caller took already
    /// (the scheduler's [`Connections::claim_scheduled_sync`]); the sync
    /// renews and releases it.
    ///
    /// [`Connections::claim_scheduled_sync`]: bankbridge_store::Connections::claim_scheduled_sync
    pub async fn sync_claimed(
        &self,
        connection: &Connection,
        lease: LeaseToken,
        progress: &(dyn Fn(SyncEvent) + Send + Sync),
        solver: &dyn ScaSolver,
    ) -> Result<SyncSummary, SyncError> {
        self.sync_under(connection, Some(lease), progress, solver)
            .await
    }

    async fn sync_under(
        &self,
        connection: &Connection,
        claimed: Option<LeaseToken>,
        progress: &(dyn Fn(SyncEvent) + Send + Sync),
        solver: &dyn ScaSolver,
    ) -> Result<SyncSummary, SyncError> {
        let started = chrono::Utc::now();
        let result = engine::sync_connection(self, connection, claimed, progress, solver).await;
        // Rows this sync wrote get their category, also when it stopped for
        // the user: what it stored is as final as after a full run. A crash
        // in between leaves rows for `bankbridge categorize` to finish.
        if matches!(&result, Ok(_) | Err(SyncError::NeedsUser { .. }))
            && let Err(e) = self.categorize_since(connection.id, started).await
        {
            tracing::warn!(connection = %connection.name, error = %e, "cannot apply category rules");
        }
        result
    }

    /// Apply the category rules to the rows of `connection_id` written since `since`.
    async fn categorize_since(
        &self,
        connection_id: i64,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, bankbridge_store::StoreError> {
        use futures::TryStreamExt;
        let Some(rules) = self.options.categories.clone() else {
            return Ok(0);
        };
        let mut changes = Vec::new();
        {
            let mut rows = self.store.stream_transactions(bankbridge_store::TxQuery {
                connection_id: Some(connection_id),
                updated_since: Some(since),
                ..Default::default()
            });
            while let Some(tx) = rows.try_next().await? {
                let category = rules.categorize(&(&tx).into()).map(str::to_owned);
                if category.is_some() && category != tx.category {
                    changes.push((tx.id, category));
                }
            }
        }
        let mut changed = 0;
        for batch in changes.chunks(1000) {
            changed += self.store.set_categories(batch, chrono::Utc::now()).await?;
        }
        Ok(changed)
    }

    /// This syncer, sending credentials the bank refused before once more
    /// (an admin forcing a sync).
    pub fn forcing_refused_credentials(&self) -> Syncer {
        let mut forced = self.clone();
        forced.options.retry_refused_credentials = true;
        forced
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
