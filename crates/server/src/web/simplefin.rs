//! `/tokens/simplefin` (admin): SimpleFIN Tokens for budgeting apps (see
//! [`crate::simplefin`]): the list, a new one shown once, revocation.
use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use bankbridge_store::{Scope, SimplefinToken, StoreError};
use chrono::Utc;
use maud::{Markup, html};

use super::form::{NoFields, PageError, PageResult, Posted};
use super::layout::{self, instant};
use super::session::Viewer;
use crate::AppState;
use crate::simplefin::{self, SimplefinError};

pub(crate) async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    viewer: Viewer,
) -> PageResult {
    viewer.require(Scope::Admin)?;
    let root = root_guess(&state, &headers);
    render(&state, &viewer, &root, None, None, StatusCode::OK).await
}

/// Where an app most likely reaches this server: the configured public
/// address, else the address this page was asked on.
fn root_guess(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.config.public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1:8080");
    format!("http://{host}")
}

async fn render(
    state: &AppState,
    viewer: &Viewer,
    root: &str,
    created: Option<(&SimplefinToken, &str)>,
    problem: Option<&str>,
    status: StatusCode,
) -> PageResult {
    let tokens = state.store.outbound.list_simplefin_tokens().await?;
    let accounts = state.store.bank.list_accounts(None).await?;
    let name_of = |id: i64| {
        accounts
            .iter()
            .find(|a| a.id == id)
            .map(|a| a.display_name())
            .unwrap_or_else(|| format!("account {id} (removed)"))
    };
    let body = html! {
        p {
            "Budgeting apps that pull from a SimpleFIN server (Actual Budget, Sure, …) can pull from bankbridge. "
            "Make a token for the accounts the app may read and paste it into the app: it claims the token once "
            "and reads those accounts, read-only, until you revoke it."
        }
        @if let Some((token, setup)) = created {
            (layout::shown_once(
                &format!("SimpleFIN Token {} created", token.name),
                "Paste it into the app now: bankbridge keeps only a hash and cannot show it again. The app can claim it once.",
                "setup",
                "The SimpleFIN Token",
                setup,
            ))
        }
        @if let Some(p) = problem {
            p.error role="alert" { (p) }
        }
        @if tokens.is_empty() {
            p.empty { "No SimpleFIN tokens yet. Create one below." }
        } @else {
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { "Name" }
                    th scope="col" { "Accounts" }
                    th scope="col" class="opt" { "Created" }
                    th scope="col" class="opt" { "Last used" }
                    th scope="col" { "State" }
                    th scope="col" { span.visually-hidden { "Action" } }
                } }
                tbody {
                    @for t in &tokens {
                        tr {
                            td { (t.name) }
                            td { @for (i, id) in t.accounts.iter().enumerate() { @if i > 0 { ", " } (name_of(*id)) } }
                            td class="opt" { (instant(&t.created_at)) }
                            td class="opt" { @match &t.last_used_at { Some(at) => (instant(at)), None => "never" } }
                            td { (token_state(t)) }
                            td {
                                @if t.revoked_at.is_none() {
                                    form method="post" action={"/tokens/simplefin/" (t.id) "/revoke"} {
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
        h2 { "Create a SimpleFIN Token" }
        @if accounts.is_empty() {
            p.empty { "There are no accounts yet: sync a connection first." }
        } @else {
            form.card method="post" action="/tokens/simplefin" {
                input type="hidden" name="csrf" value=(viewer.csrf);
                label for="name" { "Name (to recognise it by)" }
                input id="name" name="name" type="text" maxlength="100" placeholder="e.g. actual" required;
                fieldset {
                    legend { "Accounts the app may read" }
                    @for a in &accounts {
                        label {
                            input type="checkbox" name={"account-" (a.id)} value="on";
                            " " (a.display_name()) " · " (a.currency.as_str())
                        }
                    }
                }
                label for="root" { "Address the app reaches bankbridge at" }
                input id="root" name="root" type="url" value=(root) required;
                button type="submit" { "Create SimpleFIN Token" }
            }
        }
    };
    let mut res = (
        status,
        layout::page(viewer, "/tokens", "SimpleFIN access", body),
    )
        .into_response();
    // A page with a secret on it is never kept by the browser.
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

fn token_state(t: &SimplefinToken) -> Markup {
    html! {
        @if let Some(at) = &t.revoked_at {
            span.status-failed { "revoked " } (instant(at))
        } @else if let Some(at) = &t.claimed_at {
            "claimed " (instant(at))
        } @else {
            "waiting to be claimed"
        }
    }
}

/// `POST /tokens/simplefin`: create one and show it once. The form's
/// fields: `name`, `root`, and `account-<id>` per account ticked.
pub(crate) async fn create(
    State(state): State<AppState>,
    Posted { viewer, form }: Posted<HashMap<String, String>>,
) -> PageResult {
    viewer.require(Scope::Admin)?;
    let name = form.get("name").map(String::as_str).unwrap_or_default();
    let root = form.get("root").map(String::as_str).unwrap_or_default();
    let accounts: Vec<i64> = form
        .keys()
        .filter_map(|k| k.strip_prefix("account-")?.parse().ok())
        .collect();
    let made = simplefin::create_token(
        state.store.outbound.as_ref(),
        state.store.bank.as_ref(),
        name,
        &accounts,
        root,
        Utc::now(),
    )
    .await;
    let (message, status) = match made {
        Ok(made) => {
            tracing::info!(token = %made.token.name, accounts = made.token.accounts.len(), by = %viewer.principal.token_name, "SimpleFIN token created in the dashboard");
            return render(
                &state,
                &viewer,
                root,
                Some((&made.token, &made.setup_token)),
                None,
                StatusCode::CREATED,
            )
            .await;
        }
        Err(SimplefinError::Invalid(m)) => (m, StatusCode::BAD_REQUEST),
        Err(SimplefinError::Store(StoreError::Conflict(m))) => (m, StatusCode::CONFLICT),
        Err(SimplefinError::Store(e)) => return Err(e.into()),
    };
    render(&state, &viewer, root, None, Some(&message), status).await
}

/// `POST /tokens/simplefin/{id}/revoke`.
pub(crate) async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { viewer, .. }: Posted<NoFields>,
) -> PageResult {
    viewer.require(Scope::Admin)?;
    let tokens = state.store.outbound.list_simplefin_tokens().await?;
    // By id only: a name that looks like another token's id must not match it.
    if !tokens.iter().any(|t| t.id == id) {
        return Err(PageError::not_found(format!(
            "There is no SimpleFIN token with id {id}."
        )));
    }
    state
        .store
        .outbound
        .revoke_simplefin_token(&id, Utc::now())
        .await?;
    tracing::info!(token_id = %id, by = %viewer.principal.token_name, "SimpleFIN token revoked in the dashboard");
    Ok(Redirect::to("/tokens/simplefin").into_response())
}
