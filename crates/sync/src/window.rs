//! The engine's window step, public so that what is measured is what syncs:
//! [`apply_window`] reconciles one fetched window against the stored rows
//! and commits it atomically with the account's next checkpoint;
//! [`void_vanished`] ends an account's sync by voiding the pending rows the
//! bank no longer reports. The engine calls both for every window it
//! fetches; `bankbridge bench` calls them on pre-fetched pages.
use std::collections::HashSet;

use bankbridge_core::{BalanceKind, DateWindow, WindowPage};
use bankbridge_store::{BankData, BankWrites, Checkpoint, LeaseToken, StoreError, WindowCommit};
use chrono::{DateTime, Utc};

use crate::plan;
use crate::reconcile::{self, LINK_TOLERANCE_DAYS, ReconcileStats};

/// What one sync, holding `lease`, has seen of one account so far.
#[derive(Debug)]
pub struct AccountProgress {
    pub lease: LeaseToken,
    pub account_id: i64,
    /// Identity keys the bank reported in this sync.
    seen: HashSet<String>,
    /// Pending rows settled by booked rows in this sync.
    claimed: HashSet<i64>,
    /// Days fetched in this sync.
    range: Option<DateWindow>,
}

impl AccountProgress {
    pub fn new(lease: LeaseToken, account_id: i64) -> Self {
        Self {
            lease,
            account_id,
            seen: HashSet::new(),
            claimed: HashSet::new(),
            range: None,
        }
    }
}

/// What [`apply_window`] did.
#[derive(Clone, Debug, Default)]
pub struct WindowApplied {
    pub stats: ReconcileStats,
    /// Opening balance plus booked rows minus the closing balance, when the
    /// bank gave both and they disagree (it may have left rows out).
    pub balance_gap: Option<rust_decimal::Decimal>,
    /// False when nothing changed and no commit was needed.
    pub committed: bool,
}

/// Reconcile window `w`'s fetched `page` with the stored rows and commit the
/// changes with checkpoint `next` (`cp` is the account's current one) in one
/// transaction, fenced by the sync's lease. A window that changes nothing, with the
/// checkpoint already at `next`, writes nothing.
pub async fn apply_window<S: BankData + BankWrites + ?Sized>(
    store: &S,
    acc: &mut AccountProgress,
    w: DateWindow,
    page: WindowPage,
    cp: &Checkpoint,
    next: &Checkpoint,
    now: DateTime<Utc>,
) -> Result<WindowApplied, StoreError> {
    let stored = store
        .load_window(
            acc.account_id,
            plan::sub_days(w.from, LINK_TOLERANCE_DAYS as u32),
            w.to,
        )
        .await?;
    let planned = reconcile::plan(&stored, &page.transactions, now, &mut acc.claimed);
    acc.seen.extend(planned.seen.iter().cloned());
    acc.range = Some(match acc.range {
        None => w,
        Some(r) => DateWindow::new(r.from.min(w.from), r.to.max(w.to)),
    });
    let balance_gap = balance_gap(&page);
    // Opening balances only check the window; closing and available ones are history.
    let balances: Vec<_> = page
        .balances
        .into_iter()
        .filter(|b| b.kind != BalanceKind::OpeningBooked)
        .collect();
    let stats = planned.stats;
    let committed = !(planned.is_empty() && balances.is_empty() && cp == next);
    if committed {
        store
            .commit_window(&WindowCommit {
                lease: acc.lease,
                account_id: acc.account_id,
                now,
                inserts: planned.inserts,
                updates: planned.updates,
                voids: vec![],
                touch: planned.touch,
                balances,
                checkpoint: next.clone(),
            })
            .await?;
    }
    Ok(WindowApplied {
        stats,
        balance_gap,
        committed,
    })
}

/// The end of an account's sync: pending rows that no window of this sync
/// reported again, and that no booked row settled, are voided (with the
/// checkpoint `cp` kept as it is). Returns how many.
pub async fn void_vanished<S: BankData + BankWrites + ?Sized>(
    store: &S,
    acc: &AccountProgress,
    cp: &Checkpoint,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let Some(range) = acc.range else {
        return Ok(0);
    };
    let voids =
        reconcile::find_vanished(store, acc.account_id, range, &acc.seen, &acc.claimed).await?;
    if voids.is_empty() {
        return Ok(0);
    }
    let n = voids.len() as u64;
    store
        .commit_window(&WindowCommit {
            lease: acc.lease,
            account_id: acc.account_id,
            now,
            inserts: vec![],
            updates: vec![],
            voids,
            touch: vec![],
            balances: vec![],
            checkpoint: cp.clone(),
        })
        .await?;
    Ok(n)
}

/// Opening balance plus booked rows, against the closing balance, when the
/// page has both.
pub(crate) fn balance_gap(page: &WindowPage) -> Option<rust_decimal::Decimal> {
    let find = |kind| {
        page.balances
            .iter()
            .find(|b| b.kind == kind)
            .map(|b| b.amount)
    };
    let opening = find(BalanceKind::OpeningBooked)?;
    let closing = find(BalanceKind::ClosingBooked)?;
    let booked: rust_decimal::Decimal = page
        .transactions
        .iter()
        .filter(|t| t.status == bankbridge_core::TxStatus::Booked)
        .map(|t| t.amount)
        .sum();
    let gap = closing - (opening + booked);
    (!gap.is_zero()).then_some(gap)
}
