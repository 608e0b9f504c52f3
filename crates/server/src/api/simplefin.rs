//! The SimpleFIN protocol's routes under `/simplefin` (see
//! [`crate::simplefin`]). Not part of `/api/v1` nor its OpenAPI document:
//! the protocol is SimpleFIN's, with its own credentials (HTTP Basic from
//! the Access URL) and plain-text errors.
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use chrono::Utc;

use crate::AppState;
use crate::params;
use crate::simplefin::{self, AccountsQuery};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/simplefin/info", get(info))
        .route("/simplefin/create", get(create))
        .route("/simplefin/claim/{code}", post(claim))
        .route("/simplefin/accounts", get(accounts))
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

fn store_failed(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "SimpleFIN request failed in the store");
    text(
        StatusCode::INTERNAL_SERVER_ERROR,
        "bankbridge could not read its database; try again later",
    )
}

async fn info() -> Response {
    axum::Json(serde_json::json!({ "versions": simplefin::VERSIONS })).into_response()
}

/// The protocol's token page. bankbridge makes tokens on the command line
/// (an admin's act, scoped to accounts), so this page says how.
async fn create() -> Response {
    text(
        StatusCode::OK,
        "Create a SimpleFIN Token on the bankbridge host:\n\n  \
         bankbridge simplefin token create --name NAME --account ID [--account ID …] --url URL\n\n\
         and paste the token it prints into your app.\n",
    )
}

async fn claim(State(state): State<AppState>, Path(code): Path<String>) -> Response {
    match simplefin::claim(state.store.outbound.as_ref(), &code, Utc::now()).await {
        Ok(Some(access_url)) => text(StatusCode::OK, access_url),
        Ok(None) => text(
            StatusCode::FORBIDDEN,
            "this SimpleFIN Token is unknown, revoked or already claimed: if you did not claim \
             it yourself, someone else may have; revoke it and make a new one",
        ),
        Err(e) => store_failed(e),
    }
}

/// The user and password of an HTTP Basic `Authorization` header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn parse_query(raw: Option<&str>) -> Result<AccountsQuery, String> {
    let mut query = AccountsQuery::default();
    let flag = |name: &str, value: &str| match value {
        "1" | "true" => Ok(true),
        "0" | "false" | "" => Ok(false),
        _ => Err(format!("{name} must be 1 or 0")),
    };
    for (name, value) in params::pairs(raw) {
        match name.as_ref() {
            "start-date" | "end-date" => {
                let epoch: i64 = value
                    .parse()
                    .map_err(|_| format!("{name} must be a Unix time in seconds"))?;
                if name == "start-date" {
                    query.start_date = Some(epoch);
                } else {
                    query.end_date = Some(epoch);
                }
            }
            "pending" => query.pending = flag(&name, &value)?,
            "balances-only" => query.balances_only = flag(&name, &value)?,
            "account" => query.accounts.push(value.into_owned()),
            // The version a client asks for: 1.0 is the one served.
            "version" => {}
            other => return Err(format!("unknown parameter {other:?}")),
        }
    }
    Ok(query)
}

async fn accounts(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let forbidden = || {
        text(
            StatusCode::FORBIDDEN,
            "access denied: the Access URL is wrong or was revoked",
        )
    };
    let Some((user, password)) = basic_credentials(&headers) else {
        return forbidden();
    };
    let token =
        match simplefin::authenticate(state.store.outbound.as_ref(), &user, &password, Utc::now())
            .await
        {
            Ok(Some(token)) => token,
            Ok(None) => return forbidden(),
            Err(e) => return store_failed(e),
        };
    let query = match parse_query(raw.as_deref()) {
        Ok(q) => q,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    match simplefin::account_set(
        state.store.bank.as_ref(),
        state.store.connections.as_ref(),
        &token,
        &query,
    )
    .await
    {
        Ok(set) => axum::Json(set).into_response(),
        Err(e) => store_failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_read_as_the_protocol_names_them() {
        let q = parse_query(Some(
            "start-date=1700000000&end-date=1700086400&pending=1&account=acct-1&account=acct-2&version=1",
        ))
        .unwrap();
        assert_eq!(q.start_date, Some(1_700_000_000));
        assert_eq!(q.end_date, Some(1_700_086_400));
        assert!(q.pending && !q.balances_only);
        assert_eq!(q.accounts, ["acct-1", "acct-2"]);
        assert!(parse_query(Some("start-date=yesterday")).is_err());
        assert!(parse_query(Some("pending=maybe")).is_err());
        assert!(parse_query(Some("limit=5")).is_err());
    }

    #[test]
    fn basic_credentials_are_read() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            "Basic dXNlcjpwYTpzcw==".parse().unwrap(),
        );
        assert_eq!(basic_credentials(&h), Some(("user".into(), "pa:ss".into())));
        h.insert(header::AUTHORIZATION, "Bearer x".parse().unwrap());
        assert_eq!(basic_credentials(&h), None);
    }
}
