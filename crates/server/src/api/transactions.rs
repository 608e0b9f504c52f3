//! `GET /api/v1/transactions`: filtered, keyset-paginated transactions.
use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use bankbridge_store::{Scope, TxQuery};
use utoipa::{IntoParams, OpenApi};

use super::{guarded, json_bytes};
use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::params::{self, encode_cursor};

pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    Router::new().route(
        "/api/v1/transactions",
        guarded(state, Scope::Read, get(list)),
    )
}

#[derive(OpenApi)]
#[openapi(
    paths(list),
    components(schemas(
        super::schema::Transaction,
        super::schema::TransactionPage,
        super::schema::TxStatus
    ))
)]
pub(crate) struct Doc;

/// Filters shared by `/api/v1/transactions` and `/api/v1/export` (for the document;
/// parsing is in [`crate::params`]).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct FilterParams {
    /// Only this account (id).
    #[param(minimum = 1)]
    account: Option<i64>,
    /// Only this connection (id).
    #[param(minimum = 1)]
    connection: Option<i64>,
    /// Booking date on or after (YYYY-MM-DD).
    from: Option<chrono::NaiveDate>,
    /// Booking date on or before (YYYY-MM-DD).
    to: Option<chrono::NaiveDate>,
    /// Amount at least this (decimal string; debits are negative).
    #[param(example = "-100.00", pattern = r"^-?[0-9]{1,15}(\.[0-9]{1,6})?$")]
    min_amount: Option<String>,
    /// Amount at most this (decimal string).
    #[param(pattern = r"^-?[0-9]{1,15}(\.[0-9]{1,6})?$")]
    max_amount: Option<String>,
    /// Case-insensitive substring of the label, raw label, counterparty or
    /// remittance information (1 to 200 characters, not only spaces).
    #[param(min_length = 1, max_length = 200, pattern = r"\S")]
    text: Option<String>,
    /// `pending`, `booked` or `void`.
    status: Option<super::schema::TxStatus>,
    /// Only rows of this category (set by category rules).
    #[param(min_length = 1, max_length = 200, pattern = r"\S")]
    category: Option<String>,
    /// Only rows changed at or after this instant (RFC 3339).
    updated_since: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct PageParams {
    /// Rows per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<u32>,
    /// The `next` value of the previous page.
    #[param(pattern = "^[A-Za-z0-9_-]{16}$")]
    cursor: Option<String>,
    /// `asc` (oldest first, the default) or `desc` (newest first); send the
    /// same with each page's cursor.
    #[param(pattern = "^(asc|desc)$", default = "asc")]
    order: Option<String>,
}

/// Transactions ordered by booking date, then id (newest first with
/// `order=desc`). Unknown parameters are refused.
#[utoipa::path(
    get,
    path = "/api/v1/transactions",
    tag = "transactions",
    params(FilterParams, PageParams),
    responses(
        (status = 200, description = "One page; `next` is null on the last", body = super::schema::TransactionPage),
        (status = 400, description = "A bad parameter, named in `parameter`", body = ErrorBody),
        (status = 401, body = ErrorBody),
    )
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let key = raw.as_deref().unwrap_or("");
    if let Some(body) = state.pages.get(key) {
        return Ok(json_bytes(StatusCode::OK, body));
    }
    let generation = state.pages.generation();
    let request = params::parse_page_request(raw.as_deref())?;
    let query = TxQuery {
        limit: Some(request.limit),
        ..request.query
    };
    // The rows are written as JSON by the store, straight from the database
    // rows (the same bytes `Transaction` would serialise to).
    let mut body = Vec::with_capacity(64 + request.limit as usize * 1536);
    body.extend_from_slice(b"{\"data\":[");
    let page = state
        .store
        .bank
        .transactions_page_json(&query, &mut body)
        .await?;
    body.extend_from_slice(b"],\"next\":");
    match page.more_after {
        Some((date, id)) => {
            body.push(b'"');
            body.extend_from_slice(encode_cursor(date, id).as_bytes());
            body.push(b'"');
        }
        None => body.extend_from_slice(b"null"),
    }
    body.push(b'}');
    let body = Bytes::from(body);
    state.pages.put(key, &body, generation);
    Ok(json_bytes(StatusCode::OK, body))
}
