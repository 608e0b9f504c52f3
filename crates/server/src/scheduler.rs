//! The scheduler of `serve`: every `scheduler_tick` (default 30 s) it starts a
//! sync of each connection whose `interval_secs` has passed since its last
//! sync. It goes through [`AppState::start_sync`], so a connection already
//! syncing (through the API or an earlier tick) is never started twice; the
//! syncer's database lease does the same across processes.
//!
//! A connection whose last sync ended in `needs_user` is left alone: the bank
//! wants a person (strong customer authentication), and retrying on a clock
//! would only pester the bank. So is one whose credentials the bank refused:
//! each retry would count another failed login, and banks lock the customer
//! after a few (the keypad bank after 3 wrong PINs). A manual sync that
//! succeeds puts it back on schedule.
use bankbridge_store::{Connection, StoreError, SyncJob};
use bankbridge_sync::Syncer;
use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::AppState;
use crate::jobs::{SyncStart, Trigger};

/// Run the scheduler until the returned handle is aborted (or the runtime stops).
pub fn spawn_scheduler(state: AppState) -> JoinHandle<()> {
    tokio::spawn(async move {
        let every = state.config.scheduler_tick;
        tracing::info!(every_secs = every.as_secs_f64(), "scheduler started");
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = run_due(&state, Utc::now()).await {
                tracing::warn!(error = %e, "scheduler: cannot list connections; trying again next tick");
            }
        }
    })
}

/// One scheduler pass: start the syncs due at `now`. Returns the jobs started.
pub async fn run_due(state: &AppState, now: DateTime<Utc>) -> Result<Vec<SyncJob>, StoreError> {
    let mut started = Vec::new();
    for connection in state.store.list_connections().await? {
        if !is_due(&connection, now) || state.running_sync(connection.id).is_some() {
            continue;
        }
        let name = connection.name.clone();
        match state.start_sync(connection, Trigger::Scheduler).await {
            Ok(SyncStart::Started(job)) => started.push(job),
            Ok(SyncStart::AlreadyRunning(_)) => {}
            Err(e) => {
                tracing::warn!(connection = %name, error = %e, "scheduler: cannot start a sync")
            }
        }
    }
    Ok(started)
}

/// Whether `connection` should sync at `now` by its schedule.
pub fn is_due(connection: &Connection, now: DateTime<Utc>) -> bool {
    let Ok(settings) = Syncer::settings(connection) else {
        return false;
    };
    let Some(interval) = settings.interval_secs.filter(|i| *i > 0) else {
        return false;
    };
    if connection.last_sync_status == "needs_user" {
        return false;
    }
    if connection.last_sync_status == "failed"
        && connection
            .last_sync_error
            .as_deref()
            .is_some_and(|e| e.starts_with(bankbridge_sync::CREDENTIALS_REFUSED))
    {
        return false;
    }
    match connection.last_sync_at {
        None => true,
        Some(last) => (now - last).num_seconds() >= i64::try_from(interval).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bankbridge_core::ConnectionSettings;

    fn conn(interval: Option<u64>, last: Option<DateTime<Utc>>, status: &str) -> Connection {
        let mut s = ConnectionSettings::new("http://127.0.0.1:1", "u");
        s.interval_secs = interval;
        Connection {
            id: 1,
            name: "c".into(),
            connector: "fibank".into(),
            settings: serde_json::to_value(s).unwrap(),
            credentials_sealed: vec![],
            session_sealed: None,
            created_at: Utc::now(),
            last_sync_at: last,
            last_sync_status: status.into(),
            last_sync_error: None,
        }
    }

    #[test]
    fn due_by_interval() {
        let now = Utc::now();
        let ago = |s| Some(now - chrono::Duration::seconds(s));
        assert!(!is_due(&conn(None, None, "never"), now), "manual only");
        assert!(
            is_due(&conn(Some(3600), None, "never"), now),
            "never synced"
        );
        assert!(!is_due(&conn(Some(3600), ago(100), "ok"), now));
        assert!(is_due(&conn(Some(3600), ago(3600), "ok"), now));
        assert!(is_due(&conn(Some(60), ago(61), "failed"), now));
        assert!(!is_due(&conn(Some(60), ago(61), "needs_user"), now));
        let mut refused = conn(Some(60), ago(61), "failed");
        refused.last_sync_error = Some(
            bankbridge_sync::SyncError::Connector(
                bankbridge_core::ConnectorError::InvalidCredentials("wrong PIN".into()),
            )
            .to_string(),
        );
        assert!(
            !is_due(&refused, now),
            "a refused PIN is not tried again on a clock"
        );
        let mut bad = conn(Some(60), None, "never");
        bad.settings = serde_json::json!({"nonsense": true});
        assert!(!is_due(&bad, now));
    }
}
