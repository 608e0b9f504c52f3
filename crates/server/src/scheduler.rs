//! The scheduler of `serve`: every `scheduler_tick` (default 30 s) it starts a
//! sync of each connection whose `interval_secs` has passed since its last
//! sync. A connection already syncing in this process is left alone; across
//! processes sharing the database, the scheduler claims the sync lease on
//! the condition that `last_sync_at` is still the one that made it due
//! (`claim_scheduled_sync`), before it makes a job: of several `serve`
//! instances that see a connection due, one syncs it, once per slot.
//!
//! A connection whose last sync ended in `needs_user` is left alone: the bank
//! wants a person (strong customer authentication), and retrying on a clock
//! would only pester the bank; a sync that succeeds puts it back on schedule.
//! So is one whose credentials the bank refused: each retry would count
//! another failed login, and banks lock the customer after a few (the keypad
//! bank after 3 wrong PINs). The sync engine itself refuses to send those
//! credentials again, whoever asks, until they change or an admin forces it.
//!
//! Every `consent_check_every` (default an hour) it also warns of
//! open-banking consents about to run out ([`crate::consents`]).
use bankbridge_store::{Connection, StoreError, SyncJob, SyncOutcome};
use bankbridge_sync::{SyncActivity, Syncer};
use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::AppState;
use crate::jobs::SyncStart;

/// Run the scheduler until the returned handle is aborted (or the runtime stops).
pub fn spawn_scheduler(state: AppState) -> JoinHandle<()> {
    tokio::spawn(async move {
        let every = state.config.scheduler_tick;
        tracing::info!(every_secs = every.as_secs_f64(), "scheduler started");
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut consents_checked: Option<std::time::Instant> = None;
        loop {
            tick.tick().await;
            if let Err(e) = run_due(&state, Utc::now()).await {
                tracing::warn!(error = %e, "scheduler: cannot list connections; trying again next tick");
            }
            if consents_checked.is_none_or(|t| t.elapsed() >= state.config.consent_check_every) {
                consents_checked = Some(std::time::Instant::now());
                crate::consents::warn(&state).await;
            }
        }
    })
}

/// One scheduler pass: start the syncs due at `now`. Returns the jobs started.
pub async fn run_due(state: &AppState, now: DateTime<Utc>) -> Result<Vec<SyncJob>, StoreError> {
    let mut started = Vec::new();
    let options = &state.syncer.options;
    for connection in state.store.connections.list_connections().await? {
        if !is_due(&connection, now) || state.running_sync(connection.id).is_some() {
            continue;
        }
        let name = connection.name.clone();
        // Claimed before a job is made: of the instances sharing the
        // database that found it due, one syncs it and the rest move on.
        let real_now = Utc::now();
        // A lease whose holder was killed on this machine is void at once
        // (as the sync engine treats it), not when it lapses.
        let lease_void_at = match SyncActivity::of(&connection, real_now) {
            SyncActivity::Interrupted => connection.lease_until.map_or(real_now, |until| {
                until.max(real_now) + chrono::Duration::seconds(1)
            }),
            _ => real_now,
        };
        let lease = match state
            .store
            .connections
            .claim_scheduled_sync(
                connection.id,
                &options.owner,
                connection.last_sync_at,
                lease_void_at,
                real_now + options.lease_ttl,
            )
            .await
        {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                tracing::debug!(connection = %name, "scheduler: syncing elsewhere, or synced since");
                continue;
            }
            Err(e) => {
                tracing::warn!(connection = %name, error = %e, "scheduler: cannot claim a sync");
                continue;
            }
        };
        match state.start_claimed_sync(connection, lease).await {
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
    next_due(connection).is_some_and(|at| at <= now)
}

/// When `connection` syncs next by its schedule: None when it syncs by hand
/// only, or waits for its owner (strong customer authentication, refused
/// credentials); the dawn of time (due at once) when it never synced.
pub fn next_due(connection: &Connection) -> Option<DateTime<Utc>> {
    let settings = Syncer::settings(connection).ok()?;
    let interval = settings.interval_secs.filter(|i| *i > 0)?;
    if connection.last_sync_status == SyncOutcome::NeedsUser || connection.credentials_refused() {
        return None;
    }
    match connection.last_sync_at {
        None => Some(DateTime::<Utc>::MIN_UTC),
        Some(last) => i64::try_from(interval)
            .ok()
            .and_then(chrono::TimeDelta::try_seconds)
            .and_then(|d| last.checked_add_signed(d))
            .or(Some(DateTime::<Utc>::MAX_UTC)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bankbridge_core::ConnectionSettings;

    fn conn(interval: Option<u64>, last: Option<DateTime<Utc>>, status: SyncOutcome) -> Connection {
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
            last_sync_status: status,
            last_sync_error: None,
            credentials_version: 1,
            last_sync_credentials_version: last.map(|_| 1),
            lease_owner: None,
            lease_until: None,
            consent: None,
        }
    }

    #[test]
    fn due_by_interval() {
        let now = Utc::now();
        let ago = |s| Some(now - chrono::Duration::seconds(s));
        use SyncOutcome::*;
        assert!(!is_due(&conn(None, None, Never), now), "manual only");
        assert!(is_due(&conn(Some(3600), None, Never), now), "never synced");
        assert!(!is_due(&conn(Some(3600), ago(100), Ok), now));
        assert!(is_due(&conn(Some(3600), ago(3600), Ok), now));
        assert!(is_due(&conn(Some(60), ago(61), Failed), now));
        assert!(!is_due(&conn(Some(60), ago(61), NeedsUser), now));
        let mut refused = conn(Some(60), ago(61), CredentialsRefused);
        assert!(
            !is_due(&refused, now),
            "a refused PIN is not tried again on a clock"
        );
        refused.credentials_version = 2;
        assert!(is_due(&refused, now), "new credentials are tried");
        let mut bad = conn(Some(60), None, Never);
        bad.settings = serde_json::json!({"nonsense": true});
        assert!(!is_due(&bad, now));
    }
}
