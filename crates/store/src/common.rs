//! Helpers shared by the SQLite and PostgreSQL backends: input checks done
//! before anything is written, the text-search column, and the SQL of
//! [`TxQuery`] filters.

use std::collections::HashSet;

use bankbridge_core::{Currency, Iban};
use chrono::{DateTime, NaiveDate, SubsecRound, Utc};
use rust_decimal::Decimal;

use crate::{Result, StoreError, TxQuery, TxWrite, WindowCommit};

/// Instants are kept to the microsecond on both backends (PostgreSQL's
/// precision), so a value reads back equal to what was written.
pub(crate) fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

pub(crate) fn opt_micros(t: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    t.map(micros)
}

/// Field separator inside `search_text`, so a search term never spans two fields.
const SEARCH_SEPARATOR: char = '\u{1f}';

/// The lower-cased (full Unicode, not only ASCII) searchable text of a row.
pub(crate) fn search_text(w: &TxWrite) -> String {
    let mut out = String::with_capacity(
        w.label.len()
            + w.raw_label.len()
            + w.counterparty_name.as_deref().map_or(0, str::len)
            + w.remittance_info.as_deref().map_or(0, str::len)
            + 3,
    );
    let parts = [
        Some(w.label.as_str()),
        Some(w.raw_label.as_str()),
        w.counterparty_name.as_deref(),
        w.remittance_info.as_deref(),
    ];
    for (i, part) in parts.into_iter().enumerate() {
        if i > 0 {
            out.push(SEARCH_SEPARATOR);
        }
        if let Some(p) = part {
            if p.is_ascii() {
                out.extend(p.chars().map(|c| c.to_ascii_lowercase()));
            } else {
                out.push_str(&p.to_lowercase());
            }
        }
    }
    out
}

/// A `LIKE … ESCAPE '\'` pattern matching `text` as a case-insensitive
/// substring of `search_text`.
pub(crate) fn like_pattern(text: &str) -> String {
    let lower = text.to_lowercase();
    let mut out = String::with_capacity(lower.len() + 2);
    out.push('%');
    for c in lower.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// A transaction to write, checked and with its derived columns computed.
pub(crate) struct PreparedTx<'a> {
    pub w: &'a TxWrite,
    pub currency: Currency,
    pub original_currency: Option<Currency>,
    pub search_text: String,
}

impl PreparedTx<'_> {
    pub fn original_currency_str(&self) -> Option<&str> {
        self.original_currency.as_ref().map(Currency::as_str)
    }
}

fn invalid(what: String) -> StoreError {
    StoreError::Conflict(what)
}

pub(crate) fn prepare_tx(account_id: i64, w: &TxWrite) -> Result<PreparedTx<'_>> {
    let currency: Currency = w.currency.parse().map_err(|_| {
        invalid(format!(
            "transaction {:?} of account {account_id}: currency {:?} is not an ISO 4217 code",
            w.provider_id, w.currency
        ))
    })?;
    let original_currency = match &w.original_currency {
        Some(c) => Some(c.parse::<Currency>().map_err(|_| {
            invalid(format!(
                "transaction {:?} of account {account_id}: original currency {c:?} is not an ISO 4217 code",
                w.provider_id
            ))
        })?),
        None => None,
    };
    if w.provider_id.is_empty() {
        return Err(invalid(format!(
            "a transaction of account {account_id} has an empty provider id"
        )));
    }
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&w.raw) {
        return Err(invalid(format!(
            "transaction {:?} of account {account_id}: raw is not valid JSON ({e})",
            w.provider_id
        )));
    }
    Ok(PreparedTx {
        w,
        currency,
        original_currency,
        search_text: search_text(w),
    })
}

/// Everything about a window that can be checked without the database, so a
/// bad window is refused before a transaction is even opened.
pub(crate) struct PreparedCommit<'a> {
    pub inserts: Vec<PreparedTx<'a>>,
    pub updates: Vec<(i64, PreparedTx<'a>)>,
    pub voids: Vec<i64>,
    pub touch: Vec<i64>,
    pub now: DateTime<Utc>,
}

pub(crate) fn prepare_commit(c: &WindowCommit) -> Result<PreparedCommit<'_>> {
    let mut seen = HashSet::with_capacity(c.inserts.len());
    for w in &c.inserts {
        if !seen.insert(w.provider_id.as_str()) {
            return Err(StoreError::Conflict(format!(
                "the window for account {} inserts provider id {:?} twice",
                c.account_id, w.provider_id
            )));
        }
    }
    let mut seen_ids = HashSet::with_capacity(c.updates.len());
    for (id, _) in &c.updates {
        if !seen_ids.insert(*id) {
            return Err(StoreError::Conflict(format!(
                "the window for account {} updates transaction {id} twice",
                c.account_id
            )));
        }
    }
    let inserts = c
        .inserts
        .iter()
        .map(|w| prepare_tx(c.account_id, w))
        .collect::<Result<Vec<_>>>()?;
    let updates = c
        .updates
        .iter()
        .map(|(id, w)| prepare_tx(c.account_id, w).map(|p| (*id, p)))
        .collect::<Result<Vec<_>>>()?;
    Ok(PreparedCommit {
        inserts,
        updates,
        voids: dedup(&c.voids),
        touch: dedup(&c.touch),
        now: micros(c.now),
    })
}

pub(crate) fn dedup(ids: &[i64]) -> Vec<i64> {
    let mut v = ids.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

/// Largest power of two not above `n` (n > 0), capped at `cap` (a power of two).
pub(crate) fn batch_len(n: usize, cap: usize) -> usize {
    if n >= cap {
        cap
    } else {
        1 << (usize::BITS - 1 - n.leading_zeros())
    }
}

// ---------------------------------------------------------------- decoding

pub(crate) fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}

pub(crate) fn json(text: &str, what: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| corrupt(format!("{what} is not valid JSON: {e}")))
}

pub(crate) fn opt_decimal(s: Option<&str>) -> Result<Option<Decimal>> {
    s.map(crate::codec::decimal).transpose()
}

pub(crate) fn opt_currency(s: Option<&str>) -> Result<Option<Currency>> {
    s.map(crate::codec::currency).transpose()
}

pub(crate) fn opt_iban(s: Option<&str>) -> Result<Option<Iban>> {
    s.map(|s| Iban::parse(s).map_err(|e| corrupt(format!("account IBAN: {e}"))))
        .transpose()
}

pub(crate) fn tx_status(s: &str) -> Result<bankbridge_core::TxStatus> {
    bankbridge_core::TxStatus::parse(s).ok_or_else(|| corrupt(format!("transaction status {s:?}")))
}

pub(crate) fn streak(v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| corrupt(format!("checkpoint empty_streak {v}")))
}

/// True when a database error is a unique-constraint violation.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

pub(crate) fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_foreign_key_violation())
}

pub(crate) fn encode_err(e: sqlx::error::BoxDynError) -> StoreError {
    StoreError::Database(sqlx::Error::Encode(e))
}

// ---------------------------------------------------------------- queries

/// Columns of a transaction row, in the order the decoders read them.
/// `{raw}` is the raw column expression (PostgreSQL casts JSON to text).
pub(crate) fn tx_columns(raw: &str) -> String {
    format!(
        "id, connection_id, account_id, provider_id, pending_provider_id, fingerprint, status, \
         booking_date, value_date, transaction_date, amount, currency, original_amount, \
         original_currency, raw_label, label, counterparty_name, counterparty_iban, \
         remittance_info, bank_code, running_balance, {raw}, first_seen, last_seen, updated_at"
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// A bound value of a [`TxQuery`].
pub(crate) enum Arg {
    I64(i64),
    Date(NaiveDate),
    Text(String),
    Decimal(Decimal),
    Time(DateTime<Utc>),
}

/// `SELECT … FROM transactions WHERE … ORDER BY booking_date, id [LIMIT n]`.
pub(crate) fn tx_query_sql(q: &TxQuery, dialect: Dialect, columns: &str) -> (String, Vec<Arg>) {
    let mut args: Vec<Arg> = Vec::new();
    let mut conds: Vec<String> = Vec::new();
    let ph = |args: &mut Vec<Arg>, a: Arg| -> String {
        args.push(a);
        match dialect {
            Dialect::Sqlite => format!("?{}", args.len()),
            Dialect::Postgres => format!("${}", args.len()),
        }
    };
    if let Some(a) = q.account_id {
        conds.push(format!("account_id = {}", ph(&mut args, Arg::I64(a))));
    }
    if let Some(c) = q.connection_id {
        conds.push(format!("connection_id = {}", ph(&mut args, Arg::I64(c))));
    }
    if let Some(d) = q.from {
        conds.push(format!("booking_date >= {}", ph(&mut args, Arg::Date(d))));
    }
    if let Some(d) = q.to {
        conds.push(format!("booking_date <= {}", ph(&mut args, Arg::Date(d))));
    }
    for (bound, op) in [(q.min_amount, ">="), (q.max_amount, "<=")] {
        let Some(v) = bound else { continue };
        match dialect {
            // Amounts are exact decimal strings; compared as REAL here, which
            // is exact for amounts of up to 15 significant digits.
            Dialect::Sqlite => {
                let p = ph(&mut args, Arg::Text(v.to_string()));
                conds.push(format!("CAST(amount AS REAL) {op} CAST({p} AS REAL)"));
            }
            Dialect::Postgres => {
                let p = ph(&mut args, Arg::Decimal(v));
                conds.push(format!("amount {op} {p}"));
            }
        }
    }
    if let Some(t) = q.text.as_deref().filter(|t| !t.is_empty()) {
        let p = ph(&mut args, Arg::Text(like_pattern(t)));
        conds.push(format!("search_text LIKE {p} ESCAPE '\\'"));
    }
    if let Some(s) = q.status {
        conds.push(format!(
            "status = {}",
            ph(&mut args, Arg::Text(s.as_str().to_owned()))
        ));
    }
    if let Some(t) = q.updated_since {
        conds.push(format!(
            "updated_at >= {}",
            ph(&mut args, Arg::Time(micros(t)))
        ));
    }
    if let Some((d, id)) = q.after {
        let pd = ph(&mut args, Arg::Date(d));
        let pi = ph(&mut args, Arg::I64(id));
        conds.push(format!("(booking_date, id) > ({pd}, {pi})"));
    }
    let mut sql = format!("SELECT {columns} FROM transactions");
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    sql.push_str(" ORDER BY booking_date, id");
    if let Some(l) = q.limit {
        let p = ph(&mut args, Arg::I64(i64::from(l)));
        sql.push_str(&format!(" LIMIT {p}"));
    }
    (sql, args)
}

/// A migration failure, with the likely cause when the database is newer than this build.
pub(crate) fn migrate_error(location: &str, e: &sqlx::migrate::MigrateError) -> StoreError {
    use sqlx::migrate::MigrateError;
    let hint = match e {
        MigrateError::VersionMissing(_) => {
            " (the database was written by a newer bankbridge: upgrade bankbridge to open it)"
        }
        MigrateError::VersionMismatch(_) => {
            " (an applied migration differs from this build's: the database was written by another build)"
        }
        _ => "",
    };
    StoreError::Migrate(format!("{location}: {e}{hint}"))
}

/// Hide the password of a database URL before it appears in an error.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_pattern_escapes_wildcards_and_lowercases() {
        assert_eq!(like_pattern("50%_A\\"), "%50\\%\\_a\\\\%");
        assert_eq!(like_pattern("ПЛАЩАНЕ"), "%плащане%");
    }

    #[test]
    fn redact_url_hides_password_only() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("postgres://h/db?x=@"), "postgres://h/db?x=@");
    }

    #[test]
    fn batch_len_is_a_power_of_two() {
        assert_eq!(batch_len(1500, 512), 512);
        assert_eq!(batch_len(476, 512), 256);
        assert_eq!(batch_len(1, 512), 1);
        assert_eq!(batch_len(3, 512), 2);
    }
}
