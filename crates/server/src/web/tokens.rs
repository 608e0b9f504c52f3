//! `/tokens` (admin): the API tokens, a new one shown once, revocation.
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use bankbridge_core::Secret;
use bankbridge_store::{Scope, StoreError, TokenRecord};
use chrono::{DateTime, TimeDelta, Utc};
use maud::{Markup, html};
use serde::Deserialize;

use super::form::{NoFields, PageError, PageResult, Posted};
use super::layout::{self, instant};
use super::session::Viewer;
use crate::AppState;

/// Lifetimes offered for a new token: (form value, label, days).
const LIFETIMES: [(&str, &str, Option<i64>); 5] = [
    ("never", "Never expires", None),
    ("1", "1 day", Some(1)),
    ("30", "30 days", Some(30)),
    ("90", "90 days", Some(90)),
    ("365", "1 year", Some(365)),
];

pub(crate) async fn page(State(state): State<AppState>, viewer: Viewer) -> PageResult {
    viewer.require(Scope::Admin)?;
    render(&state, &viewer, None, None, StatusCode::OK).await
}

/// The page, with a token just created (shown this once) or a problem.
async fn render(
    state: &AppState,
    viewer: &Viewer,
    created: Option<(&TokenRecord, &Secret<String>)>,
    problem: Option<&str>,
    status: StatusCode,
) -> PageResult {
    let tokens = state.store.tokens.list_tokens().await?;
    let now = Utc::now();
    let body = html! {
        @if let Some((record, plain)) = created {
            (layout::shown_once(
                &format!("Token {} created", record.name),
                "Copy it now: bankbridge keeps only its hash and cannot show it again.",
                "plain",
                &format!("The new {} token", record.scope.as_str()),
                plain.expose(),
            ))
        }
        @if let Some(p) = problem {
            p.error role="alert" { (p) }
        }
        @if tokens.is_empty() {
            p.empty { "No tokens yet. Create one below." }
        } @else {
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { "Name" }
                    th scope="col" { "Scope" }
                    th scope="col" class="opt" { "Created" }
                    th scope="col" class="opt" { "Last used" }
                    th scope="col" { "State" }
                    th scope="col" { span.visually-hidden { "Action" } }
                } }
                tbody {
                    @for t in &tokens {
                        tr {
                            td { (t.name) @if t.id == viewer.principal.token_id { " (this session)" } }
                            td { (t.scope.as_str()) @if let Some(l) = &t.location { " · " (l) } }
                            td class="opt" { (instant(&t.created_at)) }
                            td class="opt" { @match &t.last_used_at { Some(at) => (instant(at)), None => "never" } }
                            td { (token_state(t, now)) }
                            td {
                                @if t.revoked_at.is_none() {
                                    form method="post" action={"/tokens/" (t.id) "/revoke"} {
                                        input type="hidden" name="csrf" value=(viewer.csrf);
                                        button.danger type="submit" aria-label={"Revoke " (t.name)} { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            } }
        }
        p { a href="/tokens/simplefin" { "SimpleFIN access for budgeting apps →" } }
        h2 { "Create a token" }
        form.card method="post" action="/tokens" {
            input type="hidden" name="csrf" value=(viewer.csrf);
            label for="name" { "Name (to recognise it by)" }
            input id="name" name="name" type="text" maxlength="64" placeholder="e.g. airtable";
            label for="scope" { "Scope" }
            select id="scope" name="scope" {
                option value="read" { "read — see data" }
                option value="write" { "write — also sync and add connections" }
                option value="admin" { "admin — everything" }
                option value="agent" { "agent — a check agent of one location" }
                option value="card-agent" { "card-agent — a card agent of one card host" }
            }
            label for="location" { "Check location or card host (agent tokens only)" }
            input id="location" name="location" type="text" maxlength="64";
            label for="expires" { "Expires" }
            select id="expires" name="expires" {
                @for (value, label, _) in LIFETIMES {
                    option value=(value) { (label) }
                }
            }
            button type="submit" { "Create token" }
        }
    };
    let mut res = (status, layout::page(viewer, "/tokens", "API tokens", body)).into_response();
    // A page with a secret on it is never kept by the browser.
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

fn token_state(t: &TokenRecord, now: DateTime<Utc>) -> Markup {
    html! {
        @if let Some(at) = &t.revoked_at {
            span.status-failed { "revoked " } (instant(at))
        } @else if let Some(at) = t.expires_at.filter(|at| *at <= now) {
            span.status-failed { "expired " } (instant(&at))
        } @else if let Some(at) = &t.expires_at {
            "active, expires " (instant(at))
        } @else {
            "active"
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct NewToken {
    #[serde(default)]
    name: String,
    scope: String,
    #[serde(default)]
    location: String,
    #[serde(default)]
    expires: String,
}

/// `POST /tokens`: create one and show it once.
pub(crate) async fn create(
    State(state): State<AppState>,
    Posted { viewer, form }: Posted<NewToken>,
) -> PageResult {
    viewer.require(Scope::Admin)?;
    let (plain, record) = match new_token(&form) {
        Ok(made) => made,
        Err(problem) => {
            return render(
                &state,
                &viewer,
                None,
                Some(&problem),
                StatusCode::BAD_REQUEST,
            )
            .await;
        }
    };
    match state.store.tokens.create_token(&record).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            let problem = format!(
                "A token named {:?} exists already: choose another name.",
                record.name
            );
            return render(&state, &viewer, None, Some(&problem), StatusCode::CONFLICT).await;
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(token = %record.name, scope = record.scope.as_str(), by = %viewer.principal.token_name, "token created in the dashboard");
    render(
        &state,
        &viewer,
        Some((&record, &plain)),
        None,
        StatusCode::CREATED,
    )
    .await
}

/// The token the form asks for, or what is wrong with the form.
fn new_token(form: &NewToken) -> Result<(Secret<String>, TokenRecord), String> {
    let scope = Scope::parse(&form.scope)
        .ok_or("Choose a scope: read, write, admin, agent or card-agent.")?;
    let location = match (scope, form.location.trim()) {
        (Scope::Agent, "") => {
            return Err("An agent token serves one check location: name it.".into());
        }
        (Scope::CardAgent, "") => {
            return Err("A card-agent token serves one card host: name it.".into());
        }
        (Scope::Agent | Scope::CardAgent, l) => Some(l.to_owned()),
        (_, "") => None,
        (_, _) => {
            return Err("A check location or card host is for agent tokens only.".into());
        }
    };
    let (_, _, days) = LIFETIMES
        .iter()
        .find(|(v, _, _)| *v == form.expires)
        .ok_or("Choose when the token expires.")?;
    let name = match form.name.trim() {
        "" => format!("{}-{}", scope.as_str(), Utc::now().format("%Y%m%d%H%M%S")),
        n if n.chars().count() > 64 || n.chars().any(char::is_control) => {
            return Err("A name is at most 64 characters, without control characters.".into());
        }
        n => n.to_owned(),
    };
    let (plain, mut record) = crate::auth::new_token(&name, scope);
    record.location = location;
    record.expires_at = days.and_then(|d| record.created_at.checked_add_signed(TimeDelta::days(d)));
    Ok((plain, record))
}

/// `POST /tokens/{id}/revoke`.
pub(crate) async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { viewer, .. }: Posted<NoFields>,
) -> PageResult {
    viewer.require(Scope::Admin)?;
    // By id only: a name that looks like another token's id must not match it.
    if state.store.tokens.find_token(&id).await?.is_none() {
        return Err(PageError::not_found(format!(
            "There is no token with id {id}."
        )));
    }
    state.store.tokens.revoke_token(&id, Utc::now()).await?;
    state.auth.forget(&id);
    tracing::info!(token_id = %id, by = %viewer.principal.token_name, "token revoked in the dashboard");
    Ok(Redirect::to("/tokens").into_response())
}
