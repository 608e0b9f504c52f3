//! The playground's state machine: sessions, their one flow (bank
//! selection, encrypted forms around a bank redirect; an account-details,
//! accounts or transactions flow) and the consent a finished flow yields,
//! with its rotating token, its lifetime and its daily limit.
//!
//! Everything sits behind one mutex held only for map lookups and state
//! changes; RSA work happens outside it, so concurrent runs only queue for
//! microseconds. Failure injection is decided when a run's session is made
//! and kept on the session, so parallel runs never take each other's turn.
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use chrono::{DateTime, Days, NaiveDate, Utc};
use serde_json::{Map, Value, json};

use super::crypto::ServerKey;
use super::{
    BANK_CODE, BLZ, COUNTRY_CODE, DAILY_LIMIT, FailPlan, INTERFACE, LIFETIME_DAYS,
    MAX_LOGIN_ATTEMPTS, MAX_PAGE_SIZE, MAX_SESSIONS, OVERDRAFT, PAGE_SIZE, PASSWORD, PASSWORD_KEY,
    PREFIX, Playground, Refusal, SESSION_TTL, Step, USERNAME, USERNAME_KEY, random_hex,
};
use crate::fault::FaultKind;
use crate::xs2a::data::{Account as Book, Kind, Row};

/// Form keys (JWTs) claim this lifetime; nothing checks it.
const FORM_KEY_SECS: u64 = 900;
/// Used consent tokens remembered per consent, to say "already used".
const MAX_USED_TOKENS: usize = 64;
/// Open page cursors kept per consent (the oldest go first).
const MAX_CURSORS: usize = 256;
/// Days a transactions flow reads when the request names none.
const DEFAULT_FLOW_DAYS: u64 = 30;

#[derive(Debug, Default)]
pub(super) struct Inner {
    sessions: HashMap<String, Session>,
    /// flow id → session id
    flows: HashMap<String, String>,
    /// Consents outlive their sessions (a session lasts an hour, a consent
    /// its lifetime in days).
    consents: HashMap<String, Consent>,
    pub(super) plan: Option<FailPlan>,
    /// (day, account index, call) → unattended consent calls served.
    usage: BTreeMap<(NaiveDate, usize, &'static str), u32>,
    /// Consent calls refused with `CONSENT.LIMIT_EXCEEDED`.
    limited: u32,
}

#[derive(Debug)]
struct Session {
    created: Instant,
    scope: Scope,
    /// Where the bank's redirect page sends the browser back.
    return_url: Option<String>,
    lifetime_days: u32,
    /// The request of this run that answers 503 (once).
    fail_at: Option<Step>,
    flow: Option<Flow>,
    consent_id: Option<String>,
}

/// Which consent URLs the session asked for in `consent_scope`.
#[derive(Clone, Copy, Debug)]
struct Scope {
    accounts: bool,
    account_details: bool,
    balances: bool,
    transactions: bool,
}

/// What a flow reads once the person is through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FlowKind {
    AccountDetails,
    Accounts,
    Transactions,
}

impl FlowKind {
    /// The key in the session's `flows` map.
    fn key(self) -> &'static str {
        match self {
            FlowKind::AccountDetails => "account_details",
            FlowKind::Accounts => "accounts",
            FlowKind::Transactions => "transactions",
        }
    }

    /// The segment of the flow's URL.
    pub fn path(self) -> &'static str {
        match self {
            FlowKind::AccountDetails => "account-details",
            FlowKind::Accounts => "accounts",
            FlowKind::Transactions => "transactions",
        }
    }
}

/// One account's transactions over a date range, read a page at a time.
#[derive(Clone, Copy, Debug)]
struct Listing {
    account: usize,
    from: NaiveDate,
    to: NaiveDate,
    size: usize,
}

#[derive(Debug)]
struct Flow {
    id: String,
    session_id: String,
    kind: FlowKind,
    client_token: String,
    stage: Stage,
    wrong_logins: u32,
    /// The account the flow was started for (`account_id` or `iban`).
    preselected: Option<usize>,
    /// A transactions flow's range and page size.
    range: Option<(NaiveDate, NaiveDate, usize)>,
}

#[derive(Debug)]
enum Stage {
    SelectBank,
    Form(Form),
    Redirect { id: String },
    Finished { accounts: Vec<usize> },
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
    /// The accounts consented to (book indexes).
    accounts: Vec<usize>,
    scope: Scope,
    /// On the playground's clock.
    created: DateTime<Utc>,
    lifetime_days: u32,
    /// The run's injected failure, when it falls on a consent call.
    fail_at: Option<Step>,
    /// Page offsets handed out → where they continue.
    cursors: Vec<(String, Listing, usize)>,
}

impl Consent {
    fn expires(&self) -> DateTime<Utc> {
        self.created + chrono::Duration::days(i64::from(self.lifetime_days))
    }
}

/// The consent reads the playground serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConsentCall {
    Accounts,
    AccountDetails,
    Balances,
    Transactions,
    /// `transactions/list`: the next page of a transactions call.
    TransactionsNext,
}

impl ConsentCall {
    pub const ALL: [ConsentCall; 5] = [
        ConsentCall::Accounts,
        ConsentCall::AccountDetails,
        ConsentCall::Balances,
        ConsentCall::Transactions,
        ConsentCall::TransactionsNext,
    ];

    /// Its request number (only the story's two reads are of the 11).
    pub fn step(self) -> Option<Step> {
        match self {
            ConsentCall::AccountDetails => Some(Step::AccountDetails),
            ConsentCall::Balances => Some(Step::Balances),
            _ => None,
        }
    }

    fn scope_name(self) -> &'static str {
        match self {
            ConsentCall::Accounts => "accounts",
            ConsentCall::AccountDetails => "account_details",
            ConsentCall::Balances => "balances",
            ConsentCall::Transactions | ConsentCall::TransactionsNext => "transactions",
        }
    }

    /// Its path under `/xs2a/v1/consents/{id}/`.
    pub fn path(self) -> &'static str {
        match self {
            ConsentCall::Accounts => "accounts/get",
            ConsentCall::AccountDetails => "account-details/get",
            ConsentCall::Balances => "balances/get",
            ConsentCall::Transactions => "transactions/get",
            ConsentCall::TransactionsNext => "transactions/list",
        }
    }

    fn in_scope(self, s: Scope) -> bool {
        match self {
            ConsentCall::Accounts => s.accounts,
            ConsentCall::AccountDetails => s.account_details,
            ConsentCall::Balances => s.balances,
            ConsentCall::Transactions | ConsentCall::TransactionsNext => s.transactions,
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
    /// The most unattended calls of one account and call on one day, and
    /// the calls refused over the limit.
    pub(super) fn usage(&self) -> (u32, u32) {
        (
            self.usage.values().copied().max().unwrap_or(0),
            self.limited,
        )
    }

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

    fn consent(&mut self, consent_id: &str) -> Result<&mut Consent, Refusal> {
        self.consents.get_mut(consent_id).ok_or_else(|| {
            not_found(
                "CONSENT_NOT_FOUND",
                format!("no consent {consent_id}: get one with POST /xs2a/v1/sessions/{{id}}/consent/get"),
            )
        })
    }

    /// Keep the maps bounded: drop expired sessions, then the oldest half.
    fn make_room(&mut self) {
        bound(
            &mut self.sessions,
            |s| s.created.elapsed() < SESSION_TTL,
            |s| s.created,
        );
        let sessions = &self.sessions;
        self.flows.retain(|_, sid| sessions.contains_key(sid));
    }

    /// Keep the consents bounded: drop the expired, then the oldest half.
    fn make_consent_room(&mut self, now: DateTime<Utc>) {
        bound(&mut self.consents, |c| c.expires() > now, |c| c.created);
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

/// At [`MAX_SESSIONS`] entries: drop those no longer `live`, then the
/// oldest half by `created`.
fn bound<V, T: Ord>(
    map: &mut HashMap<String, V>,
    live: impl Fn(&V) -> bool,
    created: impl Fn(&V) -> T,
) {
    if map.len() < MAX_SESSIONS {
        return;
    }
    map.retain(|_, v| live(v));
    if map.len() >= MAX_SESSIONS {
        let mut by_age: Vec<(T, String)> =
            map.iter().map(|(id, v)| (created(v), id.clone())).collect();
        by_age.sort();
        for (_, id) in by_age.into_iter().take(MAX_SESSIONS / 2) {
            map.remove(&id);
        }
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
                    .accounts()
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
            Stage::Finished { accounts } => json!({
                "flow_id": flow.id,
                "state": "FINISHED",
                "client_token": flow.client_token,
                "result": self.flow_result(root, flow, accounts),
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
        let parsed = parsed?;
        let fail_at = inner.take_plan();
        inner.make_room();
        let id = random_hex(16);
        inner.sessions.insert(
            id.clone(),
            Session {
                created: Instant::now(),
                scope: parsed.scope,
                return_url: parsed.return_url,
                lifetime_days: parsed.lifetime_days,
                fail_at,
                flow: None,
                consent_id: None,
            },
        );
        drop(inner);
        self.stats.sessions.fetch_add(1, Ordering::Relaxed);
        let session = api_url(root, &format!("/xs2a/v1/sessions/{id}"));
        let scope = parsed.scope;
        let flows: Map<String, Value> = [
            FlowKind::AccountDetails,
            FlowKind::Accounts,
            FlowKind::Transactions,
        ]
        .iter()
        .map(|k| {
            (
                k.key().to_owned(),
                json!(format!("{session}/flows/{}", k.path())),
            )
        })
        .collect();
        Ok(json!({
            "session_id": id,
            "session_id_short": id[..8].to_ascii_uppercase(),
            "self": session,
            "self_url": session,
            "consent": format!("{session}/consent/get"),
            "flows": flows,
            "consent_scope": {
                "accounts": scope.accounts,
                "account_details": scope.account_details,
                "balances": scope.balances,
                "transactions": scope.transactions,
                "lifetime": parsed.lifetime_days,
            },
            "expires_in_seconds": SESSION_TTL.as_secs(),
        }))
    }

    /// Request 2 (and the accounts and transactions flows).
    pub(crate) fn start_flow(
        &self,
        root: &str,
        session_id: &str,
        kind: FlowKind,
        body: &Map<String, Value>,
    ) -> Result<Value, Refusal> {
        let wanted = |field: &str| -> Result<Option<String>, Refusal> {
            match body.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
                Some(_) => Err(Refusal::bad(format!("{field} must be a string"))),
            }
        };
        let (account_id, iban) = (wanted("account_id")?, wanted("iban")?);
        optional_object(body, "keys")?;
        let range = match kind {
            FlowKind::Transactions => Some(self.flow_range(body)?),
            _ => None,
        };
        let preselected = match (&account_id, &iban) {
            (Some(id), _) => Some(self.account_index(id).ok_or_else(|| {
                not_found(
                    "ACCOUNT_NOT_FOUND",
                    format!("no account {id:?} at the test bank"),
                )
            })?),
            (None, Some(iban)) => Some(
                self.accounts()
                    .iter()
                    .position(|a| a.iban.eq_ignore_ascii_case(&iban.replace(' ', "")))
                    .ok_or_else(|| {
                        not_found(
                            "ACCOUNT_NOT_FOUND",
                            format!("no account with IBAN {iban:?}"),
                        )
                    })?,
            ),
            (None, None) => None,
        };
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
        // Observed: the playground's account-details flow, driven through
        // the branded wizard, answers an empty client_token (the monitoring
        // story asserts it); clients of the other flows hand a token to the
        // XS2A App, so those get one.
        let client_token = match kind {
            FlowKind::AccountDetails => String::new(),
            _ => random_hex(24),
        };
        session.flow = Some(Flow {
            id: flow_id.clone(),
            session_id: session_id.to_owned(),
            kind,
            client_token: client_token.clone(),
            stage: Stage::SelectBank,
            wrong_logins: 0,
            preselected,
            range,
        });
        inner.flows.insert(flow_id.clone(), session_id.to_owned());
        Ok(json!({
            "flow_id": flow_id,
            "client_token": client_token,
            "self": api_url(root, &format!("/xs2a/v1/sessions/{session_id}/flows/{flow_id}")),
            "state": "CONSUMER_INPUT_NEEDED",
        }))
    }

    /// A transactions flow's range: `from_date`/`to_date`, or `last_days`,
    /// or the last 30 days; and its page size.
    fn flow_range(
        &self,
        body: &Map<String, Value>,
    ) -> Result<(NaiveDate, NaiveDate, usize), Refusal> {
        let today = self.today();
        let from = date_field(body, "from_date")?;
        let to = date_field(body, "to_date")?.unwrap_or(today).min(today);
        let from = match (from, body.get("last_days")) {
            (Some(_), Some(_)) => {
                return Err(Refusal::bad(
                    "give from_date/to_date or last_days, not both",
                ));
            }
            (Some(f), None) => f,
            (None, Some(v)) => {
                let days = v
                    .as_u64()
                    .filter(|d| (1..=3650).contains(d))
                    .ok_or_else(|| Refusal::bad("last_days must be a number from 1 to 3650"))?;
                today - Days::new(days - 1)
            }
            (None, None) => today - Days::new(DEFAULT_FLOW_DAYS - 1),
        };
        if from > to {
            return Err(Refusal::bad(format!(
                "from_date {from} is after to_date {to}"
            )));
        }
        Ok((from, to, page_size(body)?))
    }

    /// What a finished flow shows.
    fn flow_result(&self, root: &str, flow: &Flow, accounts: &[usize]) -> Value {
        let all = self.accounts();
        let details = |i: usize| all.get(i).map(account_json).unwrap_or(Value::Null);
        match flow.kind {
            FlowKind::AccountDetails => {
                let first = accounts.first().copied().unwrap_or_default();
                json!({
                    "type": "account_details",
                    "account_id": all.get(first).map(|a| a.id.as_str()),
                    "account": details(first),
                })
            }
            FlowKind::Accounts => json!({
                "type": "accounts",
                "accounts": accounts.iter().map(|i| details(*i)).collect::<Vec<_>>(),
            }),
            FlowKind::Transactions => {
                let account = accounts.first().copied().unwrap_or_default();
                let (from, to, size) =
                    flow.range
                        .unwrap_or((self.today(), self.today(), PAGE_SIZE));
                let listing = Listing {
                    account,
                    from,
                    to,
                    size,
                };
                let mut result =
                    self.flow_transactions(root, &flow.session_id, &flow.id, &listing, 0);
                result["account"] = details(account);
                result
            }
        }
    }

    /// A transactions flow's page from `position`, with where the next starts.
    fn flow_transactions(
        &self,
        root: &str,
        session_id: &str,
        flow_id: &str,
        listing: &Listing,
        position: usize,
    ) -> Value {
        let (transactions, next) = self.page(listing, position);
        let mut result = json!({
            "type": "transactions",
            "from_date": listing.from.to_string(),
            "to_date": listing.to.to_string(),
            "incomplete": false,
            "transactions": transactions,
        });
        if let Some(next) = next {
            result["pagination"] = json!({
                "url": api_url(root, &format!("/xs2a/v1/sessions/{session_id}/flows/{flow_id}/list")),
                "next": {"offset": next.to_string()},
            });
        }
        result
    }

    /// `GET /xs2a/v1/sessions/{sid}/flows/{fid}`: the flow's state and result.
    pub(crate) fn flow_status(
        &self,
        root: &str,
        session_id: &str,
        flow_id: &str,
    ) -> Result<Value, Refusal> {
        let mut inner = self.lock();
        let session = inner.session(session_id)?;
        match session.flow.as_ref() {
            Some(flow) if flow.id == flow_id => {
                let mut v = self.render(root, flow);
                v["client_token"] = json!(flow.client_token);
                if let Some(o) = v.as_object_mut() {
                    o.remove("next");
                }
                Ok(v)
            }
            _ => Err(not_found(
                "FLOW_NOT_FOUND",
                format!("session {session_id} has no flow {flow_id}"),
            )),
        }
    }

    /// `POST …/flows/{fid}/list` `{offset}`: a finished transactions flow's next page.
    pub(crate) fn flow_page(
        &self,
        root: &str,
        session_id: &str,
        flow_id: &str,
        body: &Map<String, Value>,
    ) -> Result<Value, Refusal> {
        let offset = offset_field(body)?;
        let mut inner = self.lock();
        let session = inner.session(session_id)?;
        let flow = session
            .flow
            .as_ref()
            .filter(|f| f.id == flow_id)
            .ok_or_else(|| {
                not_found(
                    "FLOW_NOT_FOUND",
                    format!("session {session_id} has no flow {flow_id}"),
                )
            })?;
        let (Stage::Finished { accounts }, FlowKind::Transactions, Some((from, to, size))) =
            (&flow.stage, flow.kind, flow.range)
        else {
            return Err(Refusal::conflict(
                "NO_PAGES",
                "only a finished transactions flow has pages",
            ));
        };
        let listing = Listing {
            account: accounts.first().copied().unwrap_or_default(),
            from,
            to,
            size,
        };
        let position: usize = offset.parse().map_err(|_| {
            Refusal::bad(format!("offset {offset:?} is not one this flow handed out"))
        })?;
        let result = self.flow_transactions(root, session_id, flow_id, &listing, position);
        Ok(json!({"state": "FINISHED", "result": result}))
    }

    /// `DELETE /xs2a/v1/sessions/{sid}`: the session ends; its consent stays.
    pub(crate) fn close_session(&self, session_id: &str) -> Result<(), Refusal> {
        let mut inner = self.lock();
        inner.session(session_id)?;
        inner.sessions.remove(session_id);
        inner.flows.retain(|_, sid| sid != session_id);
        Ok(())
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
                        data: Some(Box::new(self.render(root, flow))),
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
                let Some(i) = self.account_index(chosen) else {
                    return Err(Refusal::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "UNKNOWN_OPTION",
                        format!("account_id {chosen:?} is not one of the form's options"),
                    ));
                };
                flow.stage = Stage::Finished { accounts: vec![i] };
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
                flow.stage = match (flow.kind, flow.preselected) {
                    (FlowKind::Accounts, _) => Stage::Finished {
                        accounts: (0..self.books().len()).collect(),
                    },
                    (_, Some(i)) => Stage::Finished { accounts: vec![i] },
                    (_, None) => Stage::Form(self.new_form(key, flow_id, FormKind::Account)),
                };
                if matches!(flow.stage, Stage::Finished { .. }) {
                    self.stats.flows_finished.fetch_add(1, Ordering::Relaxed);
                }
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

    /// Where the bank's redirect page sends the browser: the session's
    /// `redirect_return_url` with `redirect_id` and the result; `None` when
    /// the session gave no address (the page then explains what to post).
    pub(crate) fn redirect_back(
        &self,
        flow_id: &str,
        redirect_id: &str,
        approved: bool,
    ) -> Result<Option<String>, Refusal> {
        let mut inner = self.lock();
        let session = inner.flow_session(flow_id)?;
        match session.flow.as_ref().map(|f| &f.stage) {
            Some(Stage::Redirect { id }) if id == redirect_id => {}
            _ => {
                return Err(Refusal::conflict(
                    "NO_REDIRECT_PENDING",
                    "this flow is not waiting for that bank redirect",
                ));
            }
        }
        let Some(back) = &session.return_url else {
            return Ok(None);
        };
        let mut url = url::Url::parse(back).map_err(|e| Refusal::bad(e.to_string()))?;
        url.query_pairs_mut()
            .append_pair("flow_id", flow_id)
            .append_pair("redirect_id", redirect_id)
            .append_pair("result", if approved { "success" } else { "failure" });
        Ok(Some(url.to_string()))
    }

    /// Request 9.
    pub(crate) fn get_consent(
        &self,
        root: &str,
        session_id: &str,
        body: &Map<String, Value>,
    ) -> Result<Value, Refusal> {
        optional_object(body, "keys")?;
        let now = self.now();
        let mut inner = self.lock();
        let session = inner.session(session_id)?;
        trip(session, Step::GetConsent)?;
        let accounts = match session.flow.as_ref().map(|f| &f.stage) {
            Some(Stage::Finished { accounts }) => accounts.clone(),
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
        if session.consent_id.is_some() {
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
            accounts,
            scope,
            created: now,
            lifetime_days: session.lifetime_days,
            fail_at: session.fail_at.take(),
            cursors: Vec::new(),
        };
        let (id, token) = (consent.id.clone(), consent.token.clone());
        session.consent_id = Some(id.clone());
        inner.make_consent_room(now);
        inner.consents.insert(id.clone(), consent);
        drop(inner);
        self.stats.consents.fetch_add(1, Ordering::Relaxed);
        let mut consents = Map::new();
        for call in ConsentCall::ALL {
            if call.in_scope(scope) && call != ConsentCall::TransactionsNext {
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

    /// Requests 10 and 11, the account list and the transactions: each use
    /// of the consent token answers with a new one and retires the old.
    pub(crate) fn consent_call(
        &self,
        root: &str,
        consent_id: &str,
        call: ConsentCall,
        body: &Map<String, Value>,
    ) -> Result<Value, Refusal> {
        let now = self.now();
        let today = now.date_naive();
        let ids = self.account_ids();
        let mut inner = self.lock();
        let consent = inner.consent(consent_id)?;
        if let Some(step) = call.step()
            && consent.fail_at == Some(step)
        {
            consent.fail_at = None;
            return Err(Refusal::injected(step));
        }
        if !call.in_scope(consent.scope) {
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
        // From here on a refusal that leaves the token usable says so.
        let again = |r: Refusal, token: &str| Refusal {
            consent_token: Some(token.to_owned()),
            ..r
        };
        if consent.expires() <= now {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "CONSENT.EXPIRED",
                format!(
                    "the consent expired on {} (it lived {} days): the consumer must give a new one",
                    consent.expires().format("%Y-%m-%d %H:%M UTC"),
                    consent.lifetime_days
                ),
            ));
        }
        if let Some(kind) = self.fault().roll() {
            return Err(again(fault_refusal(kind), &consent.token));
        }
        optional_object(body, "psu")?;
        optional_object(body, "keys")?;
        let attended = matches!(body.get("psu"), Some(Value::Object(_)));
        // Which account, and for the transactions which listing and position.
        let (account, listing) = match call {
            ConsentCall::Accounts => (None, None),
            ConsentCall::TransactionsNext => {
                let offset = offset_field(body)?;
                let Some((_, listing, position)) = consent
                    .cursors
                    .iter()
                    .find(|(o, _, _)| *o == offset)
                    .cloned()
                else {
                    return Err(again(
                        Refusal::bad(format!(
                            "offset {offset:?} is not one this consent handed out"
                        )),
                        &consent.token,
                    ));
                };
                (Some(listing.account), Some((listing, position)))
            }
            _ => {
                let asked = str_field(body, "account_id")?;
                let Some(i) = ids.iter().position(|id| id == asked) else {
                    return Err(again(
                        not_found("ACCOUNT_NOT_FOUND", format!("no account {asked:?}")),
                        &consent.token,
                    ));
                };
                if !consent.accounts.contains(&i) {
                    return Err(again(
                        Refusal::new(
                            StatusCode::FORBIDDEN,
                            "ACCOUNT_NOT_IN_CONSENT",
                            "that account was not selected in this session's flow",
                        ),
                        &consent.token,
                    ));
                }
                let listing = if call == ConsentCall::Transactions {
                    let from = date_field(body, "from_date")?
                        .ok_or_else(|| Refusal::bad("missing field from_date"))?;
                    let to = date_field(body, "to_date")?
                        .ok_or_else(|| Refusal::bad("missing field to_date"))?;
                    if from > to {
                        return Err(again(
                            Refusal::new(
                                StatusCode::BAD_REQUEST,
                                "NOT_SUPPORTED.TRANSACTIONS_DATE_RANGE",
                                format!("from_date {from} is after to_date {to}"),
                            ),
                            &consent.token,
                        ));
                    }
                    Some((
                        Listing {
                            account: i,
                            from,
                            to: to.min(today),
                            size: page_size(body)?,
                        },
                        0,
                    ))
                } else {
                    None
                };
                (Some(i), listing)
            }
        };
        // The PSD2 limit: unattended first calls only (later pages are free).
        if !attended && call != ConsentCall::TransactionsNext {
            let key = (today, account.unwrap_or(usize::MAX), call.scope_name());
            let used = inner.usage.get(&key).copied().unwrap_or(0);
            if used >= DAILY_LIMIT {
                inner.limited += 1;
                let consent = inner.consent(consent_id)?;
                return Err(again(
                    Refusal::new(
                        StatusCode::BAD_REQUEST,
                        "CONSENT.LIMIT_EXCEEDED",
                        format!(
                            "{DAILY_LIMIT} unattended {} calls a day for this account are used up today",
                            call.scope_name()
                        ),
                    ),
                    &consent.token,
                ));
            }
            *inner.usage.entry(key).or_insert(0) += 1;
        }
        let consent = inner.consent(consent_id)?;
        let next = random_hex(32);
        let old = std::mem::replace(&mut consent.token, next.clone());
        if consent.used.len() >= MAX_USED_TOKENS {
            consent.used.remove(0);
        }
        consent.used.push(old);
        let all = self.accounts();
        let details = |i: usize| all.get(i).map(account_json).unwrap_or(Value::Null);
        let result = match call {
            ConsentCall::Accounts => json!({
                "accounts": consent.accounts.iter().map(|i| details(*i)).collect::<Vec<_>>(),
            }),
            ConsentCall::AccountDetails => json!({"account": details(account.unwrap_or_default())}),
            ConsentCall::Balances => {
                let i = account.unwrap_or_default();
                let book = &self.books()[i];
                let reserved: i64 = book.pending(today).map(|r| -r.minor.min(0)).sum();
                let eur = |amount: i64| json!({"amount": amount, "currency": book.currency});
                json!({
                    "account": {"id": ids.get(i), "iban": book.iban.to_string()},
                    "balance": eur(book.balance_at(today)),
                    "available": eur(super::available(book, today)),
                    "limit": eur(OVERDRAFT),
                    "reserved": eur(reserved),
                })
            }
            ConsentCall::Transactions | ConsentCall::TransactionsNext => {
                let (listing, position) = listing.unwrap_or((
                    Listing {
                        account: 0,
                        from: today,
                        to: today,
                        size: PAGE_SIZE,
                    },
                    0,
                ));
                let (transactions, next_position) = self.page(&listing, position);
                let mut result = json!({
                    "transactions": transactions,
                    "from_date": listing.from.to_string(),
                    "to_date": listing.to.to_string(),
                });
                if let Some(p) = next_position {
                    let offset = random_hex(12);
                    if consent.cursors.len() >= MAX_CURSORS {
                        consent.cursors.remove(0);
                    }
                    consent.cursors.push((offset.clone(), listing, p));
                    result["pagination"] = json!({
                        "url": api_url(root, &format!("/xs2a/v1/consents/{consent_id}/transactions/list")),
                        "next": {"offset": offset},
                    });
                }
                result
            }
        };
        Ok(json!({"result": result, "consent_token": next}))
    }

    /// The book index of an account id.
    fn account_index(&self, id: &str) -> Option<usize> {
        self.account_ids().iter().position(|a| a == id)
    }

    /// One page of a listing from `position`, newest first, and where the
    /// next starts. Booked rows are in the range by their booking day,
    /// pending card payments by the day they were paid.
    fn page(&self, listing: &Listing, position: usize) -> (Vec<Value>, Option<usize>) {
        let today = self.today();
        let Some(book) = self.books().get(listing.account) else {
            return (Vec::new(), None);
        };
        let in_range = |d: NaiveDate| listing.from <= d && d <= listing.to;
        let mut rows: Vec<(&Row, bool)> = book
            .booked(today)
            .iter()
            .filter(|r| in_range(r.booking))
            .map(|r| (r, false))
            .chain(
                book.pending(today)
                    .filter(|r| in_range(r.value))
                    .map(|r| (r, true)),
            )
            .collect();
        // By the `date` they show (the day the money moved), newest first.
        rows.sort_by_key(|(r, _)| std::cmp::Reverse((r.value, r.seq)));
        let end = (position + listing.size).min(rows.len());
        let page = rows
            .get(position..end)
            .unwrap_or_default()
            .iter()
            .map(|(r, pending)| transaction_json(book, r, *pending))
            .collect();
        (page, (end < rows.len()).then_some(end))
    }
}

/// An account as consent and flow answers show it.
fn account_json(a: &super::Account) -> Value {
    json!({
        "id": a.id,
        "alias": a.alias,
        "iban": a.iban,
        "bic": "TESTDE88XXX",
        "account_number": a.account_number,
        "bank_code": BLZ,
        "national_branch_code": null,
        "holder_name": "Max Mustermann",
        "account_type": "DEFAULT",
        "transfer_type": "FULL",
        "balance": {"amount": a.balance, "currency": "EUR"},
        "capabilities": {
            "account_details": {"available": true},
            "balances": {"available": true},
            "transactions": {"available": true},
            "transfer": {"available": false},
        },
    })
}

/// One row as Klarna shows a transaction: an unsigned amount in minor
/// units, the direction in `type`. The id stays from pending to booked.
fn transaction_json(book: &Book, r: &Row, pending: bool) -> Value {
    use sha2::Digest;
    let id = hex::encode(&sha2::Sha256::digest(format!("{}:{}", book.iban, r.seq))[..16]);
    let method = match r.kind {
        Kind::Card => "CARD",
        Kind::Atm => "CASH",
        Kind::DirectDebit => "DIRECT_DEBIT",
        Kind::Fee => "FEE",
        Kind::TransferIn | Kind::TransferOut | Kind::Salary => "TRANSFER",
    };
    let mut party = json!({"holder_name": r.party});
    if let Some(iban) = &r.party_iban {
        party["iban"] = json!(iban);
    }
    let mut t = json!({
        "transaction_id": id,
        "reference": r.remittance,
        "bank_references": {"unstructured": r.remittance},
        "counter_party": party,
        "date": r.value.to_string(),
        "value_date": r.value.to_string(),
        "state": if pending { "PENDING" } else { "PROCESSED" },
        "type": if r.minor < 0 { "DEBIT" } else { "CREDIT" },
        "method": method,
        "amount": {"amount": r.minor.abs(), "currency": book.currency},
    });
    if !pending {
        t["booking_date"] = json!(r.booking.to_string());
    }
    t
}

/// A random fault, before the call spends the token.
fn fault_refusal(kind: FaultKind) -> Refusal {
    match kind {
        FaultKind::RateLimited => Refusal {
            retry_after: Some(1),
            ..Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TECHNICAL.RATE_LIMIT",
                "too many requests (fault injected by the sandbox)",
            )
        },
        _ => Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "BANK.UNAVAILABLE",
            "the bank is not reachable right now (fault injected by the sandbox)",
        ),
    }
}

fn date_field(body: &Map<String, Value>, key: &str) -> Result<Option<NaiveDate>, Refusal> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map(Some)
            .map_err(|_| Refusal::bad(format!("{key} must be a date YYYY-MM-DD, got {s:?}"))),
        Some(_) => Err(Refusal::bad(format!("{key} must be a date YYYY-MM-DD"))),
    }
}

fn page_size(body: &Map<String, Value>) -> Result<usize, Refusal> {
    match body.get("preferred_pagination_size") {
        None | Some(Value::Null) => Ok(PAGE_SIZE),
        Some(v) => v
            .as_u64()
            .filter(|n| *n >= 1)
            .map(|n| (n as usize).min(MAX_PAGE_SIZE))
            .ok_or_else(|| Refusal::bad("preferred_pagination_size must be a positive number")),
    }
}

/// `offset` as a string (a number is taken too).
fn offset_field(body: &Map<String, Value>) -> Result<String, Refusal> {
    match body.get("offset") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(Refusal::bad(
            "missing field offset (from the last page's pagination.next.offset)",
        )),
    }
}

/// What request 1's body sets up.
struct ParsedSession {
    scope: Scope,
    return_url: Option<String>,
    lifetime_days: u32,
}

/// Request 1's body: `consent_scope` says which consent URLs the run gets
/// and how many days the consent lives.
fn parse_session_body(body: &Map<String, Value>) -> Result<ParsedSession, Refusal> {
    let Some(Value::Object(scope)) = body.get("consent_scope") else {
        return Err(Refusal::bad(
            "consent_scope must be an object (e.g. {\"account_details\": {}, \"balances\": {}})",
        ));
    };
    for field in ["psu", "_selected_bank", "selected_bank", "keys"] {
        optional_object(body, field)?;
    }
    for field in [
        "language",
        "_aspsp_access",
        "aspsp_access",
        "_redirect_return_url",
        "redirect_return_url",
    ] {
        if body.get(field).is_some_and(|v| !v.is_string()) {
            return Err(Refusal::bad(format!("{field} must be a string")));
        }
    }
    let return_url = ["redirect_return_url", "_redirect_return_url"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_str))
        .map(str::to_owned);
    if let Some(u) = &return_url {
        match url::Url::parse(u) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            _ => {
                return Err(Refusal::bad(
                    "redirect_return_url must be an http(s) address",
                ));
            }
        }
    }
    let lifetime_days = match scope.get("lifetime") {
        None | Some(Value::Null) => LIFETIME_DAYS,
        Some(v) => v
            .as_u64()
            .filter(|d| (1..=u64::from(LIFETIME_DAYS)).contains(d))
            .map(|d| d as u32)
            .ok_or_else(|| {
                Refusal::bad(format!(
                    "consent_scope.lifetime must be days from 1 to {LIFETIME_DAYS}"
                ))
            })?,
    };
    let scope = Scope {
        accounts: scope.contains_key("accounts"),
        account_details: scope.contains_key("account_details"),
        balances: scope.contains_key("balances"),
        transactions: scope.contains_key("transactions"),
    };
    if !(scope.accounts || scope.account_details || scope.balances || scope.transactions) {
        return Err(Refusal::bad(
            "consent_scope asks for nothing the playground serves (accounts, account_details, balances, transactions)",
        ));
    }
    Ok(ParsedSession {
        scope,
        return_url,
        lifetime_days,
    })
}
