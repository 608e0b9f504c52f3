//! Sync jobs: one background sync per connection at a time in this process.
//!
//! `POST /api/v1/connections/{id}/sync`, the scheduler and the dashboard's
//! "sync now" go through [`AppState::start_sync`]. It creates a [`SyncJob`]
//! row (`queued`), runs the sync in a spawned task and moves the job to
//! `running`, then `succeeded` (with the summary), `needs_user` (the bank
//! asked for strong customer authentication and nobody answered: the sync
//! stops at that point, with what it committed before in the summary) or
//! `failed` (with the error text). Jobs of the API and the scheduler run
//! unattended; a job started from the dashboard asks the person on its page
//! ([`crate::live::PageSolver`]). A connection with a bound bank card gets
//! its card-reader challenges answered by the card service in every job
//! ([`crate::card_solver::CardSolver`]). Each running job's progress is a
//! [`LiveJob`]. A second request while a sync of the same connection runs
//! gets the running job back instead of a new one. Across processes the
//! syncer's database lease keeps two syncs of one connection apart.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bankbridge_store::{Connection, LeaseToken, StoreError, SyncJob};
use bankbridge_sync::SyncEvent;
use chrono::Utc;

use bankbridge_core::{ScaSolver, Unattended};

use crate::AppState;
use crate::card_solver::CardSolver;
use crate::live::{ANSWER_WAIT, LiveJob, PageSolver};

/// Job status values.
pub mod status {
    pub const QUEUED: &str = "queued";
    pub const RUNNING: &str = "running";
    pub const SUCCEEDED: &str = "succeeded";
    pub const FAILED: &str = "failed";
    pub const NEEDS_USER: &str = "needs_user";
}

/// What [`AppState::start_sync`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum SyncStart {
    /// A new job was created and its sync started.
    Started(SyncJob),
    /// A sync of this connection was already running here: its job.
    AlreadyRunning(SyncJob),
}

impl SyncStart {
    pub fn job(&self) -> &SyncJob {
        match self {
            SyncStart::Started(j) | SyncStart::AlreadyRunning(j) => j,
        }
    }
}

/// Who asked for a sync (for the logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    Api,
    /// An admin's sync that sends credentials the bank refused once more.
    ApiForced,
    Scheduler,
    /// A person in the dashboard, who answers the bank's questions on the job's page.
    Dashboard,
}

impl Trigger {
    fn as_str(&self) -> &'static str {
        match self {
            Trigger::Api => "api",
            Trigger::ApiForced => "api (forced)",
            Trigger::Scheduler => "scheduler",
            Trigger::Dashboard => "dashboard",
        }
    }
}

/// Connections syncing in this process, with their job ids.
#[derive(Default)]
pub(crate) struct SyncRegistry {
    running: Mutex<HashMap<i64, i64>>,
    /// The progress of the jobs running here, by job id.
    live: Mutex<HashMap<i64, Arc<LiveJob>>>,
    /// Serialises "look up, create the job, register" so two requests never
    /// both start a job for one connection.
    start: tokio::sync::Mutex<()>,
}

impl SyncRegistry {
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<i64, i64>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Arc<LiveJob>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Removes the connection from the registry when its sync task ends, even by panic.
struct Registered {
    state: AppState,
    connection_id: i64,
    job_id: i64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.state.syncs.running().remove(&self.connection_id);
        self.state.syncs.live().remove(&self.job_id);
    }
}

impl AppState {
    /// The job id of the sync of `connection_id` running in this process, if any.
    pub fn running_sync(&self, connection_id: i64) -> Option<i64> {
        self.syncs.running().get(&connection_id).copied()
    }

    /// The progress of job `job_id` while it runs in this process.
    pub fn live_job(&self, job_id: i64) -> Option<Arc<LiveJob>> {
        self.syncs.live().get(&job_id).cloned()
    }

    /// Start a background sync of `connection`, or return the job of the one
    /// already running.
    pub async fn start_sync(
        &self,
        connection: Connection,
        trigger: Trigger,
    ) -> Result<SyncStart, StoreError> {
        self.launch(connection, trigger, None).await
    }

    /// Start the scheduled sync whose lease [`crate::scheduler`] claimed.
    pub(crate) async fn start_claimed_sync(
        &self,
        connection: Connection,
        lease: LeaseToken,
    ) -> Result<SyncStart, StoreError> {
        self.launch(connection, Trigger::Scheduler, Some(lease))
            .await
    }

    async fn launch(
        &self,
        connection: Connection,
        trigger: Trigger,
        claimed: Option<LeaseToken>,
    ) -> Result<SyncStart, StoreError> {
        let _serial = self.syncs.start.lock().await;
        if let Some(job_id) = self.running_sync(connection.id)
            && let Some(job) = self.store.jobs.get_sync_job(job_id).await?
        {
            if let Some(lease) = claimed {
                self.store.connections.release_sync_lease(lease).await?;
            }
            return Ok(SyncStart::AlreadyRunning(job));
        }
        let job = self
            .store
            .jobs
            .create_sync_job(connection.id, Utc::now())
            .await?;
        self.syncs.running().insert(connection.id, job.id);
        let live = Arc::new(LiveJob::default());
        self.syncs.live().insert(job.id, live.clone());
        let registered = Registered {
            state: self.clone(),
            connection_id: connection.id,
            job_id: job.id,
        };
        tracing::info!(
            connection = %connection.name,
            job = job.id,
            trigger = trigger.as_str(),
            "sync started"
        );
        tokio::spawn(run_job(
            self.clone(),
            connection,
            job.clone(),
            registered,
            live,
            trigger,
            claimed,
        ));
        Ok(SyncStart::Started(job))
    }
}

async fn run_job(
    state: AppState,
    connection: Connection,
    mut job: SyncJob,
    registered: Registered,
    live: Arc<LiveJob>,
    trigger: Trigger,
    claimed: Option<LeaseToken>,
) {
    job.status = status::RUNNING.to_owned();
    job.started_at = Some(Utc::now());
    save(&state, &job).await;

    let syncer = if trigger == Trigger::ApiForced {
        state.syncer.forcing_refused_credentials()
    } else {
        state.syncer.clone()
    };
    let conn_name = connection.name.clone();
    let name = connection.name.clone();
    let card = bankbridge_sync::Syncer::settings(&connection)
        .ok()
        .and_then(|s| s.sca_card);
    let cards = state.cards.clone();
    let callback = state
        .config
        .public_url
        .as_ref()
        .map(|root| format!("{}/sca/callback/{}", root.trim_end_matches('/'), job.id));
    // A task of its own, so a panic inside the sync ends up in the join
    // error below and the job is still marked finished.
    let task = tokio::spawn(async move {
        let progress = |event: SyncEvent| {
            live.record(&event);
            log_event(&name, &event);
        };
        let page = PageSolver {
            live: live.clone(),
            wait: ANSWER_WAIT,
            redirect_uri: callback,
        };
        let person: &dyn ScaSolver = if trigger == Trigger::Dashboard {
            &page
        } else {
            &Unattended
        };
        // A card bound to the connection answers its card challenges, also
        // unattended; the rest goes to the person, if any.
        let card_solver;
        let solver: &dyn ScaSolver = match card {
            Some(card) => {
                card_solver = CardSolver::new(cards, card, &connection.name, person);
                &card_solver
            }
            None => person,
        };
        match claimed {
            Some(lease) => {
                syncer
                    .sync_claimed(&connection, lease, &progress, solver)
                    .await
            }
            None => {
                syncer
                    .sync_with_solver(&connection, &progress, solver)
                    .await
            }
        }
    });
    let name = &conn_name;
    match task.await {
        Ok(Ok(summary)) => {
            tracing::info!(
                connection = %name,
                job = job.id,
                accounts = summary.accounts,
                windows = summary.windows,
                inserted = summary.inserted,
                updated = summary.updated,
                unchanged = summary.unchanged,
                voided = summary.voided,
                "sync succeeded"
            );
            job.status = status::SUCCEEDED.to_owned();
            job.summary = serde_json::to_value(&summary).ok();
        }
        Ok(Err(e)) => {
            job.status = if e.needs_user() {
                status::NEEDS_USER
            } else {
                status::FAILED
            }
            .to_owned();
            // A sync that stopped for a person committed what came before: say what.
            job.summary = e
                .partial_summary()
                .and_then(|s| serde_json::to_value(s).ok());
            job.error = Some(e.to_string());
            tracing::warn!(connection = %name, job = job.id, error = %e, status = %job.status, "sync did not finish");
        }
        Err(join) => {
            job.status = status::FAILED.to_owned();
            job.error = Some(
                "internal error: the sync task stopped unexpectedly; see the server log".to_owned(),
            );
            tracing::error!(connection = %name, job = job.id, error = %join, "sync task panicked");
        }
    }
    // Before the job reads as finished: whoever polls it then reads fresh pages.
    state.data_changed();
    // A sync records the bank's consent: a short one is warned of now, not
    // at the scheduler's next look.
    crate::consents::warn(&state).await;
    job.finished_at = Some(Utc::now());
    save(&state, &job).await;
    drop(registered);
}

async fn save(state: &AppState, job: &SyncJob) {
    if let Err(e) = state.store.jobs.update_sync_job(job).await {
        tracing::error!(job = job.id, error = %e, "cannot save the sync job's state");
    }
}

fn log_event(connection: &str, event: &SyncEvent) {
    match event {
        SyncEvent::Retrying {
            what,
            attempt,
            delay,
            reason,
        } => tracing::info!(
            connection,
            what = %what,
            attempt,
            delay_ms = delay.as_millis() as u64,
            reason = %reason,
            "retrying a bank request"
        ),
        SyncEvent::WindowDone {
            account,
            window,
            stats,
        } => tracing::debug!(
            connection,
            account = %account,
            window = %window,
            inserted = stats.inserted,
            updated = stats.updated,
            "window synced"
        ),
        other => tracing::debug!(connection, event = ?other, "sync progress"),
    }
}
