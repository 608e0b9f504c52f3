//! A bank's daily call limit, counted and paced: open-banking APIs allow
//! an account a few unattended calls a day (4 under PSD2) per endpoint, and
//! aggregators pass that on. The counts live in each connector's sealed
//! session; these rules are pure, with the clock passed in.
use std::time::Duration;

use chrono::{DateTime, Days, NaiveDate, Timelike, Utc};
use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

/// Successful calls of one account and scope on one service day.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allowance {
    pub day: Option<NaiveDate>,
    pub used: u32,
    /// What the service last said is left today.
    pub remaining: Option<u32>,
    pub last: Option<DateTime<Utc>>,
    /// A 429 said to wait until then.
    pub blocked_until: Option<DateTime<Utc>>,
}

/// Why a call waits, and until when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wait {
    pub until: DateTime<Utc>,
    pub why: &'static str,
}

fn next_midnight(now: DateTime<Utc>) -> DateTime<Utc> {
    (now.date_naive() + Days::new(1))
        .and_time(chrono::NaiveTime::MIN)
        .and_utc()
}

impl Allowance {
    /// Calls left today by our count and the service's word.
    pub(crate) fn left(&self, limit: u32, today: NaiveDate) -> u32 {
        if self.day != Some(today) {
            return limit;
        }
        let ours = limit.saturating_sub(self.used);
        self.remaining.map_or(ours, |theirs| theirs.min(ours))
    }

    /// May a call be made now? Attended runs spend what is left; unattended
    /// ones one call per slot (the day cut in `limit` equal parts), so the
    /// calls spread over the day.
    pub fn may_call(&self, limit: u32, now: DateTime<Utc>, attended: bool) -> Result<(), Wait> {
        if let Some(until) = self.blocked_until.filter(|u| *u > now) {
            return Err(Wait {
                until,
                why: "the service answered 429 (limit reached)",
            });
        }
        let today = now.date_naive();
        if self.left(limit, today) == 0 {
            return Err(Wait {
                until: next_midnight(now),
                why: "today's calls are spent",
            });
        }
        if attended || limit == 0 {
            return Ok(());
        }
        let slot_secs = (86_400 / i64::from(limit)).max(1);
        let slot = |t: DateTime<Utc>| {
            (
                t.date_naive(),
                t.time().num_seconds_from_midnight() as i64 / slot_secs,
            )
        };
        if let Some(last) = self.last
            && slot(last) == slot(now)
        {
            let start = now.date_naive().and_time(chrono::NaiveTime::MIN).and_utc();
            let next = start + chrono::Duration::seconds((slot(now).1 + 1) * slot_secs);
            return Err(Wait {
                until: next.min(next_midnight(now)),
                why: "paced: one call in each part of the day",
            });
        }
        Ok(())
    }

    pub(crate) fn record_success(&mut self, now: DateTime<Utc>, remaining: Option<u32>) {
        let today = now.date_naive();
        if self.day != Some(today) {
            *self = Allowance {
                day: Some(today),
                ..Allowance::default()
            };
        }
        self.used += 1;
        self.remaining = remaining;
        self.last = Some(now);
        self.blocked_until = None;
    }

    pub(crate) fn record_refusal(&mut self, now: DateTime<Utc>, wait: Option<Duration>) {
        let until = wait
            .and_then(|w| chrono::Duration::from_std(w).ok())
            .map_or_else(|| next_midnight(now), |w| now + w);
        self.day = Some(now.date_naive());
        self.remaining = Some(0);
        self.blocked_until = Some(until);
    }
}

/// The allowances of one connection, by `what:id`: the scope or endpoint
/// and the account id the service counts by. Kept in the sealed session.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Allowances(BTreeMap<String, Allowance>);

impl Allowances {
    pub(crate) fn key(what: &str, id: &str) -> String {
        format!("{what}:{id}")
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Allowance> {
        self.0.get(key)
    }

    /// The service served a call of `key` (`remaining`: what it says is left).
    pub(crate) fn served(&mut self, key: String, now: DateTime<Utc>, remaining: Option<u32>) {
        self.0
            .entry(key)
            .or_default()
            .record_success(now, remaining);
    }

    /// The service refused a call of `key` over its limit; `wait` is its reset.
    pub(crate) fn refused(&mut self, key: String, now: DateTime<Utc>, wait: Option<Duration>) {
        self.0.entry(key).or_default().record_refusal(now, wait);
    }

    /// Forget the allowances of ids no longer linked, except today's (the
    /// service still counts those).
    pub(crate) fn keep_live(&mut self, live: &HashSet<&str>, today: NaiveDate) {
        self.0.retain(|k, a| {
            k.split_once(':').is_some_and(|(_, id)| live.contains(id)) || a.day == Some(today)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn unattended_calls_spread_over_the_day_and_never_pass_the_limit() {
        let mut a = Allowance::default();
        let mut made = Vec::new();
        // Hourly runs over two days.
        for hour in 0..48 {
            let now = at("2026-03-01T00:30:00Z") + chrono::Duration::hours(hour);
            if a.may_call(4, now, false).is_ok() {
                a.record_success(now, None);
                made.push(now);
            }
        }
        let per_day = |d: &str| {
            made.iter()
                .filter(|t| t.date_naive().to_string() == d)
                .count()
        };
        assert_eq!((per_day("2026-03-01"), per_day("2026-03-02")), (4, 4));
        // Spread: six hours apart.
        assert_eq!(made[1] - made[0], chrono::Duration::hours(6));
    }

    #[test]
    fn attended_runs_spend_what_is_left_and_the_service_word_counts() {
        let now = at("2026-03-01T09:00:00Z");
        let mut a = Allowance::default();
        for _ in 0..4 {
            a.may_call(4, now, true).unwrap();
            a.record_success(now, None);
        }
        let w = a.may_call(4, now, true).unwrap_err();
        assert_eq!(w.until, at("2026-03-02T00:00:00Z"));
        // The service says one is left though we counted none: ours wins.
        let mut b = Allowance::default();
        b.record_success(now, Some(0));
        assert!(
            b.may_call(4, now, true).is_err(),
            "the service said none left"
        );
        // A 429 is waited out.
        let mut c = Allowance::default();
        c.record_refusal(now, Some(Duration::from_secs(600)));
        let w = c.may_call(4, now, true).unwrap_err();
        assert_eq!(w.until, now + chrono::Duration::minutes(10));
        assert!(
            c.may_call(4, at("2026-03-02T00:01:00Z"), true).is_ok(),
            "a new day"
        );
    }
}
