//! Error mapping and JSON helpers every connector shares.
use std::time::Duration;

use bankbridge_core::{ConnectorError, TransientKind};
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use serde_json::{Map, Value};

pub(crate) fn transient(
    what: &str,
    kind: TransientKind,
    retry_after: Option<Duration>,
) -> ConnectorError {
    ConnectorError::Transient {
        what: what.to_owned(),
        kind,
        retry_after,
    }
}

pub(crate) fn malformed(what: &str, detail: impl Into<String>) -> ConnectorError {
    ConnectorError::Malformed {
        what: what.to_owned(),
        detail: detail.into(),
    }
}

/// A failure to send or to receive the answer; `bank` names the connector in
/// the debug log.
pub(crate) fn transport(
    bank: &str,
    what: &str,
    e: &reqwest::Error,
    reading_body: bool,
) -> ConnectorError {
    let kind = if e.is_timeout() {
        TransientKind::Timeout
    } else if reading_body {
        TransientKind::Truncated
    } else {
        TransientKind::Network
    };
    tracing::debug!(what, error = %e, "{bank} transport error");
    // Name where and why, so a wrong base URL reads as one: "login
    // (connection refused at http://127.0.0.1:9): network error".
    let place = e
        .url()
        .map(|u| format!(" at {}", u.origin().ascii_serialization()))
        .unwrap_or_default();
    transient(&format!("{what} ({}{place})", root_cause(e)), kind, None)
}

/// The innermost cause of a transport error, in a few words.
fn root_cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        if let Some(io) = next.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
                std::io::ErrorKind::ConnectionReset => "connection reset".into(),
                std::io::ErrorKind::TimedOut => "timed out".into(),
                _ => excerpt(&io.to_string()),
            };
        }
        cause = next;
    }
    if e.is_timeout() {
        "timed out".into()
    } else {
        excerpt(&cause.to_string())
    }
}

/// `Retry-After` as seconds or as an HTTP date.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    Some((when - now).to_std().unwrap_or(Duration::ZERO))
}

/// 429 and 5xx: worth retrying.
pub(crate) fn status_error(
    what: &str,
    status: StatusCode,
    headers: &HeaderMap,
) -> Option<ConnectorError> {
    if status == StatusCode::TOO_MANY_REQUESTS {
        let retry_after = headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, Utc::now()));
        return Some(transient(what, TransientKind::RateLimited, retry_after));
    }
    if status.is_server_error() {
        return Some(transient(
            what,
            TransientKind::Server(status.as_u16()),
            None,
        ));
    }
    None
}

/// Parse a complete JSON body; one that stops early is a transient fault.
pub fn parse_json(what: &str, body: &[u8]) -> Result<Value, ConnectorError> {
    serde_json::from_slice(body).map_err(|e| {
        if e.is_eof() {
            transient(what, TransientKind::Truncated, None)
        } else {
            malformed(what, format!("not JSON: {e}"))
        }
    })
}

/// Longest piece of a bank's own text quoted in an error.
const EXCERPT_CHARS: usize = 120;

/// A short, one-line excerpt of text a bank sent, for an error message: at
/// most [`EXCERPT_CHARS`] characters, control characters and runs of
/// whitespace folded into one space, `…` where it was cut. Bodies can be
/// long, multi-line and carry anything; errors are stored and shown.
pub(crate) fn excerpt(text: &str) -> String {
    let mut out = String::new();
    let mut chars = 0;
    let mut space = false;
    for c in text.trim().chars() {
        if c.is_whitespace() || c.is_control() {
            space = true;
            continue;
        }
        if chars == EXCERPT_CHARS {
            out.push('…');
            return out;
        }
        if space && !out.is_empty() {
            out.push(' ');
            chars += 1;
        }
        space = false;
        out.push(c);
        chars += 1;
    }
    out
}

/// A trimmed, non-empty string field.
pub(crate) fn text<'a>(obj: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    obj.get(field)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The day of a JSON date or date-time string (`2026-03-01`, `2026-03-01T10:00:00Z`).
pub(crate) fn date(v: Option<&Value>) -> Option<chrono::NaiveDate> {
    let s = v?.as_str()?;
    chrono::NaiveDate::parse_from_str(s.get(..10)?, "%Y-%m-%d").ok()
}

/// Seconds the bank's clock is ahead of ours, from an answer's `Date` header.
pub(crate) fn clock_skew_secs(headers: &HeaderMap) -> Option<i64> {
    let bank_now = headers
        .get(header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| DateTime::parse_from_rfc2822(v).ok())?;
    Some((bank_now.with_timezone(&Utc) - Utc::now()).num_seconds())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_short_single_lines() {
        assert_eq!(
            excerpt("  Грешка:\n\tневалиден\r\n  вход  "),
            "Грешка: невалиден вход"
        );
        let long = "x".repeat(500);
        let e = excerpt(&long);
        assert_eq!(e.chars().count(), EXCERPT_CHARS + 1);
        assert!(e.ends_with('…'));
        assert_eq!(excerpt("a\u{0}b\u{1b}[31mc"), "a b [31mc");
        assert_eq!(excerpt(""), "");
    }
}
