//! Query-string parsing for the transaction filters shared by
//! `/api/v1/transactions` and `/api/v1/export`, and the opaque page cursor.
//!
//! Parameters are parsed by hand (not through serde) so every error names the
//! parameter at fault, and unknown parameters are refused instead of silently
//! ignored (a typo such as `acount=3` would otherwise return every account).
use std::borrow::Cow;
use std::str::FromStr;

use bankbridge_core::TxStatus;
use bankbridge_store::TxQuery;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rust_decimal::Decimal;

use crate::error::ApiError;

/// Default page size of `/api/v1/transactions`.
pub const DEFAULT_LIMIT: u32 = 100;
/// Largest page size.
pub const MAX_LIMIT: u32 = 1000;
const MAX_TEXT: usize = 200;

/// The `(name, value)` pairs of a raw query string, percent-decoded.
pub fn pairs(raw: Option<&str>) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
    raw.map(|q| url::form_urlencoded::parse(q.as_bytes()).collect())
        .unwrap_or_default()
}

/// Apply one transaction filter to `q`. `Ok(false)` when `name` is not a filter.
pub fn apply_filter(q: &mut TxQuery, name: &str, value: &str) -> Result<bool, ApiError> {
    match name {
        "account" => q.account_id = Some(parse_id("account", value)?),
        "connection" => q.connection_id = Some(parse_id("connection", value)?),
        "from" => q.from = Some(parse_date("from", value)?),
        "to" => q.to = Some(parse_date("to", value)?),
        "min_amount" => q.min_amount = Some(parse_amount("min_amount", value)?),
        "max_amount" => q.max_amount = Some(parse_amount("max_amount", value)?),
        "text" => {
            let t = value.trim();
            if t.is_empty() || t.chars().count() > MAX_TEXT {
                return Err(ApiError::invalid_parameter(
                    "text",
                    format!("text must be 1 to {MAX_TEXT} characters"),
                ));
            }
            q.text = Some(t.to_owned());
        }
        "status" => {
            q.status = Some(TxStatus::parse(value).ok_or_else(|| {
                ApiError::invalid_parameter("status", "status must be pending, booked or void")
            })?)
        }
        "updated_since" => q.updated_since = Some(parse_timestamp("updated_since", value)?),
        "category" => {
            let c = value.trim();
            if c.is_empty() || c.chars().count() > MAX_TEXT {
                return Err(ApiError::invalid_parameter(
                    "category",
                    format!("category must be 1 to {MAX_TEXT} characters"),
                ));
            }
            q.category = Some(c.to_owned());
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// The error for a parameter the route does not know.
pub fn unknown(name: &str, known: &[&str]) -> ApiError {
    ApiError::invalid_parameter(
        name.to_owned(),
        format!(
            "unknown query parameter {name:?}; this route accepts: {}",
            known.join(", ")
        ),
    )
}

/// Parameters of `GET /api/v1/transactions`.
pub const TRANSACTION_PARAMS: &[&str] = &[
    "account",
    "connection",
    "from",
    "to",
    "min_amount",
    "max_amount",
    "text",
    "status",
    "updated_since",
    "category",
    "limit",
    "cursor",
    "order",
];

/// A page request of `GET /api/v1/transactions`.
#[derive(Clone, Debug, PartialEq)]
pub struct PageRequest {
    /// Filters and keyset position; `limit` is left `None` (see [`PageRequest::limit`]).
    pub query: TxQuery,
    pub limit: u32,
}

/// Parse the query string of `GET /api/v1/transactions`.
pub fn parse_page_request(raw: Option<&str>) -> Result<PageRequest, ApiError> {
    let mut query = TxQuery::default();
    let mut limit = DEFAULT_LIMIT;
    let mut seen: Vec<String> = Vec::new();
    for (name, value) in pairs(raw) {
        if seen.iter().any(|s| *s == name) {
            return Err(ApiError::invalid_parameter(
                name.clone().into_owned(),
                format!("{name} is given more than once"),
            ));
        }
        seen.push(name.clone().into_owned());
        match name.as_ref() {
            "limit" => limit = parse_limit(&value)?,
            "cursor" => query.after = Some(decode_cursor(&value)?),
            // A cursor is a position: it pages on in whichever order the
            // request names (a client passes `order` along with it).
            "order" => {
                query.newest_first = match value.as_ref() {
                    "asc" => false,
                    "desc" => true,
                    _ => {
                        return Err(ApiError::invalid_parameter(
                            "order",
                            "order must be asc (oldest first, the default) or desc (newest first)",
                        ));
                    }
                }
            }
            other => {
                if !apply_filter(&mut query, other, &value)? {
                    return Err(unknown(other, TRANSACTION_PARAMS));
                }
            }
        }
    }
    Ok(PageRequest { query, limit })
}

pub fn parse_limit(value: &str) -> Result<u32, ApiError> {
    let bad = || {
        ApiError::invalid_parameter(
            "limit",
            format!("limit must be a whole number from 1 to {MAX_LIMIT}"),
        )
    };
    let n: u64 = value.trim().parse().map_err(|_| bad())?;
    if !(1..=u64::from(MAX_LIMIT)).contains(&n) {
        return Err(bad());
    }
    Ok(n as u32)
}

fn parse_id(name: &'static str, value: &str) -> Result<i64, ApiError> {
    value
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| {
            ApiError::invalid_parameter(name, format!("{name} must be a positive numeric id"))
        })
}

fn parse_date(name: &'static str, value: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(value.trim(), "%Y-%m-%d").map_err(|_| {
        ApiError::invalid_parameter(name, format!("{name} must be a date as YYYY-MM-DD"))
    })
}

fn parse_amount(name: &'static str, value: &str) -> Result<Decimal, ApiError> {
    Decimal::from_str(value.trim()).map_err(|_| {
        ApiError::invalid_parameter(
            name,
            format!("{name} must be a decimal number such as -12.50"),
        )
    })
}

fn parse_timestamp(name: &'static str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    let v = value.trim();
    DateTime::parse_from_rfc3339(v)
        // An unencoded '+' in a query string arrives as a space.
        .or_else(|e| {
            if v.contains(' ') {
                DateTime::parse_from_rfc3339(&v.replace(' ', "+"))
            } else {
                Err(e)
            }
        })
        .map(|d| d.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::invalid_parameter(
                name,
                format!("{name} must be an RFC 3339 timestamp such as 2024-03-01T00:00:00Z"),
            )
        })
}

/// The opaque cursor that follows the row at (`booking_date`, `id`): the
/// day (days from the common era, i32) and the id (i64), big-endian, in 16
/// base64url characters. Every such string is a position (a day out of
/// range is taken as the first or last day there is), so a well-formed
/// cursor is never refused, whoever made it.
pub fn encode_cursor(booking_date: NaiveDate, id: i64) -> String {
    let mut bytes = [0u8; 12];
    bytes[..4].copy_from_slice(&booking_date.num_days_from_ce().to_be_bytes());
    bytes[4..].copy_from_slice(&id.to_be_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The pattern of a cursor, for the API document.
pub const CURSOR_PATTERN: &str = "^[A-Za-z0-9_-]{16}$";

pub fn decode_cursor(cursor: &str) -> Result<(NaiveDate, i64), ApiError> {
    let bad = || {
        ApiError::invalid_parameter(
            "cursor",
            "cursor is not one this server gave out (16 base64url characters); pass `next` back unchanged",
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(cursor.trim()).map_err(|_| bad())?;
    let bytes: [u8; 12] = bytes.try_into().map_err(|_| bad())?;
    let days = i32::from_be_bytes(bytes[..4].try_into().map_err(|_| bad())?);
    let id = i64::from_be_bytes(bytes[4..].try_into().map_err(|_| bad())?);
    let day = NaiveDate::from_num_days_from_ce_opt(days).unwrap_or(if days < 0 {
        NaiveDate::MIN
    } else {
        NaiveDate::MAX
    });
    Ok((day, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `CURSOR_PATTERN` says, without a regex crate.
    fn regex_like(c: &str) -> bool {
        c.len() == 16
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }

    #[test]
    fn cursor_roundtrip_and_garbage() {
        let d = NaiveDate::from_ymd_opt(2024, 3, 1).unwrap();
        let c = encode_cursor(d, 42);
        assert_eq!(decode_cursor(&c).unwrap(), (d, 42));
        // Any 16 base64url characters are a position.
        let (day, id) = decode_cursor("AAAAAAAAAAAAAAAA").unwrap();
        assert_eq!(id, 0);
        assert!(day <= NaiveDate::from_ymd_opt(1, 1, 1).unwrap());
        assert!(decode_cursor("________________").is_ok());
        assert!(regex_like(&c));
        assert_eq!(
            decode_cursor("!!").unwrap_err().parameter.as_deref(),
            Some("cursor")
        );
        assert!(decode_cursor(&URL_SAFE_NO_PAD.encode("too short")).is_err());
    }

    #[test]
    fn page_request_parses_every_filter() {
        let p = parse_page_request(Some(
            "account=3&from=2024-01-01&to=2024-02-01&min_amount=-10.5&max_amount=100&text=coffee%20shop\
             &status=booked&updated_since=2024-01-01T00:00:00+02:00&limit=1000",
        ))
        .unwrap();
        assert_eq!(p.limit, 1000);
        assert_eq!(p.query.account_id, Some(3));
        assert_eq!(p.query.text.as_deref(), Some("coffee shop"));
        assert_eq!(
            p.query.min_amount,
            Some(Decimal::from_str("-10.5").unwrap())
        );
        assert_eq!(p.query.status, Some(TxStatus::Booked));
        assert_eq!(
            p.query.updated_since.unwrap().to_rfc3339(),
            "2023-12-31T22:00:00+00:00"
        );
        assert_eq!(parse_page_request(None).unwrap().limit, DEFAULT_LIMIT);
    }

    #[test]
    fn bad_values_name_the_parameter() {
        for (q, param) in [
            ("limit=1001", "limit"),
            ("limit=0", "limit"),
            ("limit=x", "limit"),
            ("from=2024-1-1x", "from"),
            ("to=yesterday", "to"),
            ("min_amount=1,5", "min_amount"),
            ("status=done", "status"),
            ("updated_since=2024-01-01", "updated_since"),
            ("account=-1", "account"),
            ("acount=1", "acount"),
            ("limit=5&limit=6", "limit"),
            ("cursor=abc", "cursor"),
        ] {
            let e = parse_page_request(Some(q)).unwrap_err();
            assert_eq!(e.parameter.as_deref(), Some(param), "{q}: {e}");
            assert_eq!(e.code, "invalid_parameter");
        }
    }
}
