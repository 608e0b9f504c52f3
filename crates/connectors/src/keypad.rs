//! The "keypad bank": a French bank's web API behind a shuffled PIN keypad
//! (`docs/keypad-bank-api.md`, from the seed article; woob's `cragr` is the
//! closest real module).
//!
//! - **Login**: `GET api/login/keypad` gives `reverse(hex(seed ‖ keys))`
//!   ([`decode_keypad`]); the PIN goes back as the index of each digit among
//!   the keys, obfuscated the same way ([`encode_pin`]), in `POST api/login`.
//!   The login token opens each contract (`POST api/login/contract` with the
//!   contract id in base64 minus its last 2 characters); contract tokens read
//!   the accounts, transactions and documents. Tokens live 21 days and are
//!   kept sealed between runs ([`Connector::session_state`]); they are
//!   refreshed before they expire, so a scheduled sync seldom types the PIN.
//!   A PIN is sent at most once per run unless the previous one worked: the
//!   bank locks the customer after 3 wrong PINs.
//! - **Transactions** have no id and no date filter: `range=from-to` pages
//!   them by index, newest first (0 = newest), 100 at most. The engine asks
//!   for date windows; each account keeps a cursor over the pages fetched so
//!   far in this run, and a window is served once a page reached a row older
//!   than its first day (all of that is already stored, or is the next
//!   backfill window's). Rows are identified by the engine's fingerprint
//!   (date, amount, label, occurrence counter).
//! - **The 90-day gate**: a page holding a row booked more than 90 days ago
//!   answers `403 2FA_REQUIRED` until the contract token passed a 2FA. Pages
//!   are halved down to single rows at the gate, so every row the bank serves
//!   without 2FA is read; the first refused single row marks the boundary.
//!   A window below it starts a decoupled 2FA (`POST api/auth/2fa`) and
//!   returns [`ConnectorError::ScaRequired`] carrying the request id;
//!   [`Connector::resume_sca`] polls `GET api/auth/2fa/{id}`.
//! - **Documents** (statements, fee summaries) have no date limit:
//!   `api/user/documents/accounts_statements` and `.../documents`, bytes by
//!   `downloadToken`.
//!
//! "Today" is the bank's today in Europe/Paris, from the `Date` header.
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bankbridge_core::{
    Balance, BalanceKind, ConnectionSettings, Connector, ConnectorError, ConnectorLimits,
    Credentials, Currency, DateWindow, DocumentContent, FetchedAccount, FetchedDocument,
    FetchedTransaction, Iban, ScaAnswer, ScaChallenge, ScaProgress, Secret, TransientKind,
    TxStatus, WindowPage, clean_label, parse_decimal,
};
use base64::Engine as _;
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Europe::Paris;
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use url::Url;

use crate::common::{
    clock_skew_secs, excerpt, malformed, parse_json, status_error, text, transient, transport,
};

/// Rows per transactions call (the bank's maximum).
pub const PAGE_ROWS: u32 = 100;
/// History older than this needs the 2FA.
pub const GATE_DAYS: u32 = 90;
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// JSON answers larger than this are refused.
pub const MAX_JSON_BYTES: usize = 32 * 1024 * 1024;
/// Documents larger than this are refused.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024 * 1024;
/// Tokens with less than this left are refreshed before use.
pub const REFRESH_BEFORE: chrono::Duration = chrono::Duration::days(7);
/// How often to ask whether the 2FA was approved.
const POLL_SECS: u64 = 1;
const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const TWOFA_MESSAGE: &str = "the bank asks for a 2FA to read transactions older than 90 days: \
     approve the request on your trusted device (the bank's app)";

// ---------------------------------------------------------------- keypad codec

/// Why a keypad field, a PIN or a token cannot be coded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeypadError {
    #[error("the keypad field is not an even number of hex digits")]
    NotHex,
    #[error("the keypad field decodes to a character that is not a digit")]
    NotDigits,
    #[error("the keypad field is too short: {0} characters decoded, need a seed and 10 keys")]
    TooShort(usize),
    #[error("the keypad's 10 keys are not the digits 0-9 each once")]
    BadKeys,
    #[error("the PIN must be digits only (and not empty)")]
    BadPin,
    #[error("the seed must be digits only")]
    BadSeed,
}

/// `reverse(hex(chars))`: each ASCII byte as two lower-case hex digits, the
/// whole string reversed.
fn obfuscate(chars: impl Iterator<Item = u8>) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::new();
    for c in chars {
        out.push(HEX[usize::from(c >> 4)]);
        out.push(HEX[usize::from(c & 15)]);
    }
    out.reverse();
    // Only hex digits went in.
    String::from_utf8(out).unwrap_or_default()
}

/// Decode the `keypad` field of `GET api/login/keypad`: reverse it, read it
/// two hex digits at a time as ASCII characters; the last 10 are the keys in
/// display order (a permutation of the digits), the rest is the seed.
/// Returns the seed and the keys as digit values (0–9).
///
/// ```
/// use bankbridge_connectors::keypad::decode_keypad;
/// // The article's field starts with the reversed keys 0,3,4,8,9,5,7,6,2,1.
/// let (seed, keys) = decode_keypad("132363735393834333033323").unwrap();
/// assert_eq!(seed, "23");
/// assert_eq!(keys, [0, 3, 4, 8, 9, 5, 7, 6, 2, 1]);
/// ```
pub fn decode_keypad(field: &str) -> Result<(String, [u8; 10]), KeypadError> {
    let field = field.trim();
    let rev: Vec<u8> = field.bytes().rev().collect();
    if rev.is_empty() || !rev.len().is_multiple_of(2) || !rev.iter().all(u8::is_ascii_hexdigit) {
        return Err(KeypadError::NotHex);
    }
    let mut chars = Vec::with_capacity(rev.len() / 2);
    for pair in rev.chunks(2) {
        let text = std::str::from_utf8(pair).map_err(|_| KeypadError::NotHex)?;
        let c = u8::from_str_radix(text, 16).map_err(|_| KeypadError::NotHex)?;
        if !c.is_ascii_digit() {
            return Err(KeypadError::NotDigits);
        }
        chars.push(c);
    }
    if chars.len() <= 10 {
        return Err(KeypadError::TooShort(chars.len()));
    }
    let (seed, key_chars) = chars.split_at(chars.len() - 10);
    let mut keys = [0u8; 10];
    let mut seen = [false; 10];
    for (k, c) in keys.iter_mut().zip(key_chars) {
        let d = c - b'0';
        if seen[usize::from(d)] {
            return Err(KeypadError::BadKeys);
        }
        seen[usize::from(d)] = true;
        *k = d;
    }
    // Digits only went in.
    Ok((String::from_utf8(seed.to_vec()).unwrap_or_default(), keys))
}

/// The `keypad` value of `POST api/login`: each PIN digit replaced by its
/// index among `keys`, then `reverse(hex(seed ‖ indices))`.
///
/// ```
/// use bankbridge_connectors::keypad::encode_pin;
/// let keys = [0, 3, 4, 8, 9, 5, 7, 6, 2, 1];
/// // PIN 011000 → indices 099000.
/// assert!(encode_pin("23", &keys, "011000").unwrap().starts_with("030303939303"));
/// ```
pub fn encode_pin(seed: &str, keys: &[u8; 10], pin: &str) -> Result<String, KeypadError> {
    if !seed.bytes().all(|b| b.is_ascii_digit()) {
        return Err(KeypadError::BadSeed);
    }
    if pin.is_empty() || !pin.bytes().all(|b| b.is_ascii_digit()) {
        return Err(KeypadError::BadPin);
    }
    let mut seen = [false; 10];
    for k in keys {
        if *k > 9 || std::mem::replace(&mut seen[usize::from(*k)], true) {
            return Err(KeypadError::BadKeys);
        }
    }
    let mangled = pin.bytes().map(|b| {
        let digit = b - b'0';
        // A permutation of 0–9 holds every digit.
        let index = keys.iter().position(|k| *k == digit).unwrap_or(0) as u8;
        b'0' + index
    });
    Ok(obfuscate(seed.bytes().chain(mangled)))
}

/// A contract id as the API wants it: base64 of the id without its last 2
/// characters.
pub fn short_contract_id(id: &str) -> String {
    let mut b = base64::engine::general_purpose::STANDARD.encode(id);
    b.truncate(b.len().saturating_sub(2));
    b
}

// ---------------------------------------------------------------- errors

/// `code` and `message` of the bank's JSON error body.
fn error_parts(body: &[u8]) -> (String, String) {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => (
            v.get("code")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            v.get("message")
                .and_then(Value::as_str)
                .map(excerpt)
                .unwrap_or_else(|| excerpt(&v.to_string())),
        ),
        Err(_) => (String::new(), excerpt(&String::from_utf8_lossy(body))),
    }
}

fn rejected(what: &str, status: StatusCode, body: &[u8]) -> ConnectorError {
    let (code, message) = error_parts(body);
    ConnectorError::Other(format!(
        "{what}: the bank rejected the request (HTTP {status}{}): {message}",
        if code.is_empty() {
            String::new()
        } else {
            format!(", {code}")
        }
    ))
}

// ---------------------------------------------------------------- mapping

/// The Paris calendar day of a bank timestamp (`2023-08-25T00:00:00.000Z`,
/// `2023-08-25T22:45:46.892+0200`) or date (`2023-08-25`).
pub fn paris_date(s: &str) -> Option<NaiveDate> {
    let t = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Some(dt.with_timezone(&Paris).date_naive());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%z"] {
        if let Ok(dt) = DateTime::parse_from_str(t, fmt) {
            return Some(dt.with_timezone(&Paris).date_naive());
        }
    }
    NaiveDate::parse_from_str(t, "%Y-%m-%d").ok()
}

/// The exact decimal a JSON number or string spells: the number's own text,
/// never through a float.
fn exact_decimal(raw: &RawValue) -> Option<Decimal> {
    let t = raw.get().trim();
    if t.starts_with('"') {
        let s: String = serde_json::from_str(t).ok()?;
        return parse_decimal(&s);
    }
    if t.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) {
        return Decimal::from_str(t)
            .ok()
            .or_else(|| Decimal::from_scientific(t).ok());
    }
    None
}

#[derive(Deserialize)]
struct RowAmount<'a> {
    #[serde(borrow, default)]
    value: Option<&'a RawValue>,
    #[serde(default)]
    currency: Option<String>,
}

#[derive(Deserialize)]
struct RowFields<'a> {
    #[serde(default)]
    label: Option<Value>,
    #[serde(default)]
    booking_date_time: Option<Value>,
    #[serde(default)]
    is_accounted: Option<Value>,
    #[serde(borrow, default)]
    amount: Option<RowAmount<'a>>,
    #[serde(default)]
    movement_code_type: Option<Value>,
    #[serde(default)]
    nature: Option<Value>,
}

/// One row of `accountTransactions`, from its JSON text.
pub fn map_transaction(
    raw: &RawValue,
    account_currency: Currency,
) -> Result<FetchedTransaction, ConnectorError> {
    let what = "transactions";
    let f: RowFields = serde_json::from_str(raw.get()).map_err(|e| {
        malformed(
            what,
            format!("a row is not an object of the expected shape: {e}"),
        )
    })?;
    let raw_label = match &f.label {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => String::new(),
        Some(other) => return Err(malformed(what, format!("a row's label is {other}"))),
    };
    let when = match &f.booking_date_time {
        Some(Value::String(s)) => s.as_str(),
        _ => {
            return Err(malformed(
                what,
                format!("the row {raw_label:?} has no booking_date_time"),
            ));
        }
    };
    let booking_date = paris_date(when).ok_or_else(|| {
        malformed(
            what,
            format!("the row {raw_label:?} has booking_date_time {when:?}"),
        )
    })?;
    let amount = f.amount.as_ref().ok_or_else(|| {
        malformed(
            what,
            format!("the row {raw_label:?} of {booking_date} has no amount"),
        )
    })?;
    let value = amount.value.and_then(exact_decimal).ok_or_else(|| {
        malformed(
            what,
            format!(
                "the row {raw_label:?} of {booking_date} has amount.value {}",
                amount.value.map_or("(none)", |v| v.get())
            ),
        )
    })?;
    let currency = match amount.currency.as_deref().map(str::trim) {
        None | Some("") => account_currency,
        Some(c) => c.parse().map_err(|e| {
            malformed(
                what,
                format!("the row {raw_label:?} of {booking_date} has currency {c:?}: {e}"),
            )
        })?,
    };
    let booked = match &f.is_accounted {
        None | Some(Value::Null) | Some(Value::Bool(true)) => true,
        Some(Value::Bool(false)) => false,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => true,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => false,
        Some(other) => {
            return Err(malformed(
                what,
                format!("the row {raw_label:?} has is_accounted {other}"),
            ));
        }
    };
    let bank_code = match &f.movement_code_type {
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        _ => None,
    };
    let nature = match &f.nature {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        _ => None,
    };
    let mut label = clean_label(&raw_label);
    if label.is_empty() {
        label = clean_label(nature.as_deref().unwrap_or(""));
    }
    let raw_value: Value = serde_json::from_str(raw.get())
        .map_err(|e| malformed(what, format!("a row is not JSON: {e}")))?;
    Ok(FetchedTransaction {
        provider_id: None,
        status: if booked {
            TxStatus::Booked
        } else {
            TxStatus::Pending
        },
        booking_date,
        value_date: None,
        transaction_date: None,
        amount: value,
        currency,
        original_amount: None,
        original_currency: None,
        raw_label,
        label,
        counterparty_name: None,
        counterparty_iban: None,
        remittance_info: nature,
        bank_code,
        running_balance: None,
        raw: raw_value,
    })
}

#[derive(Deserialize)]
struct TxPage<'a> {
    #[serde(borrow, rename = "accountTransactions")]
    rows: Option<Vec<&'a RawValue>>,
}

/// A page of `api/user/{id}/transactions`, newest first.
pub fn map_transaction_page(
    body: &[u8],
    account_currency: Currency,
) -> Result<Vec<FetchedTransaction>, ConnectorError> {
    let what = "transactions";
    let page: TxPage = serde_json::from_slice(body).map_err(|e| {
        if e.is_eof() {
            transient(what, TransientKind::Truncated, None)
        } else {
            malformed(what, format!("not the expected JSON: {e}"))
        }
    })?;
    let rows = page
        .rows
        .ok_or_else(|| malformed(what, "no accountTransactions array"))?;
    rows.into_iter()
        .map(|r| map_transaction(r, account_currency))
        .collect()
}

/// What the connector keeps of an account between calls.
#[derive(Clone, Debug)]
struct AccountRef {
    contract: usize,
    external_id: String,
    internal_id: String,
    currency: Currency,
    balance: Option<Balance>,
}

/// The accounts of one contract's `api/user/accounts` answer.
fn map_accounts(answer: &Value) -> Result<Vec<(FetchedAccount, AccountRef)>, ConnectorError> {
    let what = "accounts";
    let list = answer
        .get("accounts")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed(what, "no accounts array"))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, a) in list.iter().enumerate() {
        let obj = a
            .as_object()
            .ok_or_else(|| malformed(what, format!("account {i} is not an object")))?;
        let external_id = text(obj, "external_id")
            .ok_or_else(|| malformed(what, format!("account {i} has no external_id")))?;
        let internal_id = text(obj, "internal_id")
            .ok_or_else(|| malformed(what, format!("account {external_id} has no internal_id")))?;
        let iban = match text(obj, "iban") {
            Some(s) => Some(Iban::parse(s).map_err(|e| {
                malformed(
                    what,
                    format!("account {external_id} has an invalid IBAN: {e}"),
                )
            })?),
            None => None,
        };
        let amount = obj.get("amount").and_then(Value::as_object);
        // Sic: the bank spells it `currenty`.
        let ccy = amount
            .and_then(|m| text(m, "currenty").or_else(|| text(m, "currency")))
            .unwrap_or("EUR");
        let currency: Currency = ccy.parse().map_err(|e| {
            malformed(
                what,
                format!("account {external_id} has currency {ccy:?}: {e}"),
            )
        })?;
        let balance = match amount {
            Some(m) => {
                let value = match m.get("value") {
                    Some(Value::String(s)) => parse_decimal(s),
                    Some(Value::Number(n)) => parse_decimal(&n.to_string()),
                    _ => None,
                };
                let date = text(m, "date").and_then(paris_date);
                match (value, date) {
                    (Some(amount), Some(reference_date)) => Some(Balance {
                        kind: BalanceKind::ClosingBooked,
                        amount,
                        currency,
                        reference_date,
                    }),
                    _ => None,
                }
            }
            None => None,
        };
        let kind = text(obj, "type").map(str::to_owned);
        out.push((
            FetchedAccount {
                provider_id: iban
                    .as_ref()
                    .map_or_else(|| external_id.to_owned(), |i| i.to_string()),
                iban,
                currency,
                name: kind.as_ref().map(|k| format!("Compte {k}")),
                kind,
                raw: a.clone(),
            },
            AccountRef {
                contract: 0,
                external_id: external_id.to_owned(),
                internal_id: internal_id.to_owned(),
                currency,
                balance,
            },
        ));
    }
    Ok(out)
}

/// One entry of a documents list.
fn map_document(
    entry: &Value,
    kind: &str,
    contract_id: &str,
    ibans: &[(String, String)],
) -> Result<FetchedDocument, ConnectorError> {
    let what = "documents";
    let obj = entry
        .as_object()
        .ok_or_else(|| malformed(what, "a document is not an object"))?;
    let token = text(obj, "downloadToken")
        .ok_or_else(|| malformed(what, "a document has no downloadToken"))?;
    let code = text(obj, "codsoufamdoc_1");
    let category = text(obj, "libsoufamdoc_1").or(code).map(str::to_owned);
    let title = text(obj, "liblg_typdoc")
        .map(str::to_owned)
        .or_else(|| category.clone())
        .unwrap_or_else(|| "Document".to_owned());
    let date = text(obj, "datprddoccli").and_then(paris_date);
    // The key: stable (the bank's token of a document never changes) but not
    // the token itself, which is a capability to download the document.
    let key = Sha256::digest(format!("{contract_id}\u{1f}{token}").as_bytes());
    let compact: String = title.chars().filter(|c| !c.is_whitespace()).collect();
    let account = ibans
        .iter()
        .find(|(iban, _)| compact.contains(iban.as_str()))
        .map(|(_, provider_id)| provider_id.clone());
    Ok(FetchedDocument {
        provider_id: format!("dt:{}", hex::encode(&key[..16])),
        account,
        kind: kind.to_owned(),
        category,
        title,
        date,
        locator: Secret::new(token.to_owned()),
    })
}

// ---------------------------------------------------------------- session

#[derive(Clone)]
struct Tokens {
    access: Secret<String>,
    refresh: Secret<String>,
    /// On the bank's clock.
    expires_at: DateTime<Utc>,
}

impl Tokens {
    fn from_answer(what: &str, v: &Value) -> Result<Tokens, ConnectorError> {
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(|s| Secret::new(s.to_owned()))
                .ok_or_else(|| malformed(what, format!("no {k} in the answer")))
        };
        let expires_at = v
            .get("expiresAt")
            .and_then(|e| match e {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            })
            .and_then(|secs| DateTime::from_timestamp(secs, 0))
            .ok_or_else(|| malformed(what, "no expiresAt (Unix seconds) in the answer"))?;
        Ok(Tokens {
            access: s("accessToken")?,
            refresh: s("refreshToken")?,
            expires_at,
        })
    }
}

#[derive(Clone)]
struct Contract {
    id: String,
    tokens: Tokens,
    /// The contract token passed a 2FA in this run.
    twofa: bool,
}

#[derive(Clone)]
struct Session {
    login: Option<Tokens>,
    contracts: Vec<Contract>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedTokens {
    access: String,
    refresh: String,
    expires_at: i64,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedContract {
    id: String,
    #[serde(flatten)]
    tokens: SavedTokens,
}

/// What [`KeypadConnector::session_state`] keeps between runs (sealed by the engine).
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedSession {
    v: u32,
    login: Option<SavedTokens>,
    contracts: Vec<SavedContract>,
    /// Bank clock minus ours when saved.
    skew_secs: i64,
}

fn save_tokens(t: &Tokens) -> SavedTokens {
    SavedTokens {
        access: t.access.expose().clone(),
        refresh: t.refresh.expose().clone(),
        expires_at: t.expires_at.timestamp(),
    }
}

fn load_tokens(t: SavedTokens) -> Option<Tokens> {
    Some(Tokens {
        access: Secret::new(t.access),
        refresh: Secret::new(t.refresh),
        expires_at: DateTime::from_timestamp(t.expires_at, 0)?,
    })
}

/// A 2FA request waiting for its approval.
#[derive(Clone, Debug)]
struct Pending2fa {
    contract: usize,
    request_id: String,
    /// On the bank's clock.
    expires_at: DateTime<Utc>,
}

/// The pages of one account's history read so far in this run.
#[derive(Default)]
struct History {
    /// Rows newest first, as the bank listed them (served windows removed).
    rows: Vec<FetchedTransaction>,
    /// Date of the oldest row read so far.
    oldest: Option<NaiveDate>,
    /// The next index to ask for.
    next: u32,
    /// Rows per call: halved at the 2FA gate.
    page: u32,
    /// The end of the history was reached.
    exhausted: bool,
    /// The first index the bank refuses without 2FA.
    gated_at: Option<u32>,
}

// ---------------------------------------------------------------- connector

/// The keypad bank's web-API connector.
pub struct KeypadConnector {
    base: Url,
    identifier: String,
    pin: Secret<String>,
    http: reqwest::Client,
    session: Option<Session>,
    accounts: HashMap<String, AccountRef>,
    histories: HashMap<String, History>,
    documents: HashMap<String, usize>,
    pending_2fa: Option<Pending2fa>,
    /// PIN logins sent in this run, and whether one failed (then none more).
    pin_logins: u32,
    pin_failed: bool,
    /// Bank clock minus ours, in seconds, from the last `Date` header.
    skew_secs: AtomicI64,
}

impl fmt::Debug for KeypadConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeypadConnector")
            .field("base_url", &self.base.as_str())
            .field("identifier", &self.identifier)
            .field("pin", &"[redacted]")
            .field("logged_in", &self.session.is_some())
            .finish_non_exhaustive()
    }
}

impl KeypadConnector {
    /// A connector for one connection: the customer number is the username,
    /// the PIN the `password` credential (digits only), the base URL the
    /// bank's web API root (e.g. `http://127.0.0.1:9000/keypad`).
    pub fn new(settings: &ConnectionSettings, credentials: Credentials) -> Result<Self, String> {
        let pin = credentials
            .get("pin")
            .or_else(|| credentials.get("password"))
            .cloned()
            .ok_or("the keypad connector needs the PIN as its `password` credential")?;
        if pin.expose().is_empty() || !pin.expose().bytes().all(|b| b.is_ascii_digit()) {
            return Err(
                "the keypad bank's PIN is digits only (6 digits on the bank's keypad)".into(),
            );
        }
        let identifier = settings.username.trim().to_owned();
        if identifier.is_empty() {
            return Err("the keypad connector needs the customer number as username".into());
        }
        let base = settings.base_url.trim();
        if base.is_empty() {
            return Err(
                "the keypad connector needs the bank's web API base URL (--base-url)".into(),
            );
        }
        let mut url = bankbridge_core::net::secure_url(base, "the keypad base URL")?;
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(DEFAULT_TIMEOUT)
            .connect_timeout(Duration::from_secs(20))
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))?;
        Ok(KeypadConnector {
            base: url,
            identifier,
            pin,
            http,
            session: None,
            accounts: HashMap::new(),
            histories: HashMap::new(),
            documents: HashMap::new(),
            pending_2fa: None,
            pin_logins: 0,
            pin_failed: false,
            skew_secs: AtomicI64::new(0),
        })
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// The bank's clock.
    fn bank_now(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::seconds(self.skew_secs.load(Ordering::Relaxed))
    }

    fn to_local(&self, bank_time: DateTime<Utc>) -> DateTime<Utc> {
        bank_time - chrono::Duration::seconds(self.skew_secs.load(Ordering::Relaxed))
    }

    /// Send a request; returns status, headers and the body (at most `max` bytes).
    async fn send(
        &self,
        what: &str,
        req: reqwest::RequestBuilder,
        max: usize,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), ConnectorError> {
        let mut resp = req
            .header(header::ACCEPT, "application/json, text/plain, */*")
            .header(header::ACCEPT_LANGUAGE, "fr-FR,fr;q=0.9")
            .send()
            .await
            .map_err(|e| transport("keypad", what, &e, false))?;
        if let Some(skew) = clock_skew_secs(resp.headers()) {
            self.skew_secs.store(skew, Ordering::Relaxed);
        }
        let status = resp.status();
        let headers = resp.headers().clone();
        if resp.content_length().is_some_and(|n| n > max as u64) {
            return Err(malformed(what, format!("answer larger than {max} bytes")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| transport("keypad", what, &e, true))?
        {
            if body.len() + chunk.len() > max {
                return Err(malformed(what, format!("answer larger than {max} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        tracing::debug!(what, %status, bytes = body.len(), "keypad: answer");
        Ok((status, headers, body))
    }

    /// A contract's token, refreshed first when it is close to expiring.
    async fn contract_token(&mut self, contract: usize) -> Result<Secret<String>, ConnectorError> {
        let Some(session) = self.session.as_ref() else {
            return Err(ConnectorError::SessionExpired);
        };
        let Some(c) = session.contracts.get(contract) else {
            return Err(ConnectorError::SessionExpired);
        };
        if c.tokens.expires_at - REFRESH_BEFORE <= self.bank_now() {
            self.refresh_contract(contract).await?;
        }
        self.session
            .as_ref()
            .and_then(|s| s.contracts.get(contract))
            .map(|c| c.tokens.access.clone())
            .ok_or(ConnectorError::SessionExpired)
    }

    /// Trade a contract's refresh token for a new pair (before it expires).
    async fn refresh_contract(&mut self, contract: usize) -> Result<(), ConnectorError> {
        let what = "token refresh";
        let refresh = self
            .session
            .as_ref()
            .and_then(|s| s.contracts.get(contract))
            .map(|c| c.tokens.refresh.clone())
            .ok_or(ConnectorError::SessionExpired)?;
        let req = self
            .http
            .post(self.url(&["api", "login", "refresh"]))
            .json(&json!({"refreshToken": refresh.expose()}));
        let (status, headers, body) = self.send(what, req, MAX_JSON_BYTES).await?;
        if status == StatusCode::UNAUTHORIZED {
            tracing::info!("keypad: the refresh token is no longer valid; a PIN login is needed");
            self.session = None;
            return Err(ConnectorError::SessionExpired);
        }
        if let Some(e) = status_error(what, status, &headers) {
            return Err(e);
        }
        if !status.is_success() {
            return Err(rejected(what, status, &body));
        }
        let tokens = Tokens::from_answer(what, &parse_json(what, &body)?)?;
        if let Some(c) = self
            .session
            .as_mut()
            .and_then(|s| s.contracts.get_mut(contract))
        {
            c.tokens = tokens;
        }
        tracing::info!(
            contract,
            "keypad: contract token refreshed before it expired"
        );
        Ok(())
    }

    /// A contract API call (GET), the 401s turned into [`ConnectorError::SessionExpired`].
    /// A 4xx comes back as `Ok(Err((status, code, body)))` for the caller.
    async fn contract_get(
        &mut self,
        what: &str,
        contract: usize,
        url: Url,
        max: usize,
    ) -> Result<Result<(HeaderMap, Vec<u8>), (StatusCode, String, Vec<u8>)>, ConnectorError> {
        let token = self.contract_token(contract).await?;
        let req = self
            .http
            .request(Method::GET, url)
            .bearer_auth(token.expose());
        let (status, headers, body) = self.send(what, req, max).await?;
        if status == StatusCode::UNAUTHORIZED {
            let (code, _) = error_parts(&body);
            tracing::info!(what, %code, "keypad: token refused; logging in again");
            self.session = None;
            return Err(ConnectorError::SessionExpired);
        }
        if let Some(e) = status_error(what, status, &headers) {
            return Err(e);
        }
        if status.is_success() {
            return Ok(Ok((headers, body)));
        }
        let (code, _) = error_parts(&body);
        Ok(Err((status, code, body)))
    }

    async fn contract_json(
        &mut self,
        what: &str,
        contract: usize,
        url: Url,
    ) -> Result<Value, ConnectorError> {
        match self
            .contract_get(what, contract, url, MAX_JSON_BYTES)
            .await?
        {
            Ok((_, body)) => parse_json(what, &body),
            Err((status, _, body)) => Err(rejected(what, status, &body)),
        }
    }

    /// The whole PIN login: keypad, PIN, then every contract's token.
    async fn pin_login(&mut self) -> Result<(), ConnectorError> {
        if self.pin_failed {
            return Err(ConnectorError::Other(
                "a PIN login already failed in this sync; not sending the PIN again (the bank \
                 locks the customer after 3 wrong PINs). Sync again later"
                    .into(),
            ));
        }
        if self.pin_logins >= 2 {
            return Err(ConnectorError::Other(
                "the bank keeps refusing fresh tokens; not sending the PIN a third time in one sync"
                    .into(),
            ));
        }
        self.session = None;
        self.pending_2fa = None;

        let what = "keypad";
        let req = self.http.get(self.url(&["api", "login", "keypad"]));
        let (status, headers, body) = self.send(what, req, MAX_JSON_BYTES).await?;
        if let Some(e) = status_error(what, status, &headers) {
            return Err(e);
        }
        if !status.is_success() {
            return Err(rejected(what, status, &body));
        }
        let v = parse_json(what, &body)?;
        let field = v
            .get("keypad")
            .and_then(Value::as_str)
            .ok_or_else(|| malformed(what, "no keypad field"))?;
        let (seed, keys) = decode_keypad(field).map_err(|e| malformed(what, e.to_string()))?;
        let token = encode_pin(&seed, &keys, self.pin.expose())
            .map_err(|e| ConnectorError::InvalidCredentials(e.to_string()))?;

        // From here on the PIN is out: whatever happens, it is not sent again in this run.
        self.pin_failed = true;
        self.pin_logins += 1;
        let what = "PIN login";
        let now = Utc::now();
        let body = json!({
            "callingUrl": "/connexion",
            "clientTimestamp": now.timestamp(),
            "encryptedIdentifier": false,
            "identifier": self.identifier,
            "keypad": token,
            "sessionId": format!("{:023}", now.timestamp_millis()),
        });
        let req = self.http.post(self.url(&["api", "login"])).json(&body);
        let (status, _headers, body) = match self.send(what, req, MAX_JSON_BYTES).await {
            Ok(answer) => answer,
            Err(e) => {
                return Err(ConnectorError::Other(format!(
                    "{e}; the PIN may have reached the bank, so it is not sent again in this sync \
                     (the bank locks the customer after 3 wrong PINs). Sync again later"
                )));
            }
        };
        match status {
            s if s.is_success() => {}
            StatusCode::UNAUTHORIZED => {
                let left = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v.get("remainingAttempts").and_then(Value::as_u64));
                return Err(ConnectorError::InvalidCredentials(format!(
                    "wrong customer number or PIN for {}{}; fix the connection's PIN before syncing \
                     again (the bank locks the customer after 3 wrong PINs in a row)",
                    self.identifier,
                    left.map(|n| format!(" ({n} attempt(s) left before the bank locks it)"))
                        .unwrap_or_default()
                )));
            }
            StatusCode::LOCKED => {
                return Err(ConnectorError::InvalidCredentials(format!(
                    "the bank has locked customer number {} after too many wrong PINs; unlock it \
                     with the bank, then fix the connection's PIN",
                    self.identifier
                )));
            }
            _ => {
                let e = rejected(what, status, &body);
                return Err(ConnectorError::Other(format!(
                    "{e}; the PIN is not sent again in this sync. Sync again later"
                )));
            }
        }
        let v = parse_json(what, &body)?;
        let login = Tokens::from_answer(what, &v)?;
        let ids: Vec<String> = v
            .get("contracts")
            .and_then(Value::as_array)
            .ok_or_else(|| malformed(what, "no contracts array"))?
            .iter()
            .map(|c| match c.get("id") {
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                Some(Value::Number(n)) => Ok(n.to_string()),
                _ => Err(malformed(what, "a contract has no id")),
            })
            .collect::<Result<_, _>>()?;
        self.pin_failed = false;
        tracing::info!(contracts = ids.len(), "keypad: logged in with the PIN");

        let mut contracts = Vec::with_capacity(ids.len());
        for id in ids {
            let what = "contract login";
            let req = self
                .http
                .post(self.url(&["api", "login", "contract"]))
                .bearer_auth(login.access.expose())
                .json(&json!({
                    "clientTimestamp": Utc::now().timestamp(),
                    "contractId": short_contract_id(&id),
                }));
            let (status, headers, body) = self.send(what, req, MAX_JSON_BYTES).await?;
            if let Some(e) = status_error(what, status, &headers) {
                return Err(e);
            }
            if !status.is_success() {
                return Err(rejected(what, status, &body));
            }
            contracts.push(Contract {
                id,
                tokens: Tokens::from_answer(what, &parse_json(what, &body)?)?,
                twofa: false,
            });
        }
        self.session = Some(Session {
            login: Some(login),
            contracts,
        });
        Ok(())
    }

    /// Start (or reuse) a 2FA request for `contract`; the challenge to return.
    async fn start_2fa(
        &mut self,
        contract: usize,
        account: &FetchedAccount,
    ) -> Result<ScaChallenge, ConnectorError> {
        let reusable = self
            .pending_2fa
            .as_ref()
            .filter(|p| p.contract == contract && p.expires_at > self.bank_now())
            .cloned();
        let pending = match reusable {
            Some(p) => p,
            None => {
                let what = "2FA request";
                let token = self.contract_token(contract).await?;
                let req = self
                    .http
                    .post(self.url(&["api", "auth", "2fa"]))
                    .bearer_auth(token.expose())
                    .json(&json!({}));
                let (status, headers, body) = self.send(what, req, MAX_JSON_BYTES).await?;
                if status == StatusCode::UNAUTHORIZED {
                    self.session = None;
                    return Err(ConnectorError::SessionExpired);
                }
                if let Some(e) = status_error(what, status, &headers) {
                    return Err(e);
                }
                if !status.is_success() {
                    return Err(rejected(what, status, &body));
                }
                let v = parse_json(what, &body)?;
                let request_id = v
                    .get("requestId")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| malformed(what, "no requestId"))?
                    .to_owned();
                let expires_at = v
                    .get("expiresAt")
                    .and_then(Value::as_i64)
                    .and_then(|s| DateTime::from_timestamp(s, 0))
                    .unwrap_or_else(|| self.bank_now() + chrono::Duration::minutes(5));
                tracing::info!(contract, "keypad: 2FA requested; waiting for its approval");
                let p = Pending2fa {
                    contract,
                    request_id,
                    expires_at,
                };
                self.pending_2fa = Some(p.clone());
                p
            }
        };
        // One approval per contract: say which this is, and which of how
        // many, so a person approving the second one knows why.
        let (approved, total) = self.session.as_ref().map_or((0, 1), |s| {
            (
                s.contracts.iter().filter(|c| c.twofa).count(),
                s.contracts.len().max(1),
            )
        });
        let account_label = account
            .iban
            .as_ref()
            .map(|i| i.as_str().to_owned())
            .or_else(|| account.name.clone())
            .unwrap_or_else(|| account.provider_id.clone());
        let message = format!(
            "approval {} of {total} (one per contract): contract {} of {total}, account {account_label}: {TWOFA_MESSAGE}",
            (approved + 1).min(total),
            contract + 1,
        );
        Ok(ScaChallenge::Decoupled {
            message,
            poll_after_secs: POLL_SECS,
            reference: Some(pending.request_id.clone()),
            expires_at: Some(self.to_local(pending.expires_at)),
        })
    }

    /// Read pages of `provider_id`'s history until `w` is complete.
    /// `Ok(false)`: the window needs the 2FA.
    async fn fill(
        &mut self,
        provider_id: &str,
        account: &AccountRef,
        w: DateWindow,
    ) -> Result<bool, ConnectorError> {
        let sca_from = sub_days(self.today(), GATE_DAYS);
        let twofa = self
            .session
            .as_ref()
            .and_then(|s| s.contracts.get(account.contract))
            .is_some_and(|c| c.twofa);
        loop {
            let h = self.histories.entry(provider_id.to_owned()).or_default();
            if h.page == 0 {
                h.page = PAGE_ROWS;
            }
            if h.exhausted || h.oldest.is_some_and(|d| d < w.from) {
                return Ok(true);
            }
            if h.gated_at.is_some() && !twofa {
                // Everything the bank serves without 2FA is read: the window
                // is complete if it starts on or after the boundary.
                return Ok(w.from >= sca_from);
            }
            let (from, size) = (h.next, h.page);
            let what = "transactions";
            let mut url = self.url(&["api", "user", &account.external_id, "transactions"]);
            url.query_pairs_mut()
                .append_pair("contract_id", &account.internal_id)
                .append_pair("range", &format!("{from}-{}", from + size - 1));
            match self
                .contract_get(what, account.contract, url, MAX_JSON_BYTES)
                .await?
            {
                Ok((_, body)) => {
                    let rows = map_transaction_page(&body, account.currency)?;
                    let h = self.histories.entry(provider_id.to_owned()).or_default();
                    if rows.len() > size as usize {
                        return Err(malformed(
                            what,
                            format!("asked for {size} rows, got {}", rows.len()),
                        ));
                    }
                    for r in &rows {
                        if h.oldest.is_some_and(|o| r.booking_date > o) {
                            return Err(malformed(
                                what,
                                format!(
                                    "rows are not newest first: {} after {}",
                                    r.booking_date,
                                    h.oldest.unwrap_or_default()
                                ),
                            ));
                        }
                        h.oldest = Some(r.booking_date);
                    }
                    if rows.len() < size as usize {
                        h.exhausted = true;
                    }
                    h.next += rows.len() as u32;
                    h.rows.extend(rows);
                }
                Err((StatusCode::FORBIDDEN, code, body)) if code == "2FA_REQUIRED" => {
                    if twofa {
                        return Err(rejected(what, StatusCode::FORBIDDEN, &body));
                    }
                    let h = self.histories.entry(provider_id.to_owned()).or_default();
                    if h.page > 1 {
                        h.page = (h.page / 2).max(1);
                    } else {
                        tracing::debug!(index = h.next, "keypad: the 2FA gate starts here");
                        h.gated_at = Some(h.next);
                    }
                }
                Err((status, _, body)) => return Err(rejected(what, status, &body)),
            }
        }
    }
}

/// `d` minus `n` days.
fn sub_days(d: NaiveDate, n: u32) -> NaiveDate {
    d.checked_sub_days(chrono::Days::new(u64::from(n)))
        .unwrap_or(NaiveDate::MIN)
}

#[async_trait]
impl Connector for KeypadConnector {
    fn name(&self) -> &'static str {
        "keypad"
    }

    /// No date filter (index pages), history as deep as the account, the
    /// 90-day 2FA gate, no published quota.
    fn limits(&self) -> ConnectorLimits {
        ConnectorLimits {
            max_window_days: None,
            max_history_days: None,
            sca_after_days: Some(GATE_DAYS),
            daily_request_budget: None,
        }
    }

    fn today(&self) -> NaiveDate {
        self.bank_now().with_timezone(&Paris).date_naive()
    }

    /// Reuse the kept contract tokens (refreshed when close to expiry);
    /// otherwise one PIN login.
    async fn login(&mut self) -> Result<(), ConnectorError> {
        if self.session.is_some() {
            let n = self.session.as_ref().map_or(0, |s| s.contracts.len());
            let mut result = Ok(());
            for c in 0..n {
                if let Err(e) = self.contract_token(c).await {
                    result = Err(e);
                    break;
                }
            }
            match result {
                Ok(()) if n > 0 => {
                    tracing::debug!("keypad: reusing the kept tokens");
                    return Ok(());
                }
                Ok(()) | Err(ConnectorError::SessionExpired) => {}
                Err(e) => return Err(e),
            }
        }
        self.pin_login().await
    }

    fn session_state(&self) -> Option<Secret<String>> {
        let s = self.session.as_ref()?;
        let saved = SavedSession {
            v: 1,
            login: s.login.as_ref().map(save_tokens),
            contracts: s
                .contracts
                .iter()
                .map(|c| SavedContract {
                    id: c.id.clone(),
                    tokens: save_tokens(&c.tokens),
                })
                .collect(),
            skew_secs: self.skew_secs.load(Ordering::Relaxed),
        };
        serde_json::to_string(&saved).ok().map(Secret::new)
    }

    fn restore_session(&mut self, state: Secret<String>) {
        let Ok(saved) = serde_json::from_str::<SavedSession>(state.expose()) else {
            tracing::warn!("keypad: ignoring a kept session in an unknown format");
            return;
        };
        if saved.v != 1 {
            tracing::warn!(
                v = saved.v,
                "keypad: ignoring a kept session of another version"
            );
            return;
        }
        let contracts: Option<Vec<Contract>> = saved
            .contracts
            .into_iter()
            .map(|c| {
                Some(Contract {
                    id: c.id,
                    tokens: load_tokens(c.tokens)?,
                    twofa: false,
                })
            })
            .collect();
        let Some(contracts) = contracts else {
            return;
        };
        self.skew_secs.store(saved.skew_secs, Ordering::Relaxed);
        self.session = Some(Session {
            login: saved.login.and_then(load_tokens),
            contracts,
        });
    }

    async fn accounts(&mut self) -> Result<Vec<FetchedAccount>, ConnectorError> {
        let n = self
            .session
            .as_ref()
            .map(|s| s.contracts.len())
            .ok_or(ConnectorError::SessionExpired)?;
        let mut out = Vec::new();
        self.accounts.clear();
        for contract in 0..n {
            let id = self
                .session
                .as_ref()
                .and_then(|s| s.contracts.get(contract))
                .map(|c| c.id.clone())
                .ok_or(ConnectorError::SessionExpired)?;
            let mut url = self.url(&["api", "user", "accounts"]);
            url.query_pairs_mut()
                .append_pair("type", "current")
                .append_pair("contract_id", &short_contract_id(&id))
                .append_pair("is_eligible_for_identity", "false")
                .append_pair("include_aggregate_account", "false");
            let v = self.contract_json("accounts", contract, url).await?;
            for (fetched, mut account) in map_accounts(&v)? {
                account.contract = contract;
                self.accounts.insert(fetched.provider_id.clone(), account);
                out.push(fetched);
            }
        }
        Ok(out)
    }

    async fn window(
        &mut self,
        account: &FetchedAccount,
        window: DateWindow,
    ) -> Result<WindowPage, ConnectorError> {
        let acc = self
            .accounts
            .get(&account.provider_id)
            .cloned()
            .ok_or_else(|| {
                ConnectorError::Other(format!(
                    "account {} was not listed in this session",
                    account.provider_id
                ))
            })?;
        if !self.fill(&account.provider_id, &acc, window).await? {
            let challenge = self.start_2fa(acc.contract, account).await?;
            return Err(ConnectorError::ScaRequired(challenge));
        }
        let h = self
            .histories
            .get_mut(&account.provider_id)
            .ok_or_else(|| ConnectorError::Other("no history read".into()))?;
        // Served rows are dropped: the engine never asks for a day twice in a run.
        let (inside, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut h.rows)
            .into_iter()
            .partition(|t| window.contains(t.booking_date));
        h.rows = rest;
        let balances = acc
            .balance
            .filter(|b| window.contains(b.reference_date))
            .into_iter()
            .collect();
        Ok(WindowPage {
            transactions: inside,
            balances,
        })
    }

    async fn resume_sca(&mut self, answer: &ScaAnswer) -> Result<ScaProgress, ConnectorError> {
        let Some(pending) = self.pending_2fa.clone() else {
            return Err(ConnectorError::Other(
                "no 2FA request is waiting for an answer".into(),
            ));
        };
        match answer {
            ScaAnswer::Approved | ScaAnswer::Code(_) | ScaAnswer::Returned(_) => {}
            ScaAnswer::Declined | ScaAnswer::NotNow | ScaAnswer::Unavailable(_) => {
                // The request expires by itself at the bank.
                self.pending_2fa = None;
                return Err(ConnectorError::ScaFailed("declined".into()));
            }
        }
        let what = "2FA status";
        let url = self.url(&["api", "auth", "2fa", &pending.request_id]);
        let v = self.contract_json(what, pending.contract, url).await?;
        let status = v.get("status").and_then(Value::as_str).unwrap_or("");
        match status {
            "pending" => Ok(ScaProgress::Pending {
                poll_after: Duration::from_secs(POLL_SECS),
            }),
            "approved" => {
                self.pending_2fa = None;
                if let Some(c) = self
                    .session
                    .as_mut()
                    .and_then(|s| s.contracts.get_mut(pending.contract))
                {
                    c.twofa = true;
                }
                // The gate is lifted: read on from where it stood, full pages.
                for (id, acc) in &self.accounts {
                    if acc.contract == pending.contract
                        && let Some(h) = self.histories.get_mut(id)
                    {
                        h.gated_at = None;
                        h.page = PAGE_ROWS;
                    }
                }
                tracing::info!(contract = pending.contract, "keypad: 2FA approved");
                Ok(ScaProgress::Done)
            }
            "expired" => {
                self.pending_2fa = None;
                Err(ConnectorError::ScaFailed(
                    "the 2FA request expired before it was approved; sync again to get a new one"
                        .into(),
                ))
            }
            "declined" => {
                self.pending_2fa = None;
                Err(ConnectorError::ScaFailed(
                    "the 2FA request was declined on the trusted device".into(),
                ))
            }
            other => Err(malformed(what, format!("unknown status {other:?}"))),
        }
    }

    async fn documents(&mut self) -> Result<Vec<FetchedDocument>, ConnectorError> {
        let contracts: Vec<String> = self
            .session
            .as_ref()
            .ok_or(ConnectorError::SessionExpired)?
            .contracts
            .iter()
            .map(|c| c.id.clone())
            .collect();
        let ibans: Vec<(String, String)> = self
            .accounts
            .keys()
            .filter_map(|provider_id| {
                Iban::parse(provider_id)
                    .ok()
                    .map(|i| (i.to_string(), provider_id.clone()))
            })
            .collect();
        let mut out: Vec<FetchedDocument> = Vec::new();
        self.documents.clear();
        for (contract, id) in contracts.iter().enumerate() {
            for (list, kind) in [
                ("accounts_statements", "statement"),
                ("documents", "document"),
            ] {
                let url = self.url(&["api", "user", "documents", list]);
                let v = self.contract_json("documents", contract, url).await?;
                let entries = v
                    .get("documents")
                    .and_then(Value::as_array)
                    .ok_or_else(|| malformed("documents", format!("{list}: no documents array")))?;
                for e in entries {
                    let doc = map_document(e, kind, id, &ibans)?;
                    if self
                        .documents
                        .insert(doc.provider_id.clone(), contract)
                        .is_none()
                    {
                        out.push(doc);
                    }
                }
            }
        }
        Ok(out)
    }

    async fn download(&mut self, doc: &FetchedDocument) -> Result<DocumentContent, ConnectorError> {
        let contract = *self.documents.get(&doc.provider_id).ok_or_else(|| {
            ConnectorError::Other(format!(
                "document {:?} was not listed in this session",
                doc.title
            ))
        })?;
        let what = "document download";
        let mut url = self.url(&["api", "user", "documents", "download"]);
        url.query_pairs_mut()
            .append_pair("token", doc.locator.expose());
        match self
            .contract_get(what, contract, url, MAX_DOCUMENT_BYTES)
            .await?
        {
            Ok((headers, bytes)) => {
                let content_type = headers
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::trim)
                    .filter(|v| !v.is_empty() && v.contains('/'))
                    .unwrap_or("application/octet-stream")
                    .to_owned();
                Ok(DocumentContent {
                    content_type,
                    bytes,
                })
            }
            Err((status, _, body)) => Err(rejected(
                &format!("{what} of {:?}", doc.title),
                status,
                &body,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn raw(v: &str) -> Box<RawValue> {
        RawValue::from_string(v.to_owned()).unwrap()
    }

    fn eur() -> Currency {
        "EUR".parse().unwrap()
    }

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    #[test]
    fn the_articles_keypad_decodes() {
        // The article's field starts `13236373539383433303`; a 16-digit seed follows.
        let seed = "4096123456789012";
        let field = format!("13236373539383433303{}", obfuscate(seed.bytes()));
        let (s, keys) = decode_keypad(&field).unwrap();
        assert_eq!(keys, [0, 3, 4, 8, 9, 5, 7, 6, 2, 1]);
        assert_eq!(s, seed);
        assert_eq!(obfuscate(seed.bytes().chain(*b"0348957621")), field);
    }

    #[test]
    fn the_articles_pin_encodes() {
        let keys = [0, 3, 4, 8, 9, 5, 7, 6, 2, 1];
        let token = encode_pin("4096123456789012", &keys, "011000").unwrap();
        // Indices 0 9 9 0 0 0 ("099000"), hex "303939303030", reversed.
        assert!(token.starts_with("030303939303"), "{token}");
        assert_eq!(token.len(), 2 * (16 + 6));
        // The seed comes back after the mangled PIN.
        assert!(token.ends_with(&obfuscate("4096123456789012".bytes())));
    }

    #[test]
    fn malformed_fields_are_clear_errors() {
        assert_eq!(decode_keypad(""), Err(KeypadError::NotHex));
        assert_eq!(decode_keypad("123"), Err(KeypadError::NotHex));
        assert_eq!(decode_keypad("zz"), Err(KeypadError::NotHex));
        // 0x41 'A' (reversed "14") is not a digit.
        assert_eq!(decode_keypad("14"), Err(KeypadError::NotDigits));
        // Only the 10 keys, no seed.
        assert_eq!(
            decode_keypad("13236373539383433303"),
            Err(KeypadError::TooShort(10))
        );
        // A key twice.
        let twice = obfuscate(b"12".iter().copied().chain(*b"0348957622"));
        assert_eq!(decode_keypad(&twice), Err(KeypadError::BadKeys));
        let keys = [0, 3, 4, 8, 9, 5, 7, 6, 2, 1];
        assert_eq!(encode_pin("1", &keys, "12a456"), Err(KeypadError::BadPin));
        assert_eq!(encode_pin("1", &keys, ""), Err(KeypadError::BadPin));
        assert_eq!(encode_pin("x", &keys, "1"), Err(KeypadError::BadSeed));
        assert_eq!(
            encode_pin("1", &[0, 0, 4, 8, 9, 5, 7, 6, 2, 1], "1"),
            Err(KeypadError::BadKeys)
        );
        assert!(
            KeypadError::TooShort(3)
                .to_string()
                .contains("seed and 10 keys"),
            "errors say what is wrong"
        );
    }

    /// Undo [`encode_pin`] the way the bank does.
    fn bank_reads(token: &str, keys: &[u8; 10], seed_len: usize) -> (String, String) {
        let rev: Vec<u8> = token.bytes().rev().collect();
        let chars: Vec<u8> = rev
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect();
        let (seed, mangled) = chars.split_at(seed_len);
        let pin = mangled
            .iter()
            .map(|m| (b'0' + keys[usize::from(m - b'0')]) as char)
            .collect();
        (String::from_utf8(seed.to_vec()).unwrap(), pin)
    }

    proptest! {
        #[test]
        fn random_layouts_round_trip(
            perm in Just((0u8..10).collect::<Vec<_>>()).prop_shuffle(),
            seed in "[0-9]{1,24}",
            pin in "[0-9]{6}",
        ) {
            let keys: [u8; 10] = perm.clone().try_into().unwrap();
            let field = obfuscate(seed.bytes().chain(keys.iter().map(|k| b'0' + k)));
            let (s, k) = decode_keypad(&field).unwrap();
            prop_assert_eq!(&s, &seed);
            prop_assert_eq!(k, keys);
            let token = encode_pin(&s, &k, &pin).unwrap();
            prop_assert_eq!(bank_reads(&token, &keys, seed.len()), (seed.clone(), pin.clone()));
        }

        #[test]
        fn any_text_is_an_answer_not_a_panic(field in ".{0,80}") {
            let _ = decode_keypad(&field);
        }
    }

    #[test]
    fn contract_ids_lose_their_last_two_base64_characters() {
        assert_eq!(short_contract_id("CT123"), "Q1QxMj");
        assert_eq!(short_contract_id(""), "");
    }

    #[test]
    fn a_row_maps_every_field_exactly() {
        let text = r#"{"label": "CB  BOULANGERIE 24/08", "booking_date_time": "2023-08-25T00:00:00.000Z",
            "is_accounted": true, "are_details_available": false,
            "amount": {"value": -5.32, "currency": "EUR"}, "movement_code_type": 948,
            "nature": "FACTURE CARTE DU 240823 BOULANGERIE PARIS CARTE 4974XXXXXXXX1234"}"#;
        let t = map_transaction(&raw(text), eur()).unwrap();
        assert_eq!(t.provider_id, None);
        assert_eq!(t.status, TxStatus::Booked);
        assert_eq!(t.booking_date, d(2023, 8, 25));
        assert_eq!(t.amount.to_string(), "-5.32");
        assert_eq!(t.currency, eur());
        assert_eq!(t.raw_label, "CB  BOULANGERIE 24/08");
        assert_eq!(t.label, "CB BOULANGERIE 24/08");
        assert_eq!(t.bank_code.as_deref(), Some("948"));
        assert_eq!(
            t.remittance_info.as_deref(),
            Some("FACTURE CARTE DU 240823 BOULANGERIE PARIS CARTE 4974XXXXXXXX1234")
        );
        assert_eq!(t.raw["amount"]["currency"], "EUR");
        assert_eq!(t.raw["movement_code_type"], 948);
    }

    #[test]
    fn amounts_are_the_numbers_text_never_a_float() {
        for (json_value, exact) in [
            ("-5.32", "-5.32"),
            ("12", "12"),
            ("-5.3", "-5.3"),
            ("0.1", "0.1"),
            ("1234567890123456.78", "1234567890123456.78"),
            ("\"-7.05\"", "-7.05"),
            ("1e2", "100"),
        ] {
            let text = format!(
                r#"{{"label": "X", "booking_date_time": "2024-01-02T00:00:00.000Z", "amount": {{"value": {json_value}, "currency": "EUR"}}}}"#
            );
            let t = map_transaction(&raw(&text), eur()).unwrap();
            assert_eq!(t.amount.to_string(), exact, "{json_value}");
        }
    }

    #[test]
    fn optional_fields_and_pending_rows() {
        let t = map_transaction(
            &raw(r#"{"label": "", "booking_date_time": "2024-03-31T22:30:00.000Z", "is_accounted": "false",
                     "amount": {"value": 10}, "nature": "VIR SEPA RECU /DE ACME"}"#),
            eur(),
        )
        .unwrap();
        assert_eq!(t.status, TxStatus::Pending);
        assert_eq!(
            t.booking_date,
            d(2024, 4, 1),
            "the Paris day, not the UTC one"
        );
        assert_eq!(
            t.currency,
            eur(),
            "the account's currency when the row has none"
        );
        assert_eq!(t.bank_code, None);
        assert_eq!(
            t.label, "VIR SEPA RECU /DE ACME",
            "an empty label falls back on nature"
        );
        assert_eq!(t.raw_label, "");
    }

    #[test]
    fn bad_rows_are_malformed_not_panics() {
        for bad in [
            r#"[1]"#,
            r#"{"label": "X"}"#,
            r#"{"label": "X", "booking_date_time": "yesterday", "amount": {"value": 1}}"#,
            r#"{"label": "X", "booking_date_time": "2024-01-01", "amount": {"value": "abc"}}"#,
            r#"{"label": "X", "booking_date_time": "2024-01-01", "amount": {"value": true}}"#,
            r#"{"label": "X", "booking_date_time": "2024-01-01"}"#,
            r#"{"label": "X", "booking_date_time": "2024-01-01", "amount": {"value": 1, "currency": "EURO"}}"#,
            r#"{"label": 5, "booking_date_time": "2024-01-01", "amount": {"value": 1}}"#,
            r#"{"label": "X", "booking_date_time": "2024-01-01", "amount": {"value": 1}, "is_accounted": 3}"#,
        ] {
            assert!(
                matches!(
                    map_transaction(&raw(bad), eur()),
                    Err(ConnectorError::Malformed { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            map_transaction_page(br#"{"isFailover": false}"#, eur()),
            Err(ConnectorError::Malformed { .. })
        ));
        assert!(matches!(
            map_transaction_page(br#"{"accountTransactions": [{"lab"#, eur()),
            Err(ConnectorError::Transient { .. })
        ));
        let page = map_transaction_page(
            br#"{"isFailover": false, "accountTransactions": []}"#,
            eur(),
        )
        .unwrap();
        assert!(page.is_empty());
    }

    #[test]
    fn accounts_map_with_their_balance() {
        let answer = json!({"total": "1520.10", "accounts": [{"type": "current", "iban": "FR7630006000011234567890189",
            "amount": {"date": "2023-08-25T22:45:46.892+0200", "value": "1520.10", "currenty": "EUR"},
            "internal_id": "INT-1", "external_id": "EXT-1"}]});
        let [(a, r)] = &map_accounts(&answer).unwrap()[..] else {
            panic!("one account")
        };
        assert_eq!(a.provider_id, "FR7630006000011234567890189");
        assert_eq!(a.currency, eur());
        assert_eq!(a.kind.as_deref(), Some("current"));
        assert_eq!(r.external_id, "EXT-1");
        assert_eq!(r.internal_id, "INT-1");
        let b = r.balance.as_ref().unwrap();
        assert_eq!(b.amount.to_string(), "1520.10");
        assert_eq!(b.reference_date, d(2023, 8, 25));
        assert_eq!(b.kind, BalanceKind::ClosingBooked);
        for bad in [
            json!({}),
            json!({"accounts": [{"iban": "FR76"}]}),
            json!({"accounts": [{"external_id": "E", "internal_id": "I", "iban": "FR0000"}]}),
            json!({"accounts": [3]}),
        ] {
            assert!(map_accounts(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn documents_get_a_stable_key_that_is_not_the_token() {
        let e = json!({"codsoufamdoc_1": "AST", "datprddoccli": "2020-12-02", "downloadToken": "tok-123",
            "liblg_typdoc": "Relevé de compte courant FR76 3000 6000 0112 3456 7890 189 - novembre 2020",
            "libsoufamdoc_1": "Relevés de comptes"});
        let ibans = vec![(
            "FR7630006000011234567890189".to_owned(),
            "FR7630006000011234567890189".to_owned(),
        )];
        let doc = map_document(&e, "statement", "C1", &ibans).unwrap();
        assert!(doc.provider_id.starts_with("dt:"));
        assert!(!doc.provider_id.contains("tok-123"));
        assert_eq!(
            doc.provider_id,
            map_document(&e, "statement", "C1", &[])
                .unwrap()
                .provider_id
        );
        assert_ne!(
            doc.provider_id,
            map_document(&e, "statement", "C2", &[])
                .unwrap()
                .provider_id
        );
        assert_eq!(doc.date, Some(d(2020, 12, 2)));
        assert_eq!(doc.category.as_deref(), Some("Relevés de comptes"));
        assert_eq!(doc.account.as_deref(), Some("FR7630006000011234567890189"));
        assert_eq!(doc.locator.expose(), "tok-123");
        assert!(!format!("{doc:?}").contains("tok-123"));
        assert!(map_document(&json!({"liblg_typdoc": "x"}), "document", "C1", &[]).is_err());
    }

    #[test]
    fn settings_are_checked_and_secrets_never_print() {
        let settings = ConnectionSettings::new("http://127.0.0.1:1/keypad", "12345678901");
        let ok =
            KeypadConnector::new(&settings, Credentials::with_password("123456".into())).unwrap();
        let printed = format!("{ok:?}");
        assert!(!printed.contains("123456\""), "{printed}");
        assert!(printed.contains("[redacted]"));
        assert_eq!(
            ok.url(&["api", "user", "a b/c", "transactions"]).as_str(),
            "http://127.0.0.1:1/keypad/api/user/a%20b%2Fc/transactions"
        );
        for (base, user, pin) in [
            ("http://127.0.0.1:1/keypad", "123", "12a456"),
            ("http://127.0.0.1:1/keypad", "", "123456"),
            ("ftp://x", "1", "123456"),
            ("", "1", "123456"),
        ] {
            assert!(
                KeypadConnector::new(
                    &ConnectionSettings::new(base, user),
                    Credentials::with_password(pin.into())
                )
                .is_err(),
                "{base} {user}"
            );
        }
        let mut c = ok;
        c.restore_session(Secret::from(
            r#"{"v":1,"login":null,"contracts":[{"id":"C1","access":"acc-SECRET","refresh":"ref-SECRET","expires_at":1900000000}],"skew_secs":0}"#,
        ));
        let state = c.session_state().unwrap();
        assert!(state.expose().contains("acc-SECRET"));
        assert_eq!(format!("{state:?}"), "[redacted]");
        assert!(!format!("{c:?}").contains("SECRET"));
    }
}
