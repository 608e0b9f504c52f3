//! The card service's routes (the Digibot paths): institutions, the cards
//! they hold, logins (M1) and signs (M2), readers and the audit trail. The
//! logic lives in [`crate::cards`]; these handlers parse and answer.
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Router};
use bankbridge_cap::emv::{CapError, CapRequest, CapResponse};
use bankbridge_cap::transport::{ReaderInfo, TransportError};
use bankbridge_core::Secret;
use bankbridge_store::{
    Card, CardAuditEntry, CardAuditQuery, CardStatus, CardUpdate, Institution, NewInstitution,
    Scope,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::{ApiJson, List, guarded, json};
use crate::cards::{CardRegistration, CardUseError, new_id};
use crate::error::{ApiError, ErrorBody};
use crate::{AppState, Principal};

pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/financial-institutions",
            guarded(state, Scope::Read, get(list_institutions)).merge(guarded(
                state,
                Scope::Admin,
                post(create_institution),
            )),
        )
        .route(
            "/api/v1/financial-institutions/{institution}",
            guarded(state, Scope::Read, get(get_institution)).merge(guarded(
                state,
                Scope::Admin,
                axum::routing::delete(delete_institution),
            )),
        )
        .route(
            "/api/v1/financial-institutions/{institution}/cards",
            guarded(state, Scope::Read, get(list_cards)).merge(guarded(
                state,
                Scope::Admin,
                post(register_card),
            )),
        )
        .route(
            "/api/v1/financial-institutions/{institution}/cards/{card}",
            guarded(state, Scope::Read, get(get_card))
                .merge(guarded(
                    state,
                    Scope::Admin,
                    axum::routing::patch(update_card),
                ))
                .merge(guarded(
                    state,
                    Scope::Admin,
                    axum::routing::delete(delete_card),
                )),
        )
        .route(
            "/api/v1/financial-institutions/{institution}/cards/{card}/logins",
            guarded(state, Scope::Write, post(login)),
        )
        .route(
            "/api/v1/financial-institutions/{institution}/cards/{card}/signs",
            guarded(state, Scope::Write, post(sign)),
        )
        .route(
            "/api/v1/card-readers",
            guarded(state, Scope::Admin, get(list_readers)),
        )
        .route(
            "/api/v1/cards/audit",
            guarded(state, Scope::Admin, get(audit)),
        )
}

#[derive(OpenApi)]
#[openapi(
    paths(
        list_institutions,
        create_institution,
        get_institution,
        delete_institution,
        list_cards,
        register_card,
        get_card,
        update_card,
        delete_card,
        login,
        sign,
        list_readers,
        audit
    ),
    components(schemas(
        InstitutionView,
        CreateInstitution,
        CardView,
        RegisterCard,
        UpdateCard,
        LoginBody,
        SignBody,
        CodeView,
        ReaderView,
        AuditView,
        InstitutionList,
        CardList,
        ReaderList,
        AuditPageDoc
    ))
)]
pub(crate) struct Doc;

/// `{"data": [...]}` of institutions.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct InstitutionList {
    data: Vec<InstitutionView>,
}

/// `{"data": [...]}` of cards.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct CardList {
    data: Vec<CardView>,
}

/// `{"data": [...]}` of readers.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct ReaderList {
    data: Vec<ReaderView>,
}

/// A page of the card audit, newest first.
#[derive(ToSchema)]
#[schema(as = AuditPage)]
#[allow(dead_code)]
pub(crate) struct AuditPageDoc {
    data: Vec<AuditView>,
    /// Pass as `cursor` for the next page; null on the last one.
    next: Option<String>,
}

/// A financial institution whose cards this service holds.
#[derive(Serialize, ToSchema)]
pub(crate) struct InstitutionView {
    #[schema(example = "fi_1a2b3c4d")]
    id: String,
    name: String,
    /// ISO 3166 alpha-2 country code.
    country: Option<String>,
    created_at: DateTime<Utc>,
}

impl From<Institution> for InstitutionView {
    fn from(i: Institution) -> Self {
        Self {
            id: i.id,
            name: i.name,
            country: i.country,
            created_at: i.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateInstitution {
    /// 1 to 100 characters.
    #[schema(example = "KBC", min_length = 1, max_length = 100)]
    pub(crate) name: String,
    /// ISO 3166-1 alpha-2 (either case; stored in capitals).
    #[schema(example = "BE", pattern = "^[A-Za-z]{2}$")]
    pub(crate) country: Option<String>,
}

/// A card in a reader. Never its PIN.
#[derive(Serialize, ToSchema)]
pub(crate) struct CardView {
    #[schema(example = "card_5e6f7a8b")]
    id: String,
    institution_id: String,
    label: String,
    /// The account the card belongs to, as the bank names it.
    account_reference: String,
    /// The card number with all but the last four digits hidden; null for a
    /// card whose CAP application carries no card number.
    #[schema(example = "**** **** **** 6789")]
    masked_pan: Option<String>,
    /// PAN sequence number (two hex digits).
    psn: Option<String>,
    /// SHA-256 (hex) of the application's AID and static records without
    /// card-number data: checked, with the card number, before any PIN is
    /// sent. Null for cards registered before it was kept.
    records_digest: Option<String>,
    /// The EMV application used, e.g. `SecureCode Aut`.
    application: Option<String>,
    /// The card host whose reader holds the card (served by `bankbridge
    /// card agent` there); null for the server's own readers.
    host: Option<String>,
    reader: String,
    /// `active`, `disabled` (e.g. after a refused PIN) or `blocked`.
    status: String,
    status_reason: Option<String>,
    /// The card may have counted a wrong PIN: it is enabled again only
    /// together with a new `pin`.
    pin_refused: bool,
    /// VERIFY is refused when the card has fewer PIN tries left than this.
    min_pin_tries: u8,
    /// PIN tries left as the card said at its last successful use; null
    /// before one, or when the card does not tell.
    pin_tries_left: Option<u8>,
    last_used_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl From<&Card> for CardView {
    fn from(c: &Card) -> Self {
        Self {
            id: c.id.clone(),
            institution_id: c.institution_id.clone(),
            label: c.label.clone(),
            account_reference: c.account_reference.clone(),
            masked_pan: c.pan_last4.as_ref().map(|l| format!("**** **** **** {l}")),
            psn: c.psn.clone(),
            records_digest: c.records_digest.clone(),
            application: c.application.clone(),
            host: c.host.clone(),
            reader: c.reader.clone(),
            status: c.status.as_str().to_owned(),
            status_reason: c.status_reason.clone(),
            pin_refused: c.pin_refused,
            min_pin_tries: c.min_pin_tries,
            pin_tries_left: c.pin_tries_left,
            last_used_at: c.last_used_at,
            created_at: c.created_at,
        }
    }
}

/// Register the card that sits in a reader. The card number and PSN are read
/// from the card (no PIN is sent); `pin` is write-only and sealed at once.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegisterCard {
    /// The card host whose reader holds the card (see `/api/v1/card-hosts`);
    /// absent for the server's own readers.
    #[schema(min_length = 1, max_length = 100)]
    pub(crate) host: Option<String>,
    /// Reader name, index, or a unique part of its name (see `/api/v1/card-readers`).
    #[schema(example = "Virtual PCD 00 00", min_length = 1, max_length = 256)]
    pub(crate) reader: String,
    #[schema(min_length = 1, max_length = 200)]
    pub(crate) label: String,
    #[schema(min_length = 1, max_length = 200)]
    pub(crate) account_reference: String,
    /// 4 to 12 digits.
    #[schema(value_type = String, format = Password, write_only, pattern = "^[0-9]{4,12}$")]
    pub(crate) pin: Secret<String>,
    /// 1 to 15 (default 3): with fewer tries left, no PIN is sent.
    #[schema(minimum = 1, maximum = 15)]
    pub(crate) min_pin_tries: Option<u8>,
}

/// Change a card. `status: "active"` enables a disabled card again; a card
/// that may have refused its PIN (`pin_refused`) only together with a new
/// `pin`; a blocked card must be unblocked at the bank first.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateCard {
    #[schema(min_length = 1, max_length = 200)]
    pub(crate) label: Option<String>,
    #[schema(min_length = 1, max_length = 200)]
    pub(crate) account_reference: Option<String>,
    /// 4 to 12 digits.
    #[schema(value_type = Option<String>, format = Password, write_only, pattern = "^[0-9]{4,12}$")]
    pub(crate) pin: Option<Secret<String>>,
    /// 1 to 15.
    #[schema(minimum = 1, maximum = 15)]
    pub(crate) min_pin_tries: Option<u8>,
    /// `active` or `disabled`.
    #[schema(pattern = "^(active|disabled)$")]
    pub(crate) status: Option<String>,
}

/// M1: a login code, optionally over a challenge the bank shows.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginBody {
    /// 1 to 16 digits.
    #[schema(example = "123456", pattern = "^[0-9]{1,16}$")]
    challenge: Option<String>,
}

/// M2: the numbers the bank asks to type, in order.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignBody {
    /// 1 to 10 numbers of 1 to 10 digits each.
    #[schema(example = json!(["1000", "123456"]), min_items = 1, max_items = 10, inline)]
    challenges: Vec<SignNumber>,
}

/// One number to sign: 1 to 10 digits.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = String, pattern = "^[0-9]{1,10}$")]
pub(crate) struct SignNumber(String);

/// The code to give the bank.
#[derive(Serialize, ToSchema)]
pub(crate) struct CodeView {
    /// As a CAP reader shows it.
    #[schema(example = "23580039")]
    response: String,
    /// The same, zero-padded to at least 8 digits.
    response_padded: String,
    /// The card's transaction counter for this code.
    atc: u16,
}

impl From<CapResponse> for CodeView {
    fn from(r: CapResponse) -> Self {
        Self {
            response: r.response,
            response_padded: r.response_padded,
            atc: r.atc,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ReaderView {
    /// The card host the reader is on; null for the server's own.
    host: Option<String>,
    name: String,
    card_present: bool,
    atr: Option<String>,
    /// The registered card in this reader, if any.
    card_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct AuditView {
    id: i64,
    at: DateTime<Utc>,
    /// The name of the API token that asked.
    token_name: String,
    card_id: String,
    institution_id: String,
    /// `m1`, `m2` or `register`.
    mode: String,
    /// `ok`, `wrong_pin`, `blocked`, `pin_tries_low`, `wrong_card`, `busy`, `card_removed`, ...
    outcome: String,
    detail: Option<String>,
    atc: Option<u32>,
    duration_ms: u64,
}

impl From<CardAuditEntry> for AuditView {
    fn from(e: CardAuditEntry) -> Self {
        Self {
            id: e.id,
            at: e.at,
            token_name: e.token_name,
            card_id: e.card_id,
            institution_id: e.institution_id,
            mode: e.mode,
            outcome: e.outcome,
            detail: e.detail,
            atc: e.atc,
            duration_ms: e.duration_ms,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditParams {
    /// Only this card's entries.
    card: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The `next` of the previous page.
    cursor: Option<i64>,
}

#[derive(Serialize)]
struct AuditPage<'a> {
    data: &'a [AuditView],
    next: Option<String>,
}

/// Map a card service failure to the API's stable codes.
impl From<CardUseError> for ApiError {
    fn from(e: CardUseError) -> Self {
        let msg = e.to_string();
        match e {
            CardUseError::NotFound(_) => ApiError::not_found(msg),
            CardUseError::Disabled { .. } => {
                ApiError::new(StatusCode::CONFLICT, "card_disabled", msg)
            }
            CardUseError::Blocked { .. } => {
                ApiError::new(StatusCode::CONFLICT, "card_blocked", msg)
            }
            CardUseError::Busy { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "reader_busy", msg)
            }
            CardUseError::ReaderOffline(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "reader_offline", msg)
            }
            CardUseError::Invalid(_) => ApiError::bad_request(msg),
            CardUseError::Store(e) => ApiError::from(e),
            CardUseError::Internal(detail) => ApiError::internal(detail),
            CardUseError::Cap(cap) => match cap {
                CapError::WrongPin { .. } | CapError::PinRefused { .. } => {
                    ApiError::new(StatusCode::CONFLICT, "wrong_pin", msg)
                }
                CapError::PinOutcomeUnknown { .. } => {
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "pin_outcome_unknown", msg)
                }
                CapError::Blocked | CapError::VerifyBlocked { .. } => {
                    ApiError::new(StatusCode::CONFLICT, "card_blocked", msg)
                }
                CapError::TooFewTries { .. } => {
                    ApiError::new(StatusCode::CONFLICT, "pin_tries_low", msg)
                }
                CapError::WrongCard { .. } => {
                    ApiError::new(StatusCode::CONFLICT, "wrong_card", msg)
                }
                CapError::BadInput(_) | CapError::BadPin => ApiError::bad_request(msg),
                CapError::Transport(t) => match t {
                    TransportError::CardRemoved { .. } => {
                        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "card_removed", msg)
                    }
                    TransportError::NoCard { .. } => {
                        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_card", msg)
                    }
                    TransportError::Busy { .. } => {
                        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "reader_busy", msg)
                    }
                    TransportError::ReaderNotFound { .. }
                    | TransportError::AmbiguousReader { .. }
                    | TransportError::NoReaders => {
                        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "reader_unavailable", msg)
                    }
                    TransportError::Service(_) | TransportError::Reader(_) => {
                        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "reader_unavailable", msg)
                    }
                },
                _ => ApiError::new(StatusCode::BAD_GATEWAY, "card_error", msg),
            },
        }
    }
}

async fn institution(state: &AppState, id: &str) -> Result<Institution, ApiError> {
    state
        .store
        .cards
        .get_institution(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no financial institution {id}")))
}

pub(crate) async fn card_of(
    state: &AppState,
    institution: &str,
    card: &str,
) -> Result<Card, ApiError> {
    state
        .store
        .cards
        .get_card(card)
        .await?
        .filter(|c| c.institution_id == institution)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no card {card} in financial institution {institution}"
            ))
        })
}

/// Every financial institution.
#[utoipa::path(get, path = "/api/v1/financial-institutions", tag = "cards",
    responses((status = 200, body = InstitutionList), (status = 401, body = ErrorBody)))]
pub(crate) async fn list_institutions(State(state): State<AppState>) -> Result<Response, ApiError> {
    let views: Vec<InstitutionView> = state
        .store
        .cards
        .list_institutions()
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(json(
        StatusCode::OK,
        &List { data: &views },
        views.len() * 120,
    ))
}

/// Add a financial institution. Needs scope `admin`.
#[utoipa::path(post, path = "/api/v1/financial-institutions", tag = "cards", request_body = CreateInstitution,
    responses((status = 201, body = InstitutionView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn create_institution(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateInstitution>,
) -> Result<Response, ApiError> {
    let created = new_institution(&state, &body).await?;
    let mut res = json(
        StatusCode::CREATED,
        &InstitutionView::from(created.clone()),
        200,
    );
    if let Ok(loc) =
        HeaderValue::from_str(&format!("/api/v1/financial-institutions/{}", created.id))
    {
        res.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(res)
}

/// Create an institution (the API's `POST`, the cards page's form).
pub(crate) async fn new_institution(
    state: &AppState,
    body: &CreateInstitution,
) -> Result<Institution, ApiError> {
    if body.name.is_empty() || body.name.chars().count() > 100 {
        return Err(ApiError::invalid_parameter(
            "name",
            "name must be 1 to 100 characters",
        ));
    }
    // Blank after trimming: the store refuses it (409).
    let name = body.name.trim();
    let country = match body.country.as_deref() {
        None => None,
        Some(c) if c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()) => {
            Some(c.to_ascii_uppercase())
        }
        Some(_) => {
            return Err(ApiError::invalid_parameter(
                "country",
                "country must be an ISO 3166 alpha-2 code such as BE",
            ));
        }
    };
    let created = state
        .store
        .cards
        .create_institution(&NewInstitution {
            id: new_id("fi"),
            name: name.to_owned(),
            country,
        })
        .await?;
    Ok(created)
}

/// One financial institution.
#[utoipa::path(get, path = "/api/v1/financial-institutions/{institution}", tag = "cards",
    params(("institution" = String, Path)),
    responses((status = 200, body = InstitutionView), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_institution(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(json(
        StatusCode::OK,
        &InstitutionView::from(institution(&state, &id).await?),
        200,
    ))
}

/// Delete a financial institution that holds no card. Needs scope `admin`.
#[utoipa::path(delete, path = "/api/v1/financial-institutions/{institution}", tag = "cards",
    params(("institution" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub(crate) async fn delete_institution(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !state.store.cards.delete_institution(&id).await? {
        return Err(ApiError::not_found(format!(
            "no financial institution {id}"
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The cards of a financial institution (account reference, masked card
/// number, label, reader, status; never the PIN).
#[utoipa::path(get, path = "/api/v1/financial-institutions/{institution}/cards", tag = "cards",
    params(("institution" = String, Path)),
    responses((status = 200, body = CardList), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_cards(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    institution(&state, &id).await?;
    let cards = state.store.cards.list_cards(Some(&id)).await?;
    let views: Vec<CardView> = cards.iter().map(CardView::from).collect();
    Ok(json(
        StatusCode::OK,
        &List { data: &views },
        views.len() * 400,
    ))
}

/// Register the card in a reader. Needs scope `admin`.
#[utoipa::path(post, path = "/api/v1/financial-institutions/{institution}/cards", tag = "cards",
    params(("institution" = String, Path)), request_body = RegisterCard,
    responses((status = 201, body = CardView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "`conflict`: the reader holds a registered card; `reader_not_found`: no reader (or several) matches `reader`; `no_card`: the reader is empty", body = ErrorBody),
        (status = 503, description = "`reader_busy`, `reader_unavailable` (the card service cannot reach its readers), `reader_offline` (the card host's agent is not polling)", body = ErrorBody)))]
pub(crate) async fn register_card(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Extension(who): Extension<Arc<Principal>>,
    ApiJson(body): ApiJson<RegisterCard>,
) -> Result<Response, ApiError> {
    let card = register(&state, &id, body, &who.token_name).await?;
    let mut res = json(StatusCode::CREATED, &CardView::from(&card), 400);
    if let Ok(loc) = HeaderValue::from_str(&format!(
        "/api/v1/financial-institutions/{id}/cards/{}",
        card.id
    )) {
        res.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(res)
}

/// Register the card in `body.reader` under institution `id` for `who`.
pub(crate) async fn register(
    state: &AppState,
    id: &str,
    body: RegisterCard,
    who: &str,
) -> Result<Card, ApiError> {
    let institution = institution(state, id).await?;
    if body.reader.is_empty() || body.reader.chars().count() > 256 {
        return Err(ApiError::invalid_parameter(
            "reader",
            "reader must be 1 to 256 characters: a name, an index or a unique part of a name",
        ));
    }
    check_texts([
        ("label", Some(&body.label)),
        ("account_reference", Some(&body.account_reference)),
    ])?;
    if body
        .host
        .as_ref()
        .is_some_and(|h| h.trim().is_empty() || h.chars().count() > 100)
    {
        return Err(ApiError::invalid_parameter(
            "host",
            "host must be a card host's name of 1 to 100 characters",
        ));
    }
    let card = state
        .cards
        .register(
            &institution,
            CardRegistration {
                host: body.host,
                reader: body.reader,
                label: body.label,
                account_reference: body.account_reference,
                pin: body.pin,
                min_pin_tries: body.min_pin_tries,
            },
            who,
        )
        .await
        .map_err(registration_error)?;
    tracing::info!(card = %card.id, reader = %card.reader, "card registered");
    Ok(card)
}

/// One card.
#[utoipa::path(get, path = "/api/v1/financial-institutions/{institution}/cards/{card}", tag = "cards",
    params(("institution" = String, Path), ("card" = String, Path)),
    responses((status = 200, body = CardView), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_card(
    State(state): State<AppState>,
    Path((institution, card)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    Ok(json(
        StatusCode::OK,
        &CardView::from(&card_of(&state, &institution, &card).await?),
        400,
    ))
}

/// Change a card's label, account reference, PIN, minimum tries or status. Needs scope `admin`.
#[utoipa::path(patch, path = "/api/v1/financial-institutions/{institution}/cards/{card}", tag = "cards",
    params(("institution" = String, Path), ("card" = String, Path)), request_body = UpdateCard,
    responses((status = 200, body = CardView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "A blocked card cannot be enabled; a card that may have refused its PIN needs a new `pin` to be enabled", body = ErrorBody)))]
pub(crate) async fn update_card(
    State(state): State<AppState>,
    Path((institution, card_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<UpdateCard>,
) -> Result<Response, ApiError> {
    let updated = change_card(&state, &institution, &card_id, body).await?;
    Ok(json(StatusCode::OK, &CardView::from(&updated), 400))
}

/// Change card `card_id` of `institution` as `body` says.
pub(crate) async fn change_card(
    state: &AppState,
    institution: &str,
    card_id: &str,
    body: UpdateCard,
) -> Result<Card, ApiError> {
    let card = card_of(state, institution, card_id).await?;
    let status = match body.status.as_deref() {
        None => None,
        Some("active") if card.status == CardStatus::Blocked => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "card_blocked",
                "the card's PIN is blocked on the card itself; unblock it at the bank, then register it again",
            ));
        }
        Some("active") if card.pin_refused && body.pin.is_none() => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "new_pin_required",
                "the card may have refused its stored PIN, so that PIN is never sent again; \
                 give the right PIN (\"pin\") together with \"status\": \"active\"",
            ));
        }
        Some("active") => Some((CardStatus::Active, None)),
        Some("disabled") => Some((
            CardStatus::Disabled,
            Some("disabled by an administrator".to_owned()),
        )),
        Some(_) => {
            return Err(ApiError::invalid_parameter(
                "status",
                "status must be active or disabled",
            ));
        }
    };
    let pin_sealed = match &body.pin {
        None => None,
        Some(pin) => {
            if !bankbridge_cap::emv::is_valid_pin(pin.expose()) {
                return Err(ApiError::invalid_parameter(
                    "pin",
                    "the PIN must be 4 to 12 digits",
                ));
            }
            Some(
                state
                    .syncer
                    .key
                    .seal_str(pin, &crate::cards::pin_purpose(&card.id)),
            )
        }
    };
    if body.min_pin_tries.is_some_and(|n| !(1..=15).contains(&n)) {
        return Err(ApiError::invalid_parameter(
            "min_pin_tries",
            "min_pin_tries must be between 1 and 15",
        ));
    }
    check_texts([
        ("label", body.label.as_ref()),
        ("account_reference", body.account_reference.as_ref()),
    ])?;
    let update = CardUpdate {
        label: body.label,
        account_reference: body.account_reference,
        pin_sealed,
        min_pin_tries: body.min_pin_tries,
        status,
    };
    let updated = state
        .store
        .cards
        .update_card(&card.id, &update, Utc::now())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no card {card_id}")))?;
    tracing::info!(card = %updated.id, status = updated.status.as_str(), "card updated");
    Ok(updated)
}

/// A registration names its reader: one that is not there (or an empty
/// one) is the request's matter (409), not the server failing (503).
fn registration_error(e: CardUseError) -> ApiError {
    let msg = e.to_string();
    match &e {
        CardUseError::Cap(CapError::Transport(
            TransportError::ReaderNotFound { .. } | TransportError::AmbiguousReader { .. },
        )) => ApiError::new(StatusCode::CONFLICT, "reader_not_found", msg),
        CardUseError::Cap(CapError::Transport(TransportError::NoCard { .. })) => {
            ApiError::new(StatusCode::CONFLICT, "no_card", msg)
        }
        _ => ApiError::from(e),
    }
}

/// Labels and account references: 1 to 200 characters, kept as given.
fn check_texts(fields: [(&str, Option<&String>); 2]) -> Result<(), ApiError> {
    for (field, value) in fields {
        if let Some(v) = value
            && (v.is_empty() || v.chars().count() > 200)
        {
            return Err(ApiError::invalid_parameter(
                field.to_owned(),
                format!("{field} must be 1 to 200 characters"),
            ));
        }
    }
    Ok(())
}

/// Forget a card (its audit trail stays). Needs scope `admin`.
#[utoipa::path(delete, path = "/api/v1/financial-institutions/{institution}/cards/{card}", tag = "cards",
    params(("institution" = String, Path), ("card" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub(crate) async fn delete_card(
    State(state): State<AppState>,
    Path((institution, card)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    card_of(&state, &institution, &card).await?;
    state.store.cards.delete_card(&card).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// M1: a login code from the card (with the bank's challenge, if it shows
/// one). Needs scope `write`.
#[utoipa::path(post, path = "/api/v1/financial-institutions/{institution}/cards/{card}/logins", tag = "cards",
    params(("institution" = String, Path), ("card" = String, Path)), request_body = LoginBody,
    responses((status = 200, body = CodeView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "`card_disabled`, `card_blocked`, `wrong_pin`, `pin_tries_low`, `wrong_card`", body = ErrorBody),
        (status = 503, description = "`reader_busy`, `no_card`, `card_removed`, `reader_unavailable`, `pin_outcome_unknown` (the PIN went out and the answer was lost: the card is disabled until a new PIN is set)", body = ErrorBody)))]
pub(crate) async fn login(
    State(state): State<AppState>,
    Path((institution, card)): Path<(String, String)>,
    Extension(who): Extension<Arc<Principal>>,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response, ApiError> {
    let request = CapRequest::Login {
        challenge: body.challenge,
    };
    let code = state
        .cards
        .compute(&institution, &card, request, &who.token_name)
        .await?;
    Ok(json(StatusCode::OK, &CodeView::from(code), 100))
}

/// M2: a sign code over the numbers the bank asks for. Needs scope `write`.
#[utoipa::path(post, path = "/api/v1/financial-institutions/{institution}/cards/{card}/signs", tag = "cards",
    params(("institution" = String, Path), ("card" = String, Path)), request_body = SignBody,
    responses((status = 200, body = CodeView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(crate) async fn sign(
    State(state): State<AppState>,
    Path((institution, card)): Path<(String, String)>,
    Extension(who): Extension<Arc<Principal>>,
    ApiJson(body): ApiJson<SignBody>,
) -> Result<Response, ApiError> {
    let request = CapRequest::Sign {
        numbers: body.challenges.into_iter().map(|n| n.0).collect(),
    };
    let code = state
        .cards
        .compute(&institution, &card, request, &who.token_name)
        .await?;
    Ok(json(StatusCode::OK, &CodeView::from(code), 100))
}

/// The card readers this server sees, then those of the card hosts online.
/// Needs scope `admin`.
#[utoipa::path(get, path = "/api/v1/card-readers", tag = "cards",
    responses((status = 200, body = ReaderList), (status = 503, body = ErrorBody)))]
pub(crate) async fn list_readers(State(state): State<AppState>) -> Result<Response, ApiError> {
    let mut readers: Vec<(Option<String>, ReaderInfo)> = state
        .cards
        .list_readers()
        .await?
        .into_iter()
        .map(|r| (None, r))
        .collect();
    for host in state.cards.hosts().list().into_iter().filter(|h| h.online) {
        if let Ok((list, _)) = state.cards.hosts().online_host(&host.name) {
            readers.extend(list.into_iter().map(|r| (Some(host.name.clone()), r)));
        }
    }
    let mut views = Vec::with_capacity(readers.len());
    for (host, r) in readers {
        let card_id = state
            .store
            .cards
            .find_card_by_reader(host.as_deref(), &r.name)
            .await?
            .map(|c| c.id);
        views.push(ReaderView {
            host,
            name: r.name,
            card_present: r.card_present,
            atr: r.atr,
            card_id,
        });
    }
    Ok(json(
        StatusCode::OK,
        &List { data: &views },
        views.len() * 150,
    ))
}

/// Every use of every card, newest first. Needs scope `admin`.
#[utoipa::path(get, path = "/api/v1/cards/audit", tag = "cards", params(AuditParams),
    responses((status = 200, body = AuditPageDoc), (status = 400, body = ErrorBody)))]
pub(crate) async fn audit(
    State(state): State<AppState>,
    Query(params): Query<AuditParams>,
) -> Result<Response, ApiError> {
    let limit = params.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid_parameter(
            "limit",
            "limit must be 1 to 1000",
        ));
    }
    let entries = state
        .store
        .cards
        .list_card_audit(&CardAuditQuery {
            card_id: params.card,
            limit: limit + 1,
            before_id: params.cursor,
        })
        .await?;
    let more = entries.len() > limit as usize;
    let views: Vec<AuditView> = entries
        .into_iter()
        .take(limit as usize)
        .map(Into::into)
        .collect();
    let next = if more {
        views.last().map(|v| v.id.to_string())
    } else {
        None
    };
    Ok(json(
        StatusCode::OK,
        &AuditPage { data: &views, next },
        views.len() * 250,
    ))
}
