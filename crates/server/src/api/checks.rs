//! Flow checks: the checks and their state, their runs, one run's steps, a
//! run started by hand, the agents' job queue, and `/metrics`. The logic
//! lives in [`crate::checks`].
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bankbridge_checks::runner::RunReport;
use bankbridge_store::{CheckRunQuery, Scope};
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi};

use super::schema::{
    AgentJobList, AgentResult, CheckList, CheckRoundStarted, CheckRunDetail, CheckRunList,
    CheckSummary,
};
use super::{ApiJson, PathId, guarded, json};
use crate::checks::{ChecksService, RunNow};
use crate::error::{ApiError, ErrorBody};
use crate::{AppState, Principal};

pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/api/v1/checks", guarded(state, Scope::Read, get(list)))
        .route(
            "/api/v1/checks/{id}",
            guarded(state, Scope::Read, get(show)),
        )
        .route(
            "/api/v1/checks/{id}/runs",
            guarded(state, Scope::Read, get(runs)),
        )
        .route(
            "/api/v1/checks/{id}/run",
            guarded(state, Scope::Write, post(run_now)),
        )
        .route("/api/v1/runs/{id}", guarded(state, Scope::Read, get(run)))
        .route(
            "/api/v1/agent/jobs",
            // Jobs carry the flows' stored secrets: agent (or admin) tokens only.
            guarded(state, Scope::Agent, get(agent_jobs)),
        )
        .route(
            "/api/v1/agent/results",
            guarded(state, Scope::Agent, post(agent_result)),
        )
        .route("/metrics", guarded(state, Scope::Read, get(metrics)))
}

#[derive(OpenApi)]
#[openapi(
    paths(list, show, runs, run_now, run, agent_jobs, agent_result, metrics),
    components(schemas(
        super::schema::CheckHealth,
        super::schema::CheckOutcome,
        super::schema::CheckStepOutcome,
        super::schema::CheckRoundSummary,
        CheckSummary,
        CheckList,
        CheckRoundStarted,
        super::schema::CheckRun,
        CheckRunList,
        super::schema::CheckRequestRecord,
        super::schema::CheckResponseRecord,
        super::schema::CheckAssertResult,
        super::schema::CheckStepDetail,
        super::schema::CheckStep,
        CheckRunDetail,
        super::schema::AgentJob,
        AgentJobList,
        super::schema::AgentStepReport,
        super::schema::AgentRunReport,
        AgentResult,
    )),
    tags(
        (name = "checks", description = "Flow checks (`bankbridge serve --checks DIR`): scheduled runs of flow files against bank APIs, their health, runs and steps."),
        (name = "agents", description = "The job queue of check agents at other locations. Jobs carry secret values: tokens of scope `agent` (which may do nothing else) or `admin` only."),
    )
)]
pub(crate) struct Doc;

fn service(state: &AppState) -> Result<&ChecksService, ApiError> {
    state.checks.get().ok_or_else(|| {
        ApiError::unavailable("flow checks are off: start `bankbridge serve --checks DIR`")
    })
}

/// Every check with its health and last round, and the flow files that
/// failed to load (each error names its file, line and field). Needs scope `read`.
#[utoipa::path(
    get,
    path = "/api/v1/checks",
    tag = "checks",
    responses(
        (status = 200, body = CheckList),
        (status = 401, body = ErrorBody),
        (status = 503, description = "`unavailable`: flow checks are off (start `bankbridge serve --checks DIR`)", body = ErrorBody),
    )
)]
pub(crate) async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let (checks, invalid) = service(&state)?.summaries();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "data": checks, "invalid": invalid }),
        4096,
    ))
}

/// One check with its health and last round. Needs scope `read`.
#[utoipa::path(
    get,
    path = "/api/v1/checks/{id}",
    tag = "checks",
    params(("id" = String, Path, description = "Check id (the flow file's stem)")),
    responses(
        (status = 200, body = CheckSummary),
        (status = 401, body = ErrorBody),
        (status = 404, description = "No such check", body = ErrorBody),
        (status = 503, description = "`unavailable`: flow checks are off (start `bankbridge serve --checks DIR`)", body = ErrorBody),
    )
)]
pub(crate) async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let check = service(&state)?
        .summary(&id)
        .ok_or_else(|| ApiError::not_found(format!("no check {id:?}")))?;
    Ok(json(StatusCode::OK, &check, 1024))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunsParams {
    /// Only the runs at this location (`local` or an agent's location name).
    location: Option<String>,
    /// Runs per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500, default = 50)]
    limit: Option<u32>,
    /// Runs with an id below this one (paging backwards: the last id of the previous page).
    before: Option<i64>,
}

/// A check's runs, newest first (one per location per round). Runs stay
/// stored after their check's flow file is removed. Needs scope `read`.
#[utoipa::path(
    get,
    path = "/api/v1/checks/{id}/runs",
    tag = "checks",
    params(("id" = String, Path, description = "Check id (the flow file's stem)"), RunsParams),
    responses(
        (status = 200, body = CheckRunList),
        (status = 400, description = "A bad query parameter, named in `parameter`", body = ErrorBody),
        (status = 401, body = ErrorBody),
    )
)]
pub(crate) async fn runs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<RunsParams>,
) -> Result<Response, ApiError> {
    let limit = params.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid_parameter("limit", "between 1 and 500"));
    }
    let rows = state
        .store
        .checks
        .list_check_runs(&CheckRunQuery {
            check_id: Some(id),
            location: params.location,
            round_id: None,
            before_id: params.before,
            limit,
        })
        .await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "data": rows }),
        8192,
    ))
}

/// One run with its steps: timing, outcome, and the request and answer as
/// recorded (secrets and credential-looking fields masked, bodies cut).
/// Needs scope `read`; request and answer bodies come to `write` and
/// `admin` tokens only (null for `read`).
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}",
    tag = "checks",
    params(("id" = i64, Path, description = "Run id")),
    responses(
        (status = 200, body = CheckRunDetail),
        (status = 400, description = "`id` is not numeric", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "No such run (or pruned)", body = ErrorBody),
    )
)]
pub(crate) async fn run(
    State(state): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    let (run, steps) = state
        .store
        .checks
        .get_check_run(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no run {id}")))?;
    // Bodies may still hold what a bank sent about an account: a read
    // token (a dashboard, a spreadsheet) sees timings and outcomes only.
    let bodies = who.scope.allows(Scope::Write);
    let steps: Vec<serde_json::Value> = steps
        .into_iter()
        .map(|s| {
            let mut detail = serde_json::from_str::<serde_json::Value>(&s.detail)
                .unwrap_or(serde_json::Value::Null);
            if !bodies {
                for (part, fields) in [
                    ("request", &["body", "form"][..]),
                    ("response", &["body"][..]),
                ] {
                    if let Some(obj) = detail.get_mut(part).and_then(|p| p.as_object_mut()) {
                        for f in fields {
                            if obj.contains_key(*f) {
                                obj.insert((*f).to_owned(), serde_json::Value::Null);
                            }
                        }
                    }
                }
            }
            serde_json::json!({
                "index": s.index,
                "name": s.name,
                "kind": s.kind,
                "outcome": s.outcome,
                "duration_ms": s.duration_ms,
                "detail": detail,
            })
        })
        .collect();
    let mut body = serde_json::to_value(&run).map_err(ApiError::internal)?;
    body["steps"] = serde_json::Value::Array(steps);
    Ok(json(StatusCode::OK, &body, 16 * 1024))
}

/// Start a round of the check now (all its locations, or the next one in
/// rotation), besides its schedule. Its runs appear under the check's runs
/// with this `round_id` and trigger `manual`. Needs scope `write`.
#[utoipa::path(
    post,
    path = "/api/v1/checks/{id}/run",
    tag = "checks",
    params(("id" = String, Path, description = "Check id (the flow file's stem)")),
    responses(
        (status = 202, description = "The round started", body = CheckRoundStarted),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, description = "No such check", body = ErrorBody),
        (status = 409, description = "`run_in_flight`: a round of this check is still running", body = ErrorBody),
        (status = 503, description = "`unavailable`: flow checks are off (start `bankbridge serve --checks DIR`)", body = ErrorBody),
    )
)]
pub(crate) async fn run_now(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let round = match service(&state)?.run_now(&id) {
        RunNow::Started(round) => round,
        RunNow::InFlight(round) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "run_in_flight",
                format!(
                    "round {round} of check {id:?} is still running; its runs show under \
                     /api/v1/checks/{id}/runs when it ends"
                ),
            ));
        }
        RunNow::Unknown => return Err(ApiError::not_found(format!("no check {id:?}"))),
    };
    Ok(json(
        StatusCode::ACCEPTED,
        &serde_json::json!({ "round_id": round }),
        128,
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobsParams {
    /// The agent's location name.
    #[param(min_length = 1, max_length = 100, pattern = r"\S")]
    location: String,
    /// Long-poll: wait up to this many milliseconds for a job (0 to 30 000,
    /// default 0).
    #[param(minimum = 0, maximum = 30000, default = 0)]
    wait_ms: Option<u64>,
}

/// Longest long-poll of an agent's job request.
const MAX_WAIT_MS: u64 = 30_000;

/// The jobs waiting for an agent's location (long-polled); each is handed
/// out once. Jobs carry the flow's secret values. Needs scope `agent` (or `admin`).
#[utoipa::path(
    get,
    path = "/api/v1/agent/jobs",
    tag = "agents",
    params(JobsParams),
    responses(
        (status = 200, description = "The jobs taken (empty when none came within `wait_ms`)", body = AgentJobList),
        (status = 400, description = "A bad query parameter, named in `parameter`", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 503, description = "`unavailable`: flow checks are off (start `bankbridge serve --checks DIR`)", body = ErrorBody),
    )
)]
pub(crate) async fn agent_jobs(
    State(state): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
    Query(params): Query<JobsParams>,
) -> Result<Response, ApiError> {
    if params.location.trim().is_empty() || params.location.chars().count() > 100 {
        return Err(ApiError::invalid_parameter(
            "location",
            "location must be a name of 1 to 100 characters",
        ));
    }
    check_location(&who, &params.location)?;
    let wait_ms = params.wait_ms.unwrap_or(0);
    if wait_ms > MAX_WAIT_MS {
        return Err(ApiError::invalid_parameter(
            "wait_ms",
            format!("wait_ms must be 0 to {MAX_WAIT_MS}"),
        ));
    }
    let wait = Duration::from_millis(wait_ms);
    let jobs = service(&state)?.take_jobs(&params.location, wait).await;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "data": jobs }),
        4096,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobResult {
    job_id: String,
    location: String,
    report: RunReport,
}

/// An agent's result for a job it took. Needs scope `agent` (or `admin`).
#[utoipa::path(
    post,
    path = "/api/v1/agent/results",
    tag = "agents",
    request_body = AgentResult,
    responses(
        (status = 202, description = "Recorded for the job's round"),
        (status = 400, description = "A malformed body", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 409, description = "`conflict`: the job is unknown, already answered, or its round closed", body = ErrorBody),
        (status = 503, description = "`unavailable`: flow checks are off (start `bankbridge serve --checks DIR`)", body = ErrorBody),
    )
)]
pub(crate) async fn agent_result(
    State(state): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
    ApiJson(result): ApiJson<JobResult>,
) -> Result<Response, ApiError> {
    check_location(&who, &result.location)?;
    let accepted = service(&state)?
        .report_job(&result.job_id, &result.location, result.report)
        .await;
    if !accepted {
        return Err(ApiError::conflict(format!(
            "job {:?} is unknown, already answered, or its round closed",
            result.job_id
        )));
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

/// An agent token serves the location it was created for, and no other.
fn check_location(who: &Principal, location: &str) -> Result<(), ApiError> {
    super::check_served(who, location, "location", "agent --location")
}

/// Metrics of the flow checks in the OpenMetrics text format (Prometheus
/// scrapes it): run outcomes per check and location, step latencies, each
/// check's health, certificate days left, alerts sent, scheduler lateness.
/// Needs scope `read`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "checks",
    responses(
        (status = 200, description = "OpenMetrics text", body = String,
            content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"),
        (status = 401, body = ErrorBody),
    )
)]
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let mut res = state.metrics.encode().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    res
}
