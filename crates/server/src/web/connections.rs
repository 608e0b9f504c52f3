//! `/connections`: the bank connections with their state; add one (a form
//! per connector, in its own words), change its credentials, sync it now,
//! remove it. The same services as `/api/v1/connections` do the work.
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use bankbridge_core::{ConnectorForm, Secret};
use bankbridge_store::{Connection, Scope, SyncOutcome};
use bankbridge_sync::{ConnectionChange, Syncer};
use chrono::{NaiveDate, Utc};
use maud::{Markup, html};
use serde::Deserialize;

use super::form::{NoFields, PageError, PageResult, Posted};
use super::layout::{self, instant};
use super::session::Viewer;
use crate::AppState;
use crate::api::connections::{
    CreateConnection, change_connection, create_connection, delete_connection,
};
use crate::jobs::Trigger;

/// The form of a connector without one of its own.
fn generic_form(connector: &str) -> (ConnectorForm, String) {
    let form = ConnectorForm {
        connector: "",
        title: "",
        base_url_example: "https://bank.example",
        username_label: "User name",
        password_label: "Password",
        password_numeric: false,
        password_multiline: false,
        hint: "",
        options_hint: "",
    };
    (form, connector.to_owned())
}

/// Each connector this server knows with its form.
fn forms(state: &AppState) -> Vec<(ConnectorForm, String)> {
    let own = state.connector_forms.get();
    state
        .connectors
        .iter()
        .map(|name| {
            own.and_then(|f| f.iter().find(|f| f.connector == name))
                .map(|f| (*f, name.clone()))
                .unwrap_or_else(|| generic_form(name))
        })
        .collect()
}

fn status_text(c: &Connection) -> &'static str {
    match c.last_sync_status {
        SyncOutcome::Never => "never synced",
        SyncOutcome::Ok => "synced",
        SyncOutcome::NeedsUser => "needs you",
        SyncOutcome::CredentialsRefused => "credentials refused",
        SyncOutcome::Failed => "failed",
    }
}

fn next_sync(c: &Connection) -> Markup {
    let now = Utc::now();
    html! {
        @match crate::scheduler::next_due(c) {
            None => {
                @if Syncer::settings(c).ok().and_then(|s| s.interval_secs).is_some() {
                    "paused until you act"
                } @else {
                    "by hand only"
                }
            }
            Some(at) if at <= now => "due now",
            Some(at) => (instant(&at)),
        }
    }
}

pub(crate) async fn page(State(state): State<AppState>, viewer: Viewer) -> PageResult {
    render(&state, &viewer, None, StatusCode::OK).await
}

async fn render(
    state: &AppState,
    viewer: &Viewer,
    problem: Option<&str>,
    status: StatusCode,
) -> PageResult {
    let connections = state.store.connections.list_connections().await?;
    let cards = state.store.cards.list_cards(None).await?;
    let body = html! {
        @if let Some(p) = problem {
            p.error role="alert" { (p) }
        }
        @if connections.is_empty() {
            p.empty { "No bank connections yet. Add one below: bankbridge then syncs its accounts and transactions." }
        } @else {
            div.table-wrap { table {
                thead { tr {
                    th scope="col" { "Name" }
                    th scope="col" class="opt" { "Bank API" }
                    th scope="col" { "State" }
                    th scope="col" class="opt" { "Last sync" }
                    th scope="col" class="opt" { "Next sync" }
                    th scope="col" { span.visually-hidden { "Actions" } }
                } }
                tbody {
                    @for c in &connections {
                        @let running = state.running_sync(c.id);
                        tr {
                            td { a href={"/connections/" (c.id)} { (c.name) } }
                            td class="opt" { (c.connector) }
                            td {
                                @if let Some(job) = running {
                                    a href={"/syncs/" (job)} { "syncing now" }
                                } @else {
                                    span class={"status-" (c.last_sync_status.as_str())} { (status_text(c)) }
                                    @if let Some(e) = &c.last_sync_error {
                                        br; span.hint { (e) }
                                    }
                                    @if let Some(k) = consent_text(c) {
                                        br; span.hint { (k) }
                                    }
                                }
                            }
                            td class="opt" { @match &c.last_sync_at { Some(t) => (instant(t)), None => "never" } }
                            td class="opt" { (next_sync(c)) }
                            td.actions {
                                @if viewer.allows(Scope::Write) && running.is_none() {
                                    form method="post" action={"/connections/" (c.id) "/sync"} {
                                        input type="hidden" name="csrf" value=(viewer.csrf);
                                        button type="submit" aria-label={"Sync " (c.name) " now"} { "Sync now" }
                                    }
                                }
                            }
                        }
                    }
                }
            } }
        }
        @if viewer.allows(Scope::Write) {
            h2 { "Add a connection" }
            @for (form, connector) in forms(state) {
                details.add {
                    summary { (if form.title.is_empty() { connector.as_str() } else { form.title }) }
                    (add_form(viewer, &form, &connector, &cards))
                }
            }
        }
    };
    Ok((
        status,
        layout::page(viewer, "/connections", "Connections", body),
    )
        .into_response())
}

fn add_form(
    viewer: &Viewer,
    form: &ConnectorForm,
    connector: &str,
    cards: &[bankbridge_store::Card],
) -> Markup {
    let id = |field: &str| format!("{connector}-{field}");
    html! {
        form.card method="post" action="/connections" {
            input type="hidden" name="csrf" value=(viewer.csrf);
            input type="hidden" name="connector" value=(connector);
            @if !form.hint.is_empty() { p.hint { (form.hint) } }
            label for=(id("name")) { "Name in bankbridge" }
            input id=(id("name")) name="name" type="text" required maxlength="64"
                placeholder={(connector) "-main"} pattern="[A-Za-z][A-Za-z0-9 ._-]{0,63}";
            label for=(id("base_url")) { "Bank web API address" }
            input id=(id("base_url")) name="base_url" type="url" required placeholder=(form.base_url_example);
            label for=(id("username")) { (form.username_label) }
            input id=(id("username")) name="username" type="text" required autocomplete="off" spellcheck="false";
            label for=(id("password")) { (form.password_label) }
            @if form.password_multiline {
                textarea id=(id("password")) name="password" rows="6" required autocomplete="off" spellcheck="false"
                    placeholder="-----BEGIN PRIVATE KEY-----" {}
            } @else {
                input id=(id("password")) name="password" type="password" required autocomplete="new-password"
                    inputmode=[form.password_numeric.then_some("numeric")];
            }
            label for=(id("since")) { "Backfill from (optional)" }
            input id=(id("since")) name="since" type="date";
            label for=(id("interval")) { "Sync on its own" }
            select id=(id("interval")) name="interval" {
                option value="" { "No, by hand only" }
                option value="3600" { "Every hour" }
                option value="21600" { "Every 6 hours" }
                option value="86400" selected { "Every day" }
            }
            @if !cards.is_empty() {
                label for=(id("sca_card")) { "Bank card that answers the bank's card-reader codes (optional)" }
                select id=(id("sca_card")) name="sca_card" {
                    option value="" { "None" }
                    @for c in cards { option value=(c.id) { (c.label) " (" (c.id) ")" } }
                }
            }
            @if !form.options_hint.is_empty() {
                label for=(id("options")) { "Settings (optional)" }
                textarea id=(id("options")) name="options" rows="3" spellcheck="false" aria-describedby=(id("options-hint")) {}
                p.hint id=(id("options-hint")) { (form.options_hint) }
            }
            button type="submit" { "Add connection" }
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct AddForm {
    name: String,
    connector: String,
    base_url: String,
    username: String,
    password: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    interval: String,
    #[serde(default)]
    sca_card: String,
    #[serde(default)]
    options: String,
}

/// `KEY=VALUE` lines (blank lines skipped).
fn option_lines(text: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| format!("The setting {l:?} is not KEY=VALUE."))
        })
        .collect()
}

/// Empty means absent; anything else must parse.
fn optional<T: std::str::FromStr>(value: &str, what: &str) -> Result<Option<T>, String> {
    match value.trim() {
        "" => Ok(None),
        v => v
            .parse()
            .map(Some)
            .map_err(|_| format!("{what} {v:?} is not valid.")),
    }
}

/// The bank's consent in words: its state and how long it lasts.
fn consent_text(c: &Connection) -> Option<String> {
    let k = c.consent.as_ref()?;
    let today = chrono::Utc::now().date_naive();
    Some(match (k.status.as_str(), k.valid_until) {
        ("valid", Some(until)) => {
            let left = crate::consents::days_left(until, today);
            let soon = if left <= crate::consents::DEFAULT_WARNING_DAYS {
                ": sync where you can authenticate to give a new one soon"
            } else {
                ""
            };
            format!("Consent valid until {until} ({left} days left){soon}")
        }
        ("valid", None) => "Consent valid".to_owned(),
        (status, _) => {
            format!("Consent {status}: sync where you can authenticate to give a new one")
        }
    })
}

/// `POST /connections` (write).
pub(crate) async fn create(
    State(state): State<AppState>,
    Posted { viewer, form }: Posted<AddForm>,
) -> PageResult {
    viewer.require(Scope::Write)?;
    let parsed = optional::<NaiveDate>(&form.since, "The backfill date")
        .and_then(|since| Ok((since, optional::<u64>(&form.interval, "The interval")?)));
    let parsed = parsed.and_then(|p| Ok((p, option_lines(&form.options)?)));
    let ((since, interval_secs), options) = match parsed {
        Ok(p) => p,
        Err(problem) => {
            return render(&state, &viewer, Some(&problem), StatusCode::BAD_REQUEST).await;
        }
    };
    let body = CreateConnection {
        name: form.name,
        connector: form.connector,
        base_url: form.base_url.trim().to_owned(),
        username: form.username.trim().to_owned(),
        password: Secret::new(form.password),
        window_days: None,
        overlap_days: None,
        since,
        interval_secs,
        options: (!options.is_empty()).then_some(options),
        sca_card: Some(form.sca_card.trim().to_owned()).filter(|c| !c.is_empty()),
    };
    match create_connection(&state, &body).await {
        Ok(c) => Ok(Redirect::to(&format!("/connections/{}", c.id)).into_response()),
        Err(e) if e.status.is_client_error() => {
            render(&state, &viewer, Some(&e.message), e.status).await
        }
        Err(e) => Err(e.into()),
    }
}

async fn connection(state: &AppState, id: i64) -> Result<Connection, PageError> {
    state
        .store
        .connections
        .get_connection(id)
        .await?
        .ok_or_else(|| PageError::not_found(format!("There is no connection with id {id}.")))
}

/// `GET /connections/{id}`: one connection, its settings and recent syncs.
pub(crate) async fn show(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    viewer: Viewer,
) -> PageResult {
    let c = connection(&state, id).await?;
    show_page(&state, &viewer, &c, None, StatusCode::OK).await
}

async fn show_page(
    state: &AppState,
    viewer: &Viewer,
    c: &Connection,
    problem: Option<&str>,
    status: StatusCode,
) -> PageResult {
    let settings = Syncer::settings(c).map_err(crate::error::ApiError::internal)?;
    let accounts = state.store.bank.list_accounts(Some(c.id)).await?;
    let running = state.running_sync(c.id);
    let multiline_secret = forms(state)
        .iter()
        .any(|(f, name)| name == &c.connector && f.password_multiline);
    let body = html! {
        @if let Some(p) = problem {
            p.error role="alert" { (p) }
        }
        dl.facts {
            dt { "Bank API" } dd { (c.connector) }
            dt { "Address" } dd { code { (settings.base_url) } }
            @if viewer.allows(Scope::Admin) {
                dt { "User name" } dd { (settings.username) }
            }
            dt { "State" } dd {
                @if let Some(job) = running {
                    a href={"/syncs/" (job)} { "syncing now" }
                } @else {
                    span class={"status-" (c.last_sync_status.as_str())} { (status_text(c)) }
                }
            }
            @if let Some(e) = &c.last_sync_error { dt { "Last error" } dd.error { (e) } }
            dt { "Last sync" } dd { @match &c.last_sync_at { Some(t) => (instant(t)), None => "never" } }
            dt { "Next sync" } dd { (next_sync(c)) }
            @if let Some(k) = consent_text(c) { dt { "Bank consent" } dd { (k) } }
            @if let Some(card) = &settings.sca_card { dt { "Card" } dd { a href="/cards" { (card) } " answers the bank's card-reader challenges" } }
            dt { "Accounts" } dd {
                @if accounts.is_empty() { "none yet: sync to fetch them" }
                @for (i, a) in accounts.iter().enumerate() {
                    @if i > 0 { ", " }
                    a href={"/transactions?account=" (a.id)} { (a.display_name()) }
                }
            }
        }
        @if viewer.allows(Scope::Write) && running.is_none() {
            form method="post" action={"/connections/" (c.id) "/sync"} {
                input type="hidden" name="csrf" value=(viewer.csrf);
                button type="submit" { "Sync now" }
                @if c.credentials_refused() {
                    p.hint { "The bank refused these credentials: change them below before the next sync." }
                }
            }
        }
        @if viewer.allows(Scope::Admin) {
            h2 { "Change the credentials" }
            form.card method="post" action={"/connections/" (c.id)} {
                input type="hidden" name="csrf" value=(viewer.csrf);
                p.hint { "The password is never shown; type it again to change where or as whom it is used." }
                label for="username" { "User name" }
                input id="username" name="username" type="text" value=(settings.username) autocomplete="off" spellcheck="false";
                label for="base_url" { "Bank web API address" }
                input id="base_url" name="base_url" type="url" value=(settings.base_url);
                label for="password" { "New password" }
                @if multiline_secret {
                    textarea id="password" name="password" rows="6" required autocomplete="off" spellcheck="false" {}
                } @else {
                    input id="password" name="password" type="password" required autocomplete="new-password";
                }
                button type="submit" { "Save credentials" }
            }
            h2 { "Remove" }
            form method="post" action={"/connections/" (c.id) "/remove"} {
                input type="hidden" name="csrf" value=(viewer.csrf);
                p.hint { "Removes the connection with its accounts, transactions, balances and documents from bankbridge. The bank keeps its own." }
                button.danger type="submit" { "Remove " (c.name) }
            }
        }
    };
    let title = format!("Connection {}", c.name);
    Ok((status, layout::page(viewer, "/connections", &title, body)).into_response())
}

#[derive(Deserialize)]
pub(crate) struct CredentialsForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    base_url: String,
    password: String,
}

/// `POST /connections/{id}` (admin): new credentials.
pub(crate) async fn update(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Posted { viewer, form }: Posted<CredentialsForm>,
) -> PageResult {
    viewer.require(Scope::Admin)?;
    let c = connection(&state, id).await?;
    let settings = Syncer::settings(&c).map_err(crate::error::ApiError::internal)?;
    let changed = |new: &str, old: &str| {
        let new = new.trim();
        (!new.is_empty() && new != old).then(|| new.to_owned())
    };
    let change = ConnectionChange {
        base_url: changed(&form.base_url, &settings.base_url),
        username: changed(&form.username, &settings.username),
        password: Some(Secret::new(form.password)),
        ..Default::default()
    };
    match change_connection(&state, id, &change).await {
        Ok(_) => Ok(Redirect::to(&format!("/connections/{id}")).into_response()),
        Err(e) if e.status.is_client_error() => {
            show_page(&state, &viewer, &c, Some(&e.message), e.status).await
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /connections/{id}/remove` (admin).
pub(crate) async fn remove(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Posted { viewer, .. }: Posted<NoFields>,
) -> PageResult {
    viewer.require(Scope::Admin)?;
    delete_connection(&state, id).await?;
    Ok(Redirect::to("/connections").into_response())
}

/// `POST /connections/{id}/sync` (write): start a sync whose questions this
/// person answers on its page.
pub(crate) async fn sync(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Posted { viewer, .. }: Posted<NoFields>,
) -> PageResult {
    viewer.require(Scope::Write)?;
    let started = crate::api::syncs::start_checked(&state, id, Trigger::Dashboard).await?;
    Ok(Redirect::to(&format!("/syncs/{}", started.job().id)).into_response())
}
