//! Flow-check work shared by the `serve` instances on one database, beyond
//! the first-insert-wins slot claims of [`crate::FlowChecks`]: round claims
//! that lapse when their server dies (and are taken over), and the check
//! agents' job queue. One implementation for both backends
//! ([`check_work_store!`]): the SQL is the same text on both.
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::Result;

/// A job for the check agents of one location, as queued (no secrets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedCheckJob {
    pub job_id: String,
    pub round_id: String,
    pub check_id: String,
    pub location: String,
    /// The flow file's name and text.
    pub file: String,
    pub source: String,
    /// The process whose round it is: it collects the report.
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    /// Not handed out from then on (its round closes without it).
    pub deadline: DateTime<Utc>,
}

/// An agent's report on a job, for the process whose round it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckJobReport {
    pub job_id: String,
    pub round_id: String,
    pub location: String,
    /// The run report as JSON, as the agent sent it.
    pub report: String,
}

/// An alert waiting to be delivered (or claimed for delivery).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxAlert {
    pub id: String,
    /// The channel's name (each server reads the channels from its folder).
    pub channel: String,
    /// The alert as JSON.
    pub alert: String,
    pub created_at: DateTime<Utc>,
}

/// A round claim whose server did not close the round in time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LapsedRound {
    pub check_id: String,
    pub slot_ms: i64,
    pub claimed_by: String,
    pub until: DateTime<Utc>,
}

#[async_trait]
pub trait CheckWork: Send + Sync + 'static {
    /// Claim the scheduled round of `check_id`'s slot `slot_ms` until
    /// `until`: true for the first claim only, whichever server makes it.
    async fn claim_check_round(
        &self,
        check_id: &str,
        slot_ms: i64,
        owner: &str,
        at: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool>;
    /// The round of the slot closed: its claim is never taken over.
    async fn finish_check_round(
        &self,
        check_id: &str,
        slot_ms: i64,
        at: DateTime<Utc>,
    ) -> Result<()>;
    /// Round claims not done by `now` though their `until` passed, among
    /// those whose `until` is after `since` (older ones are not run late).
    async fn lapsed_check_rounds(
        &self,
        now: DateTime<Utc>,
        since: DateTime<Utc>,
    ) -> Result<Vec<LapsedRound>>;
    /// Take a lapsed round over for `owner` until `until`: false when
    /// another server took it first (or its server closed it after all).
    async fn take_over_check_round(
        &self,
        lapsed: &LapsedRound,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool>;
    async fn queue_check_job(&self, job: &QueuedCheckJob) -> Result<()>;
    /// Hand out up to `limit` waiting jobs of `location` (oldest first) to
    /// `taker`: each job goes to one taker only.
    async fn take_check_jobs(
        &self,
        location: &str,
        taker: &str,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<QueuedCheckJob>>;
    /// An agent's report on a job handed out: the job's round, location and
    /// round server, or None when the job is unknown, answered already, or
    /// past its deadline (its round closed).
    async fn report_check_job(
        &self,
        job_id: &str,
        report: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<(String, String, String)>>;
    /// The reports on `created_by`'s jobs not collected yet; each is
    /// collected once.
    async fn collect_check_reports(
        &self,
        created_by: &str,
        at: DateTime<Utc>,
    ) -> Result<Vec<CheckJobReport>>;
    /// Forget jobs queued before `before`; how many.
    async fn prune_check_jobs(&self, before: DateTime<Utc>) -> Result<u64>;
    /// Claim up to `limit` alerts to deliver, oldest first, until `until`:
    /// those nobody claimed and those whose claim lapsed (their server died).
    async fn claim_alerts(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<OutboxAlert>>;
    /// The alert was delivered (`error` None) or could not be: either way
    /// it is done. False when `owner` no longer holds its claim.
    async fn alert_done(
        &self,
        id: &str,
        owner: &str,
        at: DateTime<Utc>,
        error: Option<&str>,
    ) -> Result<bool>;
    /// Forget alerts queued before `before`; how many.
    async fn prune_alerts(&self, before: DateTime<Utc>) -> Result<u64>;
}

pub(crate) const JOB_COLUMNS: &str =
    "job_id, round_id, check_id, location, file, source, created_by, created_at, deadline";

macro_rules! check_work_store {
    ($Store:ty) => {
        #[async_trait]
        impl $crate::check_work::CheckWork for $Store {
            async fn claim_check_round(
                &self,
                check_id: &str,
                slot_ms: i64,
                owner: &str,
                at: DateTime<Utc>,
                until: DateTime<Utc>,
            ) -> Result<bool> {
                if check_id.is_empty() {
                    return Err(StoreError::Conflict("a check id must not be empty".into()));
                }
                let done = sqlx::query(
                    "INSERT INTO check_claims (check_id, slot_ms, claimed_by, claimed_at, until) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (check_id, slot_ms) DO NOTHING",
                )
                .bind(check_id)
                .bind(slot_ms)
                .bind(owner)
                .bind(crate::common::micros(at))
                .bind(crate::common::micros(until))
                .execute(self.writes())
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn finish_check_round(
                &self,
                check_id: &str,
                slot_ms: i64,
                at: DateTime<Utc>,
            ) -> Result<()> {
                sqlx::query(
                    "UPDATE check_claims SET done_at = $1 \
                     WHERE check_id = $2 AND slot_ms = $3 AND done_at IS NULL",
                )
                .bind(crate::common::micros(at))
                .bind(check_id)
                .bind(slot_ms)
                .execute(self.writes())
                .await?;
                Ok(())
            }

            async fn lapsed_check_rounds(
                &self,
                now: DateTime<Utc>,
                since: DateTime<Utc>,
            ) -> Result<Vec<$crate::check_work::LapsedRound>> {
                let rows = sqlx::query(
                    "SELECT check_id, slot_ms, claimed_by, until FROM check_claims \
                     WHERE done_at IS NULL AND until < $1 AND until > $2 ORDER BY until LIMIT 500",
                )
                .bind(crate::common::micros(now))
                .bind(crate::common::micros(since))
                .fetch_all(self.reads())
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok($crate::check_work::LapsedRound {
                            check_id: r.try_get(0)?,
                            slot_ms: r.try_get(1)?,
                            claimed_by: r.try_get(2)?,
                            until: r.try_get(3)?,
                        })
                    })
                    .collect()
            }

            async fn take_over_check_round(
                &self,
                l: &$crate::check_work::LapsedRound,
                owner: &str,
                now: DateTime<Utc>,
                until: DateTime<Utc>,
            ) -> Result<bool> {
                let done = sqlx::query(
                    "UPDATE check_claims SET claimed_by = $1, until = $2 \
                     WHERE check_id = $3 AND slot_ms = $4 AND claimed_by = $5 \
                     AND done_at IS NULL AND until < $6",
                )
                .bind(owner)
                .bind(crate::common::micros(until))
                .bind(&l.check_id)
                .bind(l.slot_ms)
                .bind(&l.claimed_by)
                .bind(crate::common::micros(now))
                .execute(self.writes())
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn queue_check_job(&self, j: &$crate::check_work::QueuedCheckJob) -> Result<()> {
                sqlx::query(
                    "INSERT INTO check_jobs (job_id, round_id, check_id, location, file, source, \
                     created_by, created_at, deadline) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(&j.job_id)
                .bind(&j.round_id)
                .bind(&j.check_id)
                .bind(&j.location)
                .bind(&j.file)
                .bind(&j.source)
                .bind(&j.created_by)
                .bind(crate::common::micros(j.created_at))
                .bind(crate::common::micros(j.deadline))
                .execute(self.writes())
                .await?;
                Ok(())
            }

            async fn take_check_jobs(
                &self,
                location: &str,
                taker: &str,
                now: DateTime<Utc>,
                limit: i64,
            ) -> Result<Vec<$crate::check_work::QueuedCheckJob>> {
                // The outer `taken_at IS NULL` is checked again on the row
                // as it is when locked, so two servers never both take a job.
                let rows = sqlx::query(&format!(
                    "UPDATE check_jobs SET taken_by = $1, taken_at = $2 \
                     WHERE taken_at IS NULL AND job_id IN (SELECT job_id FROM check_jobs \
                     WHERE location = $3 AND taken_at IS NULL AND deadline > $2 \
                     ORDER BY created_at LIMIT $4) RETURNING {}",
                    $crate::check_work::JOB_COLUMNS
                ))
                .bind(taker)
                .bind(crate::common::micros(now))
                .bind(location)
                .bind(limit)
                .fetch_all(self.writes())
                .await?;
                let mut jobs = rows
                    .iter()
                    .map(|r| {
                        Ok($crate::check_work::QueuedCheckJob {
                            job_id: r.try_get(0)?,
                            round_id: r.try_get(1)?,
                            check_id: r.try_get(2)?,
                            location: r.try_get(3)?,
                            file: r.try_get(4)?,
                            source: r.try_get(5)?,
                            created_by: r.try_get(6)?,
                            created_at: r.try_get(7)?,
                            deadline: r.try_get(8)?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                jobs.sort_by(|a, b| (a.created_at, &a.job_id).cmp(&(b.created_at, &b.job_id)));
                Ok(jobs)
            }

            async fn report_check_job(
                &self,
                job_id: &str,
                report: &str,
                at: DateTime<Utc>,
            ) -> Result<Option<(String, String, String)>> {
                let row = sqlx::query(
                    "UPDATE check_jobs SET report = $1, reported_at = $2 \
                     WHERE job_id = $3 AND taken_at IS NOT NULL AND reported_at IS NULL \
                     AND deadline > $2 RETURNING round_id, location, created_by",
                )
                .bind(report)
                .bind(crate::common::micros(at))
                .bind(job_id)
                .fetch_optional(self.writes())
                .await?;
                row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                    .transpose()
            }

            async fn collect_check_reports(
                &self,
                created_by: &str,
                at: DateTime<Utc>,
            ) -> Result<Vec<$crate::check_work::CheckJobReport>> {
                let rows = sqlx::query(
                    "UPDATE check_jobs SET collected_at = $1 \
                     WHERE created_by = $2 AND reported_at IS NOT NULL AND collected_at IS NULL \
                     RETURNING job_id, round_id, location, report",
                )
                .bind(crate::common::micros(at))
                .bind(created_by)
                .fetch_all(self.writes())
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok($crate::check_work::CheckJobReport {
                            job_id: r.try_get(0)?,
                            round_id: r.try_get(1)?,
                            location: r.try_get(2)?,
                            report: r.try_get(3)?,
                        })
                    })
                    .collect()
            }

            async fn claim_alerts(
                &self,
                owner: &str,
                now: DateTime<Utc>,
                until: DateTime<Utc>,
                limit: i64,
            ) -> Result<Vec<$crate::check_work::OutboxAlert>> {
                let rows = sqlx::query(
                    "UPDATE alert_outbox SET claimed_by = $1, claimed_until = $2 \
                     WHERE done_at IS NULL AND (claimed_until IS NULL OR claimed_until < $3) \
                     AND id IN (SELECT id FROM alert_outbox WHERE done_at IS NULL \
                     AND (claimed_until IS NULL OR claimed_until < $3) ORDER BY created_at LIMIT $4) \
                     RETURNING id, channel, alert, created_at",
                )
                .bind(owner)
                .bind(crate::common::micros(until))
                .bind(crate::common::micros(now))
                .bind(limit)
                .fetch_all(self.writes())
                .await?;
                let mut alerts = rows
                    .iter()
                    .map(|r| {
                        Ok($crate::check_work::OutboxAlert {
                            id: r.try_get(0)?,
                            channel: r.try_get(1)?,
                            alert: r.try_get(2)?,
                            created_at: r.try_get(3)?,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                alerts.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
                Ok(alerts)
            }

            async fn alert_done(
                &self,
                id: &str,
                owner: &str,
                at: DateTime<Utc>,
                error: Option<&str>,
            ) -> Result<bool> {
                let done = sqlx::query(
                    "UPDATE alert_outbox SET done_at = $1, error = $2 \
                     WHERE id = $3 AND claimed_by = $4 AND done_at IS NULL",
                )
                .bind(crate::common::micros(at))
                .bind(error)
                .bind(id)
                .bind(owner)
                .execute(self.writes())
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn prune_alerts(&self, before: DateTime<Utc>) -> Result<u64> {
                let done = sqlx::query("DELETE FROM alert_outbox WHERE created_at < $1")
                    .bind(crate::common::micros(before))
                    .execute(self.writes())
                    .await?;
                Ok(done.rows_affected())
            }

            async fn prune_check_jobs(&self, before: DateTime<Utc>) -> Result<u64> {
                let done = sqlx::query("DELETE FROM check_jobs WHERE created_at < $1")
                    .bind(crate::common::micros(before))
                    .execute(self.writes())
                    .await?;
                Ok(done.rows_affected())
            }
        }
    };
}
pub(crate) use check_work_store;
