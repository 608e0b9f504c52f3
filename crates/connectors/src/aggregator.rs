//! What the aggregator connectors (`gocardless`, `enablebanking`, `klarna`)
//! share: their HTTP client and base URL, one exchange with the service
//! (its clock read, the call counted), number options, the words of a link
//! that only a person can make, and the daily limit's wait as an error.
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bankbridge_core::ConnectorError;
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
use url::Url;

use crate::budget::{Allowance, Allowances};
use crate::common::{clock_skew_secs, parse_json, transport};

const TIMEOUT: Duration = Duration::from_secs(60);
/// How bankbridge names itself to a service (and, for Enable Banking, as
/// the PSU's user agent of an attended call).
pub(crate) const USER_AGENT: &str = concat!("bankbridge/", env!("CARGO_PKG_VERSION"));

/// The client of an aggregator's API: rustls, no redirects followed (an
/// answer that moves is an error to read, not a place to send tokens).
pub(crate) fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .connect_timeout(Duration::from_secs(20))
        .user_agent(USER_AGENT)
        .build()
        .map_err(|e| format!("cannot set up the HTTP client: {e}"))
}

/// The API's base URL with a trailing slash, so relative paths join under it.
pub(crate) fn base_url(raw: &str) -> Result<Url, String> {
    let mut base = Url::parse(raw.trim_end_matches('/')).map_err(|e| format!("base_url: {e}"))?;
    bankbridge_core::net::secure_url(base.as_str(), "base_url")?;
    base.set_path(&format!("{}/", base.path().trim_end_matches('/')));
    Ok(base)
}

/// A service's answer: its status, headers and JSON body (`Null` when
/// empty, or for a refusal that is not JSON).
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

/// The allowance a call counts against: its key in `budget`, and the
/// header (if any) in which the service says how many calls are left.
pub(crate) struct Counted<'a> {
    pub budget: &'a mut Allowances,
    pub key: String,
    pub remaining_header: Option<&'static str>,
}

/// Send `req` and read the answer. The service's clock comes from its
/// `Date` (into `skew`); a served call is counted as soon as its status
/// arrives, before the body, because the service counts it even when the
/// body is then cut short.
pub(crate) async fn exchange(
    service: &str,
    what: &str,
    req: reqwest::RequestBuilder,
    skew: &AtomicI64,
    counted: Option<Counted<'_>>,
) -> Result<Answer, ConnectorError> {
    let resp = req
        .send()
        .await
        .map_err(|e| transport(service, what, &e, false))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    if let Some(s) = clock_skew_secs(&headers) {
        skew.store(s, Ordering::Relaxed);
    }
    if status.is_success()
        && let Some(c) = counted
    {
        let remaining = c
            .remaining_header
            .and_then(|h| headers.get(h))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok());
        let now = Utc::now() + chrono::Duration::seconds(skew.load(Ordering::Relaxed));
        c.budget.served(c.key, now, remaining);
    }
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| transport(service, what, &e, true))?;
    let body = if bytes.is_empty() {
        Value::Null
    } else if status.is_success() {
        parse_json(what, &bytes)?
    } else {
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    };
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// A number option from 1 to `max`, `default` when absent.
pub(crate) fn number_option(
    options: &BTreeMap<String, String>,
    key: &str,
    default: u32,
    max: u32,
) -> Result<u32, String> {
    match options.get(key) {
        None => Ok(default),
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| format!("{key} must be a number from 1 to {max}")),
    }
}

/// The `redirect_uri` option, checked: https, or http to this machine.
pub(crate) fn redirect_option(
    options: &BTreeMap<String, String>,
    key: &str,
) -> Result<Option<String>, String> {
    match options.get(key) {
        Some(uri) => {
            bankbridge_core::net::secure_url(uri, key)?;
            Ok(Some(uri.clone()))
        }
        None => Ok(None),
    }
}

/// The PSU's IP address sent with attended calls (this machine's by default).
pub(crate) fn psu_ip_option(
    options: &BTreeMap<String, String>,
    key: &str,
) -> Result<String, String> {
    let ip = options
        .get(key)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1".to_owned());
    ip.parse::<std::net::IpAddr>()
        .map(|_| ip.clone())
        .map_err(|_| format!("{key} must be an IP address"))
}

/// Only a person can go on: the bank must be linked again on its page.
pub(crate) fn relink_needed(why: &str) -> ConnectorError {
    ConnectorError::NeedsUser(format!(
        "{why}; link the bank again where you can open its page: `bankbridge sync` in a terminal, \
         or Sync now on the dashboard (the accounts and their history stay)"
    ))
}

/// A person is there but the run offers no address to come back to.
pub(crate) fn no_return_address(why: &str) -> ConnectorError {
    ConnectorError::NeedsUser(format!(
        "{why}; linking needs an address for the bank to send your browser back to: sync in a terminal \
         or from the dashboard, or set the connection's redirect_uri option"
    ))
}

/// The call `what` of `account` when its allowance can afford it now;
/// otherwise the wait, in words, as [`ConnectorError::Deferred`].
pub(crate) fn afford(
    allowance: Option<&Allowance>,
    limit: u32,
    now: DateTime<Utc>,
    attended: bool,
    account: &str,
    what: &str,
) -> Result<(), ConnectorError> {
    let allowance = allowance.cloned().unwrap_or_default();
    allowance.may_call(limit, now, attended).map_err(|w| {
        let left = (w.until - now).num_minutes().max(1);
        ConnectorError::Deferred(format!(
            "{account}: {} of {limit} calls a day for {what}: {}; next call from {} UTC (in {} h {} min)",
            allowance.used.min(limit),
            w.why,
            w.until.format("%Y-%m-%d %H:%M"),
            left / 60,
            left % 60
        ))
    })
}
