//! Scheduling logic for flow checks, as pure functions over explicit inputs.
//!
//! Everything here takes `now` and a random-number generator as parameters,
//! so the server's scheduler and the agents drive it and the tests replay it
//! exactly. Nothing here sleeps, reads the clock or touches the store.
//!
//! The parts, in the order a round goes through them:
//!
//! - [`Schedule`]: when a round is due (fixed cadence, jitter, the first run
//!   spread over one period so many flows loaded together do not fire
//!   together).
//! - [`in_maintenance`]: whether the round is skipped ([`MaintenanceWindow`]).
//! - [`locations_for_round`]: where it runs ([`LocationMode`]).
//! - [`RetryPolicy::next_retry`]: whether a failed attempt is retried, and
//!   after how long; only the final attempt's result counts.
//! - [`round_verdict`]: the round's [`Outcome`] from every location's result
//!   (a quorum, so one location's network trouble does not page anyone).
//! - [`CheckState::observe`]: the check's [`Health`] across rounds, with
//!   thresholds, emitting one [`Transition`] per change of health and none
//!   otherwise, so a long outage is one alert plus reminders, not a storm.
//!
//! The flow file's `[schedule]`, `[retry]`, `[thresholds]`, `[locations]` and
//! `[[maintenance]]` tables are [`ScheduleConfig`], [`RetryConfig`],
//! [`Thresholds`], [`LocationsConfig`] and [`MaintenanceWindow`]; each has a
//! default, so a flow file may leave any of them out. Durations are
//! humantime strings ("30s", "1m", "1h 30m").

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{
    DateTime, Datelike, Days, NaiveDateTime, NaiveTime, Offset, TimeDelta, TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// A configuration value that cannot work. The message names the field as
/// written in the flow file (`schedule.jitter`, `maintenance[1].start`) and
/// says what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ScheduleError {
    /// The field, as a flow-file path (`retry.max_backoff`).
    pub field: String,
    /// The whole sentence, naming the field.
    pub message: String,
}

impl ScheduleError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error for the `index`th entry of a list (`maintenance[2]`).
    fn at_index(mut self, list: &str, index: usize) -> Self {
        let indexed = format!("{list}[{index}]");
        if let Some(rest) = self.field.strip_prefix(list) {
            self.field = format!("{indexed}{rest}");
        }
        self.message = self
            .message
            .replace(&format!("{list}."), &format!("{indexed}."));
        self
    }
}

/// Shortest period: a multi-step bank flow every second already hammers a bank.
const MIN_EVERY: Duration = Duration::from_secs(1);
/// Longest period or maintenance window: a week. Also keeps every date
/// computation far away from chrono's range limits.
const MAX_SPAN: Duration = Duration::from_secs(7 * 24 * 3600);
/// More retries than this hides an outage instead of confirming it.
const MAX_RETRIES: u32 = 10;

/// A std duration as chrono's, saturating (callers keep durations small).
fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

fn add(at: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    at.checked_add_signed(delta(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Serde for durations as humantime strings ("30s", "1m 30s").
mod humantime_serde {
    use std::time::Duration;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(D::Error::custom)
    }

    pub fn parse(text: &str) -> Result<Duration, String> {
        humantime::parse_duration(text.trim()).map_err(|e| {
            format!("{text:?} is not a duration like \"30s\", \"5m\" or \"1h 30m\" ({e})")
        })
    }

    pub mod option {
        use std::time::Duration;

        use serde::de::Error as _;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            let text = String::deserialize(d)?;
            super::parse(&text).map(Some).map_err(D::Error::custom)
        }
    }
}

// ---------------------------------------------------------------------------
// Schedule
// ---------------------------------------------------------------------------

/// The flow file's `[schedule]` table: how often the flow runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// The period ("1m"); from 1s to 7 days.
    #[serde(with = "humantime_serde")]
    pub every: Duration,
    /// Up to this much random delay on each round ("5s"), so flows on the
    /// same period do not hit a bank in lockstep; shorter than `every`.
    #[serde(with = "humantime_serde")]
    pub jitter: Duration,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            every: Duration::from_secs(60),
            jitter: Duration::ZERO,
        }
    }
}

impl ScheduleConfig {
    /// The checked [`Schedule`].
    pub fn validate(&self) -> Result<Schedule, ScheduleError> {
        Schedule::new(self.every, self.jitter)
    }
}

/// A validated cadence: every `every`, each round delayed by a random
/// offset in `[0, jitter]`.
///
/// Rounds are planned on *slots* (`phase + k × every` since the epoch, the
/// phase drawn from the check's id) and the jitter is
/// added to a slot, never carried into the next one, so the cadence does not
/// drift however long the check runs. Callers persist the slot, not the
/// jittered firing time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    every: Duration,
    jitter: Duration,
}

impl Schedule {
    /// A cadence; `every` from 1s to 7 days, `jitter` shorter than `every`
    /// (otherwise two rounds could swap order).
    pub fn new(every: Duration, jitter: Duration) -> Result<Self, ScheduleError> {
        if every < MIN_EVERY {
            return Err(ScheduleError::new(
                "schedule.every",
                format!("schedule.every must be at least 1s, got {:?}", human(every)),
            ));
        }
        if every > MAX_SPAN {
            return Err(ScheduleError::new(
                "schedule.every",
                format!(
                    "schedule.every must be at most 7days, got {:?}",
                    human(every)
                ),
            ));
        }
        if jitter >= every {
            return Err(ScheduleError::new(
                "schedule.jitter",
                format!(
                    "schedule.jitter must be shorter than schedule.every ({:?} is not shorter than {:?})",
                    human(jitter),
                    human(every)
                ),
            ));
        }
        Ok(Self { every, jitter })
    }

    /// The period.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// The largest random delay added to a slot.
    pub fn jitter(&self) -> Duration {
        self.jitter
    }

    /// The first slot not before `now` of the check `key`: its slots are
    /// `phase + k × every` since the epoch, the phase a hash of `key` within
    /// one period. Every server computes the same slots for a check, so
    /// servers sharing a database can claim each slot once; and a thousand
    /// flows loaded at once (a restart) spread over one period instead of
    /// all firing together.
    pub fn first_slot(&self, key: &str, now: DateTime<Utc>) -> DateTime<Utc> {
        let period = millis(self.every).max(1);
        let phase = i64::try_from(stable_hash(key) % period.unsigned_abs()).unwrap_or(0);
        let behind = now.timestamp_millis() - phase;
        // Whole periods, rounded up: the first slot at or after `now`.
        let k = behind.div_euclid(period) + i64::from(behind.rem_euclid(period) != 0);
        k.checked_mul(period)
            .and_then(|ms| ms.checked_add(phase))
            .and_then(DateTime::from_timestamp_millis)
            .unwrap_or(now)
    }

    /// The number of `slot` on its check's cadence (whole periods since the
    /// epoch): the same on every server, so round-robin locations alternate
    /// whichever server runs the round.
    pub fn slot_number(&self, slot: DateTime<Utc>) -> u64 {
        let period = millis(self.every).max(1);
        u64::try_from(slot.timestamp_millis().div_euclid(period)).unwrap_or(0)
    }

    /// When the round after slot `last_due` fires: `last_due + every`
    /// (fixed cadence) plus a random offset in `[0, jitter]`.
    ///
    /// `last_due` is the previous *slot* (what [`first_due`](Self::first_due)
    /// or [`next_slot`](Self::next_slot) returned), not when that round
    /// actually fired; the next slot is `last_due + every`.
    pub fn next_after(
        &self,
        last_due: DateTime<Utc>,
        rng: &mut (impl Rng + ?Sized),
    ) -> DateTime<Utc> {
        self.fire_at(add(last_due, self.every), rng)
    }

    /// `slot` plus a random offset in `[0, jitter]`.
    pub fn fire_at(&self, slot: DateTime<Utc>, rng: &mut (impl Rng + ?Sized)) -> DateTime<Utc> {
        let jitter_ms = millis(self.jitter);
        if jitter_ms == 0 {
            return slot;
        }
        slot + TimeDelta::milliseconds(rng.random_range(0..=jitter_ms))
    }

    /// The next slot on `last_due`'s cadence that is not before `now`
    /// (at least `last_due + every`). After a pause (scheduler down, a round
    /// that ran long) the missed slots are skipped, not replayed in a burst.
    pub fn next_slot(&self, last_due: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
        let first = add(last_due, self.every);
        if first >= now {
            return first;
        }
        // Whole periods to reach `now`, rounded up, in nanoseconds so a
        // slot is never a fraction of a millisecond before `now`.
        let period = i64::try_from(self.every.as_nanos())
            .unwrap_or(i64::MAX)
            .max(1);
        let skip = (now - first)
            .num_nanoseconds()
            .and_then(|behind| {
                (behind / period + i64::from(behind % period != 0)).checked_mul(period)
            })
            .map_or(TimeDelta::MAX, TimeDelta::nanoseconds);
        first
            .checked_add_signed(skip)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// FNV-1a: the same value on every machine and build (std's hasher is
/// seeded per process).
fn stable_hash(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

// ---------------------------------------------------------------------------
// Retries
// ---------------------------------------------------------------------------

/// How the wait before a retry grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryStrategy {
    /// No retries: the first attempt's result is the round's result.
    #[default]
    None,
    /// Every retry waits `base_backoff`.
    Fixed,
    /// Retry n waits `n × base_backoff`.
    Linear,
    /// Retry n waits `2^(n-1) × base_backoff`.
    Exponential,
}

/// When a failed attempt is run again. Retried attempts only confirm a
/// failure: the round's result is the last attempt's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub strategy: RetryStrategy,
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The first retry's wait.
    pub base_backoff: Duration,
    /// No wait is longer than this.
    pub max_backoff: Duration,
    /// No retry starts later than this after the first attempt started.
    pub max_duration: Option<Duration>,
    /// Retry only when the failure was a network error (connect, TLS,
    /// timeout), not a failed assertion, which a retry rarely changes.
    pub only_network_errors: bool,
}

impl Default for RetryPolicy {
    /// No retries.
    fn default() -> Self {
        Self {
            strategy: RetryStrategy::None,
            max_retries: 0,
            base_backoff: DEFAULT_BASE_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            max_duration: None,
            only_network_errors: false,
        }
    }
}

const DEFAULT_RETRIES: u32 = 2;
const DEFAULT_BASE_BACKOFF: Duration = Duration::from_secs(5);
const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(60);

impl RetryPolicy {
    /// The wait before the next retry, or `None` when the failure stands:
    /// no strategy, `retries_done` already `max_retries`, the retry would
    /// start after `max_duration` (`elapsed` is the time since the first
    /// attempt started), or the failure was not a network error while
    /// `only_network_errors` is set.
    pub fn next_retry(
        &self,
        retries_done: u32,
        elapsed: Duration,
        failure_was_network_error: bool,
    ) -> Option<Duration> {
        if retries_done >= self.max_retries
            || (self.only_network_errors && !failure_was_network_error)
        {
            return None;
        }
        let n = retries_done + 1; // the retry about to happen, counted from 1
        let wait = match self.strategy {
            RetryStrategy::None => return None,
            RetryStrategy::Fixed => self.base_backoff,
            RetryStrategy::Linear => self.base_backoff.saturating_mul(n),
            RetryStrategy::Exponential => 2u32.checked_pow(n - 1).map_or(Duration::MAX, |factor| {
                self.base_backoff.saturating_mul(factor)
            }),
        }
        .min(self.max_backoff);
        match self.max_duration {
            Some(max) if elapsed.saturating_add(wait) > max => None,
            _ => Some(wait),
        }
    }
}

/// The flow file's `[retry]` table. Unset fields take the defaults of the
/// strategy: 2 retries, 5s base backoff, backoff capped at 1m (or at the base
/// backoff when that is longer), no overall limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// `none` (default), `fixed`, `linear` or `exponential`.
    pub strategy: RetryStrategy,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    #[serde(
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub base_backoff: Option<Duration>,
    #[serde(
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_backoff: Option<Duration>,
    #[serde(
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_duration: Option<Duration>,
    pub only_network_errors: bool,
}

impl RetryConfig {
    /// The checked [`RetryPolicy`]. `max_retries` without a strategy is an
    /// error rather than silently no retries (the usual slip is leaving out
    /// `strategy`); set `max_retries = 0` to switch retries off.
    pub fn validate(&self) -> Result<RetryPolicy, ScheduleError> {
        if self.strategy == RetryStrategy::None {
            if let Some(n) = self.max_retries.filter(|&n| n > 0) {
                return Err(ScheduleError::new(
                    "retry.max_retries",
                    format!(
                        "retry.max_retries is {n} but retry.strategy is \"none\" (the default): \
                         set retry.strategy to \"fixed\", \"linear\" or \"exponential\", or remove retry.max_retries"
                    ),
                ));
            }
            return Ok(RetryPolicy::default());
        }
        let max_retries = self.max_retries.unwrap_or(DEFAULT_RETRIES);
        if max_retries > MAX_RETRIES {
            return Err(ScheduleError::new(
                "retry.max_retries",
                format!("retry.max_retries must be at most {MAX_RETRIES}, got {max_retries}"),
            ));
        }
        let base_backoff = self.base_backoff.unwrap_or(DEFAULT_BASE_BACKOFF);
        if base_backoff > Duration::from_secs(3600) {
            return Err(ScheduleError::new(
                "retry.base_backoff",
                format!(
                    "retry.base_backoff must be at most 1h, got {:?}",
                    human(base_backoff)
                ),
            ));
        }
        let max_backoff = self
            .max_backoff
            .unwrap_or(DEFAULT_MAX_BACKOFF.max(base_backoff));
        if max_backoff < base_backoff {
            return Err(ScheduleError::new(
                "retry.max_backoff",
                format!(
                    "retry.max_backoff ({:?}) must not be shorter than retry.base_backoff ({:?})",
                    human(max_backoff),
                    human(base_backoff)
                ),
            ));
        }
        if self.max_duration == Some(Duration::ZERO) {
            return Err(ScheduleError::new(
                "retry.max_duration",
                "retry.max_duration must be longer than 0s (remove it for no limit)",
            ));
        }
        Ok(RetryPolicy {
            strategy: self.strategy,
            max_retries,
            base_backoff,
            max_backoff,
            max_duration: self.max_duration,
            only_network_errors: self.only_network_errors,
        })
    }
}

// ---------------------------------------------------------------------------
// Maintenance windows
// ---------------------------------------------------------------------------

/// A time when rounds are skipped (not run, not observed, so streaks and
/// health stay as they were): a bank's announced downtime, our own deploys.
///
/// In the flow file, one `[[maintenance]]` entry is either recurring
/// (`days`, `start`, `duration`, `timezone`) or one-off (`from`, `until`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawWindow", into = "RawWindow")]
pub enum MaintenanceWindow {
    Recurring(RecurringWindow),
    /// From `from` (inclusive) until `until` (exclusive).
    Once {
        from: DateTime<Utc>,
        until: DateTime<Utc>,
    },
}

/// A window that starts at a wall-clock time on some weekdays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecurringWindow {
    /// The weekdays the window *starts* on, in `timezone`; empty means every
    /// day. "Sunday 23:00 for 2h" covers Monday 00:30.
    pub days: Vec<Weekday>,
    /// Local start time in `timezone`.
    pub start: NaiveTime,
    /// Elapsed time, so a window over a DST change lasts just as long.
    pub duration: Duration,
    pub timezone: Tz,
}

impl MaintenanceWindow {
    /// Whether `at` falls inside the window.
    ///
    /// DST: a start time that does not exist that day (inside the spring
    /// gap) is read with the offset in force before the gap, so "02:30" in
    /// Berlin starts at 03:30 summer time; a start time that happens twice
    /// (autumn) starts at the first.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        match self {
            MaintenanceWindow::Once { from, until } => *from <= at && at < *until,
            MaintenanceWindow::Recurring(w) => w.contains(at),
        }
    }

    /// Checks a window built in code the same way the flow file's are.
    pub fn validate(&self) -> Result<(), ScheduleError> {
        match self {
            MaintenanceWindow::Once { from, until } => {
                if from >= until {
                    return Err(ScheduleError::new(
                        "maintenance.until",
                        format!(
                            "maintenance.until ({}) must be later than maintenance.from ({})",
                            until.to_rfc3339(),
                            from.to_rfc3339()
                        ),
                    ));
                }
            }
            MaintenanceWindow::Recurring(w) => {
                if w.duration.is_zero() || w.duration > MAX_SPAN {
                    return Err(ScheduleError::new(
                        "maintenance.duration",
                        format!(
                            "maintenance.duration must be longer than 0s and at most 7days, got {:?}",
                            human(w.duration)
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl RecurringWindow {
    fn contains(&self, at: DateTime<Utc>) -> bool {
        let today = at.with_timezone(&self.timezone).date_naive();
        // Windows that started on earlier days may still be open; one day
        // more than the duration covers DST shifts.
        let lookback = self.duration.as_secs().div_ceil(86_400) + 1;
        (0..=lookback).any(|back| {
            let Some(day) = today.checked_sub_days(Days::new(back)) else {
                return false;
            };
            if !self.days.is_empty() && !self.days.contains(&day.weekday()) {
                return false;
            }
            let start = local_to_utc(self.timezone, day.and_time(self.start));
            start <= at && at < add(start, self.duration)
        })
    }
}

/// A wall-clock time in `tz` as an instant (see [`MaintenanceWindow::contains`]
/// for the DST rules).
fn local_to_utc(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local).earliest() {
        Some(t) => t.with_timezone(&Utc),
        None => {
            let day_before = local
                .checked_sub_signed(TimeDelta::days(1))
                .unwrap_or(local);
            let before = tz.offset_from_utc_datetime(&day_before).fix();
            local
                .checked_sub_signed(TimeDelta::seconds(i64::from(before.local_minus_utc())))
                .unwrap_or(local)
                .and_utc()
        }
    }
}

/// Whether any window contains `at`. Rounds due then are skipped and not
/// observed, so a bank's planned downtime neither alerts nor resets streaks.
pub fn in_maintenance(windows: &[MaintenanceWindow], at: DateTime<Utc>) -> bool {
    windows.iter().any(|w| w.contains(at))
}

/// Checks windows built in code; errors name the entry (`maintenance[1].start`).
pub fn validate_maintenance(windows: &[MaintenanceWindow]) -> Result<(), ScheduleError> {
    for (i, w) in windows.iter().enumerate() {
        w.validate().map_err(|e| e.at_index("maintenance", i))?;
    }
    Ok(())
}

/// The `[[maintenance]]` entry as written; checked into a [`MaintenanceWindow`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    days: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    until: Option<String>,
}

impl TryFrom<RawWindow> for MaintenanceWindow {
    type Error = ScheduleError;

    fn try_from(raw: RawWindow) -> Result<Self, ScheduleError> {
        let window = if raw.from.is_some() || raw.until.is_some() {
            let recurring_key = [
                ("days", !raw.days.is_empty()),
                ("start", raw.start.is_some()),
                ("duration", raw.duration.is_some()),
                ("timezone", raw.timezone.is_some()),
            ]
            .into_iter()
            .find_map(|(key, set)| set.then_some(key));
            if let Some(key) = recurring_key {
                return Err(ScheduleError::new(
                    format!("maintenance.{key}"),
                    format!(
                        "maintenance.{key} belongs to a recurring window, but this one has from/until: \
                         use either days/start/duration/timezone or from/until"
                    ),
                ));
            }
            MaintenanceWindow::Once {
                from: instant("from", raw.from.as_deref())?,
                until: instant("until", raw.until.as_deref())?,
            }
        } else {
            let days = raw
                .days
                .iter()
                .map(|d| {
                    d.trim().parse::<Weekday>().map_err(|_| {
                        ScheduleError::new(
                            "maintenance.days",
                            format!("maintenance.days: {d:?} is not a weekday (mon, tue, wed, thu, fri, sat, sun)"),
                        )
                    })
                })
                .try_fold(Vec::new(), |mut days, day| {
                    let day = day?;
                    if !days.contains(&day) {
                        days.push(day);
                    }
                    Ok::<_, ScheduleError>(days)
                })?;
            let start = raw.start.as_deref().ok_or_else(|| {
                ScheduleError::new(
                    "maintenance.start",
                    "maintenance.start is missing: give a local time like \"02:00\" (or from/until for a one-off window)",
                )
            })?;
            let start = NaiveTime::parse_from_str(start.trim(), "%H:%M").map_err(|_| {
                ScheduleError::new(
                    "maintenance.start",
                    format!(
                        "maintenance.start must be a 24-hour time like \"02:00\", got {start:?}"
                    ),
                )
            })?;
            let duration = raw.duration.as_deref().ok_or_else(|| {
                ScheduleError::new(
                    "maintenance.duration",
                    "maintenance.duration is missing: give one like \"1h\"",
                )
            })?;
            let duration = humantime_serde::parse(duration).map_err(|e| {
                ScheduleError::new("maintenance.duration", format!("maintenance.duration: {e}"))
            })?;
            let timezone = match raw.timezone.as_deref() {
                None => Tz::UTC,
                Some(name) => name.trim().parse::<Tz>().map_err(|_| {
                    ScheduleError::new(
                        "maintenance.timezone",
                        format!("maintenance.timezone must be an IANA time zone like \"Europe/Berlin\", got {name:?}"),
                    )
                })?,
            };
            MaintenanceWindow::Recurring(RecurringWindow {
                days,
                start,
                duration,
                timezone,
            })
        };
        window.validate()?;
        Ok(window)
    }
}

fn instant(key: &str, text: Option<&str>) -> Result<DateTime<Utc>, ScheduleError> {
    let text = text.ok_or_else(|| {
        ScheduleError::new(
            format!("maintenance.{key}"),
            format!("maintenance.{key} is missing: a one-off window needs both from and until"),
        )
    })?;
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ScheduleError::new(
                format!("maintenance.{key}"),
                format!("maintenance.{key} must be an RFC 3339 time like \"2025-06-01T02:00:00Z\", got {text:?}"),
            )
        })
}

impl From<MaintenanceWindow> for RawWindow {
    fn from(w: MaintenanceWindow) -> Self {
        match w {
            MaintenanceWindow::Once { from, until } => RawWindow {
                from: Some(from.to_rfc3339()),
                until: Some(until.to_rfc3339()),
                ..RawWindow::default()
            },
            MaintenanceWindow::Recurring(w) => RawWindow {
                days: w.days.iter().map(|d| weekday_name(*d).to_owned()).collect(),
                start: Some(w.start.format("%H:%M").to_string()),
                duration: Some(human(w.duration)),
                timezone: Some(w.timezone.name().to_owned()),
                ..RawWindow::default()
            },
        }
    }
}

fn weekday_name(d: Weekday) -> &'static str {
    match d {
        Weekday::Mon => "mon",
        Weekday::Tue => "tue",
        Weekday::Wed => "wed",
        Weekday::Thu => "thu",
        Weekday::Fri => "fri",
        Weekday::Sat => "sat",
        Weekday::Sun => "sun",
    }
}

// ---------------------------------------------------------------------------
// Locations and quorum
// ---------------------------------------------------------------------------

/// Where each round runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocationMode {
    /// Every round runs in every location (and retries stay there).
    #[default]
    Parallel,
    /// Each round runs in one location, the next round in the next one.
    RoundRobin,
}

/// The locations a round runs in: all of them in parallel mode; in round
/// robin the one at `round_no % len`, so consecutive rounds rotate.
pub fn locations_for_round(mode: LocationMode, locations: &[String], round_no: u64) -> Vec<String> {
    match mode {
        LocationMode::Parallel => locations.to_vec(),
        LocationMode::RoundRobin if locations.is_empty() => Vec::new(),
        LocationMode::RoundRobin => {
            let i = round_no % locations.len() as u64;
            vec![locations[i as usize].clone()]
        }
    }
}

/// The default [`LocationsConfig::failure_share`]: a round fails when at
/// least half its locations failed. With one location, one failure fails
/// the round; with three, one failing location is "degraded" (probably that
/// location's network), two are an outage.
pub const DEFAULT_FAILURE_SHARE: f64 = 0.5;

/// The flow file's `[locations]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocationsConfig {
    /// Location names: `local` is the server itself, others are agents.
    pub names: Vec<String>,
    pub mode: LocationMode,
    /// The share of a round's locations, in (0, 1], that must fail (or not
    /// answer) for the round to fail; fewer failures make it degraded.
    /// See [`round_verdict`].
    pub failure_share: f64,
}

impl Default for LocationsConfig {
    fn default() -> Self {
        Self {
            names: vec!["local".to_owned()],
            mode: LocationMode::Parallel,
            failure_share: DEFAULT_FAILURE_SHARE,
        }
    }
}

impl LocationsConfig {
    pub fn validate(&self) -> Result<(), ScheduleError> {
        if self.names.is_empty() {
            return Err(ScheduleError::new(
                "locations.names",
                "locations.names must name at least one location (\"local\" is this server)",
            ));
        }
        for (i, name) in self.names.iter().enumerate() {
            let bad = name.trim().is_empty()
                || name.trim() != name
                || name.len() > 64
                || name.chars().any(char::is_control);
            if bad {
                return Err(ScheduleError::new(
                    "locations.names",
                    format!(
                        "locations.names: {name:?} is not a location name (1 to 64 characters, \
                         no surrounding spaces or control characters)"
                    ),
                ));
            }
            if self.names[..i].contains(name) {
                return Err(ScheduleError::new(
                    "locations.names",
                    format!("locations.names lists {name:?} twice"),
                ));
            }
        }
        if !(self.failure_share > 0.0 && self.failure_share <= 1.0) {
            return Err(ScheduleError::new(
                "locations.failure_share",
                format!(
                    "locations.failure_share must be more than 0 and at most 1 (0.5 = half the locations), got {}",
                    self.failure_share
                ),
            ));
        }
        Ok(())
    }
}

/// One location's result of a round, or the round's. `Failed` is the worst
/// (`Passed < Degraded < Failed`), so `max` combines results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Passed,
    /// Passed, but slowly or with a soft assertion failing.
    Degraded,
    Failed,
}

impl Outcome {
    /// The word stored, sent in alerts and used as a metric label (as serde writes it).
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Degraded => "degraded",
            Outcome::Failed => "failed",
        }
    }
}

/// A round's result across its locations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundVerdict {
    pub outcome: Outcome,
    /// Locations that reported `Failed`.
    pub failed: Vec<String>,
    /// Locations that reported `Degraded`.
    pub degraded: Vec<String>,
    /// Expected locations with no result; they count as failed.
    pub missing: Vec<String>,
}

impl RoundVerdict {
    /// Locations counted as failed: `failed` plus `missing`.
    pub fn failed_count(&self) -> usize {
        self.failed.len() + self.missing.len()
    }
}

/// Combines a round's per-location results.
///
/// A location with no result counts as failed (an agent that stopped
/// answering must not look green). With `N` expected locations the round
/// is `Failed` when at least `ceil(failure_share × N)` (and at least one)
/// failed; otherwise `Degraded` if any failed or was degraded; else
/// `Passed`. No expected location at all is `Failed`: a round that ran
/// nowhere proves nothing. Results from unexpected locations are ignored; a
/// location reporting twice counts with its worse result (callers pass only
/// each location's final attempt).
pub fn round_verdict(
    expected: &[String],
    results: &[(String, Outcome)],
    failure_share: f64,
) -> RoundVerdict {
    let mut by_location: BTreeMap<&str, Outcome> = BTreeMap::new();
    for (location, outcome) in results {
        let worst = by_location.entry(location).or_insert(*outcome);
        *worst = (*worst).max(*outcome);
    }
    let mut verdict = RoundVerdict {
        outcome: Outcome::Passed,
        failed: Vec::new(),
        degraded: Vec::new(),
        missing: Vec::new(),
    };
    let mut seen: Vec<&str> = Vec::new();
    for location in expected {
        if seen.contains(&location.as_str()) {
            continue;
        }
        seen.push(location);
        match by_location.get(location.as_str()) {
            None => verdict.missing.push(location.clone()),
            Some(Outcome::Failed) => verdict.failed.push(location.clone()),
            Some(Outcome::Degraded) => verdict.degraded.push(location.clone()),
            Some(Outcome::Passed) => {}
        }
    }
    let total = seen.len();
    let needed = failures_needed(total, failure_share);
    verdict.outcome = if total == 0 || verdict.failed_count() >= needed {
        Outcome::Failed
    } else if verdict.failed_count() > 0 || !verdict.degraded.is_empty() {
        Outcome::Degraded
    } else {
        Outcome::Passed
    };
    verdict
}

/// `ceil(share × total)`, at least 1 and at most `total`; a tiny epsilon
/// keeps 0.3 × 10 at 3 despite floating point.
fn failures_needed(total: usize, share: f64) -> usize {
    let share = if share.is_nan() {
        1.0
    } else {
        share.clamp(0.0, 1.0)
    };
    let needed = (share * total as f64 - 1e-9).ceil().max(1.0) as usize;
    needed.min(total.max(1))
}

// ---------------------------------------------------------------------------
// Health across rounds
// ---------------------------------------------------------------------------

/// The check's health, what the dashboard shows and alerts are about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Passing,
    Degraded,
    Failing,
}

/// A change of health, to alert on. One per change, never one for a round
/// that keeps the health as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transition {
    /// Now failing (from passing or degraded).
    Failing,
    /// Now degraded: from passing after bad rounds, or from failing when
    /// rounds stopped failing but do not pass cleanly yet.
    Degraded,
    /// Now passing again.
    Recovered,
}

/// How many rounds in a row change the health, so one blip does not page
/// anyone (the flow file's `[thresholds]` table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// Failed rounds in a row before Failing; also bad (failed or degraded)
    /// rounds in a row before a passing check turns Degraded.
    pub failure: u32,
    /// Passed rounds in a row before recovering; also non-failed rounds in
    /// a row before a failing check turns Degraded.
    pub success: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            failure: 2,
            success: 1,
        }
    }
}

impl Thresholds {
    pub fn validate(&self) -> Result<(), ScheduleError> {
        for (field, value) in [("failure", self.failure), ("success", self.success)] {
            if value == 0 {
                return Err(ScheduleError::new(
                    format!("thresholds.{field}"),
                    format!("thresholds.{field} must be at least 1 (rounds in a row)"),
                ));
            }
        }
        Ok(())
    }
}

/// A check's health and streaks, persisted by the caller (as JSON) between
/// rounds.
///
/// [`observe`](Self::observe) updates the streaks with the round's outcome,
/// then the first matching row decides the new health (`f` =
/// `thresholds.failure`, `s` = `thresholds.success`):
///
/// | # | health before | condition                                   | health after | transition  |
/// |---|---------------|---------------------------------------------|--------------|-------------|
/// | 1 | not Failing   | `fail_streak >= f`                          | Failing      | `Failing`   |
/// | 2 | Failing       | `ok_streak >= s` and `pass_streak >= s`     | Passing      | `Recovered` |
/// | 3 | Failing       | `ok_streak >= s` and `pass_streak < s`      | Degraded     | `Degraded`  |
/// | 4 | Degraded      | `pass_streak >= s`                          | Passing      | `Recovered` |
/// | 5 | Passing       | `bad_streak >= f`                           | Degraded     | `Degraded`  |
/// | 6 | any           | otherwise                                   | unchanged    | none        |
///
/// Streaks: a Failed round adds one to `fail_streak` and `bad_streak` and
/// zeroes `ok_streak` and `pass_streak`; a Degraded round adds one to
/// `bad_streak` and `ok_streak` and zeroes `fail_streak` and `pass_streak`;
/// a Passed round adds one to `ok_streak` and `pass_streak` and zeroes
/// `fail_streak` and `bad_streak`.
///
/// So a Degraded round counts as "not failed" towards leaving Failing, but
/// only to Degraded (row 3): a check that stopped failing yet does not pass
/// cleanly is reported as such, not as recovered. A check that keeps its
/// health never emits a transition, so a long outage is one alert plus
/// [reminders](Self::reminder_due).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckState {
    pub health: Health,
    /// Failed rounds in a row.
    pub fail_streak: u32,
    /// Failed or degraded rounds in a row.
    pub bad_streak: u32,
    /// Passed rounds in a row.
    pub pass_streak: u32,
    /// Passed or degraded rounds in a row.
    #[serde(default)]
    pub ok_streak: u32,
    /// Rounds observed so far (the next round's number for round robin).
    #[serde(default)]
    pub rounds: u64,
    /// When the health last changed (or the check was created).
    pub since: DateTime<Utc>,
    pub last_round_at: Option<DateTime<Utc>>,
    /// The last alert or reminder sent, per alert channel name.
    #[serde(default)]
    pub last_notified: BTreeMap<String, DateTime<Utc>>,
}

impl CheckState {
    /// A new check: passing (nothing known against it), no streaks.
    pub fn new(at: DateTime<Utc>) -> Self {
        Self {
            health: Health::Passing,
            fail_streak: 0,
            bad_streak: 0,
            pass_streak: 0,
            ok_streak: 0,
            rounds: 0,
            since: at,
            last_round_at: None,
            last_notified: BTreeMap::new(),
        }
    }

    /// Records a round's outcome at `at`; returns the transition when the
    /// health changed (see the table on [`CheckState`]).
    pub fn observe(
        &mut self,
        outcome: Outcome,
        thresholds: &Thresholds,
        at: DateTime<Utc>,
    ) -> Option<Transition> {
        let bump = |n: u32| n.saturating_add(1);
        match outcome {
            Outcome::Failed => {
                self.fail_streak = bump(self.fail_streak);
                self.bad_streak = bump(self.bad_streak);
                self.ok_streak = 0;
                self.pass_streak = 0;
            }
            Outcome::Degraded => {
                self.fail_streak = 0;
                self.bad_streak = bump(self.bad_streak);
                self.ok_streak = bump(self.ok_streak);
                self.pass_streak = 0;
            }
            Outcome::Passed => {
                self.fail_streak = 0;
                self.bad_streak = 0;
                self.ok_streak = bump(self.ok_streak);
                self.pass_streak = bump(self.pass_streak);
            }
        }
        self.rounds = self.rounds.saturating_add(1);
        self.last_round_at = Some(at);

        let (f, s) = (thresholds.failure, thresholds.success);
        let next = match self.health {
            _ if self.fail_streak >= f => Health::Failing,
            Health::Failing if self.ok_streak >= s && self.pass_streak >= s => Health::Passing,
            Health::Failing if self.ok_streak >= s => Health::Degraded,
            Health::Degraded if self.pass_streak >= s => Health::Passing,
            Health::Passing if self.bad_streak >= f => Health::Degraded,
            unchanged => unchanged,
        };
        if next == self.health {
            return None;
        }
        self.health = next;
        self.since = at;
        Some(match next {
            Health::Failing => Transition::Failing,
            Health::Degraded => Transition::Degraded,
            Health::Passing => Transition::Recovered,
        })
    }

    /// Whether `channel` should get a reminder at `now`: only while Failing
    /// or Degraded, only with an `interval`, and only when the channel's last
    /// notification is at least `interval` old. A channel never notified is
    /// due, so an alert whose delivery failed goes out with the next one.
    pub fn reminder_due(
        &self,
        channel: &str,
        interval: Option<Duration>,
        now: DateTime<Utc>,
    ) -> bool {
        if self.health == Health::Passing {
            return false;
        }
        let Some(interval) = interval else {
            return false;
        };
        match self.last_notified.get(channel) {
            None => true,
            Some(last) => now >= *last && (now - *last) >= delta(interval),
        }
    }

    /// Records that `channel` was sent an alert or reminder at `at`.
    pub fn notified(&mut self, channel: &str, at: DateTime<Utc>) {
        self.last_notified.insert(channel.to_owned(), at);
    }
}

// ---------------------------------------------------------------------------
// Everything a flow says about scheduling, checked
// ---------------------------------------------------------------------------

/// A flow's checked scheduling settings, from its five tables.
#[derive(Debug, Clone, PartialEq)]
pub struct Scheduling {
    pub schedule: Schedule,
    pub retry: RetryPolicy,
    pub thresholds: Thresholds,
    pub locations: LocationsConfig,
    pub maintenance: Vec<MaintenanceWindow>,
}

impl Scheduling {
    /// Checks every table; the first error names its field.
    pub fn new(
        schedule: &ScheduleConfig,
        retry: &RetryConfig,
        thresholds: &Thresholds,
        locations: &LocationsConfig,
        maintenance: &[MaintenanceWindow],
    ) -> Result<Self, ScheduleError> {
        let schedule = schedule.validate()?;
        let retry = retry.validate()?;
        thresholds.validate()?;
        locations.validate()?;
        validate_maintenance(maintenance)?;
        Ok(Self {
            schedule,
            retry,
            thresholds: *thresholds,
            locations: locations.clone(),
            maintenance: maintenance.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    // --- Schedule -------------------------------------------------------

    #[test]
    fn schedule_validation_names_the_field() {
        let err = Schedule::new(secs(60), secs(60)).unwrap_err();
        assert_eq!(err.field, "schedule.jitter");
        assert!(
            err.to_string()
                .starts_with("schedule.jitter must be shorter than schedule.every"),
            "{err}"
        );
        let err = Schedule::new(Duration::from_millis(500), Duration::ZERO).unwrap_err();
        assert_eq!(err.field, "schedule.every");
        assert!(err.to_string().contains("at least 1s"), "{err}");
        let err = Schedule::new(secs(8 * 86_400), Duration::ZERO).unwrap_err();
        assert_eq!(err.field, "schedule.every");
        assert!(Schedule::new(secs(60), secs(59)).is_ok());
        assert!(Schedule::new(secs(1), Duration::ZERO).is_ok());
    }

    #[test]
    fn next_after_keeps_the_cadence_and_stays_within_the_jitter() {
        let s = Schedule::new(secs(60), secs(5)).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        let start = t("2025-01-01T00:00:00Z");
        let mut slot = start;
        let mut offsets = Vec::new();
        for round in 1..=500i64 {
            let fire = s.next_after(slot, &mut rng);
            slot += TimeDelta::seconds(60);
            assert_eq!(slot, start + TimeDelta::seconds(60 * round), "no drift");
            let offset = fire - slot;
            assert!(
                offset >= TimeDelta::zero() && offset <= TimeDelta::seconds(5),
                "{offset}"
            );
            offsets.push(offset.num_milliseconds());
        }
        // Actually random, and spread over the range.
        assert!(offsets.iter().any(|&o| o < 1000) && offsets.iter().any(|&o| o > 4000));
    }

    #[test]
    fn next_after_without_jitter_is_exact() {
        let s = Schedule::new(secs(30), Duration::ZERO).unwrap();
        let mut rng = StdRng::seed_from_u64(2);
        let last = t("2025-01-01T10:00:00Z");
        assert_eq!(s.next_after(last, &mut rng), t("2025-01-01T10:00:30Z"));
        assert_eq!(s.fire_at(last, &mut rng), last);
    }

    #[test]
    fn first_slot_spreads_a_thousand_flows_over_one_period() {
        let s = Schedule::new(secs(60), Duration::ZERO).unwrap();
        let now = t("2025-01-01T00:00:00.250Z");
        let mut per_second = [0u32; 60];
        for i in 0..1000 {
            let due = s.first_slot(&format!("flow-{i}"), now);
            assert!(due >= now && due < now + TimeDelta::seconds(60), "{due}");
            per_second[(due - now).num_seconds() as usize] += 1;
        }
        // About 16.7 per second; no second gets a crowd, none stays empty.
        assert!(
            per_second.iter().all(|&n| (1..=40).contains(&n)),
            "{per_second:?}"
        );
    }

    #[test]
    fn servers_started_apart_agree_on_a_checks_slots() {
        let s = Schedule::new(secs(5), secs(1)).unwrap();
        let a = s.first_slot("bank-login", t("2025-01-01T00:00:00.100Z"));
        let b = s.first_slot("bank-login", t("2025-01-01T00:00:12.900Z"));
        // B's first slot is one of A's, a whole number of periods later.
        assert_eq!((b - a).num_milliseconds() % 5000, 0, "{a} {b}");
        assert!(b >= t("2025-01-01T00:00:12.900Z") && b - a < TimeDelta::seconds(20));
        let mut slot = a;
        while slot < b {
            slot = s.next_slot(slot, slot);
        }
        assert_eq!(slot, b, "the cadence of A reaches B's first slot");
        let periods = ((b - a).num_milliseconds() / 5000) as u64;
        assert!(periods >= 2, "{a} {b}");
        assert_eq!(s.slot_number(b), s.slot_number(a) + periods);
        // On a slot exactly: that slot.
        assert_eq!(s.first_slot("bank-login", a), a);
        // Another check has (most likely) another phase.
        assert_ne!(s.first_slot("other", a), a);
    }

    #[test]
    fn next_slot_skips_missed_slots_instead_of_bursting() {
        let s = Schedule::new(secs(60), secs(5)).unwrap();
        let last = t("2025-01-01T00:00:00Z");
        // On time: the next slot.
        assert_eq!(
            s.next_slot(last, t("2025-01-01T00:00:10Z")),
            t("2025-01-01T00:01:00Z")
        );
        // Exactly on a slot: that slot is due now.
        assert_eq!(
            s.next_slot(last, t("2025-01-01T00:01:00Z")),
            t("2025-01-01T00:01:00Z")
        );
        // Down for an hour and a bit: the next slot on the same cadence.
        assert_eq!(
            s.next_slot(last, t("2025-01-01T01:00:30Z")),
            t("2025-01-01T01:01:00Z")
        );
        assert_eq!(
            s.next_slot(last, t("2025-01-01T01:01:00Z")),
            t("2025-01-01T01:01:00Z")
        );
    }

    #[test]
    fn schedule_config_reads_humantime_and_rejects_unknown_keys() {
        let c: ScheduleConfig = toml::from_str("every = \"2m\"\njitter = \"5s\"").unwrap();
        assert_eq!(c.every, secs(120));
        assert_eq!(c.jitter, secs(5));
        assert_eq!(c.validate().unwrap().every(), secs(120));
        let c: ScheduleConfig = toml::from_str("").unwrap();
        assert_eq!(c, ScheduleConfig::default());
        assert!(toml::from_str::<ScheduleConfig>("evry = \"1m\"").is_err());
        let err = toml::from_str::<ScheduleConfig>("every = \"soon\"").unwrap_err();
        assert!(err.to_string().contains("not a duration"), "{err}");
        let back = toml::to_string(&ScheduleConfig {
            every: secs(90),
            jitter: secs(5),
        })
        .unwrap();
        assert_eq!(
            toml::from_str::<ScheduleConfig>(&back).unwrap().every,
            secs(90)
        );
    }

    // --- Retries --------------------------------------------------------

    fn policy(strategy: RetryStrategy) -> RetryPolicy {
        RetryPolicy {
            strategy,
            max_retries: 5,
            base_backoff: secs(2),
            max_backoff: secs(10),
            max_duration: None,
            only_network_errors: false,
        }
    }

    fn waits(p: &RetryPolicy) -> Vec<Option<u64>> {
        (0..6)
            .map(|n| p.next_retry(n, Duration::ZERO, true).map(|d| d.as_secs()))
            .collect()
    }

    #[test]
    fn retry_strategies_grow_as_named_and_are_capped() {
        assert_eq!(waits(&policy(RetryStrategy::None)), vec![None; 6]);
        assert_eq!(
            waits(&policy(RetryStrategy::Fixed)),
            vec![Some(2), Some(2), Some(2), Some(2), Some(2), None]
        );
        assert_eq!(
            waits(&policy(RetryStrategy::Linear)),
            vec![Some(2), Some(4), Some(6), Some(8), Some(10), None]
        );
        assert_eq!(
            waits(&policy(RetryStrategy::Exponential)),
            vec![Some(2), Some(4), Some(8), Some(10), Some(10), None]
        );
        assert_eq!(
            RetryPolicy::default().next_retry(0, Duration::ZERO, true),
            None
        );
    }

    #[test]
    fn exponential_backoff_does_not_overflow() {
        let p = RetryPolicy {
            max_retries: u32::MAX,
            max_backoff: secs(30),
            ..policy(RetryStrategy::Exponential)
        };
        assert_eq!(p.next_retry(40, Duration::ZERO, true), Some(secs(30)));
        assert_eq!(
            p.next_retry(u32::MAX - 1, Duration::ZERO, true),
            Some(secs(30))
        );
    }

    #[test]
    fn retries_stop_at_max_duration_and_on_non_network_errors() {
        let p = RetryPolicy {
            max_duration: Some(secs(20)),
            ..policy(RetryStrategy::Fixed)
        };
        assert_eq!(
            p.next_retry(1, secs(18), true),
            Some(secs(2)),
            "starts exactly at the limit"
        );
        assert_eq!(p.next_retry(1, secs(19), true), None);
        let p = RetryPolicy {
            only_network_errors: true,
            ..policy(RetryStrategy::Fixed)
        };
        assert_eq!(p.next_retry(0, Duration::ZERO, true), Some(secs(2)));
        assert_eq!(p.next_retry(0, Duration::ZERO, false), None);
    }

    #[test]
    fn retry_config_defaults_and_errors() {
        let p: RetryPolicy = toml::from_str::<RetryConfig>("")
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(p, RetryPolicy::default());
        let p = toml::from_str::<RetryConfig>("strategy = \"linear\"")
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(
            (p.max_retries, p.base_backoff, p.max_backoff),
            (2, secs(5), secs(60))
        );
        let p = toml::from_str::<RetryConfig>("strategy = \"fixed\"\nbase_backoff = \"2m\"")
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(p.max_backoff, secs(120), "the cap follows a long base");

        let err = toml::from_str::<RetryConfig>("max_retries = 3")
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(err.field, "retry.max_retries");
        assert!(err.to_string().contains("retry.strategy"), "{err}");
        assert!(
            toml::from_str::<RetryConfig>("max_retries = 0")
                .unwrap()
                .validate()
                .is_ok()
        );

        let bad = |text: &str, field: &str| {
            let err = toml::from_str::<RetryConfig>(text)
                .unwrap()
                .validate()
                .unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert!(err.to_string().contains(field), "{err}");
        };
        bad(
            "strategy = \"fixed\"\nmax_retries = 11",
            "retry.max_retries",
        );
        bad(
            "strategy = \"fixed\"\nbase_backoff = \"10s\"\nmax_backoff = \"5s\"",
            "retry.max_backoff",
        );
        bad(
            "strategy = \"fixed\"\nmax_duration = \"0s\"",
            "retry.max_duration",
        );
        bad(
            "strategy = \"fixed\"\nbase_backoff = \"2h\"",
            "retry.base_backoff",
        );
        assert!(toml::from_str::<RetryConfig>("strategy = \"sometimes\"").is_err());
        assert!(toml::from_str::<RetryConfig>("retries = 2").is_err());
    }

    // --- Maintenance ----------------------------------------------------

    fn window(text: &str) -> MaintenanceWindow {
        toml::from_str::<MaintenanceWindow>(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn window_err(text: &str) -> String {
        toml::from_str::<MaintenanceWindow>(text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn recurring_window_in_utc_every_day() {
        let w = window("start = \"23:00\"\nduration = \"2h\"");
        assert!(!w.contains(t("2025-06-02T22:59:59Z")));
        assert!(w.contains(t("2025-06-02T23:00:00Z")));
        assert!(w.contains(t("2025-06-03T00:59:59Z")));
        assert!(!w.contains(t("2025-06-03T01:00:00Z")));
    }

    #[test]
    fn a_window_crossing_midnight_belongs_to_the_day_it_starts() {
        // 2025-06-01 is a Sunday.
        let w = window("days = [\"sun\"]\nstart = \"23:00\"\nduration = \"2h\"");
        assert!(w.contains(t("2025-06-01T23:30:00Z")));
        assert!(
            w.contains(t("2025-06-02T00:30:00Z")),
            "Monday 00:30 is in Sunday's window"
        );
        assert!(
            !w.contains(t("2025-06-02T23:30:00Z")),
            "no window starts on Monday"
        );
        assert!(!w.contains(t("2025-05-31T23:30:00Z")), "nor on Saturday");
        assert!(
            !w.contains(t("2025-06-01T00:30:00Z")),
            "Sunday 00:30 belongs to Saturday"
        );
    }

    #[test]
    fn a_long_window_spans_days() {
        let w = window("days = [\"fri\"]\nstart = \"18:00\"\nduration = \"2days 14h\"");
        // Friday 2025-06-06 18:00 to Monday 08:00.
        assert!(w.contains(t("2025-06-08T12:00:00Z")));
        assert!(w.contains(t("2025-06-09T07:59:00Z")));
        assert!(!w.contains(t("2025-06-09T08:00:00Z")));
    }

    #[test]
    fn recurring_windows_follow_the_local_clock() {
        let w = window(
            "days = [\"sat\", \"sun\"]\nstart = \"02:00\"\nduration = \"1h\"\ntimezone = \"Europe/Berlin\"",
        );
        // Winter (UTC+1): 01:00-02:00 UTC on Saturday 2025-01-04.
        assert!(!w.contains(t("2025-01-04T00:59:00Z")));
        assert!(w.contains(t("2025-01-04T01:00:00Z")));
        assert!(!w.contains(t("2025-01-04T02:00:00Z")));
        // Summer (UTC+2): 00:00-01:00 UTC on Sunday 2025-06-01.
        assert!(w.contains(t("2025-06-01T00:30:00Z")));
        assert!(!w.contains(t("2025-06-01T01:30:00Z")));
        // Not on a weekday.
        assert!(!w.contains(t("2025-06-02T00:30:00Z")));
    }

    #[test]
    fn dst_gap_and_overlap() {
        // 2025-03-30 (Sunday): Berlin jumps 02:00 CET -> 03:00 CEST (01:00 UTC).
        // 02:00 does not exist: read with the winter offset = 01:00 UTC = 03:00 CEST.
        let w = window(
            "days = [\"sun\"]\nstart = \"02:00\"\nduration = \"1h\"\ntimezone = \"Europe/Berlin\"",
        );
        assert!(!w.contains(t("2025-03-30T00:59:00Z")));
        assert!(w.contains(t("2025-03-30T01:00:00Z")));
        assert!(w.contains(t("2025-03-30T01:59:00Z")));
        assert!(!w.contains(t("2025-03-30T02:00:00Z")));
        let w = window(
            "days = [\"sun\"]\nstart = \"02:30\"\nduration = \"1h\"\ntimezone = \"Europe/Berlin\"",
        );
        assert!(
            w.contains(t("2025-03-30T01:30:00Z")),
            "02:30 CET = 03:30 CEST"
        );
        assert!(!w.contains(t("2025-03-30T01:29:00Z")));
        // 2025-10-26: 03:00 CEST -> 02:00 CET; 02:30 happens twice, first at 00:30 UTC.
        assert!(!w.contains(t("2025-10-26T00:29:00Z")));
        assert!(w.contains(t("2025-10-26T00:30:00Z")));
        assert!(
            w.contains(t("2025-10-26T01:29:00Z")),
            "one hour of elapsed time"
        );
        assert!(
            !w.contains(t("2025-10-26T01:30:00Z")),
            "not again at the second 02:30"
        );
        // A window across the autumn change lasts its elapsed duration.
        let w = window("start = \"01:00\"\nduration = \"3h\"\ntimezone = \"Europe/Berlin\"");
        // 01:00 CEST = 23:00 UTC the day before; ends 02:00 UTC (= 03:00 CET).
        assert!(w.contains(t("2025-10-25T23:00:00Z")));
        assert!(w.contains(t("2025-10-26T01:59:00Z")));
        assert!(!w.contains(t("2025-10-26T02:00:00Z")));
    }

    #[test]
    fn one_off_window_is_half_open() {
        let w =
            window("from = \"2025-06-01T02:00:00+02:00\"\nuntil = \"2025-06-01T04:00:00+02:00\"");
        assert!(!w.contains(t("2025-05-31T23:59:59Z")));
        assert!(w.contains(t("2025-06-01T00:00:00Z")));
        assert!(w.contains(t("2025-06-01T01:59:59Z")));
        assert!(!w.contains(t("2025-06-01T02:00:00Z")));
    }

    #[test]
    fn in_maintenance_is_any_window() {
        let windows = vec![
            window("days = [\"mon\"]\nstart = \"10:00\"\nduration = \"10m\""),
            window("from = \"2025-06-04T00:00:00Z\"\nuntil = \"2025-06-05T00:00:00Z\""),
        ];
        assert!(in_maintenance(&windows, t("2025-06-02T10:05:00Z")));
        assert!(in_maintenance(&windows, t("2025-06-04T10:05:00Z")));
        assert!(!in_maintenance(&windows, t("2025-06-03T10:05:00Z")));
        assert!(!in_maintenance(&[], t("2025-06-02T10:05:00Z")));
    }

    #[test]
    fn maintenance_errors_name_the_field() {
        for (text, field) in [
            ("start = \"25:00\"\nduration = \"1h\"", "maintenance.start"),
            ("duration = \"1h\"", "maintenance.start"),
            ("start = \"02:00\"", "maintenance.duration"),
            (
                "start = \"02:00\"\nduration = \"0s\"",
                "maintenance.duration",
            ),
            (
                "start = \"02:00\"\nduration = \"8days\"",
                "maintenance.duration",
            ),
            (
                "start = \"02:00\"\nduration = \"an hour\"",
                "maintenance.duration",
            ),
            (
                "start = \"02:00\"\nduration = \"1h\"\ntimezone = \"Mars/Olympus\"",
                "maintenance.timezone",
            ),
            (
                "days = [\"someday\"]\nstart = \"02:00\"\nduration = \"1h\"",
                "maintenance.days",
            ),
            ("from = \"2025-06-01T00:00:00Z\"", "maintenance.until"),
            (
                "from = \"yesterday\"\nuntil = \"2025-06-01T00:00:00Z\"",
                "maintenance.from",
            ),
            (
                "from = \"2025-06-02T00:00:00Z\"\nuntil = \"2025-06-01T00:00:00Z\"",
                "maintenance.until",
            ),
            (
                "from = \"2025-06-01T00:00:00Z\"\nuntil = \"2025-06-02T00:00:00Z\"\nstart = \"02:00\"",
                "maintenance.start",
            ),
        ] {
            let err = window_err(text);
            assert!(err.contains(field), "{text}: {err}");
        }
        assert!(
            window_err("start = \"02:00\"\nduration = \"1h\"\nrepeat = true").contains("repeat")
        );
    }

    #[test]
    fn maintenance_round_trips_and_list_errors_carry_the_index() {
        let w = window(
            "days = [\"Saturday\", \"sun\", \"sat\"]\nstart = \"2:00\"\nduration = \"90m\"\ntimezone = \"Europe/Berlin\"",
        );
        let MaintenanceWindow::Recurring(r) = &w else {
            panic!()
        };
        assert_eq!(r.days, vec![Weekday::Sat, Weekday::Sun]);
        let text = toml::to_string(&w).unwrap();
        assert!(
            text.contains("days = [\"sat\", \"sun\"]") && text.contains("start = \"02:00\""),
            "{text}"
        );
        assert_eq!(toml::from_str::<MaintenanceWindow>(&text).unwrap(), w);
        let once = window("from = \"2025-06-01T00:00:00Z\"\nuntil = \"2025-06-02T00:00:00Z\"");
        let json = serde_json::to_string(&once).unwrap();
        assert_eq!(
            serde_json::from_str::<MaintenanceWindow>(&json).unwrap(),
            once
        );

        let bad = MaintenanceWindow::Once {
            from: t("2025-06-02T00:00:00Z"),
            until: t("2025-06-01T00:00:00Z"),
        };
        let err = validate_maintenance(&[once, bad]).unwrap_err();
        assert_eq!(err.field, "maintenance[1].until");
        assert!(err.to_string().starts_with("maintenance[1].until"), "{err}");
        assert!(err.to_string().contains("maintenance[1].from"), "{err}");
    }

    // --- Locations and quorum -------------------------------------------

    #[test]
    fn locations_rotate_in_round_robin() {
        let all = names(&["fra", "lon", "nyc"]);
        assert_eq!(locations_for_round(LocationMode::Parallel, &all, 7), all);
        let rotation: Vec<_> = (0..6)
            .map(|n| locations_for_round(LocationMode::RoundRobin, &all, n).concat())
            .collect();
        assert_eq!(rotation, ["fra", "lon", "nyc", "fra", "lon", "nyc"]);
        assert_eq!(
            locations_for_round(LocationMode::RoundRobin, &all, u64::MAX),
            names(&["fra"])
        );
        assert!(locations_for_round(LocationMode::RoundRobin, &[], 3).is_empty());
        assert_eq!(
            serde_json::to_string(&LocationMode::RoundRobin).unwrap(),
            "\"round_robin\""
        );
    }

    #[test]
    fn locations_config_validation() {
        assert!(LocationsConfig::default().validate().is_ok());
        let with = |names: Vec<String>, share: f64| LocationsConfig {
            names,
            mode: LocationMode::Parallel,
            failure_share: share,
        };
        for (config, field) in [
            (with(vec![], 0.5), "locations.names"),
            (with(names(&["fra", "fra"]), 0.5), "locations.names"),
            (with(names(&[" fra"]), 0.5), "locations.names"),
            (with(names(&[""]), 0.5), "locations.names"),
            (with(names(&["fra"]), 0.0), "locations.failure_share"),
            (with(names(&["fra"]), 1.5), "locations.failure_share"),
            (with(names(&["fra"]), f64::NAN), "locations.failure_share"),
        ] {
            let err = config.validate().unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert!(err.to_string().starts_with(field), "{err}");
        }
        assert!(with(names(&["fra"]), 1.0).validate().is_ok());
        assert!(toml::from_str::<LocationsConfig>("name = [\"x\"]").is_err());
    }

    fn results(list: &[(&str, Outcome)]) -> Vec<(String, Outcome)> {
        list.iter().map(|(l, o)| (l.to_string(), *o)).collect()
    }

    #[test]
    fn outcome_order_and_names() {
        assert!(Outcome::Failed > Outcome::Degraded && Outcome::Degraded > Outcome::Passed);
        assert_eq!(
            serde_json::to_string(&Outcome::Degraded).unwrap(),
            "\"degraded\""
        );
    }

    #[test]
    fn round_verdict_quorum() {
        use Outcome::*;
        let three = names(&["fra", "lon", "nyc"]);
        let verdict =
            |list: &[(&str, Outcome)], share: f64| round_verdict(&three, &results(list), share);
        let all_passed = [("fra", Passed), ("lon", Passed), ("nyc", Passed)];
        let one_failed = [("fra", Failed), ("lon", Passed), ("nyc", Passed)];
        assert_eq!(verdict(&all_passed, 0.5).outcome, Passed);
        // One of three failing: degraded, not failed.
        let v = verdict(&one_failed, 0.5);
        assert_eq!((v.outcome, v.failed.clone()), (Degraded, names(&["fra"])));
        // Two of three (one failed, one silent): failed.
        let v = verdict(&[("fra", Failed), ("lon", Passed)], 0.5);
        assert_eq!(v.outcome, Failed);
        assert_eq!(v.missing, names(&["nyc"]));
        assert_eq!(v.failed_count(), 2);
        // Degraded locations alone never fail a round.
        let v = verdict(
            &[("fra", Degraded), ("lon", Degraded), ("nyc", Degraded)],
            0.5,
        );
        assert_eq!((v.outcome, v.degraded.len()), (Degraded, 3));
        // failure_share = 1: all must fail.
        let two_failed = [("fra", Failed), ("lon", Failed), ("nyc", Passed)];
        assert_eq!(verdict(&two_failed, 1.0).outcome, Degraded);
        let all_failed = [("fra", Failed), ("lon", Failed), ("nyc", Failed)];
        assert_eq!(verdict(&all_failed, 1.0).outcome, Failed);
        // A tiny share still needs one failure.
        assert_eq!(verdict(&all_passed, 0.01).outcome, Passed);
        assert_eq!(verdict(&one_failed, 0.01).outcome, Failed);
    }

    #[test]
    fn round_verdict_edge_cases() {
        use Outcome::*;
        let one = names(&["local"]);
        assert_eq!(
            round_verdict(&one, &results(&[("local", Failed)]), 0.5).outcome,
            Failed
        );
        assert_eq!(
            round_verdict(&one, &results(&[("local", Degraded)]), 0.5).outcome,
            Degraded
        );
        let v = round_verdict(&one, &[], 0.5);
        assert_eq!((v.outcome, v.missing.clone()), (Failed, one.clone()));
        // Two locations, half = one failure fails.
        let two = names(&["a", "b"]);
        assert_eq!(
            round_verdict(&two, &results(&[("a", Failed), ("b", Passed)]), 0.5).outcome,
            Failed
        );
        // Results from elsewhere are ignored; a double report counts its worse result.
        let v = round_verdict(
            &one,
            &results(&[("local", Passed), ("old-agent", Failed)]),
            0.5,
        );
        assert_eq!(v.outcome, Passed);
        let v = round_verdict(&one, &results(&[("local", Failed), ("local", Passed)]), 0.5);
        assert_eq!(v.outcome, Failed);
        // Expected twice counts once; nothing expected fails.
        let v = round_verdict(
            &names(&["a", "a", "b"]),
            &results(&[("a", Failed), ("b", Passed)]),
            1.0,
        );
        assert_eq!(v.outcome, Degraded);
        assert_eq!(
            round_verdict(&[], &results(&[("a", Passed)]), 0.5).outcome,
            Failed
        );
        // 3 of 10 at 0.3 is exactly the threshold despite floating point.
        let ten: Vec<String> = (0..10).map(|i| format!("l{i}")).collect();
        let r: Vec<(String, Outcome)> = ten
            .iter()
            .enumerate()
            .map(|(i, l)| (l.clone(), if i < 3 { Failed } else { Passed }))
            .collect();
        assert_eq!(round_verdict(&ten, &r, 0.3).outcome, Failed);
        assert_eq!(round_verdict(&ten, &r, 0.31).outcome, Degraded);
    }

    // --- Health ---------------------------------------------------------

    /// Feeds outcomes one per minute; returns the transitions and the final state.
    fn run(thresholds: Thresholds, outcomes: &str) -> (Vec<Option<Transition>>, CheckState) {
        let start = t("2025-01-01T00:00:00Z");
        let mut state = CheckState::new(start);
        let transitions = outcomes
            .chars()
            .enumerate()
            .map(|(i, c)| {
                let outcome = match c {
                    'P' => Outcome::Passed,
                    'D' => Outcome::Degraded,
                    'F' => Outcome::Failed,
                    _ => panic!("{c}"),
                };
                state.observe(
                    outcome,
                    &thresholds,
                    start + TimeDelta::minutes(i as i64 + 1),
                )
            })
            .collect();
        (transitions, state)
    }

    const DEFAULT: Thresholds = Thresholds {
        failure: 2,
        success: 1,
    };

    #[test]
    fn one_blip_pages_nobody() {
        let (tr, s) = run(DEFAULT, "PFPFPFP");
        assert!(tr.iter().all(Option::is_none), "{tr:?}");
        assert_eq!(s.health, Health::Passing);
    }

    #[test]
    fn failing_after_the_threshold_then_silence_then_one_recovery() {
        use Transition::*;
        let (tr, s) = run(DEFAULT, "PFFFFFFP");
        assert_eq!(
            tr,
            vec![
                None,
                None,
                Some(Failing),
                None,
                None,
                None,
                None,
                Some(Recovered)
            ]
        );
        assert_eq!(s.health, Health::Passing);
        assert_eq!(s.since, t("2025-01-01T00:08:00Z"));
        assert_eq!(s.rounds, 8);
        assert_eq!(s.last_round_at, Some(t("2025-01-01T00:08:00Z")));
    }

    #[test]
    fn success_threshold_delays_recovery() {
        use Transition::*;
        let th = Thresholds {
            failure: 2,
            success: 3,
        };
        let (tr, _) = run(th, "FFPPFPPP");
        assert_eq!(
            tr,
            vec![
                None,
                Some(Failing),
                None,
                None,
                None,
                None,
                None,
                Some(Recovered)
            ]
        );
    }

    #[test]
    fn degraded_rounds_degrade_a_passing_check() {
        use Transition::*;
        let (tr, s) = run(DEFAULT, "DDDDP");
        assert_eq!(tr, vec![None, Some(Degraded), None, None, Some(Recovered)]);
        assert_eq!(s.health, Health::Passing);
        // A failed and a degraded round are two bad rounds.
        let (tr, _) = run(DEFAULT, "FD");
        assert_eq!(tr, vec![None, Some(Degraded)]);
        // Degraded, then failing twice: failing.
        let (tr, _) = run(DEFAULT, "DDFF");
        assert_eq!(tr, vec![None, Some(Degraded), None, Some(Failing)]);
        // Degraded stays degraded through an isolated failure.
        let (tr, s) = run(DEFAULT, "DDFDFD");
        assert_eq!(tr, vec![None, Some(Degraded), None, None, None, None]);
        assert_eq!(s.health, Health::Degraded);
    }

    #[test]
    fn leaving_failing_through_degraded() {
        use Transition::*;
        let (tr, s) = run(DEFAULT, "FFDDP");
        assert_eq!(
            tr,
            vec![None, Some(Failing), Some(Degraded), None, Some(Recovered)]
        );
        assert_eq!(s.health, Health::Passing);
        // With success = 2, a degraded then a passed round is two non-failed
        // rounds but only one pass: degraded first, then recovered.
        let th = Thresholds {
            failure: 2,
            success: 2,
        };
        let (tr, _) = run(th, "FFDPP");
        assert_eq!(
            tr,
            vec![None, Some(Failing), None, Some(Degraded), Some(Recovered)]
        );
        let (tr, _) = run(th, "FFPP");
        assert_eq!(tr, vec![None, Some(Failing), None, Some(Recovered)]);
    }

    #[test]
    fn thresholds_of_one_react_to_every_change() {
        use Transition::*;
        let th = Thresholds {
            failure: 1,
            success: 1,
        };
        let (tr, _) = run(th, "FPDFP");
        assert_eq!(
            tr,
            vec![
                Some(Failing),
                Some(Recovered),
                Some(Degraded),
                Some(Failing),
                Some(Recovered)
            ]
        );
    }

    #[test]
    fn exactly_one_transition_per_change_of_health() {
        let mut rng = StdRng::seed_from_u64(9);
        for (failure, success) in [(1, 1), (2, 1), (3, 2), (2, 4)] {
            let th = Thresholds { failure, success };
            let mut state = CheckState::new(t("2025-01-01T00:00:00Z"));
            let mut changes = 0;
            let mut transitions = 0;
            for i in 0..5000 {
                let outcome = match rng.random_range(0..10) {
                    0..=4 => Outcome::Passed,
                    5..=6 => Outcome::Degraded,
                    _ => Outcome::Failed,
                };
                let before = state.health;
                let at = t("2025-01-01T00:00:00Z") + TimeDelta::minutes(i);
                let tr = state.observe(outcome, &th, at);
                let expected = match state.health {
                    Health::Failing => Transition::Failing,
                    Health::Degraded => Transition::Degraded,
                    Health::Passing => Transition::Recovered,
                };
                if state.health != before {
                    changes += 1;
                    assert_eq!(tr, Some(expected));
                    assert_eq!(state.since, at);
                } else {
                    assert_eq!(tr, None, "same health, no alert");
                }
                transitions += usize::from(tr.is_some());
            }
            assert_eq!(changes, transitions);
            assert!(changes > 10, "the sequence exercised the machine");
        }
    }

    #[test]
    fn reminders_only_while_unhealthy_and_after_the_interval() {
        let mut state = CheckState::new(t("2025-01-01T00:00:00Z"));
        let hour = Some(secs(3600));
        assert!(
            !state.reminder_due("ops", hour, t("2025-01-01T05:00:00Z")),
            "passing"
        );
        state.observe(Outcome::Failed, &DEFAULT, t("2025-01-01T00:01:00Z"));
        state.observe(Outcome::Failed, &DEFAULT, t("2025-01-01T00:02:00Z"));
        assert_eq!(state.health, Health::Failing);
        assert!(
            state.reminder_due("ops", hour, t("2025-01-01T00:02:00Z")),
            "never notified"
        );
        state.notified("ops", t("2025-01-01T00:02:00Z"));
        assert!(!state.reminder_due("ops", hour, t("2025-01-01T01:01:59Z")));
        assert!(state.reminder_due("ops", hour, t("2025-01-01T01:02:00Z")));
        assert!(
            !state.reminder_due("ops", None, t("2025-01-02T00:00:00Z")),
            "no reminders configured"
        );
        assert!(
            !state.reminder_due("ops", hour, t("2024-12-31T00:00:00Z")),
            "clock went back"
        );
        state.notified("ops", t("2025-01-01T01:02:00Z"));
        assert!(!state.reminder_due("ops", hour, t("2025-01-01T01:30:00Z")));
        state.observe(Outcome::Passed, &DEFAULT, t("2025-01-01T01:40:00Z"));
        assert!(
            !state.reminder_due("ops", hour, t("2025-01-01T09:00:00Z")),
            "recovered"
        );
    }

    #[test]
    fn state_round_trips_as_json() {
        let (_, mut state) = run(DEFAULT, "FFD");
        state.notified("email", t("2025-01-01T00:02:00Z"));
        let json = serde_json::to_string(&state).unwrap();
        assert!(json.contains("\"health\":\"degraded\""), "{json}");
        assert_eq!(serde_json::from_str::<CheckState>(&json).unwrap(), state);
        // State written before ok_streak/rounds existed still loads.
        let old = r#"{"health":"failing","fail_streak":3,"bad_streak":3,"pass_streak":0,
            "since":"2025-01-01T00:00:00Z","last_round_at":null}"#;
        let state: CheckState = serde_json::from_str(old).unwrap();
        assert_eq!(
            (state.health, state.ok_streak, state.rounds),
            (Health::Failing, 0, 0)
        );
    }

    #[test]
    fn thresholds_validation() {
        assert!(Thresholds::default().validate().is_ok());
        let err = Thresholds {
            failure: 0,
            success: 1,
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.field, "thresholds.failure");
        let err = Thresholds {
            failure: 1,
            success: 0,
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().starts_with("thresholds.success"), "{err}");
        let th: Thresholds = toml::from_str("failure = 3").unwrap();
        assert_eq!(
            th,
            Thresholds {
                failure: 3,
                success: 1
            }
        );
        assert!(toml::from_str::<Thresholds>("failures = 3").is_err());
    }

    // --- The flow file's tables together ---------------------------------

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct FlowTables {
        #[serde(default)]
        schedule: ScheduleConfig,
        #[serde(default)]
        retry: RetryConfig,
        #[serde(default)]
        thresholds: Thresholds,
        #[serde(default)]
        locations: LocationsConfig,
        #[serde(default)]
        maintenance: Vec<MaintenanceWindow>,
    }

    impl FlowTables {
        fn check(&self) -> Result<Scheduling, ScheduleError> {
            Scheduling::new(
                &self.schedule,
                &self.retry,
                &self.thresholds,
                &self.locations,
                &self.maintenance,
            )
        }
    }

    #[test]
    fn the_documented_example_parses() {
        let text = r#"
[schedule]
every = "1m"
jitter = "5s"
[retry]
strategy = "exponential"   # none|fixed|linear|exponential
max_retries = 2
base_backoff = "2s"
max_backoff = "30s"
max_duration = "2m"
only_network_errors = false
[thresholds]
failure = 2
success = 1
[locations]
names = ["local"]
mode = "parallel"
failure_share = 0.5
[[maintenance]]
days = ["sat", "sun"]
start = "02:00"
duration = "1h"
timezone = "Europe/Berlin"
"#;
        let s = toml::from_str::<FlowTables>(text).unwrap().check().unwrap();
        assert_eq!(
            (s.schedule.every(), s.schedule.jitter()),
            (secs(60), secs(5))
        );
        assert_eq!(s.retry.strategy, RetryStrategy::Exponential);
        assert_eq!(s.retry.next_retry(1, secs(10), true), Some(secs(4)));
        assert_eq!(s.retry.max_duration, Some(secs(120)));
        assert_eq!(s.thresholds, Thresholds::default());
        assert_eq!(s.locations, LocationsConfig::default());
        assert_eq!(s.maintenance.len(), 1);
        assert!(in_maintenance(&s.maintenance, t("2025-06-07T00:30:00Z")));

        // No tables at all: defaults that work.
        let s = toml::from_str::<FlowTables>("").unwrap().check().unwrap();
        assert_eq!(s.schedule.every(), secs(60));
        assert_eq!(s.retry, RetryPolicy::default());

        let err = toml::from_str::<FlowTables>("[schedule]\nevery = \"10s\"\njitter = \"10s\"")
            .unwrap()
            .check()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "schedule.jitter must be shorter than schedule.every (\"10s\" is not shorter than \"10s\")"
        );
        let err = toml::from_str::<FlowTables>(
            "[[maintenance]]\nstart = \"02:00\"\nduration = \"1h\"\ntimezone = \"Berlin\"",
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("maintenance.timezone"), "{err}");
    }
}
