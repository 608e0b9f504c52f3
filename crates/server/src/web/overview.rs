//! `GET /`: accounts with their balance now and last sync, and the
//! connections that wait for their owner.
use std::collections::HashMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bankbridge_store::{SyncOutcome, current_balance};
use maud::html;

use super::layout::{self, instant, money};
use super::session::Viewer;
use crate::AppState;
use crate::error::ApiError;

pub(crate) async fn page(
    State(state): State<AppState>,
    viewer: Viewer,
) -> Result<Response, ApiError> {
    let connections = state.store.connections.list_connections().await?;
    let accounts = state.store.bank.list_accounts(None).await?;
    let mut balances = HashMap::new();
    for a in &accounts {
        balances.insert(a.id, state.store.bank.list_balances(a.id).await?);
    }
    let by_id: HashMap<i64, _> = connections.iter().map(|c| (c.id, c)).collect();
    let waiting: Vec<_> = connections
        .iter()
        .filter(|c| {
            matches!(
                c.last_sync_status,
                SyncOutcome::NeedsUser | SyncOutcome::CredentialsRefused | SyncOutcome::Failed
            )
        })
        .collect();
    let body = html! {
        @if !waiting.is_empty() {
            section aria-labelledby="waiting" {
                h2 id="waiting" { "Connections that need you" }
                ul {
                    @for c in &waiting {
                        li {
                            strong { (c.name) } " — "
                            span class={"status-" (c.last_sync_status.as_str())} { (c.last_sync_status.as_str()) }
                            @if let Some(e) = &c.last_sync_error { ": " (e) }
                        }
                    }
                }
            }
        }
        h2 { "Accounts" }
        @if accounts.is_empty() {
            p.empty {
                "No accounts yet. Add a bank connection with "
                code { "bankbridge connection add" }
                " and sync it; its accounts appear here."
            }
        } @else {
            div.table-wrap {
                table {
                    thead { tr {
                        th scope="col" { "Account" }
                        th scope="col" class="opt" { "IBAN" }
                        th scope="col" { "Connection" }
                        th scope="col" class="num" { "Balance now" }
                        th scope="col" class="opt" { "As of" }
                        th scope="col" class="opt" { "Last sync" }
                    } }
                    tbody {
                        @for a in &accounts {
                            @let balance = balances.get(&a.id).and_then(|b| current_balance(b));
                            @let conn = by_id.get(&a.connection_id);
                            tr {
                                td { a href={"/transactions?account=" (a.id)} { (a.display_name()) } }
                                td class="opt" { (a.iban.as_ref().map(|i| i.as_str()).unwrap_or("—")) }
                                td { (conn.map(|c| c.name.as_str()).unwrap_or("—")) }
                                td.num {
                                    @if let Some(b) = balance {
                                        (money(&b.balance.amount.to_string(), b.balance.currency.as_str()))
                                    } @else { "—" }
                                }
                                td class="opt" { (balance.map(|b| b.balance.reference_date.to_string()).unwrap_or_else(|| "—".into())) }
                                td class="opt" {
                                    @match conn.and_then(|c| c.last_sync_at.as_ref()) {
                                        Some(t) => { (instant(t)) }
                                        None => { "never" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page(&viewer, "/", "Overview", body).into_response())
}
