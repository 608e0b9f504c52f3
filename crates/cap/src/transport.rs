//! How the CAP algorithm reaches a card, whatever holds it.
//!
//! - [`CardTransport`]: one open, exclusive session with the card in one
//!   reader. Dropping it ends the session *and resets the card*, so a PIN
//!   verified during the session never stays open for the next user.
//! - [`Readers`]: lists readers and opens sessions. [`crate::pcsc::PcscReaders`]
//!   reaches real readers (and vpcd's virtual ones) through pcscd;
//!   [`VirtualReaders`] holds simulated cards in this process.
//! - [`SmartCard`]: the card side — what a simulated or replayed card
//!   implements, whether it sits in a [`VirtualReaders`] slot or is served to
//!   pcscd over the vpcd protocol.
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The transmission protocol the reader negotiated with the card.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Protocol {
    /// Character protocol: Le travels as P3, a card answers 61xx / 6Cxx.
    T0,
    /// Block protocol: Le is appended to the command.
    T1,
}

impl Protocol {
    /// The protocol an ATR offers first (what pcscd picks): T=0 unless the
    /// interface bytes announce only T=1.
    pub fn from_atr(atr: &[u8]) -> Protocol {
        // ATR: TS T0 [TA1 TB1 TC1 TD1] ...; TDi's low nibble names a protocol.
        let Some(&t0) = atr.get(1) else {
            return Protocol::T0;
        };
        let mut y = t0 >> 4;
        let mut i = 2;
        let mut first: Option<u8> = None;
        loop {
            i += usize::from(y & 1 != 0) + usize::from(y & 2 != 0) + usize::from(y & 4 != 0);
            if y & 8 == 0 {
                break;
            }
            let Some(&td) = atr.get(i) else { break };
            first.get_or_insert(td & 0x0F);
            y = td >> 4;
            i += 1;
        }
        match first {
            Some(1) => Protocol::T1,
            _ => Protocol::T0,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::T0 => "T=0",
            Protocol::T1 => "T=1",
        })
    }
}

/// Why a card could not be reached or stopped answering.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("no card reader is connected")]
    NoReaders,
    #[error("no reader matches {spec:?}; readers: {}", list_or_none(.available))]
    ReaderNotFound {
        spec: String,
        available: Vec<String>,
    },
    #[error("{spec:?} matches several readers ({}); give more of the name or an index", .matches.join(", "))]
    AmbiguousReader { spec: String, matches: Vec<String> },
    #[error("reader {reader:?} has no card in it")]
    NoCard { reader: String },
    #[error("the card was removed from reader {reader:?} during the operation")]
    CardRemoved { reader: String },
    #[error("reader {reader:?} is in use by another program")]
    Busy { reader: String },
    #[error("the PC/SC service is not available ({0}); is pcscd running?")]
    Service(String),
    #[error("card reader error: {0}")]
    Reader(String),
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// One exclusive session with a card. Dropping it resets the card.
pub trait CardTransport: Send {
    /// The reader's name.
    fn reader(&self) -> &str;
    fn protocol(&self) -> Protocol;
    fn atr(&self) -> &[u8];
    /// Send one command APDU exactly as given; the answer ends with SW1 SW2.
    fn transmit(&mut self, capdu: &[u8]) -> Result<Vec<u8>, TransportError>;
}

/// A reader as [`Readers::list`] reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReaderInfo {
    pub name: String,
    pub card_present: bool,
    /// The card's answer-to-reset, upper-case hex, when a card is present.
    pub atr: Option<String>,
}

/// A source of readers.
pub trait Readers: Send + Sync {
    fn list(&self) -> Result<Vec<ReaderInfo>, TransportError>;
    /// Open an exclusive session with the card in the reader named exactly `reader`.
    fn connect(&self, reader: &str) -> Result<Box<dyn CardTransport>, TransportError>;
}

/// The reader a user means by `spec`: an index into `readers`, an exact
/// name, or a substring matching exactly one name.
pub fn resolve_reader(readers: &[ReaderInfo], spec: &str) -> Result<String, TransportError> {
    let names: Vec<String> = readers.iter().map(|r| r.name.clone()).collect();
    if names.is_empty() {
        return Err(TransportError::NoReaders);
    }
    if let Ok(i) = spec.parse::<usize>()
        && let Some(name) = names.get(i)
    {
        return Ok(name.clone());
    }
    if let Some(name) = names.iter().find(|n| *n == spec) {
        return Ok(name.clone());
    }
    let matches: Vec<String> = names.iter().filter(|n| n.contains(spec)).cloned().collect();
    match matches.len() {
        1 => Ok(matches.into_iter().next().unwrap_or_default()),
        0 => Err(TransportError::ReaderNotFound {
            spec: spec.to_owned(),
            available: names,
        }),
        _ => Err(TransportError::AmbiguousReader {
            spec: spec.to_owned(),
            matches,
        }),
    }
}

/// The card side of a transport: what a simulated card implements.
pub trait SmartCard: Send {
    /// Answer to reset.
    fn atr(&self) -> Vec<u8>;
    /// A reset or power cycle: forget the selected application, a verified
    /// PIN and any transaction in progress. Persistent state (PIN try
    /// counter, ATC) survives.
    fn reset(&mut self);
    /// Answer one command APDU (data ‖ SW1 SW2). `None` means the card has
    /// left the reader (a simulated removal).
    fn process(&mut self, capdu: &[u8]) -> Option<Vec<u8>>;
}

/// A slot of [`VirtualReaders`].
struct Slot {
    card: Mutex<Option<Box<dyn SmartCard>>>,
    in_use: AtomicBool,
}

/// Simulated cards in named in-process readers. Sessions are exclusive per
/// reader, like PC/SC's exclusive share mode.
#[derive(Clone, Default)]
pub struct VirtualReaders {
    slots: Arc<Mutex<BTreeMap<String, Arc<Slot>>>>,
}

impl VirtualReaders {
    pub fn new() -> Self {
        Self::default()
    }

    /// Put `card` into reader `name` (created if new; a card already there is replaced).
    pub fn insert(&self, name: &str, card: Box<dyn SmartCard>) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        match slots.get(name) {
            Some(slot) => *slot.card.lock().unwrap_or_else(|p| p.into_inner()) = Some(card),
            None => {
                slots.insert(
                    name.to_owned(),
                    Arc::new(Slot {
                        card: Mutex::new(Some(card)),
                        in_use: AtomicBool::new(false),
                    }),
                );
            }
        }
    }

    /// Pull the card out of reader `name`; a session in progress fails with
    /// [`TransportError::CardRemoved`]. Returns the card.
    pub fn eject(&self, name: &str) -> Option<Box<dyn SmartCard>> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slot = slots.get(name)?;
        slot.card.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    fn slot(&self, name: &str) -> Option<Arc<Slot>> {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }
}

impl Readers for VirtualReaders {
    fn list(&self) -> Result<Vec<ReaderInfo>, TransportError> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        Ok(slots
            .iter()
            .map(|(name, slot)| {
                let card = slot.card.lock().unwrap_or_else(|p| p.into_inner());
                ReaderInfo {
                    name: name.clone(),
                    card_present: card.is_some(),
                    atr: card.as_ref().map(|c| hex::encode_upper(c.atr())),
                }
            })
            .collect())
    }

    fn connect(&self, reader: &str) -> Result<Box<dyn CardTransport>, TransportError> {
        let slot = self
            .slot(reader)
            .ok_or_else(|| TransportError::ReaderNotFound {
                spec: reader.to_owned(),
                available: self
                    .slots
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .keys()
                    .cloned()
                    .collect(),
            })?;
        if slot.in_use.swap(true, Ordering::AcqRel) {
            return Err(TransportError::Busy {
                reader: reader.to_owned(),
            });
        }
        let atr = {
            let mut card = slot.card.lock().unwrap_or_else(|p| p.into_inner());
            match card.as_mut() {
                Some(card) => {
                    card.reset();
                    card.atr()
                }
                None => {
                    slot.in_use.store(false, Ordering::Release);
                    return Err(TransportError::NoCard {
                        reader: reader.to_owned(),
                    });
                }
            }
        };
        Ok(Box::new(InProcessSession {
            reader: reader.to_owned(),
            protocol: Protocol::from_atr(&atr),
            atr,
            slot,
        }))
    }
}

/// A session with a card in a [`VirtualReaders`] slot.
struct InProcessSession {
    reader: String,
    protocol: Protocol,
    atr: Vec<u8>,
    slot: Arc<Slot>,
}

impl CardTransport for InProcessSession {
    fn reader(&self) -> &str {
        &self.reader
    }

    fn protocol(&self) -> Protocol {
        self.protocol
    }

    fn atr(&self) -> &[u8] {
        &self.atr
    }

    fn transmit(&mut self, capdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        let mut card = self.slot.card.lock().unwrap_or_else(|p| p.into_inner());
        let removed = || TransportError::CardRemoved {
            reader: self.reader.clone(),
        };
        let answer = card.as_mut().ok_or_else(removed)?.process(capdu);
        match answer {
            Some(rapdu) => Ok(rapdu),
            None => {
                // The card left the reader: it stays out until inserted again.
                *card = None;
                Err(removed())
            }
        }
    }
}

impl Drop for InProcessSession {
    fn drop(&mut self) {
        if let Some(card) = self
            .slot
            .card
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            card.reset();
        }
        self.slot.in_use.store(false, Ordering::Release);
    }
}

/// Several reader sources seen as one list (PC/SC readers and in-process
/// virtual ones, say). Names must not collide; the first source wins.
pub struct ChainedReaders(pub Vec<Box<dyn Readers>>);

impl Readers for ChainedReaders {
    fn list(&self) -> Result<Vec<ReaderInfo>, TransportError> {
        let mut all = Vec::new();
        let mut last_err = None;
        for source in &self.0 {
            match source.list() {
                Ok(list) => all.extend(list),
                Err(TransportError::NoReaders) => {}
                Err(e) => last_err = Some(e),
            }
        }
        match (all.is_empty(), last_err) {
            (true, Some(e)) => Err(e),
            _ => Ok(all),
        }
    }

    fn connect(&self, reader: &str) -> Result<Box<dyn CardTransport>, TransportError> {
        let mut first_err = None;
        for source in &self.0 {
            match source.connect(reader) {
                Ok(session) => return Ok(session),
                Err(TransportError::ReaderNotFound { .. } | TransportError::NoReaders) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or_else(|| TransportError::ReaderNotFound {
            spec: reader.to_owned(),
            available: self
                .list()
                .map(|l| l.into_iter().map(|r| r.name).collect())
                .unwrap_or_default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_from_atr() {
        assert_eq!(
            Protocol::from_atr(&hex::decode("3B67000000000000009000").unwrap()),
            Protocol::T0
        );
        // vicc's ATR: TD1 = 81 → T=1.
        assert_eq!(
            Protocol::from_atr(&hex::decode("3B9513810180 73FF01000B".replace(' ', "")).unwrap()),
            Protocol::T1
        );
        assert_eq!(Protocol::from_atr(&[]), Protocol::T0);
    }

    fn infos(names: &[&str]) -> Vec<ReaderInfo> {
        names
            .iter()
            .map(|n| ReaderInfo {
                name: (*n).to_owned(),
                card_present: true,
                atr: None,
            })
            .collect()
    }

    #[test]
    fn reader_by_index_name_or_substring() {
        let r = infos(&["Virtual PCD 00 00", "Virtual PCD 00 01", "Gemalto USB"]);
        assert_eq!(resolve_reader(&r, "1").unwrap(), "Virtual PCD 00 01");
        assert_eq!(resolve_reader(&r, "Gemalto").unwrap(), "Gemalto USB");
        assert_eq!(
            resolve_reader(&r, "Virtual PCD 00 00").unwrap(),
            "Virtual PCD 00 00"
        );
        assert!(matches!(
            resolve_reader(&r, "Virtual"),
            Err(TransportError::AmbiguousReader { .. })
        ));
        let err = resolve_reader(&r, "Omnikey").unwrap_err();
        assert!(err.to_string().contains("Gemalto USB"), "{err}");
        assert_eq!(resolve_reader(&[], "0"), Err(TransportError::NoReaders));
    }
}
