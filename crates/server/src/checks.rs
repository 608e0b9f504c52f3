//! The flow-check scheduler of `serve`: flows loaded from a folder (and
//! reloaded when it changes), rounds started on each flow's cadence with
//! jitter, runs executed here (location `local`) or handed to agents at
//! other locations, a round's verdict from its locations' results (quorum),
//! the check's health moved by thresholds, alerts sent on each change (and
//! as reminders), results stored with retention, and the TLS certificates
//! of the flows' hosts watched. Each change of health is logged, at WARN
//! when it is to failing or degraded, and so is, once at start, each check
//! the store knows as failing or degraded.
//!
//! Servers sharing one database each run this scheduler and split the work:
//! every server computes the same slots for a check
//! ([`Schedule::first_slot`]), and a scheduled round runs on the server that
//! claims its slot in the store first; a round's verdict is applied to the
//! stored check state by compare-and-swap, so each change of health is
//! alerted once whichever server closes the round; a day's certificate alert
//! is claimed the same way. Each server refreshes the health it shows from
//! the store as often as it looks at the folder.
//!
//! A round's claim is a lease ([`bankbridge_store::CheckWork`]): a server
//! that dies mid-round leaves it open past its `until`, and another server
//! takes it over and runs the round. Agent jobs go through the store too:
//! an agent may poll any server for its location's jobs and report to any
//! server; the round's server collects the report.
//!
//! No HTTP here: `api::checks` exposes it. The pure rules (cadence, retries,
//! quorum, thresholds, maintenance) live in `bankbridge_checks::schedule`.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bankbridge_checks::alerts::{
    Alert, AlertKind, CertificateInfo, ChannelConfig, LocationOutcome, Notifier,
};
use bankbridge_checks::env::EnvPolicy;
use bankbridge_checks::flow::{self, Flow, FlowError};
use bankbridge_checks::runner::{RunOptions, RunReport, Runner, stored_secrets};
use bankbridge_checks::schedule::{
    CheckState, Health, Outcome, Schedule, Transition, in_maintenance, locations_for_round,
    round_verdict,
};
use bankbridge_store::{
    CheckRunQuery, CheckWork, FlowChecks, LapsedRound, NewCheckRun, NewCheckStep, OutboxAlert,
    QueuedCheckJob,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::check_secrets::CheckSecrets;
use crate::metrics::Metrics;

/// Days a round's (or a certificate alert's) claim is kept, and an agent job.
const CLAIMS_KEPT_DAYS: i64 = 2;
/// A round's claim lasts its worst-case run time and this margin: a round
/// still open then lost its server.
const ROUND_LEASE_MARGIN: Duration = Duration::from_secs(10);
/// A round whose claim lapsed longer ago than this is not run late.
const TAKE_OVER_WITHIN: Duration = Duration::from_secs(10 * 60);
/// How long a server holds an alert it is delivering; one whose server
/// died is sent by another after this.
const ALERT_CLAIM: Duration = Duration::from_secs(60);
/// How often the store is asked for lapsed rounds, agents' reports and
/// alerts to deliver.
const WORK_POLL: Duration = Duration::from_millis(500);

/// Settings of the checks scheduler.
#[derive(Clone, Debug)]
pub struct ChecksConfig {
    /// The project folder: `*.toml` flows and an optional `channels.toml`.
    pub dir: PathBuf,
    /// This server's own location name (flows listing it run here).
    pub location: String,
    /// How often the scheduler wakes to start due rounds.
    pub tick: Duration,
    /// How often the folder is looked at for changes.
    pub reload_every: Duration,
    /// Results older than this are deleted...
    pub retention: Duration,
    /// ...except each check's newest this many runs.
    pub keep_latest: u32,
    /// How often results past the retention are deleted.
    pub prune_every: Duration,
    /// How long after a round's flow timeout a missing location counts as failed.
    pub round_grace: Duration,
    /// How often the certificates of the flows' https hosts are read.
    pub certificate_every: Duration,
    /// Which environment variables local runs of flows may read.
    pub env_policy: Arc<EnvPolicy>,
}

impl ChecksConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            location: "local".into(),
            tick: Duration::from_millis(100),
            reload_every: Duration::from_secs(2),
            retention: Duration::from_secs(30 * 24 * 3600),
            keep_latest: 100,
            prune_every: Duration::from_secs(3600),
            round_grace: Duration::from_secs(30),
            certificate_every: Duration::from_secs(12 * 3600),
            env_policy: Arc::default(),
        }
    }
}

/// Work for an agent: one flow to run at its location for one round.
#[derive(Clone, Serialize, Deserialize)]
pub struct Job {
    pub job_id: String,
    pub round_id: String,
    pub flow_id: String,
    /// The flow file's name and text: the agent parses the same file.
    pub file: String,
    pub source: String,
    /// The values of the `{ secret = .. }` entries the flow names, by secret
    /// name (those the server's store holds).
    pub secrets: BTreeMap<String, String>,
}

/// Secret values never reach a log: Debug shows their names only.
impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("job_id", &self.job_id)
            .field("round_id", &self.round_id)
            .field("flow_id", &self.flow_id)
            .field("file", &self.file)
            .field("secrets", &self.secrets.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// What `GET /api/v1/checks` shows of one check.
#[derive(Clone, Debug, Serialize)]
pub struct CheckSummary {
    pub id: String,
    pub name: String,
    pub file: String,
    pub health: Health,
    pub health_since: DateTime<Utc>,
    pub every_seconds: u64,
    pub locations: Vec<String>,
    pub alerts: Vec<String>,
    pub next_run_at: DateTime<Utc>,
    pub in_maintenance: bool,
    pub last_round: Option<RoundSummary>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RoundSummary {
    pub round_id: String,
    pub at: DateTime<Utc>,
    pub outcome: Outcome,
    pub failed: Vec<String>,
    pub degraded: Vec<String>,
    pub missing: Vec<String>,
}

struct Entry {
    flow: Arc<Flow>,
    /// The cadence slot and the jittered time it fires at.
    slot: DateTime<Utc>,
    fire_at: DateTime<Utc>,
    round_no: u64,
    state: CheckState,
    last_round: Option<RoundSummary>,
}

/// What [`ChecksService::run_now`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunNow {
    Started(String),
    /// A round of the check is open: its id.
    InFlight(String),
    Unknown,
}

struct Round {
    flow_id: String,
    /// The schedule slot's claim (in ms), closed with the round.
    slot_ms: Option<i64>,
    /// What started it (`schedule` or `manual`), recorded with each run.
    trigger: &'static str,
    expected: Vec<String>,
    results: Vec<(String, RunReport, Option<i64>)>,
    deadline: Instant,
}

#[derive(Default)]
struct State {
    flows: BTreeMap<String, Entry>,
    channels: Vec<ChannelConfig>,
    errors: Vec<String>,
    fingerprint: Vec<(PathBuf, Option<SystemTime>, u64)>,
    rounds: HashMap<String, Round>,
    /// This server's rounds' agent jobs not answered yet: job id → (round, location).
    jobs_out: HashMap<String, (String, String)>,
    /// host:port → the day a certificate alert last went out.
    certificate_alerted: HashMap<String, chrono::NaiveDate>,
}

/// The scheduler; cheap to clone.
#[derive(Clone)]
pub struct ChecksService(Arc<Inner>);

struct Inner {
    config: ChecksConfig,
    store: Arc<dyn FlowChecks>,
    work: Arc<dyn CheckWork>,
    runner: Runner,
    notifier: Notifier,
    metrics: Arc<Metrics>,
    secrets: CheckSecrets,
    state: Mutex<State>,
    /// Woken when this server queues an agent job (agents polling it get
    /// it at once; jobs other servers queue are seen by polling the store).
    job_ready: Notify,
    /// Who claims slots and queues jobs in the store: this process's scheduler.
    owner: String,
}

impl ChecksService {
    pub fn new(
        config: ChecksConfig,
        store: Arc<dyn FlowChecks>,
        work: Arc<dyn CheckWork>,
        metrics: Arc<Metrics>,
        secrets: CheckSecrets,
    ) -> Self {
        ChecksService(Arc::new(Inner {
            config,
            store,
            work,
            runner: Runner::new(),
            notifier: Notifier::new(),
            metrics,
            secrets,
            state: Mutex::new(State::default()),
            job_ready: Notify::new(),
            // One scheduler per process in production; tests run several
            // in one process, and each must collect its own rounds' reports.
            owner: format!(
                "{} checks {}",
                bankbridge_sync::process_owner(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere must not stop the scheduler: the state stays usable.
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads the folder and the stored health of each check, then runs the
    /// scheduler until the task is aborted.
    pub fn spawn(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move { this.run_forever().await })
    }

    async fn run_forever(self) {
        let stored: HashMap<String, CheckState> = match self.0.store.check_states().await {
            Ok(rows) => rows
                .into_iter()
                .filter_map(|(id, json)| serde_json::from_str(&json).ok().map(|s| (id, s)))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "checks: could not load the stored check states");
                HashMap::new()
            }
        };
        self.reload(Some(&stored));
        self.warn_of_unhealthy_checks().await;
        let mut last_reload = Instant::now();
        let mut last_prune: Option<Instant> = None;
        let mut last_certificates: Option<Instant> = None;
        let mut last_work_poll = Instant::now();
        let mut tick = tokio::time::interval(self.0.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if last_reload.elapsed() >= self.0.config.reload_every {
                last_reload = Instant::now();
                self.reload(None);
                self.refresh_states().await;
            }
            self.start_due_rounds(Utc::now()).await;
            if last_work_poll.elapsed() >= WORK_POLL {
                last_work_poll = Instant::now();
                self.collect_reports().await;
                self.take_over_lapsed_rounds(Utc::now()).await;
                self.deliver_alerts().await;
            }
            self.finish_overdue_rounds().await;
            if last_prune.is_none_or(|t| t.elapsed() >= self.0.config.prune_every) {
                last_prune = Some(Instant::now());
                let this = self.clone();
                tokio::spawn(async move { this.prune().await });
            }
            if last_certificates.is_none_or(|t| t.elapsed() >= self.0.config.certificate_every) {
                last_certificates = Some(Instant::now());
                let this = self.clone();
                tokio::spawn(async move { this.check_certificates().await });
            }
        }
    }

    /// Says once, at start, which checks the store found failing or
    /// degraded: a restart must not make a standing failure silent until
    /// its next change of health.
    async fn warn_of_unhealthy_checks(&self) {
        let unhealthy: Vec<(String, String, Health, DateTime<Utc>)> = self
            .state()
            .flows
            .values()
            .filter(|e| e.state.health != Health::Passing)
            .map(|e| {
                (
                    e.flow.id.clone(),
                    e.flow.name.clone(),
                    e.state.health,
                    e.state.since,
                )
            })
            .collect();
        for (id, name, health, since) in unhealthy {
            // The newest run that did not pass says where and why.
            let runs = self
                .0
                .store
                .list_check_runs(&CheckRunQuery {
                    check_id: Some(id.clone()),
                    limit: 20,
                    ..CheckRunQuery::default()
                })
                .await
                .unwrap_or_default();
            let last_bad = runs.into_iter().find(|r| r.outcome != "passed");
            let step = last_bad.as_ref().and_then(|r| r.failed_step.clone());
            let error = last_bad
                .as_ref()
                .and_then(|r| r.error.as_deref())
                .map(short_error);
            tracing::warn!(
                check = %id,
                name = %name,
                health = %health_word(health),
                since = %since.to_rfc3339(),
                step = %step.as_deref().unwrap_or("-"),
                error = %error.as_deref().unwrap_or("-"),
                "checks: {} at start",
                health_word(health)
            );
        }
    }

    /// Re-reads the folder when a file changed (name, size or mtime). Flows
    /// keep their health and cadence across reloads; an invalid file leaves
    /// the last good version of that flow running and is reported.
    pub fn reload(&self, stored: Option<&HashMap<String, CheckState>>) {
        let dir = &self.0.config.dir;
        let fingerprint = fingerprint(dir);
        if stored.is_none() && self.state().fingerprint == fingerprint {
            return;
        }
        let (flows, errors) = flow::load_dir(dir);
        let mut messages: Vec<String> = errors.iter().map(FlowError::to_string).collect();
        // An invalid channels file keeps the last good channels (serve
        // refuses to start on one, so there always were some).
        let channels = match load_channels(dir) {
            Ok(c) => Some(c),
            Err(problems) => {
                messages.extend(problems);
                None
            }
        };
        let now = Utc::now();
        let mut state = self.state();
        if let Some(channels) = channels {
            state.channels = channels;
        }
        let known_channels: Vec<String> = state.channels.iter().map(|c| c.name.clone()).collect();
        let failed_ids: Vec<String> = errors
            .iter()
            .filter_map(|e| {
                std::path::Path::new(&e.file)
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .map(str::to_string)
            })
            .collect();
        let mut next: BTreeMap<String, Entry> = BTreeMap::new();
        for flow in flows {
            for name in &flow.alerts {
                if !known_channels.contains(name) {
                    messages.push(format!(
                        "{}: alerts: no channel named {name:?} in {}",
                        flow.file,
                        flow::CHANNELS_FILE
                    ));
                }
            }
            let id = flow.id.clone();
            let entry = match state.flows.remove(&id) {
                Some(mut old) => {
                    if old.flow.schedule != flow.schedule {
                        old.slot = flow.schedule.first_slot(&id, now);
                        old.fire_at = old.slot;
                    }
                    old.flow = Arc::new(flow);
                    old
                }
                None => {
                    let slot = flow.schedule.first_slot(&id, now);
                    let state = stored
                        .and_then(|s| s.get(&id).cloned())
                        .unwrap_or_else(|| CheckState::new(now));
                    Entry {
                        flow: Arc::new(flow),
                        slot,
                        fire_at: slot,
                        round_no: 0,
                        state,
                        last_round: None,
                    }
                }
            };
            next.insert(id, entry);
        }
        // A file that no longer parses keeps its last good flow running.
        for id in failed_ids {
            if let Some(old) = state.flows.remove(&id) {
                next.insert(id, old);
            }
        }
        for e in &messages {
            tracing::warn!("checks: {e}");
        }
        tracing::info!(flows = next.len(), invalid = errors.len(), dir = %dir.display(), "checks: flows loaded");
        state.flows = next;
        state.errors = messages;
        state.fingerprint = fingerprint;
    }

    /// Starts the rounds whose slot came, each once across the servers
    /// sharing the store: the one that claims the slot first runs it.
    async fn start_due_rounds(&self, now: DateTime<Utc>) {
        let mut due: Vec<(String, DateTime<Utc>, Schedule, Duration, Duration)> = Vec::new();
        {
            let mut state = self.state();
            let mut rng = rand::rng();
            for (id, entry) in state.flows.iter_mut() {
                if entry.fire_at > now {
                    continue;
                }
                let lateness = (now - entry.fire_at).to_std().unwrap_or_default();
                let slot = entry.slot;
                entry.slot = entry.flow.schedule.next_slot(entry.slot, now);
                entry.fire_at = entry.flow.schedule.fire_at(entry.slot, &mut rng);
                if in_maintenance(&entry.flow.maintenance, now) {
                    tracing::debug!(check = %id, "checks: in a maintenance window, round skipped");
                    continue;
                }
                let lease = self.round_lease(&entry.flow);
                due.push((id.clone(), slot, entry.flow.schedule, lateness, lease));
            }
        }
        for (id, slot, schedule, lateness, lease) in due {
            let until = now + chrono::Duration::from_std(lease).unwrap_or_default();
            let slot_ms = slot.timestamp_millis();
            match self
                .0
                .work
                .claim_check_round(&id, slot_ms, &self.0.owner, now, until)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::debug!(check = %id, %slot, "checks: another server runs this round");
                    continue;
                }
                // Better a round twice than none: the store is the one
                // that would say who runs it, and it did not answer.
                Err(e) => {
                    tracing::warn!(check = %id, error = %e, "checks: could not claim a round; running it here")
                }
            }
            self.0.metrics.observe_lateness(lateness);
            self.open_round(&id, "schedule", Some((schedule.slot_number(slot), slot_ms)));
        }
    }

    /// The longest a round of `flow` may take: its runs with retries, and
    /// the grace for agents' reports.
    fn worst_case(&self, flow: &Flow) -> Duration {
        flow.timeout
            + flow
                .retry
                .max_duration
                .unwrap_or(flow.timeout * (flow.retry.max_retries + 1))
            + self.0.config.round_grace
    }

    /// How long a round's claim lasts: its runs with retries and a margin,
    /// and the grace for agents' reports when an agent has a part in it
    /// (a round run here alone closes when its run ends).
    fn round_lease(&self, flow: &Flow) -> Duration {
        let here_only = flow
            .locations
            .names
            .iter()
            .all(|l| *l == self.0.config.location);
        let worst = self.worst_case(flow);
        if here_only {
            worst.saturating_sub(self.0.config.round_grace) + ROUND_LEASE_MARGIN
        } else {
            worst + ROUND_LEASE_MARGIN
        }
    }

    /// Runs the rounds whose server stopped before closing them (their
    /// claim lapsed): one server takes each over, late rather than never.
    async fn take_over_lapsed_rounds(&self, now: DateTime<Utc>) {
        let since = now - chrono::Duration::from_std(TAKE_OVER_WITHIN).unwrap_or_default();
        let lapsed = match self.0.work.lapsed_check_rounds(now, since).await {
            Ok(lapsed) => lapsed,
            Err(e) => {
                tracing::warn!(error = %e, "checks: could not look for rounds left open");
                return;
            }
        };
        for round in lapsed {
            self.take_over(round, now).await;
        }
    }

    async fn take_over(&self, lapsed: LapsedRound, now: DateTime<Utc>) {
        let Some((lease, schedule)) = self
            .state()
            .flows
            .get(&lapsed.check_id)
            .map(|e| (self.round_lease(&e.flow), e.flow.schedule))
        else {
            return;
        };
        let until = now + chrono::Duration::from_std(lease).unwrap_or_default();
        match self
            .0
            .work
            .take_over_check_round(&lapsed, &self.0.owner, now, until)
            .await
        {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(check = %lapsed.check_id, error = %e, "checks: could not take over a round");
                return;
            }
        }
        let Some(slot) = DateTime::from_timestamp_millis(lapsed.slot_ms) else {
            return;
        };
        tracing::warn!(
            check = %lapsed.check_id,
            %slot,
            from = %lapsed.claimed_by,
            "checks: a round its server left open is run here"
        );
        self.open_round(
            &lapsed.check_id,
            "schedule",
            Some((schedule.slot_number(slot), lapsed.slot_ms)),
        );
    }

    /// The health each check has in the store: servers sharing it close
    /// rounds of the same checks, and this one shows what they decided.
    async fn refresh_states(&self) {
        let rows = match self.0.store.check_states().await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "checks: could not read the stored check states");
                return;
            }
        };
        let mut state = self.state();
        for (id, json) in rows {
            if let (Some(entry), Ok(stored)) = (
                state.flows.get_mut(&id),
                serde_json::from_str::<CheckState>(&json),
            ) {
                self.0.metrics.set_health(&id, stored.health);
                entry.state = stored;
            }
        }
    }

    /// Starts a round of `check_id` now, unless one of its rounds is still
    /// open: a person's "run now" waits for the round in flight (what it
    /// would show is on its way), so repeated clicks cannot pile up runs.
    pub fn run_now(&self, check_id: &str) -> RunNow {
        if let Some(open) = self
            .state()
            .rounds
            .iter()
            .find(|(_, r)| r.flow_id == check_id)
            .map(|(id, _)| id.clone())
        {
            return RunNow::InFlight(open);
        }
        match self.start_round(check_id, "manual") {
            Some(id) => RunNow::Started(id),
            None => RunNow::Unknown,
        }
    }

    /// Starts a round of `check_id` now; its id, or None for an unknown check.
    pub fn start_round(&self, check_id: &str, trigger: &'static str) -> Option<String> {
        self.open_round(check_id, trigger, None)
    }

    /// A round of the slot numbered `slot.0` whose claim is `slot.1` (a
    /// scheduled one: the same number on every server, so round-robin
    /// locations alternate whichever runs it), or by this server's own count.
    fn open_round(
        &self,
        check_id: &str,
        trigger: &'static str,
        slot: Option<(u64, i64)>,
    ) -> Option<String> {
        let round_id = uuid::Uuid::new_v4().to_string();
        let (flow, locations) = {
            let mut state = self.state();
            let entry = state.flows.get_mut(check_id)?;
            let locations = locations_for_round(
                entry.flow.locations.mode,
                &entry.flow.locations.names,
                slot.map_or(entry.round_no, |(number, _)| number),
            );
            entry.round_no += 1;
            let flow = entry.flow.clone();
            let worst_case = self.worst_case(&flow);
            state.rounds.insert(
                round_id.clone(),
                Round {
                    flow_id: check_id.to_string(),
                    slot_ms: slot.map(|(_, ms)| ms),
                    trigger,
                    expected: locations.clone(),
                    results: Vec::new(),
                    deadline: Instant::now() + worst_case,
                },
            );
            (flow, locations)
        };
        // Secrets are read from the store once per round, off the scheduler's tick.
        let this = self.clone();
        let round = round_id.clone();
        tokio::spawn(async move {
            let stored = this.0.secrets.for_flow(&flow).await;
            for location in locations {
                if location == this.0.config.location {
                    let this = this.clone();
                    let flow = flow.clone();
                    let round = round.clone();
                    let opts = RunOptions {
                        location,
                        secrets: stored_secrets(stored.clone()),
                        env_policy: this.0.config.env_policy.clone(),
                        ..RunOptions::default()
                    };
                    tokio::spawn(async move {
                        let report = this.0.runner.run_with_retries(&flow, &opts).await;
                        this.complete(&round, report, trigger).await;
                    });
                } else {
                    let now = Utc::now();
                    this.queue_job(QueuedCheckJob {
                        job_id: uuid::Uuid::new_v4().to_string(),
                        round_id: round.clone(),
                        check_id: flow.id.clone(),
                        location,
                        file: std::path::Path::new(&flow.file)
                            .file_name()
                            .and_then(|n| n.to_str())
                            .unwrap_or("flow.toml")
                            .to_string(),
                        source: flow.source.clone(),
                        created_by: this.0.owner.clone(),
                        created_at: now,
                        deadline: now
                            + chrono::Duration::from_std(this.worst_case(&flow))
                                .unwrap_or_default(),
                    })
                    .await;
                }
            }
        });
        Some(round_id)
    }

    /// Queues `job` for the agents of its location (through the store, so
    /// an agent polling any server gets it), unless its round already closed.
    async fn queue_job(&self, job: QueuedCheckJob) {
        {
            let mut state = self.state();
            if !state.rounds.contains_key(&job.round_id) {
                return;
            }
            state.jobs_out.insert(
                job.job_id.clone(),
                (job.round_id.clone(), job.location.clone()),
            );
        }
        if let Err(e) = self.0.work.queue_check_job(&job).await {
            // The round closes without this location's result.
            tracing::error!(check = %job.check_id, location = %job.location, error = %e, "checks: could not queue an agent job");
            return;
        }
        self.0.job_ready.notify_waiters();
    }

    /// Jobs waiting for `location` (queued by any server sharing the
    /// store), waiting up to `wait` for one to appear. Each comes with the
    /// values of the secrets its flow names.
    pub async fn take_jobs(&self, location: &str, wait: Duration) -> Vec<Job> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.0.job_ready.notified();
            match self
                .0
                .work
                .take_check_jobs(location, &self.0.owner, Utc::now(), 50)
                .await
            {
                Ok(queued) if !queued.is_empty() => return self.with_secrets(queued).await,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(%location, error = %e, "checks: could not read the agents' jobs")
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Vec::new();
            }
            let _ = tokio::time::timeout(left.min(WORK_POLL), notified).await;
        }
    }

    /// The jobs as agents get them: with their flows' secret values.
    async fn with_secrets(&self, queued: Vec<QueuedCheckJob>) -> Vec<Job> {
        let mut jobs = Vec::with_capacity(queued.len());
        for q in queued {
            let flow = self.state().flows.get(&q.check_id).map(|e| e.flow.clone());
            let secrets = match flow {
                Some(flow) => self.0.secrets.for_flow(&flow).await,
                None => {
                    tracing::warn!(check = %q.check_id, "checks: an agent job of a flow this server has not loaded goes out without secrets");
                    BTreeMap::new()
                }
            };
            jobs.push(Job {
                job_id: q.job_id,
                round_id: q.round_id,
                flow_id: q.check_id,
                file: q.file,
                source: q.source,
                secrets,
            });
        }
        jobs
    }

    /// An agent's result for a job; false when the job is unknown (or
    /// already answered). The round's server, this one or another,
    /// collects it from the store.
    pub async fn report_job(&self, job_id: &str, location: &str, report: RunReport) -> bool {
        let json = match serde_json::to_string(&report) {
            Ok(json) => json,
            Err(_) => return false,
        };
        let (expected_location, round_server) = match self
            .0
            .work
            .report_check_job(job_id, &json, Utc::now())
            .await
        {
            Ok(Some((_, expected_location, round_server))) => (expected_location, round_server),
            Ok(None) => return false,
            Err(e) => {
                tracing::error!(job = %job_id, error = %e, "checks: could not store an agent's report");
                return false;
            }
        };
        if expected_location != location {
            tracing::warn!(job = %job_id, %location, expected = %expected_location, "checks: an agent answered a job of another location");
        }
        if round_server == self.0.owner {
            self.collect_reports().await;
        }
        true
    }

    /// Applies the agents' reports on this server's rounds.
    async fn collect_reports(&self) {
        if self.state().jobs_out.is_empty() {
            return;
        }
        let reports = match self
            .0
            .work
            .collect_check_reports(&self.0.owner, Utc::now())
            .await
        {
            Ok(reports) => reports,
            Err(e) => {
                tracing::warn!(error = %e, "checks: could not collect the agents' reports");
                return;
            }
        };
        for r in reports {
            let trigger = {
                let mut state = self.state();
                if state.jobs_out.remove(&r.job_id).is_none() {
                    // Its round closed without it.
                    continue;
                }
                state
                    .rounds
                    .get(&r.round_id)
                    .map_or("schedule", |round| round.trigger)
            };
            let Ok(mut report) = serde_json::from_str::<RunReport>(&r.report) else {
                tracing::warn!(job = %r.job_id, "checks: an agent's stored report does not read back");
                continue;
            };
            // The location is the one the job was for, whatever the agent says.
            report.location = r.location;
            self.complete(&r.round_id, report, trigger).await;
        }
    }

    /// Stores one location's result and closes the round when it is whole.
    async fn complete(&self, round_id: &str, report: RunReport, trigger: &str) {
        self.0.metrics.observe_run(&report);
        let run = to_new_run(round_id, trigger, &report);
        let run_id = match self.0.store.save_check_run(&run).await {
            Ok(saved) => Some(saved.id),
            Err(e) => {
                tracing::error!(check = %report.flow_id, error = %e, "checks: could not store a run");
                None
            }
        };
        let finished = {
            let mut state = self.state();
            let Some(round) = state.rounds.get_mut(round_id) else {
                return;
            };
            round
                .results
                .push((report.location.clone(), report, run_id));
            let all_in = round
                .expected
                .iter()
                .all(|l| round.results.iter().any(|(loc, _, _)| loc == l));
            if all_in {
                state.rounds.remove(round_id)
            } else {
                None
            }
        };
        if let Some(round) = finished {
            self.finish_round(round_id, round).await;
        }
    }

    async fn finish_overdue_rounds(&self) {
        let overdue: Vec<(String, Round)> = {
            let mut state = self.state();
            let now = Instant::now();
            let ids: Vec<String> = state
                .rounds
                .iter()
                .filter(|(_, r)| r.deadline <= now)
                .map(|(id, _)| id.clone())
                .collect();
            let rounds: Vec<(String, Round)> = ids
                .into_iter()
                .filter_map(|id| state.rounds.remove(&id).map(|r| (id, r)))
                .collect();
            state
                .jobs_out
                .retain(|_, (round, _)| !rounds.iter().any(|(id, _)| id == round));
            rounds
        };
        // Jobs nobody took are not handed out after their deadline.
        for (id, round) in overdue {
            self.finish_round(&id, round).await;
        }
    }

    /// Applies a closed round to its check's health and sends the alerts
    /// that change calls for. The stored state is read, judged and swapped
    /// back only if no other server moved it meanwhile (else read again),
    /// so each change of health is counted and alerted once.
    async fn finish_round(&self, round_id: &str, round: Round) {
        let now = Utc::now();
        if let Some(slot_ms) = round.slot_ms
            && let Err(e) = self
                .0
                .work
                .finish_check_round(&round.flow_id, slot_ms, now)
                .await
        {
            tracing::warn!(check = %round.flow_id, error = %e, "checks: could not mark a round closed");
        }
        let (flow, channels, local) = {
            let state = self.state();
            let Some(entry) = state.flows.get(&round.flow_id) else {
                return;
            };
            (
                entry.flow.clone(),
                state.channels.clone(),
                entry.state.clone(),
            )
        };
        let mut attempts = 0;
        // Whether the alerts went to the store's outbox with the state (any
        // server delivers them) or must be sent from here.
        let (judged, check_state, queued) = loop {
            attempts += 1;
            let stored = match self.0.store.check_state(&flow.id).await {
                Ok(stored) => stored,
                Err(e) => {
                    tracing::error!(check = %flow.id, error = %e, "checks: could not read the check state");
                    let mut st = local.clone();
                    break (
                        judge(&flow, &channels, round_id, &round, &mut st, now),
                        st,
                        false,
                    );
                }
            };
            let mut st = stored
                .as_deref()
                .and_then(|json| serde_json::from_str::<CheckState>(json).ok())
                .unwrap_or_else(|| local.clone());
            let judged = judge(&flow, &channels, round_id, &round, &mut st, now);
            let json = serde_json::to_string(&st).unwrap_or_default();
            let outbox: Vec<OutboxAlert> = judged
                .alerts
                .iter()
                .map(|(channel, alert)| OutboxAlert {
                    id: uuid::Uuid::new_v4().to_string(),
                    channel: channel.name.clone(),
                    alert: serde_json::to_string(alert).unwrap_or_default(),
                    created_at: now,
                })
                .collect();
            match self
                .0
                .store
                .swap_check_state_with_alerts(&flow.id, stored.as_deref(), &json, now, &outbox)
                .await
            {
                Ok(true) => break (judged, st, true),
                // Another server closed a round of this check meanwhile.
                Ok(false) if attempts < 8 => continue,
                Ok(false) => {
                    tracing::warn!(check = %flow.id, "checks: the check state kept changing; writing this round's over it");
                    if let Err(e) = self.0.store.put_check_state(&flow.id, &json, now).await {
                        tracing::error!(check = %flow.id, error = %e, "checks: could not store the check state");
                    }
                    break (judged, st, false);
                }
                Err(e) => {
                    tracing::error!(check = %flow.id, error = %e, "checks: could not store the check state");
                    break (judged, st, false);
                }
            }
        };
        if let Some((before, step, error)) = &judged.change {
            log_health_change(
                &flow,
                *before,
                check_state.health,
                step.as_deref(),
                error.as_deref(),
            );
        }
        self.0.metrics.set_health(&flow.id, check_state.health);
        if let Some(entry) = self.state().flows.get_mut(&round.flow_id) {
            entry.state = check_state;
            entry.last_round = Some(judged.summary);
        }
        if queued {
            self.deliver_alerts().await;
        } else {
            self.send_alerts(judged.alerts);
        }
    }

    /// The alert channels of `channels.toml` as last loaded.
    pub fn channels(&self) -> Vec<ChannelConfig> {
        self.state().channels.clone()
    }

    /// Send each alert to its channel in the background (counted in the metrics).
    pub fn send(&self, alerts: Vec<(ChannelConfig, Alert)>) {
        self.send_alerts(alerts);
    }

    /// Delivers the alerts in the store's outbox that no server is sending
    /// (new ones, and those whose server died holding them), each once.
    async fn deliver_alerts(&self) {
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(ALERT_CLAIM).unwrap_or_default();
        let claimed = match self
            .0
            .work
            .claim_alerts(&self.0.owner, now, until, 50)
            .await
        {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(error = %e, "checks: could not read the alerts to deliver");
                return;
            }
        };
        if claimed.is_empty() {
            return;
        }
        let channels = self.state().channels.clone();
        for queued in claimed {
            let this = self.clone();
            let channel = channels.iter().find(|c| c.name == queued.channel).cloned();
            tokio::spawn(async move {
                let error = match (channel, serde_json::from_str::<Alert>(&queued.alert)) {
                    (Some(channel), Ok(alert)) => this.deliver(&channel, &alert).await.err(),
                    (None, _) => {
                        tracing::warn!(channel = %queued.channel, "checks: an alert for a channel this server does not have is dropped");
                        Some(format!("no channel {:?} on this server", queued.channel))
                    }
                    (_, Err(e)) => Some(format!("the stored alert does not read back: {e}")),
                };
                if let Err(e) = this
                    .0
                    .work
                    .alert_done(&queued.id, &this.0.owner, Utc::now(), error.as_deref())
                    .await
                {
                    tracing::warn!(alert = %queued.id, error = %e, "checks: could not mark an alert done; another server may send it again");
                }
            });
        }
    }

    /// Sends one alert, counted and logged; the error as text.
    async fn deliver(&self, channel: &ChannelConfig, alert: &Alert) -> Result<(), String> {
        match self.0.notifier.send(channel, alert).await {
            Ok(()) => {
                self.0.metrics.alert_sent(&channel.name, alert.kind, true);
                tracing::info!(channel = %channel.name, check = %alert.check_id, kind = ?alert.kind, reminder = alert.reminder, "checks: alert sent");
                Ok(())
            }
            Err(e) => {
                self.0.metrics.alert_sent(&channel.name, alert.kind, false);
                tracing::warn!(channel = %channel.name, check = %alert.check_id, error = %e, "checks: alert not delivered");
                Err(e.to_string())
            }
        }
    }

    /// Sends alerts from here, not through the outbox (certificate alerts,
    /// and a round's when the store could not take them).
    fn send_alerts(&self, alerts: Vec<(ChannelConfig, Alert)>) {
        for (channel, alert) in alerts {
            let this = self.clone();
            tokio::spawn(async move {
                let _ = this.deliver(&channel, &alert).await;
            });
        }
    }

    async fn prune(&self) {
        let older = Utc::now()
            - chrono::Duration::from_std(self.0.config.retention)
                .unwrap_or(chrono::Duration::days(30));
        match self
            .0
            .store
            .prune_check_runs(older, self.0.config.keep_latest)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(runs = n, "checks: old results deleted"),
            Err(e) => tracing::warn!(error = %e, "checks: pruning old results failed"),
        }
        // A claim matters while its slot (or its day, for a certificate
        // alert) is current: two days keep today's whatever the hour.
        let stale = Utc::now() - chrono::Duration::days(CLAIMS_KEPT_DAYS);
        if let Err(e) = self.0.store.prune_check_claims(stale).await {
            tracing::warn!(error = %e, "checks: pruning old round claims failed");
        }
        if let Err(e) = self.0.work.prune_check_jobs(stale).await {
            tracing::warn!(error = %e, "checks: pruning old agent jobs failed");
        }
        if let Err(e) = self.0.work.prune_alerts(stale).await {
            tracing::warn!(error = %e, "checks: pruning old alerts failed");
        }
    }

    /// Reads the certificate of every https host the flows call (URLs whose
    /// host is fixed by variables, not by captured values) and alerts the
    /// channels that asked for it when one expires within their threshold.
    pub async fn check_certificates(&self) {
        let (targets, channels) = {
            let state = self.state();
            let mut targets: BTreeMap<(String, u16), Vec<Arc<Flow>>> = BTreeMap::new();
            for entry in state.flows.values() {
                if !entry.flow.certificate_check {
                    continue;
                }
                for url in static_urls(&entry.flow) {
                    for host in bankbridge_checks::tls::hosts_of([url.as_str()]) {
                        targets.entry(host).or_default().push(entry.flow.clone());
                    }
                }
            }
            (targets, state.channels.clone())
        };
        for ((host, port), flows) in targets {
            let expiry = match bankbridge_checks::tls::certificate_expiry(
                &host,
                port,
                Duration::from_secs(10),
            )
            .await
            {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(%host, port, error = %e, "checks: could not read a certificate");
                    continue;
                }
            };
            self.0
                .metrics
                .set_certificate(&host, port, expiry.days_left);
            let today = Utc::now().date_naive();
            let key = format!("{host}:{port}");
            let mut alerts = Vec::new();
            for flow in &flows {
                for name in &flow.alerts {
                    let Some(channel) = channels.iter().find(|c| &c.name == name) else {
                        continue;
                    };
                    let mut alert = Alert::new(
                        AlertKind::CertificateExpiry,
                        flow.id.clone(),
                        flow.name.clone(),
                        format!(
                            "the TLS certificate of {host}:{port} expires on {} ({} days left)",
                            expiry.not_after.format("%Y-%m-%d"),
                            expiry.days_left
                        ),
                        Utc::now(),
                    );
                    alert.certificate = Some(CertificateInfo {
                        host: key.clone(),
                        expires_at: expiry.not_after,
                        days_left: expiry.days_left,
                    });
                    if channel.wants(&alert)
                        && !alerts
                            .iter()
                            .any(|(c, _): &(ChannelConfig, Alert)| c.name == channel.name)
                    {
                        alerts.push((channel.clone(), alert));
                    }
                }
            }
            // Checked and marked under one lock: two overlapping passes
            // cannot both alert for a host on the same day; the store's
            // claim of the day keeps servers sharing it to one alert too.
            if alerts.is_empty()
                || self.state().certificate_alerted.insert(key.clone(), today) == Some(today)
            {
                continue;
            }
            let day_ms = today
                .and_time(chrono::NaiveTime::MIN)
                .and_utc()
                .timestamp_millis();
            match self
                .0
                .store
                .claim_check_slot(
                    &format!("certificate:{key}"),
                    day_ms,
                    &self.0.owner,
                    Utc::now(),
                )
                .await
            {
                Ok(true) => self.send_alerts(alerts),
                Ok(false) => {
                    tracing::debug!(host = %key, "checks: another server sent today's certificate alert")
                }
                Err(e) => {
                    tracing::warn!(host = %key, error = %e, "checks: could not claim today's certificate alert; sending it");
                    self.send_alerts(alerts);
                }
            }
        }
    }

    /// Every check, for the API.
    pub fn summaries(&self) -> (Vec<CheckSummary>, Vec<String>) {
        let state = self.state();
        let now = Utc::now();
        let list = state.flows.values().map(|e| summary_of(e, now)).collect();
        (list, state.errors.clone())
    }

    pub fn summary(&self, id: &str) -> Option<CheckSummary> {
        let state = self.state();
        state.flows.get(id).map(|e| summary_of(e, Utc::now()))
    }
}

/// The project's `channels.toml` (none is no channels). An invalid one is
/// every problem of it, each as `FILE:LINE:COLUMN: message`.
pub fn load_channels(dir: &Path) -> Result<Vec<ChannelConfig>, Vec<String>> {
    let path = dir.join(flow::CHANNELS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(vec![format!("{}: {e}", path.display())]),
    };
    bankbridge_checks::alerts::read_channels(&text).map_err(|problems| {
        problems
            .iter()
            .map(|p| match p.line {
                0 => format!("{}: {}", path.display(), p.message()),
                line => format!("{}:{line}:{}: {}", path.display(), p.column, p.message()),
            })
            .collect()
    })
}

/// How loud a change of health is logged: any change to failing or
/// degraded is a warning (someone should look), a recovery is news.
pub fn health_change_level(before: Health, after: Health) -> tracing::Level {
    match (before, after) {
        (_, Health::Passing) => tracing::Level::INFO,
        _ => tracing::Level::WARN,
    }
}

fn health_word(health: Health) -> &'static str {
    match health {
        Health::Passing => "passing",
        Health::Degraded => "degraded",
        Health::Failing => "failing",
    }
}

/// One line, at most 200 characters: enough to recognise the error in a
/// log, the run itself has the rest.
fn short_error(error: &str) -> String {
    let line: String = error
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let line = line.trim();
    if line.chars().count() <= 200 {
        return line.to_owned();
    }
    let mut cut: String = line.chars().take(199).collect();
    cut.push('…');
    cut
}

fn log_health_change(
    flow: &Flow,
    before: Health,
    after: Health,
    step: Option<&str>,
    error: Option<&str>,
) {
    let error = error.map(short_error);
    let (step, error) = match after {
        // A recovery has no step or error to tell.
        Health::Passing => ("-", "-".to_owned()),
        _ => (step.unwrap_or("-"), error.unwrap_or_else(|| "-".into())),
    };
    let (id, name, from, to) = (
        &flow.id,
        &flow.name,
        health_word(before),
        health_word(after),
    );
    if health_change_level(before, after) == tracing::Level::WARN {
        tracing::warn!(check = %id, name = %name, health = %to, from = %from, step = %step, error = %error, "checks: {id} is now {to}");
    } else {
        tracing::info!(check = %id, name = %name, health = %to, from = %from, "checks: {id} is now {to}");
    }
}

/// What closing a round decided: the round's summary, the alerts to send
/// and, when the health changed, the health before with the worst
/// location's failed step and error (for the log).
struct Judged {
    summary: RoundSummary,
    alerts: Vec<(ChannelConfig, Alert)>,
    change: Option<(Health, Option<String>, Option<String>)>,
}

/// Applies `round` to `state` (the check's health, streaks and reminder
/// marks) and picks the alerts its channels want. Pure but for `now`.
fn judge(
    flow: &Flow,
    channels: &[ChannelConfig],
    round_id: &str,
    round: &Round,
    state: &mut CheckState,
    now: DateTime<Utc>,
) -> Judged {
    let outcomes: Vec<(String, Outcome)> = round
        .results
        .iter()
        .map(|(l, r, _)| (l.clone(), r.outcome))
        .collect();
    let verdict = round_verdict(&round.expected, &outcomes, flow.locations.failure_share);
    let before = state.health;
    let transition = state.observe(verdict.outcome, &flow.thresholds, now);
    let round_summary = RoundSummary {
        round_id: round_id.to_string(),
        at: now,
        outcome: verdict.outcome,
        failed: verdict.failed.clone(),
        degraded: verdict.degraded.clone(),
        missing: verdict.missing.clone(),
    };
    // The worst location's report explains the round.
    let worst = round
        .results
        .iter()
        .max_by_key(|(_, r, _)| r.outcome)
        .map(|(_, r, id)| (r, *id));
    let mut locations: Vec<LocationOutcome> = round
        .results
        .iter()
        .map(|(l, r, _)| LocationOutcome {
            location: l.clone(),
            outcome: r.outcome.as_str().into(),
        })
        .collect();
    for missing in &verdict.missing {
        locations.push(LocationOutcome {
            location: missing.clone(),
            outcome: "no result".into(),
        });
    }
    let change = transition.is_some().then(|| match worst {
        Some((r, _)) => (before, r.failed_step.clone(), r.error.clone()),
        None => (before, None, None),
    });
    let mut alerts = Vec::new();
    for name in &flow.alerts {
        let Some(channel) = channels.iter().find(|c| &c.name == name) else {
            continue;
        };
        let (kind, reminder) = match transition {
            Some(Transition::Failing) => (AlertKind::Failure, false),
            Some(Transition::Degraded) => (AlertKind::Degraded, false),
            Some(Transition::Recovered) => (AlertKind::Recovery, false),
            None if state.reminder_due(name, channel.reminder(), now) => match state.health {
                Health::Failing => (AlertKind::Failure, true),
                Health::Degraded => (AlertKind::Degraded, true),
                Health::Passing => continue,
            },
            None => continue,
        };
        let mut alert = Alert::new(
            kind,
            flow.id.clone(),
            flow.name.clone(),
            summary(
                kind,
                &flow.name,
                &verdict.failed,
                &verdict.missing,
                &round.expected,
                worst.map(|w| w.0),
            ),
            now,
        );
        alert.reminder = reminder;
        alert.locations = locations.clone();
        if kind != AlertKind::Recovery
            && let Some((r, id)) = worst
        {
            alert.failed_step = r.failed_step.clone();
            alert.error = r.error.clone();
            alert.run_id = id;
        }
        if channel.wants(&alert) {
            state.notified(name, now);
            alerts.push((channel.clone(), alert));
        }
    }
    Judged {
        summary: round_summary,
        alerts,
        change,
    }
}

fn summary_of(e: &Entry, now: DateTime<Utc>) -> CheckSummary {
    CheckSummary {
        id: e.flow.id.clone(),
        name: e.flow.name.clone(),
        file: e.flow.file.clone(),
        health: e.state.health,
        health_since: e.state.since,
        every_seconds: e.flow.schedule.every().as_secs(),
        locations: e.flow.locations.names.clone(),
        alerts: e.flow.alerts.clone(),
        next_run_at: e.fire_at,
        in_maintenance: in_maintenance(&e.flow.maintenance, now),
        last_round: e.last_round.clone(),
    }
}

fn summary(
    kind: AlertKind,
    name: &str,
    failed: &[String],
    missing: &[String],
    expected: &[String],
    worst: Option<&RunReport>,
) -> String {
    let bad = failed.len() + missing.len();
    let share = if expected.len() > 1 {
        format!(" ({bad} of {} locations)", expected.len())
    } else {
        String::new()
    };
    match kind {
        AlertKind::Recovery => format!("{name} passes again"),
        AlertKind::Degraded => match worst.and_then(|r| {
            r.steps.iter().find(|s| s.note.is_some()).map(|s| {
                format!(
                    "{name} is degraded: step {:?} {}",
                    s.name,
                    s.note.as_deref().unwrap_or("")
                )
            })
        }) {
            Some(text) => text,
            None => format!("{name} is degraded{share}"),
        },
        _ => match worst.and_then(|r| r.failed_step.clone()) {
            Some(step) => format!("{name} fails at step {step:?}{share}"),
            None => format!(
                "{name} fails{share}: {}",
                worst
                    .and_then(|r| r.error.clone())
                    .unwrap_or_else(|| "no result".into())
            ),
        },
    }
}

/// URLs of the flow whose templates use only variables (so the host is
/// known before a run).
fn static_urls(flow: &Flow) -> Vec<String> {
    let mut scope = bankbridge_checks::template::Scope::new();
    for (name, source) in &flow.vars {
        if let flow::VarSource::Value(v) = source {
            scope.set(name.clone(), v.clone());
        }
    }
    flow.steps
        .iter()
        .filter_map(|s| s.url.as_ref())
        .filter_map(|u| scope.render(u).ok())
        .collect()
}

/// `(path, mtime, size)` of every file of the folder: a change reloads.
fn fingerprint(dir: &std::path::Path) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let meta = e.metadata().ok()?;
                    Some((e.path(), meta.modified().ok(), meta.len()))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// A run as the store keeps it: details already redacted by the runner.
pub fn to_new_run(round_id: &str, trigger: &str, r: &RunReport) -> NewCheckRun {
    let finished_at = r.started_at + chrono::Duration::milliseconds(r.duration_ms as i64);
    NewCheckRun {
        check_id: r.flow_id.clone(),
        check_name: r.flow_name.clone(),
        location: r.location.clone(),
        round_id: round_id.to_string(),
        trigger: trigger.to_string(),
        started_at: r.started_at,
        finished_at,
        duration_ms: r.duration_ms as i64,
        outcome: r.outcome.as_str().to_string(),
        attempts: r.attempts as i32,
        failed_step: r.failed_step.clone(),
        error: r.error.clone(),
        steps: r
            .steps
            .iter()
            .map(|s| NewCheckStep {
                index: s.index as i32,
                name: s.name.clone(),
                kind: s.kind.clone(),
                outcome: s.outcome.as_str().to_string(),
                duration_ms: s.duration_ms as i64,
                detail: serde_json::json!({
                    "requests": s.requests,
                    "request": s.request,
                    "response": s.response,
                    "captures": s.captures,
                    "asserts": s.asserts,
                    "error": s.error,
                    "note": s.note,
                })
                .to_string(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_to_failing_or_degraded_is_a_warning() {
        use Health::*;
        use tracing::Level;
        for (before, after, level) in [
            (Passing, Failing, Level::WARN),
            (Passing, Degraded, Level::WARN),
            (Degraded, Failing, Level::WARN),
            (Failing, Degraded, Level::WARN),
            (Failing, Passing, Level::INFO),
            (Degraded, Passing, Level::INFO),
        ] {
            assert_eq!(
                health_change_level(before, after),
                level,
                "{before:?} -> {after:?}"
            );
        }
    }

    #[test]
    fn errors_are_shortened_to_one_line() {
        assert_eq!(short_error("a\nb\tc "), "a b c");
        let long = "x".repeat(500);
        assert_eq!(short_error(&long).chars().count(), 200);
    }

    #[test]
    fn a_jobs_debug_names_its_secrets_but_not_their_values() {
        let job = Job {
            job_id: "j".into(),
            round_id: "r".into(),
            flow_id: "f".into(),
            file: "f.toml".into(),
            source: String::new(),
            secrets: BTreeMap::from([("xs2a-password".into(), "s3cr3t-v4lue".into())]),
        };
        let shown = format!("{job:?}");
        assert!(shown.contains("xs2a-password"), "{shown}");
        assert!(!shown.contains("s3cr3t-v4lue"), "{shown}");
    }
}
