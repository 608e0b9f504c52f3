//! `GET /transactions`: the API's filters as a form, a page of rows with
//! cursor paging, and export links that keep the filters.
use std::collections::HashMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use bankbridge_store::{Scope, TxQuery};
use maud::{Markup, html};
use serde::Deserialize;

use super::form::{PageError, PageResult, Posted};
use super::layout::{self, money};
use super::session::Viewer;
use crate::AppState;
use crate::error::ApiError;
use crate::params::{self, encode_cursor};

/// Rows per page.
const PAGE: u32 = 50;

/// The form's fields: (name, label, input type).
const FILTERS: [(&str, &str, &str); 7] = [
    ("from", "From", "date"),
    ("to", "To", "date"),
    ("min_amount", "Amount at least", "text"),
    ("max_amount", "Amount at most", "text"),
    ("text", "Text", "search"),
    ("category", "Category", "text"),
    ("status", "Status", "select"),
];

/// The query string without the empty fields a form sends, and without
/// `limit` (the page size is ours).
fn filled(raw: Option<&str>) -> Vec<(String, String)> {
    params::pairs(raw)
        .into_iter()
        .filter(|(k, v)| !v.trim().is_empty() && k != "limit")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn encode(pairs: &[(String, String)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

pub(crate) async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let pairs = filled(raw.as_deref());
    let value = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let accounts = state.store.bank.list_accounts(None).await?;
    let names: HashMap<i64, String> = accounts.iter().map(|a| (a.id, a.display_name())).collect();
    let mut problem = None;
    let mut rows = Vec::new();
    let mut next = None;
    match params::parse_page_request(Some(&encode(&pairs))) {
        Ok(request) => {
            let query = TxQuery {
                limit: Some(PAGE + 1),
                ..request.query
            };
            rows = state.store.bank.query_transactions(&query).await?;
            if rows.len() > PAGE as usize {
                rows.truncate(PAGE as usize);
                next = rows.last().map(|t| encode_cursor(t.booking_date, t.id));
            }
        }
        Err(e) if e.status.is_client_error() => problem = Some(e.message.into_owned()),
        Err(e) => return Err(e),
    }
    let without_cursor: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| k != "cursor")
        .cloned()
        .collect();
    let next_link = next.map(|c| {
        let mut p = without_cursor.clone();
        p.push(("cursor".into(), c));
        format!("/transactions?{}", encode(&p))
    });
    let export_link = |format: &str| {
        let mut p: Vec<(String, String)> = without_cursor
            .iter()
            .filter(|(k, _)| k != "order")
            .cloned()
            .collect();
        p.push(("format".into(), format.into()));
        format!("/transactions/export?{}", encode(&p))
    };
    // Where a category form brings the person back to: this very page.
    let here = if pairs.is_empty() {
        "/transactions".to_owned()
    } else {
        format!("/transactions?{}", encode(&pairs))
    };
    let body = html! {
        form.filters method="get" action="/transactions" aria-label="Filters" {
            label {
                "Account"
                select name="account" {
                    option value="" { "All accounts" }
                    @for a in &accounts {
                        option value=(a.id) selected[value("account") == a.id.to_string()] { (a.display_name()) }
                    }
                }
            }
            @for (name, label, kind) in FILTERS {
                label {
                    (label)
                    @if kind == "select" {
                        select name=(name) {
                            option value="" { "Any" }
                            @for s in ["booked", "pending", "void"] {
                                option value=(s) selected[value(name) == s] { (s) }
                            }
                        }
                    } @else {
                        input type=(kind) name=(name) value=(value(name));
                    }
                }
            }
            label {
                "Order"
                select name="order" {
                    option value="asc" selected[value("order") != "desc"] { "Oldest first" }
                    option value="desc" selected[value("order") == "desc"] { "Newest first" }
                }
            }
            button type="submit" { "Show" }
            a href="/transactions" { "Clear" }
        }
        @if let Some(p) = &problem {
            p.error role="alert" { (p) }
        }
        div.exports {
            span { "Export these rows:" }
            @for (f, label) in EXPORTS {
                a href=(export_link(f)) download { (label) }
            }
        }
        @if rows.is_empty() && problem.is_none() {
            p.empty {
                @if pairs.is_empty() {
                    "No transactions yet. Sync a connection (" code { "bankbridge sync" } ") and they appear here."
                } @else {
                    "No transaction matches these filters. " a href="/transactions" { "Clear the filters" } "."
                }
            }
        } @else if !rows.is_empty() {
            @if viewer.allows(Scope::Write) {
                p.hint { "A category you set here stays: category rules never overwrite it. Empty it to hand the row back to the rules." }
            }
            (table(&rows, &names, &viewer, &here))
            nav.pager aria-label="Pages" {
                @if !value("cursor").is_empty() {
                    a href={"/transactions?" (encode(&without_cursor))} { "First page" }
                }
                @if let Some(link) = &next_link {
                    a href=(link) rel="next" { "Next page" }
                }
            }
        }
    };
    Ok(layout::page(&viewer, "/transactions", "Transactions", body).into_response())
}

fn table(
    rows: &[bankbridge_core::Transaction],
    names: &HashMap<i64, String>,
    viewer: &Viewer,
    here: &str,
) -> Markup {
    let editable = viewer.allows(Scope::Write);
    html! {
        div.table-wrap {
            table {
                thead { tr {
                    th scope="col" { "Date" }
                    th scope="col" class="opt" { "Account" }
                    th scope="col" { "Label" }
                    th scope="col" class="opt" { "Counterparty" }
                    th scope="col" class="num" { "Amount" }
                    th scope="col" class="opt" { "Category" }
                    th scope="col" class="opt" { "Status" }
                } }
                tbody {
                    @for t in rows {
                        tr {
                            td.date { (t.booking_date) }
                            td class="opt" { (names.get(&t.account_id).map(String::as_str).unwrap_or("—")) }
                            td { (t.label) }
                            td class="opt" { (t.counterparty_name.as_deref().unwrap_or("")) }
                            td.num { (money(&t.amount.to_string(), t.currency.as_str())) }
                            td class="opt" {
                                @if editable {
                                    form.category method="post" action={"/transactions/" (t.id) "/category"} {
                                        input type="hidden" name="csrf" value=(viewer.csrf);
                                        input type="hidden" name="back" value=(here);
                                        input type="text" name="category" value=(t.category.as_deref().unwrap_or(""))
                                            maxlength="64" aria-label={"Category of " (t.label) " on " (t.booking_date)};
                                        button type="submit" { "Set" }
                                    }
                                } @else {
                                    (t.category.as_deref().unwrap_or(""))
                                }
                            }
                            td class="opt" { (t.status.as_str()) }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct CategoryForm {
    #[serde(default)]
    category: String,
    #[serde(default)]
    back: String,
}

/// `POST /transactions/{id}/category` (write): a person's category for one
/// transaction, which rules never overwrite; empty hands it back to them.
pub(crate) async fn set_category(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Posted { viewer, form }: Posted<CategoryForm>,
) -> PageResult {
    viewer.require(Scope::Write)?;
    let category = form.category.trim();
    if category.chars().count() > 64 || category.chars().any(char::is_control) {
        return Err(PageError::new(
            StatusCode::BAD_REQUEST,
            "A category is at most 64 characters, without control characters. Nothing was changed.",
        ));
    }
    let category = (!category.is_empty()).then_some(category);
    if !state
        .store
        .edits
        .set_manual_category(id, category, chrono::Utc::now())
        .await?
    {
        return Err(PageError::not_found(format!(
            "There is no transaction {id}."
        )));
    }
    state.data_changed();
    // Back to the page the form was on; never to another site.
    let back = if form.back.starts_with("/transactions")
        && axum::http::HeaderValue::from_str(&form.back).is_ok()
    {
        form.back
    } else {
        "/transactions".to_owned()
    };
    Ok(Redirect::to(&back).into_response())
}

/// The export links: (format, label).
const EXPORTS: [(&str, &str); 8] = [
    ("csv", "CSV"),
    ("json", "JSON"),
    ("ofx", "OFX"),
    ("qif", "QIF"),
    ("camt053", "CAMT.053"),
    ("camt053-02", "CAMT.053 (.02)"),
    ("beancount", "Beancount"),
    ("ledger", "Ledger journal"),
];

/// `GET /transactions/export`: the API's export, for a signed-in person.
pub(crate) async fn export(
    state: State<AppState>,
    _viewer: Viewer,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let pairs = filled(raw.as_deref());
    crate::api::export::export(state, RawQuery(Some(encode(&pairs)))).await
}
