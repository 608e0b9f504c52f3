//! Small helpers the simulated banks share.
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, LocalResult, NaiveDate, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::Value;

// A poisoned lock only means a thread panicked; the state is still worth
// reading, so these never propagate the poison.

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

/// A simulated bank's clock: the instant its `day` shows the wall-clock time
/// of day that `real` shows in `zone`.
///
/// Built from the local date and time, not by shifting the real instant by
/// whole days: from a winter date to a summer `day` that shift moves the wall
/// clock by the DST hour, and late in the evening it crossed midnight into the
/// bank's tomorrow.
pub(crate) fn wall_clock_on(day: NaiveDate, zone: Tz, real: DateTime<Utc>) -> DateTime<Utc> {
    let local = day.and_time(real.with_timezone(&zone).time());
    match zone.from_local_datetime(&local) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
        // Inside the spring-forward gap that wall time does not exist: the
        // zone's offset from just before the gap places it just after it.
        LocalResult::None => {
            let before = zone.offset_from_utc_datetime(&(local - Duration::hours(3)));
            (local - Duration::seconds(i64::from(before.fix().local_minus_utc()))).and_utc()
        }
    }
}

/// A simulated service's clock that tests move on: real time shifted, to
/// the sandbox day at first (at the wall-clock time of day, UTC), then by
/// whatever `advance` adds.
#[derive(Debug)]
pub(crate) struct ShiftedClock(RwLock<Duration>);

impl ShiftedClock {
    pub(crate) fn starting_on(day: NaiveDate) -> ShiftedClock {
        let now = Utc::now();
        ShiftedClock(RwLock::new(wall_clock_on(day, chrono_tz::UTC, now) - now))
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        Utc::now() + *read(&self.0)
    }

    /// Move on by `by`, unless that passes `last_day` (where the books end).
    pub(crate) fn advance(
        &self,
        by: Duration,
        last_day: Option<NaiveDate>,
    ) -> Result<NaiveDate, String> {
        let mut shift = write(&self.0);
        let next = (Utc::now() + *shift + by).date_naive();
        if let Some(last) = last_day
            && next > last
        {
            return Err(format!(
                "the books end on {last}; the clock cannot pass that"
            ));
        }
        *shift += by;
        Ok(next)
    }
}

/// The control route `POST …/advance` of a service with a [`ShiftedClock`]:
/// `{"days": N}` or `{"hours": N}` moves it on; the answer is the new day.
pub(crate) fn advance_request(
    body: &[u8],
    advance: impl FnOnce(Duration) -> Result<NaiveDate, String>,
) -> Response {
    let v = serde_json::from_slice::<Value>(body).ok();
    let field = |k: &str| v.as_ref().and_then(|v| v.get(k)).and_then(Value::as_i64);
    let by = match (field("days"), field("hours")) {
        (Some(d), None) if (0..=36_500).contains(&d) => Some(Duration::days(d)),
        (None, Some(h)) if (0..=876_000).contains(&h) => Some(Duration::hours(h)),
        _ => None,
    };
    match by.map(advance) {
        Some(Ok(today)) => json_response(
            StatusCode::OK,
            &serde_json::json!({"today": today.to_string()}),
        ),
        Some(Err(e)) => json_response(StatusCode::CONFLICT, &serde_json::json!({"error": e})),
        None => json_response(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": "expected {\"days\": N} or {\"hours\": N}"}),
        ),
    }
}

/// `body` as an `application/json` answer.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod clock_tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn the_bank_day_keeps_its_date_at_any_real_hour_and_season() {
        let days = ["2024-06-15", "2024-01-15", "2024-03-31", "2024-10-27"];
        // A winter evening (the hour that used to cross midnight into a summer
        // tomorrow), a summer night, and the DST switch nights themselves.
        let reals = [
            "2026-12-05T22:30:00Z",
            "2026-12-05T23:59:59Z",
            "2026-07-01T21:30:00Z",
            "2026-03-29T01:30:00Z",
            "2026-10-25T00:30:00Z",
            "2026-12-06T00:00:00Z",
        ];
        for zone in [chrono_tz::Europe::Paris, chrono_tz::Europe::Sofia] {
            for day in days {
                let day: NaiveDate = day.parse().unwrap();
                for real in reals {
                    let at = wall_clock_on(day, zone, utc(real));
                    assert_eq!(
                        at.with_timezone(&zone).date_naive(),
                        day,
                        "{zone} {day} {real}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_bank_clock_shows_the_real_wall_time() {
        let at = wall_clock_on(
            "2024-06-15".parse().unwrap(),
            chrono_tz::Europe::Paris,
            utc("2026-12-05T22:30:00Z"),
        );
        // 23:30 in a Paris December is 23:30 in the bank's Paris June.
        assert_eq!(at, utc("2024-06-15T21:30:00Z"));
    }
}
