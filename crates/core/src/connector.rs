//! The `Connector` trait: one implementation per bank API.
//!
//! A connector logs in, lists accounts and fetches one date window of one
//! account at a time. It never writes to the store and never retries: the sync
//! engine plans windows from [`ConnectorLimits`], retries what
//! [`ConnectorError::is_transient`] says is worth retrying and re-logs in on
//! [`ConnectorError::SessionExpired`].
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

pub use crate::sca::ScaChallenge;
use crate::sca::{Attendance, ScaAnswer, ScaProgress};
use crate::{
    Balance, DocumentContent, FetchedAccount, FetchedDocument, FetchedTransaction, Secret,
};

/// What a person fills in to add a connection of one connector, in that
/// connector's words: the dashboard draws its form from this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectorForm {
    /// The connector's name (`fibank`).
    pub connector: &'static str,
    /// The bank or API as people call it.
    pub title: &'static str,
    /// An example of the base URL.
    pub base_url_example: &'static str,
    /// What the bank calls the login name.
    pub username_label: &'static str,
    /// What the bank calls the secret.
    pub password_label: &'static str,
    /// The secret is digits only (a keypad PIN): offer a numeric keyboard.
    pub password_numeric: bool,
    /// The secret spans lines (a private key in PEM): a text area, not a
    /// one-line field that would drop the line breaks.
    pub password_multiline: bool,
    /// One sentence on where the values come from.
    pub hint: &'static str,
    /// The connector's own settings (`KEY=VALUE`, one a line), in words;
    /// empty when it has none.
    pub options_hint: &'static str,
}

/// An open-banking consent as the bank last reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentInfo {
    /// The bank's own word (`valid`, `expired`, `revokedByPsu`, …).
    pub status: String,
    /// The last day the consent is good for, when the bank said.
    pub valid_until: Option<NaiveDate>,
}

/// What a bank API allows, declared by its connector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorLimits {
    /// Longest date range one request may cover.
    pub max_window_days: Option<u32>,
    /// How far back the bank serves history at all.
    pub max_history_days: Option<u32>,
    /// History older than this many days needs strong customer authentication.
    pub sca_after_days: Option<u32>,
    /// Requests the bank tolerates per day and connection.
    pub daily_request_budget: Option<u32>,
}

/// An inclusive range of calendar days in the bank's own time zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DateWindow {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl DateWindow {
    pub fn new(from: NaiveDate, to: NaiveDate) -> Self {
        debug_assert!(from <= to);
        Self { from, to }
    }

    /// Number of days covered, both ends included.
    pub fn days(&self) -> u32 {
        ((self.to - self.from).num_days() + 1).max(0) as u32
    }

    pub fn contains(&self, d: NaiveDate) -> bool {
        self.from <= d && d <= self.to
    }
}

impl fmt::Display for DateWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.from, self.to)
    }
}

/// Everything one window of one account yields.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowPage {
    /// Every transaction the bank reports in the window (booked and pending).
    /// The window is complete: a pending row stored for this window and absent
    /// here has vanished.
    pub transactions: Vec<FetchedTransaction>,
    /// Balance snapshots the bank reported along with the window.
    pub balances: Vec<Balance>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransientKind {
    Timeout,
    Network,
    /// HTTP 5xx.
    Server(u16),
    /// HTTP 429.
    RateLimited,
    /// The body ended before the JSON did (connection cut mid-response).
    Truncated,
}

impl fmt::Display for TransientKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransientKind::Timeout => f.write_str("timeout"),
            TransientKind::Network => f.write_str("network error"),
            TransientKind::Server(s) => write!(f, "server error {s}"),
            TransientKind::RateLimited => f.write_str("rate limited (429)"),
            TransientKind::Truncated => f.write_str("truncated response"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("{what}: {kind}{}", retry_after.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default())]
    Transient {
        what: String,
        kind: TransientKind,
        retry_after: Option<Duration>,
    },
    #[error("the bank session expired; logging in again")]
    SessionExpired,
    #[error("the bank refused the login: {0}. Check the username and password of this connection")]
    InvalidCredentials(String),
    #[error("the bank refused the window {window}: {message}")]
    WindowRefused { window: DateWindow, message: String },
    #[error("the bank sent a response bankbridge cannot read ({what}): {detail}")]
    Malformed { what: String, detail: String },
    #[error("the bank needs strong customer authentication: {0}")]
    ScaRequired(ScaChallenge),
    /// The bank or the user turned the authentication down, or it expired.
    #[error("strong customer authentication did not succeed: {0}")]
    ScaFailed(String),
    /// A capability this connector does not have (documents, SCA answers, …).
    #[error("the {connector} connector does not support {what}")]
    Unsupported {
        connector: &'static str,
        what: &'static str,
    },
    #[error("the daily request budget for this bank ({0} requests) is spent; sync again tomorrow")]
    BudgetExhausted(u32),
    /// The bank's request budget cannot afford this call now (spent, paced
    /// for later in the day, or a 429 to wait out): the account waits for a
    /// later sync, which goes on from there. Says when, in words.
    #[error("{0}")]
    Deferred(String),
    /// Only the user can go on, for this reason (the bank's consent expired
    /// or was revoked, the bank refused an SCA code): the sync stops in
    /// `needs_user` and says why.
    #[error("{0}")]
    NeedsUser(String),
    #[error("{0}")]
    Other(String),
}

impl ConnectorError {
    /// Worth retrying the same request after a pause.
    pub fn is_transient(&self) -> bool {
        matches!(self, ConnectorError::Transient { .. })
    }

    /// The bank's budget has no room for the call now: not a failure, a
    /// later sync goes on.
    pub fn is_deferral(&self) -> bool {
        matches!(
            self,
            ConnectorError::BudgetExhausted(_) | ConnectorError::Deferred(_)
        )
    }

    /// The pause the bank asked for, if any (`Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ConnectorError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// One bank API. Implementations hold their own HTTP client and session.
///
/// What is already stored reaches the connector through the windows the
/// engine asks for: the engine keeps each account's covered range contiguous
/// and asks forward windows from inside it and backfill windows right below
/// it, so every day below a forward window's `from` is stored and every day
/// above a backfill window's `to` is. A bank that pages newest-first without
/// a date filter (the keypad bank) stops paging once a page reaches a row
/// older than the window: that row, and everything older, is already stored
/// or will be asked for by the next backfill window. Windows are whole days,
/// so fingerprint occurrence counters of identical twins stay stable.
#[async_trait]
pub trait Connector: Send {
    /// Short machine name, e.g. `fibank`.
    fn name(&self) -> &'static str;

    fn limits(&self) -> ConnectorLimits;

    /// Today's date where the bank keeps its books.
    fn today(&self) -> NaiveDate {
        chrono::Utc::now().date_naive()
    }

    /// Log in with the connection's credentials (or check a restored session).
    async fn login(&mut self) -> Result<(), ConnectorError>;

    /// Session state worth keeping between runs (tokens, cookies), if any.
    fn session_state(&self) -> Option<Secret<String>> {
        None
    }

    /// Restore what [`Connector::session_state`] returned in an earlier run.
    fn restore_session(&mut self, _state: Secret<String>) {}

    /// Who is behind this run (told before login). Open-banking APIs want
    /// to know: calls of a present user carry their IP address and do not
    /// count against the consent's daily budget; a redirect SCA needs the
    /// address the browser comes back to.
    fn attend(&mut self, _attendance: &Attendance) {}

    /// The consent the bank gave this connection, for connectors whose API
    /// works with one (open banking). The engine records it after each run.
    fn consent(&self) -> Option<ConsentInfo> {
        None
    }

    async fn accounts(&mut self) -> Result<Vec<FetchedAccount>, ConnectorError>;

    /// Every transaction and balance of `account` in `window`.
    async fn window(
        &mut self,
        account: &FetchedAccount,
        window: DateWindow,
    ) -> Result<WindowPage, ConnectorError>;

    /// Go on after a solver answered the challenge of the last
    /// [`ConnectorError::ScaRequired`]. [`ScaProgress::Pending`] while the
    /// bank still waits (the engine polls again after the pause);
    /// [`ScaProgress::Done`] once the request that asked may be retried;
    /// [`ConnectorError::ScaFailed`] when the bank or the user refused or the
    /// request expired.
    async fn resume_sca(&mut self, _answer: &ScaAnswer) -> Result<ScaProgress, ConnectorError> {
        Err(ConnectorError::Unsupported {
            connector: self.name(),
            what: "strong customer authentication",
        })
    }

    /// The documents capability: statements and notices the bank offers
    /// (metadata only). Default: not supported.
    async fn documents(&mut self) -> Result<Vec<FetchedDocument>, ConnectorError> {
        Err(ConnectorError::Unsupported {
            connector: self.name(),
            what: "documents",
        })
    }

    /// The bytes of one document [`Connector::documents`] listed.
    async fn download(
        &mut self,
        _doc: &FetchedDocument,
    ) -> Result<DocumentContent, ConnectorError> {
        Err(ConnectorError::Unsupported {
            connector: self.name(),
            what: "documents",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_days_inclusive() {
        let d = |m, d| NaiveDate::from_ymd_opt(2024, m, d).unwrap();
        assert_eq!(DateWindow::new(d(1, 1), d(1, 30)).days(), 30);
        assert_eq!(DateWindow::new(d(1, 1), d(1, 1)).days(), 1);
        assert!(DateWindow::new(d(1, 1), d(1, 30)).contains(d(1, 30)));
    }

    #[test]
    fn transient_errors_are_retryable_others_not() {
        let t = ConnectorError::Transient {
            what: "GetCustBal".into(),
            kind: TransientKind::RateLimited,
            retry_after: Some(Duration::from_secs(3)),
        };
        assert!(t.is_transient());
        assert_eq!(t.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(
            t.to_string(),
            "GetCustBal: rate limited (429) (retry after 3s)"
        );
        assert!(!ConnectorError::SessionExpired.is_transient());
        assert!(!ConnectorError::InvalidCredentials("x".into()).is_transient());
    }
}
