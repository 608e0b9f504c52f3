//! Window planning: which date windows to fetch next for one account.
//!
//! A sync first catches up forward from the newest synced day (minus the
//! overlap) to today, then backfills older history window by window until it
//! reaches the oldest day allowed (the connection's `since`, the bank's
//! history limit) or, with no such bound, until enough consecutive windows
//! came back empty. Each window is committed with the checkpoint it leads to,
//! so the covered range stays contiguous: a sync killed at any point resumes
//! with no gap and, thanks to idempotent reconcile, no duplicate.
use bankbridge_core::{ConnectorLimits, DateWindow};
use bankbridge_store::Checkpoint;
use chrono::{Days, NaiveDate};

/// What bounds the plan of one account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanBounds {
    pub today: NaiveDate,
    /// Days per window: the smaller of the connection setting and the bank's limit.
    pub window_days: u32,
    pub overlap_days: u32,
    /// Oldest day worth fetching, when known.
    pub oldest: Option<NaiveDate>,
    /// Oldest day the bank serves without strong customer authentication
    /// (from [`ConnectorLimits::sca_after_days`]). No window straddles it, so
    /// everything newer is fetched and committed even when nobody is there
    /// to approve the older history.
    pub sca_from: Option<NaiveDate>,
}

impl PlanBounds {
    pub fn new(
        today: NaiveDate,
        limits: &ConnectorLimits,
        window_days: u32,
        overlap_days: u32,
        since: Option<NaiveDate>,
    ) -> Self {
        let window_days = match limits.max_window_days {
            Some(max) => window_days.min(max),
            None => window_days,
        }
        .max(1);
        let history_floor = limits
            .max_history_days
            .map(|d| sub_days(today, d.saturating_sub(1)));
        let oldest = match (since, history_floor) {
            (Some(s), Some(h)) => Some(s.max(h)),
            (s, h) => s.or(h),
        };
        Self {
            today,
            window_days,
            overlap_days,
            oldest,
            sca_from: limits.sca_after_days.map(|d| sub_days(today, d)),
        }
    }

    /// The window lies wholly below the SCA boundary: the bank will ask for
    /// strong customer authentication (unless it was given recently).
    pub fn needs_sca(&self, w: DateWindow) -> bool {
        self.sca_from.is_some_and(|s| w.to < s)
    }
}

pub fn sub_days(d: NaiveDate, n: u32) -> NaiveDate {
    d.checked_sub_days(Days::new(n as u64))
        .unwrap_or(NaiveDate::MIN)
}

pub fn add_days(d: NaiveDate, n: u32) -> NaiveDate {
    d.checked_add_days(Days::new(n as u64))
        .unwrap_or(NaiveDate::MAX)
}

/// The forward catch-up windows, oldest first: from `newest_covered -
/// overlap` to today. Empty on a first sync (nothing covered yet).
pub fn forward_windows(cp: &Checkpoint, b: &PlanBounds, window_days: u32) -> Vec<DateWindow> {
    let Some(newest) = cp.newest_covered else {
        return vec![];
    };
    let mut start = sub_days(newest, b.overlap_days);
    if let Some(oldest) = b.oldest {
        start = start.max(oldest);
    }
    if let Some(covered_from) = cp.oldest_covered {
        // Never re-open days below the contiguous covered range from this side.
        start = start.max(covered_from);
    }
    let mut out = vec![];
    while start <= b.today {
        let mut end = add_days(start, window_days - 1).min(b.today);
        if let Some(s) = b.sca_from
            && start < s
            && end >= s
        {
            // End below the SCA boundary, so the next window starts on it.
            end = s.pred_opt().unwrap_or(s);
        }
        out.push(DateWindow::new(start, end));
        start = add_days(end, 1);
    }
    out
}

/// The next backfill window below the covered range, or `None` when the
/// backfill is complete.
pub fn next_backfill_window(
    cp: &Checkpoint,
    b: &PlanBounds,
    window_days: u32,
) -> Option<DateWindow> {
    if cp.backfill_done && !reopened(cp, b) {
        return None;
    }
    let upper = match cp.oldest_covered {
        Some(d) => d.pred_opt()?,
        None => b.today,
    };
    let mut from = sub_days(upper, window_days - 1);
    if let Some(oldest) = b.oldest {
        if upper < oldest {
            return None;
        }
        from = from.max(oldest);
    }
    if let Some(s) = b.sca_from
        && upper >= s
    {
        // Stop on the SCA boundary: the next window lies wholly below it.
        from = from.max(s);
    }
    Some(DateWindow::new(from, upper))
}

/// A `since` moved further back than a finished backfill reached reopens it.
fn reopened(cp: &Checkpoint, b: &PlanBounds) -> bool {
    matches!((b.oldest, cp.oldest_covered), (Some(o), Some(c)) if o < c)
}

/// The checkpoint after committing backfill window `w` (`empty`: it held nothing).
pub fn after_backfill(
    cp: &Checkpoint,
    b: &PlanBounds,
    w: DateWindow,
    empty: bool,
    empty_streak_limit: u32,
) -> Checkpoint {
    let empty_streak = if empty { cp.empty_streak + 1 } else { 0 };
    let reached_floor = b.oldest.is_some_and(|o| w.from <= o);
    // Without a known floor, a long run of empty windows means the account's
    // history has started.
    let exhausted = b.oldest.is_none() && empty_streak >= empty_streak_limit;
    Checkpoint {
        oldest_covered: Some(w.from),
        newest_covered: Some(cp.newest_covered.map_or(w.to, |n| n.max(w.to))),
        backfill_done: reached_floor || exhausted,
        empty_streak,
    }
}

/// The checkpoint after committing forward window `w`.
pub fn after_forward(cp: &Checkpoint, w: DateWindow) -> Checkpoint {
    Checkpoint {
        newest_covered: Some(cp.newest_covered.map_or(w.to, |n| n.max(w.to))),
        oldest_covered: Some(cp.oldest_covered.map_or(w.from, |o| o.min(w.from))),
        ..cp.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    fn bounds(since: Option<NaiveDate>) -> PlanBounds {
        let limits = ConnectorLimits {
            max_window_days: Some(30),
            ..Default::default()
        };
        PlanBounds::new(d(2024, 6, 30), &limits, 90, 7, since)
    }

    #[test]
    fn window_is_capped_by_the_bank_limit() {
        assert_eq!(bounds(None).window_days, 30);
    }

    #[test]
    fn first_sync_backfills_from_today_to_since_without_gap() {
        let b = bounds(Some(d(2024, 1, 1)));
        let mut cp = Checkpoint::default();
        assert!(forward_windows(&cp, &b, b.window_days).is_empty());
        let mut covered = vec![];
        while let Some(w) = next_backfill_window(&cp, &b, b.window_days) {
            assert!(w.days() <= 30);
            covered.push(w);
            cp = after_backfill(&cp, &b, w, false, 12);
        }
        assert!(cp.backfill_done);
        assert_eq!(covered.first().unwrap().to, d(2024, 6, 30));
        assert_eq!(covered.last().unwrap().from, d(2024, 1, 1));
        for pair in covered.windows(2) {
            assert_eq!(
                pair[1].to.succ_opt().unwrap(),
                pair[0].from,
                "gap or overlap between windows"
            );
        }
        assert_eq!(cp.oldest_covered, Some(d(2024, 1, 1)));
        assert_eq!(cp.newest_covered, Some(d(2024, 6, 30)));
    }

    #[test]
    fn backfill_without_floor_stops_after_empty_streak() {
        let b = bounds(None);
        let mut cp = Checkpoint::default();
        let mut n = 0;
        while let Some(w) = next_backfill_window(&cp, &b, b.window_days) {
            n += 1;
            cp = after_backfill(&cp, &b, w, n > 3, 5);
        }
        assert_eq!(n, 3 + 5);
    }

    #[test]
    fn incremental_sync_overlaps_and_reaches_today() {
        let b = PlanBounds {
            today: d(2024, 7, 20),
            ..bounds(Some(d(2024, 1, 1)))
        };
        let cp = Checkpoint {
            oldest_covered: Some(d(2024, 1, 1)),
            newest_covered: Some(d(2024, 6, 30)),
            backfill_done: true,
            empty_streak: 0,
        };
        let ws = forward_windows(&cp, &b, b.window_days);
        assert_eq!(ws.first().unwrap().from, d(2024, 6, 23));
        assert_eq!(ws.last().unwrap().to, d(2024, 7, 20));
        assert!(next_backfill_window(&cp, &b, b.window_days).is_none());
    }

    #[test]
    fn earlier_since_reopens_backfill() {
        let b = bounds(Some(d(2023, 1, 1)));
        let cp = Checkpoint {
            oldest_covered: Some(d(2024, 1, 1)),
            newest_covered: Some(d(2024, 6, 30)),
            backfill_done: true,
            empty_streak: 0,
        };
        assert_eq!(
            next_backfill_window(&cp, &b, 30).unwrap().to,
            d(2023, 12, 31)
        );
    }

    #[test]
    fn no_window_straddles_the_sca_boundary() {
        let limits = ConnectorLimits {
            sca_after_days: Some(90),
            ..Default::default()
        };
        let today = d(2024, 6, 30);
        let b = PlanBounds::new(today, &limits, 30, 7, Some(d(2023, 1, 1)));
        let s = b.sca_from.unwrap();
        assert_eq!(s, d(2024, 4, 1), "90 days before today is still free");
        let mut cp = Checkpoint::default();
        let mut ws = vec![];
        while let Some(w) = next_backfill_window(&cp, &b, b.window_days) {
            assert!(w.to < s || w.from >= s, "{w} straddles {s}");
            ws.push(w);
            cp = after_backfill(&cp, &b, w, false, 12);
        }
        assert!(
            ws.iter().any(|w| w.from == s),
            "a window starts on the boundary"
        );
        assert!(ws.iter().any(|w| w.to == s.pred_opt().unwrap()));
        assert!(!b.needs_sca(DateWindow::new(s, today)));
        assert!(b.needs_sca(DateWindow::new(d(2024, 3, 1), s.pred_opt().unwrap())));
        for pair in ws.windows(2) {
            assert_eq!(pair[1].to.succ_opt().unwrap(), pair[0].from);
        }

        // An incremental sync after a long pause also stops below the boundary.
        let cp = Checkpoint {
            oldest_covered: Some(d(2023, 1, 1)),
            newest_covered: Some(d(2024, 3, 20)),
            backfill_done: true,
            empty_streak: 0,
        };
        let fw = forward_windows(&cp, &b, 30);
        assert!(fw.iter().all(|w| w.to < s || w.from >= s), "{fw:?}");
        assert_eq!(fw.first().unwrap().from, d(2024, 3, 13));
        assert_eq!(fw.last().unwrap().to, today);
        for pair in fw.windows(2) {
            assert_eq!(pair[0].to.succ_opt().unwrap(), pair[1].from);
        }
    }

    #[test]
    fn history_limit_sets_the_floor() {
        let limits = ConnectorLimits {
            max_window_days: Some(30),
            max_history_days: Some(90),
            ..Default::default()
        };
        let b = PlanBounds::new(d(2024, 6, 30), &limits, 30, 7, Some(d(2020, 1, 1)));
        assert_eq!(b.oldest, Some(d(2024, 4, 2)));
    }
}
