//! The CAP engine against a card that answers with arbitrary bytes: the
//! answers to SELECT, GET PROCESSING OPTIONS, READ RECORD, GET DATA,
//! VERIFY and GENERATE AC. Invariants: no panic; a typed error or a code;
//! at most `MAX_COMMANDS` commands (no loop on a card's answers); a code
//! is digits only.
use crate::{FuzzCard, answers};
use bankbridge_cap::{CapRequest, PinPolicy, Protocol, emv};
use bankbridge_core::Secret;

pub fn run(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let protocol = if selector & 0x80 == 0 {
        Protocol::T0
    } else {
        Protocol::T1
    };
    let mut card = FuzzCard::new(answers(rest), protocol, vec![0x3B, 0x00]);
    let request = match selector & 0x03 {
        0 => None,
        1 => Some(CapRequest::Login { challenge: None }),
        2 => Some(CapRequest::Login {
            challenge: Some("12345678".into()),
        }),
        _ => Some(CapRequest::Sign {
            numbers: vec!["1234".into(), "99".into()],
        }),
    };
    match request {
        None => {
            let _ = emv::identify(&mut card);
        }
        Some(request) => {
            let pin = Secret::new("1234".to_owned());
            if let Ok(response) =
                emv::run(&mut card, &request, &pin, None, PinPolicy { min_tries: 1 })
            {
                assert!(
                    !response.response.is_empty()
                        && response.response.bytes().all(|b| b.is_ascii_digit()),
                    "a code of digits: {:?}",
                    response.response
                );
            }
        }
    }
}
