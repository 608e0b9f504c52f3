//! `/documents`: statements and other documents the banks hold, by account
//! and date; one shown inline (PDFs in the browser's viewer) or downloaded.
use std::collections::HashMap;

use axum::extract::{Path, Query, RawQuery, State};
use axum::response::IntoResponse;
use bankbridge_core::Document;
use maud::{Markup, html};
use serde::Deserialize;

use super::form::{PageError, PageResult};
use super::layout;
use super::session::Viewer;
use crate::AppState;
use crate::api::documents::{document_file, parse_query};
use crate::params;

/// Documents per page.
const PAGE: u32 = 50;

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / f64::from(1 << 20)),
        b if b >= 1 << 10 => format!("{:.0} kB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

pub(crate) async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let pairs: Vec<(String, String)> = params::pairs(raw.as_deref())
        .into_iter()
        .filter(|(k, v)| !v.trim().is_empty() && k != "limit")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let value = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let accounts = state.store.bank.list_accounts(None).await?;
    let names: HashMap<i64, String> = accounts.iter().map(|a| (a.id, a.display_name())).collect();
    let encoded = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&pairs)
        .finish();
    let (docs, problem) = match parse_query(Some(&encoded)) {
        Ok(mut q) => {
            q.limit = Some(PAGE + 1);
            (state.store.bank.list_documents(&q).await?, None)
        }
        Err(e) if e.status.is_client_error() => (Vec::new(), Some(e.message.into_owned())),
        Err(e) => return Err(e.into()),
    };
    let more = docs.len() > PAGE as usize;
    let docs = &docs[..docs.len().min(PAGE as usize)];
    let next = more.then(|| {
        let last = &docs[docs.len() - 1];
        let mut p: Vec<(String, String)> = pairs
            .iter()
            .filter(|(k, _)| k != "cursor")
            .cloned()
            .collect();
        p.push((
            "cursor".into(),
            params::encode_cursor(last.date.unwrap_or(chrono::NaiveDate::MAX), last.id),
        ));
        format!(
            "/documents?{}",
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&p)
                .finish()
        )
    });
    let body = html! {
        form.filters method="get" action="/documents" aria-label="Filters" {
            label { "Account"
                select name="account" {
                    option value="" { "All accounts" }
                    @for a in &accounts {
                        option value=(a.id) selected[value("account") == a.id.to_string()] { (a.display_name()) }
                    }
                }
            }
            label { "From" input type="date" name="from" value=(value("from")); }
            label { "To" input type="date" name="to" value=(value("to")); }
            button type="submit" { "Show" }
            a href="/documents" { "Clear" }
        }
        @if let Some(p) = &problem { p.error role="alert" { (p) } }
        @if docs.is_empty() && problem.is_none() {
            p.empty {
                @if pairs.is_empty() {
                    "No documents yet. Banks that publish statements have them fetched at each sync."
                } @else {
                    "No document matches these filters. " a href="/documents" { "Clear the filters" } "."
                }
            }
        } @else if !docs.is_empty() {
            (table(docs, &names))
            @if let Some(next) = &next {
                nav.pager aria-label="Pages" { a href=(next) rel="next" { "Next page" } }
            }
        }
    };
    Ok(layout::page(&viewer, "/documents", "Documents", body).into_response())
}

fn table(docs: &[Document], names: &HashMap<i64, String>) -> Markup {
    html! {
        div.table-wrap { table {
            thead { tr {
                th scope="col" { "Date" }
                th scope="col" { "Document" }
                th scope="col" class="opt" { "Account" }
                th scope="col" class="num opt" { "Size" }
                th scope="col" { span.visually-hidden { "Actions" } }
            } }
            tbody {
                @for d in docs {
                    tr {
                        td.date { @match d.date { Some(day) => (day), None => "undated" } }
                        td { a href={"/documents/" (d.id)} { (d.title) } br; span.hint { (d.kind) } }
                        td class="opt" { (d.account_id.and_then(|a| names.get(&a)).map(String::as_str).unwrap_or("—")) }
                        td class="num opt" { (size(d.size)) }
                        td { a href={"/documents/" (d.id) "/file"} download aria-label={"Download " (d.title)} { "Download" } }
                    }
                }
            }
        } }
    }
}

/// `GET /documents/{id}`: one document, shown inline when it is a PDF.
pub(crate) async fn show(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    viewer: Viewer,
) -> PageResult {
    let doc = state
        .store
        .bank
        .get_document(id)
        .await?
        .ok_or_else(|| PageError::not_found(format!("There is no document {id}.")))?;
    let pdf = doc.content_type.split(';').next().unwrap_or("").trim() == "application/pdf";
    let body = html! {
        dl.facts {
            dt { "Kind" } dd { (doc.kind) }
            dt { "Date" } dd { @match doc.date { Some(d) => (d), None => "undated" } }
            dt { "Size" } dd { (size(doc.size)) }
            dt { "SHA-256" } dd { code { (doc.sha256) } }
        }
        p { a href={"/documents/" (doc.id) "/file"} download { "Download" } }
        @if pdf {
            iframe.document src={"/documents/" (doc.id) "/file?inline=1"} title=(doc.title) {}
        } @else {
            p.hint { "This document is a " (doc.content_type) " file: download it to open it." }
        }
    };
    Ok(layout::page(&viewer, "/documents", &doc.title, body).into_response())
}

#[derive(Deserialize)]
pub(crate) struct FileQuery {
    #[serde(default)]
    inline: Option<String>,
}

/// `GET /documents/{id}/file[?inline=1]`.
pub(crate) async fn file(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    _viewer: Viewer,
    Query(q): Query<FileQuery>,
) -> PageResult {
    Ok(document_file(&state, id, q.inline.is_some()).await?)
}
