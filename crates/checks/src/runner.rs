//! Runs a flow: its steps in order over HTTP, each timed from the first byte
//! sent to the last byte read, with captures carried forward, asserts
//! checked, duration budgets applied and secrets masked in everything the
//! run reports.
//!
//! A failed step stops the flow: later steps are skipped, except those
//! marked `always_run` (clean-up). A run never panics and never returns an
//! error: whatever goes wrong (a bad URL, a refused connection, JSON that is
//! not JSON) is a failed step with a message saying what and where.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::env::{EnvPolicy, VAR_PREFIX};
use crate::envelope;
use crate::flow::{
    Assert, Body, CaptureSource, Flow, Predicate, SecretSource, Step, StepKind, Subject, VarSource,
};
use crate::redact::Redactor;
use crate::schedule::Outcome;
use crate::template::{Scope, as_text};

/// How a step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    Passed,
    /// It worked, but took longer than its `degraded_ms` budget.
    Degraded,
    Failed,
    /// Not run because an earlier step failed.
    Skipped,
}

impl StepOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            StepOutcome::Passed => "passed",
            StepOutcome::Degraded => "degraded",
            StepOutcome::Failed => "failed",
            StepOutcome::Skipped => "skipped",
        }
    }
}

/// One run of one flow at one location.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub flow_id: String,
    pub flow_name: String,
    pub location: String,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    pub outcome: Outcome,
    /// 1 + the retries made; only the last attempt's steps are kept.
    pub attempts: u32,
    pub failed_step: Option<String>,
    pub error: Option<String>,
    /// The failure was the network's (refused, reset, timed out), not an
    /// answer that failed an assert: retry policies may retry only these.
    pub network_error: bool,
    pub steps: Vec<StepReport>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    pub index: usize,
    pub name: String,
    pub kind: String,
    pub outcome: StepOutcome,
    pub duration_ms: u64,
    /// Requests sent (a wait_until step may send several).
    pub requests: u32,
    pub request: Option<RequestRecord>,
    pub response: Option<ResponseRecord>,
    /// Captured values as shown (redacted ones masked).
    pub captures: BTreeMap<String, String>,
    pub asserts: Vec<AssertResult>,
    pub error: Option<String>,
    /// Why the step is degraded, when it is.
    pub note: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    /// The form answer before encryption (encrypted_form steps).
    pub form: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResponseRecord {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    /// Size of the whole body in bytes; `body` keeps at most the configured limit.
    pub size: usize,
    pub truncated: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AssertResult {
    pub assertion: String,
    pub passed: bool,
    pub actual: Option<String>,
}

/// Finds a stored secret's value (`{ secret = "name" }`) for a run.
pub type SecretLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// `{ secret = .. }` values from `stored` (secret name → value, as the
/// server's store gives them, or as they come with an agent's job).
pub fn stored_secrets(stored: BTreeMap<String, String>) -> SecretLookup {
    Arc::new(move |name| stored.get(name).cloned())
}

/// Reads an environment variable for a run.
pub type EnvLookup = crate::env::EnvSource;

#[derive(Clone)]
pub struct RunOptions {
    /// The location name reported with the run.
    pub location: String,
    /// `--var NAME=VALUE`: replaces a variable's value (or a secret's, which stays secret).
    pub overrides: BTreeMap<String, String>,
    /// Where `{ secret = .. }` values come from.
    pub secrets: SecretLookup,
    /// Looks up `{ env = .. }` variables and secrets and `BANKBRIDGE_VAR_<name>`
    /// overrides, for the names `env_policy` allows.
    pub env: EnvLookup,
    /// Which environment variables the flow may read.
    pub env_policy: Arc<EnvPolicy>,
    /// Bodies kept in reports are cut at this many bytes.
    pub body_limit: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            location: "local".into(),
            overrides: BTreeMap::new(),
            secrets: stored_secrets(BTreeMap::new()),
            env: crate::env::process_env(),
            env_policy: Arc::default(),
            body_limit: 8 * 1024,
        }
    }
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("location", &self.location)
            .field("overrides", &self.overrides.keys().collect::<Vec<_>>())
            .field("body_limit", &self.body_limit)
            .finish_non_exhaustive()
    }
}

/// An environment variable the run's policy allows, if set.
fn read_env(opts: &RunOptions, name: &str) -> Option<String> {
    if opts.env_policy.allows(name) {
        (opts.env)(name)
    } else {
        None
    }
}

/// Executes flows; cheap to clone, one per process is enough.
#[derive(Clone)]
pub struct Runner {
    follow: reqwest::Client,
    no_follow: reqwest::Client,
}

/// Largest response body read (bigger answers fail the step rather than
/// exhaust memory).
const MAX_RESPONSE: usize = 16 * 1024 * 1024;

fn client(follow: bool, cookies: bool) -> reqwest::Client {
    let redirect = if follow {
        reqwest::redirect::Policy::limited(10)
    } else {
        reqwest::redirect::Policy::none()
    };
    reqwest::Client::builder()
        .redirect(redirect)
        .cookie_store(cookies)
        .user_agent(concat!("bankbridge-checks/", env!("CARGO_PKG_VERSION")))
        .build()
        // Building a client only fails when the TLS backend can't start,
        // which no flow could work around.
        .unwrap_or_else(|_| reqwest::Client::new())
}

impl Default for Runner {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a run could not start (before any request).
fn setup_failure(
    flow: &Flow,
    opts: &RunOptions,
    started_at: DateTime<Utc>,
    error: String,
) -> RunReport {
    RunReport {
        flow_id: flow.id.clone(),
        flow_name: flow.name.clone(),
        location: opts.location.clone(),
        started_at,
        duration_ms: 0,
        outcome: Outcome::Failed,
        attempts: 1,
        failed_step: None,
        error: Some(error),
        network_error: false,
        steps: Vec::new(),
    }
}

impl Runner {
    pub fn new() -> Self {
        Self {
            follow: client(true, false),
            no_follow: client(false, false),
        }
    }

    /// Runs the flow, then retries it as its retry policy says; only the
    /// last attempt's report is kept (with the number of attempts).
    pub async fn run_with_retries(&self, flow: &Flow, opts: &RunOptions) -> RunReport {
        let first = Instant::now();
        let mut retries = 0u32;
        loop {
            let mut report = self.run(flow, opts).await;
            report.attempts = retries + 1;
            if report.outcome != Outcome::Failed {
                return report;
            }
            match flow
                .retry
                .next_retry(retries, first.elapsed(), report.network_error)
            {
                Some(delay) => {
                    tracing::debug!(flow = %flow.id, retry = retries + 1, ?delay, "retrying a failed run");
                    tokio::time::sleep(delay).await;
                    retries += 1;
                }
                None => return report,
            }
        }
    }

    /// One attempt of the flow.
    pub async fn run(&self, flow: &Flow, opts: &RunOptions) -> RunReport {
        let started_at = Utc::now();
        let t0 = Instant::now();
        let deadline = t0 + flow.timeout;
        let mut redactor = Redactor::new();
        let mut scope = Scope::new();

        for (name, source) in &flow.vars {
            let value = if let Some(v) = opts.overrides.get(name) {
                Value::String(v.clone())
            } else if let Some(v) = read_env(opts, &format!("{VAR_PREFIX}{name}")) {
                Value::String(v)
            } else {
                match source {
                    VarSource::Value(v) => v.clone(),
                    VarSource::Env { env, .. } if !opts.env_policy.allows(env) => {
                        return setup_failure(
                            flow,
                            opts,
                            started_at,
                            format!("variable `{name}`: {}", opts.env_policy.refusal(env)),
                        );
                    }
                    VarSource::Env { env, default } => match (read_env(opts, env), default) {
                        (Some(v), _) => Value::String(v),
                        (None, Some(d)) => d.clone(),
                        (None, None) => {
                            return setup_failure(
                                flow,
                                opts,
                                started_at,
                                format!(
                                    "variable `{name}`: the environment variable {env} is not set"
                                ),
                            );
                        }
                    },
                }
            };
            scope.set(name.clone(), value);
        }
        for (name, source) in &flow.secrets {
            if let SecretSource::Env(env) = source
                && !opts.overrides.contains_key(name)
                && !opts.env_policy.allows(env)
            {
                return setup_failure(
                    flow,
                    opts,
                    started_at,
                    format!("secret `{name}`: {}", opts.env_policy.refusal(env)),
                );
            }
            let value = opts.overrides.get(name).cloned().or_else(|| match source {
                SecretSource::Env(env) => read_env(opts, env),
                SecretSource::Store(key) => (opts.secrets)(key),
            });
            let Some(value) = value else {
                let hint = match source {
                    SecretSource::Env(env) => format!("set the environment variable {env}"),
                    SecretSource::Store(key) => {
                        format!(
                            "store it with `bankbridge check secret set {key}` (or pass --var {name}=...)"
                        )
                    }
                };
                return setup_failure(
                    flow,
                    opts,
                    started_at,
                    format!("secret `{name}` has no value: {hint}"),
                );
            };
            redactor.add(&value);
            scope.set(name.clone(), Value::String(value));
        }

        let cookie_clients = flow
            .cookies
            .then(|| (client(true, true), client(false, true)));
        let mut steps = Vec::with_capacity(flow.steps.len());
        let mut failed: Option<(String, String, bool)> = None;
        let mut last_json: Option<Value> = None;
        for (index, step) in flow.steps.iter().enumerate() {
            if failed.is_some() && !step.always_run {
                steps.push(skipped(index, step));
                continue;
            }
            let http = match (&cookie_clients, step.follow_redirects) {
                (Some((f, _)), true) => f,
                (Some((_, n)), false) => n,
                (None, true) => &self.follow,
                (None, false) => &self.no_follow,
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            let mut report = if remaining.is_zero() {
                let mut r = skipped(index, step);
                r.outcome = StepOutcome::Failed;
                r.error = Some(format!(
                    "the run's deadline ({}) passed before this step",
                    humantime::format_duration(flow.timeout)
                ));
                (r, None, false)
            } else {
                run_step(
                    http,
                    index,
                    step,
                    &mut scope,
                    &mut redactor,
                    &last_json,
                    remaining,
                )
                .await
            };
            if let Some(json) = report.1.take() {
                last_json = Some(json);
            }
            let network = report.2;
            let report = report.0;
            if report.outcome == StepOutcome::Failed && failed.is_none() {
                failed = Some((
                    report.name.clone(),
                    report.error.clone().unwrap_or_else(|| "failed".into()),
                    network,
                ));
            }
            steps.push(report);
        }

        // Mask at the end too: a value captured with `redact = true` may
        // have appeared in an earlier step's answer.
        for s in &mut steps {
            redact_step(s, &redactor, opts.body_limit, flow.mask_credential_fields);
        }
        let outcome = if failed.is_some() {
            Outcome::Failed
        } else if steps.iter().any(|s| s.outcome == StepOutcome::Degraded) {
            Outcome::Degraded
        } else {
            Outcome::Passed
        };
        let (failed_step, error, network_error) = match failed {
            Some((step, error, network)) => (Some(step), Some(redactor.text(&error)), network),
            None => (None, None, false),
        };
        RunReport {
            flow_id: flow.id.clone(),
            flow_name: flow.name.clone(),
            location: opts.location.clone(),
            started_at,
            duration_ms: t0.elapsed().as_millis() as u64,
            outcome,
            attempts: 1,
            failed_step,
            error,
            network_error,
            steps,
        }
    }
}

fn skipped(index: usize, step: &Step) -> StepReport {
    StepReport {
        index,
        name: step.name.clone(),
        kind: step.kind.as_str().into(),
        outcome: StepOutcome::Skipped,
        duration_ms: 0,
        requests: 0,
        request: None,
        response: None,
        captures: BTreeMap::new(),
        asserts: Vec::new(),
        error: None,
        note: None,
    }
}

fn redact_step(s: &mut StepReport, r: &Redactor, limit: usize, mask_fields: bool) {
    let fields = |text: &str| {
        if mask_fields {
            crate::redact::mask_credential_fields(text)
        } else {
            text.to_owned()
        }
    };
    let cut = |text: &str| -> (String, bool) {
        let masked = r.text(&fields(text));
        let kept = prefix_within(&masked, limit);
        let truncated = kept.len() < masked.len();
        (kept.to_string(), truncated)
    };
    if let Some(req) = &mut s.request {
        req.url = r.text(&req.url);
        if mask_fields {
            req.url = crate::redact::mask_url_query(&req.url);
        }
        for (k, v) in &mut req.headers {
            *v = r.header(k, v);
        }
        if let Some(b) = &mut req.body {
            *b = cut(b).0;
        }
        if let Some(f) = &mut req.form {
            *f = cut(f).0;
        }
    }
    if let Some(resp) = &mut s.response {
        for (k, v) in &mut resp.headers {
            *v = r.header(k, v);
        }
        if let Some(b) = &mut resp.body {
            let (body, truncated) = cut(b);
            *b = body;
            resp.truncated |= truncated;
        }
    }
    for v in s.captures.values_mut() {
        *v = r.text(v);
    }
    for a in &mut s.asserts {
        a.assertion = r.text(&a.assertion);
        if let Some(actual) = &mut a.actual {
            *actual = r.text(actual);
        }
    }
    if let Some(e) = &mut s.error {
        *e = r.text(e);
    }
}

/// The longest prefix of `text` that is at most `max` bytes and ends on a
/// character boundary.
fn prefix_within(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// What one HTTP exchange gave.
struct Exchange {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
    json: Option<Value>,
    elapsed: Duration,
}

enum Failure {
    /// The request could not be built (templates, URL, envelope).
    Setup(String),
    Network(String),
}

async fn run_step(
    http: &reqwest::Client,
    index: usize,
    step: &Step,
    scope: &mut Scope,
    redactor: &mut Redactor,
    last_json: &Option<Value>,
    remaining: Duration,
) -> (StepReport, Option<Value>, bool) {
    let mut report = skipped(index, step);
    let t0 = Instant::now();
    let step_deadline = match step.kind {
        StepKind::WaitUntil => step.deadline.min(remaining),
        _ => step.timeout.min(remaining),
    };
    let fail = |mut report: StepReport, error: String, network: bool, t0: Instant| {
        report.outcome = StepOutcome::Failed;
        report.error = Some(error);
        report.duration_ms = t0.elapsed().as_millis() as u64;
        (report, None, network)
    };

    let request = match build_request(http, step, scope, last_json) {
        Ok(r) => r,
        Err(e) => return fail(report, e, false, t0),
    };
    report.request = Some(request.record.clone());

    // Send; a wait_until step repeats until its conditions hold.
    let mut exchange;
    let mut total_request_time = Duration::ZERO;
    loop {
        report.requests += 1;
        let left = step_deadline.saturating_sub(t0.elapsed());
        let per_request = step.timeout.min(left).max(Duration::from_millis(1));
        exchange = send(&request, per_request).await;
        if let Ok(x) = &exchange {
            total_request_time = x.elapsed;
        }
        if step.kind != StepKind::WaitUntil {
            break;
        }
        let last_try = t0.elapsed() + step.interval >= step_deadline;
        if let Ok(x) = &exchange {
            let results = check_asserts(&step.until, x, scope);
            if results.iter().all(|r| r.passed) {
                break;
            }
            if last_try {
                let unmet: Vec<String> = results
                    .iter()
                    .filter(|r| !r.passed)
                    .map(|r| match &r.actual {
                        Some(a) => format!("{} (was {a})", r.assertion),
                        None => r.assertion.clone(),
                    })
                    .collect();
                let message = format!(
                    "still not true after {} ({} requests): {}",
                    humantime::format_duration(Duration::from_millis(
                        t0.elapsed().as_millis() as u64
                    )),
                    report.requests,
                    unmet.join("; ")
                );
                report.asserts = results;
                report.response = Some(record_response(x));
                return fail(report, message, false, t0);
            }
        } else if last_try {
            break;
        }
        tokio::time::sleep(step.interval).await;
    }
    let x = match exchange {
        Ok(x) => x,
        Err(Failure::Setup(e)) => return fail(report, e, false, t0),
        Err(Failure::Network(e)) => return fail(report, e, true, t0),
    };
    report.response = Some(record_response(&x));
    report.duration_ms = match step.kind {
        StepKind::WaitUntil => t0.elapsed().as_millis() as u64,
        _ => total_request_time.as_millis() as u64,
    };

    // The status first: an error answer fails as such, not as a capture
    // that found nothing in it. Then captures (asserts may compare with
    // them), then the other asserts.
    let json = x.json.clone();
    // A failure from here on is the answer's: the step took the request's time.
    let failed_answer = |report: StepReport, error: String| {
        let (mut r, _, _) = fail(report, error, false, t0);
        r.duration_ms = total_request_time.as_millis() as u64;
        r
    };
    let (status_asserts, other_asserts): (Vec<&Assert>, Vec<&Assert>) = step
        .asserts
        .iter()
        .partition(|a| matches!(a.subject, Subject::Status));
    let mut results = if status_asserts.is_empty() {
        vec![AssertResult {
            assertion: "status is 2xx".into(),
            passed: (200..300).contains(&x.status),
            actual: Some(x.status.to_string()),
        }]
    } else {
        check_asserts(status_asserts, &x, scope)
    };
    if results.iter().any(|r| !r.passed) {
        let body = String::from_utf8_lossy(&x.body);
        let snippet: String = body.chars().take(300).collect();
        let expected: Vec<String> = results
            .iter()
            .map(|r| {
                let a = r.assertion.as_str();
                a.strip_prefix("status is ")
                    .or_else(|| a.strip_prefix("status == "))
                    .or_else(|| a.strip_prefix("status in "))
                    .unwrap_or(a)
                    .to_string()
            })
            .collect();
        let message = format!(
            "answered status {} (expected {}): {}",
            x.status,
            expected.join(" or "),
            snippet.trim()
        );
        report.asserts = results;
        return (failed_answer(report, message), json, false);
    }
    for capture in &step.captures {
        match capture_value(&capture.source, &x) {
            Ok(value) => {
                let text = as_text(&value);
                let shown = if capture.redact {
                    redactor.add(&text);
                    crate::redact::MASK.to_string()
                } else {
                    text
                };
                report.captures.insert(capture.name.clone(), shown);
                scope.set(capture.name.clone(), value);
            }
            Err(e) => {
                report.asserts = results;
                let error = format!("capture `{}`: {e}", capture.name);
                return (failed_answer(report, error), json, false);
            }
        }
    }
    results.extend(check_asserts(other_asserts, &x, scope));
    let broken: Vec<String> = results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| match &r.actual {
            Some(a) => format!("{} (got {a})", r.assertion),
            None => r.assertion.clone(),
        })
        .collect();
    report.asserts = results;
    if !broken.is_empty() {
        let error = format!("assert failed: {}", broken.join("; "));
        return (failed_answer(report, error), json, false);
    }

    let ms = report.duration_ms;
    report.outcome = StepOutcome::Passed;
    if let Some(max) = step.max_ms
        && ms > max
    {
        report.outcome = StepOutcome::Failed;
        report.error = Some(format!("took {ms} ms, over its max_ms budget of {max} ms"));
    } else if let Some(d) = step.degraded_ms
        && ms > d
    {
        report.outcome = StepOutcome::Degraded;
        report.note = Some(format!(
            "took {ms} ms, over its degraded_ms budget of {d} ms"
        ));
    }
    (report, json, false)
}

struct BuiltRequest {
    http: reqwest::Client,
    method: reqwest::Method,
    url: url::Url,
    headers: reqwest::header::HeaderMap,
    body: Option<Vec<u8>>,
    record: RequestRecord,
}

fn build_request(
    http: &reqwest::Client,
    step: &Step,
    scope: &Scope,
    last_json: &Option<Value>,
) -> Result<BuiltRequest, String> {
    use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
    let previous = |pointer: &str, what: &str| -> Result<String, String> {
        last_json
            .as_ref()
            .and_then(|j| j.pointer(pointer))
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| {
                format!(
                    "the previous step's answer has no {what} (`{pointer}`); set this step's `{}` explicitly",
                    if what == "form URL" { "url" } else { "key" }
                )
            })
    };
    let url_text = match &step.url {
        Some(t) => scope.render(t).map_err(|e| format!("url: {e}"))?,
        None => previous("/data/next", "form URL")?,
    };
    let mut url = url::Url::parse(&url_text)
        .map_err(|e| format!("url {url_text:?} is not an absolute URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "url {url_text:?}: only http and https are supported"
        ));
    }
    if !step.query.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in &step.query {
            let v = scope.render(v).map_err(|e| format!("query {k}: {e}"))?;
            pairs.append_pair(k, &v);
        }
    }
    let mut headers = HeaderMap::new();
    for (k, v) in &step.headers {
        let v = scope.render(v).map_err(|e| format!("header {k}: {e}"))?;
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("header {k}: {e}"))?;
        let value = HeaderValue::from_str(&v)
            .map_err(|_| format!("header {k}: the value has characters a header can't carry"))?;
        headers.append(name, value);
    }
    let mut form_text = None;
    let body: Option<Vec<u8>> = match (&step.kind, &step.body) {
        (StepKind::EncryptedForm, _) => {
            let form = step.form.as_ref().map(|f| scope.render_json(f)).transpose();
            let form = form
                .map_err(|e| format!("form: {e}"))?
                .unwrap_or(Value::Null);
            let plain = form.to_string();
            let key = match &step.key {
                Some(k) => scope.render(k).map_err(|e| format!("key: {e}"))?,
                None => previous("/data/result/key", "form key")?,
            };
            let sealed = envelope::seal(&key, plain.as_bytes()).map_err(|e| e.to_string())?;
            form_text = Some(plain);
            set_default(&mut headers, CONTENT_TYPE, "application/json");
            Some(serde_json::to_vec(&sealed).map_err(|e| e.to_string())?)
        }
        (_, Body::Json(v)) => {
            let v = scope.render_json(v).map_err(|e| format!("json: {e}"))?;
            set_default(&mut headers, CONTENT_TYPE, "application/json");
            Some(serde_json::to_vec(&v).map_err(|e| e.to_string())?)
        }
        (_, Body::Form(fields)) => {
            let mut ser = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in fields {
                let v = scope.render(v).map_err(|e| format!("form {k}: {e}"))?;
                ser.append_pair(k, &v);
            }
            set_default(
                &mut headers,
                CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            );
            Some(ser.finish().into_bytes())
        }
        (_, Body::Text(t)) => Some(
            scope
                .render(t)
                .map_err(|e| format!("body: {e}"))?
                .into_bytes(),
        ),
        (_, Body::None) => None,
    };
    let record = RequestRecord {
        method: step.method.to_string(),
        url: url.to_string(),
        headers: header_pairs(&headers),
        body: body
            .as_ref()
            .map(|b| String::from_utf8_lossy(b).into_owned()),
        form: form_text,
    };
    Ok(BuiltRequest {
        http: http.clone(),
        method: step.method.clone(),
        url,
        headers,
        body,
        record,
    })
}

fn set_default(
    headers: &mut reqwest::header::HeaderMap,
    name: reqwest::header::HeaderName,
    value: &'static str,
) {
    if !headers.contains_key(&name) {
        headers.insert(name, reqwest::header::HeaderValue::from_static(value));
    }
}

async fn send(req: &BuiltRequest, timeout: Duration) -> Result<Exchange, Failure> {
    let mut builder = req
        .http
        .request(req.method.clone(), req.url.clone())
        .headers(req.headers.clone())
        .timeout(timeout);
    if let Some(b) = &req.body {
        builder = builder.body(b.clone());
    }
    let t0 = Instant::now();
    let describe = |e: reqwest::Error| {
        let what = if e.is_timeout() {
            format!("no answer within {}", humantime::format_duration(timeout))
        } else if e.is_connect() {
            "could not connect".to_string()
        } else {
            "the exchange failed".to_string()
        };
        // The error's own text repeats the URL; keep the cause chain only.
        let mut cause = String::new();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            cause = s.to_string();
            source = s.source();
        }
        if cause.is_empty() {
            format!("{} {}: {what}", req.method, req.url)
        } else {
            format!("{} {}: {what}: {cause}", req.method, req.url)
        }
    };
    let mut response = builder
        .send()
        .await
        .map_err(|e| Failure::Network(describe(e)))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_RESPONSE {
                    return Err(Failure::Setup(format!(
                        "{} {}: the answer is larger than {} MiB",
                        req.method,
                        req.url,
                        MAX_RESPONSE / (1024 * 1024)
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => return Err(Failure::Network(describe(e))),
        }
    }
    let elapsed = t0.elapsed();
    let json = serde_json::from_slice(&body).ok();
    Ok(Exchange {
        status,
        headers,
        body,
        json,
        elapsed,
    })
}

/// Header names and values as text, for the reports.
fn header_pairs(headers: &reqwest::header::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn record_response(x: &Exchange) -> ResponseRecord {
    ResponseRecord {
        status: x.status,
        headers: header_pairs(&x.headers),
        body: (!x.body.is_empty()).then(|| String::from_utf8_lossy(&x.body).into_owned()),
        size: x.body.len(),
        truncated: false,
    }
}

fn json_nodes(path: &serde_json_path::JsonPath, x: &Exchange) -> Result<Vec<Value>, String> {
    let json = x
        .json
        .as_ref()
        .ok_or_else(|| format!("the answer (status {}) is not JSON", x.status))?;
    Ok(path.query(json).all().into_iter().cloned().collect())
}

fn capture_value(source: &CaptureSource, x: &Exchange) -> Result<Value, String> {
    match source {
        CaptureSource::JsonPath { path, text } => {
            let mut nodes = json_nodes(path, x)?;
            match nodes.len() {
                0 => Err(format!("{text} matched nothing in the answer")),
                1 => Ok(nodes.remove(0)),
                _ => Ok(Value::Array(nodes)),
            }
        }
        CaptureSource::Header(name) => x
            .headers
            .get(name.as_str())
            .and_then(|v| v.to_str().ok())
            .map(|v| Value::String(v.to_string()))
            .ok_or_else(|| format!("the answer has no {name} header")),
        CaptureSource::Regex { regex, group } => {
            let text = String::from_utf8_lossy(&x.body);
            regex
                .captures(&text)
                .and_then(|c| c.get(*group))
                .map(|m| Value::String(m.as_str().to_string()))
                .ok_or_else(|| format!("/{}/ matched nothing in the answer", regex.as_str()))
        }
        CaptureSource::Status => Ok(Value::from(x.status)),
    }
}

fn check_asserts<'a>(
    asserts: impl IntoIterator<Item = &'a Assert>,
    x: &Exchange,
    scope: &Scope,
) -> Vec<AssertResult> {
    asserts
        .into_iter()
        .map(|a| check_assert(a, x, scope))
        .collect()
}

fn check_assert(a: &Assert, x: &Exchange, scope: &Scope) -> AssertResult {
    let result = |passed: bool, actual: Option<String>| AssertResult {
        assertion: a.to_string(),
        passed,
        actual,
    };
    // The subject's value(s).
    let subject: Result<Option<Value>, String> = match &a.subject {
        Subject::Status => Ok(Some(Value::from(x.status))),
        Subject::JsonPath { path, .. } => json_nodes(path, x).map(|mut nodes| match nodes.len() {
            0 => None,
            1 => Some(nodes.remove(0)),
            _ => Some(Value::Array(nodes)),
        }),
        Subject::Header(h) => Ok(x
            .headers
            .get(h.as_str())
            .map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))),
        Subject::Body => Ok(Some(Value::String(
            String::from_utf8_lossy(&x.body).into_owned(),
        ))),
    };
    let value = match subject {
        Ok(v) => v,
        Err(e) => return result(false, Some(e)),
    };
    let shown = value.as_ref().map(|v| {
        let t = as_text(v);
        let kept = prefix_within(&t, 200);
        if kept.len() < t.len() {
            format!("{kept}…")
        } else {
            t
        }
    });
    let render = |v: &Value| scope.render_json(v).unwrap_or_else(|_| v.clone());
    let passed = match (&a.predicate, &value) {
        (Predicate::Exists(want), v) => v.is_some() == *want,
        (_, None) => return result(false, Some("nothing".into())),
        (Predicate::StatusIn(codes), Some(v)) => {
            v.as_u64().is_some_and(|s| codes.contains(&(s as u16)))
        }
        (Predicate::Equals(want), Some(v)) => loosely_equal(v, &render(want)),
        (Predicate::NotEquals(want), Some(v)) => !loosely_equal(v, &render(want)),
        (Predicate::Gt(n), Some(v)) => number(v).is_some_and(|x| x > *n),
        (Predicate::Gte(n), Some(v)) => number(v).is_some_and(|x| x >= *n),
        (Predicate::Lt(n), Some(v)) => number(v).is_some_and(|x| x < *n),
        (Predicate::Lte(n), Some(v)) => number(v).is_some_and(|x| x <= *n),
        (Predicate::Contains(want), Some(v)) => {
            let want = render(want);
            match v {
                Value::Array(items) => items.iter().any(|i| loosely_equal(i, &want)),
                other => as_text(other).contains(&as_text(&want)),
            }
        }
        (Predicate::Matches(re), Some(v)) => re.is_match(&as_text(v)),
    };
    result(passed, shown)
}

/// Equality that lets `"12.50"` equal `12.5` (banks send amounts both ways).
fn loosely_equal(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    match (number(a), number(b)) {
        (Some(x), Some(y)) if !(a.is_string() && b.is_string()) => x == y,
        _ => as_text(a) == as_text(b) && (a.is_string() || b.is_string()) && !a.is_object(),
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}
