//! EMV-CAP ("Chip Authentication Program") without a hand-held reader.
//!
//! A bank card in a USB reader computes the same one-time codes a pocket CAP
//! reader shows: **M1** (login, optionally with a challenge) and **M2** (sign:
//! numbers mixed into the card's cryptogram). This crate knows nothing of
//! HTTP or storage:
//!
//! - [`tlv`]: BER-TLV parsing and encoding, and data object lists (DOLs);
//! - [`apdu`]: command building and the exchange rules (61xx GET RESPONSE,
//!   6Cxx retry, T=0 / T=1 Le conventions) over a [`transport::CardTransport`];
//! - [`emv`]: the CAP algorithm itself — application selection, GET
//!   PROCESSING OPTIONS, READ RECORD, PIN try counter and VERIFY with its
//!   safety rules, GENERATE AC, and [`otp`] to turn a cryptogram into the
//!   printed code;
//! - [`transport`]: one trait for every way to reach a card, with
//!   [`pcsc`] (real readers through pcscd) and [`virtual_card`] (an EMV card
//!   simulated in-process, or served to pcscd through [`vpcd`]), plus
//!   [`replay`] (a recorded exchange played back, for test vectors).
#![forbid(unsafe_code)]

pub mod apdu;
pub mod emv;
pub mod otp;
pub mod pcsc;
pub mod remote;
pub mod replay;
pub mod tlv;
pub mod transport;
pub mod verify;
pub mod virtual_card;
pub mod vpcd;

pub use emv::{CapError, CapMode, CapRequest, CapResponse, CardIdentity, ExpectedCard, PinPolicy};
pub use transport::{CardTransport, Protocol, ReaderInfo, Readers, SmartCard, TransportError};
