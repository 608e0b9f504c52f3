//! The client's errors.
use crate::types::{ErrorCode, ValidationError};

/// What went wrong talking to BankID.
#[derive(Debug, thiserror::Error)]
pub enum BankIdError {
    /// BankID answered with an error body (`{"errorCode", "details"}`).
    #[error("BankID refused {endpoint} with HTTP {status} {code}: {details}")]
    Api {
        endpoint: &'static str,
        status: u16,
        code: ErrorCode,
        details: String,
    },
    /// The request did not get an answer: connection, TLS handshake (a
    /// refused client certificate, an unknown server CA), timeout.
    #[error("no answer from BankID to {endpoint}: {source}")]
    Transport {
        endpoint: &'static str,
        #[source]
        source: reqwest::Error,
    },
    /// An answer that is not what the API sends: not JSON, missing fields, or
    /// a success body of the wrong shape. `body` is an excerpt with secrets
    /// removed.
    #[error("unexpected answer from BankID to {endpoint} (HTTP {status}): {reason}; body: {body}")]
    Decode {
        endpoint: &'static str,
        status: u16,
        reason: String,
        body: String,
    },
    /// The request would be refused by the API; it was not sent.
    #[error("invalid BankID request, not sent: {0}")]
    InvalidRequest(String),
    /// The client cannot be built as configured.
    #[error("BankID client configuration: {0}")]
    Config(String),
}

impl From<ValidationError> for BankIdError {
    fn from(e: ValidationError) -> Self {
        Self::InvalidRequest(e.to_string())
    }
}

impl BankIdError {
    /// The API's error code, for [`BankIdError::Api`].
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status, when there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } | Self::Decode { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The recommended user message number (RFA) for this error, if the RP
    /// guidelines give one. A transport failure is shown like an internal
    /// error (RFA5).
    pub fn rfa(&self) -> Option<u8> {
        match self {
            Self::Api { code, .. } => code.rfa(),
            Self::Transport { .. } => Some(5),
            _ => None,
        }
    }

    /// Worth trying the same read (`collect`) again a little later:
    /// maintenance, or no answer at all. Never true for refusals.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Api { code, .. } => code.may_retry(),
            Self::Transport { source, .. } => {
                source.is_timeout() || source.is_connect() || source.is_request()
            }
            _ => false,
        }
    }
}
