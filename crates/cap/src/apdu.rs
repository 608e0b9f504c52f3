//! Command/response exchange with a card, as a CAP reader does it.
//!
//! Commands are written in their short form (header, then Lc and data when
//! there is data). [`exchange`] adapts them to the protocol in use:
//!
//! - T=0: a bare 4-byte header gets P3 = `00`; a card that has data to give
//!   answers `61xx` and the data is fetched with GET RESPONSE; `6Cxx` means
//!   "wrong Le, send again with xx".
//! - T=1: Le = `00` is appended to every command but VERIFY.
//!
//! Both follow-ups are chased at most twice, and their data concatenated.
use crate::transport::{CardTransport, Protocol, TransportError};

/// ISO 7816 status words this crate reacts to.
pub mod sw {
    pub const OK: u16 = 0x9000;
    pub const FILE_NOT_FOUND: u16 = 0x6A82;
    pub const RECORD_NOT_FOUND: u16 = 0x6A83;
    pub const PIN_BLOCKED: u16 = 0x6983;
    pub const REFERENCE_DATA_INVALIDATED: u16 = 0x6984;
    pub const CONDITIONS_NOT_SATISFIED: u16 = 0x6985;
}

/// A card's answer: data and the status word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub data: Vec<u8>,
    pub sw: u16,
}

impl Response {
    pub fn is_ok(&self) -> bool {
        self.sw == sw::OK
    }

    pub fn sw1(&self) -> u8 {
        (self.sw >> 8) as u8
    }

    pub fn sw2(&self) -> u8 {
        self.sw as u8
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApduError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("the card answered {0} byte(s), fewer than a status word")]
    ShortResponse(usize),
    #[error("command too long for a short APDU ({0} data bytes)")]
    TooLong(usize),
}

/// A short-form command: `CLA INS P1 P2 [Lc data]`.
pub fn command(cla: u8, ins: u8, p1: u8, p2: u8, data: &[u8]) -> Result<Vec<u8>, ApduError> {
    let mut out = vec![cla, ins, p1, p2];
    if !data.is_empty() {
        let lc = u8::try_from(data.len()).map_err(|_| ApduError::TooLong(data.len()))?;
        out.push(lc);
        out.extend_from_slice(data);
    }
    Ok(out)
}

const INS_VERIFY: u8 = 0x20;
const MAX_FOLLOW_UPS: usize = 2;

fn split(rapdu: Vec<u8>) -> Result<Response, ApduError> {
    if rapdu.len() < 2 {
        return Err(ApduError::ShortResponse(rapdu.len()));
    }
    let mut data = rapdu;
    let sw2 = data.pop().unwrap_or_default();
    let sw1 = data.pop().unwrap_or_default();
    Ok(Response {
        data,
        sw: u16::from_be_bytes([sw1, sw2]),
    })
}

/// Send `cmd` once and return the card's answer as it came: no GET RESPONSE,
/// no resend with a corrected Le. For VERIFY, where a second command could
/// cost a PIN try.
pub fn transmit_once(card: &mut dyn CardTransport, cmd: &[u8]) -> Result<Response, ApduError> {
    log_command(cmd);
    let response = split(card.transmit(cmd)?)?;
    tracing::trace!(sw = format_args!("{:04X}", response.sw), "card answered");
    Ok(response)
}

/// Send `cmd` (short form) and return the complete answer, following
/// `61xx` with GET RESPONSE and `6Cxx` with a resend. VERIFY goes through
/// [`transmit_once`] instead, never followed up.
pub fn exchange(card: &mut dyn CardTransport, cmd: &[u8]) -> Result<Response, ApduError> {
    if cmd.get(1) == Some(&INS_VERIFY) {
        return transmit_once(card, cmd);
    }
    let mut wire = cmd.to_vec();
    match card.protocol() {
        Protocol::T0 if wire.len() == 4 => wire.push(0x00),
        Protocol::T1 => wire.push(0x00),
        _ => {}
    }
    log_command(&wire);
    let mut response = split(card.transmit(&wire)?)?;
    let mut data = Vec::new();
    for _ in 0..MAX_FOLLOW_UPS {
        let follow_up = match response.sw1() {
            0x61 => vec![0x00, 0xC0, 0x00, 0x00, response.sw2()],
            0x6C if wire.len() >= 4 => {
                let mut again = wire[..4].to_vec();
                again.push(response.sw2());
                again
            }
            _ => break,
        };
        data.extend_from_slice(&response.data);
        log_command(&follow_up);
        response = split(card.transmit(&follow_up)?)?;
    }
    if !data.is_empty() {
        data.extend_from_slice(&response.data);
        response.data = data;
    }
    tracing::trace!(
        sw = format_args!("{:04X}", response.sw),
        len = response.data.len(),
        "card answered"
    );
    Ok(response)
}

/// Trace a command, never showing a PIN block.
fn log_command(wire: &[u8]) {
    if wire.get(1) == Some(&INS_VERIFY) {
        tracing::trace!(apdu = "0020…(PIN block hidden)", "to card");
    } else {
        tracing::trace!(apdu = %hex::encode_upper(wire), "to card");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A card that answers from a script and records what it was sent.
    struct Scripted {
        protocol: Protocol,
        answers: Vec<Vec<u8>>,
        sent: Vec<Vec<u8>>,
    }

    impl CardTransport for Scripted {
        fn reader(&self) -> &str {
            "scripted"
        }
        fn protocol(&self) -> Protocol {
            self.protocol
        }
        fn atr(&self) -> &[u8] {
            &[]
        }
        fn transmit(&mut self, capdu: &[u8]) -> Result<Vec<u8>, TransportError> {
            self.sent.push(capdu.to_vec());
            Ok(self.answers.remove(0))
        }
    }

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    #[test]
    fn t0_get_response_and_wrong_le() {
        let mut card = Scripted {
            protocol: Protocol::T0,
            answers: vec![h("6110"), h("AABB9000")],
            sent: vec![],
        };
        let r = exchange(&mut card, &h("80A8000003830134")).unwrap();
        assert_eq!(
            r,
            Response {
                data: h("AABB"),
                sw: 0x9000
            }
        );
        assert_eq!(card.sent, vec![h("80A8000003830134"), h("00C0000010")]);

        let mut card = Scripted {
            protocol: Protocol::T0,
            answers: vec![h("6C05"), h("0102030405 9000".replace(' ', "").as_str())],
            sent: vec![],
        };
        let r = exchange(&mut card, &h("80CA9F17")).unwrap();
        assert_eq!(r.data, h("0102030405"));
        assert_eq!(card.sent, vec![h("80CA9F1700"), h("80CA9F1705")]);
    }

    #[test]
    fn t1_appends_le_except_to_verify() {
        let mut card = Scripted {
            protocol: Protocol::T1,
            answers: vec![h("9000"), h("9000")],
            sent: vec![],
        };
        exchange(&mut card, &h("00A4040007A0000000048002")).unwrap();
        exchange(&mut card, &h("0020008008241234FFFFFFFFFF")).unwrap();
        assert_eq!(
            card.sent,
            vec![
                h("00A4040007A000000004800200"),
                h("0020008008241234FFFFFFFFFF")
            ]
        );
    }

    #[test]
    fn short_answer_is_an_error() {
        let mut card = Scripted {
            protocol: Protocol::T0,
            answers: vec![h("90")],
            sent: vec![],
        };
        assert_eq!(
            exchange(&mut card, &h("00B2010C")),
            Err(ApduError::ShortResponse(1))
        );
    }

    #[test]
    fn command_forms() {
        assert_eq!(command(0x80, 0xCA, 0x9F, 0x17, &[]).unwrap(), h("80CA9F17"));
        assert_eq!(
            command(0x80, 0xA8, 0, 0, &h("830134")).unwrap(),
            h("80A8000003830134")
        );
        assert!(command(0, 0, 0, 0, &[0; 256]).is_err());
    }
}
