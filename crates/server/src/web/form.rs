//! What the dashboard's handlers share beyond the layout: the checked form
//! post ([`Posted`]), the scope a page needs ([`Viewer::require`]) and the
//! error page every failure becomes ([`PageError`]).
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bankbridge_store::{Scope, StoreError};
use maud::html;
use serde::de::DeserializeOwned;

use super::layout;
use super::session::{Viewer, check_form};
use crate::AppState;
use crate::error::ApiError;

/// A form post from one of our own pages by a signed-in person: it came
/// from this site and carries the session's CSRF token (else the answer is
/// 403 and nothing changes), and its fields read as `T`.
pub(crate) struct Posted<T> {
    pub viewer: Viewer,
    pub form: T,
}

/// Forms are small; a body past this is refused before it is parsed.
const MAX_FORM: usize = 64 * 1024;

impl<T: DeserializeOwned> FromRequest<AppState> for Posted<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let viewer = Viewer::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let bytes = axum::body::to_bytes(body, MAX_FORM).await.map_err(|_| {
            PageError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "This form is larger than bankbridge accepts. Nothing was changed.",
            )
            .into_response()
        })?;
        let sent = url::form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        if !check_form(&parts.headers, &viewer.csrf, &sent) {
            return Err(layout::refused());
        }
        let form = serde_urlencoded::from_bytes(&bytes).map_err(|e| {
            PageError::new(
                StatusCode::BAD_REQUEST,
                format!("This form could not be read ({e}). Nothing was changed."),
            )
            .into_response()
        })?;
        Ok(Posted { viewer, form })
    }
}

/// A form whose only field is its CSRF token (a button).
#[derive(serde::Deserialize)]
pub(crate) struct NoFields {}

impl Viewer {
    /// Whether this person's token allows `scope`.
    pub(crate) fn allows(&self, scope: Scope) -> bool {
        self.principal.scope.allows(scope)
    }

    /// Go on only with a token of `scope`: a read session that types an
    /// admin page's URL gets 403, not the page.
    pub(crate) fn require(&self, scope: Scope) -> Result<(), PageError> {
        if self.allows(scope) {
            Ok(())
        } else {
            Err(PageError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "This needs a token with scope {}; you signed in with a {} token. Sign out and sign in with another token.",
                    scope.as_str(),
                    self.principal.scope.as_str()
                ),
            ))
        }
    }
}

/// A failure shown as a page: what happened, in the status it deserves.
#[derive(Debug)]
pub(crate) struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        PageError {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn not_found(what: impl Into<String>) -> Self {
        PageError::new(StatusCode::NOT_FOUND, what)
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        // ApiError's messages are written for people and never hold secrets;
        // internal errors already read "internal error: see the server log".
        PageError::new(e.status, e.message.into_owned())
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let title = self
            .status
            .canonical_reason()
            .unwrap_or("Something went wrong");
        (
            self.status,
            layout::bare(
                title,
                html! {
                    h1 { (title) }
                    p.error role="alert" { (self.message) }
                    p { a href="/" { "Back to the overview" } }
                },
            ),
        )
            .into_response()
    }
}

/// The result of a dashboard handler.
pub(crate) type PageResult = Result<Response, PageError>;
