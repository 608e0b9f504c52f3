//! Plain-text accounting: the export as a beancount file or a journal that
//! hledger and ledger read. The same content in both: per bank account its
//! rows, each a transaction of two postings (the bank account, and an
//! expense or income account from the row's category), the bank's id as
//! metadata, an opening balance, and a balance assertion from the newest
//! booked balance the bank reported.
//!
//! Written in one pass per account, in constant memory:
//! - the opening balance is the bank's balance minus the rows exported up to
//!   its date, so the totals a tool reports are the bank's; it is dated the
//!   day before the first row (or the balance's date, when earlier);
//! - the opening and the assertion are written where the stream passes the
//!   balance's date: ledger checks assertions in file order, hledger and
//!   beancount in date order, and both then see the rows up to that date;
//! - a filtered export (text, category, amounts, status, a `to` before the
//!   balance's date) gets neither: its rows cannot add up to what the bank
//!   reported; one with pending rows gets the opening but no assertion (its
//!   totals are the booked balance plus what is pending).
//!
//! Account names come from a mapping file ([`LedgerNames::load`]), else
//! `Assets:Bank:<IBAN>` (or the account's name and id), `Expenses:<Category>`
//! / `Income:<Category>` for categorised rows, `Expenses:Uncategorized` /
//! `Income:Uncategorized` and `Equity:Opening-Balances`.
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use bankbridge_core::{Account, BalanceKind, Transaction, TxStatus};
use bankbridge_store::{BankData, TxQuery};
use chrono::{Days, NaiveDate, Utc};
use futures::StreamExt;
use rust_decimal::Decimal;
use serde::Deserialize;

use super::{ExportError, ExportOptions, Out, Sink, Text};

/// Which plain-text syntax.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dialect {
    Beancount,
    /// hledger and ledger journal syntax.
    Ledger,
}

/// Where rows go in the books: the mapping file's names, else defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerNames {
    /// IBAN or bankbridge account id → account name.
    accounts: HashMap<String, String>,
    /// Category → account name.
    categories: HashMap<String, String>,
    bank: String,
    expenses: String,
    income: String,
    opening: String,
}

impl Default for LedgerNames {
    fn default() -> Self {
        Self {
            accounts: HashMap::new(),
            categories: HashMap::new(),
            bank: "Assets:Bank".into(),
            expenses: "Expenses:Uncategorized".into(),
            income: "Income:Uncategorized".into(),
            opening: "Equity:Opening-Balances".into(),
        }
    }
}

/// The mapping file, TOML.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MapFile {
    /// IBAN (or bankbridge account id) → account.
    #[serde(default)]
    accounts: BTreeMap<String, String>,
    /// Category → account.
    #[serde(default)]
    categories: BTreeMap<String, String>,
    /// Parent of bank accounts the file does not name (default `Assets:Bank`).
    bank: Option<String>,
    /// For uncategorised money out (default `Expenses:Uncategorized`).
    expenses: Option<String>,
    /// For uncategorised money in (default `Income:Uncategorized`).
    income: Option<String>,
    /// For opening balances (default `Equity:Opening-Balances`).
    opening: Option<String>,
}

const ROOTS: [&str; 5] = ["Assets", "Liabilities", "Equity", "Income", "Expenses"];

/// Why `name` cannot be an account in both beancount and hledger, if so.
fn name_problem(name: &str) -> Option<String> {
    let mut parts = name.split(':');
    let root = parts.next().unwrap_or_default();
    if !ROOTS.contains(&root) {
        return Some(format!(
            "{name:?} must start with one of {}",
            ROOTS.join(", ")
        ));
    }
    let mut any = false;
    for part in parts {
        any = true;
        let mut chars = part.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Some(format!(
                "{name:?}: each part after the first starts with a capital letter or a digit \
                 and holds only letters, digits and '-' (ASCII)"
            ));
        }
    }
    (!any).then(|| format!("{name:?} needs at least two parts, like Expenses:Food"))
}

impl LedgerNames {
    /// Read a mapping file (TOML); every name is checked, and an error names
    /// the key.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: MapFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut names = LedgerNames::default();
        let check = |key: &str, name: String| match name_problem(&name) {
            Some(p) => Err(format!("{key}: {p}")),
            None => Ok(name),
        };
        for (key, name) in file.accounts {
            let name = check(&format!("accounts.{key:?}"), name)?;
            names
                .accounts
                .insert(key.replace(' ', "").to_uppercase(), name);
        }
        for (key, name) in file.categories {
            let name = check(&format!("categories.{key:?}"), name)?;
            names.categories.insert(key, name);
        }
        if let Some(n) = file.bank {
            names.bank = check("bank", n)?;
        }
        if let Some(n) = file.expenses {
            names.expenses = check("expenses", n)?;
        }
        if let Some(n) = file.income {
            names.income = check("income", n)?;
        }
        if let Some(n) = file.opening {
            names.opening = check("opening", n)?;
        }
        Ok(names)
    }

    /// The bank account's name in the books.
    fn asset(&self, account: &Account) -> String {
        let by_iban = account
            .iban
            .as_ref()
            .and_then(|i| self.accounts.get(i.as_str()));
        if let Some(name) = by_iban.or_else(|| self.accounts.get(&account.id.to_string())) {
            return name.clone();
        }
        match &account.iban {
            Some(iban) => format!("{}:{}", self.bank, component(iban.as_str())),
            None => format!(
                "{}:{}-{}",
                self.bank,
                component(&account.display_name()),
                account.id
            ),
        }
    }

    /// The other side of a row.
    fn counter(&self, tx: &Transaction) -> String {
        let out = tx.amount.is_sign_negative();
        match tx.category.as_deref().filter(|c| !c.trim().is_empty()) {
            Some(c) => match self.categories.get(c) {
                Some(name) => name.clone(),
                None => format!(
                    "{}:{}",
                    if out { "Expenses" } else { "Income" },
                    component(c)
                ),
            },
            None if out => self.expenses.clone(),
            None => self.income.clone(),
        }
    }
}

/// `text` as one account-name part: ASCII letters, digits and '-', starting
/// with a capital or a digit.
fn component(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    match out.chars().next() {
        None => "X".into(),
        Some(c) if c.is_ascii_lowercase() => {
            let mut s = c.to_ascii_uppercase().to_string();
            s.push_str(&out[1..]);
            s
        }
        Some(_) => out,
    }
}

/// A one-line text: control characters and line breaks become spaces.
fn one_line(text: &str) -> String {
    let s: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    s.trim().to_owned()
}

/// A beancount string literal.
fn bean_string(text: &str) -> String {
    let mut s = String::with_capacity(text.len() + 2);
    s.push('"');
    for c in one_line(text).chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// A journal description: `;` would start a comment, `|` splits payee
/// from note.
fn journal_text(text: &str) -> String {
    one_line(text).replace([';', '|'], ",")
}

/// The bank's balance an export asserts: (amount, the day it holds at the
/// end of).
pub(super) async fn asserted_balance(
    store: &dyn BankData,
    account: &Account,
) -> Result<Option<(Decimal, NaiveDate)>, ExportError> {
    let balances = store.list_balances(account.id).await?;
    let newest = balances
        .iter()
        .filter(|b| b.balance.currency == account.currency)
        .filter_map(|b| match b.balance.kind {
            BalanceKind::ClosingBooked => Some((b.balance.amount, b.balance.reference_date, b)),
            // Booked at the start of its day: the end of the day before.
            BalanceKind::OpeningBooked => b
                .balance
                .reference_date
                .pred_opt()
                .map(|d| (b.balance.amount, d, b)),
            BalanceKind::Available => None,
        })
        .max_by_key(|(_, date, b)| (*date, b.fetched_at));
    Ok(newest.map(|(amount, date, _)| (amount, date)))
}

/// Whether `query` picks every booked row of an account up to `date` (so an
/// opening balance makes its totals the bank's).
fn whole_up_to(query: &TxQuery, date: NaiveDate) -> bool {
    query.text.is_none()
        && query.category.is_none()
        && query.min_amount.is_none()
        && query.max_amount.is_none()
        && query.updated_since.is_none()
        && matches!(query.status, None | Some(TxStatus::Booked))
        && query.to.is_none_or(|to| to >= date)
}

pub(super) async fn write<S: Sink>(
    dialect: Dialect,
    store: &dyn BankData,
    query: &TxQuery,
    options: &ExportOptions,
    out: &mut Out<'_, S>,
) -> Result<(), ExportError> {
    let default_names = LedgerNames::default();
    let names = options.ledger_names.as_deref().unwrap_or(&default_names);
    let stamp = Utc::now().format("%Y-%m-%d %H:%M UTC");
    let _ = match dialect {
        Dialect::Beancount => writeln!(
            Text(&mut out.buf),
            ";; bankbridge export, {stamp}. Bank ids are each transaction's bank_id.\n"
        ),
        Dialect::Ledger => writeln!(
            Text(&mut out.buf),
            "; bankbridge export, {stamp}. Bank ids are each transaction's bank_id tag.\n"
        ),
    };
    let include_pending = options.include_pending || query.status == Some(TxStatus::Pending);
    let include_void = query.status == Some(TxStatus::Void);
    // Other accounts the rows use, opened at their first use.
    let mut others: BTreeMap<String, NaiveDate> = BTreeMap::new();
    for account in super::accounts_of(store, query).await? {
        let asset = names.asset(&account);
        let currency = account.currency.as_str().to_owned();
        let balance = match asserted_balance(store, &account).await? {
            Some((amount, date)) if whole_up_to(query, date) => Some((amount, date)),
            _ => None,
        };
        // Pending rows count in a tool's balance, not in the bank's booked one.
        let assert = !include_pending;
        let mut opened: Option<NaiveDate> = None;
        let mut sum = Decimal::ZERO;
        let mut balance_written = false;
        let mut rows = store.stream_transactions(TxQuery {
            account_id: Some(account.id),
            ..query.clone()
        });
        while let Some(tx) = rows.next().await {
            let tx = tx?;
            match tx.status {
                TxStatus::Void if !include_void => continue,
                TxStatus::Pending if !include_pending => continue,
                _ => {}
            }
            if opened.is_none() {
                let day = balance.map_or(tx.booking_date, |(_, d)| d.min(tx.booking_date));
                let day = day.pred_opt().unwrap_or(day);
                open_once(dialect, out, options, day, &asset);
                opened = Some(day);
            }
            if let Some((amount, date)) = balance
                && !balance_written
                && tx.booking_date > date
            {
                let day = opened.unwrap_or(date);
                opening_and_assertion(
                    dialect,
                    names,
                    &mut out.buf,
                    &asset,
                    day,
                    amount - sum,
                    assert.then_some((amount, date)),
                    &currency,
                );
                first_use(&mut others, &names.opening, day);
                balance_written = true;
            }
            if tx.status == TxStatus::Booked && tx.currency.as_str() == currency {
                sum += tx.amount;
            }
            let other = names.counter(&tx);
            first_use(&mut others, &other, tx.booking_date);
            transaction(dialect, &mut out.buf, &tx, &asset, &other);
            out.row_done(&tx).await?;
        }
        drop(rows);
        if let Some((amount, date)) = balance
            && !balance_written
        {
            let day = match opened {
                Some(d) => d,
                None => {
                    let d = date.pred_opt().unwrap_or(date);
                    open_once(dialect, out, options, d, &asset);
                    d
                }
            };
            opening_and_assertion(
                dialect,
                names,
                &mut out.buf,
                &asset,
                day,
                amount - sum,
                assert.then_some((amount, date)),
                &currency,
            );
            first_use(&mut others, &names.opening, day);
        }
    }
    for (name, first) in &others {
        open_once(
            dialect,
            out,
            options,
            first.pred_opt().unwrap_or(*first),
            name,
        );
    }
    Ok(())
}

/// Record that `account` is used on `day`: it is opened before its first use.
fn first_use(others: &mut BTreeMap<String, NaiveDate>, account: &str, day: NaiveDate) {
    match others.get_mut(account) {
        Some(first) => *first = (*first).min(day),
        None => {
            others.insert(account.to_owned(), day);
        }
    }
}

/// Open `account` unless an earlier export of the same books did
/// (`--since-last`): beancount refuses a second `open`.
fn open_once<S: Sink>(
    dialect: Dialect,
    out: &mut Out<'_, S>,
    options: &ExportOptions,
    day: NaiveDate,
    account: &str,
) {
    if options.already_opened.contains(account) {
        return;
    }
    open(dialect, &mut out.buf, day, account);
    out.stats.opened.push(account.to_owned());
}

fn open(dialect: Dialect, buf: &mut Vec<u8>, day: NaiveDate, account: &str) {
    let mut w = Text(buf);
    let _ = match dialect {
        Dialect::Beancount => writeln!(w, "{day} open {account}\n"),
        // hledger and ledger both read an account directive (no date).
        Dialect::Ledger => writeln!(w, "account {account}\n"),
    };
}

fn transaction(dialect: Dialect, buf: &mut Vec<u8>, tx: &Transaction, asset: &str, other: &str) {
    let flag = if tx.status == TxStatus::Booked {
        '*'
    } else {
        '!'
    };
    let payee = tx
        .counterparty_name
        .as_deref()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_default();
    let narration = if tx.label.trim().is_empty() {
        tx.remittance_info.as_deref().unwrap_or_default()
    } else {
        &tx.label
    };
    let amount = tx.amount;
    let negated = -tx.amount;
    let currency = tx.currency.as_str();
    let mut w = Text(buf);
    let _ = match dialect {
        Dialect::Beancount => {
            let _ = writeln!(
                w,
                "{} {flag} {} {}",
                tx.booking_date,
                bean_string(payee),
                bean_string(narration)
            );
            let _ = writeln!(w, "  bank_id: {}", bean_string(&tx.provider_id));
            if tx.status != TxStatus::Booked {
                let _ = writeln!(w, "  status: {}", bean_string(tx.status.as_str()));
            }
            let _ = writeln!(w, "  {asset}  {amount} {currency}");
            writeln!(w, "  {other}  {negated} {currency}\n")
        }
        Dialect::Ledger => {
            let description = match (payee.is_empty(), journal_text(narration)) {
                (true, n) => n,
                (false, n) => format!("{} | {n}", journal_text(payee)),
            };
            let _ = writeln!(w, "{} {flag} {description}", tx.booking_date);
            // A tag's value ends at a comma.
            let _ = writeln!(
                w,
                "    ; bank_id: {}",
                one_line(&tx.provider_id).replace(',', "%2C")
            );
            if tx.status != TxStatus::Booked {
                let _ = writeln!(w, "    ; status: {}", tx.status.as_str());
            }
            let _ = writeln!(w, "    {asset}  {amount} {currency}");
            writeln!(w, "    {other}  {negated} {currency}\n")
        }
    };
}

/// The opening balance (dated `day`) and the bank's balance asserted at the
/// end of its date (when `asserted`).
#[allow(clippy::too_many_arguments)]
fn opening_and_assertion(
    dialect: Dialect,
    names: &LedgerNames,
    buf: &mut Vec<u8>,
    asset: &str,
    day: NaiveDate,
    opening: Decimal,
    asserted: Option<(Decimal, NaiveDate)>,
    currency: &str,
) {
    let opening_account = &names.opening;
    let negated = -opening;
    let mut w = Text(buf);
    match dialect {
        Dialect::Beancount => {
            let _ = writeln!(w, "{day} * \"Opening balance\"");
            let _ = writeln!(w, "  {asset}  {opening} {currency}");
            let _ = writeln!(w, "  {opening_account}  {negated} {currency}\n");
            if let Some((balance, date)) = asserted {
                // A beancount balance holds at the start of its day.
                let next = date.checked_add_days(Days::new(1)).unwrap_or(date);
                let _ = writeln!(w, "{next} balance {asset}  {balance} {currency}\n");
            }
        }
        Dialect::Ledger => {
            let _ = writeln!(w, "{day} * Opening balance");
            let _ = writeln!(w, "    {asset}  {opening} {currency}");
            let _ = writeln!(w, "    {opening_account}  {negated} {currency}\n");
            if let Some((balance, date)) = asserted {
                let _ = writeln!(w, "{date} * Balance reported by the bank");
                let _ = writeln!(w, "    {asset}  0 {currency} = {balance} {currency}\n");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_a_mapping_file_are_checked() {
        let names = LedgerNames::parse(
            r#"
            bank = "Assets:Banks"
            [accounts]
            "BG80 BNBG 9661 1020 3456 78" = "Assets:Fibank:Current"
            [categories]
            groceries = "Expenses:Food:Groceries"
            "#,
        )
        .unwrap();
        assert_eq!(
            names
                .accounts
                .get("BG80BNBG96611020345678")
                .map(String::as_str),
            Some("Assets:Fibank:Current")
        );
        assert_eq!(names.bank, "Assets:Banks");
        let bad = LedgerNames::parse("[categories]\nfood = \"Expenses:food\"").unwrap_err();
        assert!(bad.contains("categories.\"food\""), "{bad}");
        let bad = LedgerNames::parse("expenses = \"Spending:Food\"").unwrap_err();
        assert!(bad.contains("must start with one of"), "{bad}");
        assert!(LedgerNames::parse("typo = 1").is_err());
    }

    #[test]
    fn texts_become_valid_names_and_strings() {
        assert_eq!(component("Café au lait, 2×"), "Caf-au-lait-2");
        assert_eq!(component("groceries"), "Groceries");
        assert_eq!(component("ÄÖÜ"), "X");
        assert_eq!(bean_string("say \"hi\"\\\nnow"), r#""say \"hi\"\\ now""#);
        assert_eq!(journal_text("a; b | c"), "a, b , c");
    }
}
