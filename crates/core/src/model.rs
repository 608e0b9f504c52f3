//! The bank data model: what connectors fetch and what the store keeps.
use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Currency, Iban};

/// An account as a connector reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FetchedAccount {
    /// The bank's stable identifier for the account (the IBAN when it has nothing better).
    pub provider_id: String,
    pub iban: Option<Iban>,
    pub currency: Currency,
    pub name: Option<String>,
    /// Free-form kind as the bank names it (current, savings, card, ...).
    pub kind: Option<String>,
    pub raw: serde_json::Value,
}

/// A stored account.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub id: i64,
    pub connection_id: i64,
    pub provider_id: String,
    pub iban: Option<Iban>,
    pub currency: Currency,
    pub name: Option<String>,
    pub kind: Option<String>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

impl Account {
    /// The account as a person names it: its name at the bank, else its
    /// IBAN, else the bank's id.
    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .or_else(|| self.iban.as_ref().map(|i| i.as_str().to_owned()))
            .unwrap_or_else(|| self.provider_id.clone())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalanceKind {
    /// Booked balance at the start of the reference date.
    OpeningBooked,
    /// Booked balance at the end of the reference date.
    ClosingBooked,
    /// Available balance (booked plus pending plus overdraft) at the reference time.
    Available,
}

impl BalanceKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            BalanceKind::OpeningBooked => "opening_booked",
            BalanceKind::ClosingBooked => "closing_booked",
            BalanceKind::Available => "available",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "opening_booked" => BalanceKind::OpeningBooked,
            "closing_booked" => BalanceKind::ClosingBooked,
            "available" => BalanceKind::Available,
            _ => return None,
        })
    }
}

/// A balance snapshot. Kept as history: one row per (account, kind, reference date).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Balance {
    pub kind: BalanceKind,
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    pub currency: Currency,
    pub reference_date: NaiveDate,
}

impl Balance {
    /// The amount with its currency's minor units.
    pub fn as_money(mut self) -> Self {
        self.amount = self.currency.money(self.amount);
        self
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxStatus {
    Pending,
    Booked,
    /// A pending transaction the bank stopped reporting without booking it.
    Void,
}

impl TxStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            TxStatus::Pending => "pending",
            TxStatus::Booked => "booked",
            TxStatus::Void => "void",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => TxStatus::Pending,
            "booked" => TxStatus::Booked,
            "void" => TxStatus::Void,
            _ => return None,
        })
    }
}

/// A transaction as a connector reports it, before reconciliation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FetchedTransaction {
    /// The bank's own id, when it has a stable one. Without one the store
    /// identifies the row by its fingerprint.
    pub provider_id: Option<String>,
    pub status: TxStatus,
    /// The date the bank books the transaction under (for pending: the authorisation date).
    pub booking_date: NaiveDate,
    pub value_date: Option<NaiveDate>,
    /// When the payment was really made (card use, order time), if the bank says.
    pub transaction_date: Option<NaiveDate>,
    /// Signed: debits are negative.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    pub currency: Currency,
    #[serde(with = "rust_decimal::serde::str_option")]
    pub original_amount: Option<Decimal>,
    pub original_currency: Option<Currency>,
    /// The label exactly as the bank sent it.
    pub raw_label: String,
    /// A cleaned-up label for people (whitespace collapsed, noise removed).
    pub label: String,
    pub counterparty_name: Option<String>,
    pub counterparty_iban: Option<String>,
    pub remittance_info: Option<String>,
    /// The bank's own transaction code(s), e.g. Fibank's `trnType/trnCode`.
    pub bank_code: Option<String>,
    /// The running balance after this transaction, when the bank reports one.
    #[serde(with = "rust_decimal::serde::str_option")]
    pub running_balance: Option<Decimal>,
    /// The record exactly as the bank sent it.
    pub raw: serde_json::Value,
}

impl FetchedTransaction {
    /// Content hash used when the bank gives no stable id, and to match
    /// identical twins: booking date, amount, currency and raw label. The
    /// occurrence counter (identical twins on one day) is added by the caller.
    pub fn content_fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.booking_date.to_string().as_bytes());
        h.update([0]);
        h.update(self.amount.normalize().to_string().as_bytes());
        h.update([0]);
        h.update(self.currency.as_str().as_bytes());
        h.update([0]);
        h.update(self.raw_label.as_bytes());
        hex::encode(&h.finalize()[..12])
    }
}

/// Collapse runs of whitespace and trim: the cleaned label of a raw bank label.
pub fn clean_label(raw: &str) -> String {
    raw.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// JSON text kept verbatim: a stored record's `raw` is served exactly as it
/// was stored, without parsing it into a tree and writing it out again (most
/// of a transaction page's bytes are its raw records). Equality is textual;
/// the text is the canonical form `serde_json` wrote when the row was stored.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawJson(Box<serde_json::value::RawValue>);

impl RawJson {
    /// Check that `text` is JSON and keep it as it is.
    pub fn from_string(text: String) -> Result<Self, serde_json::Error> {
        serde_json::value::RawValue::from_string(text).map(RawJson)
    }

    /// The JSON text of a value.
    pub fn from_value(value: &serde_json::Value) -> Self {
        // A `Value` always serialises; its text is valid JSON.
        RawJson(
            serde_json::value::to_raw_value(value)
                .unwrap_or_else(|_| serde_json::value::RawValue::NULL.to_owned()),
        )
    }

    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// Parse into a tree (for callers that look inside).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(self.0.get()).unwrap_or(serde_json::Value::Null)
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored transaction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    pub id: i64,
    pub connection_id: i64,
    pub account_id: i64,
    /// The bank's id, or `fp:<fingerprint>:<occurrence>` when the bank has none.
    pub provider_id: String,
    /// The id this row had while pending, when it booked under a new id.
    pub pending_provider_id: Option<String>,
    pub fingerprint: String,
    pub status: TxStatus,
    pub booking_date: NaiveDate,
    pub value_date: Option<NaiveDate>,
    pub transaction_date: Option<NaiveDate>,
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    pub currency: Currency,
    #[serde(with = "rust_decimal::serde::str_option")]
    pub original_amount: Option<Decimal>,
    pub original_currency: Option<Currency>,
    /// The account's balance after this row, when the bank gives it.
    #[serde(with = "rust_decimal::serde::str_option")]
    pub running_balance: Option<Decimal>,
    pub raw_label: String,
    pub label: String,
    pub counterparty_name: Option<String>,
    pub counterparty_iban: Option<String>,
    pub remittance_info: Option<String>,
    pub bank_code: Option<String>,
    pub raw: RawJson,
    /// Set by category rules; `None` when no rule matched (or none ran).
    pub category: Option<String>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Transaction {
    /// Amounts with their currency's minor units (see [`Currency::money`]),
    /// the way every output writes them.
    pub fn as_money(mut self) -> Self {
        self.amount = self.currency.money(self.amount);
        self.running_balance = self.running_balance.map(|b| self.currency.money(b));
        let original = self.original_currency.unwrap_or(self.currency);
        self.original_amount = self.original_amount.map(|a| original.money(a));
        self
    }
}

/// A document (account statement, notice, …) as a connector lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct FetchedDocument {
    /// The connector's stable key for the document within the connection:
    /// the same document listed again (in a later sync, in another list of
    /// the bank) has the same key, so it is neither downloaded nor stored twice.
    pub provider_id: String,
    /// The account it belongs to ([`FetchedAccount::provider_id`]), when the bank says.
    pub account: Option<String>,
    /// What it is, lower case: `statement`, `document`, `notice`, …
    pub kind: String,
    /// The bank's own category (code or label), if any.
    pub category: Option<String>,
    pub title: String,
    /// The date the bank gives the document (production or period date).
    pub date: Option<NaiveDate>,
    /// What the connector needs to download it (a download token, a URL):
    /// kept by the connector for [`crate::Connector::download`], never stored.
    pub locator: crate::Secret<String>,
}

/// The bytes of a document and their media type.
#[derive(Clone, PartialEq, Eq)]
pub struct DocumentContent {
    /// `application/pdf`, … (as the bank labelled it, checked by the connector).
    pub content_type: String,
    pub bytes: Vec<u8>,
}

impl fmt::Debug for DocumentContent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DocumentContent")
            .field("content_type", &self.content_type)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// A stored document. Its bytes are kept once per SHA-256, however many
/// documents (of any connection) share them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    pub id: i64,
    pub connection_id: i64,
    pub account_id: Option<i64>,
    /// The connector's key of the document (see [`FetchedDocument::provider_id`]).
    pub provider_id: String,
    pub kind: String,
    pub category: Option<String>,
    pub title: String,
    pub date: Option<NaiveDate>,
    pub content_type: String,
    /// Lower-case hex SHA-256 of the bytes.
    pub sha256: String,
    /// Size of the bytes.
    pub size: u64,
    pub first_seen: DateTime<Utc>,
}

/// What a connection needs to log in and sync, apart from its secret credentials.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConnectionSettings {
    pub base_url: String,
    pub username: String,
    /// Longest window to ask the bank for, in days (capped by the connector's own limit).
    pub window_days: u32,
    /// How many days before the last synced day each incremental sync starts again.
    pub overlap_days: u32,
    /// Oldest day to backfill to; `None` walks back until the bank has nothing older.
    pub since: Option<NaiveDate>,
    /// Seconds between scheduled syncs in `serve`; `None` means manual only.
    pub interval_secs: Option<u64>,
    /// What one connector needs beyond the above, by name (the `xs2a`
    /// connector's bank, SCA approach, …). No secrets: those are credentials.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub options: std::collections::BTreeMap<String, String>,
    /// The registered bank card (its id) that answers this connection's
    /// card-reader challenges unattended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sca_card: Option<String>,
}

impl ConnectionSettings {
    pub fn new(base_url: impl Into<String>, username: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            username: username.into(),
            window_days: 30,
            overlap_days: 7,
            since: None,
            interval_secs: None,
            options: Default::default(),
            sca_card: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn tx(label: &str, amount: &str) -> FetchedTransaction {
        FetchedTransaction {
            provider_id: None,
            status: TxStatus::Booked,
            booking_date: NaiveDate::from_ymd_opt(2024, 3, 1).unwrap(),
            value_date: None,
            transaction_date: None,
            amount: Decimal::from_str(amount).unwrap(),
            currency: "EUR".parse().unwrap(),
            original_amount: None,
            original_currency: None,
            raw_label: label.into(),
            label: clean_label(label),
            counterparty_name: None,
            counterparty_iban: None,
            remittance_info: None,
            bank_code: None,
            running_balance: None,
            raw: serde_json::Value::Null,
        }
    }

    #[test]
    fn fingerprint_ignores_trailing_zeros_but_not_label() {
        assert_eq!(
            tx("COFFEE", "-2.50").content_fingerprint(),
            tx("COFFEE", "-2.5").content_fingerprint()
        );
        assert_ne!(
            tx("COFFEE", "-2.50").content_fingerprint(),
            tx("COFFEE ", "-2.50").content_fingerprint()
        );
        assert_ne!(
            tx("COFFEE", "-2.50").content_fingerprint(),
            tx("COFFEE", "2.50").content_fingerprint()
        );
    }

    #[test]
    fn clean_label_collapses_whitespace() {
        assert_eq!(clean_label("  POS   SHOP\t12 "), "POS SHOP 12");
    }
}

/// The secret half of a connection's login (password, PIN, ...), keyed by
/// field name. Sealed as one JSON object before it reaches the store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Credentials {
    pub fields: std::collections::BTreeMap<String, crate::Secret<String>>,
}

impl Credentials {
    pub fn with_password(password: crate::Secret<String>) -> Self {
        let mut fields = std::collections::BTreeMap::new();
        fields.insert("password".to_owned(), password);
        Self { fields }
    }

    pub fn get(&self, field: &str) -> Option<&crate::Secret<String>> {
        self.fields.get(field)
    }

    /// The JSON form to seal. Exposes the secrets: only for `MasterKey::seal`.
    pub fn to_json_for_sealing(&self) -> zeroize::Zeroizing<String> {
        let map: std::collections::BTreeMap<&str, &str> = self
            .fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose().as_str()))
            .collect();
        zeroize::Zeroizing::new(serde_json::to_string(&map).expect("string map serialises"))
    }

    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        let fields: std::collections::BTreeMap<String, crate::Secret<String>> =
            serde_json::from_str(json)?;
        Ok(Self { fields })
    }
}
