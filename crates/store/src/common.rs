//! Helpers shared by the SQLite and PostgreSQL backends: input checks done
//! before anything is written, the text-search column, the SQL of
//! [`TxQuery`] filters, and the SQL and checks of the card service's tables.

use std::collections::HashSet;

use bankbridge_core::{Currency, Iban};
use chrono::{DateTime, NaiveDate, SubsecRound, Utc};
use rust_decimal::Decimal;

use crate::{
    Card, CardAuditEntry, CardAuditQuery, CardStatus, CardUpdate, ConnectionUpdate, Institution,
    NewCard, NewInstitution, Result, StoreError, SyncOutcome, TxQuery, TxWrite, WindowCommit,
};

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

/// A stored `last_sync_status`.
pub(crate) fn sync_outcome(text: String) -> Result<SyncOutcome> {
    SyncOutcome::parse(&text)
        .ok_or_else(|| corrupt(format!("a connection has last_sync_status {text:?}")))
}

/// The new settings of `update` as JSON text, if it carries some.
pub(crate) fn settings_text(update: &ConnectionUpdate) -> Result<Option<String>> {
    update
        .settings
        .as_ref()
        .map(|v| {
            serde_json::to_string(v).map_err(|e| {
                StoreError::Conflict(format!("connection settings cannot be serialised: {e}"))
            })
        })
        .transpose()
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

/// Rows `ids` named by a window commit are not rows of the account.
pub(crate) fn not_in_account(what: &str, ids: &[i64], account_id: i64) -> StoreError {
    StoreError::NotFound(format!("{what} {ids:?} of account {account_id}"))
}

pub(crate) fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}

pub(crate) fn json(text: &str, what: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| corrupt(format!("{what} is not valid JSON: {e}")))
}

/// Stored JSON kept as text (checked, not parsed into a tree).
pub(crate) fn raw_json(text: String, what: &str) -> Result<bankbridge_core::RawJson> {
    bankbridge_core::RawJson::from_string(text)
        .map_err(|e| corrupt(format!("{what} is not valid JSON: {e}")))
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
         remittance_info, bank_code, running_balance, {raw}, first_seen, last_seen, updated_at, category"
    )
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// `$1` category, `$2` updated_at, `$3` id: sets a row's category unless it
/// already is that one (NULL counting as a value).
pub(crate) fn category_update(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => {
            "UPDATE transactions SET category = $1, updated_at = $2 WHERE id = $3 AND category IS NOT $1 AND category_manual = 0"
        }
        Dialect::Postgres => {
            "UPDATE transactions SET category = $1, updated_at = $2 WHERE id = $3 AND category IS DISTINCT FROM $1 AND NOT category_manual"
        }
    }
}

/// A bound value of a [`TxQuery`].
pub(crate) enum Arg {
    I64(i64),
    Date(NaiveDate),
    Text(String),
    Decimal(Decimal),
    Time(DateTime<Utc>),
    I32(i32),
    OptText(Option<String>),
    Bytes(Vec<u8>),
}

/// `SELECT … FROM transactions WHERE … ORDER BY booking_date, id [LIMIT n]`
/// (both descending for [`TxQuery::newest_first`]).
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
    if let Some(c) = q.category.as_deref() {
        conds.push(format!(
            "category = {}",
            ph(&mut args, Arg::Text(c.to_owned()))
        ));
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
        let op = if q.newest_first { "<" } else { ">" };
        conds.push(format!("(booking_date, id) {op} ({pd}, {pi})"));
    }
    let mut sql = format!("SELECT {columns} FROM transactions");
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    sql.push_str(if q.newest_first {
        " ORDER BY booking_date DESC, id DESC"
    } else {
        " ORDER BY booking_date, id"
    });
    if let Some(l) = q.limit {
        let p = ph(&mut args, Arg::I64(i64::from(l)));
        sql.push_str(&format!(" LIMIT {p}"));
    }
    (sql, args)
}

/// The footprint a row of [`footprint_sql`] gives.
pub(crate) fn footprint(row: Option<(i64, i64, i64)>) -> Option<crate::ConnectionFootprint> {
    row.map(
        |(accounts, transactions, documents)| crate::ConnectionFootprint {
            accounts: accounts as u64,
            transactions: transactions as u64,
            documents: documents as u64,
        },
    )
}

/// Counts of what a connection holds: accounts, transactions, documents.
pub(crate) fn footprint_sql(dialect: Dialect) -> String {
    let id = match dialect {
        Dialect::Sqlite => "?1",
        Dialect::Postgres => "$1",
    };
    format!(
        "SELECT (SELECT COUNT(*) FROM accounts WHERE connection_id = c.id), \
                (SELECT COUNT(*) FROM transactions t JOIN accounts a ON a.id = t.account_id \
                  WHERE a.connection_id = c.id), \
                (SELECT COUNT(*) FROM documents WHERE connection_id = c.id) \
         FROM connections c WHERE c.id = {id}"
    )
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

// ---------------------------------------------------------------- cards
//
// The card service's SQL is the same text on both backends: sqlx's SQLite
// driver binds `$N` parameters by their number, as PostgreSQL does.

macro_rules! institution_columns {
    () => {
        "id, name, country, created_at"
    };
}

macro_rules! card_columns {
    () => {
        "id, institution_id, label, account_reference, reader, pan_last4, psn, records_digest, application, \
         status, status_reason, pin_refused, pin_sealed, min_pin_tries, last_used_at, created_at, updated_at, \
         pin_tries_left, host"
    };
}

macro_rules! card_audit_columns {
    () => {
        "id, at, token_name, card_id, institution_id, mode, outcome, detail, atc, duration_ms"
    };
}

pub(crate) const INSTITUTION_INSERT: &str = concat!(
    "INSERT INTO institutions (id, name, country, created_at) VALUES ($1, $2, $3, $4) RETURNING ",
    institution_columns!()
);
pub(crate) const INSTITUTION_LIST: &str = concat!(
    "SELECT ",
    institution_columns!(),
    " FROM institutions ORDER BY name, id"
);
pub(crate) const INSTITUTION_GET: &str = concat!(
    "SELECT ",
    institution_columns!(),
    " FROM institutions WHERE id = $1"
);
pub(crate) const INSTITUTION_EXISTS: &str = "SELECT id FROM institutions WHERE id = $1";
pub(crate) const INSTITUTION_CARD_IDS: &str =
    "SELECT id FROM cards WHERE institution_id = $1 ORDER BY id";
pub(crate) const INSTITUTION_DELETE: &str = "DELETE FROM institutions WHERE id = $1";

pub(crate) const CARD_INSERT: &str = concat!(
    "INSERT INTO cards (id, institution_id, label, account_reference, reader, pan_last4, psn, \
     records_digest, application, status, status_reason, pin_refused, pin_sealed, min_pin_tries, \
     last_used_at, created_at, updated_at, host) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'active', NULL, FALSE, $10, $11, NULL, $12, $12, $13) \
     RETURNING ",
    card_columns!()
);
pub(crate) const CARD_LIST: &str =
    concat!("SELECT ", card_columns!(), " FROM cards ORDER BY label, id");
pub(crate) const CARD_LIST_OF_INSTITUTION: &str = concat!(
    "SELECT ",
    card_columns!(),
    " FROM cards WHERE institution_id = $1 ORDER BY label, id"
);
pub(crate) const CARD_GET: &str = concat!("SELECT ", card_columns!(), " FROM cards WHERE id = $1");
/// $1 host ('' for the server's own readers), $2 reader.
pub(crate) const CARD_BY_READER: &str = concat!(
    "SELECT ",
    card_columns!(),
    " FROM cards WHERE host = $1 AND reader = $2"
);
pub(crate) const CARD_EXISTS: &str = "SELECT id FROM cards WHERE id = $1";
/// (id, label) of the card registered in a reader: $1 host ('' for the
/// server's own readers), $2 reader.
pub(crate) const CARD_IN_READER: &str =
    "SELECT id, label FROM cards WHERE host = $1 AND reader = $2";
/// $1 status, $2 reason, $3 now, $4 id: only from `active`.
pub(crate) const CARD_SET_STATUS: &str = "UPDATE cards SET status = $1, status_reason = $2, updated_at = $3 \
     WHERE id = $4 AND status = 'active'";
/// $1 blocked, $2 reason, $3 now, $4 id: out of use whatever the status was
/// (a blocked card stays blocked), until a new PIN is set. Idempotent.
pub(crate) const CARD_MARK_PIN_REFUSED: &str = "UPDATE cards SET pin_refused = TRUE, \
     status = CASE WHEN $1 OR status = 'blocked' THEN 'blocked' ELSE 'disabled' END, \
     status_reason = $2, updated_at = $3 WHERE id = $4";
pub(crate) const CARD_PIN_REFUSED: &str = "SELECT pin_refused FROM cards WHERE id = $1";
/// $1 at, $2 id. `last_used_at` never moves back (concurrent uses may finish out of order).
pub(crate) const CARD_TOUCH: &str = "UPDATE cards SET last_used_at = CASE \
     WHEN last_used_at IS NULL OR last_used_at < $1 THEN $1 ELSE last_used_at END, \
     pin_tries_left = CASE WHEN last_used_at IS NULL OR last_used_at <= $1 THEN $3 ELSE pin_tries_left END \
     WHERE id = $2";
pub(crate) const CARD_DELETE: &str = "DELETE FROM cards WHERE id = $1";

pub(crate) const CARD_AUDIT_INSERT: &str = "INSERT INTO card_audit (at, token_name, card_id, institution_id, \
     mode, outcome, detail, atc, duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id";

#[derive(sqlx::FromRow)]
pub(crate) struct InstitutionRow {
    id: String,
    name: String,
    country: Option<String>,
    created_at: DateTime<Utc>,
}

impl From<InstitutionRow> for Institution {
    fn from(r: InstitutionRow) -> Self {
        Institution {
            id: r.id,
            name: r.name,
            country: r.country,
            created_at: r.created_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct CardRow {
    id: String,
    institution_id: String,
    label: String,
    account_reference: String,
    reader: String,
    pan_last4: Option<String>,
    psn: Option<String>,
    records_digest: Option<String>,
    application: Option<String>,
    status: String,
    status_reason: Option<String>,
    pin_refused: bool,
    pin_sealed: Vec<u8>,
    min_pin_tries: i32,
    last_used_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    pin_tries_left: Option<i32>,
    host: String,
}

impl TryFrom<CardRow> for Card {
    type Error = StoreError;

    fn try_from(r: CardRow) -> Result<Self> {
        let status = CardStatus::parse(&r.status)
            .ok_or_else(|| corrupt(format!("card {:?} has status {:?}", r.id, r.status)))?;
        let min_pin_tries = u8::try_from(r.min_pin_tries).map_err(|_| {
            corrupt(format!(
                "card {:?} has min_pin_tries {}",
                r.id, r.min_pin_tries
            ))
        })?;
        Ok(Card {
            id: r.id,
            institution_id: r.institution_id,
            label: r.label,
            account_reference: r.account_reference,
            host: (!r.host.is_empty()).then_some(r.host),
            reader: r.reader,
            pan_last4: r.pan_last4,
            psn: r.psn,
            records_digest: r.records_digest,
            application: r.application,
            status,
            status_reason: r.status_reason,
            pin_refused: r.pin_refused,
            pin_sealed: r.pin_sealed,
            min_pin_tries,
            last_used_at: r.last_used_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
            pin_tries_left: r.pin_tries_left.and_then(|n| u8::try_from(n).ok()),
        })
    }
}

pub(crate) fn cards(rows: Vec<CardRow>) -> Result<Vec<Card>> {
    rows.into_iter().map(Card::try_from).collect()
}

#[derive(sqlx::FromRow)]
pub(crate) struct CardAuditRow {
    id: i64,
    at: DateTime<Utc>,
    token_name: String,
    card_id: String,
    institution_id: String,
    mode: String,
    outcome: String,
    detail: Option<String>,
    atc: Option<i64>,
    duration_ms: i64,
}

impl TryFrom<CardAuditRow> for CardAuditEntry {
    type Error = StoreError;

    fn try_from(r: CardAuditRow) -> Result<Self> {
        let atc = r
            .atc
            .map(|v| {
                u32::try_from(v)
                    .map_err(|_| corrupt(format!("card audit entry {} has atc {v}", r.id)))
            })
            .transpose()?;
        let duration_ms = u64::try_from(r.duration_ms).map_err(|_| {
            corrupt(format!(
                "card audit entry {} has duration_ms {}",
                r.id, r.duration_ms
            ))
        })?;
        Ok(CardAuditEntry {
            id: r.id,
            at: r.at,
            token_name: r.token_name,
            card_id: r.card_id,
            institution_id: r.institution_id,
            mode: r.mode,
            outcome: r.outcome,
            detail: r.detail,
            atc,
            duration_ms,
        })
    }
}

// ------------------------------------------------ card checks, before any write

fn blank(s: &str) -> bool {
    s.trim().is_empty()
}

pub(crate) fn check_new_institution(n: &NewInstitution) -> Result<()> {
    if blank(&n.id) {
        return Err(invalid(format!(
            "the institution named {:?} has an empty id",
            n.name
        )));
    }
    if blank(&n.name) {
        return Err(invalid(format!("institution {:?} has an empty name", n.id)));
    }
    if let Some(c) = &n.country
        && !(c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()))
    {
        return Err(invalid(format!(
            "institution {:?}: country {c:?} is not an ISO 3166-1 alpha-2 code (two capital letters, e.g. \"BG\")",
            n.id
        )));
    }
    Ok(())
}

fn check_label(card_id: &str, label: &str) -> Result<()> {
    if blank(label) {
        return Err(invalid(format!("card {card_id:?}: the label is empty")));
    }
    Ok(())
}

fn check_pin_sealed(card_id: &str, pin_sealed: &[u8]) -> Result<()> {
    if pin_sealed.is_empty() {
        return Err(invalid(format!(
            "card {card_id:?}: the sealed PIN is empty (expected the AEAD-sealed PIN)"
        )));
    }
    Ok(())
}

pub(crate) fn check_new_card(c: &NewCard) -> Result<()> {
    if blank(&c.id) {
        return Err(invalid(format!(
            "the card for reader {:?} has an empty id",
            c.reader
        )));
    }
    if blank(&c.institution_id) {
        return Err(invalid(format!(
            "card {:?}: the institution id is empty",
            c.id
        )));
    }
    if blank(&c.reader) {
        return Err(invalid(format!("card {:?}: the reader is empty", c.id)));
    }
    if c.host.as_deref().is_some_and(blank) {
        return Err(invalid(format!("card {:?}: the card host is empty", c.id)));
    }
    check_label(&c.id, &c.label)?;
    if let Some(last4) = &c.pan_last4
        && !(last4.len() == 4 && last4.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(invalid(format!(
            "card {:?}: pan_last4 {last4:?} is not the last four digits of a card number",
            c.id
        )));
    }
    if let Some(d) = &c.records_digest
        && !(d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(invalid(format!(
            "card {:?}: records_digest {d:?} is not a SHA-256 in hex",
            c.id
        )));
    }
    if c.pan_last4.is_none() && c.records_digest.is_none() {
        return Err(invalid(format!(
            "card {:?}: neither a card number nor a records digest identifies it",
            c.id
        )));
    }
    if let Some(psn) = &c.psn
        && !(psn.len() == 2 && psn.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(invalid(format!(
            "card {:?}: PAN sequence number {psn:?} is not two hex digits",
            c.id
        )));
    }
    check_pin_sealed(&c.id, &c.pin_sealed)
}

pub(crate) fn check_card_update(id: &str, u: &CardUpdate) -> Result<()> {
    if let Some(label) = &u.label {
        check_label(id, label)?;
    }
    if let Some(pin) = &u.pin_sealed {
        check_pin_sealed(id, pin)?;
    }
    Ok(())
}

/// The (atc, duration_ms) columns of an audit entry.
pub(crate) fn audit_numbers(e: &CardAuditEntry) -> Result<(Option<i64>, i64)> {
    let duration = i64::try_from(e.duration_ms).map_err(|_| {
        invalid(format!(
            "card {:?} audit entry: duration_ms {} is out of range",
            e.card_id, e.duration_ms
        ))
    })?;
    Ok((e.atc.map(i64::from), duration))
}

// ------------------------------------------------ card errors

/// True when `e` violates the uniqueness of `table.column`: PostgreSQL names
/// its default constraint (`{table}_{column}_key`, `{table}_pkey`), SQLite
/// names the column in its message (`UNIQUE constraint failed: cards.reader`).
pub(crate) fn unique_violation_on(e: &sqlx::Error, table: &str, column: &str) -> bool {
    let sqlx::Error::Database(d) = e else {
        return false;
    };
    if !d.is_unique_violation() {
        return false;
    }
    if let Some(c) = d.constraint() {
        return c == format!("{table}_{column}_key")
            || (column == "id" && c == format!("{table}_pkey"));
    }
    let wanted = format!("{table}.{column}");
    d.message()
        .rsplit_once(": ")
        .is_some_and(|(_, cols)| cols.split(", ").any(|c| c == wanted))
}

pub(crate) fn institution_insert_error(e: sqlx::Error, n: &NewInstitution) -> StoreError {
    if unique_violation_on(&e, "institutions", "name") {
        StoreError::Conflict(format!("an institution named {:?} already exists", n.name))
    } else if unique_violation_on(&e, "institutions", "id") {
        StoreError::Conflict(format!("an institution with id {:?} already exists", n.id))
    } else if is_unique_violation(&e) {
        StoreError::Conflict(format!(
            "an institution with id {:?} or name {:?} already exists",
            n.id, n.name
        ))
    } else {
        e.into()
    }
}

pub(crate) fn institution_not_found(id: &str) -> StoreError {
    StoreError::NotFound(format!("institution {id:?}"))
}

/// Refusal to delete an institution that still has cards (`card_ids`, maybe
/// empty when only the database's foreign key noticed).
pub(crate) fn institution_has_cards(id: &str, card_ids: &[String]) -> StoreError {
    const SHOWN: usize = 5;
    let list = match card_ids.len() {
        0 => String::new(),
        n if n <= SHOWN => format!(" ({})", card_ids.join(", ")),
        n => format!(
            " ({}, and {} more)",
            card_ids[..SHOWN].join(", "),
            n - SHOWN
        ),
    };
    let count = match card_ids.len() {
        0 => "cards".to_owned(),
        1 => "1 card".to_owned(),
        n => format!("{n} cards"),
    };
    StoreError::Conflict(format!(
        "institution {id:?} still has {count}{list}: delete its cards first"
    ))
}

pub(crate) fn reader_taken(
    host: Option<&str>,
    reader: &str,
    holder: Option<(&str, &str)>,
) -> StoreError {
    let by = match holder {
        Some((id, label)) => format!("card {id:?} ({label:?})"),
        None => "another card".to_owned(),
    };
    let on = host.map_or_else(String::new, |h| format!(" of card host {h:?}"));
    StoreError::Conflict(format!(
        "reader {reader:?}{on} already holds {by}: one card per reader (delete that card first, or choose another reader)"
    ))
}

pub(crate) fn card_exists(id: &str) -> StoreError {
    StoreError::Conflict(format!("a card with id {id:?} already exists"))
}

pub(crate) fn card_insert_error(e: sqlx::Error, c: &NewCard) -> StoreError {
    if unique_violation_on(&e, "cards", "reader") {
        reader_taken(c.host.as_deref(), &c.reader, None)
    } else if unique_violation_on(&e, "cards", "id") {
        card_exists(&c.id)
    } else if is_unique_violation(&e) {
        StoreError::Conflict(format!(
            "card {:?} for reader {:?} conflicts with a registered card",
            c.id, c.reader
        ))
    } else if is_foreign_key_violation(&e) {
        institution_not_found(&c.institution_id)
    } else {
        e.into()
    }
}

pub(crate) fn check_set_status(id: &str, status: CardStatus) -> Result<()> {
    if status == CardStatus::Active {
        return Err(invalid(format!(
            "card {id:?}: set_card_status only takes an active card out of use (disabled or blocked); \
             re-activate a card with update_card"
        )));
    }
    Ok(())
}

// ------------------------------------------------ card dynamic SQL

/// `UPDATE cards SET … , updated_at = now WHERE id = … RETURNING …`: only the
/// fields the update carries.
pub(crate) fn card_update_sql(id: &str, u: &CardUpdate, now: DateTime<Utc>) -> (String, Vec<Arg>) {
    let mut args: Vec<Arg> = Vec::new();
    let mut sets: Vec<String> = Vec::new();
    let mut set = |column: &str, a: Arg| {
        args.push(a);
        sets.push(format!("{column} = ${}", args.len()));
    };
    if let Some(v) = &u.label {
        set("label", Arg::Text(v.clone()));
    }
    if let Some(v) = &u.account_reference {
        set("account_reference", Arg::Text(v.clone()));
    }
    if let Some(v) = &u.pin_sealed {
        set("pin_sealed", Arg::Bytes(v.clone()));
    }
    if let Some(v) = u.min_pin_tries {
        set("min_pin_tries", Arg::I32(i32::from(v)));
    }
    if let Some((status, reason)) = &u.status {
        set("status", Arg::Text(status.as_str().to_owned()));
        set("status_reason", Arg::OptText(reason.clone()));
    }
    set("updated_at", Arg::Time(micros(now)));
    if u.pin_sealed.is_some() {
        sets.push("pin_refused = FALSE".to_owned());
    }
    args.push(Arg::Text(id.to_owned()));
    // A card that may have refused its PIN comes back only with a new one.
    let guard = if activates_without_pin(u) {
        " AND NOT pin_refused"
    } else {
        ""
    };
    let sql = format!(
        "UPDATE cards SET {} WHERE id = ${}{guard} RETURNING {}",
        sets.join(", "),
        args.len(),
        card_columns!()
    );
    (sql, args)
}

/// Whether `u` enables a card again without giving it a new PIN.
pub(crate) fn activates_without_pin(u: &CardUpdate) -> bool {
    matches!(u.status, Some((CardStatus::Active, _))) && u.pin_sealed.is_none()
}

/// The error for enabling a card that may have refused its PIN, without a new PIN.
pub(crate) fn pin_refused_needs_new_pin(id: &str) -> StoreError {
    StoreError::Conflict(format!(
        "card {id} was taken out of use because it may have refused its stored PIN; \
         set the right PIN (\"pin\") to enable it again"
    ))
}

/// `SELECT … FROM card_audit WHERE … ORDER BY id DESC LIMIT n`.
pub(crate) fn card_audit_query_sql(q: &CardAuditQuery) -> (String, Vec<Arg>) {
    let mut args: Vec<Arg> = Vec::new();
    let mut conds: Vec<String> = Vec::new();
    if let Some(card) = &q.card_id {
        args.push(Arg::Text(card.clone()));
        conds.push(format!("card_id = ${}", args.len()));
    }
    if let Some(before) = q.before_id {
        args.push(Arg::I64(before));
        conds.push(format!("id < ${}", args.len()));
    }
    let mut sql = concat!("SELECT ", card_audit_columns!(), " FROM card_audit").to_owned();
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    args.push(Arg::I64(i64::from(q.limit)));
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", args.len()));
    (sql, args)
}

// ---------------------------------------------------------------- sync leases
//
// The same SQL on both backends (`$N` parameters work on SQLite too).

/// Take a free or lapsed lease; the generation grows with each acquisition.
pub(crate) const LEASE_ACQUIRE: &str = "UPDATE connections SET lease_owner = $1, lease_until = $2, \
     lease_generation = lease_generation + 1 WHERE id = $3 AND \
     (lease_owner IS NULL OR lease_until IS NULL OR lease_until < $4) RETURNING lease_generation";
/// [`LEASE_ACQUIRE`] while `last_sync_at` is still `$5` (null-safe: a
/// connection that never synced has none).
pub(crate) const LEASE_CLAIM_SCHEDULED: &str = "UPDATE connections SET lease_owner = $1, lease_until = $2, \
     lease_generation = lease_generation + 1 WHERE id = $3 AND \
     (lease_owner IS NULL OR lease_until IS NULL OR lease_until < $4) \
     AND last_sync_at IS NOT DISTINCT FROM $5 RETURNING lease_generation";
pub(crate) const LEASE_HOLDER: &str =
    "SELECT lease_owner, lease_until FROM connections WHERE id = $1";
pub(crate) const LEASE_RENEW: &str = "UPDATE connections SET lease_until = $1 \
     WHERE id = $2 AND lease_generation = $3 AND lease_owner IS NOT NULL";
pub(crate) const LEASE_RELEASE: &str = "UPDATE connections SET lease_owner = NULL, lease_until = NULL \
     WHERE id = $1 AND lease_generation = $2";
/// Run first in every transaction a sync writes in: it matches the
/// connection's row only while the lease is still the writer's, and on
/// PostgreSQL it also locks that row until the commit, so a takeover waits
/// for the write instead of slipping in between check and commit (SQLite's
/// `BEGIN IMMEDIATE` already serialises all writers).
pub(crate) const LEASE_FENCE: &str = "UPDATE connections SET lease_generation = lease_generation \
     WHERE id = $1 AND lease_generation = $2 AND lease_owner IS NOT NULL";

/// What a fenced statement's row count means.
pub(crate) fn fenced(rows_affected: u64, lease: crate::LeaseToken) -> Result<()> {
    if rows_affected == 1 {
        Ok(())
    } else {
        Err(StoreError::lease_lost(lease))
    }
}

/// A lease someone holds at `now`, from its row (`None`: no such connection).
pub(crate) fn lease_held(
    connection_id: i64,
    row: Option<(Option<String>, Option<DateTime<Utc>>)>,
    now: DateTime<Utc>,
) -> Result<Option<crate::Lease>> {
    match row {
        None => Err(StoreError::NotFound(format!("connection {connection_id}"))),
        Some((Some(owner), Some(until))) if until >= now => {
            Ok(Some(crate::Lease::Held { owner, until }))
        }
        Some(_) => Ok(None),
    }
}

/// A stream fed by `produce`, which gets the sending half of a channel of
/// `capacity` items. The producer runs only while the stream is polled, so
/// it can own what its row stream borrows (the SQL text); the bounded
/// channel keeps memory constant whatever the number of rows, and dropping
/// the stream stops it.
pub(crate) fn produced_stream<'a, T, F, Fut>(
    capacity: usize,
    produce: F,
) -> futures::stream::BoxStream<'a, Result<T>>
where
    T: Send + 'a,
    F: FnOnce(futures::channel::mpsc::Sender<Result<T>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'a,
{
    use futures::StreamExt;
    let (sender, receiver) = futures::channel::mpsc::channel(capacity);
    let producer =
        futures::stream::once(produce(sender)).filter_map(|()| futures::future::ready(None));
    futures::stream::select(receiver, producer).boxed()
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
