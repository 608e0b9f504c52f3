//! BankID Relying Party API v6.0 client.
//!
//! - [`types`]: requests and responses with the API's exact field names,
//!   validation of what the API would refuse, personal numbers.
//! - [`client`]: [`BankIdClient`], async over HTTPS with mutual TLS and a
//!   pinned server CA; [`blocking::BlockingBankIdClient`] for sync callers.
//! - [`driver`]: polls an order to its end with hint, QR, cancel and
//!   deadline events.
//! - [`qr`]: the animated QR code and its rendering.
//!
//! ```no_run
//! # async fn example(ca: &[u8], p12: Vec<u8>) -> Result<(), bankbridge_bankid::BankIdError> {
//! use bankbridge_bankid::{AuthRequest, BankIdClient, DriveOptions, Environment, OrderEvent, Outcome, drive};
//!
//! let client = BankIdClient::builder()
//!     .environment(Environment::Test)
//!     .identity_pkcs12(p12, "qwerty123")
//!     .server_ca_pem(ca)
//!     .build()?;
//! let order = client.auth(&AuthRequest::new("192.0.2.10")).await?;
//! let outcome = drive(&client, order.into(), DriveOptions::default(), |event| match event {
//!     OrderEvent::Qr(data) => println!("{}", bankbridge_bankid::qr::render_terminal(&data)),
//!     OrderEvent::Hint(hint) => println!("{hint}"),
//!     _ => {}
//! })
//! .await?;
//! if let Outcome::Complete(data) = outcome {
//!     println!("signed in: {}", data.user.name);
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod enums;

pub mod blocking;
pub mod client;
pub mod driver;
pub mod error;
pub mod messages;
pub mod qr;
pub mod types;

pub use blocking::BlockingBankIdClient;
pub use client::{BankIdClient, BankIdClientBuilder, Environment};
pub use driver::{
    DriveHandle, DriveOptions, OrderApi, OrderEvent, Outcome, StartedOrder, drive, drive_with,
    spawn_drive, spawn_drive_with,
};
pub use error::BankIdError;
pub use qr::QrCode;
pub use types::*;
