//! Reconcile one fetched window against the stored rows: a pure function.
//!
//! Identity (DESIGN.md): a row is (account, provider id). A bank without
//! stable ids gets `fp:<content fingerprint>:<occurrence>`, where the
//! occurrence counts identical rows of one day, so two real identical coffees
//! stay two rows. A booked row arriving under a new id claims the pending row
//! it settles (same amount and currency, pending date up to
//! [`LINK_TOLERANCE_DAYS`] earlier) instead of becoming a duplicate. Pending
//! rows that vanish are voided by the engine at the end of a sync
//! ([`vanished_pending`]), never deleted.
use std::collections::{HashMap, HashSet};

use bankbridge_core::{FetchedTransaction, Transaction, TxStatus};
use bankbridge_store::TxWrite;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// How far back before a booked row's date its pending row may be dated.
pub const LINK_TOLERANCE_DAYS: i64 = 7;
/// `last_seen` is refreshed at most this often, so a re-sync of unchanged data
/// the same day writes nothing.
pub const TOUCH_AFTER: Duration = Duration::hours(24);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileStats {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub voided: u64,
}

/// The writes one window needs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReconcilePlan {
    pub inserts: Vec<TxWrite>,
    pub updates: Vec<(i64, TxWrite)>,
    pub touch: Vec<i64>,
    pub stats: ReconcileStats,
    /// Identity keys of every incoming row (for the end-of-sync void pass).
    pub seen: Vec<String>,
}

impl ReconcilePlan {
    pub fn is_empty(&self) -> bool {
        self.inserts.is_empty() && self.updates.is_empty() && self.touch.is_empty()
    }
}

/// Give every incoming row its identity key and fingerprint, in bank order.
pub fn identify(incoming: &[FetchedTransaction]) -> Vec<(String, String)> {
    let mut occurrences: HashMap<String, u32> = HashMap::new();
    incoming
        .iter()
        .map(|tx| {
            let content = tx.content_fingerprint();
            let n = occurrences.entry(content.clone()).or_insert(0);
            let fingerprint = format!("{content}:{n}");
            *n += 1;
            let key = match &tx.provider_id {
                Some(id) if !id.is_empty() => id.clone(),
                _ => format!("fp:{fingerprint}"),
            };
            (key, fingerprint)
        })
        .collect()
}

pub fn to_write(
    tx: &FetchedTransaction,
    key: String,
    fingerprint: String,
    pending_id: Option<String>,
) -> TxWrite {
    TxWrite {
        provider_id: key,
        pending_provider_id: pending_id,
        fingerprint,
        status: tx.status,
        booking_date: tx.booking_date,
        value_date: tx.value_date,
        transaction_date: tx.transaction_date,
        amount: tx.amount,
        currency: tx.currency.to_string(),
        original_amount: tx.original_amount,
        original_currency: tx.original_currency.map(|c| c.to_string()),
        raw_label: tx.raw_label.clone(),
        label: tx.label.clone(),
        counterparty_name: tx.counterparty_name.clone(),
        counterparty_iban: tx.counterparty_iban.clone(),
        remittance_info: tx.remittance_info.clone(),
        bank_code: tx.bank_code.clone(),
        running_balance: tx.running_balance,
        raw: tx.raw.to_string(),
    }
}

/// Does the stored row already say everything the incoming one says?
fn same_content(stored: &Transaction, w: &TxWrite) -> bool {
    stored.status == w.status
        && stored.booking_date == w.booking_date
        && stored.value_date == w.value_date
        && stored.transaction_date == w.transaction_date
        && stored.amount == w.amount
        && stored.currency.as_str() == w.currency
        && stored.original_amount == w.original_amount
        && stored.original_currency.map(|c| c.to_string()) == w.original_currency
        && stored.raw_label == w.raw_label
        && stored.label == w.label
        && stored.counterparty_name == w.counterparty_name
        && stored.counterparty_iban == w.counterparty_iban
        && stored.remittance_info == w.remittance_info
        && stored.bank_code == w.bank_code
        && stored.running_balance == w.running_balance
        && stored.raw.as_str() == w.raw
}

/// Plan the writes for one window.
///
/// `stored` holds the account's rows dated from `LINK_TOLERANCE_DAYS` before
/// the window to its end (so pending rows of the previous window can be
/// claimed). `claimed` carries the ids of pending rows already claimed earlier
/// in this sync, so one pending row is never claimed twice.
pub fn plan(
    stored: &[Transaction],
    incoming: &[FetchedTransaction],
    now: DateTime<Utc>,
    claimed: &mut HashSet<i64>,
) -> ReconcilePlan {
    let by_key: HashMap<&str, &Transaction> =
        stored.iter().map(|t| (t.provider_id.as_str(), t)).collect();
    let by_pending_key: HashSet<&str> = stored
        .iter()
        .filter_map(|t| t.pending_provider_id.as_deref())
        .collect();
    let ids = identify(incoming);
    let incoming_keys: HashSet<&str> = ids.iter().map(|(k, _)| k.as_str()).collect();

    // Pending rows that could be settled by a booked row of this window: not
    // reported again under their own id, and not claimed yet.
    let mut candidates: HashMap<
        (rust_decimal::Decimal, bankbridge_core::Currency),
        Vec<&Transaction>,
    > = HashMap::new();
    for t in stored {
        let open = t.status == TxStatus::Pending
            || (t.status == TxStatus::Void && t.pending_provider_id.is_none());
        if open && !incoming_keys.contains(t.provider_id.as_str()) && !claimed.contains(&t.id) {
            candidates
                .entry((t.amount.normalize(), t.currency))
                .or_default()
                .push(t);
        }
    }

    let mut out = ReconcilePlan::default();
    for (tx, (key, fingerprint)) in incoming.iter().zip(ids) {
        out.seen.push(key.clone());
        if let Some(existing) = by_key.get(key.as_str()) {
            let w = to_write(tx, key, fingerprint, existing.pending_provider_id.clone());
            if same_content(existing, &w) {
                out.stats.unchanged += 1;
                if now - existing.last_seen >= TOUCH_AFTER {
                    out.touch.push(existing.id);
                }
            } else {
                out.stats.updated += 1;
                out.updates.push((existing.id, w));
            }
            continue;
        }
        if by_pending_key.contains(key.as_str()) {
            // The pending version of a row that has booked since: already stored.
            out.stats.unchanged += 1;
            continue;
        }
        if tx.status == TxStatus::Booked
            && let Some(pending) = claim(&mut candidates, tx, claimed)
        {
            out.stats.updated += 1;
            let w = to_write(tx, key, fingerprint, Some(pending.provider_id.clone()));
            out.updates.push((pending.id, w));
            continue;
        }
        out.stats.inserted += 1;
        out.inserts.push(to_write(tx, key, fingerprint, None));
    }
    out
}

/// The closest-dated open pending row a booked row settles, if any.
fn claim<'a>(
    candidates: &mut HashMap<
        (rust_decimal::Decimal, bankbridge_core::Currency),
        Vec<&'a Transaction>,
    >,
    booked: &FetchedTransaction,
    claimed: &mut HashSet<i64>,
) -> Option<&'a Transaction> {
    let list = candidates.get_mut(&(booked.amount.normalize(), booked.currency))?;
    let in_range = |d: NaiveDate| {
        let lag = (booked.booking_date - d).num_days();
        (-1..=LINK_TOLERANCE_DAYS).contains(&lag)
    };
    let (pos, _) = list
        .iter()
        .enumerate()
        .filter(|(_, t)| in_range(t.booking_date))
        .min_by_key(|(_, t)| {
            let lag = (booked.booking_date - t.booking_date).num_days().abs();
            let same_party = t.counterparty_name == booked.counterparty_name;
            (lag, !same_party, t.id)
        })?;
    let t = list.swap_remove(pos);
    claimed.insert(t.id);
    Some(t)
}

/// Pending rows of `stored` that no window of this sync reported again and
/// nothing claimed: the bank dropped them, so they become `void`.
pub fn vanished_pending(
    stored: &[Transaction],
    seen: &HashSet<String>,
    claimed: &HashSet<i64>,
) -> Vec<i64> {
    stored
        .iter()
        .filter(|t| t.status == TxStatus::Pending)
        .filter(|t| !seen.contains(&t.provider_id) && !claimed.contains(&t.id))
        .map(|t| t.id)
        .collect()
}

/// The pending rows of `account_id` dated in `range` that this sync's
/// windows no longer reported and nothing claimed (only pending rows are read).
pub async fn find_vanished<S: bankbridge_store::BankData + ?Sized>(
    store: &S,
    account_id: i64,
    range: bankbridge_core::DateWindow,
    seen: &HashSet<String>,
    claimed: &HashSet<i64>,
) -> Result<Vec<i64>, bankbridge_store::StoreError> {
    let pending = store
        .query_transactions(&bankbridge_store::TxQuery {
            account_id: Some(account_id),
            status: Some(TxStatus::Pending),
            from: Some(range.from),
            to: Some(range.to),
            ..Default::default()
        })
        .await?;
    Ok(vanished_pending(&pending, seen, claimed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bankbridge_core::Currency;
    use proptest::prelude::*;
    use rust_decimal::Decimal;
    use std::str::FromStr;

    fn d(day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 5, day).unwrap()
    }

    fn fetched(
        id: Option<&str>,
        status: TxStatus,
        day: u32,
        amount: &str,
        label: &str,
    ) -> FetchedTransaction {
        FetchedTransaction {
            provider_id: id.map(str::to_owned),
            status,
            booking_date: d(day),
            value_date: None,
            transaction_date: None,
            amount: Decimal::from_str(amount).unwrap(),
            currency: Currency::from_str("EUR").unwrap(),
            original_amount: None,
            original_currency: None,
            raw_label: label.into(),
            label: label.into(),
            counterparty_name: None,
            counterparty_iban: None,
            remittance_info: None,
            bank_code: None,
            running_balance: None,
            raw: serde_json::json!({"id": id, "label": label}),
        }
    }

    /// Apply a plan to an in-memory table the way the store does.
    fn apply(
        table: &mut Vec<Transaction>,
        plan: &ReconcilePlan,
        now: DateTime<Utc>,
        voids: &[i64],
    ) {
        for (id, w) in &plan.updates {
            let t = table.iter_mut().find(|t| t.id == *id).unwrap();
            *t = row(t.id, w, t.first_seen, now);
        }
        for w in &plan.inserts {
            let id = table.len() as i64 + 1;
            table.push(row(id, w, now, now));
        }
        for id in voids {
            table.iter_mut().find(|t| t.id == *id).unwrap().status = TxStatus::Void;
        }
    }

    fn row(id: i64, w: &TxWrite, first_seen: DateTime<Utc>, now: DateTime<Utc>) -> Transaction {
        Transaction {
            id,
            connection_id: 1,
            account_id: 1,
            provider_id: w.provider_id.clone(),
            pending_provider_id: w.pending_provider_id.clone(),
            fingerprint: w.fingerprint.clone(),
            status: w.status,
            booking_date: w.booking_date,
            value_date: w.value_date,
            transaction_date: w.transaction_date,
            amount: w.amount,
            currency: Currency::from_str(&w.currency).unwrap(),
            original_amount: w.original_amount,
            original_currency: None,
            raw_label: w.raw_label.clone(),
            label: w.label.clone(),
            counterparty_name: w.counterparty_name.clone(),
            counterparty_iban: w.counterparty_iban.clone(),
            remittance_info: w.remittance_info.clone(),
            bank_code: w.bank_code.clone(),
            running_balance: w.running_balance,
            raw: serde_json::from_str(&w.raw).unwrap(),
            first_seen,
            last_seen: now,
            updated_at: now,
            category: None,
        }
    }

    #[test]
    fn second_pass_over_same_data_changes_nothing() {
        let now = Utc::now();
        let incoming = vec![
            fetched(Some("1"), TxStatus::Booked, 1, "-3.50", "COFFEE"),
            fetched(Some("2"), TxStatus::Booked, 1, "100", "SALARY"),
        ];
        let mut table = vec![];
        let p = plan(&table, &incoming, now, &mut HashSet::new());
        assert_eq!(
            p.stats,
            ReconcileStats {
                inserted: 2,
                ..Default::default()
            }
        );
        apply(&mut table, &p, now, &[]);
        let p2 = plan(&table, &incoming, now, &mut HashSet::new());
        assert_eq!(
            p2.stats,
            ReconcileStats {
                unchanged: 2,
                ..Default::default()
            }
        );
        assert!(
            p2.is_empty(),
            "an unchanged re-sync must write nothing: {p2:?}"
        );
    }

    #[test]
    fn identical_twins_without_ids_stay_two_rows() {
        let now = Utc::now();
        let incoming = vec![
            fetched(None, TxStatus::Booked, 2, "-2.50", "COFFEE BAR"),
            fetched(None, TxStatus::Booked, 2, "-2.50", "COFFEE BAR"),
        ];
        let mut table = vec![];
        let p = plan(&table, &incoming, now, &mut HashSet::new());
        assert_eq!(p.stats.inserted, 2);
        assert_ne!(p.inserts[0].provider_id, p.inserts[1].provider_id);
        apply(&mut table, &p, now, &[]);
        let p2 = plan(&table, &incoming, now, &mut HashSet::new());
        assert_eq!(p2.stats.unchanged, 2);
        // A third identical coffee the next fetch is a new row, not a duplicate of the two.
        let mut three = incoming.clone();
        three.push(incoming[0].clone());
        let p3 = plan(&table, &three, now, &mut HashSet::new());
        assert_eq!((p3.stats.unchanged, p3.stats.inserted), (2, 1));
    }

    #[test]
    fn pending_that_books_under_new_id_is_linked_not_duplicated() {
        let now = Utc::now();
        let mut table = vec![];
        let pending = vec![fetched(Some("P9"), TxStatus::Pending, 3, "-42.00", "SHOP")];
        let p = plan(&table, &pending, now, &mut HashSet::new());
        apply(&mut table, &p, now, &[]);
        let booked = vec![fetched(Some("B7"), TxStatus::Booked, 5, "-42", "SHOP LTD")];
        let mut claimed = HashSet::new();
        let p2 = plan(&table, &booked, now, &mut claimed);
        assert_eq!(
            p2.stats,
            ReconcileStats {
                updated: 1,
                ..Default::default()
            }
        );
        apply(&mut table, &p2, now, &[]);
        assert_eq!(table.len(), 1);
        assert_eq!(table[0].status, TxStatus::Booked);
        assert_eq!(table[0].provider_id, "B7");
        assert_eq!(table[0].pending_provider_id.as_deref(), Some("P9"));
        // The bank briefly reporting the pending line again does not resurrect it.
        let p3 = plan(&table, &pending, now, &mut HashSet::new());
        assert_eq!(p3.stats.inserted, 0);
    }

    #[test]
    fn pending_outside_tolerance_or_other_amount_is_not_linked() {
        let now = Utc::now();
        let mut table = vec![];
        let pending = vec![
            fetched(Some("P1"), TxStatus::Pending, 1, "-10", "A"),
            fetched(Some("P2"), TxStatus::Pending, 20, "-11", "B"),
        ];
        let p0 = plan(&table, &pending, now, &mut HashSet::new());
        apply(&mut table, &p0, now, &[]);
        let booked = vec![fetched(Some("B1"), TxStatus::Booked, 20, "-10", "A")];
        let p = plan(&table, &booked, now, &mut HashSet::new());
        assert_eq!(
            p.stats.inserted, 1,
            "P1 is 19 days older, P2 has another amount"
        );
    }

    #[test]
    fn vanished_pending_rows_are_voided() {
        let now = Utc::now();
        let mut table = vec![];
        let pending = vec![
            fetched(Some("P1"), TxStatus::Pending, 1, "-10", "A"),
            fetched(Some("P2"), TxStatus::Pending, 1, "-12", "B"),
        ];
        let p0 = plan(&table, &pending, now, &mut HashSet::new());
        apply(&mut table, &p0, now, &[]);
        let again = vec![pending[1].clone()];
        let p = plan(&table, &again, now, &mut HashSet::new());
        let seen: HashSet<String> = p.seen.iter().cloned().collect();
        let voids = vanished_pending(&table, &seen, &HashSet::new());
        assert_eq!(voids, vec![table[0].id]);
    }

    proptest! {
        /// Whatever the bank sends, reconciling it twice yields no second write,
        /// and the number of rows equals the number of incoming rows.
        #[test]
        fn reconcile_is_idempotent(rows in proptest::collection::vec((0u8..3, 1u32..28, -500i64..500, 0u8..4, any::<bool>()), 0..60)) {
            let now = Utc::now();
            let incoming: Vec<FetchedTransaction> = rows.iter().enumerate().map(|(i, (idk, day, cents, label, has_id))| {
                let id = if *has_id { Some(format!("id{i}")) } else { None };
                let _ = idk;
                fetched(id.as_deref(), TxStatus::Booked, *day, &Decimal::new(*cents, 2).to_string(), &format!("L{label}"))
            }).collect();
            let mut table = vec![];
            let p = plan(&table, &incoming, now, &mut HashSet::new());
            prop_assert_eq!(p.stats.inserted as usize, incoming.len());
            apply(&mut table, &p, now, &[]);
            let keys: HashSet<&str> = table.iter().map(|t| t.provider_id.as_str()).collect();
            prop_assert_eq!(keys.len(), table.len(), "identity keys must be unique");
            let p2 = plan(&table, &incoming, now, &mut HashSet::new());
            prop_assert!(p2.is_empty());
            prop_assert_eq!(p2.stats.unchanged as usize, incoming.len());
        }
    }
}
