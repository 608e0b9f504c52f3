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

/// How the last sync of a connection ended: `never` (not synced yet), `ok`,
/// `needs_user` (the bank wants a person), `credentials_refused` (the bank
/// refused the login; not tried again until the credentials change or an
/// admin forces it) or `failed`.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum SyncOutcome {
    Never,
    Ok,
    NeedsUser,
    CredentialsRefused,
    Failed,
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
    /// The account's balance after this row, when the bank gives it.
    pub running_balance: Option<String>,
    /// The label exactly as the bank sent it.
    pub raw_label: String,
    pub label: String,
    pub counterparty_name: Option<String>,
    pub counterparty_iban: Option<String>,
    pub remittance_info: Option<String>,
    pub bank_code: Option<String>,
    /// The record exactly as the bank sent it.
    pub raw: serde_json::Value,
    /// Set by category rules (`bankbridge categorize`, or at import).
    pub category: Option<String>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
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
    /// The balance now: the newest booked (closing) balance, else the newest
    /// available one; null until a sync reported one.
    pub balance: Option<Balance>,
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
    /// Accounts whose fetching waits for the bank's daily request budget
    /// (not a failure: a later sync goes on from there).
    pub deferred: u64,
    /// Why they wait, and until when.
    pub deferred_reason: Option<String>,
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
    /// The cursor of the next page; null on the last.
    pub next: Option<String>,
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

/// A check's health: what the dashboard shows and alerts are about.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum CheckHealth {
    Passing,
    Degraded,
    Failing,
}

/// The result of a run or of a round (`failed` is the worst).
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum CheckOutcome {
    Passed,
    /// Passed, but slowly or with a soft assertion failing.
    Degraded,
    Failed,
}

/// How a step ended.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum CheckStepOutcome {
    Passed,
    /// It worked, but took longer than its `degraded_ms` budget.
    Degraded,
    Failed,
    /// Not run because an earlier step failed.
    Skipped,
}

/// The last finished round of a check: one run per location it ran at.
#[derive(ToSchema)]
pub struct CheckRoundSummary {
    pub round_id: String,
    /// When the round finished.
    pub at: DateTime<Utc>,
    /// The round's verdict over its locations.
    pub outcome: CheckOutcome,
    /// Locations whose run failed.
    pub failed: Vec<String>,
    /// Locations whose run was degraded.
    pub degraded: Vec<String>,
    /// Locations that sent no result before the round closed.
    pub missing: Vec<String>,
}

/// A flow check (one flow file) with its health and schedule.
#[derive(ToSchema)]
pub struct CheckSummary {
    /// The flow file's stem, e.g. `klarna-xs2a`.
    pub id: String,
    pub name: String,
    /// The flow file's name.
    pub file: String,
    pub health: CheckHealth,
    /// Since when the health is what it is.
    pub health_since: DateTime<Utc>,
    /// The cadence, in seconds.
    pub every_seconds: u64,
    /// Where it runs: `local` is the server itself, others are agents' locations.
    pub locations: Vec<String>,
    /// The alert channels it notifies (names from `channels.toml`).
    pub alerts: Vec<String>,
    pub next_run_at: DateTime<Utc>,
    /// In a maintenance window now: scheduled rounds are skipped.
    pub in_maintenance: bool,
    /// Null until a round has finished.
    pub last_round: Option<CheckRoundSummary>,
}

/// Every check, and the flow files that failed to load.
#[derive(ToSchema)]
pub struct CheckList {
    pub data: Vec<CheckSummary>,
    /// One message per flow file that failed to load, naming its file, line and field.
    pub invalid: Vec<String>,
}

/// A round started by hand.
#[derive(ToSchema)]
pub struct CheckRoundStarted {
    /// Every run of this round carries it (`round_id` of the runs).
    pub round_id: String,
}

/// A stored run: one check at one location in one round.
#[derive(ToSchema)]
pub struct CheckRun {
    pub id: i64,
    pub check_id: String,
    pub check_name: String,
    /// `local` or an agent's location name.
    pub location: String,
    pub round_id: String,
    /// `schedule` or `manual`.
    pub trigger: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_ms: i64,
    pub outcome: CheckOutcome,
    /// 1 + the retries made; only the last attempt's steps are kept.
    pub attempts: i32,
    /// The name of the step that failed.
    pub failed_step: Option<String>,
    /// Redacted.
    pub error: Option<String>,
}

/// A page of runs, newest first.
#[derive(ToSchema)]
pub struct CheckRunList {
    pub data: Vec<CheckRun>,
}

/// A request as a step sent it (secrets masked, body cut).
#[derive(ToSchema)]
pub struct CheckRequestRecord {
    pub method: String,
    pub url: String,
    /// `[name, value]` pairs.
    pub headers: Vec<Vec<String>>,
    pub body: Option<String>,
    /// The form answer before encryption (`encrypted_form` steps).
    pub form: Option<String>,
}

/// An answer as a step received it (secrets masked, body cut).
#[derive(ToSchema)]
pub struct CheckResponseRecord {
    pub status: u16,
    /// `[name, value]` pairs.
    pub headers: Vec<Vec<String>>,
    pub body: Option<String>,
    /// Size of the whole body in bytes; `body` keeps at most the configured limit.
    pub size: u64,
    pub truncated: bool,
}

/// One assertion of a step.
#[derive(ToSchema)]
pub struct CheckAssertResult {
    pub assertion: String,
    pub passed: bool,
    /// The value found, as shown (redacted ones masked).
    pub actual: Option<String>,
}

/// What a step did, as recorded (already redacted and truncated by the runner).
#[derive(ToSchema)]
pub struct CheckStepDetail {
    /// Requests sent (a `wait_until` step may send several).
    pub requests: u32,
    /// The last request sent.
    pub request: Option<CheckRequestRecord>,
    pub response: Option<CheckResponseRecord>,
    /// Captured values as shown (redacted ones masked).
    pub captures: std::collections::BTreeMap<String, String>,
    pub asserts: Vec<CheckAssertResult>,
    pub error: Option<String>,
    /// Why the step is degraded, when it is.
    pub note: Option<String>,
}

/// One step of a stored run.
#[derive(ToSchema)]
pub struct CheckStep {
    /// Position in the flow, from 0.
    pub index: i32,
    pub name: String,
    /// `http`, `encrypted_form`, `wait_until`, …
    pub kind: String,
    pub outcome: CheckStepOutcome,
    pub duration_ms: i64,
    /// Null if the stored detail cannot be read.
    pub detail: Option<CheckStepDetail>,
}

/// A stored run with its steps.
#[derive(ToSchema)]
pub struct CheckRunDetail {
    pub id: i64,
    pub check_id: String,
    pub check_name: String,
    /// `local` or an agent's location name.
    pub location: String,
    pub round_id: String,
    /// `schedule` or `manual`.
    pub trigger: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_ms: i64,
    pub outcome: CheckOutcome,
    /// 1 + the retries made; only the last attempt's steps are kept.
    pub attempts: i32,
    pub failed_step: Option<String>,
    pub error: Option<String>,
    /// In flow order.
    pub steps: Vec<CheckStep>,
}

/// Work for an agent: one flow to run at its location for one round.
#[derive(ToSchema)]
pub struct AgentJob {
    /// Send it back with the result.
    pub job_id: String,
    pub round_id: String,
    pub flow_id: String,
    /// The flow file's name; `source` is its text (the agent parses the same file).
    pub file: String,
    pub source: String,
    /// Values of the flow's `{ secret = .. }` entries the server knows, by
    /// name. Plain text: keep them out of logs.
    pub secrets: std::collections::BTreeMap<String, String>,
}

/// The jobs handed to an agent (empty when none came within `wait_ms`).
#[derive(ToSchema)]
pub struct AgentJobList {
    pub data: Vec<AgentJob>,
}

/// One step of an agent's run report (the detail fields unnested).
#[derive(ToSchema)]
pub struct AgentStepReport {
    pub index: u32,
    pub name: String,
    pub kind: String,
    pub outcome: CheckStepOutcome,
    pub duration_ms: u64,
    pub requests: u32,
    pub request: Option<CheckRequestRecord>,
    pub response: Option<CheckResponseRecord>,
    pub captures: std::collections::BTreeMap<String, String>,
    pub asserts: Vec<CheckAssertResult>,
    pub error: Option<String>,
    pub note: Option<String>,
}

/// An agent's run of one job's flow (redacted by the agent's runner).
#[derive(ToSchema)]
pub struct AgentRunReport {
    pub flow_id: String,
    pub flow_name: String,
    pub location: String,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    pub outcome: CheckOutcome,
    /// 1 + the retries made; only the last attempt's steps are kept.
    pub attempts: u32,
    pub failed_step: Option<String>,
    pub error: Option<String>,
    /// The failure was the network's (refused, reset, timed out), not an answer.
    pub network_error: bool,
    pub steps: Vec<AgentStepReport>,
}

/// An agent's result for a job it took.
#[derive(ToSchema)]
pub struct AgentResult {
    pub job_id: String,
    /// The location the agent took the job for.
    pub location: String,
    pub report: AgentRunReport,
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
        // An account is served with its balance now.
        let view = super::super::accounts::AccountView {
            account: &acc,
            balance: Some(&bal),
        };
        assert_eq!(schema_fields("Account"), keys(&view));
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
    #[test]
    fn check_schemas_match_what_is_serialised() {
        use bankbridge_checks::runner::{
            AssertResult, RequestRecord, ResponseRecord, RunReport, StepOutcome, StepReport,
        };
        use bankbridge_checks::schedule::{Health, Outcome};

        use crate::checks::{CheckSummary, Job, RoundSummary, to_new_run};

        let now = Utc::now();
        let round = RoundSummary {
            round_id: "r".into(),
            at: now,
            outcome: Outcome::Failed,
            failed: vec!["local".into()],
            degraded: vec![],
            missing: vec![],
        };
        assert_eq!(schema_fields("CheckRoundSummary"), keys(&round));
        let check = CheckSummary {
            id: "c".into(),
            name: "C".into(),
            file: "c.toml".into(),
            health: Health::Failing,
            health_since: now,
            every_seconds: 60,
            locations: vec!["local".into()],
            alerts: vec![],
            next_run_at: now,
            in_maintenance: false,
            last_round: Some(round),
        };
        assert_eq!(schema_fields("CheckSummary"), keys(&check));
        let job = Job {
            job_id: "j".into(),
            round_id: "r".into(),
            flow_id: "c".into(),
            file: "c.toml".into(),
            source: String::new(),
            secrets: Default::default(),
        };
        assert_eq!(schema_fields("AgentJob"), keys(&job));
        let request = RequestRecord {
            method: "GET".into(),
            url: "https://bank.example/".into(),
            headers: vec![("accept".into(), "*/*".into())],
            body: None,
            form: None,
        };
        assert_eq!(schema_fields("CheckRequestRecord"), keys(&request));
        let headers = serde_json::to_value(&request).unwrap()["headers"].clone();
        assert_eq!(headers, serde_json::json!([["accept", "*/*"]]));
        let response = ResponseRecord {
            status: 200,
            headers: vec![],
            body: None,
            size: 0,
            truncated: false,
        };
        assert_eq!(schema_fields("CheckResponseRecord"), keys(&response));
        let assert = AssertResult {
            assertion: "status == 200".into(),
            passed: true,
            actual: None,
        };
        assert_eq!(schema_fields("CheckAssertResult"), keys(&assert));
        let step = StepReport {
            index: 0,
            name: "s".into(),
            kind: "http".into(),
            outcome: StepOutcome::Passed,
            duration_ms: 1,
            requests: 1,
            request: Some(request),
            response: Some(response),
            captures: Default::default(),
            asserts: vec![assert],
            error: None,
            note: None,
        };
        assert_eq!(schema_fields("AgentStepReport"), keys(&step));
        let report = RunReport {
            flow_id: "c".into(),
            flow_name: "C".into(),
            location: "local".into(),
            started_at: now,
            duration_ms: 1,
            outcome: Outcome::Passed,
            attempts: 1,
            failed_step: None,
            error: None,
            network_error: false,
            steps: vec![step],
        };
        assert_eq!(schema_fields("AgentRunReport"), keys(&report));
        // What the store keeps of a run, and how `GET /api/v1/runs/{id}` shows it.
        let new = to_new_run("r", "manual", &report);
        let detail: serde_json::Value = serde_json::from_str(&new.steps[0].detail).unwrap();
        assert_eq!(schema_fields("CheckStepDetail"), keys(&detail));
        let run = bankbridge_store::CheckRun {
            id: 1,
            check_id: new.check_id,
            check_name: new.check_name,
            location: new.location,
            round_id: new.round_id,
            trigger: new.trigger,
            started_at: new.started_at,
            finished_at: new.finished_at,
            duration_ms: new.duration_ms,
            outcome: new.outcome,
            attempts: new.attempts,
            failed_step: new.failed_step,
            error: new.error,
        };
        assert_eq!(schema_fields("CheckRun"), keys(&run));
        let mut with_steps = keys(&run);
        with_steps.insert("steps".into());
        assert_eq!(schema_fields("CheckRunDetail"), with_steps);
        let step_fields: BTreeSet<String> =
            ["index", "name", "kind", "outcome", "duration_ms", "detail"]
                .map(String::from)
                .into();
        assert_eq!(schema_fields("CheckStep"), step_fields);
    }
}
