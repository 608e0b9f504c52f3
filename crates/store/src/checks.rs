//! Flow-check results: one row per run, one per step of a run, and the
//! scheduler's per-check state.
//!
//! A run and its steps are saved in one database transaction, so a reader
//! never sees a run with only part of its steps. Everything is checked before
//! the transaction opens: a bad run is refused whole, with nothing written.
//! Step details and states are JSON text kept byte for byte (PostgreSQL
//! `json`, not `jsonb`), so what the runner redacted is exactly what is read
//! back.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::common::{Arg, Dialect};
use crate::{Result, StoreError};

/// Outcomes a run can have.
pub const RUN_OUTCOMES: [&str; 3] = ["passed", "degraded", "failed"];
/// Outcomes a step can have: a step after a failed one is `skipped`.
pub const STEP_OUTCOMES: [&str; 4] = ["passed", "degraded", "failed", "skipped"];
/// What started a run.
pub const TRIGGERS: [&str; 2] = ["schedule", "manual"];

/// A finished run to record with [`crate::FlowChecks::save_check_run`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCheckRun {
    /// The flow's id (its file stem), e.g. `klarna-xs2a`.
    pub check_id: String,
    pub check_name: String,
    /// `local` or an agent's location name.
    pub location: String,
    /// One scheduled round; every location's run of that round shares it.
    pub round_id: String,
    /// `schedule` or `manual`.
    pub trigger: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_ms: i64,
    /// `passed`, `degraded` or `failed`.
    pub outcome: String,
    /// 1 + retries made.
    pub attempts: i32,
    pub failed_step: Option<String>,
    /// Already redacted by the caller.
    pub error: Option<String>,
    pub steps: Vec<NewCheckStep>,
}

/// One step of a [`NewCheckRun`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCheckStep {
    /// Position in the flow, from 0; unique within the run.
    pub index: i32,
    pub name: String,
    /// `http`, `encrypted_form`, `wait_until`, …
    pub kind: String,
    /// `passed`, `degraded`, `failed` or `skipped`.
    pub outcome: String,
    pub duration_ms: i64,
    /// JSON text (request/response, asserts, captures), already redacted and
    /// truncated by the caller.
    pub detail: String,
}

/// A stored run (its steps come from [`crate::FlowChecks::get_check_run`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRun {
    pub id: i64,
    pub check_id: String,
    pub check_name: String,
    pub location: String,
    pub round_id: String,
    pub trigger: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub duration_ms: i64,
    pub outcome: String,
    pub attempts: i32,
    pub failed_step: Option<String>,
    pub error: Option<String>,
}

/// A stored step of run `run_id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckStep {
    pub run_id: i64,
    pub index: i32,
    pub name: String,
    pub kind: String,
    pub outcome: String,
    pub duration_ms: i64,
    pub detail: String,
}

/// Filters of [`crate::FlowChecks::list_check_runs`]; runs come newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckRunQuery {
    pub check_id: Option<String>,
    pub location: Option<String>,
    pub round_id: Option<String>,
    /// Keyset position: only runs with `id < before_id` (the last id of the previous page).
    pub before_id: Option<i64>,
    /// Runs per page; capped by the caller.
    pub limit: u32,
}

impl Default for CheckRunQuery {
    fn default() -> Self {
        Self {
            check_id: None,
            location: None,
            round_id: None,
            before_id: None,
            limit: 50,
        }
    }
}

// ---------------------------------------------------------------- checks, before any write

fn blank(s: &str) -> bool {
    s.trim().is_empty()
}

fn is_json(text: &str) -> std::result::Result<(), serde_json::Error> {
    serde_json::from_str::<serde::de::IgnoredAny>(text).map(|_| ())
}

/// Everything about a run that can be checked without the database, so a bad
/// run (or one bad step) is refused before a transaction is even opened.
pub(crate) fn check_new_run(r: &NewCheckRun) -> Result<()> {
    let bad = |what: String| {
        Err(StoreError::Conflict(format!(
            "check run of {:?} at {:?}: {what}",
            r.check_id, r.location
        )))
    };
    if blank(&r.check_id) {
        return bad("the check id is empty".into());
    }
    if blank(&r.location) {
        return bad("the location is empty".into());
    }
    if blank(&r.round_id) {
        return bad("the round id is empty".into());
    }
    if !TRIGGERS.contains(&r.trigger.as_str()) {
        return bad(format!(
            "trigger {:?} is not one of {TRIGGERS:?}",
            r.trigger
        ));
    }
    if !RUN_OUTCOMES.contains(&r.outcome.as_str()) {
        return bad(format!(
            "outcome {:?} is not one of {RUN_OUTCOMES:?}",
            r.outcome
        ));
    }
    if r.duration_ms < 0 {
        return bad(format!("duration_ms {} is negative", r.duration_ms));
    }
    if r.attempts < 1 {
        return bad(format!(
            "attempts {} is below 1 (the first attempt counts)",
            r.attempts
        ));
    }
    let mut seen = std::collections::HashSet::with_capacity(r.steps.len());
    for s in &r.steps {
        let step = |what: String| bad(format!("step {} ({:?}): {what}", s.index, s.name));
        if s.index < 0 {
            return step("the index is negative".into());
        }
        if !seen.insert(s.index) {
            return step("another step has the same index".into());
        }
        if blank(&s.kind) {
            return step("the kind is empty".into());
        }
        if !STEP_OUTCOMES.contains(&s.outcome.as_str()) {
            return step(format!(
                "outcome {:?} is not one of {STEP_OUTCOMES:?}",
                s.outcome
            ));
        }
        if s.duration_ms < 0 {
            return step(format!("duration_ms {} is negative", s.duration_ms));
        }
        if let Err(e) = is_json(&s.detail) {
            return step(format!("the detail is not valid JSON ({e})"));
        }
    }
    Ok(())
}

pub(crate) fn check_state(check_id: &str, state_json: &str) -> Result<()> {
    if blank(check_id) {
        return Err(StoreError::Conflict(
            "check state: the check id is empty".into(),
        ));
    }
    if let Err(e) = is_json(state_json) {
        return Err(StoreError::Conflict(format!(
            "state of check {check_id:?} is not valid JSON ({e})"
        )));
    }
    Ok(())
}

/// A stored flow secret as listed: its name and when it last changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckSecretInfo {
    pub name: String,
    pub updated_at: DateTime<Utc>,
}

/// What a flow file may write in `{ secret = "name" }`.
pub fn valid_secret_name(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

pub(crate) fn check_secret_name(name: &str) -> Result<()> {
    if valid_secret_name(name) {
        Ok(())
    } else {
        Err(StoreError::Conflict(format!(
            "secret name {name:?}: use 1 to 100 of A-Z a-z 0-9 _ - ."
        )))
    }
}

// ---------------------------------------------------------------- SQL
//
// `$N` parameters on both backends (sqlx's SQLite driver binds them by
// number). The JSON columns need a cast on PostgreSQL only.

macro_rules! run_columns {
    () => {
        "id, check_id, check_name, location, round_id, triggered_by, started_at, finished_at, \
         duration_ms, outcome, attempts, failed_step, error"
    };
}

pub(crate) const RUN_INSERT: &str = concat!(
    "INSERT INTO check_runs (check_id, check_name, location, round_id, triggered_by, started_at, \
     finished_at, duration_ms, outcome, attempts, failed_step, error) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING ",
    run_columns!()
);

pub(crate) const RUN_GET: &str =
    concat!("SELECT ", run_columns!(), " FROM check_runs WHERE id = $1");

pub(crate) fn step_insert(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => {
            "INSERT INTO check_steps (run_id, step_index, name, kind, outcome, duration_ms, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)"
        }
        Dialect::Postgres => {
            "INSERT INTO check_steps (run_id, step_index, name, kind, outcome, duration_ms, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7::json)"
        }
    }
}

pub(crate) fn steps_of_run(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => {
            "SELECT run_id, step_index, name, kind, outcome, duration_ms, detail \
             FROM check_steps WHERE run_id = $1 ORDER BY step_index"
        }
        Dialect::Postgres => {
            "SELECT run_id, step_index, name, kind, outcome, duration_ms, detail::text AS detail \
             FROM check_steps WHERE run_id = $1 ORDER BY step_index"
        }
    }
}

/// $1 older_than, $2 keep_latest. Ranks by id (the order runs are listed
/// in); steps go by cascade.
pub(crate) const RUNS_PRUNE: &str = "DELETE FROM check_runs WHERE id IN (\
     SELECT id FROM (SELECT id, started_at, \
     ROW_NUMBER() OVER (PARTITION BY check_id ORDER BY id DESC) AS pos FROM check_runs) ranked \
     WHERE pos > $2 AND started_at < $1)";

/// $1 check_id, $2 state, $3 at. The last write wins.
pub(crate) fn state_upsert(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => {
            "INSERT INTO check_states (check_id, state, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (check_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at"
        }
        Dialect::Postgres => {
            "INSERT INTO check_states (check_id, state, updated_at) VALUES ($1, $2::json, $3) \
             ON CONFLICT (check_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at"
        }
    }
}

/// $1 check_id.
pub(crate) fn state_get(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => "SELECT state FROM check_states WHERE check_id = $1",
        Dialect::Postgres => "SELECT state::text FROM check_states WHERE check_id = $1",
    }
}

/// $1 check_id, $2 state, $3 at: the first state of a check, or nothing.
pub(crate) fn state_insert(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => {
            "INSERT INTO check_states (check_id, state, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (check_id) DO NOTHING"
        }
        Dialect::Postgres => {
            "INSERT INTO check_states (check_id, state, updated_at) VALUES ($1, $2::json, $3) \
             ON CONFLICT (check_id) DO NOTHING"
        }
    }
}

/// $1 check_id, $2 state, $3 at, $4 the state it must still be (`json`
/// keeps its text as written, so text equality is exact).
pub(crate) fn state_swap(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => {
            "UPDATE check_states SET state = $2, updated_at = $3 WHERE check_id = $1 AND state = $4"
        }
        Dialect::Postgres => {
            "UPDATE check_states SET state = $2::json, updated_at = $3 \
             WHERE check_id = $1 AND state::text = $4"
        }
    }
}

/// $1 check_id, $2 slot_ms, $3 owner, $4 at: one row, first claim wins.
pub(crate) const CLAIM_SLOT: &str = "INSERT INTO check_claims (check_id, slot_ms, claimed_by, claimed_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (check_id, slot_ms) DO NOTHING";
/// $1 older_than.
pub(crate) const CLAIMS_PRUNE: &str = "DELETE FROM check_claims WHERE claimed_at < $1";

/// Insert or replace; whether the row is new the caller asks first
/// ([`SECRET_EXISTS`], in the same transaction).
pub(crate) const SECRET_UPSERT: &str = "INSERT INTO check_secrets (name, sealed, updated_at) VALUES ($1, $2, $3) \
     ON CONFLICT (name) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at";
pub(crate) const SECRET_EXISTS: &str = "SELECT 1 FROM check_secrets WHERE name = $1";
pub(crate) const SECRET_GET: &str = "SELECT sealed FROM check_secrets WHERE name = $1";
pub(crate) const SECRET_LIST: &str = "SELECT name, updated_at FROM check_secrets ORDER BY name";
pub(crate) const SECRET_DELETE: &str = "DELETE FROM check_secrets WHERE name = $1";

pub(crate) fn states_list(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => "SELECT check_id, state FROM check_states ORDER BY check_id",
        Dialect::Postgres => "SELECT check_id, state::text FROM check_states ORDER BY check_id",
    }
}

/// `SELECT … FROM check_runs WHERE … ORDER BY id DESC LIMIT n`.
pub(crate) fn list_sql(q: &CheckRunQuery) -> (String, Vec<Arg>) {
    let mut args: Vec<Arg> = Vec::new();
    let mut conds: Vec<String> = Vec::new();
    for (column, value) in [
        ("check_id", &q.check_id),
        ("location", &q.location),
        ("round_id", &q.round_id),
    ] {
        if let Some(v) = value {
            args.push(Arg::Text(v.clone()));
            conds.push(format!("{column} = ${}", args.len()));
        }
    }
    if let Some(before) = q.before_id {
        args.push(Arg::I64(before));
        conds.push(format!("id < ${}", args.len()));
    }
    let mut sql = concat!("SELECT ", run_columns!(), " FROM check_runs").to_owned();
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    args.push(Arg::I64(i64::from(q.limit)));
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", args.len()));
    (sql, args)
}

// ---------------------------------------------------------------- decoding

#[derive(sqlx::FromRow)]
pub(crate) struct CheckRunRow {
    id: i64,
    check_id: String,
    check_name: String,
    location: String,
    round_id: String,
    triggered_by: String,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    duration_ms: i64,
    outcome: String,
    attempts: i32,
    failed_step: Option<String>,
    error: Option<String>,
}

impl From<CheckRunRow> for CheckRun {
    fn from(r: CheckRunRow) -> Self {
        CheckRun {
            id: r.id,
            check_id: r.check_id,
            check_name: r.check_name,
            location: r.location,
            round_id: r.round_id,
            trigger: r.triggered_by,
            started_at: r.started_at,
            finished_at: r.finished_at,
            duration_ms: r.duration_ms,
            outcome: r.outcome,
            attempts: r.attempts,
            failed_step: r.failed_step,
            error: r.error,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct CheckStepRow {
    run_id: i64,
    step_index: i32,
    name: String,
    kind: String,
    outcome: String,
    duration_ms: i64,
    detail: String,
}

impl From<CheckStepRow> for CheckStep {
    fn from(r: CheckStepRow) -> Self {
        CheckStep {
            run_id: r.run_id,
            index: r.step_index,
            name: r.name,
            kind: r.kind,
            outcome: r.outcome,
            duration_ms: r.duration_ms,
            detail: r.detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> NewCheckRun {
        let at = DateTime::from_timestamp(1_714_557_600, 0).unwrap();
        NewCheckRun {
            check_id: "klarna-xs2a".into(),
            check_name: "Klarna XS2A".into(),
            location: "local".into(),
            round_id: "r1".into(),
            trigger: "schedule".into(),
            started_at: at,
            finished_at: at,
            duration_ms: 0,
            outcome: "passed".into(),
            attempts: 1,
            failed_step: None,
            error: None,
            steps: vec![NewCheckStep {
                index: 0,
                name: "login".into(),
                kind: "http".into(),
                outcome: "passed".into(),
                duration_ms: 5,
                detail: "{}".into(),
            }],
        }
    }

    #[test]
    fn a_good_run_passes_and_bad_fields_are_named() {
        check_new_run(&run()).unwrap();
        let mut r = run();
        r.steps[0].detail = "{\"a\":".into();
        let e = check_new_run(&r).unwrap_err().to_string();
        assert!(e.contains("not valid JSON") && e.contains("login"), "{e}");
        let mut r = run();
        r.steps.push(r.steps[0].clone());
        let e = check_new_run(&r).unwrap_err().to_string();
        assert!(e.contains("same index"), "{e}");
        let mut r = run();
        r.outcome = "ok".into();
        let e = check_new_run(&r).unwrap_err().to_string();
        assert!(e.contains("\"ok\""), "{e}");
    }

    #[test]
    fn list_sql_numbers_its_parameters() {
        let (sql, args) = list_sql(&CheckRunQuery {
            check_id: Some("a".into()),
            round_id: Some("r".into()),
            before_id: Some(9),
            ..CheckRunQuery::default()
        });
        assert!(
            sql.contains("check_id = $1 AND round_id = $2 AND id < $3"),
            "{sql}"
        );
        assert!(sql.ends_with("ORDER BY id DESC LIMIT $4"), "{sql}");
        assert_eq!(args.len(), 4);
    }
}
