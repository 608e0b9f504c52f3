//! Orchestration of one sync: lease, login, accounts, windows, retries,
//! strong customer authentication, documents.
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bankbridge_core::{
    ConnectionSettings, Connector, ConnectorError, DateWindow, DocumentContent, FetchedAccount,
    FetchedDocument, ScaAnswer, ScaChallenge, ScaProgress, ScaSolver, WindowPage,
};
use bankbridge_store::{Checkpoint, Connection, Lease, LeaseToken, NewDocument};
use chrono::{DateTime, NaiveDate, Utc};

use crate::plan::{self, PlanBounds};
use crate::window::{self, AccountProgress};
use crate::{SyncError, SyncEvent, SyncOptions, SyncSummary, Syncer, session_purpose};

type Progress<'a> = &'a (dyn Fn(SyncEvent) + Send + Sync);

pub(crate) async fn sync_connection(
    syncer: &Syncer,
    connection: &Connection,
    claimed: Option<LeaseToken>,
    progress: Progress<'_>,
    solver: &dyn ScaSolver,
) -> Result<SyncSummary, SyncError> {
    let lease = match claimed {
        Some(token) => LeaseHolder::adopt(syncer, connection, token),
        None => LeaseHolder::acquire(syncer, connection).await?,
    };
    // Read the connection again under the lease: a sync that just ended may
    // have recorded a refused login, or someone changed the credentials.
    let connection = match syncer.store.get_connection(connection.id).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            lease.release(syncer).await;
            return Err(SyncError::Store(bankbridge_store::StoreError::NotFound(
                format!("connection {:?}", connection.name),
            )));
        }
        Err(e) => {
            lease.release(syncer).await;
            return Err(e.into());
        }
    };
    if connection.credentials_refused() && !syncer.options.retry_refused_credentials {
        lease.release(syncer).await;
        return Err(SyncError::CredentialsRefusedBefore {
            connection: connection.name.clone(),
            at: connection.last_sync_at,
        });
    }
    let result = match run_under_lease(syncer, &connection, &lease, progress, solver).await {
        // The store refused a write: the heartbeat had not noticed yet.
        Err(SyncError::Store(bankbridge_store::StoreError::LeaseLost { .. })) => {
            Err(SyncError::LeaseLost {
                connection: connection.name.clone(),
            })
        }
        other => other,
    };

    // Recorded under the lease: a sync that lost it leaves the outcome to
    // the sync that took over.
    let outcome = SyncError::outcome_of(&result);
    let error = result.as_ref().err().map(stored_error);
    if let Err(e) = syncer
        .store
        .record_sync_result(
            lease.token,
            Utc::now(),
            outcome,
            error.as_deref(),
            connection.credentials_version,
        )
        .await
    {
        tracing::warn!(connection = %connection.name, error = %e, "could not record the sync result");
    }
    lease.release(syncer).await;
    result
}

/// Longest `last_sync_error` kept: our own summary, with at most a short
/// excerpt of what a bank said.
const STORED_ERROR_CHARS: usize = 400;

/// The text kept as `last_sync_error`: one line, control characters out,
/// cut at [`STORED_ERROR_CHARS`].
fn stored_error(e: &SyncError) -> String {
    let text = e.to_string();
    let mut out = String::with_capacity(text.len().min(STORED_ERROR_CHARS + 3));
    for (i, c) in text.chars().enumerate() {
        if i == STORED_ERROR_CHARS {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

async fn run_under_lease(
    syncer: &Syncer,
    connection: &Connection,
    lease: &LeaseHolder,
    progress: Progress<'_>,
    solver: &dyn ScaSolver,
) -> Result<SyncSummary, SyncError> {
    let settings = Syncer::settings(connection)?;
    let credentials = syncer.credentials(connection)?;
    let mut connector = (syncer.factory)(connection, &settings, credentials).map_err(|detail| {
        SyncError::Factory {
            connector: connection.connector.clone(),
            detail,
        }
    })?;
    connector.attend(&solver.attendance());
    let mut run = Run {
        syncer,
        connection,
        settings: &settings,
        progress,
        lease,
        solver,
        summary: SyncSummary {
            connection: connection.name.clone(),
            ..Default::default()
        },
        stopped: None,
    };
    let mut result = run.sync_all(connector.as_mut()).await;
    if result.is_err() {
        // Tokens refreshed during the run must outlive it (a bank may
        // invalidate the old refresh token), whatever stopped the run.
        run.save_session(connector.as_mut()).await;
    }
    // The consent as the bank last said, whatever stopped the run: the
    // dashboard, the API and the expiry warning read it.
    if let Some(consent) = connector.consent()
        && let Err(e) = syncer
            .store
            .record_consent(lease.token, &consent.status, consent.valid_until)
            .await
    {
        tracing::warn!(connection = %connection.name, error = %e, "could not record the bank's consent");
    }
    if let Err(SyncError::Connector(ConnectorError::ScaRequired(challenge))) = &result {
        // SCA outside a window (at login, on the account list): nothing to resume from.
        result = Err(SyncError::NeedsUser {
            connection: connection.name.clone(),
            challenge: challenge.clone(),
            stored_from: None,
            summary: Box::new(run.summary.clone()),
        });
    }
    result
}

/// The lease that keeps two syncs of one connection apart (across
/// processes), held for the whole sync.
///
/// A heartbeat task renews it every third of its time-to-live, whatever the
/// sync is waiting on (an approval, a bank's `Retry-After`), so a live sync is
/// never overtaken. Should the heartbeat stall anyway (a frozen machine) and
/// another sync take over, the store refuses this sync's writes (each carries
/// the lease's [`LeaseToken`]) and the heartbeat raises `lost`, which stops
/// the sync before its next bank call.
struct LeaseHolder {
    token: LeaseToken,
    lost: Arc<AtomicBool>,
    heartbeat: tokio::task::JoinHandle<()>,
}

impl Drop for LeaseHolder {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

impl LeaseHolder {
    async fn acquire(syncer: &Syncer, connection: &Connection) -> Result<Self, SyncError> {
        let o = &syncer.options;
        let now = Utc::now();
        let until = now + o.lease_ttl;
        let token = match syncer
            .store
            .acquire_sync_lease(connection.id, &o.owner, now, until)
            .await?
        {
            Lease::Acquired(token) => token,
            Lease::Held {
                owner,
                until: held_until,
            } => {
                if !holder_is_dead(&owner) {
                    return Err(SyncError::Busy {
                        connection: connection.name.clone(),
                        owner,
                        until: held_until,
                    });
                }
                // The holder was killed on this very machine: its lease is void.
                tracing::warn!(connection = %connection.name, %owner, "taking over the lease of a sync that died");
                let past_it = held_until + chrono::Duration::seconds(1);
                match syncer
                    .store
                    .acquire_sync_lease(connection.id, &o.owner, past_it, until)
                    .await?
                {
                    Lease::Acquired(token) => token,
                    Lease::Held { owner, until } => {
                        return Err(SyncError::Busy {
                            connection: connection.name.clone(),
                            owner,
                            until,
                        });
                    }
                }
            }
        };
        Ok(Self::adopt(syncer, connection, token))
    }

    /// Hold a lease taken already (the scheduler's claim): renew it from now on.
    fn adopt(syncer: &Syncer, connection: &Connection, token: LeaseToken) -> Self {
        let lost = Arc::new(AtomicBool::new(false));
        let heartbeat = tokio::spawn(heartbeat(
            syncer.store.clone(),
            token,
            syncer.options.lease_ttl,
            connection.name.clone(),
            lost.clone(),
        ));
        Self {
            token,
            lost,
            heartbeat,
        }
    }

    /// `Err` once the heartbeat found the lease taken over.
    fn check(&self, connection: &str) -> Result<(), SyncError> {
        if self.lost.load(Ordering::Acquire) {
            return Err(SyncError::LeaseLost {
                connection: connection.to_owned(),
            });
        }
        Ok(())
    }

    async fn release(&self, syncer: &Syncer) {
        self.heartbeat.abort();
        if let Err(e) = syncer.store.release_sync_lease(self.token).await {
            tracing::warn!(error = %e, "could not release the sync lease; it expires by itself");
        }
    }
}

/// Renews `token` every third of `ttl` until aborted or the lease is lost.
/// A failed renewal (the database briefly unreachable) is tried again on
/// the next beat: two more chances before the lease lapses.
async fn heartbeat(
    store: Arc<dyn bankbridge_store::Store>,
    token: LeaseToken,
    ttl: Duration,
    connection: String,
    lost: Arc<AtomicBool>,
) {
    let beat = (ttl / 3).max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(beat).await;
        match store.renew_sync_lease(token, Utc::now() + ttl).await {
            Ok(()) => {}
            Err(bankbridge_store::StoreError::LeaseLost { .. }) => {
                tracing::warn!(%connection, "the sync lease was taken over; this sync stops");
                lost.store(true, Ordering::Release);
                return;
            }
            Err(e) => {
                tracing::warn!(%connection, error = %e, "could not renew the sync lease; trying again");
            }
        }
    }
}

/// What a connection's sync is doing, as far as its lease tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncActivity {
    Idle,
    /// A live process holds the lease.
    Running,
    /// A sync took the lease and never let go: it was killed (Ctrl-C, a
    /// crash, a reboot). The next sync resumes where it stopped.
    Interrupted,
}

impl SyncActivity {
    pub fn of(connection: &Connection, now: DateTime<Utc>) -> SyncActivity {
        match (&connection.lease_owner, connection.lease_until) {
            (Some(owner), Some(until)) if until >= now && !holder_is_dead(owner) => {
                SyncActivity::Running
            }
            (Some(_), _) => SyncActivity::Interrupted,
            _ => SyncActivity::Idle,
        }
    }
}

/// Owners are "pid N on HOST (run R)" (older versions wrote "pid N on
/// HOST"); a holder on this host whose process is gone is dead.
fn holder_is_dead(owner: &str) -> bool {
    let Some(rest) = owner.strip_prefix("pid ") else {
        return false;
    };
    let Some((pid, host)) = rest.split_once(" on ") else {
        return false;
    };
    let host = host.split_once(" (run ").map_or(host, |(h, _)| h);
    host == crate::hostname()
        && pid.parse::<u32>().is_ok_and(|p| p != std::process::id())
        && cfg!(target_os = "linux")
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

enum Op<'a> {
    Login,
    Accounts,
    Window(&'a FetchedAccount, DateWindow),
    Documents,
    Download(&'a FetchedDocument),
}

enum Out {
    Done,
    Accounts(Vec<FetchedAccount>),
    Page(WindowPage),
    Documents(Vec<FetchedDocument>),
    Content(DocumentContent),
}

/// What fetching one window came to.
enum Fetched {
    Page(WindowPage),
    /// Strong customer authentication went unanswered.
    ScaStopped,
    /// The bank's request budget cannot afford it now (why, until when).
    Deferred(String),
}

/// Where a sync stopped for want of a person.
struct Stopped {
    challenge: ScaChallenge,
    stored_from: Option<NaiveDate>,
}

struct Run<'a> {
    syncer: &'a Syncer,
    connection: &'a Connection,
    settings: &'a ConnectionSettings,
    progress: Progress<'a>,
    lease: &'a LeaseHolder,
    solver: &'a dyn ScaSolver,
    summary: SyncSummary,
    /// Set once strong customer authentication went unanswered in this run:
    /// later accounts stop at the boundary without asking the bank again.
    stopped: Option<Stopped>,
}

impl Run<'_> {
    async fn sync_all(&mut self, connector: &mut dyn Connector) -> Result<SyncSummary, SyncError> {
        if let Some(session) = self.syncer.open_session(self.connection) {
            connector.restore_session(session);
        }
        self.call(connector, Op::Login).await?;
        self.save_session(connector).await;
        (self.progress)(SyncEvent::LoggedIn);

        let accounts = match self.call(connector, Op::Accounts).await {
            Ok(Out::Accounts(accounts)) => accounts,
            Ok(_) => unreachable!("Op::Accounts yields Out::Accounts"),
            // Not even the account list fits the budget: nothing to do until it does.
            Err(SyncError::Connector(e)) if e.is_deferral() => {
                self.summary.defer(e.to_string());
                self.save_session(connector).await;
                return Ok(self.summary.clone());
            }
            Err(e) => return Err(e),
        };
        (self.progress)(SyncEvent::Accounts {
            count: accounts.len(),
        });
        let mut account_ids = HashMap::new();
        for fetched in &accounts {
            let account = self
                .syncer
                .store
                .upsert_account(self.lease.token, fetched, Utc::now())
                .await?;
            account_ids.insert(fetched.provider_id.clone(), account.id);
            self.sync_account(connector, fetched, account.id).await?;
            self.summary.accounts += 1;
        }
        // Documents need no SCA at the banks we know: fetched even when the
        // transactions stopped at the boundary.
        self.sync_documents(connector, &account_ids).await?;
        self.save_session(connector).await;
        if let Some(stopped) = self.stopped.take() {
            return Err(SyncError::NeedsUser {
                connection: self.connection.name.clone(),
                challenge: stopped.challenge,
                stored_from: stopped.stored_from,
                summary: Box::new(self.summary.clone()),
            });
        }
        Ok(self.summary.clone())
    }

    /// New documents: listed, the ones already stored skipped, the others
    /// downloaded and stored (bytes once per SHA-256).
    async fn sync_documents(
        &mut self,
        connector: &mut dyn Connector,
        account_ids: &HashMap<String, i64>,
    ) -> Result<(), SyncError> {
        let listed = match self.call(connector, Op::Documents).await {
            Ok(Out::Documents(d)) => d,
            Ok(_) => unreachable!("Op::Documents yields Out::Documents"),
            Err(SyncError::Connector(ConnectorError::Unsupported { .. })) => return Ok(()),
            Err(e) => return Err(e),
        };
        let store = &self.syncer.store;
        let mut known = store.document_keys(self.connection.id).await?;
        let mut stored = 0;
        for doc in &listed {
            if !known.insert(doc.provider_id.clone()) {
                continue;
            }
            let Out::Content(content) = self.call(connector, Op::Download(doc)).await? else {
                unreachable!("Op::Download yields Out::Content")
            };
            let new = NewDocument {
                connection_id: self.connection.id,
                account_id: doc
                    .account
                    .as_ref()
                    .and_then(|a| account_ids.get(a).copied()),
                provider_id: doc.provider_id.clone(),
                kind: doc.kind.clone(),
                category: doc.category.clone(),
                title: doc.title.clone(),
                date: doc.date,
                content_type: content.content_type.clone(),
                now: Utc::now(),
            };
            if store
                .save_document(self.lease.token, &new, &content.bytes)
                .await?
                .inserted
            {
                stored += 1;
            }
        }
        self.summary.documents += stored;
        (self.progress)(SyncEvent::Documents {
            listed: listed.len(),
            stored,
        });
        Ok(())
    }

    /// A bank with a daily request budget: its connector's count of calls
    /// is kept after every window, so a run killed midway cannot make the
    /// next one forget calls already made.
    async fn keep_budget(
        &self,
        connector: &mut dyn Connector,
        limits: &bankbridge_core::ConnectorLimits,
    ) {
        if limits.daily_request_budget.is_some() {
            self.save_session(connector).await;
        }
    }

    async fn save_session(&self, connector: &mut dyn Connector) {
        // Read the state before any await: `&dyn Connector` is not `Send`.
        let Some(state) = connector.session_state() else {
            return;
        };
        let sealed = self
            .syncer
            .key
            .seal_str(&state, &session_purpose(&self.connection.name));
        if let Err(e) = self
            .syncer
            .store
            .save_session(self.lease.token, Some(&sealed))
            .await
        {
            tracing::warn!(connection = %self.connection.name, error = %e, "could not keep the bank session");
        }
    }

    async fn sync_account(
        &mut self,
        connector: &mut dyn Connector,
        fetched: &FetchedAccount,
        account_id: i64,
    ) -> Result<(), SyncError> {
        let store = &self.syncer.store;
        let limits = connector.limits();
        let bounds = PlanBounds::new(
            connector.today(),
            &limits,
            self.settings.window_days,
            self.settings.overlap_days,
            self.settings.since,
        );
        let mut window_days = bounds.window_days;
        let mut cp = store.checkpoint(account_id).await?;
        let label = fetched
            .iban
            .as_ref()
            .map_or(fetched.provider_id.clone(), |i| i.to_string());
        let mut acc = AccountProgress::new(self.lease.token, account_id);

        let forward = plan::forward_windows(&cp, &bounds, window_days);
        (self.progress)(SyncEvent::Planned {
            account: label.clone(),
            windows: forward.len(),
        });
        let mut halted = None;
        for w in forward {
            let page = match self
                .fetch_or_stop(connector, fetched, w, &bounds, &label, &mut window_days)
                .await?
            {
                Fetched::Page(page) => page,
                // The covered range must stay contiguous: nothing newer is
                // committed above a gap.
                stop => {
                    halted = Some(stop);
                    break;
                }
            };
            let next = plan::after_forward(&cp, w);
            self.commit(&mut acc, w, page, &cp, &next, &label).await?;
            cp = next;
            self.keep_budget(connector, &limits).await;
        }
        while halted.is_none()
            && let Some(w) = plan::next_backfill_window(&cp, &bounds, window_days)
        {
            let page = match self
                .fetch_or_stop(connector, fetched, w, &bounds, &label, &mut window_days)
                .await?
            {
                Fetched::Page(page) => page,
                stop => {
                    halted = Some(stop);
                    break;
                }
            };
            let empty = page.transactions.is_empty();
            let next = plan::after_backfill(
                &cp,
                &bounds,
                w,
                empty,
                self.syncer.options.empty_streak_limit,
            );
            self.commit(&mut acc, w, page, &cp, &next, &label).await?;
            cp = next;
            self.keep_budget(connector, &limits).await;
        }
        if let Some(Fetched::Deferred(reason)) = &halted {
            tracing::info!(connection = %self.connection.name, account = %label, %reason, "the bank's request budget has no room: this account waits for a later sync");
            (self.progress)(SyncEvent::Deferred {
                account: label.clone(),
                reason: reason.clone(),
            });
            self.summary.defer(reason.clone());
        }
        if matches!(halted, Some(Fetched::ScaStopped)) {
            tracing::info!(connection = %self.connection.name, account = %label, oldest_stored = ?cp.oldest_covered, "strong customer authentication unanswered: this account stops at the boundary");
            (self.progress)(SyncEvent::ScaStopped {
                account: label.clone(),
                oldest_stored: cp.oldest_covered,
            });
            if let Some(s) = self.stopped.as_mut()
                && s.stored_from.is_none()
            {
                s.stored_from = cp.oldest_covered;
            }
        }

        // Pending rows no window reported again, and no booked row settled, are void.
        let voided = window::void_vanished(store.as_ref(), &acc, &cp, Utc::now()).await?;
        self.summary.voided += voided;
        Ok(())
    }

    /// Fetch a window, or say why not: it needs strong customer
    /// authentication nobody answered (in this call, or earlier in the run
    /// for a window the connector's limits put behind the SCA boundary), or
    /// the bank's request budget cannot afford it now.
    async fn fetch_or_stop(
        &mut self,
        connector: &mut dyn Connector,
        account: &FetchedAccount,
        w: DateWindow,
        bounds: &PlanBounds,
        label: &str,
        window_days: &mut u32,
    ) -> Result<Fetched, SyncError> {
        if self.stopped.is_some() && bounds.needs_sca(w) {
            // Asking the bank again would only start another approval nobody answers.
            return Ok(Fetched::ScaStopped);
        }
        match self
            .fetch_range(connector, account, w, label, window_days)
            .await
        {
            Ok(page) => Ok(Fetched::Page(page)),
            Err(SyncError::Connector(ConnectorError::ScaRequired(challenge))) => {
                if self.stopped.is_none() {
                    self.stopped = Some(Stopped {
                        challenge,
                        stored_from: None,
                    });
                }
                Ok(Fetched::ScaStopped)
            }
            Err(SyncError::Connector(e)) if e.is_deferral() => Ok(Fetched::Deferred(e.to_string())),
            Err(e) => Err(e),
        }
    }

    /// Reconcile one fetched window and commit it atomically with `next`
    /// (the window step, [`window::apply_window`]).
    async fn commit(
        &mut self,
        acc: &mut AccountProgress,
        w: DateWindow,
        page: WindowPage,
        cp: &Checkpoint,
        next: &Checkpoint,
        label: &str,
    ) -> Result<(), SyncError> {
        let applied = window::apply_window(
            self.syncer.store.as_ref(),
            acc,
            w,
            page,
            cp,
            next,
            Utc::now(),
        )
        .await?;
        if let Some(gap) = applied.balance_gap {
            tracing::warn!(account = label, window = %w, %gap, "opening balance plus booked rows differs from the closing balance: the bank may have left rows out");
        }
        self.summary.add(&applied.stats);
        self.summary.windows += 1;
        (self.progress)(SyncEvent::WindowDone {
            account: label.to_owned(),
            window: w,
            stats: applied.stats,
        });
        Ok(())
    }

    /// Fetch a window; when the bank refuses its length, fetch it in halves
    /// and use the smaller size for the rest of the account. A window that
    /// keeps failing on transient faults is fetched in halves too (a fault
    /// on any of its many pages fails the whole attempt), at most
    /// [`MAX_FAULT_HALVINGS`] times deep: a bank that is down costs a few
    /// more attempts before the window fails, not one per day.
    async fn fetch_range(
        &self,
        connector: &mut dyn Connector,
        account: &FetchedAccount,
        w: DateWindow,
        label: &str,
        window_days: &mut u32,
    ) -> Result<WindowPage, SyncError> {
        let max_attempts = self.syncer.options.max_attempts;
        // (window, halvings on faults so far)
        let mut pending = vec![(w, 0u32)];
        let mut page = WindowPage::default();
        while let Some((part, halvings)) = pending.pop() {
            let may_halve = part.days() > 1 && halvings < MAX_FAULT_HALVINGS;
            let attempts = if may_halve {
                max_attempts.min(ATTEMPTS_BEFORE_HALVING)
            } else {
                max_attempts
            };
            match self
                .call_within(connector, Op::Window(account, part), attempts)
                .await
            {
                Ok(Out::Page(p)) => {
                    page.transactions.extend(p.transactions);
                    page.balances.extend(p.balances);
                }
                Ok(_) => unreachable!("Op::Window yields Out::Page"),
                Err(GaveUp::Faults { attempts, last, .. }) if may_halve => {
                    let half = part.days() / 2;
                    tracing::warn!(account = label, window = %part, attempts, error = %last, "the window keeps failing; fetching it in halves");
                    let mid = plan::add_days(part.from, half - 1);
                    pending.push((
                        DateWindow::new(plan::add_days(mid, 1), part.to),
                        halvings + 1,
                    ));
                    pending.push((DateWindow::new(part.from, mid), halvings + 1));
                }
                Err(GaveUp::Other(SyncError::Connector(ConnectorError::WindowRefused {
                    window,
                    message,
                }))) if part.days() > 1 => {
                    let half = part.days() / 2;
                    *window_days = (*window_days).min(half).max(1);
                    tracing::warn!(account = label, %window, %message, new_days = half, "the bank refused the window; fetching it in halves");
                    (self.progress)(SyncEvent::WindowShrunk {
                        account: label.to_owned(),
                        window,
                        new_days: half,
                    });
                    let mid = plan::add_days(part.from, half - 1);
                    // Pushed so the older half is fetched first.
                    pending.push((DateWindow::new(plan::add_days(mid, 1), part.to), halvings));
                    pending.push((DateWindow::new(part.from, mid), halvings));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(page)
    }

    /// One connector call with retries of transient faults (exponential
    /// backoff, `Retry-After` honoured), a fresh login when the session
    /// expired, and strong customer authentication through the solver.
    async fn call(&self, connector: &mut dyn Connector, op: Op<'_>) -> Result<Out, SyncError> {
        let attempts = self.syncer.options.max_attempts;
        self.call_within(connector, op, attempts)
            .await
            .map_err(SyncError::from)
    }

    /// [`Run::call`] with at most `max_attempts` tries of transient faults.
    async fn call_within(
        &self,
        connector: &mut dyn Connector,
        op: Op<'_>,
        max_attempts: u32,
    ) -> Result<Out, GaveUp> {
        let o = &self.syncer.options;
        let mut attempt = 1;
        let mut relogins = 0;
        let mut sca_rounds = 0;
        loop {
            self.lease.check(&self.connection.name)?;
            let (what, result) = match &op {
                Op::Login => (
                    "login".to_owned(),
                    connector.login().await.map(|_| Out::Done),
                ),
                Op::Accounts => (
                    "account list".to_owned(),
                    connector.accounts().await.map(Out::Accounts),
                ),
                Op::Window(a, w) => (
                    format!("transactions of {} for {w}", a.provider_id),
                    connector.window(a, *w).await.map(Out::Page),
                ),
                Op::Documents => (
                    "document list".to_owned(),
                    connector.documents().await.map(Out::Documents),
                ),
                Op::Download(d) => (
                    format!("document {:?}", d.title),
                    connector.download(d).await.map(Out::Content),
                ),
            };
            match result {
                Ok(out) => return Ok(out),
                Err(e) if e.is_transient() && attempt < max_attempts => {
                    let delay = retry_delay(o, attempt, &e);
                    tracing::info!(%what, attempt, delay_ms = delay.as_millis() as u64, reason = %e, "retrying");
                    (self.progress)(SyncEvent::Retrying {
                        what,
                        attempt,
                        delay,
                        reason: e.to_string(),
                    });
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(ConnectorError::SessionExpired) if !matches!(op, Op::Login) && relogins < 2 => {
                    tracing::info!(%what, "bank session expired; logging in again");
                    (self.progress)(SyncEvent::Relogin);
                    relogins += 1;
                    Box::pin(self.call(connector, Op::Login)).await?;
                    self.save_session(connector).await;
                }
                Err(ConnectorError::ScaRequired(challenge)) => {
                    sca_rounds += 1;
                    if sca_rounds > 2 {
                        return Err(ConnectorError::ScaFailed(format!(
                            "the bank asked again for {what} after the authentication went through"
                        ))
                        .into());
                    }
                    tracing::info!(%what, kind = challenge.kind(), "the bank asks for strong customer authentication");
                    self.authenticate(connector, challenge).await?;
                    self.save_session(connector).await;
                }
                Err(e) if e.is_transient() => {
                    return Err(GaveUp::Faults {
                        what,
                        attempts: attempt,
                        last: e,
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Tries of a window that may still be halved, before it is.
const ATTEMPTS_BEFORE_HALVING: u32 = 3;
/// How deep a window that keeps failing is halved.
const MAX_FAULT_HALVINGS: u32 = 4;

/// Why a call stopped trying.
enum GaveUp {
    /// A transient fault on every one of `attempts` tries.
    Faults {
        what: String,
        attempts: u32,
        last: ConnectorError,
    },
    Other(SyncError),
}

impl From<SyncError> for GaveUp {
    fn from(e: SyncError) -> Self {
        GaveUp::Other(e)
    }
}

impl From<ConnectorError> for GaveUp {
    fn from(e: ConnectorError) -> Self {
        GaveUp::Other(e.into())
    }
}

impl From<GaveUp> for SyncError {
    fn from(g: GaveUp) -> Self {
        match g {
            GaveUp::Faults {
                what,
                attempts,
                last,
            } => SyncError::Connector(ConnectorError::Other(format!(
                "{what} still failing after {attempts} attempts: {last}"
            ))),
            GaveUp::Other(e) => e,
        }
    }
}

impl Run<'_> {
    /// Ask the solver, hand its answer to the connector and poll until the
    /// bank accepts. An unanswered challenge comes back as
    /// [`ConnectorError::ScaRequired`] (the caller stops in `needs_user`).
    async fn authenticate(
        &self,
        connector: &mut dyn Connector,
        challenge: ScaChallenge,
    ) -> Result<(), SyncError> {
        (self.progress)(SyncEvent::ScaRequired {
            challenge: challenge.clone(),
        });
        let answer = self
            .solver
            .solve(&challenge)
            .await
            .map_err(|e| SyncError::Solver(e.to_string()))?;
        match answer {
            ScaAnswer::NotNow => {
                return Err(ConnectorError::ScaRequired(challenge).into());
            }
            ScaAnswer::Declined => {
                // Tell the bank when the connector can; the refusal stands anyway.
                if let Err(e) = connector.resume_sca(&ScaAnswer::Declined).await {
                    tracing::debug!(error = %e, "the connector could not pass the refusal on");
                }
                return Err(ConnectorError::ScaFailed("declined".into()).into());
            }
            ScaAnswer::Unavailable(reason) => {
                return Err(ConnectorError::NeedsUser(format!(
                    "{challenge} could not be given: {reason}"
                ))
                .into());
            }
            ScaAnswer::Approved | ScaAnswer::Code(_) | ScaAnswer::Returned(_) => {}
        }
        let o = &self.syncer.options;
        let deadline = challenge
            .expires_at()
            .and_then(|t| (t - Utc::now()).to_std().ok())
            .map_or(o.sca_timeout, |left| left.min(o.sca_timeout));
        let started = Instant::now();
        let mut attempt = 1;
        loop {
            match connector.resume_sca(&answer).await {
                Ok(ScaProgress::Done) => {
                    tracing::info!(
                        waited_ms = started.elapsed().as_millis() as u64,
                        "strong customer authentication done"
                    );
                    (self.progress)(SyncEvent::ScaDone);
                    return Ok(());
                }
                Ok(ScaProgress::Pending { poll_after }) => {
                    let waited = started.elapsed();
                    if waited >= deadline {
                        return Err(ConnectorError::ScaFailed(format!(
                            "not approved within {}s; sync again to start a new request",
                            deadline.as_secs()
                        ))
                        .into());
                    }
                    let pause = poll_after
                        .max(Duration::from_millis(50))
                        .min(deadline - waited);
                    tokio::time::sleep(pause).await;
                }
                Err(e) if e.is_transient() && attempt < o.max_attempts => {
                    let delay = retry_delay(o, attempt, &e);
                    (self.progress)(SyncEvent::Retrying {
                        what: "authentication status".to_owned(),
                        attempt,
                        delay,
                        reason: e.to_string(),
                    });
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                // The bank turned the answer down (a refused code, a
                // declined or expired approval): only the user can go on. A
                // refused code is not tried again in this run (a card would
                // count it; a person may have mistyped).
                Err(ConnectorError::ScaFailed(why)) => {
                    let reason = if matches!(answer, ScaAnswer::Code(_)) {
                        format!(
                            "the bank refused the code for {challenge}: {why}. It is not tried again in this run"
                        )
                    } else {
                        format!("{challenge} did not succeed: {why}")
                    };
                    return Err(ConnectorError::NeedsUser(reason).into());
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The pause before retry `attempt` of a transient fault: exponential
/// backoff with jitter, never shorter than the bank's `Retry-After` unless
/// that exceeds `max_retry_after`.
fn retry_delay(o: &SyncOptions, attempt: u32, e: &ConnectorError) -> Duration {
    let backoff = o
        .backoff_base
        .saturating_mul(1 << (attempt - 1).min(16))
        .min(o.backoff_max);
    let asked = e.retry_after().unwrap_or_default().min(o.max_retry_after);
    jitter(backoff).max(asked)
}

/// Spread retries of many clients: 75–125 % of the nominal delay.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let factor = 0.75 + (nanos % 1000) as f64 / 2000.0;
    d.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bankbridge_core::{Balance, BalanceKind, FetchedTransaction, TxStatus};

    #[test]
    fn a_bank_retry_after_is_honoured_up_to_the_cap() {
        let o = SyncOptions::default();
        let asking = |secs| ConnectorError::Transient {
            what: "transactions".into(),
            kind: bankbridge_core::TransientKind::RateLimited,
            retry_after: Some(Duration::from_secs(secs)),
        };
        // Longer than the backoff: the bank's wish wins.
        assert_eq!(retry_delay(&o, 1, &asking(20)), Duration::from_secs(20));
        // An hour is cut to the cap (five minutes by default, configurable).
        assert_eq!(retry_delay(&o, 1, &asking(3600)), Duration::from_secs(300));
        let tight = SyncOptions {
            max_retry_after: Duration::from_secs(2),
            ..SyncOptions::default()
        };
        assert!(retry_delay(&tight, 1, &asking(3600)) <= Duration::from_secs(2));
    }

    #[test]
    fn a_stored_error_is_one_short_line() {
        let e = SyncError::Connector(ConnectorError::Other(format!(
            "GetCustBal: the bank rejected the request: {}\n<html>\u{1b}[31m{}",
            "x".repeat(300),
            "y".repeat(300)
        )));
        let stored = stored_error(&e);
        assert!(stored.chars().count() <= STORED_ERROR_CHARS + 1, "{stored}");
        assert!(stored.ends_with('…'));
        assert!(!stored.chars().any(char::is_control), "{stored:?}");
        assert!(stored.starts_with("GetCustBal: the bank rejected the request"));
        let short = SyncError::Connector(ConnectorError::SessionExpired);
        assert_eq!(stored_error(&short), short.to_string());
    }
    use chrono::NaiveDate;
    use rust_decimal::Decimal;

    fn page(opening: i64, closing: i64, amounts: &[(i64, TxStatus)]) -> WindowPage {
        let d = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
        let bal = |kind, v| Balance {
            kind,
            amount: Decimal::new(v, 2),
            currency: "EUR".parse().unwrap(),
            reference_date: d,
        };
        let tx = |v: i64, status| FetchedTransaction {
            provider_id: None,
            status,
            booking_date: d,
            value_date: None,
            transaction_date: None,
            amount: Decimal::new(v, 2),
            currency: "EUR".parse().unwrap(),
            original_amount: None,
            original_currency: None,
            raw_label: String::new(),
            label: String::new(),
            counterparty_name: None,
            counterparty_iban: None,
            remittance_info: None,
            bank_code: None,
            running_balance: None,
            raw: serde_json::Value::Null,
        };
        WindowPage {
            transactions: amounts.iter().map(|(v, s)| tx(*v, *s)).collect(),
            balances: vec![
                bal(BalanceKind::OpeningBooked, opening),
                bal(BalanceKind::ClosingBooked, closing),
            ],
        }
    }

    #[test]
    fn balances_that_add_up_raise_nothing_and_a_missing_row_is_caught() {
        let ok = page(
            10_000,
            9_000,
            &[
                (-1_500, TxStatus::Booked),
                (500, TxStatus::Booked),
                (-99_999, TxStatus::Pending),
            ],
        );
        assert_eq!(
            window::balance_gap(&ok),
            None,
            "pending rows are not in the booked balance"
        );
        let missing = page(10_000, 9_000, &[(-1_500, TxStatus::Booked)]);
        assert_eq!(window::balance_gap(&missing), Some(Decimal::new(500, 2)));
        let no_balances = WindowPage {
            transactions: missing.transactions.clone(),
            balances: vec![],
        };
        assert_eq!(window::balance_gap(&no_balances), None);
    }
}
