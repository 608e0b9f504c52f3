//! `/checks`: every flow check with its health and its recent runs per
//! location as a strip; a check's page with "run now"; a run's page with a
//! waterfall of its steps, their statuses, captures and the redacted
//! request and answer; flow files that did not load, with file:line errors.
use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use bankbridge_checks::runner::{AssertResult, RequestRecord, ResponseRecord};
use bankbridge_checks::schedule::Health;
use bankbridge_store::{CheckRun, CheckRunQuery, Scope};
use maud::{Markup, html};
use serde::Deserialize;

use super::form::{NoFields, PageError, PageResult, Posted};
use super::layout::{self, instant};
use super::session::Viewer;
use crate::AppState;
use crate::checks::{CheckSummary, ChecksService, RunNow};

/// Runs in a location's strip.
const STRIP: usize = 30;

fn health_word(h: Health) -> &'static str {
    match h {
        Health::Passing => "passing",
        Health::Degraded => "degraded",
        Health::Failing => "failing",
    }
}

/// The health chip; a check that never ran has none yet.
fn health(c: &CheckSummary) -> Markup {
    let word = if c.last_round.is_some() {
        health_word(c.health)
    } else {
        "not run yet"
    };
    html! { span class={"health health-" (word.replace(' ', "-"))} { (word) } }
}

fn service(state: &AppState) -> Option<&ChecksService> {
    state.checks.get()
}

fn off() -> Markup {
    html! {
        p.empty { "Flow checks are off. Start the server with " code { "bankbridge serve --checks DIR" }
            ", DIR holding flow files (one .toml per check); their health and runs show here." }
    }
}

/// Recent runs of a check, newest first.
async fn recent(state: &AppState, check: &str, limit: u32) -> Result<Vec<CheckRun>, PageError> {
    Ok(state
        .store
        .checks
        .list_check_runs(&CheckRunQuery {
            check_id: Some(check.to_owned()),
            location: None,
            round_id: None,
            before_id: None,
            limit,
        })
        .await?)
}

/// One strip per location: a square per run, oldest left, each a link.
fn strips(summary: &CheckSummary, runs: &[CheckRun]) -> Markup {
    html! {
        @for location in &summary.locations {
            @let mine: Vec<&CheckRun> = runs.iter().filter(|r| &r.location == location).take(STRIP).collect();
            div.strip {
                span.where { (location) }
                @if mine.is_empty() { span.hint { "no runs yet" } }
                @for r in mine.iter().rev() {
                    a class={"run run-" (r.outcome)} href={"/runs/" (r.id)}
                        title={(r.outcome) ", " (r.duration_ms) " ms, " (r.started_at.format("%Y-%m-%d %H:%M:%S")) " UTC"} {
                        span.visually-hidden { (r.outcome) " run " (r.id) }
                    }
                }
            }
        }
    }
}

pub(crate) async fn page(State(state): State<AppState>, viewer: Viewer) -> PageResult {
    let Some(service) = service(&state) else {
        return Ok(layout::page(&viewer, "/checks", "Checks", off()).into_response());
    };
    let (mut checks, invalid) = service.summaries();
    checks.sort_by(|a, b| a.name.cmp(&b.name));
    let mut runs = BTreeMap::new();
    for c in &checks {
        let limit = (STRIP * c.locations.len().max(1)) as u32;
        runs.insert(c.id.clone(), recent(&state, &c.id, limit).await?);
    }
    let body = html! {
        @if !invalid.is_empty() {
            section.notice aria-labelledby="invalid" {
                h2 id="invalid" { "Flow files that did not load" }
                ul { @for e in &invalid { li { code { (e) } } } }
            }
        }
        @if checks.is_empty() {
            p.empty { "No flow checks yet: add a flow file to the checks directory; it loads within seconds." }
        }
        @for c in &checks {
            section.check aria-labelledby={"check-" (c.id)} {
                h2 id={"check-" (c.id)} {
                    a href={"/checks/" (c.id)} { (c.name) } " "
                    (health(c))
                }
                p.hint { "Every " (c.every_seconds) " s · next run " (instant(&c.next_run_at))
                    @if c.in_maintenance { " · in maintenance" } }
                (strips(c, runs.get(&c.id).map(Vec::as_slice).unwrap_or_default()))
            }
        }
    };
    Ok(layout::page(&viewer, "/checks", "Checks", body).into_response())
}

/// `GET /checks/{id}`.
pub(crate) async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
    viewer: Viewer,
) -> PageResult {
    let service = service(&state).ok_or_else(|| {
        PageError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Flow checks are off: start bankbridge serve --checks DIR.",
        )
    })?;
    let c = service
        .summary(&id)
        .ok_or_else(|| PageError::not_found(format!("There is no check {id}.")))?;
    let runs = recent(&state, &id, 50).await?;
    let body = html! {
        dl.facts {
            dt { "Health" } dd { (health(&c)) " since " (instant(&c.health_since)) }
            dt { "Flow file" } dd { code { (c.file) } }
            dt { "Runs" } dd { "every " (c.every_seconds) " s from " (c.locations.join(", ")) }
            dt { "Next run" } dd { (instant(&c.next_run_at)) }
            @if !c.alerts.is_empty() { dt { "Alerts go to" } dd { (c.alerts.join(", ")) } }
        }
        @if viewer.allows(Scope::Write) {
            form method="post" action={"/checks/" (c.id) "/run"} {
                input type="hidden" name="csrf" value=(viewer.csrf);
                button type="submit" { "Run now" }
            }
        }
        h2 { "Recent runs" }
        (strips(&c, &runs))
        @if runs.is_empty() {
            p.empty { "No runs yet." }
        } @else {
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { "Started" }
                    th scope="col" { "Location" }
                    th scope="col" { "Outcome" }
                    th scope="col" class="num" { "Time" }
                    th scope="col" class="opt" { "Trigger" }
                } }
                tbody {
                    @for r in &runs {
                        tr {
                            td.date { a href={"/runs/" (r.id)} { (instant(&r.started_at)) } }
                            td { (r.location) }
                            td { span class={"run-word run-" (r.outcome)} { (r.outcome) }
                                @if let Some(s) = &r.failed_step { " at " (s) } }
                            td.num { (r.duration_ms) " ms" }
                            td class="opt" { (r.trigger) }
                        }
                    }
                }
            } }
        }
    };
    let title = format!("Check {}", c.name);
    Ok(layout::page(&viewer, "/checks", &title, body).into_response())
}

/// `POST /checks/{id}/run` (write).
pub(crate) async fn run_now(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { viewer, .. }: Posted<NoFields>,
) -> PageResult {
    viewer.require(Scope::Write)?;
    let service = service(&state)
        .ok_or_else(|| PageError::new(StatusCode::SERVICE_UNAVAILABLE, "Flow checks are off."))?;
    match service.run_now(&id) {
        RunNow::Started(_) | RunNow::InFlight(_) => {
            Ok(Redirect::to(&format!("/checks/{id}")).into_response())
        }
        RunNow::Unknown => Err(PageError::not_found(format!("There is no check {id}."))),
    }
}

/// A stored step's detail, as the runner recorded it (already redacted).
#[derive(Default, Deserialize)]
#[serde(default)]
struct Detail {
    requests: u32,
    request: Option<RequestRecord>,
    response: Option<ResponseRecord>,
    captures: BTreeMap<String, String>,
    asserts: Vec<AssertResult>,
    error: Option<String>,
    note: Option<String>,
}

/// `GET /runs/{id}`: the waterfall of a run's steps.
pub(crate) async fn run(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    viewer: Viewer,
) -> PageResult {
    let (run, steps) = state.store.checks.get_check_run(id).await?.ok_or_else(|| {
        PageError::not_found(format!(
            "There is no run {id} (runs are pruned after a while)."
        ))
    })?;
    // Bodies may hold what a bank said about an account: write and admin only, as in the API.
    let bodies = viewer.allows(Scope::Write);
    let details: Vec<Detail> = steps
        .iter()
        .map(|s| serde_json::from_str(&s.detail).unwrap_or_default())
        .collect();
    let mut offset = 0i64;
    let bars: Vec<super::charts::Bar> = steps
        .iter()
        .map(|s| {
            let start = offset;
            offset += s.duration_ms.max(0);
            super::charts::Bar {
                label: format!("{}. {}", s.index + 1, s.name),
                class: format!("run-{}", s.outcome),
                start,
                length: s.duration_ms.max(0),
            }
        })
        .collect();
    let body = html! {
        p { a href={"/checks/" (run.check_id)} { (run.check_name) } " from " (run.location) ", "
            (instant(&run.started_at)) " (" (run.trigger) "): "
            span class={"run-word run-" (run.outcome)} { (run.outcome) } " in " (run.duration_ms) " ms"
            @if run.attempts > 1 { " after " (run.attempts) " attempts" } "." }
        @if let Some(e) = &run.error { p.error role="alert" { (e) } }
        h2 { "Waterfall" }
        p.hint { "Steps run one after another; each bar is a step's time, placed after the steps before it." }
        (super::charts::waterfall(&bars, &format!(
            "{} steps over {} ms", steps.len(), run.duration_ms)))
        h2 { "Steps" }
        @for (s, d) in steps.iter().zip(&details) {
            details.step open[s.outcome == "failed"] {
                summary {
                    (s.index + 1) ". " (s.name) " — " span class={"run-word run-" (s.outcome)} { (s.outcome) }
                    " · " (s.duration_ms) " ms · " (s.kind)
                }
                @if let Some(e) = &d.error { p.error { (e) } }
                @if let Some(n) = &d.note { p.hint { (n) } }
                @if d.requests > 1 { p.hint { (d.requests) " requests sent (the last one shown)." } }
                @if let Some(r) = &d.request {
                    h3 { "Request" }
                    pre { (r.method) " " (r.url) "\n" @for (k, v) in &r.headers { (k) ": " (v) "\n" } }
                    @if bodies { @if let Some(b) = &r.body { pre { (b) } } @if let Some(f) = &r.form { pre { (f) } } }
                }
                @if let Some(r) = &d.response {
                    h3 { "Answer" }
                    pre { "HTTP " (r.status) " · " (r.size) " bytes" @if r.truncated { " (cut)" } "\n" @for (k, v) in &r.headers { (k) ": " (v) "\n" } }
                    @if bodies { @if let Some(b) = &r.body { pre { (b) } } }
                    @else { p.hint { "Bodies show to write and admin tokens only." } }
                }
                @if !d.captures.is_empty() {
                    h3 { "Captures" }
                    dl.facts { @for (k, v) in &d.captures { dt { (k) } dd { code { (v) } } } }
                }
                @if !d.asserts.is_empty() {
                    h3 { "Assertions" }
                    ul { @for a in &d.asserts {
                        li { span class={"run-word run-" (if a.passed { "passed" } else { "failed" })} { (if a.passed { "✓" } else { "✗" }) } " "
                            code { (a.assertion) } @if let Some(v) = &a.actual { " (was " code { (v) } ")" } }
                    } }
                }
            }
        }
    };
    let title = format!("Run {} of {}", run.id, run.check_name);
    Ok(layout::page(&viewer, "/checks", &title, body).into_response())
}
