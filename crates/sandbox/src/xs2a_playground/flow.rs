//! The playground's state machine: sessions, their one account-details flow
//! (bank selection, three encrypted forms around a bank redirect) and their
//! consent with its rotating token.
//!
//! Everything sits behind one mutex held only for map lookups and state
//! changes; RSA work happens outside it, so concurrent runs only queue for
//! microseconds. Failure injection is decided when a run's session is made
//! and kept on the session, so parallel runs never take each other's turn.
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::crypto::ServerKey;
use super::{
    BANK_CODE, COUNTRY_CODE, FailPlan, INTERFACE, MAX_LOGIN_ATTEMPTS, MAX_SESSIONS, PASSWORD,
    PASSWORD_KEY, PREFIX, Playground, Refusal, SESSION_TTL, Step, USERNAME, USERNAME_KEY,
    random_hex,
};

/// Form keys (JWTs) claim this lifetime; nothing checks it.
const FORM_KEY_SECS: u64 = 900;
/// Used consent tokens remembered per consent, to say "already used".
const MAX_USED_TOKENS: usize = 64;

#[derive(Debug, Default)]
pub(super) struct Inner {
    sessions: HashMap<String, Session>,
    /// flow id → session id
    flows: HashMap<String, String>,
    /// consent id → session id
    consents: HashMap<String, String>,
    pub(super) plan: Option<FailPlan>,
}

#[derive(Debug)]
struct Session {
    created: Instant,
    scope: Scope,
    /// The request of this run that answers 503 (once).
    fail_at: Option<Step>,
    flow: Option<Flow>,
    consent: Option<Consent>,
}

/// Which consent URLs the session asked for in `consent_scope`.
#[derive(Clone, Copy, Debug)]
struct Scope {
    accounts: bool,
    account_details: bool,
    balances: bool,
}

#[derive(Debug)]
struct Flow {
    id: String,
    stage: Stage,
    wrong_logins: u32,
}

#[derive(Debug)]
enum Stage {
    SelectBank,
    Form(Form),
    Redirect { id: String },
    Finished { account: usize },
    Aborted { reason: &'static str },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FormKind {
    Transport,
    Credentials,
    Account,
}

impl FormKind {
    pub fn step(self) -> Step {
        match self {
            FormKind::Transport => Step::Transport,
            FormKind::Credentials => Step::Credentials,
            FormKind::Account => Step::SelectAccount,
        }
    }
}

#[derive(Clone, Debug)]
struct Form {
    kind: FormKind,
    id: String,
    /// The JWT handed out as `result.key`.
    key: String,
}

#[derive(Debug)]
struct Consent {
    id: String,
    token: String,
    used: Vec<String>,
    account: usize,
}

/// The three consent reads the playground serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConsentCall {
    Accounts,
    AccountDetails,
    Balances,
}

impl ConsentCall {
    /// Its request number (the account list is not one of the 11).
    pub fn step(self) -> Option<Step> {
        match self {
            ConsentCall::Accounts => None,
            ConsentCall::AccountDetails => Some(Step::AccountDetails),
            ConsentCall::Balances => Some(Step::Balances),
        }
    }

    fn scope_name(self) -> &'static str {
        match self {
            ConsentCall::Accounts => "accounts",
            ConsentCall::AccountDetails => "account_details",
            ConsentCall::Balances => "balances",
        }
    }

    fn path(self) -> &'static str {
        match self {
            ConsentCall::Accounts => "accounts",
            ConsentCall::AccountDetails => "account-details",
            ConsentCall::Balances => "balances",
        }
    }

    fn in_scope(self, s: Scope) -> bool {
        match self {
            ConsentCall::Accounts => s.accounts,
            ConsentCall::AccountDetails => s.account_details,
            ConsentCall::Balances => s.balances,
        }
    }
}

impl Stage {
    fn describe(&self) -> &'static str {
        match self {
            Stage::SelectBank => "waiting for a bank selection",
            Stage::Form(f) => match f.kind {
                FormKind::Transport => "waiting for the transport form",
                FormKind::Credentials => "waiting for the credentials form",
                FormKind::Account => "waiting for the account form",
            },
            Stage::Redirect { .. } => "waiting for the bank redirect to complete",
            Stage::Finished { .. } => "finished",
            Stage::Aborted { .. } => "aborted",
        }
    }
}

fn not_found(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal::new(StatusCode::NOT_FOUND, code, message)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Answer 503 if this is the run's injected request (once per run).
fn trip(session: &mut Session, step: Step) -> Result<(), Refusal> {
    if session.fail_at == Some(step) {
        session.fail_at = None;
        return Err(Refusal::injected(step));
    }
    Ok(())
}

fn str_field<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<&'a str, Refusal> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(Refusal::bad(format!("{key} must be a string"))),
        None => Err(Refusal::bad(format!("missing field {key}"))),
    }
}

fn optional_object(obj: &Map<String, Value>, key: &str) -> Result<(), Refusal> {
    match obj.get(key) {
        None | Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(Refusal::bad(format!("{key} must be an object"))),
    }
}

impl Inner {
    pub(super) fn live_sessions(&self) -> usize {
        self.sessions
            .values()
            .filter(|s| s.created.elapsed() < SESSION_TTL)
            .count()
    }

    fn session(&mut self, id: &str) -> Result<&mut Session, Refusal> {
        match self.sessions.get_mut(id) {
            None => Err(not_found(
                "SESSION_NOT_FOUND",
                format!("no session {id}: start one with PUT /xs2a/v1/sessions"),
            )),
            Some(s) if s.created.elapsed() >= SESSION_TTL => Err(Refusal::new(
                StatusCode::GONE,
                "SESSION_EXPIRED",
                format!(
                    "session {id} expired (sessions live {} s)",
                    SESSION_TTL.as_secs()
                ),
            )),
            Some(s) => Ok(s),
        }
    }

    /// The session of a flow (the flow itself is `session.flow`).
    fn flow_session(&mut self, flow_id: &str) -> Result<&mut Session, Refusal> {
        let sid = self.flows.get(flow_id).cloned().ok_or_else(|| {
            not_found(
                "FLOW_NOT_FOUND",
                format!("no flow {flow_id}: start one with PUT /xs2a/v1/sessions/{{id}}/flows/account-details"),
            )
        })?;
        self.session(&sid)
    }

    fn consent_session(&mut self, consent_id: &str) -> Result<&mut Session, Refusal> {
        let sid = self.consents.get(consent_id).cloned().ok_or_else(|| {
            not_found(
                "CONSENT_NOT_FOUND",
                format!("no consent {consent_id}: get one with POST /xs2a/v1/sessions/{{id}}/consent/get"),
            )
        })?;
        self.session(&sid)
    }

    /// Keep the maps bounded: drop expired sessions, then the oldest half.
    fn make_room(&mut self) {
        if self.sessions.len() < MAX_SESSIONS {
            return;
        }
        self.sessions
            .retain(|_, s| s.created.elapsed() < SESSION_TTL);
        if self.sessions.len() >= MAX_SESSIONS {
            let mut by_age: Vec<(Instant, String)> = self
                .sessions
                .iter()
                .map(|(id, s)| (s.created, id.clone()))
                .collect();
            by_age.sort();
            for (_, id) in by_age.into_iter().take(MAX_SESSIONS / 2) {
                self.sessions.remove(&id);
            }
        }
        let sessions = &self.sessions;
        self.flows.retain(|_, sid| sessions.contains_key(sid));
        self.consents.retain(|_, sid| sessions.contains_key(sid));
    }

    /// Take the failure plan's turn for a new run.
    fn take_plan(&mut self) -> Option<Step> {
        let plan = self.plan.as_mut()?;
        let step = Step::from_number(plan.request);
        if !plan.persist {
            plan.runs_left = plan.runs_left.saturating_sub(1);
            if plan.runs_left == 0 {
                self.plan = None;
            }
        }
        step
    }
}

fn api_url(root: &str, path: &str) -> String {
    format!("{root}{PREFIX}{path}")
}

fn wizard_url(root: &str, flow_id: &str) -> String {
    api_url(root, &format!("/branded/xs2a/v1/wizard/{flow_id}"))
}

fn redirect_url(root: &str, flow_id: &str, redirect_id: &str) -> String {
    api_url(
        root,
        &format!("/testbank/authorize?flow_id={flow_id}&redirect_id={redirect_id}"),
    )
}

/// The values of a decrypted `{form_identifier, data: [{key, value}]}`.
fn form_values(form: &Value, expected: &str) -> Result<HashMap<String, String>, Refusal> {
    let invalid = |m: String| Refusal::new(StatusCode::BAD_REQUEST, "FORM_INVALID", m);
    let Value::Object(obj) = form else {
        return Err(invalid(
            "the decrypted form must be a JSON object {form_identifier, data}".into(),
        ));
    };
    let id = match obj.get("form_identifier") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(invalid("form_identifier must be a string".into())),
        None => return Err(invalid("the decrypted form has no form_identifier".into())),
    };
    if id != expected {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "FORM_MISMATCH",
            format!(
                "the decrypted form is form_identifier {id:?}, but this step expects {expected:?}"
            ),
        ));
    }
    let Some(Value::Array(items)) = obj.get("data") else {
        return Err(invalid("data must be an array of {key, value}".into()));
    };
    let mut out = HashMap::new();
    for item in items {
        match (item.get("key"), item.get("value")) {
            (Some(Value::String(k)), Some(Value::String(v))) => {
                out.insert(k.clone(), v.clone());
            }
            _ => {
                return Err(invalid(
                    "every data item must be {\"key\": string, \"value\": string}".into(),
                ));
            }
        }
    }
    Ok(out)
}

impl Playground {
    fn new_form(&self, key: &ServerKey, flow_id: &str, kind: FormKind) -> Form {
        let id = random_hex(16);
        let now = unix_now();
        let jwt = key.form_jwt(
            &self.jwt_secret,
            &json!({
                "iss": "xs2a-playground",
                "flow_id": flow_id,
                "form_identifier": id,
                "iat": now,
                "exp": now + FORM_KEY_SECS,
            }),
        );
        Form { kind, id, key: jwt }
    }

    fn form_json(&self, f: &Form) -> Value {
        let elements = match f.kind {
            FormKind::Transport => json!([{
                "type": "select",
                "key": "interface",
                "label": "How do you want to connect to your bank?",
                "options": [{"value": INTERFACE, "label": "Testbank (BIAS)"}],
            }]),
            FormKind::Credentials => json!([
                {"type": "text", "key": USERNAME_KEY, "label": "Username"},
                {"type": "password", "key": PASSWORD_KEY, "label": "PIN"},
            ]),
            FormKind::Account => {
                let options: Vec<Value> = self
                    .accounts
                    .iter()
                    .map(|a| json!({"value": a.id, "label": format!("{} ({})", a.alias, a.iban)}))
                    .collect();
                json!([{
                    "type": "select",
                    "key": "account_id",
                    "label": "Choose an account",
                    "options": options,
                }])
            }
        };
        json!({"form_identifier": f.id, "elements": elements})
    }

    /// The wizard's current state, as every wizard answer shows it.
    fn render(&self, root: &str, flow: &Flow) -> Value {
        let wizard = wizard_url(root, &flow.id);
        match &flow.stage {
            Stage::SelectBank => json!({
                "flow_id": flow.id,
                "state": "CONSUMER_INPUT_NEEDED",
                "result": {"context": "bank_selection"},
            }),
            Stage::Form(f) => json!({
                "flow_id": flow.id,
                "state": "CONSUMER_INPUT_NEEDED",
                "result": {"form": self.form_json(f), "key": f.key},
                "next": format!("{wizard}/forms/{}", f.id),
            }),
            Stage::Redirect { id } => json!({
                "flow_id": flow.id,
                "state": "CONSUMER_INPUT_NEEDED",
                "result": {
                    "context": "authentication",
                    "redirect": {"url": redirect_url(root, &flow.id, id), "id": id},
                },
            }),
            Stage::Finished { account } => json!({
                "flow_id": flow.id,
                "state": "FINISHED",
                "result": {"account_id": self.accounts.get(*account).map(|a| a.id.as_str())},
            }),
            Stage::Aborted { reason } => json!({
                "flow_id": flow.id,
                "state": "ABORTED",
                "result": {"reason": reason},
            }),
        }
    }

    /// Request 1. `fail_plan` decides here whether this run has an injected failure.
    pub(crate) fn start_session(
        &self,
        root: &str,
        body: &Map<String, Value>,
    ) -> Result<Value, Refusal> {
        let parsed = parse_session_body(body);
        let mut inner = self.lock();
        if inner.plan.and_then(|p| Step::from_number(p.request)) == Some(Step::StartSession) {
            inner.take_plan();
            return Err(Refusal::injected(Step::StartSession));
        }
        let scope = parsed?;
        let fail_at = inner.take_plan();
        inner.make_room();
        let id = random_hex(16);
        inner.sessions.insert(
            id.clone(),
            Session {
                created: Instant::now(),
                scope,
                fail_at,
                flow: None,
                consent: None,
            },
        );
        drop(inner);
        self.stats.sessions.fetch_add(1, Ordering::Relaxed);
        let session = api_url(root, &format!("/xs2a/v1/sessions/{id}"));
        Ok(json!({
            "session_id": id,
            "self_url": session,
            "flows": {"account_details": format!("{session}/flows/account-details")},
            "consent_scope": {
                "accounts": scope.accounts,
                "account_details": scope.account_details,
                "balances": scope.balances,
            },
            "expires_in_seconds": SESSION_TTL.as_secs(),
        }))
    }

    /// Request 2.
    pub(crate) fn start_flow(
        &self,
        session_id: &str,
        body: &Map<String, Value>,
    ) -> Result<Value, Refusal> {
        for field in ["account_id", "iban"] {
            if body
                .get(field)
                .is_some_and(|v| !v.is_string() && !v.is_null())
            {
                return Err(Refusal::bad(format!("{field} must be a string")));
            }
        }
        optional_object(body, "keys")?;
        let mut inner = self.lock();
        let session = inner.session(session_id)?;
        trip(session, Step::StartFlow)?;
        if let Some(flow) = &session.flow {
            return Err(Refusal::conflict(
                "FLOW_ALREADY_STARTED",
                format!(
                    "session {session_id} already has flow {} ({}); start a new session for another flow",
                    flow.id,
                    flow.stage.describe()
                ),
            ));
        }
        let flow_id = random_hex(16);
        session.flow = Some(Flow {
            id: flow_id.clone(),
            stage: Stage::SelectBank,
            wrong_logins: 0,
        });
        inner.flows.insert(flow_id.clone(), session_id.to_owned());
        Ok(json!({
            "flow_id": flow_id,
            "client_token": "",
            "state": "CONSUMER_INPUT_NEEDED",
        }))
    }

    /// Request 3.
    pub(crate) fn select_bank(
        &self,
        root: &str,
        key: &ServerKey,
        flow_id: &str,
        body: &Map<String, Value>,
    ) -> Result<Value, Refusal> {
        let mut inner = self.lock();
        let session = inner.flow_session(flow_id)?;
        trip(session, Step::SelectBank)?;
        let Some(flow) = session.flow.as_mut() else {
            return Err(not_found("FLOW_NOT_FOUND", format!("no flow {flow_id}")));
        };
        if !matches!(flow.stage, Stage::SelectBank) {
            return Err(Refusal::conflict(
                "BANK_ALREADY_SELECTED",
                format!(
                    "the bank is already selected; the flow is {}",
                    flow.stage.describe()
                ),
            ));
        }
        let bank = str_field(body, "bank_code")?;
        let country = str_field(body, "country_code")?;
        optional_object(body, "keys")?;
        if bank != BANK_CODE || country != COUNTRY_CODE {
            return Err(not_found(
                "BANK_NOT_FOUND",
                format!(
                    "no bank {bank:?} in {country:?}: the playground has the test bank {BANK_CODE} in {COUNTRY_CODE}"
                ),
            ));
        }
        flow.stage = Stage::Form(self.new_form(key, flow_id, FormKind::Transport));
        Ok(self.render(root, flow))
    }

    /// Request 4: the wizard's current state.
    pub(crate) fn get_flow(&self, root: &str, flow_id: &str) -> Result<Value, Refusal> {
        let mut inner = self.lock();
        let session = inner.flow_session(flow_id)?;
        trip(session, Step::GetFlow)?;
        let Some(flow) = session.flow.as_ref() else {
            return Err(not_found("FLOW_NOT_FOUND", format!("no flow {flow_id}")));
        };
        if matches!(flow.stage, Stage::SelectBank) {
            return Err(Refusal::conflict(
                "NO_BANK_SELECTED",
                format!(
                    "select a bank first: POST /branded/xs2a/v1/wizard/{flow_id} with bank_code and country_code"
                ),
            ));
        }
        Ok(self.render(root, flow))
    }

    /// Requests 5, 6 and 8, first half: which form the `next` URL answers
    /// (and the run's injected failure), before any RSA work.
    pub(crate) fn pending_form(&self, flow_id: &str, form_id: &str) -> Result<FormKind, Refusal> {
        let mut inner = self.lock();
        let session = inner.flow_session(flow_id)?;
        let kind = match session.flow.as_ref().map(|f| &f.stage) {
            Some(Stage::Form(f)) if f.id == form_id => f.kind,
            Some(Stage::Form(f)) => {
                return Err(Refusal::conflict(
                    "STALE_FORM",
                    format!(
                        "form {form_id} is not the flow's current form ({}): post to the latest next URL",
                        f.id
                    ),
                ));
            }
            Some(stage) => {
                return Err(Refusal::conflict(
                    "NO_FORM_PENDING",
                    format!("the flow takes no form now: it is {}", stage.describe()),
                ));
            }
            None => return Err(not_found("FLOW_NOT_FOUND", format!("no flow {flow_id}"))),
        };
        trip(session, kind.step())?;
        Ok(kind)
    }

    /// Requests 5, 6 and 8, second half: apply the decrypted form.
    pub(crate) fn answer_form(
        &self,
        root: &str,
        key: &ServerKey,
        flow_id: &str,
        form_id: &str,
        form: &Value,
    ) -> Result<Value, Refusal> {
        let mut inner = self.lock();
        let session = inner.flow_session(flow_id)?;
        let Some(flow) = session.flow.as_mut() else {
            return Err(not_found("FLOW_NOT_FOUND", format!("no flow {flow_id}")));
        };
        let kind = match &flow.stage {
            Stage::Form(f) if f.id == form_id => f.kind,
            _ => {
                return Err(Refusal::conflict(
                    "STALE_FORM",
                    format!(
                        "form {form_id} was answered meanwhile: the flow is {}",
                        flow.stage.describe()
                    ),
                ));
            }
        };
        let values = form_values(form, form_id)?;
        match kind {
            FormKind::Transport => {
                let Some(interface) = values.get("interface") else {
                    return Err(Refusal::bad(
                        "the transport form needs the key \"interface\"",
                    ));
                };
                if interface != INTERFACE {
                    return Err(Refusal::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "UNKNOWN_OPTION",
                        format!(
                            "interface {interface:?} is not offered: the test bank has {INTERFACE:?}"
                        ),
                    ));
                }
                flow.stage = Stage::Form(self.new_form(key, flow_id, FormKind::Credentials));
            }
            FormKind::Credentials => {
                let (Some(user), Some(pass)) = (values.get(USERNAME_KEY), values.get(PASSWORD_KEY))
                else {
                    return Err(Refusal::bad(format!(
                        "the credentials form needs the keys {USERNAME_KEY:?} and {PASSWORD_KEY:?}"
                    )));
                };
                if user == USERNAME && pass == PASSWORD {
                    flow.wrong_logins = 0;
                    flow.stage = Stage::Redirect { id: random_hex(12) };
                } else {
                    flow.wrong_logins += 1;
                    let left = MAX_LOGIN_ATTEMPTS.saturating_sub(flow.wrong_logins);
                    if left == 0 {
                        flow.stage = Stage::Aborted {
                            reason: "too many wrong logins at the bank",
                        };
                        return Err(Refusal {
                            attempts_left: Some(0),
                            ..Refusal::new(
                                StatusCode::FORBIDDEN,
                                "LOGIN_LOCKED",
                                format!(
                                    "{MAX_LOGIN_ATTEMPTS} wrong logins in a row: the bank aborted the flow; start a new session"
                                ),
                            )
                        });
                    }
                    return Err(Refusal {
                        attempts_left: Some(left),
                        data: Some(self.render(root, flow)),
                        ..Refusal::new(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "INVALID_CREDENTIALS",
                            format!(
                                "wrong username or password at the test bank; {left} attempt(s) left (the form in data can be sent again)"
                            ),
                        )
                    });
                }
            }
            FormKind::Account => {
                let Some(chosen) = values.get("account_id") else {
                    return Err(Refusal::bad(
                        "the account form needs the key \"account_id\"",
                    ));
                };
                let Some(i) = self.accounts.iter().position(|a| &a.id == chosen) else {
                    return Err(Refusal::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "UNKNOWN_OPTION",
                        format!("account_id {chosen:?} is not one of the form's options"),
                    ));
                };
                flow.stage = Stage::Finished { account: i };
                self.stats.flows_finished.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(self.render(root, flow))
    }

    /// Request 7: back from the bank's redirect.
    pub(crate) fn complete_flow(
        &self,
        root: &str,
        key: &ServerKey,
        flow_id: &str,
        body: &Map<String, Value>,
    ) -> Result<Value, Refusal> {
        let mut inner = self.lock();
        let session = inner.flow_session(flow_id)?;
        trip(session, Step::CompleteFlow)?;
        let Some(flow) = session.flow.as_mut() else {
            return Err(not_found("FLOW_NOT_FOUND", format!("no flow {flow_id}")));
        };
        let Stage::Redirect { id } = &flow.stage else {
            return Err(Refusal::conflict(
                "NO_REDIRECT_PENDING",
                format!(
                    "the flow is {}, not waiting for a bank redirect",
                    flow.stage.describe()
                ),
            ));
        };
        let redirect_id = str_field(body, "redirect_id")?;
        if redirect_id != id {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "REDIRECT_MISMATCH",
                "redirect_id is not the one of this flow's redirect",
            ));
        }
        let return_url = str_field(body, "return_url")?;
        optional_object(body, "keys")?;
        let url = url::Url::parse(return_url)
            .map_err(|e| Refusal::bad(format!("return_url is not a URL: {e}")))?;
        let result = url
            .query_pairs()
            .find(|(k, _)| k == "result")
            .map(|(_, v)| v.into_owned());
        match result.as_deref() {
            Some("success") => {
                flow.stage = Stage::Form(self.new_form(key, flow_id, FormKind::Account));
                Ok(self.render(root, flow))
            }
            Some(other) => {
                flow.stage = Stage::Aborted {
                    reason: "the PSU did not authorize at the bank",
                };
                Err(Refusal::new(
                    StatusCode::FORBIDDEN,
                    "AUTHENTICATION_FAILED",
                    format!("the bank redirect came back with result={other}: the flow is aborted"),
                ))
            }
            None => Err(Refusal::bad(
                "return_url has no result parameter (the redirect URL plus &result=success)",
            )),
        }
    }

    /// Request 9.
    pub(crate) fn get_consent(
        &self,
        root: &str,
        session_id: &str,
        body: &Map<String, Value>,
    ) -> Result<Value, Refusal> {
        optional_object(body, "keys")?;
        let mut inner = self.lock();
        let session = inner.session(session_id)?;
        trip(session, Step::GetConsent)?;
        let account = match session.flow.as_ref().map(|f| &f.stage) {
            Some(Stage::Finished { account }) => *account,
            Some(stage) => {
                return Err(Refusal::conflict(
                    "FLOW_NOT_FINISHED",
                    format!("no consent yet: the session's flow is {}", stage.describe()),
                ));
            }
            None => {
                return Err(Refusal::conflict(
                    "NO_FLOW",
                    "no consent yet: the session has no flow (PUT …/flows/account-details)",
                ));
            }
        };
        if session.consent.is_some() {
            return Err(Refusal::conflict(
                "CONSENT_ALREADY_ISSUED",
                "the consent of this session was already handed out; carry its newest consent_token forward",
            ));
        }
        let scope = session.scope;
        let consent = Consent {
            id: random_hex(16),
            token: random_hex(32),
            used: Vec::new(),
            account,
        };
        let (id, token) = (consent.id.clone(), consent.token.clone());
        session.consent = Some(consent);
        inner.consents.insert(id.clone(), session_id.to_owned());
        drop(inner);
        self.stats.consents.fetch_add(1, Ordering::Relaxed);
        let mut consents = Map::new();
        for call in [
            ConsentCall::Accounts,
            ConsentCall::AccountDetails,
            ConsentCall::Balances,
        ] {
            if call.in_scope(scope) {
                let url = api_url(root, &format!("/xs2a/v1/consents/{id}/{}", call.path()));
                consents.insert(call.scope_name().to_owned(), json!(url));
            }
        }
        Ok(json!({
            "consent_id": id,
            "consents": consents,
            "consent_token": token,
        }))
    }

    /// Requests 10 and 11 (and the account list): each use of the consent
    /// token answers with a new one and retires the old.
    pub(crate) fn consent_call(
        &self,
        consent_id: &str,
        call: ConsentCall,
        body: &Map<String, Value>,
    ) -> Result<Value, Refusal> {
        let mut inner = self.lock();
        let session = inner.consent_session(consent_id)?;
        if let Some(step) = call.step() {
            trip(session, step)?;
        }
        let scope = session.scope;
        let Some(consent) = session.consent.as_mut() else {
            return Err(not_found(
                "CONSENT_NOT_FOUND",
                format!("no consent {consent_id}"),
            ));
        };
        if !call.in_scope(scope) {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "OUT_OF_SCOPE",
                format!(
                    "the session's consent_scope did not ask for {}",
                    call.scope_name()
                ),
            ));
        }
        let token = str_field(body, "consent_token")?;
        if token != consent.token {
            let (code, message) = if consent.used.iter().any(|t| t == token) {
                (
                    "CONSENT_TOKEN_USED",
                    "this consent_token was already used: tokens rotate, send the one from the latest consent answer",
                )
            } else {
                (
                    "CONSENT_TOKEN_INVALID",
                    "unknown consent_token for this consent",
                )
            };
            return Err(Refusal::new(StatusCode::FORBIDDEN, code, message));
        }
        optional_object(body, "psu")?;
        optional_object(body, "keys")?;
        let Some(account) = self.accounts.get(consent.account) else {
            return Err(not_found(
                "ACCOUNT_NOT_FOUND",
                "the consented account is gone",
            ));
        };
        if call != ConsentCall::Accounts {
            let asked = str_field(body, "account_id")?;
            if asked != account.id {
                return Err(if self.accounts.iter().any(|a| a.id == asked) {
                    Refusal::new(
                        StatusCode::FORBIDDEN,
                        "ACCOUNT_NOT_IN_CONSENT",
                        "that account was not selected in this session's flow",
                    )
                } else {
                    not_found("ACCOUNT_NOT_FOUND", format!("no account {asked:?}"))
                });
            }
        }
        let next = random_hex(32);
        let old = std::mem::replace(&mut consent.token, next.clone());
        if consent.used.len() >= MAX_USED_TOKENS {
            consent.used.remove(0);
        }
        consent.used.push(old);
        drop(inner);
        let details = json!({
            "id": account.id,
            "alias": account.alias,
            "iban": account.iban,
            "bic": "TESTDE88XXX",
            "account_number": account.account_number,
            "bank_code": "88888888",
            "national_branch_code": null,
            "holder_name": "Max Mustermann",
            "account_type": "DEFAULT",
            "currency": "EUR",
            "transfer_type": "FULL",
        });
        let result = match call {
            ConsentCall::Accounts => json!({"accounts": [details]}),
            ConsentCall::AccountDetails => json!({"account": details}),
            ConsentCall::Balances => json!({
                "account": {"id": account.id, "iban": account.iban},
                "available": {"amount": account.available, "currency": "EUR"},
                "booked": {"amount": account.booked, "currency": "EUR"},
                "limit": {"amount": 0, "currency": "EUR"},
            }),
        };
        Ok(json!({"result": result, "consent_token": next}))
    }
}

/// Request 1's body: `consent_scope` says which consent URLs the run gets.
fn parse_session_body(body: &Map<String, Value>) -> Result<Scope, Refusal> {
    let Some(Value::Object(scope)) = body.get("consent_scope") else {
        return Err(Refusal::bad(
            "consent_scope must be an object (e.g. {\"account_details\": {}, \"balances\": {}})",
        ));
    };
    for field in ["psu", "_selected_bank", "keys"] {
        optional_object(body, field)?;
    }
    for field in ["language", "_aspsp_access", "_redirect_return_url"] {
        if body.get(field).is_some_and(|v| !v.is_string()) {
            return Err(Refusal::bad(format!("{field} must be a string")));
        }
    }
    let scope = Scope {
        accounts: scope.contains_key("accounts"),
        account_details: scope.contains_key("account_details"),
        balances: scope.contains_key("balances"),
    };
    if !(scope.accounts || scope.account_details || scope.balances) {
        return Err(Refusal::bad(
            "consent_scope asks for nothing the playground serves (accounts, account_details, balances)",
        ));
    }
    Ok(scope)
}
