//! What the aggregator connectors (`gocardless`, `enablebanking`) share:
//! their HTTP client and base URL, number options, the words of a link
//! that only a person can make, and the daily limit's wait as an error.
use std::collections::BTreeMap;
use std::time::Duration;

use bankbridge_core::ConnectorError;
use chrono::{DateTime, Utc};
use url::Url;

use crate::budget::Allowance;

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
