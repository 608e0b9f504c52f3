//! APDU answers on their own: `apdu::exchange` chasing `61xx` (GET
//! RESPONSE) and `6Cxx` (resend with the right Le) over T=0 and T=1, and
//! `transmit_once` for VERIFY. The first byte picks the protocol and the
//! command, the second the command's data length; the rest frames the
//! card's answers. Invariants: no panic; at most three commands (the
//! command and two follow-ups), VERIFY exactly one; each follow-up is the
//! one the previous status word asks for; the answer's data is the
//! concatenation of every answer's data, its status word the last one's;
//! an answer shorter than a status word is `ShortResponse`, a card out of
//! answers a transport error.
use bankbridge_cap::apdu::{self, ApduError};
use bankbridge_cap::{Protocol, TransportError};

use crate::{FuzzCard, answers};

pub fn run(data: &[u8]) {
    let [selector, len, rest @ ..] = data else {
        return;
    };
    let protocol = if selector & 0x80 == 0 {
        Protocol::T0
    } else {
        Protocol::T1
    };
    let verify = selector & 0x40 != 0;
    let ins = if verify { 0x20 } else { 0xB2 };
    let body: Vec<u8> = (0..*len).collect();
    let cmd = match apdu::command(0x00, ins, 0x01, 0x0C, &body) {
        Ok(cmd) => cmd,
        Err(e) => unreachable!("{} data bytes fit a short APDU: {e}", body.len()),
    };
    assert_eq!(cmd.len(), 4 + usize::from(*len > 0) + body.len());
    let given = answers(rest);
    let mut card = FuzzCard::new(given.clone(), protocol, vec![0x3B, 0x00]).recording();
    let result = if verify {
        apdu::transmit_once(&mut card, &cmd)
    } else {
        apdu::exchange(&mut card, &cmd)
    };
    let sent = card.sent.take().unwrap_or_default();
    assert!(sent.len() <= 3, "{} commands for one exchange", sent.len());
    if verify {
        assert_eq!(
            sent,
            std::slice::from_ref(&cmd),
            "VERIFY is sent once, as given"
        );
    } else if let Some(first) = sent.first() {
        // Le = 00 on T=1, and P3 = 00 for a bare header on T=0.
        let with_le = protocol == Protocol::T1 || cmd.len() == 4;
        let expected = if with_le {
            [&cmd[..], &[0x00]].concat()
        } else {
            cmd.clone()
        };
        assert_eq!(first, &expected);
    }
    // What each sent command answered, and what it should have been.
    for (i, pair) in sent.windows(2).enumerate() {
        let previous = &given[i];
        let (sw1, sw2) = (previous[previous.len() - 2], previous[previous.len() - 1]);
        let expected = match sw1 {
            0x61 => vec![0x00, 0xC0, 0x00, 0x00, sw2],
            0x6C => [&sent[0][..4], &[sw2]].concat(),
            other => panic!("a follow-up after status {other:02X}{sw2:02X}"),
        };
        assert_eq!(pair[1], expected, "the follow-up after {sw1:02X}{sw2:02X}");
    }
    match result {
        Ok(response) => {
            let used = &given[..sent.len()];
            let data: Vec<u8> = used
                .iter()
                .flat_map(|a| a[..a.len() - 2].iter().copied())
                .collect();
            assert_eq!(response.data, data, "the data of every answer, in order");
            let last = &used[used.len() - 1];
            assert_eq!(
                response.sw,
                u16::from_be_bytes([last[last.len() - 2], last[last.len() - 1]])
            );
        }
        Err(ApduError::ShortResponse(n)) => {
            assert!(n < 2);
            assert_eq!(given[sent.len() - 1].len(), n);
        }
        Err(ApduError::Transport(TransportError::CardRemoved { .. })) => {
            assert_eq!(
                sent.len(),
                given.len() + 1,
                "removed only once out of answers"
            );
        }
        Err(e) => panic!("an error a card's answers cannot cause: {e}"),
    }
}
