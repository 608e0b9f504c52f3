//! Checking a code the way the card's issuer would, for simulated banks.
//!
//! The issuer holds the card's key and knows what the reader sends, so it
//! recomputes the cryptogram for an ATC near the last one it saw and
//! compares. Here the recomputation *is* the reader algorithm run against a
//! copy of the virtual card set to that ATC: one implementation of the
//! terminal side, so the verifier cannot drift from what readers do.
use bankbridge_core::Secret;

use crate::emv::{self, CapError, CapRequest, CapResponse, PinPolicy};
use crate::transport::{Readers, VirtualReaders};
use crate::virtual_card::{VirtualCard, VirtualCardConfig};

/// The code the card described by `card` gives for `request` at `atc`.
pub fn expected_code(
    card: &VirtualCardConfig,
    request: &CapRequest,
    atc: u16,
) -> Result<CapResponse, CapError> {
    let mut copy = card.clone();
    copy.atc = atc.wrapping_sub(1);
    copy.pin_tries_left = copy.pin_tries_max;
    let virtual_card =
        VirtualCard::new(copy).map_err(|e| CapError::BadInput(format!("virtual card: {e}")))?;
    let readers = VirtualReaders::new();
    readers.insert("issuer", Box::new(virtual_card));
    let mut session = readers.connect("issuer")?;
    emv::run(
        session.as_mut(),
        request,
        &Secret::new(card.pin.clone()),
        None,
        PinPolicy { min_tries: 1 },
    )
}

/// The ATC at which `code` is right for `request`, searching the `window`
/// counters after `last_atc` (the issuer's usual look-ahead); `None` if the
/// code is wrong. Accepts the printed and the zero-padded form.
pub fn verify_code(
    card: &VirtualCardConfig,
    request: &CapRequest,
    code: &str,
    last_atc: u16,
    window: u16,
) -> Option<u16> {
    (1..=window).map(|d| last_atc.wrapping_add(d)).find(|&atc| {
        expected_code(card, request, atc)
            .is_ok_and(|r| r.atc == atc && (r.response == code || r.response_padded == code))
    })
}
