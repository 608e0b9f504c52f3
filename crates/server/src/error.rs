//! One error type for every route: [`ApiError`] answers
//! `{"code": "...", "message": "..."}` with a stable machine `code`.
//!
//! Codes (stable, part of the API contract):
//!
//! | code | status | when |
//! |---|---|---|
//! | `bad_request` | 400 | malformed JSON, a body that is not an object, ... |
//! | `invalid_parameter` | 400 | a query, path or body field has a bad value; `parameter` names it |
//! | `unauthorized` | 401 | no `Authorization: Bearer` header |
//! | `invalid_token` | 401 | unknown, malformed or revoked token |
//! | `forbidden` | 403 | the token's scope does not allow the route |
//! | `not_found` | 404 | unknown route or resource |
//! | `method_not_allowed` | 405 | known route, other method |
//! | `request_timeout` | 408 | the request body did not arrive within the read timeout |
//! | `conflict` | 409 | e.g. a connection name already taken |
//! | `sync_in_progress` | 409 | changing or deleting a connection while it syncs; starting a sync while another process syncs it |
//! | `credentials_refused` | 409 | a sync of a connection whose credentials the bank refused |
//! | `run_in_flight` | 409 | "run now" while a round of the check is open |
//! | `new_pin_required` | 409 | enabling a card that may have refused its PIN, without a new one |
//! | `payload_too_large` | 413 | request body over the cap |
//! | `unsupported_media_type` | 415 | body without `Content-Type: application/json` |
//! | `unprocessable` | 422 | well-formed, but a rule the schema cannot say refuses it (e.g. a personal number's check digit) |
//! | `bankid_too_many_orders` | 429 | the BankID gateway's cap on pending orders |
//! | `internal` | 500 | anything else; the detail is logged, never sent |
//! | `unavailable` | 503 | the database does not answer |
//! | `too_many_streams` | 503 | the cap on open event streams |
//!
//! Card, BankID and check routes add their own (`wrong_pin`, `card_blocked`,
//! `pin_outcome_unknown`, `reader_busy`, `bankid_refused`, …), listed on the
//! routes in the OpenAPI document.
use std::borrow::Cow;
use std::fmt;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bankbridge_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// The JSON body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `invalid_parameter`.
    pub code: String,
    /// Human-readable explanation: what failed and what to do.
    pub message: String,
    /// The query, path or body parameter at fault, for `invalid_parameter`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub parameter: Option<String>,
}

/// An error answered as JSON with a stable `code`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: Cow<'static, str>,
    pub parameter: Option<Cow<'static, str>>,
    /// Value of `WWW-Authenticate` for 401/403 answers.
    www_authenticate: Option<&'static str>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            parameter: None,
            www_authenticate: None,
        }
    }

    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// A parameter (query, path or body field) with a bad value.
    pub fn invalid_parameter(
        parameter: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        let mut e = Self::new(StatusCode::BAD_REQUEST, "invalid_parameter", message);
        e.parameter = Some(parameter.into());
        e
    }

    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 401 `unauthorized` with a message fitted to what the client sent.
    pub fn unauthorized_because(message: impl Into<Cow<'static, str>>) -> Self {
        let mut e = Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
        e.www_authenticate = Some("Bearer");
        e
    }

    pub fn unauthorized() -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this route needs an API token: send `Authorization: Bearer <token>` \
             (create one with `bankbridge token create --scope read`)",
        );
        e.www_authenticate = Some("Bearer");
        e
    }

    pub fn invalid_token(message: impl Into<Cow<'static, str>>) -> Self {
        let mut e = Self::new(StatusCode::UNAUTHORIZED, "invalid_token", message);
        e.www_authenticate = Some("Bearer error=\"invalid_token\"");
        e
    }

    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        let mut e = Self::new(StatusCode::FORBIDDEN, "forbidden", message);
        e.www_authenticate = Some("Bearer error=\"insufficient_scope\"");
        e
    }

    pub fn payload_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than this server accepts",
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not answer that HTTP method (see the Allow header)",
        )
    }

    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// An unexpected failure: `detail` is logged, the client gets a generic message.
    pub fn internal(detail: impl fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error while answering a request");
        Self::internal_generic()
    }

    fn internal_generic() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error; the server log has the detail",
        )
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code.to_owned(),
            message: self.message.clone().into_owned(),
            parameter: self.parameter.as_ref().map(|p| p.clone().into_owned()),
        }
    }

    /// The generic error for a bare status produced outside the handlers
    /// (a layer's 413, the router's 405, a timeout...).
    pub fn for_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::not_found("no such resource"),
            StatusCode::METHOD_NOT_ALLOWED => Self::method_not_allowed(),
            StatusCode::PAYLOAD_TOO_LARGE => Self::payload_too_large(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => unsupported_media_type(),
            StatusCode::UNAUTHORIZED => Self::unauthorized(),
            StatusCode::FORBIDDEN => Self::forbidden("this token may not use this route"),
            s if s.is_server_error() => Self::internal_generic(),
            s => Self::new(
                s,
                "bad_request",
                s.canonical_reason().unwrap_or("bad request").to_owned(),
            ),
        }
    }
}

fn unsupported_media_type() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "send the body as JSON with `Content-Type: application/json`",
    )
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.code,
            self.status.as_u16(),
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body())
            .unwrap_or_else(|_| b"{\"code\":\"internal\"}".to_vec());
        let mut res = (self.status, body).into_response();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(v) = self.www_authenticate {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(v));
        }
        if self.status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body is never read, so the connection cannot
            // carry another request: tell the client not to reuse it.
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        res
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            StoreError::Conflict(msg) => ApiError::conflict(msg),
            other => ApiError::internal(other),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match &r {
            JsonRejection::MissingJsonContentType(_) => unsupported_media_type(),
            JsonRejection::JsonSyntaxError(_) => ApiError::bad_request(format!(
                "the request body is not valid JSON: {}",
                source_text(&r)
            )),
            JsonRejection::JsonDataError(_) => json_data_error(&r),
            JsonRejection::BytesRejection(_) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::payload_too_large()
            }
            _ if r.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::payload_too_large(),
            _ => {
                ApiError::bad_request(format!("cannot read the request body: {}", source_text(&r)))
            }
        }
    }
}

/// The innermost error text of a rejection (axum prefixes its own sentence).
fn source_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// A body that is JSON but not the expected shape. The message names the
/// field; it never repeats the value of a secret field, since serde's
/// "invalid type" messages quote the value.
fn json_data_error(r: &JsonRejection) -> ApiError {
    let detail = source_text(r);
    // axum's text is "<path>: <serde message>" when a path is known.
    let field = detail
        .split_once(": ")
        .map(|(p, _)| p.to_owned())
        .filter(|p| !p.contains(' ') && !p.is_empty());
    match field {
        Some(f) if is_secret_field(&f) => {
            ApiError::invalid_parameter(f.clone(), format!("{f}: must be a string"))
        }
        Some(f) => {
            ApiError::invalid_parameter(f, format!("the request body does not fit: {detail}"))
        }
        None => ApiError::bad_request(format!("the request body does not fit: {detail}")),
    }
}

/// A body field that does not fit (`path` as serde_path_to_error writes
/// it, `.` when the body as a whole does not). The message never repeats
/// the value of a secret field.
pub(crate) fn body_field_error(path: &str, e: &serde_json::Error) -> ApiError {
    match path {
        "" | "." => ApiError::bad_request(format!("the request body does not fit: {e}")),
        f if is_secret_field(f) => {
            ApiError::invalid_parameter(f.to_owned(), format!("{f}: must be a string"))
        }
        f => ApiError::invalid_parameter(
            f.to_owned(),
            format!("the request body does not fit: {f}: {e}"),
        ),
    }
}

fn is_secret_field(path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path);
    matches!(last, "password" | "pin" | "secret" | "token") || path.starts_with("credentials")
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        match &r {
            PathRejection::FailedToDeserializePathParams(inner) => {
                let kind = inner.kind();
                let name = match kind {
                    axum::extract::path::ErrorKind::ParseErrorAtKey { key, .. }
                    | axum::extract::path::ErrorKind::InvalidUtf8InPathParam { key } => key.clone(),
                    _ => "path".to_owned(),
                };
                ApiError::invalid_parameter(name, format!("bad path parameter: {kind}"))
            }
            _ => ApiError::internal(r),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request(format!("bad query string: {}", source_text(&r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_fields_are_recognised() {
        assert!(is_secret_field("password"));
        assert!(is_secret_field("credentials.pin"));
        assert!(!is_secret_field("username"));
    }

    #[test]
    fn statuses_map_to_stable_codes() {
        assert_eq!(
            ApiError::for_status(StatusCode::PAYLOAD_TOO_LARGE).code,
            "payload_too_large"
        );
        assert_eq!(
            ApiError::for_status(StatusCode::METHOD_NOT_ALLOWED).code,
            "method_not_allowed"
        );
        assert_eq!(
            ApiError::for_status(StatusCode::BAD_GATEWAY).code,
            "internal"
        );
        let e = ApiError::invalid_parameter("limit", "too big");
        let b = serde_json::to_value(e.body()).unwrap();
        assert_eq!(b["parameter"], "limit");
        let b = serde_json::to_value(ApiError::not_found("x").body()).unwrap();
        assert!(b.get("parameter").is_none());
    }
}
