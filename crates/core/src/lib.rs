//! Domain types shared by every bankbridge crate.
//!
//! Nothing here does I/O: connectors produce these types, the sync engine
//! reconciles them, the store persists them and the server serialises them.
#![forbid(unsafe_code)]

pub mod categories;
pub mod connector;
pub mod crypto;
pub mod envelope;
pub mod iban;
pub mod model;
pub mod money;
pub mod net;
pub mod sca;
pub mod secret;
pub mod tls;

pub use connector::{
    Connector, ConnectorError, ConnectorForm, ConnectorLimits, ConsentInfo, DateWindow,
    TransientKind, WindowPage,
};
pub use crypto::{CryptoError, MasterKey};
pub use iban::{Iban, IbanError};
pub use model::clean_label;
pub use model::{
    Account, Balance, BalanceKind, ConnectionSettings, Credentials, Document, DocumentContent,
    FetchedAccount, FetchedDocument, FetchedTransaction, RawJson, Transaction, TxStatus,
};
pub use money::{Currency, CurrencyError, Money, parse_decimal};
pub use sca::{
    Attendance, ScaAnswer, ScaChallenge, ScaProgress, ScaSolver, ScaSolverError, Unattended,
};
pub use secret::Secret;
