//! BankID Relying Party API v6.0 client.
//!
//! - [`qr`]: the animated QR code (HMAC-SHA256 over the seconds since the
//!   order started) and its rendering for a terminal or as SVG.
#![forbid(unsafe_code)]

pub mod qr;
