//! Strong customer authentication (SCA) as resumable errors.
//!
//! A connector that meets SCA returns
//! [`ConnectorError::ScaRequired`](crate::ConnectorError::ScaRequired) with a
//! [`ScaChallenge`] (what the bank asks for) and keeps whatever it needs to
//! go on (a request id, a session). The sync engine hands the challenge to a
//! [`ScaSolver`] (a person at a terminal, a card reader, a BankID app, a
//! test's simulated user), passes its [`ScaAnswer`] to
//! [`Connector::resume_sca`](crate::Connector::resume_sca), polls while the
//! connector says [`ScaProgress::Pending`], then retries the request that
//! asked. With no solver (an unattended run) or an [`ScaAnswer::NotNow`], the
//! sync stops cleanly in `needs_user`, keeping everything it committed.
//!
//! This is woob's `BrowserQuestion` / `DecoupledValidation` /
//! `NeedInteractiveFor2FA` in types: the connector never blocks on a person
//! and never decides whether one is there.
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Secret;

/// Strong customer authentication the bank demands before it goes on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ScaChallenge {
    /// A one-time code sent to the user (SMS, e-mail, app).
    Otp { prompt: String },
    /// A secret the bank's own login form asks for and bankbridge does not
    /// keep (an aggregator's wizard asking for the PIN at the bank): typed
    /// by the person for this link only.
    Secret { prompt: String },
    /// An EMV-CAP login code (mode 1), optionally over a bank challenge.
    CardReaderLogin { challenge: Option<String> },
    /// An EMV-CAP signature code (mode 2) over the numbers the bank shows.
    CardReaderSign { numbers: Vec<String> },
    /// Approve on another device (a push to the bank's app); the connector
    /// then polls the bank, every `poll_after_secs`, until `expires_at`.
    Decoupled {
        /// What to tell the user, e.g. "approve the request on your trusted device".
        message: String,
        poll_after_secs: u64,
        /// The bank's id of the pending request (to poll it, or for a test's
        /// simulated user to approve exactly this one). Not a secret.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        /// When the bank gives up on the request.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<DateTime<Utc>>,
    },
    /// Open a URL in a browser (redirect or OAuth SCA).
    Redirect { url: String },
    /// A BankID order the bank started for the user: open the BankID app on
    /// this device with the autostart token, or scan the animated QR code
    /// drawn from the QR tokens when the bank hands them out. The connector
    /// then polls the bank, like [`ScaChallenge::Decoupled`].
    BankId {
        auto_start_token: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        qr_start_token: Option<String>,
        /// Secret of the QR codes' HMAC: drawn into codes only, never
        /// serialised (challenges end up in job records and JSON output).
        #[serde(skip)]
        qr_start_secret: Option<crate::Secret<String>>,
    },
}

impl ScaChallenge {
    /// Short machine name of the kind (`decoupled`, `otp`, …), as serialised.
    pub fn kind(&self) -> &'static str {
        match self {
            ScaChallenge::Otp { .. } => "otp",
            ScaChallenge::Secret { .. } => "secret",
            ScaChallenge::CardReaderLogin { .. } => "card_reader_login",
            ScaChallenge::CardReaderSign { .. } => "card_reader_sign",
            ScaChallenge::Decoupled { .. } => "decoupled",
            ScaChallenge::Redirect { .. } => "redirect",
            ScaChallenge::BankId { .. } => "bank_id",
        }
    }

    /// How long the engine waits between two polls of a pending answer.
    pub fn poll_interval(&self) -> Duration {
        match self {
            ScaChallenge::Decoupled {
                poll_after_secs, ..
            } => Duration::from_secs((*poll_after_secs).clamp(1, 60)),
            ScaChallenge::BankId { .. } => Duration::from_secs(1),
            _ => Duration::from_secs(2),
        }
    }

    /// When the bank stops waiting for an answer, if it said.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        match self {
            ScaChallenge::Decoupled { expires_at, .. } => *expires_at,
            _ => None,
        }
    }
}

impl fmt::Display for ScaChallenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScaChallenge::Otp { prompt } => write!(f, "a one-time code ({prompt})"),
            ScaChallenge::Secret { prompt } => write!(f, "{prompt}, for this link only"),
            ScaChallenge::CardReaderLogin { .. } => {
                f.write_str("a login code from a bank card in a card reader (EMV-CAP mode 1)")
            }
            ScaChallenge::CardReaderSign { .. } => {
                f.write_str("a signature code from a bank card in a card reader (EMV-CAP mode 2)")
            }
            ScaChallenge::Decoupled { message, .. } => f.write_str(message),
            ScaChallenge::Redirect { url } => write!(f, "open {url} in a browser"),
            ScaChallenge::BankId { .. } => f.write_str("a BankID identification"),
        }
    }
}

/// What a solver answers to a challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScaAnswer {
    /// The user approved (or is approving) out of band: the connector checks
    /// with the bank ([`ScaProgress::Pending`] while the bank still waits).
    Approved,
    /// A code the user, a card or an app produced (OTP, EMV-CAP, …).
    Code(Secret<String>),
    /// The browser came back from the bank's redirect page with this query
    /// string (an authorisation `code` and `state`, or the bank's error):
    /// the connector reads what it needs and checks with the bank.
    Returned(Secret<String>),
    /// The user refused: the sync fails and says so.
    Declined,
    /// Nobody can answer now (an unattended run): the sync stops in `needs_user`.
    NotNow,
    /// Nothing can answer now, for this reason (the bound card refused its
    /// PIN, its reader is gone): the sync stops in `needs_user` and says why.
    Unavailable(String),
}

/// Where a connector stands after [`Connector::resume_sca`](crate::Connector::resume_sca).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaProgress {
    /// The bank accepted: retry the request that asked for SCA.
    Done,
    /// The bank still waits (a decoupled approval not given yet): ask again after `poll_after`.
    Pending { poll_after: Duration },
}

/// A solver could not produce an answer (its terminal closed, its card reader failed, …).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScaSolverError(pub String);

/// Answers SCA challenges: a person at a terminal, a card service, a BankID
/// client, a test's simulated user. Kinds it cannot handle are answered
/// [`ScaAnswer::NotNow`], so the sync stops in `needs_user` instead of failing.
#[async_trait]
pub trait ScaSolver: Send + Sync {
    async fn solve(&self, challenge: &ScaChallenge) -> Result<ScaAnswer, ScaSolverError>;

    /// Who is behind the run: a person at a terminal or on the dashboard
    /// (open-banking APIs let their calls through without counting them
    /// against the consent's daily budget), and where a redirect SCA comes
    /// back to. Default: nobody, nowhere.
    fn attendance(&self) -> Attendance {
        Attendance::default()
    }
}

/// Who is behind a sync run, as far as a bank needs to know.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attendance {
    /// The user asked for this run and is there.
    pub psu_present: bool,
    /// Where the bank sends the user's browser back after a redirect SCA (a
    /// loopback port the CLI listens on, `serve`'s callback route).
    pub redirect_uri: Option<String>,
}

/// The solver of unattended runs (the scheduler, scripts): never answers.
#[derive(Clone, Copy, Debug, Default)]
pub struct Unattended;

#[async_trait]
impl ScaSolver for Unattended {
    async fn solve(&self, _challenge: &ScaChallenge) -> Result<ScaAnswer, ScaSolverError> {
        Ok(ScaAnswer::NotNow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_serialise_with_their_kind_and_print_for_people() {
        let c = ScaChallenge::Decoupled {
            message: "approve on your trusted device".into(),
            poll_after_secs: 2,
            reference: Some("req-1".into()),
            expires_at: None,
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["kind"], "decoupled");
        assert_eq!(v["reference"], "req-1");
        assert!(v.get("expires_at").is_none());
        assert_eq!(serde_json::from_value::<ScaChallenge>(v).unwrap(), c);
        assert_eq!(c.kind(), "decoupled");
        assert_eq!(c.to_string(), "approve on your trusted device");
        assert_eq!(c.poll_interval(), Duration::from_secs(2));
        // An older serialisation without the new fields still reads.
        let old: ScaChallenge =
            serde_json::from_str(r#"{"kind":"decoupled","message":"m","poll_after_secs":0}"#)
                .unwrap();
        assert_eq!(old.poll_interval(), Duration::from_secs(1));
    }

    #[test]
    fn a_code_answer_never_prints_the_code() {
        let a = ScaAnswer::Code(Secret::from("123456"));
        assert!(!format!("{a:?}").contains("123456"));
    }

    #[tokio::test]
    async fn unattended_never_answers() {
        let c = ScaChallenge::Otp {
            prompt: "SMS".into(),
        };
        assert_eq!(Unattended.solve(&c).await.unwrap(), ScaAnswer::NotNow);
    }
}
