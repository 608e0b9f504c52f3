//! `GET /`: accounts with their balance now and last sync, the
//! connections that wait for their owner, and three charts: each account's
//! balance over the last 12 months, money out and in per month, and
//! spending by category over a period the person chooses.
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use bankbridge_core::Account;
use bankbridge_store::{Flow, FlowGrouping, StoredBalance, SyncOutcome, current_balance};
use chrono::{Datelike, Months, NaiveDate, Utc};
use maud::{Markup, html};
use rust_decimal::Decimal;
use serde::Deserialize;

use super::charts;

use super::layout::{self, instant, money};
use super::session::Viewer;
use crate::AppState;
use crate::error::ApiError;

/// The period of the spending chart.
#[derive(Deserialize)]
pub(crate) struct Period {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

/// Days the spending chart covers unless the person says.
const DEFAULT_DAYS: u64 = 30;
/// Categories drawn; the rest are summed as "Everything else".
const TOP_CATEGORIES: usize = 10;

pub(crate) async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(period): Query<Period>,
) -> Result<Response, ApiError> {
    let today = Utc::now().date_naive();
    let month_start = today.with_day(1).unwrap_or(today);
    let first_month = month_start - Months::new(11);
    // Years 1 to 9999 only: chrono reads signed years far outside what
    // either database compares alike.
    let date = |v: &str| {
        NaiveDate::parse_from_str(v.trim(), "%Y-%m-%d")
            .ok()
            .filter(|d| (1..=9999).contains(&d.year()))
    };
    let to = date(&period.to).unwrap_or(today);
    let from = date(&period.from)
        .or_else(|| to.checked_sub_days(chrono::Days::new(DEFAULT_DAYS - 1)))
        .unwrap_or(to);
    let (from, to) = if from <= to { (from, to) } else { (to, from) };
    let connections = state.store.connections.list_connections().await?;
    let accounts = state.store.bank.list_accounts(None).await?;
    let stamp = FlowKey {
        changed_at: state.store.bank.transactions_changed_at().await?,
        accounts: accounts.iter().map(|a| a.id).collect(),
        from: first_month,
        to: today,
        grouping: FlowGrouping::AccountMonth,
    };
    let months = month_flows(&state, &stamp).await?;
    let categories = flows(
        &state,
        FlowKey {
            from,
            to,
            grouping: FlowGrouping::Category,
            ..stamp
        },
    )
    .await?;
    let (months, categories) = (months.as_slice(), categories.as_slice());
    let mut balances = HashMap::new();
    for a in &accounts {
        balances.insert(a.id, state.store.bank.list_balances(a.id).await?);
    }
    let by_id: HashMap<i64, _> = connections.iter().map(|c| (c.id, c)).collect();
    let waiting: Vec<_> = connections
        .iter()
        .filter(|c| {
            matches!(
                c.last_sync_status,
                SyncOutcome::NeedsUser | SyncOutcome::CredentialsRefused | SyncOutcome::Failed
            )
        })
        .collect();
    let body = html! {
        @if !waiting.is_empty() {
            section aria-labelledby="waiting" {
                h2 id="waiting" { "Connections that need you" }
                ul {
                    @for c in &waiting {
                        li {
                            a href={"/connections/" (c.id)} { strong { (c.name) } } " — "
                            span class={"status-" (c.last_sync_status.as_str())} { (c.last_sync_status.as_str()) }
                            @if let Some(e) = &c.last_sync_error { ": " (e) }
                        }
                    }
                }
            }
        }
        h2 { "Accounts" }
        @if accounts.is_empty() {
            p.empty {
                "No accounts yet. Add a bank connection with "
                code { "bankbridge connection add" }
                " and sync it; its accounts appear here."
            }
        } @else {
            div.table-wrap {
                table {
                    thead { tr {
                        th scope="col" { "Account" }
                        th scope="col" class="opt" { "IBAN" }
                        th scope="col" class="opt" { "Connection" }
                        th scope="col" class="num" { "Balance now" }
                        th scope="col" class="opt" { "As of" }
                        th scope="col" class="opt" { "Last sync" }
                    } }
                    tbody {
                        @for a in &accounts {
                            @let balance = balances.get(&a.id).and_then(|b| current_balance(b));
                            @let conn = by_id.get(&a.connection_id);
                            tr {
                                td { a href={"/transactions?account=" (a.id)} { (a.display_name()) } }
                                td class="opt" { (a.iban.as_ref().map(|i| i.as_str()).unwrap_or("—")) }
                                td class="opt" { (conn.map(|c| c.name.as_str()).unwrap_or("—")) }
                                td.num {
                                    @if let Some(b) = balance {
                                        (money(&b.balance.amount.to_string(), b.balance.currency.as_str()))
                                    } @else { "—" }
                                }
                                td class="opt" { (balance.map(|b| b.balance.reference_date.to_string()).unwrap_or_else(|| "—".into())) }
                                td class="opt" {
                                    @match conn.and_then(|c| c.last_sync_at.as_ref()) {
                                        Some(t) => { (instant(t)) }
                                        None => { "never" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    let month_keys: Vec<String> = (0..12)
        .map(|i| (first_month + Months::new(i)).format("%Y-%m").to_string())
        .collect();
    let charts = html! {
        @if !accounts.is_empty() {
            h2 { "Balance over the last 12 months" }
            div.cards {
                @for a in &accounts {
                    @if let Some(b) = balances.get(&a.id).and_then(|b| current_balance(b)) {
                        (balance_chart(a, b, months, &month_keys))
                    }
                }
            }
            h2 { "Money out and in per month" }
            (debit_credit(months, &month_keys))
            h2 id="spending" { "Spending by category" }
            form.filters method="get" action="/#spending" aria-label="Period of the spending chart" {
                label { "From" input type="date" name="from" value=(from); }
                label { "To" input type="date" name="to" value=(to); }
                button type="submit" { "Show" }
            }
            (spending(categories, from, to))
        }
    };
    let body = html! { (body) (charts) };
    Ok(layout::page(&viewer, "/", "Overview", body).into_response())
}

/// What a set of flows was computed from: the sums stay right while no
/// transaction changed and no account went.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct FlowKey {
    changed_at: Option<chrono::DateTime<Utc>>,
    accounts: Vec<i64>,
    from: NaiveDate,
    to: NaiveDate,
    grouping: FlowGrouping,
}

/// Flows computed before, by what they were computed from, with when.
#[derive(Default)]
pub(crate) struct FlowCache(std::sync::Mutex<HashMap<FlowKey, Computed>>);

/// Sums, and when they were computed.
type Computed = (std::time::Instant, Arc<Vec<Flow>>);

/// How long a sum is trusted on its stamp alone. `max(updated_at)` is not
/// raised in commit order (a sync stamps its rows before it waits for the
/// writer), so a late commit with older rows may leave it unchanged.
const TRUST_STAMP: std::time::Duration = std::time::Duration::from_secs(60);
/// How far before a stamp `months_changed_since` looks, for those late commits.
const LATE_COMMIT: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

/// Entries kept at most (periods people look at); all go when it is full.
const FLOW_CACHE_MAX: usize = 64;

/// The flows of `key`: summing a year of rows takes SQLite a good part of a
/// second on large stores, and they change only when a sync writes.
async fn flows(state: &AppState, key: FlowKey) -> Result<Arc<Vec<Flow>>, ApiError> {
    let cache = &state.web.flows.0;
    if let Some((at, hit)) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key)
        && at.elapsed() < TRUST_STAMP
    {
        return Ok(hit.clone());
    }
    let fresh = Arc::new(
        state
            .store
            .bank
            .flows(key.from, key.to, key.grouping)
            .await?,
    );
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= FLOW_CACHE_MAX {
        cache.clear();
    }
    // Older stamps are of no use any more.
    cache.retain(|k, _| k.changed_at == key.changed_at && k.accounts == key.accounts);
    cache.insert(key, (std::time::Instant::now(), fresh.clone()));
    Ok(fresh)
}

/// The overview's monthly sums, kept per month: after a sync or an edit
/// only the months whose transactions changed are summed anew. Everything
/// is summed from scratch at least every [`FULL_EVERY`] (a booked row moved
/// to another month would otherwise leave its old month stale).
#[derive(Default)]
pub(crate) struct MonthSums(std::sync::Mutex<Option<MonthState>>);

#[derive(Clone)]
struct MonthState {
    changed_at: Option<chrono::DateTime<Utc>>,
    accounts: Vec<i64>,
    full_at: std::time::Instant,
    /// When the changed months were last asked for.
    checked_at: std::time::Instant,
    months: BTreeMap<String, Vec<Flow>>,
}

const FULL_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// The flows of the months from `key.from` to `key.to`, per account.
async fn month_flows(state: &AppState, key: &FlowKey) -> Result<Arc<Vec<Flow>>, ApiError> {
    let bank = &state.store.bank;
    let wanted: Vec<String> = {
        let mut m = key.from;
        let mut out = Vec::new();
        while m <= key.to {
            out.push(m.format("%Y-%m").to_string());
            m = m + Months::new(1);
        }
        out
    };
    let cached = state
        .web
        .months
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut next = match cached {
        Some(c) if c.accounts == key.accounts && c.full_at.elapsed() < FULL_EVERY => {
            let stale = match (c.changed_at, key.changed_at) {
                (old, new) if old == new && c.checked_at.elapsed() < TRUST_STAMP => {
                    Some(Vec::new())
                }
                (Some(old), Some(_)) => Some(bank.months_changed_since(old - LATE_COMMIT).await?),
                _ => None,
            };
            stale.map(|stale| (c, stale))
        }
        _ => None,
    };
    let state_now = match next.take() {
        Some((mut c, stale)) => {
            let redo: Vec<&String> = wanted
                .iter()
                .filter(|m| stale.contains(m) || !c.months.contains_key(*m))
                .collect();
            for month in redo {
                let first = NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d")
                    .map_err(ApiError::internal)?;
                let last = (first + Months::new(1))
                    .pred_opt()
                    .unwrap_or(first)
                    .min(key.to);
                let sums = bank.flows(first, last, FlowGrouping::AccountMonth).await?;
                c.months.insert(month.clone(), sums);
            }
            c.changed_at = key.changed_at;
            c.checked_at = std::time::Instant::now();
            c
        }
        None => {
            let all = bank
                .flows(key.from, key.to, FlowGrouping::AccountMonth)
                .await?;
            let mut months: BTreeMap<String, Vec<Flow>> = BTreeMap::new();
            for f in all {
                months
                    .entry(f.key.clone().unwrap_or_default())
                    .or_default()
                    .push(f);
            }
            for m in &wanted {
                months.entry(m.clone()).or_default();
            }
            MonthState {
                changed_at: key.changed_at,
                accounts: key.accounts.clone(),
                full_at: std::time::Instant::now(),
                checked_at: std::time::Instant::now(),
                months,
            }
        }
    };
    let out: Vec<Flow> = wanted
        .iter()
        .filter_map(|m| state_now.months.get(m))
        .flatten()
        .cloned()
        .collect();
    *state.web.months.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(state_now);
    Ok(Arc::new(out))
}

/// End-of-month balances, walked back from the balance now through each
/// month's booked money (in the balance's currency).
fn balance_chart(a: &Account, now: &StoredBalance, months: &[Flow], keys: &[String]) -> Markup {
    let currency = now.balance.currency.as_str();
    let last = now.balance.reference_date.format("%Y-%m").to_string();
    let net: HashMap<&str, Decimal> = months
        .iter()
        .filter(|f| f.account_id == Some(a.id) && f.currency.as_str() == currency)
        .filter_map(|f| Some((f.key.as_deref()?, f.debit + f.credit)))
        .collect();
    let mut points = Vec::new();
    let mut balance = now.balance.amount;
    for key in keys.iter().rev().filter(|k| **k <= last) {
        points.push((key.clone(), balance));
        balance -= net.get(key.as_str()).copied().unwrap_or_default();
    }
    points.reverse();
    let summary = format!(
        "Balance of {} at the end of each month, from {} to {} {currency}",
        a.display_name(),
        points.first().map(|p| p.1).unwrap_or_default(),
        now.balance.amount
    );
    html! {
        section {
            h3 { (a.display_name()) }
            p.big { (money(&now.balance.amount.to_string(), currency)) }
            (charts::line(&points, currency, &summary))
        }
    }
}

/// One chart per currency: all accounts' money out and in per month.
fn debit_credit(months: &[Flow], keys: &[String]) -> Markup {
    let mut by_currency: BTreeMap<&str, HashMap<&str, (Decimal, Decimal)>> = BTreeMap::new();
    for f in months {
        if let Some(k) = f.key.as_deref() {
            let slot = by_currency
                .entry(f.currency.as_str())
                .or_default()
                .entry(k)
                .or_default();
            slot.0 += f.debit;
            slot.1 += f.credit;
        }
    }
    html! {
        @if by_currency.is_empty() {
            p.empty { "No booked transactions in the last 12 months." }
        }
        @for (currency, per_month) in &by_currency {
            @let rows: Vec<(String, Decimal, Decimal)> = keys.iter().map(|k| {
                let (d, c) = per_month.get(k.as_str()).copied().unwrap_or_default();
                (k.clone(), d, c)
            }).collect();
            @let out: Decimal = rows.iter().map(|r| r.1).sum();
            @let inn: Decimal = rows.iter().map(|r| r.2).sum();
            figure {
                (charts::debit_credit(&rows, currency, &format!(
                    "Money out and in per month in {currency}: {out} out and {inn} in over 12 months")))
                figcaption {
                    span.key.debit-key { "out" } " " (money(&out.to_string(), currency))
                    " · " span.key.credit-key { "in" } " " (money(&inn.to_string(), currency))
                    " over the 12 months"
                }
            }
        }
    }
}

fn spending(categories: &[Flow], from: NaiveDate, to: NaiveDate) -> Markup {
    let mut by_currency: BTreeMap<&str, Vec<(String, Decimal)>> = BTreeMap::new();
    for f in categories.iter().filter(|f| !f.debit.is_zero()) {
        by_currency.entry(f.currency.as_str()).or_default().push((
            f.key.clone().unwrap_or_else(|| "Uncategorised".to_owned()),
            -f.debit,
        ));
    }
    html! {
        @if by_currency.is_empty() {
            p.empty { "No money went out between " (from) " and " (to) ". Choose another period." }
        }
        @for (currency, rows) in &mut by_currency {
            @let rows = top(rows);
            @let total: Decimal = rows.iter().map(|r| r.1).sum();
            figure {
                (charts::bars(&rows, currency, &format!(
                    "Spending by category in {currency} from {from} to {to}: {total} in all")))
                figcaption { (money(&total.to_string(), currency)) " spent from " (from) " to " (to) "." }
            }
        }
    }
}

/// The largest categories first, the tail summed into one row.
fn top(rows: &mut [(String, Decimal)]) -> Vec<(String, Decimal)> {
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut out: Vec<_> = rows.iter().take(TOP_CATEGORIES).cloned().collect();
    let rest: Decimal = rows.iter().skip(TOP_CATEGORIES).map(|r| r.1).sum();
    if !rest.is_zero() {
        out.push(("Everything else".to_owned(), rest));
    }
    out
}
