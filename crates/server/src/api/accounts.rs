//! Accounts and their balance history.
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use bankbridge_store::Scope;
use utoipa::OpenApi;

use super::{List, PathId, guarded, json};
use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::params;

pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/api/v1/accounts", guarded(state, Scope::Read, get(list)))
        .route(
            "/api/v1/accounts/{id}",
            guarded(state, Scope::Read, get(get_one)),
        )
        .route(
            "/api/v1/accounts/{id}/balances",
            guarded(state, Scope::Read, get(balances)),
        )
}

#[derive(OpenApi)]
#[openapi(
    paths(list, get_one, balances),
    components(schemas(
        super::schema::Account,
        super::schema::AccountList,
        super::schema::Balance,
        super::schema::BalanceList,
        super::schema::BalanceKind
    ))
)]
pub(crate) struct Doc;

/// Every account, optionally of one connection.
#[utoipa::path(
    get,
    path = "/api/v1/accounts",
    tag = "accounts",
    params(("connection" = Option<i64>, Query, minimum = 1, description = "Only the accounts of this connection id")),
    responses(
        (status = 200, body = super::schema::AccountList),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
    )
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let mut connection = None;
    for (name, value) in params::pairs(raw.as_deref()) {
        match name.as_ref() {
            "connection" => {
                let mut q = bankbridge_store::TxQuery::default();
                params::apply_filter(&mut q, "connection", &value)?;
                connection = q.connection_id;
            }
            other => return Err(params::unknown(other, &["connection"])),
        }
    }
    let accounts = state.store.bank.list_accounts(connection).await?;
    let mut balances = Vec::with_capacity(accounts.len());
    for a in &accounts {
        balances.push(state.store.bank.list_balances(a.id).await?);
    }
    let data: Vec<AccountView> = accounts
        .iter()
        .zip(&balances)
        .map(|(account, b)| AccountView {
            account,
            balance: bankbridge_store::current_balance(b),
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &List { data: &data },
        data.len() * 450,
    ))
}

/// One account.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{id}",
    tag = "accounts",
    params(("id" = i64, Path, description = "Account id")),
    responses(
        (status = 200, body = super::schema::Account),
        (status = 404, body = ErrorBody),
    )
)]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    let account = state
        .store
        .bank
        .get_account(id)
        .await?
        .ok_or_else(|| no_account(id))?;
    let balances = state.store.bank.list_balances(id).await?;
    let view = AccountView {
        account: &account,
        balance: bankbridge_store::current_balance(&balances),
    };
    Ok(json(StatusCode::OK, &view, 450))
}

/// The balance history of an account.
#[utoipa::path(
    get,
    path = "/api/v1/accounts/{id}/balances",
    tag = "accounts",
    params(("id" = i64, Path, description = "Account id")),
    responses(
        (status = 200, body = super::schema::BalanceList),
        (status = 404, body = ErrorBody),
    )
)]
pub(crate) async fn balances(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    state
        .store
        .bank
        .get_account(id)
        .await?
        .ok_or_else(|| no_account(id))?;
    let balances = state.store.bank.list_balances(id).await?;
    Ok(json(
        StatusCode::OK,
        &List { data: &balances },
        balances.len() * 150,
    ))
}

/// An account with its balance now (see [`bankbridge_store::current_balance`]).
#[derive(serde::Serialize)]
pub(crate) struct AccountView<'a> {
    #[serde(flatten)]
    pub(crate) account: &'a bankbridge_core::Account,
    pub(crate) balance: Option<&'a bankbridge_store::StoredBalance>,
}

fn no_account(id: i64) -> ApiError {
    ApiError::not_found(format!("no account with id {id}"))
}
