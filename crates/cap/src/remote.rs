//! Card jobs for card hosts: what `serve` asks a card agent on another
//! machine to do with one of its readers, the agent's answer, and the
//! agent's side of doing it. No HTTP here: the server queues jobs and the
//! CLI's `card agent` fetches and answers them.
//!
//! The PIN travels sealed to the host's own key (an X25519 sealed box from
//! `crypto_box`), inside TLS: a proxy that ends TLS, a request log or a dump
//! of the server's job queue never holds it in the clear. Only the agent
//! opens it, just before the card session, and it is zeroised with the job.
//!
//! A failure travels as a [`JobError`] that keeps what the server's PIN
//! rules need (whether VERIFY went out and what the card said), so the
//! server turns it back into the same [`CapError`] a local reader gives.
use std::fmt;
use std::io::Write;
use std::path::Path;

use bankbridge_core::Secret;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use crypto_box::aead::OsRng;
use crypto_box::{PublicKey, SecretKey};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::emv::{self, CapError, CapRequest, CapResponse, CardIdentity, ExpectedCard, PinPolicy};
use crate::transport::{Readers, TransportError};

/// The name of the key file in a card agent's data directory.
pub const KEY_FILE: &str = "card-host.key";

/// A card host's own key pair: the server seals each PIN to its public half.
pub struct HostKey(SecretKey);

impl fmt::Debug for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostKey(public {})", self.public())
    }
}

/// Why a sealed PIN could not be made or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the card host's public key is not 32 bytes of base64")]
    BadPublicKey,
    #[error("the sealed PIN does not open with this card host's key")]
    DoesNotOpen,
    #[error("the card host's key file {0}: {1}")]
    KeyFile(String, std::io::Error),
}

impl HostKey {
    pub fn generate() -> Self {
        Self(SecretKey::generate(&mut OsRng))
    }

    /// The key in `dir`/[`KEY_FILE`], made (mode 0600) on first use.
    pub fn load_or_create(dir: &Path) -> Result<Self, SealError> {
        let path = dir.join(KEY_FILE);
        let fail = |e| SealError::KeyFile(path.display().to_string(), e);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let bytes = Zeroizing::new(B64.decode(text.trim()).map_err(|_| {
                    fail(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "not base64",
                    ))
                })?);
                let key = SecretKey::from_slice(&bytes).map_err(|_| {
                    fail(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "not a 32-byte key",
                    ))
                })?;
                Ok(Self(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(&path).map_err(fail)?;
                let text = Zeroizing::new(B64.encode(key.0.to_bytes()));
                file.write_all(text.as_bytes()).map_err(fail)?;
                file.sync_all().map_err(fail)?;
                Ok(key)
            }
            Err(e) => Err(fail(e)),
        }
    }

    /// The public half, base64: what the agent tells the server.
    pub fn public(&self) -> String {
        B64.encode(self.0.public_key().to_bytes())
    }

    /// Open a PIN [`seal_pin`] sealed to this host.
    pub fn open_pin(&self, sealed: &str) -> Result<Secret<String>, SealError> {
        let bytes = B64.decode(sealed).map_err(|_| SealError::DoesNotOpen)?;
        let mut plain = self.0.unseal(&bytes).map_err(|_| SealError::DoesNotOpen)?;
        let pin = String::from_utf8(std::mem::take(&mut plain));
        plain.zeroize();
        match pin {
            Ok(pin) => Ok(Secret::new(pin)),
            Err(e) => {
                e.into_bytes().zeroize();
                Err(SealError::DoesNotOpen)
            }
        }
    }
}

/// Whether `public` (base64) is a usable host key.
pub fn check_public_key(public: &str) -> Result<(), SealError> {
    public_key(public).map(|_| ())
}

fn public_key(public: &str) -> Result<PublicKey, SealError> {
    let bytes = B64.decode(public).map_err(|_| SealError::BadPublicKey)?;
    PublicKey::from_slice(&bytes).map_err(|_| SealError::BadPublicKey)
}

/// Seal `pin` to the host whose public key is `public` (base64): only that
/// host's [`HostKey`] opens it.
pub fn seal_pin(public: &str, pin: &Secret<String>) -> Result<String, SealError> {
    let sealed = public_key(public)?
        .seal(&mut OsRng, pin.expose().as_bytes())
        .map_err(|_| SealError::BadPublicKey)?;
    Ok(B64.encode(sealed))
}

/// One job for a card host: a reader of that host and what to do with it.
#[derive(Clone, Serialize, Deserialize)]
pub struct CardJob {
    pub id: String,
    /// The reader's exact name as the host listed it.
    pub reader: String,
    #[serde(flatten)]
    pub work: JobWork,
}

impl fmt::Debug for CardJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.work {
            JobWork::Identify => "identify",
            JobWork::Compute { request, .. } => request.mode_name(),
        };
        write!(f, "CardJob({} {kind} on {:?})", self.id, self.reader)
    }
}

/// What to do.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobWork {
    /// Read who the card is (registration); no PIN.
    Identify,
    /// Compute a code: the card must be `expected`, its try counter at
    /// least `min_pin_tries`; the PIN is sealed to the host.
    Compute {
        request: CapRequest,
        pin_sealed: String,
        expected: ExpectedCard,
        min_pin_tries: u8,
    },
}

/// The host's answer to one job.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum JobOutcome {
    Identified { card: CardIdentity },
    Computed { response: CapResponse },
    Failed { error: JobError },
}

/// A failure as it travels: the kinds the server's PIN and status rules
/// tell apart, each with what they need.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobError {
    WrongPin {
        tries_left: Option<u8>,
    },
    PinRefused {
        sw: u16,
    },
    VerifyBlocked {
        sw: u16,
    },
    /// VERIFY went out and its answer was lost.
    PinOutcomeUnknown {
        cause: String,
    },
    Blocked,
    TooFewTries {
        left: u8,
        min: u8,
    },
    WrongCard {
        found: String,
    },
    TryCounterUnavailable,
    NoCard,
    CardRemoved,
    ReaderBusy,
    ReaderMissing {
        message: String,
    },
    ReaderError {
        message: String,
    },
    BadInput {
        message: String,
    },
    /// The sealed PIN did not open (the host's key changed since the job
    /// was made): no PIN reached the card.
    Seal {
        message: String,
    },
    Other {
        message: String,
    },
}

impl JobError {
    /// What a host reports for `e`.
    pub fn from_cap(e: &CapError) -> Self {
        match e {
            CapError::WrongPin { tries_left } => JobError::WrongPin {
                tries_left: *tries_left,
            },
            CapError::PinRefused { sw } => JobError::PinRefused { sw: *sw },
            CapError::VerifyBlocked { sw } => JobError::VerifyBlocked { sw: *sw },
            CapError::PinOutcomeUnknown { cause } => JobError::PinOutcomeUnknown {
                cause: cause.to_string(),
            },
            CapError::Blocked => JobError::Blocked,
            CapError::TooFewTries { left, min } => JobError::TooFewTries {
                left: *left,
                min: *min,
            },
            CapError::WrongCard { found } => JobError::WrongCard {
                found: found.clone(),
            },
            CapError::TryCounterUnavailable => JobError::TryCounterUnavailable,
            CapError::Transport(t) => match t {
                TransportError::NoCard { .. } => JobError::NoCard,
                TransportError::CardRemoved { .. } => JobError::CardRemoved,
                TransportError::Busy { .. } => JobError::ReaderBusy,
                TransportError::NoReaders
                | TransportError::ReaderNotFound { .. }
                | TransportError::AmbiguousReader { .. } => JobError::ReaderMissing {
                    message: t.to_string(),
                },
                TransportError::Service(_) | TransportError::Reader(_) => JobError::ReaderError {
                    message: t.to_string(),
                },
            },
            CapError::BadInput(_) | CapError::BadPin => JobError::BadInput {
                message: e.to_string(),
            },
            _ => JobError::Other {
                message: e.to_string(),
            },
        }
    }

    /// The same failure as a local reader `reader` gives it, so the
    /// server's rules (a possibly refused PIN takes the card out of use, a
    /// blocked one is marked blocked) hold across the network.
    pub fn into_cap(self, reader: &str) -> CapError {
        let reader = reader.to_owned();
        match self {
            JobError::WrongPin { tries_left } => CapError::WrongPin { tries_left },
            JobError::PinRefused { sw } => CapError::PinRefused { sw },
            JobError::VerifyBlocked { sw } => CapError::VerifyBlocked { sw },
            JobError::PinOutcomeUnknown { cause } => CapError::PinOutcomeUnknown {
                cause: TransportError::Reader(cause),
            },
            JobError::Blocked => CapError::Blocked,
            JobError::TooFewTries { left, min } => CapError::TooFewTries { left, min },
            JobError::WrongCard { found } => CapError::WrongCard { found },
            JobError::TryCounterUnavailable => CapError::TryCounterUnavailable,
            JobError::NoCard => TransportError::NoCard { reader }.into(),
            JobError::CardRemoved => TransportError::CardRemoved { reader }.into(),
            JobError::ReaderBusy => TransportError::Busy { reader }.into(),
            JobError::ReaderMissing { message } => TransportError::ReaderNotFound {
                spec: reader,
                available: vec![message],
            }
            .into(),
            JobError::ReaderError { message } => TransportError::Reader(message).into(),
            JobError::BadInput { message } => CapError::BadInput(message),
            JobError::Seal { message } | JobError::Other { message } => CapError::Host(message),
        }
    }
}

/// Do `job` with `readers` (blocking: PC/SC calls). The PIN is opened only
/// for the card session and zeroised when it ends.
pub fn run_job(readers: &dyn Readers, key: &HostKey, job: &CardJob) -> JobOutcome {
    let failed = |e: &CapError| JobOutcome::Failed {
        error: JobError::from_cap(e),
    };
    match &job.work {
        JobWork::Identify => {
            match readers
                .connect(&job.reader)
                .map_err(CapError::from)
                .and_then(|mut s| emv::identify(s.as_mut()))
            {
                Ok(card) => JobOutcome::Identified { card },
                Err(e) => failed(&e),
            }
        }
        JobWork::Compute {
            request,
            pin_sealed,
            expected,
            min_pin_tries,
        } => {
            let pin = match key.open_pin(pin_sealed) {
                Ok(pin) => pin,
                Err(e) => {
                    return JobOutcome::Failed {
                        error: JobError::Seal {
                            message: e.to_string(),
                        },
                    };
                }
            };
            let policy = PinPolicy {
                min_tries: *min_pin_tries,
            };
            match readers
                .connect(&job.reader)
                .map_err(CapError::from)
                .and_then(|mut s| emv::run(s.as_mut(), request, &pin, Some(expected), policy))
            {
                Ok(response) => JobOutcome::Computed { response },
                Err(e) => failed(&e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::VirtualReaders;
    use crate::virtual_card::{Profile, VirtualCard};

    fn readers_with_card(pin: &str) -> VirtualReaders {
        let readers = VirtualReaders::new();
        let card = VirtualCard::with_pin(Profile::CapBe, pin).unwrap();
        readers.insert("Reader A", Box::new(card));
        readers
    }

    #[test]
    fn a_pin_sealed_to_one_host_opens_only_there() {
        let host = HostKey::generate();
        let other = HostKey::generate();
        let sealed = seal_pin(&host.public(), &Secret::from("1234")).unwrap();
        assert!(!sealed.contains("1234"));
        assert_eq!(host.open_pin(&sealed).unwrap().expose(), "1234");
        assert!(matches!(
            other.open_pin(&sealed),
            Err(SealError::DoesNotOpen)
        ));
        assert!(format!("{host:?}").contains(&host.public()));
        assert!(matches!(
            seal_pin("not a key", &Secret::from("1234")),
            Err(SealError::BadPublicKey)
        ));
    }

    #[test]
    fn the_key_file_is_made_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = HostKey::load_or_create(dir.path()).unwrap();
        let again = HostKey::load_or_create(dir.path()).unwrap();
        assert_eq!(first.public(), again.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_job_round_trips_and_runs_like_a_local_reader() {
        let readers = readers_with_card("1234");
        let key = HostKey::generate();
        let identify = CardJob {
            id: "j1".into(),
            reader: "Reader A".into(),
            work: JobWork::Identify,
        };
        let wire = serde_json::to_string(&identify).unwrap();
        let back: CardJob = serde_json::from_str(&wire).unwrap();
        let JobOutcome::Identified { card } = run_job(&readers, &key, &back) else {
            panic!("identify failed");
        };
        let expected = ExpectedCard {
            pan_last4: card.pan_last4.clone(),
            psn: card.psn.clone(),
            records_digest: Some(card.records_digest.clone()),
        };
        let compute = |pin: &str| CardJob {
            id: "j2".into(),
            reader: "Reader A".into(),
            work: JobWork::Compute {
                request: CapRequest::Login {
                    challenge: Some("12345678".into()),
                },
                pin_sealed: seal_pin(&key.public(), &Secret::from(pin)).unwrap(),
                expected: expected.clone(),
                min_pin_tries: 1,
            },
        };
        let wire = serde_json::to_string(&compute("1234")).unwrap();
        assert!(!wire.contains("1234\""), "the PIN travels sealed: {wire}");
        let outcome = run_job(&readers, &key, &serde_json::from_str(&wire).unwrap());
        let outcome: JobOutcome =
            serde_json::from_str(&serde_json::to_string(&outcome).unwrap()).unwrap();
        let JobOutcome::Computed { response } = outcome else {
            panic!("compute failed: {outcome:?}");
        };
        assert_eq!(response.response_padded.len(), 8);

        // A wrong PIN comes back as the error the server's rules act on.
        let JobOutcome::Failed { error } = run_job(&readers, &key, &compute("9999")) else {
            panic!("a wrong PIN computed a code");
        };
        let cap = error.into_cap("Reader A");
        assert!(cap.pin_possibly_refused(), "{cap:?}");

        // A PIN sealed to another host never reaches the card.
        let mut foreign = compute("1234");
        if let JobWork::Compute { pin_sealed, .. } = &mut foreign.work {
            *pin_sealed = seal_pin(&HostKey::generate().public(), &Secret::from("1234")).unwrap();
        }
        let JobOutcome::Failed { error } = run_job(&readers, &key, &foreign) else {
            panic!("a foreign seal opened");
        };
        assert!(matches!(error, JobError::Seal { .. }));
        assert!(!error.into_cap("Reader A").pin_possibly_refused());
    }
}
