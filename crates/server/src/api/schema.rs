//! OpenAPI schemas of the core types the API serialises directly (the
//! handlers serialise `bankbridge_core`/`bankbridge_store` values as they are,
//! without copying them). These structs exist for the document only; a test
//! checks that their fields match what the real types serialise.
#![allow(dead_code)]

use chrono::{DateTime, NaiveDate, Utc};
use utoipa::ToSchema;

/// A transaction status.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum TxStatus {
    Pending,
    Booked,
    Void,
}

/// A stored transaction. Amounts are decimal strings; debits are negative.
#[derive(ToSchema)]
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
    #[schema(example = "-12.30")]
    pub amount: String,
    #[schema(example = "EUR")]
    pub currency: String,
    pub original_amount: Option<String>,
    pub original_currency: Option<String>,
    /// The label exactly as the bank sent it.
    pub raw_label: String,
    pub label: String,
    pub counterparty_name: Option<String>,
    pub counterparty_iban: Option<String>,
    pub remittance_info: Option<String>,
    pub bank_code: Option<String>,
    pub running_balance: Option<String>,
    /// The record exactly as the bank sent it.
    pub raw: serde_json::Value,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Set by category rules (`bankbridge categorize`, or at import).
    pub category: Option<String>,
}

/// A page of transactions.
#[derive(ToSchema)]
pub struct TransactionPage {
    pub data: Vec<Transaction>,
    /// Pass back as `?cursor=` for the next page; null on the last page.
    pub next: Option<String>,
}

/// A bank account.
#[derive(ToSchema)]
pub struct Account {
    pub id: i64,
    pub connection_id: i64,
    pub provider_id: String,
    pub iban: Option<String>,
    pub currency: String,
    pub name: Option<String>,
    pub kind: Option<String>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

#[derive(ToSchema)]
pub struct AccountList {
    pub data: Vec<Account>,
}

#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum BalanceKind {
    OpeningBooked,
    ClosingBooked,
    Available,
}

/// A balance snapshot (kept as history).
#[derive(ToSchema)]
pub struct Balance {
    pub account_id: i64,
    pub kind: BalanceKind,
    #[schema(example = "1520.00")]
    pub amount: String,
    pub currency: String,
    pub reference_date: NaiveDate,
    pub fetched_at: DateTime<Utc>,
}

#[derive(ToSchema)]
pub struct BalanceList {
    pub data: Vec<Balance>,
}

/// Counts of a finished sync.
#[derive(ToSchema)]
pub struct SyncSummary {
    pub connection: String,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub voided: u64,
    pub windows: u64,
    pub accounts: u64,
    /// New documents (statements) stored by the sync.
    pub documents: u64,
}

/// A document (statement, notice) synced from a bank. Its bytes are at
/// `/api/v1/documents/{id}/content`.
#[derive(ToSchema)]
pub struct Document {
    pub id: i64,
    pub connection_id: i64,
    pub account_id: Option<i64>,
    /// The connector's stable key of the document.
    pub provider_id: String,
    /// `statement`, `document`, …
    pub kind: String,
    /// The bank's own category.
    pub category: Option<String>,
    pub title: String,
    pub date: Option<NaiveDate>,
    #[schema(example = "application/pdf")]
    pub content_type: String,
    /// Lower-case hex SHA-256 of the bytes.
    pub sha256: String,
    pub size: u64,
    pub first_seen: DateTime<Utc>,
}

#[derive(ToSchema)]
pub struct DocumentList {
    pub data: Vec<Document>,
}

/// A sync run, pollable until `status` is `succeeded`, `failed` or `needs_user`
/// (the bank asked for strong customer authentication: the unattended sync
/// stopped there; `summary` says what it stored before, `error` what to do).
#[derive(ToSchema)]
pub struct SyncJob {
    pub id: i64,
    pub connection_id: i64,
    /// `queued`, `running`, `succeeded`, `failed` or `needs_user`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub summary: Option<SyncSummary>,
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::str::FromStr;

    use bankbridge_core::{Account, Balance, BalanceKind, Transaction, TxStatus};
    use bankbridge_store::{StoredBalance, SyncJob};
    use chrono::{NaiveDate, Utc};
    use rust_decimal::Decimal;

    fn schema_fields(name: &str) -> BTreeSet<String> {
        let doc = serde_json::to_value(crate::openapi()).unwrap();
        let props = &doc["components"]["schemas"][name]["properties"];
        props
            .as_object()
            .unwrap_or_else(|| panic!("no schema {name}"))
            .keys()
            .cloned()
            .collect()
    }

    fn keys<T: serde::Serialize>(v: &T) -> BTreeSet<String> {
        serde_json::to_value(v)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }

    #[test]
    fn schemas_match_what_is_serialised() {
        let d = NaiveDate::from_ymd_opt(2024, 1, 2).unwrap();
        let tx = Transaction {
            id: 1,
            connection_id: 1,
            account_id: 1,
            provider_id: "p".into(),
            pending_provider_id: None,
            fingerprint: "f".into(),
            status: TxStatus::Booked,
            booking_date: d,
            value_date: None,
            transaction_date: None,
            amount: Decimal::from_str("-1.5").unwrap(),
            currency: "EUR".parse().unwrap(),
            original_amount: None,
            original_currency: None,
            raw_label: "x".into(),
            label: "x".into(),
            counterparty_name: None,
            counterparty_iban: None,
            remittance_info: None,
            bank_code: None,
            running_balance: None,
            raw: bankbridge_core::RawJson::from_value(&serde_json::json!({})),
            first_seen: Utc::now(),
            last_seen: Utc::now(),
            updated_at: Utc::now(),
            category: None,
        };
        assert_eq!(schema_fields("Transaction"), keys(&tx));
        let acc = Account {
            id: 1,
            connection_id: 1,
            provider_id: "p".into(),
            iban: None,
            currency: "EUR".parse().unwrap(),
            name: None,
            kind: None,
            first_seen: Utc::now(),
            last_seen: Utc::now(),
        };
        assert_eq!(schema_fields("Account"), keys(&acc));
        let bal = StoredBalance {
            account_id: 1,
            balance: Balance {
                kind: BalanceKind::Available,
                amount: Decimal::ONE,
                currency: "EUR".parse().unwrap(),
                reference_date: d,
            },
            fetched_at: Utc::now(),
        };
        assert_eq!(schema_fields("Balance"), keys(&bal));
        let job = SyncJob {
            id: 1,
            connection_id: 1,
            status: "queued".into(),
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
            summary: None,
            error: None,
        };
        assert_eq!(schema_fields("SyncJob"), keys(&job));
        assert_eq!(
            schema_fields("SyncSummary"),
            keys(&bankbridge_sync::SyncSummary::default())
        );
        let doc = bankbridge_core::Document {
            id: 1,
            connection_id: 1,
            account_id: None,
            provider_id: "k".into(),
            kind: "statement".into(),
            category: None,
            title: "t".into(),
            date: None,
            content_type: "application/pdf".into(),
            sha256: "0".repeat(64),
            size: 1,
            first_seen: Utc::now(),
        };
        assert_eq!(schema_fields("Document"), keys(&doc));
    }
}
