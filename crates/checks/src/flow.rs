//! Flow files: one multi-step check per TOML file; a folder of them (plus an
//! optional `channels.toml` of alert channels) is a project kept in git.
//!
//! ```toml
//! name = "Klarna XS2A account details"
//! alerts = ["ops-webhook"]          # channel names from channels.toml
//! timeout = "60s"                    # the whole run
//!
//! [schedule]                         # see `schedule` for [retry], [thresholds],
//! every = "1m"                       # [locations] and [[maintenance]]
//!
//! [vars]
//! base_url = "http://127.0.0.1:8080/xs2a-playground"
//! [secrets]
//! api_token = { env = "BANKBRIDGE_CHECK_XS2A_API_TOKEN" }   # or { secret = "name" } from the server's store
//!
//! [defaults]                          # merged into every step
//! headers = { Authorization = "Token {{ api_token }}" }
//!
//! [[steps]]
//! name = "Start Session"
//! method = "PUT"
//! url = "{{ base_url }}/xs2a/v1/sessions"
//! json = { language = "en" }
//! capture = { session_id = "$.data.session_id" }
//! assert = [{ status = 200 }, { jsonpath = "$.data.session_id", exists = true }]
//! degraded_ms = 1500
//! max_ms = 5000
//! ```
//!
//! Parsing checks everything a run would otherwise trip on (unknown fields,
//! a method other than GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS, bad
//! JSONPath or regex, a template naming a value no earlier step captures);
//! every problem of a file is reported, each naming the file, line and field.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;
use serde_json_path::JsonPath;

use crate::schedule::{
    LocationsConfig, MaintenanceWindow, RetryConfig, RetryPolicy, Schedule, ScheduleConfig,
    Scheduling, Thresholds,
};
use crate::template;

/// Where a problem in a flow file is, and what it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct FlowError {
    pub file: String,
    /// 1-based; 0 when the position is unknown (e.g. the file can't be read).
    pub line: usize,
    pub column: usize,
    /// Dotted path of the field, e.g. `steps[2].capture.session_id`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A parsed, validated flow.
#[derive(Clone, Debug)]
pub struct Flow {
    /// The file stem: stable across renames of `name`, used in the API and the store.
    pub id: String,
    pub file: String,
    /// The file's text as parsed: what an agent is sent, so it runs
    /// exactly the flow the server loaded.
    pub source: String,
    pub name: String,
    pub description: Option<String>,
    pub schedule: Schedule,
    pub retry: RetryPolicy,
    pub thresholds: Thresholds,
    pub locations: LocationsConfig,
    pub maintenance: Vec<MaintenanceWindow>,
    pub alerts: Vec<String>,
    /// Deadline of one whole run.
    pub timeout: Duration,
    /// Keep cookies between the steps of a run.
    pub cookies: bool,
    /// Check the TLS certificate expiry of the flow's https hosts.
    pub certificate_check: bool,
    /// Mask the values of credential-looking fields (`*token*`, `*secret*`,
    /// `password`, `authorization`, `consent*`, …) in the request and
    /// response bodies, URLs and forms a run keeps (default true;
    /// `mask_credential_fields = false` keeps them as sent).
    pub mask_credential_fields: bool,
    pub vars: BTreeMap<String, VarSource>,
    pub secrets: BTreeMap<String, SecretSource>,
    pub steps: Vec<Step>,
}

/// A variable's value: written in the file, or read from the environment.
#[derive(Clone, Debug, PartialEq)]
pub enum VarSource {
    Value(Value),
    Env { env: String, default: Option<Value> },
}

/// Where a secret's value comes from; the file never holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    /// A named secret of the server's encrypted secret store.
    Store(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepKind {
    Http,
    /// The XS2A form answer: AES+RSA envelope posted to the form's `next` URL.
    EncryptedForm,
    /// Repeats its request until the `until` conditions hold or the deadline passes.
    WaitUntil,
}

impl StepKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            StepKind::Http => "http",
            StepKind::EncryptedForm => "encrypted_form",
            StepKind::WaitUntil => "wait_until",
        }
    }
}

#[derive(Clone, Debug)]
pub enum Body {
    None,
    Json(Value),
    Form(Vec<(String, String)>),
    Text(String),
}

#[derive(Clone, Debug)]
pub struct Step {
    pub name: String,
    pub kind: StepKind,
    pub method: reqwest::Method,
    /// Template; for `encrypted_form` absent means the previous answer's `$.data.next`.
    pub url: Option<String>,
    pub headers: Vec<(String, String)>,
    pub query: Vec<(String, String)>,
    pub body: Body,
    /// `encrypted_form`: the form answer to encrypt (JSON, templated).
    pub form: Option<Value>,
    /// `encrypted_form`: the JWT key (template); absent means the previous answer's `$.data.result.key`.
    pub key: Option<String>,
    pub captures: Vec<Capture>,
    pub asserts: Vec<Assert>,
    pub until: Vec<Assert>,
    pub interval: Duration,
    pub deadline: Duration,
    pub timeout: Duration,
    pub degraded_ms: Option<u64>,
    pub max_ms: Option<u64>,
    pub always_run: bool,
    pub follow_redirects: bool,
}

#[derive(Clone, Debug)]
pub struct Capture {
    pub name: String,
    pub source: CaptureSource,
    /// Mask the value everywhere it would be shown or stored.
    pub redact: bool,
}

#[derive(Clone, Debug)]
pub enum CaptureSource {
    JsonPath { path: JsonPath, text: String },
    Header(String),
    Regex { regex: Regex, group: usize },
    Status,
}

#[derive(Clone, Debug)]
pub struct Assert {
    pub subject: Subject,
    pub predicate: Predicate,
}

#[derive(Clone, Debug)]
pub enum Subject {
    Status,
    JsonPath { path: JsonPath, text: String },
    Header(String),
    Body,
}

#[derive(Clone, Debug)]
pub enum Predicate {
    /// Status codes; `2xx` style classes are expanded.
    StatusIn(Vec<u16>),
    Equals(Value),
    NotEquals(Value),
    Gt(f64),
    Gte(f64),
    Lt(f64),
    Lte(f64),
    Contains(Value),
    Matches(Regex),
    Exists(bool),
}

impl fmt::Display for Assert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.subject {
            Subject::Status => write!(f, "status")?,
            Subject::JsonPath { text, .. } => write!(f, "{text}")?,
            Subject::Header(h) => write!(f, "header {h}")?,
            Subject::Body => write!(f, "body")?,
        }
        match &self.predicate {
            Predicate::StatusIn(codes) if codes.len() == 1 => write!(f, " == {}", codes[0]),
            Predicate::StatusIn(codes) if is_class(codes) => write!(f, " is {}xx", codes[0] / 100),
            Predicate::StatusIn(codes) => write!(f, " in {codes:?}"),
            Predicate::Equals(v) => write!(f, " == {v}"),
            Predicate::NotEquals(v) => write!(f, " != {v}"),
            Predicate::Gt(n) => write!(f, " > {n}"),
            Predicate::Gte(n) => write!(f, " >= {n}"),
            Predicate::Lt(n) => write!(f, " < {n}"),
            Predicate::Lte(n) => write!(f, " <= {n}"),
            Predicate::Contains(v) => write!(f, " contains {v}"),
            Predicate::Matches(r) => write!(f, " matches /{}/", r.as_str()),
            Predicate::Exists(true) => write!(f, " exists"),
            Predicate::Exists(false) => write!(f, " does not exist"),
        }
    }
}

fn is_class(codes: &[u16]) -> bool {
    codes.len() == 100 && codes[0].is_multiple_of(100)
}

fn status_class(class: u16) -> Vec<u16> {
    (class * 100..class * 100 + 100).collect()
}

// ---------------------------------------------------------------- parsing

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlowFile {
    name: String,
    description: Option<String>,
    #[serde(default)]
    schedule: ScheduleConfig,
    #[serde(default)]
    retry: RetryConfig,
    #[serde(default)]
    thresholds: Thresholds,
    #[serde(default)]
    locations: LocationsConfig,
    #[serde(default)]
    maintenance: Vec<MaintenanceWindow>,
    #[serde(default)]
    alerts: Vec<String>,
    timeout: Option<String>,
    #[serde(default)]
    cookies: bool,
    certificate_check: Option<bool>,
    mask_credential_fields: Option<bool>,
    #[serde(default)]
    vars: BTreeMap<String, toml::Value>,
    #[serde(default)]
    secrets: BTreeMap<String, toml::Value>,
    #[serde(default)]
    defaults: Defaults,
    /// Read one by one from the document (see [`parse_all_errors`]).
    #[serde(default, rename = "steps")]
    _steps: Vec<serde::de::IgnoredAny>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    #[serde(default)]
    headers: BTreeMap<String, String>,
    timeout: Option<String>,
    degraded_ms: Option<u64>,
    max_ms: Option<u64>,
    follow_redirects: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepFile {
    name: String,
    kind: Option<String>,
    method: Option<String>,
    url: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    query: BTreeMap<String, String>,
    json: Option<toml::Value>,
    form: Option<toml::Value>,
    body: Option<String>,
    key: Option<String>,
    #[serde(default)]
    capture: BTreeMap<String, toml::Value>,
    #[serde(default)]
    assert: Vec<toml::Table>,
    #[serde(default)]
    until: Vec<toml::Table>,
    interval: Option<String>,
    deadline: Option<String>,
    timeout: Option<String>,
    degraded_ms: Option<u64>,
    max_ms: Option<u64>,
    #[serde(default)]
    always_run: bool,
    follow_redirects: Option<bool>,
}

/// A validation problem before it is placed in the file.
struct Problem {
    path: Vec<Seg>,
    message: String,
}

#[derive(Clone, Debug)]
enum Seg {
    Key(String),
    Index(usize),
}

fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

/// `maintenance[1].start` → segments.
fn parse_path(text: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in text.split('.') {
        let (name, rest) = part.split_once('[').unwrap_or((part, ""));
        if !name.is_empty() {
            out.push(key(name));
        }
        for idx in rest.split('[') {
            if let Ok(i) = idx.trim_end_matches(']').parse() {
                out.push(Seg::Index(i));
            }
        }
    }
    out
}

fn path_text(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Reads and parses one flow file.
pub fn load(path: &Path) -> Result<Flow, FlowError> {
    load_all_errors(path).map_err(|mut errors| errors.remove(0))
}

/// Reads one flow file and reports every problem of it (never an empty list).
pub fn load_all_errors(path: &Path) -> Result<Flow, Vec<FlowError>> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![FlowError {
            file: file.clone(),
            line: 0,
            column: 0,
            field: String::new(),
            message: format!("cannot read the file: {e}"),
        }]
    })?;
    let id = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("flow")
        .to_string();
    parse_all_errors(&id, &file, &text)
}

/// Parses a flow from its text; `file` is only used in error messages.
/// The first problem (in file order) only: [`parse_all_errors`] gives all.
pub fn parse(id: &str, file: &str, text: &str) -> Result<Flow, FlowError> {
    parse_all_errors(id, file, text).map_err(|mut errors| errors.remove(0))
}

/// Parses a flow and reports every problem of it (never an empty list), in
/// file order: each step's, each variable's and each section's, not only
/// the first.
pub fn parse_all_errors(id: &str, file: &str, text: &str) -> Result<Flow, Vec<FlowError>> {
    let toml_error = |e: &toml::de::Error| {
        let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
        let field = e
            .span()
            .and_then(|s| field_at(text, s.start))
            .unwrap_or_default();
        FlowError {
            file: file.to_string(),
            line,
            column,
            field,
            message: e.message().trim().to_string(),
        }
    };
    let (root, syntax) = toml::de::DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        return Err(syntax.iter().map(toml_error).collect());
    }
    let mut errors = Vec::new();
    // Each step on its own, so one step's unknown field hides no other's.
    let mut steps = Vec::new();
    if let Some((_, list)) = root
        .get_ref()
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == "steps")
        && let toml::de::DeValue::Array(items) = list.get_ref()
    {
        for item in items.iter() {
            match StepFile::deserialize(toml::de::ValueDeserializer::from(item.clone())) {
                Ok(step) => steps.push(Ok(step)),
                Err(e) => {
                    errors.push(toml_error(&e));
                    steps.push(Err(capture_names(item)));
                }
            }
        }
    }
    let raw: Option<FlowFile> = match toml::from_str(text) {
        Ok(raw) => Some(raw),
        Err(e) => {
            errors.push(toml_error(&e));
            None
        }
    };
    if let Some(raw) = raw {
        match build(id, file, text, raw, steps) {
            Ok(flow) if errors.is_empty() => return Ok(flow),
            Ok(_) => {}
            Err(problems) => errors.extend(problems.into_iter().map(|p| {
                let (line, column) = locate(text, &p.path)
                    .map(|offset| line_col(text, offset))
                    .unwrap_or((0, 0));
                FlowError {
                    file: file.to_string(),
                    line,
                    column,
                    field: path_text(&p.path),
                    message: p.message,
                }
            })),
        }
    }
    errors.sort_by_key(|e| (e.line == 0, e.line, e.column));
    errors.dedup();
    Err(errors)
}

/// The capture names of a step that did not deserialize, so later steps
/// using them are not reported too.
fn capture_names(item: &toml::Spanned<toml::de::DeValue>) -> Vec<String> {
    item.get_ref()
        .as_table()
        .and_then(|t| {
            t.iter()
                .find(|(k, _)| k.get_ref().as_ref() == "capture")
                .and_then(|(_, v)| v.get_ref().as_table())
        })
        .map(|captures| {
            captures
                .iter()
                .map(|(k, _)| k.get_ref().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Every `*.toml` flow of a project folder (not `channels.toml`), sorted by
/// file name; every problem of each file that fails to parse is reported,
/// the rest still load.
pub fn load_dir(dir: &Path) -> (Vec<Flow>, Vec<FlowError>) {
    let mut flows = Vec::new();
    let mut errors = Vec::new();
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|e| e == "toml")
                    && p.file_name().is_some_and(|n| n != CHANNELS_FILE)
            })
            .collect(),
        Err(e) => {
            errors.push(FlowError {
                file: dir.display().to_string(),
                line: 0,
                column: 0,
                field: String::new(),
                message: format!("cannot read the flows folder: {e}"),
            });
            return (flows, errors);
        }
    };
    paths.sort();
    for path in paths {
        match load_all_errors(&path) {
            Ok(flow) => flows.push(flow),
            Err(e) => errors.extend(e),
        }
    }
    (flows, errors)
}

/// The project's alert channels live beside the flows under this name.
pub const CHANNELS_FILE: &str = "channels.toml";

fn duration(value: Option<&str>, default: Duration, path: Vec<Seg>) -> Result<Duration, Problem> {
    match value {
        None => Ok(default),
        Some(text) => humantime::parse_duration(text).map_err(|e| Problem {
            path,
            message: format!("{text:?} is not a duration like \"500ms\", \"10s\" or \"1m\": {e}"),
        }),
    }
}

/// The methods a step may use.
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// `r`'s value, or None with its problem noted.
fn keep<T>(problems: &mut Vec<Problem>, r: Result<T, Problem>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(p) => {
            problems.push(p);
            None
        }
    }
}

/// A step as written: deserialized, or the capture names of one that
/// did not deserialize (its problem is already reported).
type RawStep = Result<StepFile, Vec<String>>;

fn build(
    id: &str,
    file: &str,
    text: &str,
    raw: FlowFile,
    raw_steps: Vec<RawStep>,
) -> Result<Flow, Vec<Problem>> {
    let mut problems = Vec::new();
    let problem = |path: Vec<Seg>, message: String| Problem { path, message };
    if raw.name.trim().is_empty() {
        problems.push(problem(vec![key("name")], "must not be empty".into()));
    }
    if raw_steps.is_empty() {
        problems.push(problem(
            vec![key("steps")],
            "a flow needs at least one [[steps]] table".into(),
        ));
    }
    let sched = |e: crate::schedule::ScheduleError| Problem {
        path: parse_path(&e.field),
        message: e.message,
    };
    let scheduling = keep(
        &mut problems,
        Scheduling::new(
            &raw.schedule,
            &raw.retry,
            &raw.thresholds,
            &raw.locations,
            &raw.maintenance,
        )
        .map_err(sched),
    );
    let timeout = keep(
        &mut problems,
        duration(
            raw.timeout.as_deref(),
            Duration::from_secs(120),
            vec![key("timeout")],
        ),
    );

    // A name is known even when its definition has a problem, so its uses
    // are not reported as well.
    let mut known: BTreeSet<String> = BTreeSet::new();
    let mut vars = BTreeMap::new();
    for (name, value) in raw.vars {
        known.insert(name.clone());
        let path = vec![key("vars"), key(&name)];
        let source = (|| {
            check_name(&name, &path)?;
            Ok(match value {
                toml::Value::Table(t) if t.contains_key("env") => {
                    let env = t.get("env").and_then(|v| v.as_str()).ok_or_else(|| {
                        problem(
                            path.clone(),
                            "`env` must name an environment variable".into(),
                        )
                    })?;
                    if let Some(k) = t.keys().find(|k| *k != "env" && *k != "default") {
                        return Err(problem(
                            path.clone(),
                            format!("unknown key `{k}` (expected `env` and an optional `default`)"),
                        ));
                    }
                    VarSource::Env {
                        env: env.to_string(),
                        default: t.get("default").map(toml_to_json),
                    }
                }
                other => VarSource::Value(toml_to_json(&other)),
            })
        })();
        if let Some(source) = keep(&mut problems, source) {
            vars.insert(name, source);
        }
    }
    let mut secrets = BTreeMap::new();
    for (name, value) in raw.secrets {
        let path = vec![key("secrets"), key(&name)];
        let source = (|| {
            check_name(&name, &path)?;
            if known.contains(&name) {
                return Err(problem(
                    path.clone(),
                    format!("`{name}` is also a variable"),
                ));
            }
            match value.as_table() {
                Some(t) if t.len() == 1 && t.get("env").is_some_and(|v| v.is_str()) => Ok(
                    SecretSource::Env(t["env"].as_str().unwrap_or_default().to_string()),
                ),
                Some(t) if t.len() == 1 && t.get("secret").is_some_and(|v| v.is_str()) => Ok(
                    SecretSource::Store(t["secret"].as_str().unwrap_or_default().to_string()),
                ),
                _ => Err(problem(
                    path.clone(),
                    "a secret is `{ env = \"NAME\" }` or `{ secret = \"name\" }`; its value never goes in the flow file".into(),
                )),
            }
        })();
        known.insert(name.clone());
        if let Some(source) = keep(&mut problems, source) {
            secrets.insert(name, source);
        }
    }

    let defaults = raw.defaults;
    let default_timeout = keep(
        &mut problems,
        duration(
            defaults.timeout.as_deref(),
            Duration::from_secs(30),
            vec![key("defaults"), key("timeout")],
        ),
    )
    .unwrap_or(Duration::from_secs(30));
    let mut steps = Vec::with_capacity(raw_steps.len());
    let mut step_names = BTreeSet::new();
    for (i, s) in raw_steps.into_iter().enumerate() {
        let s = match s {
            Ok(s) => s,
            Err(captures) => {
                known.extend(captures);
                continue;
            }
        };
        let before = problems.len();
        let step = build_step(
            i,
            &s,
            &defaults,
            default_timeout,
            &known,
            &mut step_names,
            &mut problems,
        );
        // Later steps may use this step's captures whether or not it is valid.
        known.extend(s.capture.keys().cloned());
        if problems.len() == before {
            steps.extend(step);
        }
    }

    let (Some(scheduling), Some(timeout), true) = (scheduling, timeout, problems.is_empty()) else {
        return Err(problems);
    };
    let Scheduling {
        schedule,
        retry,
        thresholds,
        locations,
        maintenance,
    } = scheduling;
    Ok(Flow {
        id: id.to_string(),
        file: file.to_string(),
        source: text.to_string(),
        name: raw.name,
        description: raw.description,
        schedule,
        retry,
        thresholds,
        locations,
        maintenance,
        alerts: raw.alerts,
        timeout,
        cookies: raw.cookies,
        certificate_check: raw.certificate_check.unwrap_or(true),
        mask_credential_fields: raw.mask_credential_fields.unwrap_or(true),
        vars,
        secrets,
        steps,
    })
}

/// One step, every problem of it noted in `problems` (the step is only
/// meaningful when none was).
fn build_step(
    i: usize,
    s: &StepFile,
    defaults: &Defaults,
    default_timeout: Duration,
    known: &BTreeSet<String>,
    step_names: &mut BTreeSet<String>,
    problems: &mut Vec<Problem>,
) -> Option<Step> {
    let at = |k: &str| vec![key("steps"), Seg::Index(i), key(k)];
    let mut problem = |path: Vec<Seg>, message: String| problems.push(Problem { path, message });
    if s.name.trim().is_empty() {
        problem(at("name"), "must not be empty".into());
    }
    if !step_names.insert(s.name.clone()) {
        problem(at("name"), format!("two steps are named {:?}", s.name));
    }
    let kind = match s.kind.as_deref() {
        None | Some("http") => StepKind::Http,
        Some("encrypted_form") => StepKind::EncryptedForm,
        Some("wait_until") => StepKind::WaitUntil,
        Some(other) => {
            // The rest of the step's rules depend on its kind.
            problem(
                at("kind"),
                format!(
                    "unknown step kind {other:?} (expected http, encrypted_form or wait_until)"
                ),
            );
            return None;
        }
    };
    let method_text = s.method.clone().unwrap_or_else(|| {
        if kind == StepKind::EncryptedForm {
            "POST"
        } else {
            "GET"
        }
        .to_string()
    });
    // Only the methods an HTTP API answers: a typo such as "PSOT" is a
    // valid extension method to HTTP, but never what the author meant.
    let upper = method_text.to_ascii_uppercase();
    let method = if METHODS.contains(&upper.as_str()) {
        reqwest::Method::from_bytes(upper.as_bytes()).unwrap_or(reqwest::Method::GET)
    } else {
        problem(
            at("method"),
            format!(
                "{method_text:?} is not an HTTP method (expected one of {})",
                METHODS.join(", ")
            ),
        );
        reqwest::Method::GET
    };
    if s.url.is_none() && kind != StepKind::EncryptedForm {
        problem(at("url"), "a step needs a `url`".into());
    }
    let bodies = [
        s.json.is_some(),
        s.body.is_some(),
        s.form.is_some() && kind != StepKind::EncryptedForm,
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if bodies > 1 {
        problem(
            at("json"),
            "give at most one of `json`, `form` and `body`".into(),
        );
    }
    let (body, form) = match kind {
        StepKind::EncryptedForm => {
            if s.json.is_some() || s.body.is_some() {
                problem(
                    at("json"),
                    "an encrypted_form step sends its `form` (the form answer); `json` and `body` don't apply".into(),
                );
            }
            let form = s.form.as_ref().map(toml_to_json);
            if form.is_none() {
                problem(
                    at("form"),
                    "an encrypted_form step needs the `form` answer to encrypt".into(),
                );
            }
            (Body::None, form)
        }
        _ => {
            let body = if let Some(j) = &s.json {
                Body::Json(toml_to_json(j))
            } else if let Some(f) = &s.form {
                match f.as_table() {
                    None => {
                        problem(at("form"), "`form` is a table of field = \"value\"".into());
                        Body::None
                    }
                    Some(table) => {
                        let mut fields = Vec::new();
                        for (k, v) in table {
                            match v {
                                toml::Value::String(s) => fields.push((k.clone(), s.clone())),
                                toml::Value::Integer(_)
                                | toml::Value::Float(_)
                                | toml::Value::Boolean(_) => {
                                    fields.push((k.clone(), v.to_string()))
                                }
                                _ => problem(
                                    vec![key("steps"), Seg::Index(i), key("form"), key(k)],
                                    "form fields are strings, numbers or booleans".into(),
                                ),
                            }
                        }
                        Body::Form(fields)
                    }
                }
            } else if let Some(b) = &s.body {
                Body::Text(b.clone())
            } else {
                Body::None
            };
            (body, None)
        }
    };
    if kind != StepKind::EncryptedForm && s.key.is_some() {
        problem(
            at("key"),
            "`key` only applies to encrypted_form steps".into(),
        );
    }
    if kind != StepKind::WaitUntil
        && (!s.until.is_empty() || s.interval.is_some() || s.deadline.is_some())
    {
        problem(
            at("until"),
            "`until`, `interval` and `deadline` only apply to wait_until steps".into(),
        );
    }
    if kind == StepKind::WaitUntil && s.until.is_empty() {
        problem(
            at("until"),
            "a wait_until step needs `until` conditions".into(),
        );
    }

    // Headers: the defaults, then the step's own (same name replaces).
    let mut headers: Vec<(String, String)> = defaults
        .headers
        .iter()
        .filter(|(k, _)| !s.headers.keys().any(|h| h.eq_ignore_ascii_case(k)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    headers.extend(s.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
    for (name, _) in &headers {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            problem(
                vec![key("steps"), Seg::Index(i), key("headers"), key(name)],
                format!("{name:?} is not a valid header name"),
            );
        }
    }
    let query: Vec<(String, String)> = s.query.clone().into_iter().collect();

    let mut captures = Vec::new();
    for (name, def) in &s.capture {
        let path = vec![key("steps"), Seg::Index(i), key("capture"), key(name)];
        if let Err(p) = check_name(name, &path) {
            problem(p.path, p.message);
            continue;
        }
        match parse_capture(name, def) {
            Ok(c) => captures.push(c),
            Err(m) => problem(path, m),
        }
    }
    let mut asserts_of = |which: &str, tables: &[toml::Table]| {
        let (ok, bad) = parse_asserts(tables);
        for (j, m) in bad {
            problem(
                vec![key("steps"), Seg::Index(i), key(which), Seg::Index(j)],
                m,
            );
        }
        ok
    };
    let asserts = asserts_of("assert", &s.assert);
    let until = asserts_of("until", &s.until);
    let mut duration_at = |value: Option<&str>, default: Duration, field: &str| {
        duration(value, default, at(field)).unwrap_or_else(|p| {
            problem(p.path, p.message);
            default
        })
    };
    let interval = duration_at(s.interval.as_deref(), Duration::from_secs(1), "interval");
    let deadline = duration_at(s.deadline.as_deref(), Duration::from_secs(30), "deadline");
    let timeout = duration_at(s.timeout.as_deref(), default_timeout, "timeout");
    let step = Step {
        name: s.name.clone(),
        kind,
        method,
        url: s.url.clone(),
        headers,
        query,
        body,
        form,
        key: s.key.clone(),
        captures,
        asserts,
        until,
        interval,
        deadline,
        timeout,
        degraded_ms: s.degraded_ms.or(defaults.degraded_ms),
        max_ms: s.max_ms.or(defaults.max_ms),
        always_run: s.always_run,
        follow_redirects: s
            .follow_redirects
            .or(defaults.follow_redirects)
            .unwrap_or(true),
    };
    if let (Some(d), Some(m)) = (step.degraded_ms, step.max_ms)
        && d > m
    {
        problem(
            at("degraded_ms"),
            format!("degraded_ms ({d}) is above max_ms ({m})"),
        );
    }
    // Every name a template uses must exist by the time the step runs.
    check_templates(&step, known, i, s, problems);
    Some(step)
}
fn check_name(name: &str, path: &[Seg]) -> Result<(), Problem> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Problem {
            path: path.to_vec(),
            message: format!("{name:?} is not a usable name (letters, digits, `_`, `-`, `.`)"),
        })
    }
}

fn check_templates(
    step: &Step,
    known: &BTreeSet<String>,
    i: usize,
    raw: &StepFile,
    problems: &mut Vec<Problem>,
) {
    type Names = Result<Vec<String>, template::TemplateError>;
    let mut used: Vec<(Vec<Seg>, Names)> = Vec::new();
    let at = |k: &str| vec![key("steps"), Seg::Index(i), key(k)];
    let owned = |r: Result<Vec<&str>, template::TemplateError>| {
        r.map(|v| v.into_iter().map(str::to_string).collect::<Vec<_>>())
    };
    if let Some(u) = &step.url {
        used.push((at("url"), owned(template::names(u))));
    }
    if let Some(k) = &step.key {
        used.push((at("key"), owned(template::names(k))));
    }
    for (name, value) in step.headers.iter() {
        let mut p = at("headers");
        // Defaults' headers are reported at [defaults].
        if !raw.headers.contains_key(name) {
            p = vec![key("defaults"), key("headers")];
        }
        p.push(key(name));
        used.push((p, owned(template::names(value))));
    }
    for (name, value) in &step.query {
        let mut p = at("query");
        p.push(key(name));
        used.push((p, owned(template::names(value))));
    }
    match &step.body {
        Body::Json(v) => used.push((at("json"), owned(template::names_in_json(v)))),
        Body::Text(t) => used.push((at("body"), owned(template::names(t)))),
        Body::Form(fields) => {
            for (k, v) in fields {
                let mut p = at("form");
                p.push(key(k));
                used.push((p, owned(template::names(v))));
            }
        }
        Body::None => {}
    }
    if let Some(f) = &step.form {
        used.push((at("form"), owned(template::names_in_json(f))));
    }
    for (j, a) in step.asserts.iter().chain(step.until.iter()).enumerate() {
        if let Predicate::Equals(v) | Predicate::NotEquals(v) | Predicate::Contains(v) =
            &a.predicate
        {
            let which = if j < step.asserts.len() {
                "assert"
            } else {
                "until"
            };
            let idx = if j < step.asserts.len() {
                j
            } else {
                j - step.asserts.len()
            };
            used.push((
                vec![key("steps"), Seg::Index(i), key(which), Seg::Index(idx)],
                owned(template::names_in_json(v)),
            ));
        }
    }
    for (path, names) in used {
        let names = match names {
            Ok(names) => names,
            Err(e) => {
                problems.push(Problem {
                    path,
                    message: e.to_string(),
                });
                continue;
            }
        };
        if let Some(missing) = names.iter().find(|n| !known.contains(n.as_str())) {
            let message = if missing.starts_with('$') {
                format!(
                    "`{{{{ {missing} }}}}` is not a built-in (they are {})",
                    template::BUILT_INS.join(", ")
                )
            } else {
                format!(
                    "`{{{{ {missing} }}}}` is not a variable, a secret, or a value captured by an earlier step"
                )
            };
            problems.push(Problem { path, message });
        }
    }
}

fn parse_jsonpath(text: &str) -> Result<JsonPath, String> {
    JsonPath::parse(text).map_err(|e| format!("{text:?} is not a JSONPath (RFC 9535): {e}"))
}

fn parse_capture(name: &str, def: &toml::Value) -> Result<Capture, String> {
    if let toml::Value::String(path) = def {
        return Ok(Capture {
            name: name.to_string(),
            source: CaptureSource::JsonPath {
                path: parse_jsonpath(path)?,
                text: path.clone(),
            },
            redact: false,
        });
    }
    let table = def.as_table().ok_or(
        "a capture is a JSONPath string or a table like { jsonpath = \"$.a\", redact = true }",
    )?;
    let mut source = None;
    let mut redact = false;
    let mut group = 1usize;
    for (k, v) in table {
        match (k.as_str(), v) {
            ("jsonpath", toml::Value::String(p)) => {
                source = Some(CaptureSource::JsonPath {
                    path: parse_jsonpath(p)?,
                    text: p.clone(),
                })
            }
            ("header", toml::Value::String(h)) => source = Some(CaptureSource::Header(h.clone())),
            ("regex", toml::Value::String(r)) => {
                let regex = Regex::new(r).map_err(|e| format!("bad regex: {e}"))?;
                source = Some(CaptureSource::Regex { regex, group: 1 })
            }
            ("status", toml::Value::Boolean(true)) => source = Some(CaptureSource::Status),
            ("group", toml::Value::Integer(g)) if *g >= 0 => group = *g as usize,
            ("redact", toml::Value::Boolean(b)) => redact = *b,
            (other, _) => {
                return Err(format!(
                    "unexpected `{other}` (a capture takes one of jsonpath, header, regex (with group), status = true; and redact)"
                ));
            }
        }
    }
    let mut source =
        source.ok_or("a capture needs one of jsonpath, header, regex or status = true")?;
    if let CaptureSource::Regex { regex, group: g } = &mut source {
        if group >= regex.captures_len() {
            return Err(format!("the regex has no group {group}"));
        }
        *g = group;
    }
    Ok(Capture {
        name: name.to_string(),
        source,
        redact,
    })
}

/// The asserts that parse, and the problem of each that does not.
fn parse_asserts(tables: &[toml::Table]) -> (Vec<Assert>, Vec<(usize, String)>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for (j, t) in tables.iter().enumerate() {
        match parse_assert(t) {
            Ok(a) => ok.push(a),
            Err(m) => bad.push((j, m)),
        }
    }
    (ok, bad)
}

const PREDICATES: &[&str] = &[
    "equals",
    "not_equals",
    "gt",
    "gte",
    "lt",
    "lte",
    "contains",
    "matches",
    "exists",
];

fn parse_assert(t: &toml::Table) -> Result<Assert, String> {
    if let Some(status) = t.get("status") {
        if t.len() != 1 {
            return Err(
                "a status assert is just `{ status = 200 }`, `[200, 201]` or \"2xx\"".into(),
            );
        }
        let one = |v: &toml::Value| -> Result<Vec<u16>, String> {
            match v {
                toml::Value::Integer(n) if (100..600).contains(n) => Ok(vec![*n as u16]),
                toml::Value::String(s)
                    if s.len() == 3
                        && s.ends_with("xx")
                        && s.as_bytes()[0].is_ascii_digit()
                        && (b'1'..=b'5').contains(&s.as_bytes()[0]) =>
                {
                    Ok(status_class(u16::from(s.as_bytes()[0] - b'0')))
                }
                _ => Err(format!(
                    "{v} is not a status code (100-599) or class like \"2xx\""
                )),
            }
        };
        let codes = match status {
            toml::Value::Array(items) => {
                let mut all = Vec::new();
                for v in items {
                    all.extend(one(v)?);
                }
                all
            }
            v => one(v)?,
        };
        return Ok(Assert {
            subject: Subject::Status,
            predicate: Predicate::StatusIn(codes),
        });
    }
    let (subject, rest): (Subject, Vec<(&String, &toml::Value)>) = if let Some(p) =
        t.get("jsonpath")
    {
        let text = p.as_str().ok_or("`jsonpath` is a string")?;
        (
            Subject::JsonPath {
                path: parse_jsonpath(text)?,
                text: text.to_string(),
            },
            t.iter().filter(|(k, _)| *k != "jsonpath").collect(),
        )
    } else if let Some(h) = t.get("header") {
        let name = h.as_str().ok_or("`header` is a header name")?;
        (
            Subject::Header(name.to_string()),
            t.iter().filter(|(k, _)| *k != "header").collect(),
        )
    } else if let Some(v) = t.get("body_contains") {
        if t.len() != 1 {
            return Err("`body_contains` stands alone".into());
        }
        return Ok(Assert {
            subject: Subject::Body,
            predicate: Predicate::Contains(toml_to_json(v)),
        });
    } else if let Some(r) = t.get("regex") {
        if t.len() != 1 {
            return Err("`regex` (on the body) stands alone".into());
        }
        let r = r.as_str().ok_or("`regex` is a string")?;
        return Ok(Assert {
            subject: Subject::Body,
            predicate: Predicate::Matches(Regex::new(r).map_err(|e| format!("bad regex: {e}"))?),
        });
    } else {
        return Err(
            "an assert names its subject: status, jsonpath, header, body_contains or regex".into(),
        );
    };
    let predicate = match rest.as_slice() {
        [] => Predicate::Exists(true),
        [(k, v)] => {
            let number = |v: &toml::Value| -> Result<f64, String> {
                match v {
                    toml::Value::Integer(n) => Ok(*n as f64),
                    toml::Value::Float(f) => Ok(*f),
                    _ => Err(format!("`{k}` compares with a number")),
                }
            };
            match k.as_str() {
                "equals" => Predicate::Equals(toml_to_json(v)),
                "not_equals" => Predicate::NotEquals(toml_to_json(v)),
                "gt" => Predicate::Gt(number(v)?),
                "gte" => Predicate::Gte(number(v)?),
                "lt" => Predicate::Lt(number(v)?),
                "lte" => Predicate::Lte(number(v)?),
                "contains" => Predicate::Contains(toml_to_json(v)),
                "matches" => Predicate::Matches(
                    Regex::new(v.as_str().ok_or("`matches` is a regex string")?)
                        .map_err(|e| format!("bad regex: {e}"))?,
                ),
                "exists" => Predicate::Exists(v.as_bool().ok_or("`exists` is true or false")?),
                other => {
                    return Err(format!(
                        "unknown comparison `{other}` (expected one of {})",
                        PREDICATES.join(", ")
                    ));
                }
            }
        }
        _ => return Err("one comparison per assert (write two asserts)".into()),
    };
    Ok(Assert { subject, predicate })
}

/// TOML to JSON (datetimes become their RFC 3339 text).
pub fn toml_to_json(value: &toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => Value::Array(items.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

// --------------------------------------------------- positions in the file

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, column)
}

/// The byte offset of the value (or key) a path names.
fn locate(text: &str, path: &[Seg]) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(text).ok()?;
    let mut best = None;
    let mut table: Option<&DeTable> = Some(root.get_ref());
    let mut value: Option<&toml::Spanned<DeValue>> = None;
    for seg in path {
        match seg {
            Seg::Key(k) => {
                let t = match (table, value.map(|v| v.get_ref())) {
                    (Some(t), None) => t,
                    (_, Some(DeValue::Table(t))) => t,
                    _ => break,
                };
                let Some((kspan, v)) = t.iter().find(|(key, _)| key.get_ref().as_ref() == k) else {
                    break;
                };
                best = Some(kspan.span().start);
                value = Some(v);
                table = None;
            }
            Seg::Index(i) => {
                let Some(DeValue::Array(items)) = value.map(|v| v.get_ref()) else {
                    break;
                };
                let Some(item) = items.get(*i) else { break };
                best = Some(item.span().start);
                value = Some(item);
            }
        }
    }
    best
}

/// The dotted path of the key (or scalar value) at `offset`. Searched
/// depth-first without trusting parent spans: an `[[array]]` table's span
/// covers only its header line.
fn field_at(text: &str, offset: usize) -> Option<String> {
    use toml::de::{DeTable, DeValue};
    fn in_table(t: &DeTable, offset: usize, path: &mut Vec<Seg>) -> bool {
        for (k, v) in t.iter() {
            path.push(key(k.get_ref().as_ref()));
            if k.span().contains(&offset) || in_value(v, offset, path) {
                return true;
            }
            path.pop();
        }
        false
    }
    fn in_value(v: &toml::Spanned<DeValue>, offset: usize, path: &mut Vec<Seg>) -> bool {
        match v.get_ref() {
            DeValue::Table(t) => in_table(t, offset, path),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(Seg::Index(i));
                    if in_value(item, offset, path) {
                        return true;
                    }
                    path.pop();
                }
                false
            }
            _ => v.span().contains(&offset),
        }
    }
    let root = DeTable::parse(text).ok()?;
    let mut path = Vec::new();
    in_table(root.get_ref(), offset, &mut path).then(|| path_text(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"
name = "demo"
[vars]
base = "http://127.0.0.1:1"
[secrets]
token = { env = "DEMO_TOKEN" }
[defaults]
headers = { Authorization = "Token {{ token }}" }

[[steps]]
name = "first"
method = "put"
url = "{{ base }}/a"
json = { a = "{{ base }}", n = 1 }
capture = { sid = "$.data.id", tok = { jsonpath = "$.t", redact = true }, code = { status = true } }
assert = [{ status = "2xx" }, { jsonpath = "$.data.id", exists = true }]

[[steps]]
name = "second"
url = "{{ base }}/b/{{ sid }}"
assert = [{ jsonpath = "$.n", gte = 0 }]
degraded_ms = 10
max_ms = 20
"#;

    #[test]
    fn a_valid_flow_parses_with_defaults_merged() {
        let flow = parse("demo", "demo.toml", OK).unwrap();
        assert_eq!(flow.steps.len(), 2);
        assert_eq!(flow.steps[0].method, reqwest::Method::PUT);
        assert_eq!(flow.steps[0].headers[0].0, "Authorization");
        assert_eq!(flow.steps[0].captures.len(), 3);
        assert!(
            flow.steps[0]
                .captures
                .iter()
                .any(|c| c.name == "tok" && c.redact)
        );
        assert_eq!(
            flow.secrets["token"],
            SecretSource::Env("DEMO_TOKEN".into())
        );
        assert_eq!(flow.steps[1].max_ms, Some(20));
        assert!(flow.certificate_check);
    }

    fn err(text: &str) -> FlowError {
        parse("x", "x.toml", text).unwrap_err()
    }

    #[test]
    fn an_unknown_field_names_file_line_and_field() {
        let text = OK.replace("max_ms = 20", "max_ms = 20\ncolour = \"red\"");
        let e = err(&text);
        assert_eq!(e.file, "x.toml");
        let line = text.lines().position(|l| l.starts_with("colour")).unwrap() + 1;
        assert_eq!(e.line, line, "{e}");
        assert!(e.message.contains("colour"), "{e}");
        assert!(e.field.starts_with("steps[1]"), "{e}");
    }

    #[test]
    fn a_template_naming_a_later_capture_is_an_error_at_its_field() {
        let text = OK.replace("url = \"{{ base }}/a\"", "url = \"{{ base }}/a/{{ sid }}\"");
        let e = err(&text);
        assert_eq!(e.field, "steps[0].url", "{e}");
        assert!(e.message.contains("sid"), "{e}");
        let line = text
            .lines()
            .position(|l| l.contains("/a/{{ sid }}"))
            .unwrap()
            + 1;
        assert_eq!(e.line, line, "{e}");
    }

    #[test]
    fn a_mistyped_built_in_is_refused_when_the_flow_loads() {
        let e = err(&OK.replace(
            "url = \"{{ base }}/a\"",
            "url = \"{{ base }}/a/{{ $uuuid }}\"",
        ));
        assert_eq!(e.field, "steps[0].url", "{e}");
        assert!(
            e.message.contains("$uuuid") && e.message.contains("$uuid, $now, $timestamp"),
            "{e}"
        );
        let ok = OK.replace(
            "url = \"{{ base }}/a\"",
            "url = \"{{ base }}/a/{{ $uuid }}\"",
        );
        assert!(parse("x", "x.toml", &ok).is_ok());
    }

    #[test]
    fn bad_jsonpath_regex_and_status_are_named() {
        let e = err(&OK.replace("\"$.data.id\", exists", "\"$.data[\", exists"));
        assert_eq!(e.field, "steps[0].assert[1]", "{e}");
        assert!(e.message.contains("JSONPath"), "{e}");
        let e = err(&OK.replace("status = \"2xx\"", "status = 99"));
        assert_eq!(e.field, "steps[0].assert[0]", "{e}");
        let e = err(&OK.replace("code = { status = true }", "code = { regex = \"(\" }"));
        assert_eq!(e.field, "steps[0].capture.code", "{e}");
    }

    #[test]
    fn secrets_never_hold_values_and_kinds_are_checked() {
        let e = err(&OK.replace("token = { env = \"DEMO_TOKEN\" }", "token = \"hunter2\""));
        assert_eq!(e.field, "secrets.token", "{e}");
        let e = err(&OK.replace("method = \"put\"", "kind = \"ftp\""));
        assert_eq!(e.field, "steps[0].kind", "{e}");
        let e = err(&OK.replace("degraded_ms = 10", "degraded_ms = 30"));
        assert!(e.message.contains("above max_ms"), "{e}");
    }

    fn all(text: &str) -> Vec<FlowError> {
        parse_all_errors("x", "x.toml", text).unwrap_err()
    }

    #[test]
    fn methods_are_the_usual_ones_in_any_case() {
        for (written, method) in [
            ("get", reqwest::Method::GET),
            ("Head", reqwest::Method::HEAD),
            ("POST", reqwest::Method::POST),
            ("patch", reqwest::Method::PATCH),
            ("delete", reqwest::Method::DELETE),
            ("OPTIONS", reqwest::Method::OPTIONS),
        ] {
            let flow = parse(
                "x",
                "x.toml",
                &OK.replace("\"put\"", &format!("{written:?}")),
            )
            .unwrap();
            assert_eq!(flow.steps[0].method, method);
        }
        for bad in ["PSOT", "TRACE", "CONNECT", "FETCH", "G ET"] {
            let text = OK.replace("\"put\"", &format!("{bad:?}"));
            let e = err(&text);
            assert_eq!(e.field, "steps[0].method", "{e}");
            assert!(
                e.message.contains("is not an HTTP method") && e.message.contains("PATCH"),
                "{e}"
            );
            let line = text.lines().position(|l| l.starts_with("method")).unwrap() + 1;
            assert_eq!((e.file.as_str(), e.line), ("x.toml", line), "{e}");
        }
    }

    #[test]
    fn every_problem_of_a_file_is_reported() {
        let text = OK
            .replace("method = \"put\"", "method = \"PSOT\"")
            .replace("\"$.data.id\", exists", "\"$.data[\", exists")
            .replace("degraded_ms = 10", "degraded_ms = 30\nmethod = \"FETCH\"")
            + "\n[[steps]]\nname = \"third\"\nurl = \"{{ nope }}\"\ncolour = 1\n\n[[steps]]\nname = \"fourth\"\nurl = \"{{ missing }}/{{ sid }}\"\n";
        let errors = all(&text);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "steps[0].method",
                "steps[0].assert[1]",
                "steps[1].degraded_ms",
                "steps[1].method",
                "steps[2].colour",
                "steps[3].url",
            ],
            "{errors:#?}"
        );
        // In file order, each at its own line.
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert!(lines.windows(2).all(|w| w[0] < w[1]), "{errors:#?}");
        assert!(errors[5].message.contains("missing"), "{errors:#?}");
        // The first is what `parse` reports.
        assert_eq!(err(&text), errors[0]);
    }

    #[test]
    fn sections_report_their_problems_side_by_side() {
        let text = OK
            .replace("name = \"demo\"", "name = \"demo\"\ntimeout = \"soon\"")
            .replace(
                "base = \"http://127.0.0.1:1\"",
                "base = \"http://127.0.0.1:1\"\n\"b a d\" = 1",
            )
            .replace("token = { env = \"DEMO_TOKEN\" }", "token = \"hunter2\"");
        let errors = all(&text);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["timeout", "vars.b a d", "secrets.token"],
            "{errors:#?}"
        );
        // A secret with a problem is still known: its uses are not errors too.
        assert!(
            !errors.iter().any(|e| e.message.contains("token }}")),
            "{errors:#?}"
        );
    }

    #[test]
    fn a_syntax_error_has_a_line() {
        let e = err("name = \"x\"\n[[steps]\n");
        assert_eq!(e.line, 2, "{e}");
    }
}
