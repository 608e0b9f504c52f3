//! `GET /api/v1/export`: the transactions a filter selects, streamed as CSV,
//! JSON, OFX, beancount, a journal, QIF or camt.053 (see [`crate::export`]).
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
    "qif_dates",
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
    /// balance and the bank's balance asserted; `qif` (one `!Account` block
    /// per account); `camt053` (ISO 20022 camt.053.001.08) or `camt053-02`
    /// (.001.02): a statement per account with its opening and closing
    /// booked balances.
    #[param(
        default = "csv",
        pattern = "^(csv|json|ofx|beancount|ledger|qif|camt053|camt053-02|camt053-08)$"
    )]
    format: Option<String>,
    /// OFX, beancount, ledger, QIF, camt.053: add pending rows (OFX: in
    /// `BANKTRANLISTP`; beancount and ledger: flag `!`; QIF: uncleared,
    /// memo `PENDING:`; camt.053: status `PDNG`). Left out by default:
    /// accounting tools would import them again once they book under their
    /// own id.
    #[param(default = false)]
    include_pending: Option<bool>,
    /// QIF: the date style, `us` (MM/DD/YYYY, default), `eu` (DD/MM/YYYY)
    /// or `iso` (YYYY-MM-DD).
    #[param(default = "us", pattern = "^(us|eu|iso)$")]
    qif_dates: Option<String>,
}

/// Every matching transaction (no paging), streamed in constant memory.
#[utoipa::path(
    get,
    path = "/api/v1/export",
    tag = "transactions",
    params(FormatParam, FilterParams),
    responses(
        (status = 200, description = "The export file (text/plain: beancount, a hledger/ledger journal or QIF; application/xml: camt.053)", content(
            (String = "text/csv"),
            (Vec<super::schema::Transaction> = "application/json"),
            (String = "application/x-ofx"),
            (String = "text/plain"),
            (String = "application/xml"),
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
        } else if name == "qif_dates" {
            options.qif_dates = value.parse().map_err(|_| {
                ApiError::invalid_parameter("qif_dates", "qif_dates must be us, eu or iso")
            })?;
        } else if name == "format" {
            format = Format::ALL
                .into_iter()
                .find(|f| f.as_str() == value)
                .or((value == "camt053-08").then_some(Format::Camt053))
                .ok_or_else(|| {
                    ApiError::invalid_parameter(
                        "format",
                        format!("format must be one of {}", Format::NAMES),
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
