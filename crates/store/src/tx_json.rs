//! Transactions read straight into JSON: the read path of the API's
//! transaction pages and of the JSON export.
//!
//! The typed path (`Transaction` from each row, then `serde_json`) builds
//! a dozen strings per row, re-validates the raw record and re-parses three
//! instants only to write them out again. Here each backend writes the row's
//! JSON object into the caller's buffer from the row itself, in the same
//! shape and key order as `serde_json::to_vec(&Transaction)` (the store
//! suite checks they are byte for byte the same, on both backends):
//!
//! - SQLite (`sqlite_json`): rows are stepped with rusqlite and each value
//!   is read in place; text is copied as bytes and the row checked to be
//!   UTF-8 once.
//! - PostgreSQL: a row arrives as one buffer that sqlx decodes in place, so
//!   the writer reads each column borrowed (the raw record needs no check:
//!   PostgreSQL checks a `json` value on the way in).
//!
//! Money is the one field not copied as stored: it is written in its
//! currency's minor units (`Currency::money`), copied when the stored text
//! already is (the usual case), else parsed and rescaled.
//!
//! What stays here is backend-neutral: the page and chunk types and the
//! writers for the values both backends put out.
use std::io::Write as _;

use bankbridge_core::Currency;
use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};
use rust_decimal::Decimal;

use crate::{Result, codec};

/// A page of transactions written as JSON objects separated by commas.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JsonPage {
    /// Rows written.
    pub rows: usize,
    /// When more rows follow: the (booking date, id) of the last row
    /// written, where the next page starts (`TxQuery::after`).
    pub more_after: Option<(NaiveDate, i64)>,
}

/// Whole rows of a streamed query: JSON objects separated by ",\n", with
/// nothing after the last (the reader puts ",\n" between two chunks).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JsonChunk {
    pub bytes: Vec<u8>,
    pub rows: u64,
}

/// Bytes of rows gathered before a [`JsonChunk`] is handed on.
pub(crate) const CHUNK_BYTES: usize = 32 * 1024;

/// Separator between two rows of a [`JsonChunk`] stream.
pub(crate) const ROW_SEPARATOR: &[u8] = b",\n";

/// A transaction row as the JSON writer reads it, columns numbered as in
/// `common::tx_columns`. Each backend reads its own row type its own way
/// (SQLite stores dates, instants and money as text, PostgreSQL as typed
/// values); [`write_transaction`] decides the shape once for both.
pub(crate) trait TxRow {
    fn int(&self, column: usize) -> Result<i64>;
    /// Text (or NULL) as a JSON string (or `null`).
    fn text(&self, out: &mut Vec<u8>, column: usize) -> Result<()>;
    /// A date (or NULL) as `"YYYY-MM-DD"`.
    fn date(&self, out: &mut Vec<u8>, column: usize) -> Result<()>;
    fn currency(&self, column: usize) -> Result<Option<Currency>>;
    /// An amount (or NULL) in `currency`'s minor units ([`money`]).
    fn money(&self, out: &mut Vec<u8>, column: usize, currency: Currency) -> Result<()>;
    /// An instant as `DateTime<Utc>` serialises.
    fn instant(&self, out: &mut Vec<u8>, column: usize) -> Result<()>;
    /// The bank's raw record as stored: JSON checked when it was written.
    fn raw(&self, out: &mut Vec<u8>, column: usize) -> Result<()>;
}

/// How a field of the object is written.
enum Field {
    Int(usize),
    Text(usize),
    Date(usize),
    /// Money in the row's currency, or in the original currency (falling
    /// back to the row's).
    Money(usize, Which),
    Currency(Which),
    Raw(usize),
    Instant(usize),
}

#[derive(Clone, Copy)]
enum Which {
    Row,
    Original,
}

/// The object's fields in `Transaction`'s order, with their columns in
/// `common::tx_columns`.
const FIELDS: [(&str, Field); 26] = [
    ("id", Field::Int(0)),
    ("connection_id", Field::Int(1)),
    ("account_id", Field::Int(2)),
    ("provider_id", Field::Text(3)),
    ("pending_provider_id", Field::Text(4)),
    ("fingerprint", Field::Text(5)),
    ("status", Field::Text(6)),
    ("booking_date", Field::Date(7)),
    ("value_date", Field::Date(8)),
    ("transaction_date", Field::Date(9)),
    ("amount", Field::Money(10, Which::Row)),
    ("currency", Field::Currency(Which::Row)),
    ("original_amount", Field::Money(12, Which::Original)),
    ("original_currency", Field::Currency(Which::Original)),
    ("running_balance", Field::Money(20, Which::Row)),
    ("raw_label", Field::Text(14)),
    ("label", Field::Text(15)),
    ("counterparty_name", Field::Text(16)),
    ("counterparty_iban", Field::Text(17)),
    ("remittance_info", Field::Text(18)),
    ("bank_code", Field::Text(19)),
    ("raw", Field::Raw(21)),
    ("category", Field::Text(25)),
    ("first_seen", Field::Instant(22)),
    ("last_seen", Field::Instant(23)),
    ("updated_at", Field::Instant(24)),
];

/// Column of the row's currency and of the original currency.
const CURRENCY: usize = 11;
const ORIGINAL_CURRENCY: usize = 13;

/// Write `row` as the JSON object of its `Transaction`: the same bytes
/// `serde_json::to_vec(&transaction)` gives.
pub(crate) fn write_transaction(row: &impl TxRow, out: &mut Vec<u8>) -> Result<()> {
    let currency = row
        .currency(CURRENCY)?
        .ok_or_else(|| crate::common::corrupt("a transaction without a currency"))?;
    let original = row.currency(ORIGINAL_CURRENCY)?;
    out.push(b'{');
    for (i, (name, field)) in FIELDS.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        key(out, name);
        match *field {
            Field::Int(c) => int(out, row.int(c)?),
            Field::Text(c) => row.text(out, c)?,
            Field::Date(c) => row.date(out, c)?,
            Field::Money(c, Which::Row) => row.money(out, c, currency)?,
            Field::Money(c, Which::Original) => row.money(out, c, original.unwrap_or(currency))?,
            Field::Currency(Which::Row) => string_bytes(out, currency.as_str().as_bytes()),
            Field::Currency(Which::Original) => {
                opt_string_bytes(out, original.as_ref().map(|c| c.as_str().as_bytes()))
            }
            Field::Raw(c) => row.raw(out, c)?,
            Field::Instant(c) => row.instant(out, c)?,
        }
    }
    out.push(b'}');
    Ok(())
}

/// `"key":` — keys are our own field names, which need no escaping.
pub(crate) fn key(out: &mut Vec<u8>, name: &str) {
    out.push(b'"');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// Text as a JSON string, escaped exactly as `serde_json` escapes a `str`
/// (quote, backslash and control characters; nothing else), from bytes the
/// caller checks to be UTF-8.
pub(crate) fn string_bytes(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    let mut run = 0;
    for (i, &b) in s.iter().enumerate() {
        let escape = ESCAPE[usize::from(b)];
        if escape == 0 {
            continue;
        }
        out.extend_from_slice(&s[run..i]);
        if escape == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let (hi, lo) = (HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]);
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', hi, lo]);
        } else {
            out.extend_from_slice(&[b'\\', escape]);
        }
        run = i + 1;
    }
    out.extend_from_slice(&s[run..]);
    out.push(b'"');
}

/// Per byte: 0 when it goes out as it is, else the letter after the
/// backslash (`u` for `\u00XX`). One lookup per byte keeps the common case,
/// a byte that needs nothing, to a load and a compare.
const ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

pub(crate) fn opt_string_bytes(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => string_bytes(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

pub(crate) fn int(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `"YYYY-MM-DD"`, as `NaiveDate` serialises.
pub(crate) fn date(out: &mut Vec<u8>, d: NaiveDate) {
    if (0..=9999).contains(&d.year()) {
        let _ = write!(out, "\"{:04}-{:02}-{:02}\"", d.year(), d.month(), d.day());
    } else {
        string_bytes(out, d.to_string().as_bytes());
    }
}

pub(crate) fn opt_date(out: &mut Vec<u8>, d: Option<NaiveDate>) {
    match d {
        Some(d) => date(out, d),
        None => out.extend_from_slice(b"null"),
    }
}

/// RFC 3339 in UTC with `Z` and 0, 3, 6 or 9 fractional digits, as
/// `DateTime<Utc>` serialises.
pub(crate) fn instant(out: &mut Vec<u8>, t: DateTime<Utc>) {
    let d = t.date_naive();
    if !(0..=9999).contains(&d.year()) {
        let _ = serde_json::to_writer(&mut *out, &t);
        return;
    }
    let _ = write!(
        out,
        "\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        d.year(),
        d.month(),
        d.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let nanos = t.nanosecond();
    let _ = match nanos {
        0 => Ok(()),
        n if n % 1_000_000 == 0 => write!(out, ".{:03}", n / 1_000_000),
        n if n % 1_000 == 0 => write!(out, ".{:06}", n / 1_000),
        n => write!(out, ".{n:09}"),
    };
    out.extend_from_slice(b"Z\"");
}

/// An amount as the string `Currency::money` makes of it.
pub(crate) fn money(out: &mut Vec<u8>, amount: Decimal, currency: Currency) {
    let _ = write!(out, "\"{}\"", currency.money(amount));
}

/// An amount stored as exact decimal text: copied when it already is in
/// money form (the usual case), else parsed and rescaled.
pub(crate) fn money_text(out: &mut Vec<u8>, text: &str, currency: Currency) -> Result<()> {
    if in_money_form(text, currency.minor_units()) {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        money(out, codec::decimal(text)?, currency);
    }
    Ok(())
}

/// Whether `text` is what `Currency::money` would write for its value:
/// digits without leading zeros, exactly `places` decimals, and no minus
/// before a zero.
fn in_money_form(text: &str, places: u32) -> bool {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = match digits.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (digits, None),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let whole_ok =
        !whole.is_empty() && all_digits(whole) && (whole == "0" || !whole.starts_with('0'));
    let fraction_ok = match fraction {
        None => places == 0,
        Some(f) => places > 0 && f.len() == places as usize && all_digits(f),
    };
    let zero = digits.bytes().all(|b| b == b'0' || b == b'.');
    whole_ok && fraction_ok && !(negative && zero)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn stored_money_text_comes_out_as_money_would_write_it() {
        for (text, currency) in [
            ("-8", "EUR"),
            ("-8.5", "EUR"),
            ("-8.50", "EUR"),
            ("-8.500", "EUR"),
            ("8.125", "EUR"),
            ("0.10", "BGN"),
            ("0", "EUR"),
            ("-0.00", "EUR"),
            ("-0", "JPY"),
            ("1500", "JPY"),
            ("1500.00", "JPY"),
            ("1500.5", "JPY"),
            ("0.001", "KWD"),
            ("12.3", "KWD"),
            ("12345678901.23", "BGN"),
            ("-98765432109.87", "BGN"),
            ("7", "CLF"),
            ("1e5", "EUR"),
            ("00.5", "EUR"),
        ] {
            let currency: Currency = currency.parse().unwrap();
            let mut out = Vec::new();
            money_text(&mut out, text, currency).unwrap();
            let expected = format!("\"{}\"", currency.money(Decimal::from_str(text).unwrap()));
            assert_eq!(
                String::from_utf8(out).unwrap(),
                expected,
                "{text} {currency:?}"
            );
        }
        let eur: Currency = "EUR".parse().unwrap();
        assert!(money_text(&mut Vec::new(), "12,50", eur).is_err());
        assert!(money_text(&mut Vec::new(), "", eur).is_err());
    }

    #[test]
    fn text_is_escaped_as_serde_escapes_it() {
        let mut all: String = (0u8..0x80).map(char::from).collect();
        all.push_str("é Кирилица 🧾 \u{2028}\u{feff} end\\\"");
        for s in [all.as_str(), "", "plain", "\"", "\\", "a\u{1}b", "\u{7f}"] {
            let mut out = Vec::new();
            string_bytes(&mut out, s.as_bytes());
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(s).unwrap(),
                "{s:?}"
            );
        }
    }

    #[test]
    fn instants_and_dates_are_written_as_serde_writes_them() {
        let base = DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        for nanos in [
            0u32,
            1_000,
            123_000,
            123_456_000,
            120_000_000,
            5,
            999_999_999,
        ] {
            let t = base + chrono::Duration::nanoseconds(i64::from(nanos));
            let mut out = Vec::new();
            instant(&mut out, t);
            assert_eq!(out, serde_json::to_vec(&t).unwrap(), "{nanos}");
        }
        for d in [
            NaiveDate::from_ymd_opt(2024, 2, 29).unwrap(),
            NaiveDate::from_ymd_opt(1, 1, 1).unwrap(),
            NaiveDate::from_ymd_opt(-5, 1, 1).unwrap(),
            NaiveDate::from_ymd_opt(10_000, 12, 31).unwrap(),
        ] {
            let mut out = Vec::new();
            date(&mut out, d);
            assert_eq!(out, serde_json::to_vec(&d).unwrap(), "{d}");
        }
        let far = NaiveDate::from_ymd_opt(12_000, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc();
        let mut out = Vec::new();
        instant(&mut out, far);
        assert_eq!(out, serde_json::to_vec(&far).unwrap());
    }
}
