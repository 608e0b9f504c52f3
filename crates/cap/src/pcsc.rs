//! Real card readers through pcscd (PC/SC), vpcd's virtual readers included.
//!
//! Every call opens its own PC/SC context, so a restarted pcscd is picked up
//! without restarting this process. A session holds the card in exclusive
//! mode and resets it when dropped, so a PIN verified in it never stays open
//! for another program.
use std::ffi::CString;
use std::time::{Duration, Instant};

use pcsc::{Context, Disposition, Protocols, ReaderState, Scope, ShareMode, State};

use crate::transport::{CardTransport, Protocol, ReaderInfo, Readers, TransportError};

/// The readers pcscd knows.
#[derive(Clone, Debug, Default)]
pub struct PcscReaders {
    _private: (),
}

impl PcscReaders {
    pub fn new() -> Self {
        Self::default()
    }
}

fn context() -> Result<Context, TransportError> {
    Context::establish(Scope::User).map_err(|e| map_error(e, ""))
}

/// A pcsc error as a [`TransportError`] about `reader`.
fn map_error(error: pcsc::Error, reader: &str) -> TransportError {
    use pcsc::Error as E;
    let reader = reader.to_owned();
    match error {
        E::NoSmartcard => TransportError::NoCard { reader },
        E::RemovedCard | E::ResetCard => TransportError::CardRemoved { reader },
        E::SharingViolation => TransportError::Busy { reader },
        E::NoService | E::ServiceStopped => TransportError::Service(error.to_string()),
        E::NoReadersAvailable => TransportError::NoReaders,
        E::UnknownReader => TransportError::ReaderNotFound {
            spec: reader,
            available: Vec::new(),
        },
        E::ReaderUnavailable => {
            TransportError::Reader(format!("reader {reader:?} is unavailable (unplugged?)"))
        }
        E::UnresponsiveCard | E::UnpoweredCard => TransportError::Reader(format!(
            "the card in {reader:?} does not answer ({error}); take it out and insert it again"
        )),
        other if reader.is_empty() => TransportError::Reader(other.to_string()),
        other => TransportError::Reader(format!("{reader}: {other}")),
    }
}

fn reader_names(ctx: &Context) -> Result<Vec<CString>, TransportError> {
    match ctx.list_readers_owned() {
        Ok(names) => Ok(names),
        // pcscd answers "no readers" with an error; an empty list says it.
        Err(pcsc::Error::NoReadersAvailable) => Ok(Vec::new()),
        Err(e) => Err(map_error(e, "")),
    }
}

impl Readers for PcscReaders {
    /// Every reader pcscd knows, with its card's ATR. No readers is an
    /// empty list; pcscd not running is [`TransportError::Service`].
    fn list(&self) -> Result<Vec<ReaderInfo>, TransportError> {
        let ctx = context()?;
        let names = reader_names(&ctx)?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut states: Vec<ReaderState> = names
            .iter()
            .map(|name| ReaderState::new(name.clone(), State::UNAWARE))
            .collect();
        // UNAWARE makes pcscd answer at once with the current states.
        ctx.get_status_change(Duration::ZERO, &mut states)
            .map_err(|e| map_error(e, ""))?;
        Ok(states
            .iter()
            .map(|state| {
                let present = state.event_state().contains(State::PRESENT);
                let atr = state.atr();
                ReaderInfo {
                    name: state.name().to_string_lossy().into_owned(),
                    card_present: present,
                    atr: (present && !atr.is_empty()).then(|| hex::encode_upper(atr)),
                }
            })
            .collect())
    }

    fn connect(&self, reader: &str) -> Result<Box<dyn CardTransport>, TransportError> {
        let ctx = context()?;
        let not_found = |ctx: &Context| TransportError::ReaderNotFound {
            spec: reader.to_owned(),
            available: reader_names(ctx)
                .unwrap_or_default()
                .iter()
                .map(|n| n.to_string_lossy().into_owned())
                .collect(),
        };
        let Ok(name) = CString::new(reader) else {
            return Err(not_found(&ctx));
        };
        let card = match ctx.connect(&name, ShareMode::Exclusive, Protocols::ANY) {
            Ok(card) => card,
            Err(pcsc::Error::UnknownReader) => return Err(not_found(&ctx)),
            Err(e) => return Err(map_error(e, reader)),
        };
        // The Card holds its own reference to the context, keeping it alive.
        let status = card.status2_owned().map_err(|e| map_error(e, reader))?;
        let atr = status.atr().to_vec();
        let protocol = match status.protocol2() {
            Some(pcsc::Protocol::T1) => Protocol::T1,
            Some(pcsc::Protocol::T0) => Protocol::T0,
            _ => Protocol::from_atr(&atr),
        };
        tracing::debug!(reader, %protocol, atr = %hex::encode_upper(&atr), "PC/SC session opened");
        Ok(Box::new(PcscSession {
            reader: reader.to_owned(),
            protocol,
            atr,
            card: Some(card),
        }))
    }
}

/// An exclusive session with a card in a PC/SC reader.
struct PcscSession {
    reader: String,
    protocol: Protocol,
    atr: Vec<u8>,
    /// `None` only while dropping.
    card: Option<pcsc::Card>,
}

impl CardTransport for PcscSession {
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
        let card = self
            .card
            .as_ref()
            .ok_or_else(|| TransportError::CardRemoved {
                reader: self.reader.clone(),
            })?;
        let mut buffer = vec![0u8; pcsc::MAX_BUFFER_SIZE_EXTENDED];
        match card.transmit(capdu, &mut buffer) {
            Ok(answer) if answer.len() >= 2 => Ok(answer.to_vec()),
            Ok(answer) => Err(broken_exchange(
                card,
                &self.reader,
                &format!("the card answered {} byte(s), no status word", answer.len()),
            )),
            Err(
                error @ (pcsc::Error::NotTransacted
                | pcsc::Error::CommError
                | pcsc::Error::UnresponsiveCard),
            ) => Err(broken_exchange(card, &self.reader, &error.to_string())),
            Err(error) => Err(map_error(error, &self.reader)),
        }
    }
}

/// How long pcscd may take to notice a removed card: it polls readers
/// without card-event support every 400 ms.
const REMOVAL_NOTICE: Duration = Duration::from_millis(1500);

/// A failed exchange usually means the card left the reader before pcscd
/// noticed: wait for pcscd to say so, so callers get
/// [`TransportError::CardRemoved`] rather than a communication error.
fn broken_exchange(card: &pcsc::Card, reader: &str, what: &str) -> TransportError {
    let deadline = Instant::now() + REMOVAL_NOTICE;
    loop {
        match card.status2_owned() {
            Err(pcsc::Error::RemovedCard | pcsc::Error::ResetCard | pcsc::Error::NoSmartcard) => {
                return TransportError::CardRemoved {
                    reader: reader.to_owned(),
                };
            }
            Ok(status) if !status.status().contains(pcsc::Status::PRESENT) => {
                return TransportError::CardRemoved {
                    reader: reader.to_owned(),
                };
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            return TransportError::Reader(format!("{reader}: {what}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for PcscSession {
    fn drop(&mut self) {
        let Some(card) = self.card.take() else {
            return;
        };
        // Reset, so a verified PIN does not outlive the session.
        if let Err((_card, error)) = card.disconnect(Disposition::ResetCard) {
            // The card is gone already in the usual failure; anything else
            // is worth a look. Dropping `_card` tries once more.
            match error {
                pcsc::Error::RemovedCard | pcsc::Error::NoSmartcard => {
                    tracing::debug!(reader = %self.reader, %error, "card gone before disconnect");
                }
                _ => {
                    tracing::warn!(reader = %self.reader, %error, "could not reset the card on disconnect")
                }
            }
        }
    }
}

/// Wait until a reader whose name contains `reader_name_substring` holds a
/// card (pcscd notices a new card within about half a second); returns the
/// reader's full name.
pub fn wait_for_card(
    reader_name_substring: &str,
    timeout: Duration,
) -> Result<String, TransportError> {
    let readers = PcscReaders::new();
    let deadline = Instant::now() + timeout;
    loop {
        let listed = readers.list();
        if let Ok(list) = &listed
            && let Some(found) = list
                .iter()
                .find(|r| r.card_present && r.name.contains(reader_name_substring))
        {
            return Ok(found.name.clone());
        }
        if Instant::now() >= deadline {
            let list = listed?;
            return Err(
                match list.iter().find(|r| r.name.contains(reader_name_substring)) {
                    Some(r) => TransportError::NoCard {
                        reader: r.name.clone(),
                    },
                    None => TransportError::ReaderNotFound {
                        spec: reader_name_substring.to_owned(),
                        available: list.into_iter().map(|r| r.name).collect(),
                    },
                },
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait until no reader whose name contains `reader_name_substring` holds a
/// card (after a removal, before reusing the slot).
pub fn wait_for_removal(
    reader_name_substring: &str,
    timeout: Duration,
) -> Result<(), TransportError> {
    let readers = PcscReaders::new();
    let deadline = Instant::now() + timeout;
    loop {
        let list = readers.list()?;
        let holding = list
            .iter()
            .find(|r| r.card_present && r.name.contains(reader_name_substring));
        match holding {
            None => return Ok(()),
            Some(r) if Instant::now() >= deadline => {
                return Err(TransportError::Reader(format!(
                    "reader {:?} still reports a card after {timeout:?}",
                    r.name
                )));
            }
            Some(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_what_a_user_can_act_on() {
        assert_eq!(
            map_error(pcsc::Error::NoSmartcard, "R"),
            TransportError::NoCard { reader: "R".into() }
        );
        assert_eq!(
            map_error(pcsc::Error::RemovedCard, "R"),
            TransportError::CardRemoved { reader: "R".into() }
        );
        assert_eq!(
            map_error(pcsc::Error::ResetCard, "R"),
            TransportError::CardRemoved { reader: "R".into() }
        );
        assert_eq!(
            map_error(pcsc::Error::SharingViolation, "R"),
            TransportError::Busy { reader: "R".into() }
        );
        assert!(matches!(
            map_error(pcsc::Error::NoService, ""),
            TransportError::Service(_)
        ));
        assert!(matches!(
            map_error(pcsc::Error::ServiceStopped, "R"),
            TransportError::Service(_)
        ));
        assert_eq!(
            map_error(pcsc::Error::NoReadersAvailable, ""),
            TransportError::NoReaders
        );
        assert!(matches!(
            map_error(pcsc::Error::UnknownReader, "R"),
            TransportError::ReaderNotFound { .. }
        ));
        let other = map_error(pcsc::Error::CommError, "R").to_string();
        assert!(other.contains('R'), "{other}");
    }
}
