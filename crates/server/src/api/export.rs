//! `GET /api/v1/export`: the transactions a filter selects, streamed as CSV,
//! JSON or OFX (see [`crate::export`]).
use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::get;
use bankbridge_store::{Scope, TxQuery};
use chrono::Utc;
use utoipa::{IntoParams, OpenApi};

use super::guarded;
use super::transactions::FilterParams;
use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::export::{ExportOptions, Format, export_stream};
use crate::params;

pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    Router::new().route("/api/v1/export", guarded(state, Scope::Read, get(export)))
}

#[derive(OpenApi)]
#[openapi(paths(export))]
pub(crate) struct Doc;

const EXPORT_PARAMS: &[&str] = &[
    "format",
    "include_pending",
    "account",
    "connection",
    "from",
    "to",
    "min_amount",
    "max_amount",
    "text",
    "status",
    "updated_since",
];

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct FormatParam {
    /// `csv` (default), `json` (one array), `ofx` (OFX 2.2 XML, one
    /// statement per account), `beancount`, or `ledger` (a journal hledger
    /// and ledger read): both with the bank's ids as metadata, an opening
    /// balance and the bank's balance asserted.
    #[param(default = "csv", pattern = "^(csv|json|ofx|beancount|ledger)$")]
    format: Option<String>,
    /// OFX, beancount, ledger: add pending rows (OFX: `FITID`
    /// `pending-<id>`, memo `PENDING:`; beancount and ledger: flag `!`).
    /// Left out by default: accounting tools would import them again once
    /// they book under their own id.
    #[param(default = false)]
    include_pending: Option<bool>,
}

/// Every matching transaction (no paging), streamed in constant memory.
#[utoipa::path(
    get,
    path = "/api/v1/export",
    tag = "transactions",
    params(FormatParam, FilterParams),
    responses(
        (status = 200, description = "The export file (text/plain: beancount or a hledger/ledger journal)", content(
            (String = "text/csv"),
            (Vec<super::schema::Transaction> = "application/json"),
            (String = "application/x-ofx"),
            (String = "text/plain"),
        )),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
    )
)]
pub(crate) async fn export(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let mut format = Format::Csv;
    let mut query = TxQuery::default();
    let mut options = ExportOptions::default();
    for (name, value) in params::pairs(raw.as_deref()) {
        if name == "include_pending" {
            options.include_pending = match value.as_ref() {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(ApiError::invalid_parameter(
                        "include_pending",
                        "include_pending must be true or false",
                    ));
                }
            };
        } else if name == "format" {
            format = Format::ALL
                .into_iter()
                .find(|f| f.as_str() == value)
                .ok_or_else(|| {
                    ApiError::invalid_parameter(
                        "format",
                        "format must be csv, json, ofx, beancount or ledger",
                    )
                })?;
        } else if !params::apply_filter(&mut query, &name, &value)? {
            return Err(params::unknown(&name, EXPORT_PARAMS));
        }
    }
    let filename = format!(
        "bankbridge-transactions-{}.{}",
        Utc::now().format("%Y%m%d"),
        format.extension()
    );
    let body = Body::from_stream(export_stream(
        state.store.bank.clone(),
        query,
        format,
        options,
    ));
    let mut res = Response::new(body);
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
            .map_err(ApiError::internal)?,
    );
    Ok(res)
}
