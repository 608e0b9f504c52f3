//! Records of the card-reader authentication service: institutions (banks),
//! the EMV-CAP cards kept in USB readers, and the audit of every use.
//!
//! A card's PIN reaches the store only AEAD-sealed (`pin_sealed`): the store
//! never sees it in plaintext, and the types carrying it neither print it
//! ([`fmt::Debug`] shows `[sealed]`) nor serialise.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// An institution to be created; `id` is chosen by the caller (e.g. `fi_1a2b3c4d`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewInstitution {
    pub id: String,
    pub name: String,
    /// ISO 3166-1 alpha-2 code, upper case (`BG`).
    pub country: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Institution {
    pub id: String,
    pub name: String,
    pub country: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardStatus {
    /// Usable.
    Active,
    /// Taken out of use, by an operator or after a wrong PIN (so that the
    /// card's own PIN try counter is not run down by retries).
    Disabled,
    /// The card itself refuses (PIN blocked, application blocked).
    Blocked,
}

impl CardStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            CardStatus::Active => "active",
            CardStatus::Disabled => "disabled",
            CardStatus::Blocked => "blocked",
        }
    }

    pub fn parse(s: &str) -> Option<CardStatus> {
        Some(match s {
            "active" => CardStatus::Active,
            "disabled" => CardStatus::Disabled,
            "blocked" => CardStatus::Blocked,
            _ => return None,
        })
    }
}

impl fmt::Display for CardStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A card to be registered; it starts `active`, with `updated_at = created_at`.
#[derive(Clone, PartialEq, Eq)]
pub struct NewCard {
    /// Chosen by the caller (e.g. `card_1a2b3c4d`).
    pub id: String,
    pub institution_id: String,
    pub label: String,
    /// The account (IBAN or the bank's reference) the card's codes act on.
    pub account_reference: String,
    /// The card host whose reader holds the card (a card agent on another
    /// machine); `None` for the server's own readers.
    pub host: Option<String>,
    /// The reader the card sits in; one card per reader of a host.
    pub reader: String,
    /// Last four digits of the card number, when the card's application
    /// carries one (CAP-only applications may not).
    pub pan_last4: Option<String>,
    /// PAN sequence number, two hex digits.
    pub psn: Option<String>,
    /// SHA-256 (64 hex digits) of the application's AID and static records
    /// without card-number data: the identity of a card without a number,
    /// and a second check for one with. At least one of `pan_last4` and
    /// `records_digest` is present.
    pub records_digest: Option<String>,
    /// The EMV application label or mode (e.g. `CAP`).
    pub application: Option<String>,
    /// AEAD-sealed PIN.
    pub pin_sealed: Vec<u8>,
    /// Refuse to use the card when its PIN try counter is below this.
    pub min_pin_tries: u8,
    pub created_at: DateTime<Utc>,
}

impl fmt::Debug for NewCard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewCard")
            .field("id", &self.id)
            .field("institution_id", &self.institution_id)
            .field("label", &self.label)
            .field("account_reference", &self.account_reference)
            .field("host", &self.host)
            .field("reader", &self.reader)
            .field("pan_last4", &self.pan_last4)
            .field("psn", &self.psn)
            .field("records_digest", &self.records_digest)
            .field("application", &self.application)
            .field("pin_sealed", &"[sealed]")
            .field("min_pin_tries", &self.min_pin_tries)
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// A registered card. Not `Serialize`: it carries the sealed PIN.
#[derive(Clone, PartialEq, Eq)]
pub struct Card {
    pub id: String,
    pub institution_id: String,
    pub label: String,
    pub account_reference: String,
    /// The card host whose reader holds the card; `None` for the server's own.
    pub host: Option<String>,
    pub reader: String,
    pub pan_last4: Option<String>,
    pub psn: Option<String>,
    pub records_digest: Option<String>,
    pub application: Option<String>,
    pub status: CardStatus,
    /// Why the card is not active (or was re-activated), for operators.
    pub status_reason: Option<String>,
    /// The card may have counted a wrong PIN (VERIFY went out and no `9000`
    /// came back): it stays out of use until a new PIN is set.
    pub pin_refused: bool,
    /// AEAD-sealed PIN.
    pub pin_sealed: Vec<u8>,
    pub min_pin_tries: u8,
    pub last_used_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// PIN tries left as the card said at its last successful use.
    pub pin_tries_left: Option<u8>,
}

impl fmt::Debug for Card {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Card")
            .field("id", &self.id)
            .field("institution_id", &self.institution_id)
            .field("label", &self.label)
            .field("account_reference", &self.account_reference)
            .field("host", &self.host)
            .field("reader", &self.reader)
            .field("pan_last4", &self.pan_last4)
            .field("psn", &self.psn)
            .field("records_digest", &self.records_digest)
            .field("application", &self.application)
            .field("status", &self.status)
            .field("status_reason", &self.status_reason)
            .field("pin_refused", &self.pin_refused)
            .field("pin_sealed", &"[sealed]")
            .field("min_pin_tries", &self.min_pin_tries)
            .field("last_used_at", &self.last_used_at)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// Fields of a card to change; `None` leaves a field as it is.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CardUpdate {
    pub label: Option<String>,
    pub account_reference: Option<String>,
    /// A new AEAD-sealed PIN; it clears [`Card::pin_refused`].
    pub pin_sealed: Option<Vec<u8>>,
    pub min_pin_tries: Option<u8>,
    /// New status and its reason (`None` clears the reason).
    pub status: Option<(CardStatus, Option<String>)>,
}

impl fmt::Debug for CardUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CardUpdate")
            .field("label", &self.label)
            .field("account_reference", &self.account_reference)
            .field("pin_sealed", &self.pin_sealed.as_ref().map(|_| "[sealed]"))
            .field("min_pin_tries", &self.min_pin_tries)
            .field("status", &self.status)
            .finish()
    }
}

/// One use of a card (or an attempt at one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardAuditEntry {
    /// Assigned by the store; 0 in an entry to record.
    pub id: i64,
    pub at: DateTime<Utc>,
    /// Name of the API token the request came with.
    pub token_name: String,
    pub card_id: String,
    pub institution_id: String,
    /// `m1`, `m2`, `register`, …
    pub mode: String,
    /// `ok`, `wrong_pin`, `blocked`, `busy`, `card_removed`, `error`, …
    pub outcome: String,
    pub detail: Option<String>,
    /// The card's application transaction counter, when read.
    pub atc: Option<u32>,
    pub duration_ms: u64,
}

/// A page of the card audit, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardAuditQuery {
    /// Only this card's entries.
    pub card_id: Option<String>,
    /// Entries per page; capped by the caller.
    pub limit: u32,
    /// Keyset position: only entries with `id < before_id` (the last id of the previous page).
    pub before_id: Option<i64>,
}
