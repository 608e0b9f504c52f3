//! Helpers the fuzz targets share: a card that answers with the fuzzer's
//! bytes, and the framing of those answers.
use bankbridge_cap::{CardTransport, Protocol, TransportError};

pub mod targets;

/// A scratch folder for a target's store (on tmpfs where there is one:
/// the store is not what is fuzzed) and a one-thread runtime to drive it.
pub fn store_bench() -> (tempfile::TempDir, tokio::runtime::Runtime) {
    let dir = tempfile::Builder::new()
        .prefix("bankbridge-fuzz-")
        .tempdir_in(if std::path::Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "/tmp"
        })
        .expect("a temporary folder");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    (dir, runtime)
}

/// Most commands one CAP computation may send before we call it a loop:
/// a real one sends about 15 (SELECTs, GET PROCESSING OPTIONS, a few READ
/// RECORDs, GET DATA, VERIFY, two GENERATE ACs, GET RESPONSEs).
pub const MAX_COMMANDS: usize = 256;

/// Splits `bytes` into answers, each a big-endian u16 length then that
/// many bytes (a short last answer is cut where the bytes end).
pub fn answers(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while bytes.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
        bytes = &bytes[2..];
        let take = len.min(bytes.len());
        out.push(bytes[..take].to_vec());
        bytes = &bytes[take..];
    }
    out
}

/// Frames `answers` the way [`answers`] reads them.
pub fn frame(answers: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for a in answers {
        let len = u16::try_from(a.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&a[..usize::from(len)]);
    }
    out
}

/// A card whose answers are the fuzzer's: once they run out it has left
/// the reader. It counts the commands it was sent.
pub struct FuzzCard {
    answers: std::vec::IntoIter<Vec<u8>>,
    atr: Vec<u8>,
    protocol: Protocol,
    pub commands: usize,
    /// The commands sent, when asked for ([`FuzzCard::recording`]).
    pub sent: Option<Vec<Vec<u8>>>,
}

impl FuzzCard {
    pub fn new(answers: Vec<Vec<u8>>, protocol: Protocol, atr: Vec<u8>) -> Self {
        Self {
            answers: answers.into_iter(),
            atr,
            protocol,
            commands: 0,
            sent: None,
        }
    }

    /// Keeps every command sent, in [`FuzzCard::sent`].
    pub fn recording(mut self) -> Self {
        self.sent = Some(Vec::new());
        self
    }
}

impl CardTransport for FuzzCard {
    fn reader(&self) -> &str {
        "fuzz reader"
    }

    fn protocol(&self) -> Protocol {
        self.protocol
    }

    fn atr(&self) -> &[u8] {
        &self.atr
    }

    fn transmit(&mut self, capdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        self.commands += 1;
        if let Some(sent) = &mut self.sent {
            sent.push(capdu.to_vec());
        }
        assert!(
            self.commands <= MAX_COMMANDS,
            "the CAP engine sent more than {MAX_COMMANDS} commands: it loops on these answers"
        );
        self.answers.next().ok_or(TransportError::CardRemoved {
            reader: "fuzz reader".into(),
        })
    }
}
