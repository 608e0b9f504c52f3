//! `/syncs/{id}`: a sync job as it runs: its progress, what the bank asks
//! of the person (approve on a device, type a code, use a registered card,
//! visit the bank's page), and its result. The live part is one fragment
//! (`/syncs/{id}/live`) that `live.js` swaps in every second; without
//! script, the page reloads itself while nothing waits for input.
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use bankbridge_cap::CapRequest;
use bankbridge_core::{ScaAnswer, ScaChallenge, Secret};
use bankbridge_store::{Card, CardStatus, Scope, SyncJob};
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;

use super::form::{PageError, PageResult, Posted};
use super::layout;
use super::session::Viewer;
use crate::AppState;
use crate::jobs::status;
use crate::live::LiveState;

async fn job(state: &AppState, id: i64) -> Result<SyncJob, PageError> {
    state
        .store
        .jobs
        .get_sync_job(id)
        .await?
        .ok_or_else(|| PageError::not_found(format!("There is no sync job {id}.")))
}

fn finished(job: &SyncJob) -> bool {
    !matches!(job.status.as_str(), status::QUEUED | status::RUNNING)
}

/// `GET /syncs/{id}`.
pub(crate) async fn page(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    viewer: Viewer,
) -> PageResult {
    let job = job(&state, id).await?;
    let name = state
        .store
        .connections
        .get_connection(job.connection_id)
        .await?
        .map(|c| c.name)
        .unwrap_or_else(|| format!("connection {}", job.connection_id));
    let live = live(&state, &viewer, &job).await?;
    let waiting_for_input = live.1;
    let body = html! {
        p { "Sync of " a href={"/connections/" (job.connection_id)} { (name) } ", started " (layout::instant(&job.created_at)) "." }
        (live.0)
        script src="/assets/live.js" defer {}
    };
    let refresh = (!finished(&job) && !waiting_for_input).then_some(2);
    Ok(layout::page_refreshing(
        &viewer,
        "/connections",
        &format!("Sync {id}"),
        body,
        refresh,
    )
    .into_response())
}

/// `GET /syncs/{id}/live`: the live fragment alone.
pub(crate) async fn fragment(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    viewer: Viewer,
) -> PageResult {
    let job = job(&state, id).await?;
    Ok(live(&state, &viewer, &job).await?.0.into_response())
}

/// The live section, and whether it waits for the person's input.
async fn live(
    state: &AppState,
    viewer: &Viewer,
    job: &SyncJob,
) -> Result<(Markup, bool), PageError> {
    let snapshot = state.live_job(job.id).map(|l| l.snapshot());
    let question = snapshot.as_ref().and_then(|s| s.question.clone());
    let cards = match &question {
        Some((_, ScaChallenge::CardReaderLogin { .. } | ScaChallenge::CardReaderSign { .. })) => {
            state.store.cards.list_cards(None).await?
        }
        _ => Vec::new(),
    };
    let done = finished(job);
    let markup = html! {
        section #live data-src={"/syncs/" (job.id) "/live"} data-done[done]
            data-question=(question.as_ref().map(|(n, _)| n.to_string()).unwrap_or_default())
            aria-live="polite" {
            p.big { "Status: " span class={"status-" (job.status)} { (job.status.replace('_', " ")) } }
            @if let Some(s) = &snapshot { (progress(s)) }
            @if let Some(a) = snapshot.as_ref().and_then(|s| s.approval.as_ref()) {
                div.notice role="status" {
                    h2 { "Approve at your bank" }
                    p { (a.message) }
                    @if let Some(b) = a.bankid.as_ref().filter(|_| viewer.allows(Scope::Write)) {
                        @if let Some(qr) = &b.qr {
                            figure.qr data-qr=(qr.data_now()) {
                                (PreEscaped(crate::web::bankid::inline_svg(&bankbridge_bankid::qr::render_svg(&qr.data_now()))))
                                figcaption { "Scan with the BankID app; the code changes every second." }
                            }
                        }
                        p { a.button href={"bankid:///?autostarttoken=" (b.auto_start_token) "&redirect=null"} { "Open BankID on this device" } }
                    }
                    p.hint {
                        "Approve it on your device; this page goes on by itself once the bank says so."
                        @if let Some(at) = &a.expires_at { " The bank waits until " (layout::instant(at)) "." }
                    }
                }
            }
            @if let Some((number, challenge)) = &question {
                @if viewer.allows(Scope::Write) {
                    (question_form(viewer, job.id, *number, challenge, &cards))
                } @else {
                    // Not the challenge itself: a redirect's address may carry the bank's state.
                    p.notice { "The bank asks for strong customer authentication (" (challenge.kind().replace('_', " ")) "). Someone with a write token answers it here." }
                }
            }
            @if done { (outcome(job)) }
        }
    };
    Ok((markup, question.is_some()))
}

fn progress(s: &LiveState) -> Markup {
    html! {
        @if s.windows_planned > 0 {
            label for="windows" { "Date windows read: " (s.windows_done) " of " (s.windows_planned) }
            progress #windows max=(s.windows_planned) value=(s.windows_done.min(s.windows_planned)) {}
        }
        p { (s.inserted) " new and " (s.updated) " changed transactions so far"
            @if let Some(n) = s.accounts { ", " (n) " account(s)" } "." }
        @if !s.recent.is_empty() {
            ul.events { @for e in &s.recent { li { (e) } } }
        }
    }
}

/// `s` with its first letter in upper case, for a label made of a phrase.
fn capitalised(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn question_form(
    viewer: &Viewer,
    job: i64,
    number: u64,
    challenge: &ScaChallenge,
    cards: &[Card],
) -> Markup {
    let usable: Vec<&Card> = cards
        .iter()
        .filter(|c| c.status == CardStatus::Active && !c.pin_refused)
        .collect();
    html! {
        form.card.question method="post" action={"/syncs/" (job) "/answer"} {
            input type="hidden" name="csrf" value=(viewer.csrf);
            input type="hidden" name="question" value=(number);
            h2 { "The bank asks for " (challenge.to_string()) }
            @match challenge {
                ScaChallenge::Otp { prompt } => {
                    label for="code" { "The code (" (prompt) ")" }
                    input #code name="code" type="text" inputmode="numeric" autocomplete="one-time-code" required autofocus;
                    button name="answer" value="code" type="submit" { "Send the code" }
                }
                ScaChallenge::Secret { prompt } => {
                    label for="code" { (capitalised(prompt)) ". It is used for this link only and not kept." }
                    input #code name="code" type="password" autocomplete="off" required autofocus;
                    button name="answer" value="code" type="submit" { "Send" }
                }
                ScaChallenge::CardReaderLogin { .. } | ScaChallenge::CardReaderSign { .. } => {
                    @if let ScaChallenge::CardReaderLogin { challenge: Some(c) } = challenge {
                        p { "Challenge: " code { (c) } }
                    }
                    @if let ScaChallenge::CardReaderSign { numbers } = challenge {
                        p { "Numbers to sign: " @for n in numbers { code { (n) } " " } }
                    }
                    @if usable.is_empty() {
                        p.hint { "No registered card can answer: register one on the Cards page, or type the code your own reader shows." }
                    } @else {
                        label for="card" { "Let a registered card answer" }
                        select #card name="card" {
                            @for card in &usable {
                                option value={(card.institution_id) "/" (card.id)} { (card.label) " (" (card.reader) ")" }
                            }
                        }
                        button name="answer" value="card" type="submit" { "Use this card" }
                    }
                    label for="code" { "Or the code your reader shows" }
                    input #code name="code" type="text" inputmode="numeric" autocomplete="off";
                    button name="answer" value="code" type="submit" { "Send the code" }
                }
                ScaChallenge::Redirect { url } => {
                    @if url.starts_with("https://") || url.starts_with("http://") {
                        p { a href=(url) target="_blank" rel="noopener noreferrer" { "Open the bank's page" } " and finish there, then come back." }
                    } @else {
                        p.error { "The bank sent an address that is not a web page: " code { (url) } }
                    }
                    button name="answer" value="approved" type="submit" { "I have finished at the bank" }
                }
                _ => {}
            }
            button.secondary name="answer" value="decline" type="submit" formnovalidate { "Decline" }
        }
    }
}

fn outcome(job: &SyncJob) -> Markup {
    let count = |key: &str| {
        job.summary
            .as_ref()
            .and_then(|s| s.get(key))
            .and_then(|v| v.as_u64())
            .unwrap_or(0)
    };
    html! {
        @if job.summary.is_some() {
            p { (count("inserted")) " new, " (count("updated")) " changed, " (count("unchanged")) " unchanged, "
                (count("voided")) " voided transactions in " (count("accounts")) " account(s)." }
        }
        @if let Some(e) = &job.error { p.error role="alert" { (e) } }
        p { a href="/transactions" { "See the transactions" } " · " a href={"/connections/" (job.connection_id)} { "Back to the connection" } }
    }
}

#[derive(Deserialize)]
pub(crate) struct AnswerForm {
    question: u64,
    answer: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    card: String,
}

/// `POST /syncs/{id}/answer` (write): the person's answer to the open question.
/// `GET /sca/callback/{job}`: where a bank's redirect SCA sends the
/// browser back (`serve --public-url`). It answers the job's open redirect
/// question and shows the job; the engine then asks the bank, which has
/// the last word, so a stray visit approves nothing.
pub(crate) async fn redirect_callback(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    // The query carries what the bank sends back (an authorisation code):
    // handed to the connector, never logged.
    if let Some(live) = state.live_job(id)
        && live.redirect_returned(query.filter(|q| !q.is_empty()))
    {
        tracing::info!(job = id, "back from the bank's redirect page");
    }
    Redirect::to(&format!("/syncs/{id}")).into_response()
}

pub(crate) async fn answer(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Posted { viewer, form }: Posted<AnswerForm>,
) -> PageResult {
    viewer.require(Scope::Write)?;
    let live = state.live_job(id).ok_or_else(|| {
        PageError::new(
            axum::http::StatusCode::CONFLICT,
            "This sync is not running any more: nothing waits for an answer.",
        )
    })?;
    let open = live
        .snapshot()
        .question
        .filter(|(n, _)| *n == form.question);
    let Some((_, challenge)) = open else {
        return Ok(Redirect::to(&format!("/syncs/{id}")).into_response());
    };
    let answer = match form.answer.as_str() {
        "code" if !form.code.trim().is_empty() => {
            ScaAnswer::Code(Secret::new(form.code.trim().to_owned()))
        }
        "card" => {
            let (institution, card) = form.card.split_once('/').ok_or_else(|| {
                PageError::new(axum::http::StatusCode::BAD_REQUEST, "Choose a card.")
            })?;
            let request = match challenge {
                ScaChallenge::CardReaderLogin { challenge } => CapRequest::Login { challenge },
                ScaChallenge::CardReaderSign { numbers } => CapRequest::Sign { numbers },
                _ => {
                    return Err(PageError::new(
                        axum::http::StatusCode::BAD_REQUEST,
                        "A card answers card-reader questions only.",
                    ));
                }
            };
            let code = state
                .cards
                .compute(institution, card, request, &viewer.principal.token_name)
                .await
                .map_err(|e| {
                    PageError::new(
                        axum::http::StatusCode::CONFLICT,
                        format!("The card could not answer: {e}. Try again or type a code."),
                    )
                })?;
            ScaAnswer::Code(Secret::new(code.response))
        }
        "approved" => ScaAnswer::Approved,
        "decline" => ScaAnswer::Declined,
        _ => {
            return Err(PageError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "Type the code, or choose another answer.",
            ));
        }
    };
    if !live.answer(form.question, answer) {
        return Err(PageError::new(
            axum::http::StatusCode::CONFLICT,
            "That question is no longer open (it was answered, or the sync stopped waiting). Nothing was sent to the bank.",
        ));
    }
    Ok(Redirect::to(&format!("/syncs/{id}")).into_response())
}
