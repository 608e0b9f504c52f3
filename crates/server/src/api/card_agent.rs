//! The card agents' routes: a card agent on a card host (the machine with
//! the readers) long-polls for its readers' jobs and answers them; admins
//! list the hosts. The logic lives in [`crate::card_hosts`]; the card
//! service decides what to send.
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Extension, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bankbridge_cap::ReaderInfo;
use bankbridge_cap::remote::{JobOutcome, check_public_key};
use bankbridge_store::Scope;
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::{ApiJson, guarded, json};
use crate::card_hosts::HostView;
use crate::error::{ApiError, ErrorBody};
use crate::{AppState, Principal};

pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/card-agent/jobs",
            // Jobs carry PINs (sealed to the host): card-agent (or admin) tokens only.
            guarded(state, Scope::CardAgent, post(poll)),
        )
        .route(
            "/api/v1/card-agent/results",
            guarded(state, Scope::CardAgent, post(answer)),
        )
        .route(
            "/api/v1/card-hosts",
            guarded(state, Scope::Admin, get(list_hosts)),
        )
}

#[derive(OpenApi)]
#[openapi(
    paths(poll, answer, list_hosts),
    components(schemas(
        CardAgentPoll,
        CardAgentReader,
        CardAgentJobList,
        CardAgentJob,
        CardAgentAnswer,
        CardAgentOutcome,
        CardAgentIdentity,
        CardAgentCode,
        CardAgentError,
        HostView,
        crate::card_hosts::HostReader,
        CardHostList
    )),
    tags(
        (name = "card agents", description = "Card hosts: readers on other machines, each served by `bankbridge card agent`. Tokens of scope `card-agent` (bound to one host; they may do nothing else) or `admin`."),
    )
)]
pub(crate) struct Doc;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct PollParams {
    /// The card host's name; default: the card-agent token's own (an admin
    /// token must name one).
    #[param(min_length = 1, max_length = 100, pattern = r"\S")]
    host: Option<String>,
    /// Long-poll: wait up to this many milliseconds for a job (0 to 30 000,
    /// default 0).
    #[param(minimum = 0, maximum = 30000, default = 0)]
    wait_ms: Option<u64>,
}

/// Longest long-poll of a card agent.
const MAX_WAIT_MS: u64 = 30_000;
const MAX_READERS: usize = 64;

/// What a card agent tells with every poll.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CardAgentPoll {
    /// The host's X25519 public key (32 bytes, base64): each job's PIN is
    /// sealed to it.
    #[schema(pattern = "^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$")]
    public_key: String,
    /// The readers the host sees now (at most 64).
    #[schema(max_items = 64)]
    readers: Vec<CardAgentReader>,
}

/// A reader of the host.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CardAgentReader {
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    name: String,
    card_present: bool,
    /// The card's answer-to-reset, hex.
    #[schema(max_length = 100)]
    atr: Option<String>,
}

/// The jobs handed out (empty when none came within `wait_ms`).
#[derive(ToSchema)]
#[allow(dead_code)] // the schema of what `poll` writes
pub(crate) struct CardAgentJobList {
    data: Vec<CardAgentJob>,
}

/// One job for a reader of the host.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct CardAgentJob {
    id: String,
    /// The reader's exact name, as the host reported it.
    reader: String,
    /// `identify` (read the card's identity, no PIN) or `compute` (a code).
    #[schema(pattern = "^(identify|compute)$")]
    kind: String,
    /// `compute`: `{"mode": "login", "challenge": …}` or `{"mode": "sign", "numbers": […]}`.
    #[schema(value_type = Option<Object>)]
    request: Option<()>,
    /// `compute`: the PIN, sealed to the host's public key (base64).
    pin_sealed: Option<String>,
    /// `compute`: the card the reader must hold (`pan_last4`, `psn`, `records_digest`).
    #[schema(value_type = Option<Object>)]
    expected: Option<()>,
    /// `compute`: refuse VERIFY below this many PIN tries.
    min_pin_tries: Option<u8>,
}

/// A card agent's answer to a job it took.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CardAgentAnswer {
    #[schema(min_length = 1, max_length = 64)]
    job_id: String,
    /// The host the job was taken for; default: the host that took it.
    #[schema(min_length = 1, max_length = 100)]
    host: Option<String>,
    /// What the job produced, or why it failed.
    #[schema(value_type = CardAgentOutcome)]
    outcome: JobOutcome,
}

// The schema of `bankbridge_cap::remote::JobOutcome` as it travels (the
// cap crate knows nothing of OpenAPI): what the answer route reads.

/// A job's outcome.
#[derive(ToSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
#[allow(dead_code)]
pub(crate) enum CardAgentOutcome {
    /// An `identify` job: who the card is.
    Identified { card: CardAgentIdentity },
    /// A `compute` job: the code.
    Computed { response: CardAgentCode },
    /// Why the job failed.
    Failed { error: CardAgentError },
}

/// Who a card is, read from it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct CardAgentIdentity {
    aid: String,
    application: String,
    #[schema(pattern = "^(dpa|cap|bancontact|visa|mastercard|maestro)$")]
    mode: String,
    pan_last4: Option<String>,
    psn: Option<String>,
    records_digest: String,
    #[schema(maximum = 255)]
    pin_tries_left: Option<u8>,
}

/// A computed code.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct CardAgentCode {
    response: String,
    response_padded: String,
    #[schema(maximum = 65535)]
    atc: u16,
    card: CardAgentIdentity,
}

/// A failure, by kind: the PIN rules act on `wrong_pin`, `pin_refused`,
/// `verify_blocked` and `pin_outcome_unknown` (the card is taken out of
/// use) and on `blocked`.
#[derive(ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[allow(dead_code)]
pub(crate) enum CardAgentError {
    WrongPin {
        #[schema(maximum = 255)]
        tries_left: Option<u8>,
    },
    PinRefused {
        #[schema(maximum = 65535)]
        sw: u16,
    },
    VerifyBlocked {
        #[schema(maximum = 65535)]
        sw: u16,
    },
    PinOutcomeUnknown {
        cause: String,
    },
    Blocked,
    TooFewTries {
        #[schema(maximum = 255)]
        left: u8,
        #[schema(maximum = 255)]
        min: u8,
    },
    WrongCard {
        found: String,
    },
    TryCounterUnavailable,
    NoCard,
    CardRemoved,
    ReaderBusy,
    ReaderMissing {
        message: String,
    },
    ReaderError {
        message: String,
    },
    BadInput {
        message: String,
    },
    Seal {
        message: String,
    },
    Other {
        message: String,
    },
}

/// The card hosts seen since the server started.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct CardHostList {
    data: Vec<HostView>,
}

/// Take the jobs waiting for this card host's readers (long-polled), and
/// tell the host's readers and key. Each job is handed out once; while a
/// poll is open (or for a few seconds after one) the host is online. Needs
/// scope `card-agent` (or `admin`).
#[utoipa::path(
    post,
    path = "/api/v1/card-agent/jobs",
    tag = "card agents",
    params(PollParams),
    request_body = CardAgentPoll,
    responses(
        (status = 200, description = "The jobs taken (empty when none came within `wait_ms`)", body = CardAgentJobList),
        (status = 400, description = "A bad parameter or body", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
    )
)]
pub(crate) async fn poll(
    State(state): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
    Query(params): Query<PollParams>,
    ApiJson(body): ApiJson<CardAgentPoll>,
) -> Result<Response, ApiError> {
    let host = host_of(&who, params.host)?;
    let wait_ms = params.wait_ms.unwrap_or(0);
    if wait_ms > MAX_WAIT_MS {
        return Err(ApiError::invalid_parameter(
            "wait_ms",
            format!("wait_ms must be 0 to {MAX_WAIT_MS}"),
        ));
    }
    if check_public_key(&body.public_key).is_err() {
        return Err(ApiError::bad_request(
            "public_key must be the host's 32-byte X25519 public key in base64",
        ));
    }
    if body.readers.len() > MAX_READERS
        || body.readers.iter().any(|r| {
            r.name.trim().is_empty()
                || r.name.chars().count() > 200
                || r.atr.as_ref().is_some_and(|a| a.chars().count() > 100)
        })
    {
        return Err(ApiError::bad_request(format!(
            "readers: at most {MAX_READERS}, each named with 1 to 200 characters"
        )));
    }
    let readers = body
        .readers
        .into_iter()
        .map(|r| ReaderInfo {
            name: r.name,
            card_present: r.card_present,
            atr: r.atr,
        })
        .collect();
    let jobs = state
        .cards
        .hosts()
        .poll(
            &host,
            body.public_key,
            readers,
            Duration::from_millis(wait_ms),
        )
        .await;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "data": jobs }),
        1024,
    ))
}

/// A card agent's answer to a job it took. Needs scope `card-agent` (or `admin`).
#[utoipa::path(
    post,
    path = "/api/v1/card-agent/results",
    tag = "card agents",
    request_body = CardAgentAnswer,
    responses(
        (status = 202, description = "Handed to the request that waits for it"),
        (status = 400, description = "A malformed body", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 409, description = "`conflict`: the job is unknown, already answered, or given up", body = ErrorBody),
    )
)]
pub(crate) async fn answer(
    State(state): State<AppState>,
    Extension(who): Extension<Arc<Principal>>,
    ApiJson(body): ApiJson<CardAgentAnswer>,
) -> Result<Response, ApiError> {
    // Without `host`, the job's own: a job id names one job of one host.
    let host = match body.host {
        Some(host) => host_of(&who, Some(host))?,
        None => match state.cards.hosts().host_of_job(&body.job_id) {
            Some(host) => {
                check_host(&who, &host)?;
                host
            }
            None => {
                return Err(ApiError::conflict(format!(
                    "job {:?} is unknown, already answered, or given up",
                    body.job_id
                )));
            }
        },
    };
    if !state
        .cards
        .hosts()
        .answer(&host, &body.job_id, body.outcome)
    {
        return Err(ApiError::conflict(format!(
            "job {:?} of card host {host:?} is unknown, already answered, or given up",
            body.job_id
        )));
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

/// The card hosts seen since the server started: online or not, their
/// readers, jobs waiting and in progress. Needs scope `admin`.
#[utoipa::path(
    get,
    path = "/api/v1/card-hosts",
    tag = "card agents",
    responses(
        (status = 200, body = CardHostList),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
    )
)]
pub(crate) async fn list_hosts(State(state): State<AppState>) -> Response {
    let hosts = state.cards.hosts().list();
    json(
        StatusCode::OK,
        &serde_json::json!({ "data": hosts }),
        256 + 256 * hosts.len(),
    )
}

/// The host a request acts for: the one it names (which the token must
/// serve), else the card-agent token's own.
fn host_of(who: &Principal, named: Option<String>) -> Result<String, ApiError> {
    let Some(host) = named else {
        return match (&who.scope, &who.location) {
            (Scope::CardAgent, Some(own)) => Ok(own.clone()),
            _ => Err(ApiError::invalid_parameter(
                "host",
                "name the card host: only a card-agent token has one of its own",
            )),
        };
    };
    if host.trim().is_empty() || host.chars().count() > 100 {
        return Err(ApiError::invalid_parameter(
            "host",
            "host must be a name of 1 to 100 characters",
        ));
    }
    check_host(who, &host)?;
    Ok(host)
}

/// A card-agent token serves the host it was created for, and no other.
fn check_host(who: &Principal, host: &str) -> Result<(), ApiError> {
    super::check_served(who, host, "card host", "card-agent --host")
}
