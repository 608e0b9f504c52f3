//! `/cards` (admin): the card team's page. Institutions and their cards
//! with reader, status, PIN tries left and last use; register a card in a
//! reader, edit it, disable it, enable it again with a new PIN, try a
//! login code; the audit log of every use. The API's card services do the
//! work, so the page and `/api/v1/financial-institutions` agree.
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use bankbridge_cap::CapRequest;
use bankbridge_core::Secret;
use bankbridge_store::{Card, CardAuditQuery, CardStatus, Scope};
use maud::{Markup, html};
use serde::Deserialize;

use super::form::{PageError, PageResult, Posted};
use super::layout::{self, instant};
use super::session::Viewer;
use crate::AppState;
use crate::api::cards::{
    CreateInstitution, RegisterCard, UpdateCard, change_card, new_institution, register,
};

/// Audit entries per page.
const AUDIT_PAGE: u32 = 50;

fn status(c: &Card) -> Markup {
    html! {
        span class={"status-" (c.status.as_str())} { (c.status.as_str()) }
        @if c.pin_refused { " · needs a new PIN" }
        @if let Some(r) = &c.status_reason { br; span.hint { (r) } }
    }
}

pub(crate) async fn page(State(state): State<AppState>, viewer: Viewer) -> PageResult {
    viewer.require(Scope::Admin)?;
    render(&state, &viewer, None, StatusCode::OK).await
}

async fn render(
    state: &AppState,
    viewer: &Viewer,
    problem: Option<&str>,
    code: StatusCode,
) -> PageResult {
    let institutions = state.store.cards.list_institutions().await?;
    let cards = state.store.cards.list_cards(None).await?;
    // The readers this server sees; a reader service that is down is said, not fatal.
    let readers = state.cards.list_readers().await;
    // And those of the card hosts online (a card agent on another machine).
    let host_readers: Vec<(String, bankbridge_cap::ReaderInfo)> = state
        .cards
        .hosts()
        .list()
        .into_iter()
        .filter(|h| h.online)
        .filter_map(|h| {
            state
                .cards
                .hosts()
                .online_host(&h.name)
                .ok()
                .map(|(l, _)| (h.name, l))
        })
        .flat_map(|(host, list)| list.into_iter().map(move |r| (host.clone(), r)))
        .collect();
    let body = html! {
        @if let Some(p) = problem { p.error role="alert" { (p) } }
        p { a href="/cards/audit" { "The audit log of every card use" } }
        @if institutions.is_empty() {
            p.empty { "No institutions yet. Add the bank your cards belong to below, then register a card in a reader." }
        }
        @for inst in &institutions {
            section aria-labelledby={"inst-" (inst.id)} {
                h2 id={"inst-" (inst.id)} { (inst.name) @if let Some(c) = &inst.country { " (" (c) ")" } }
                @let theirs: Vec<&Card> = cards.iter().filter(|c| c.institution_id == inst.id).collect();
                @if theirs.is_empty() {
                    p.empty { "No cards registered for " (inst.name) " yet." }
                } @else {
                    div.table-wrap { table {
                        thead { tr {
                            th scope="col" { "Card" }
                            th scope="col" class="opt" { "Account" }
                            th scope="col" class="opt" { "Reader" }
                            th scope="col" { "Status" }
                            th scope="col" class="num" { "PIN tries left" }
                            th scope="col" class="opt" { "Last use" }
                        } }
                        tbody {
                            @for c in theirs {
                                tr {
                                    td {
                                        a href={"/cards/" (c.institution_id) "/" (c.id)} { (c.label) }
                                        @if let Some(l) = &c.pan_last4 { br; span.hint { "•••• " (l) } }
                                    }
                                    td class="opt" { (c.account_reference) }
                                    td class="opt" { (reader_of(c)) }
                                    td { (status(c)) }
                                    td.num { @match c.pin_tries_left { Some(n) => (n), None => "—" } }
                                    td class="opt" { @match &c.last_used_at { Some(t) => (instant(t)), None => "never" } }
                                }
                            }
                        }
                    } }
                }
            }
        }
        h2 { "Register a card" }
        @if institutions.is_empty() {
            p.hint { "Add an institution first." }
        } @else {
            form.card method="post" action="/cards" {
                input type="hidden" name="csrf" value=(viewer.csrf);
                label for="institution" { "Institution" }
                select #institution name="institution" {
                    @for inst in &institutions { option value=(inst.id) { (inst.name) } }
                }
                label for="reader" { "Card reader" }
                @match &readers {
                    Ok(list) if !list.is_empty() || !host_readers.is_empty() => {
                        select #reader name="reader" {
                            @for r in list {
                                option value=(r.name) { (r.name) @if !r.card_present { " (no card in it)" } }
                            }
                            @for (host, r) in &host_readers {
                                option value={(host) (HOST_READER) (r.name)} {
                                    (host) ": " (r.name) @if !r.card_present { " (no card in it)" }
                                }
                            }
                        }
                    }
                    Ok(_) => {
                        input #reader name="reader" type="text" required placeholder="reader name";
                        p.hint { "This server sees no card reader: plug one in (pcscd must run), or type its name." }
                    }
                    Err(e) => {
                        input #reader name="reader" type="text" required placeholder="reader name";
                        p.hint { "The card readers cannot be listed: " (e) }
                    }
                }
                label for="label" { "Label" }
                input #label name="label" type="text" required maxlength="200" placeholder="e.g. payroll card";
                label for="account_reference" { "Account it belongs to" }
                input #account_reference name="account_reference" type="text" required maxlength="200";
                label for="pin" { "PIN (kept encrypted, never shown)" }
                input #pin name="pin" type="password" required inputmode="numeric" pattern="[0-9]{4,12}" autocomplete="off";
                label for="min_pin_tries" { "Never send the PIN with fewer tries left than" }
                input #min_pin_tries name="min_pin_tries" type="number" min="1" max="15" value="3";
                button type="submit" { "Register card" }
            }
        }
        h2 { "Add an institution" }
        form.card method="post" action="/cards/institutions" {
            input type="hidden" name="csrf" value=(viewer.csrf);
            label for="inst-name" { "Name" }
            input #inst-name name="name" type="text" required maxlength="100";
            label for="inst-country" { "Country (two letters, optional)" }
            input #inst-country name="country" type="text" maxlength="2" pattern="[A-Za-z]{2}";
            button type="submit" { "Add institution" }
        }
    };
    Ok((code, layout::page(viewer, "/cards", "Cards", body)).into_response())
}

#[derive(Deserialize)]
pub(crate) struct InstitutionForm {
    name: String,
    #[serde(default)]
    country: String,
}

/// `POST /cards/institutions`.
pub(crate) async fn add_institution(
    State(state): State<AppState>,
    Posted { viewer, form }: Posted<InstitutionForm>,
) -> PageResult {
    viewer.require(Scope::Admin)?;
    let country = form.country.trim();
    let body = CreateInstitution {
        name: form.name,
        country: (!country.is_empty()).then(|| country.to_owned()),
    };
    match new_institution(&state, &body).await {
        Ok(_) => Ok(Redirect::to("/cards").into_response()),
        Err(e) if e.status.is_client_error() => {
            render(&state, &viewer, Some(&e.message), e.status).await
        }
        Err(e) => Err(e.into()),
    }
}

/// Between a card host's name and its reader's in the reader field (reader
/// names hold no tab).
const HOST_READER: char = '\t';

/// Where a card sits: its reader, and the card host for one on another machine.
fn reader_of(c: &Card) -> maud::Markup {
    html! {
        @if let Some(h) = &c.host { (h) ": " }
        code { (c.reader) }
    }
}

#[derive(Deserialize)]
pub(crate) struct RegisterForm {
    institution: String,
    reader: String,
    label: String,
    account_reference: String,
    pin: String,
    #[serde(default)]
    min_pin_tries: String,
}

/// `POST /cards`: register the card in a reader.
pub(crate) async fn add_card(
    State(state): State<AppState>,
    Posted { viewer, form }: Posted<RegisterForm>,
) -> PageResult {
    viewer.require(Scope::Admin)?;
    let min_pin_tries = match form.min_pin_tries.trim() {
        "" => None,
        n => match n.parse() {
            Ok(n) => Some(n),
            Err(_) => {
                return render(
                    &state,
                    &viewer,
                    Some("The minimum PIN tries is a number from 1 to 15."),
                    StatusCode::BAD_REQUEST,
                )
                .await;
            }
        },
    };
    // A card host's reader comes as "host<TAB>reader".
    let (host, reader) = match form.reader.split_once(HOST_READER) {
        Some((host, reader)) => (Some(host.to_owned()), reader.to_owned()),
        None => (None, form.reader),
    };
    let body = RegisterCard {
        host,
        reader,
        label: form.label.trim().to_owned(),
        account_reference: form.account_reference.trim().to_owned(),
        pin: Secret::new(form.pin),
        min_pin_tries,
    };
    match register(
        &state,
        &form.institution,
        body,
        &viewer.principal.token_name,
    )
    .await
    {
        Ok(card) => Ok(
            Redirect::to(&format!("/cards/{}/{}", card.institution_id, card.id)).into_response(),
        ),
        Err(e) if e.status.is_client_error() => {
            render(&state, &viewer, Some(&e.message), e.status).await
        }
        Err(e) => Err(e.into()),
    }
}

/// The card, as the API finds it (404 when the institution does not hold it).
async fn card_of(state: &AppState, institution: &str, card: &str) -> Result<Card, PageError> {
    Ok(crate::api::cards::card_of(state, institution, card).await?)
}

/// `GET /cards/{institution}/{card}`.
pub(crate) async fn show(
    State(state): State<AppState>,
    Path((institution, card)): Path<(String, String)>,
    viewer: Viewer,
) -> PageResult {
    viewer.require(Scope::Admin)?;
    let card = card_of(&state, &institution, &card).await?;
    card_page(&viewer, &card, None, StatusCode::OK).await
}

/// What a card's page says after an action: a problem, or a test's code.
enum Said {
    Problem(String),
    Code {
        code: String,
        atc: u16,
        tries: Option<u8>,
    },
}

async fn card_page(viewer: &Viewer, c: &Card, said: Option<Said>, code: StatusCode) -> PageResult {
    let base = format!("/cards/{}/{}", c.institution_id, c.id);
    let body = html! {
        @match &said {
            Some(Said::Problem(p)) => p.error role="alert" { (p) },
            Some(Said::Code { code, atc, tries }) => div.notice role="status" {
                h2 { "The card answered" }
                p.big { code { (code) } }
                p.hint { "Application transaction counter " (atc)
                    @if let Some(n) = tries { "; " (n) " PIN tries left" } "." }
            },
            None => {}
        }
        dl.facts {
            dt { "Status" } dd { (status(c)) }
            dt { "Reader" } dd { (reader_of(c)) }
            @if let Some(l) = &c.pan_last4 { dt { "Card number" } dd { "•••• •••• •••• " (l) } }
            @if let Some(a) = &c.application { dt { "Application" } dd { (a) } }
            dt { "PIN tries left" } dd { @match c.pin_tries_left { Some(n) => (n), None => "not known yet" } }
            dt { "Last use" } dd { @match &c.last_used_at { Some(t) => (instant(t)), None => "never" } }
            dt { "Registered" } dd { (instant(&c.created_at)) }
        }
        p { a href={"/cards/audit?card=" (c.id)} { "This card's audit log" } }
        h2 { "Try a login code" }
        form.card method="post" action={(base) "/test"} {
            input type="hidden" name="csrf" value=(viewer.csrf);
            label for="challenge" { "Challenge the bank shows (optional)" }
            input #challenge name="challenge" type="text" inputmode="numeric" pattern="[0-9]{1,16}";
            button type="submit" { "Compute a login code" }
        }
        h2 { "Edit" }
        form.card method="post" action=(base) {
            input type="hidden" name="csrf" value=(viewer.csrf);
            label for="label" { "Label" }
            input #label name="label" type="text" required maxlength="200" value=(c.label);
            label for="account_reference" { "Account it belongs to" }
            input #account_reference name="account_reference" type="text" required maxlength="200" value=(c.account_reference);
            label for="min_pin_tries" { "Never send the PIN with fewer tries left than" }
            input #min_pin_tries name="min_pin_tries" type="number" min="1" max="15" value=(c.min_pin_tries);
            button type="submit" { "Save" }
        }
        @if c.status == CardStatus::Active {
            h2 { "Disable" }
            form method="post" action={(base) "/status"} {
                input type="hidden" name="csrf" value=(viewer.csrf);
                input type="hidden" name="status" value="disabled";
                p.hint { "A disabled card computes no code until it is enabled again." }
                button.danger type="submit" { "Disable " (c.label) }
            }
        } @else if c.status == CardStatus::Disabled {
            h2 { "Enable again" }
            form.card method="post" action={(base) "/status"} {
                input type="hidden" name="csrf" value=(viewer.csrf);
                input type="hidden" name="status" value="active";
                @if c.pin_refused {
                    p.hint { "The card may have counted a wrong PIN, so the stored PIN is never sent again: give the right one." }
                }
                label for="pin" { "New PIN" @if !c.pin_refused { " (optional)" } }
                input #pin name="pin" type="password" inputmode="numeric" pattern="[0-9]{4,12}" autocomplete="off" required[c.pin_refused];
                button type="submit" { "Enable " (c.label) }
            }
        } @else {
            p.hint { "This card's PIN is blocked on the card: unblock it at the bank, then register it again." }
        }
    };
    let title = format!("Card {}", c.label);
    Ok((code, layout::page(viewer, "/cards", &title, body)).into_response())
}

#[derive(Deserialize)]
pub(crate) struct EditForm {
    label: String,
    account_reference: String,
    #[serde(default)]
    min_pin_tries: String,
}

/// `POST /cards/{institution}/{card}`: label, account, minimum tries.
pub(crate) async fn edit(
    State(state): State<AppState>,
    Path((institution, card)): Path<(String, String)>,
    Posted { viewer, form }: Posted<EditForm>,
) -> PageResult {
    viewer.require(Scope::Admin)?;
    let min_pin_tries = match form.min_pin_tries.trim() {
        "" => None,
        n => match n.parse() {
            Ok(n) => Some(n),
            Err(_) => {
                let c = card_of(&state, &institution, &card).await?;
                let said = Said::Problem("The minimum PIN tries is a number from 1 to 15.".into());
                return card_page(&viewer, &c, Some(said), StatusCode::BAD_REQUEST).await;
            }
        },
    };
    let body = UpdateCard {
        label: Some(form.label.trim().to_owned()),
        account_reference: Some(form.account_reference.trim().to_owned()),
        pin: None,
        min_pin_tries,
        status: None,
    };
    apply(&state, &viewer, &institution, &card, body).await
}

#[derive(Deserialize)]
pub(crate) struct StatusForm {
    status: String,
    #[serde(default)]
    pin: String,
}

/// `POST /cards/{institution}/{card}/status`: disable, or enable (with a new PIN).
pub(crate) async fn set_status(
    State(state): State<AppState>,
    Path((institution, card)): Path<(String, String)>,
    Posted { viewer, form }: Posted<StatusForm>,
) -> PageResult {
    viewer.require(Scope::Admin)?;
    let body = UpdateCard {
        label: None,
        account_reference: None,
        pin: (!form.pin.is_empty()).then(|| Secret::new(form.pin)),
        min_pin_tries: None,
        status: Some(form.status),
    };
    apply(&state, &viewer, &institution, &card, body).await
}

async fn apply(
    state: &AppState,
    viewer: &Viewer,
    institution: &str,
    card: &str,
    body: UpdateCard,
) -> PageResult {
    match change_card(state, institution, card, body).await {
        Ok(c) => Ok(Redirect::to(&format!("/cards/{}/{}", c.institution_id, c.id)).into_response()),
        Err(e) if e.status.is_client_error() => {
            let c = card_of(state, institution, card).await?;
            card_page(
                viewer,
                &c,
                Some(Said::Problem(e.message.into_owned())),
                e.status,
            )
            .await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub(crate) struct TestForm {
    #[serde(default)]
    challenge: String,
}

/// `POST /cards/{institution}/{card}/test`: a login code, audited like any.
pub(crate) async fn test_login(
    State(state): State<AppState>,
    Path((institution, card)): Path<(String, String)>,
    Posted { viewer, form }: Posted<TestForm>,
) -> PageResult {
    viewer.require(Scope::Admin)?;
    let challenge = form.challenge.trim();
    let request = CapRequest::Login {
        challenge: (!challenge.is_empty()).then(|| challenge.to_owned()),
    };
    let result = state
        .cards
        .compute(&institution, &card, request, &viewer.principal.token_name)
        .await;
    let c = card_of(&state, &institution, &card).await?;
    match result {
        Ok(r) => {
            let said = Said::Code {
                code: r.response,
                atc: r.atc,
                tries: r.card.pin_tries_left,
            };
            card_page(&viewer, &c, Some(said), StatusCode::OK).await
        }
        Err(e) => {
            let e = crate::error::ApiError::from(e);
            let status = if e.status.is_server_error() {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                e.status
            };
            card_page(
                &viewer,
                &c,
                Some(Said::Problem(e.message.into_owned())),
                status,
            )
            .await
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct AuditQuery {
    #[serde(default)]
    card: String,
    #[serde(default)]
    before: Option<i64>,
}

/// `GET /cards/audit`: every use of every card, newest first.
pub(crate) async fn audit(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<AuditQuery>,
) -> PageResult {
    viewer.require(Scope::Admin)?;
    let cards = state.store.cards.list_cards(None).await?;
    let card = (!q.card.is_empty()).then(|| q.card.clone());
    let entries = state
        .store
        .cards
        .list_card_audit(&CardAuditQuery {
            card_id: card.clone(),
            limit: AUDIT_PAGE + 1,
            before_id: q.before,
        })
        .await?;
    let more = entries.len() > AUDIT_PAGE as usize;
    let entries = &entries[..entries.len().min(AUDIT_PAGE as usize)];
    let label = |id: &str| {
        cards
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.label.clone())
            .unwrap_or_else(|| id.to_owned())
    };
    let body = html! {
        form.filters method="get" action="/cards/audit" aria-label="Filters" {
            label { "Card"
                select name="card" {
                    option value="" { "All cards" }
                    @for c in &cards { option value=(c.id) selected[card.as_deref() == Some(c.id.as_str())] { (c.label) } }
                }
            }
            button type="submit" { "Show" }
        }
        @if entries.is_empty() {
            p.empty { "No card use recorded" @if card.is_some() { " for this card" } "." }
        } @else {
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { "When" }
                    th scope="col" { "Card" }
                    th scope="col" { "What" }
                    th scope="col" { "Outcome" }
                    th scope="col" class="opt" { "By" }
                    th scope="col" class="num opt" { "Time" }
                } }
                tbody {
                    @for e in entries {
                        tr {
                            td.date { (instant(&e.at)) }
                            td { (label(&e.card_id)) }
                            td { (match e.mode.as_str() { "m1" => "login code", "m2" => "signature", other => other }) }
                            td {
                                span class={"status-" (if e.outcome == "ok" { "succeeded" } else { "failed" })} { (e.outcome) }
                                @if let Some(d) = &e.detail { br; span.hint { (d) } }
                            }
                            td class="opt" { (e.token_name) }
                            td class="num opt" { (e.duration_ms) " ms" }
                        }
                    }
                }
            } }
            @if more {
                nav.pager aria-label="Pages" {
                    a rel="next" href={"/cards/audit?" (url::form_urlencoded::Serializer::new(String::new())
                        .append_pair("card", &q.card)
                        .append_pair("before", &entries[entries.len() - 1].id.to_string())
                        .finish())} { "Older entries" }
                }
            }
        }
    };
    Ok(layout::page(&viewer, "/cards", "Card audit log", body).into_response())
}
