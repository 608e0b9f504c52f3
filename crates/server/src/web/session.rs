//! Dashboard sessions: a person signs in with an API token and gets an
//! HttpOnly, SameSite=Strict cookie naming a session held in memory.
//!
//! The session keeps the token (never shown again) and is checked against it
//! on every request through the same verified-token cache as the API, so a
//! revoked token ends its sessions within that cache's lifetime (5 s by
//! default). Each session has a CSRF token that every state-changing form
//! carries; a form post is also refused unless the browser says it came from
//! this site (`Sec-Fetch-Site`, else `Origin`).
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, extract::Query};
use bankbridge_core::Secret;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use serde::Deserialize;
use subtle::ConstantTimeEq as _;

use super::layout;
use crate::AppState;
use crate::guard::Principal;

/// The cookie's name.
pub(crate) const COOKIE: &str = "bb_session";
/// A session unused this long ends.
const IDLE: Duration = Duration::from_secs(12 * 3600);
/// Sessions held at most (the oldest idle ones go first).
const MAX_SESSIONS: usize = 10_000;

struct Session {
    token: Secret<String>,
    csrf: String,
    last_seen: Instant,
}

/// The sessions of this process.
#[derive(Default)]
pub(crate) struct Sessions(Mutex<HashMap<String, Session>>);

impl Sessions {
    fn open(&self, token: Secret<String>) -> String {
        let id = random_id();
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        all.retain(|_, s| now.duration_since(s.last_seen) < IDLE);
        if all.len() >= MAX_SESSIONS
            && let Some(oldest) = all
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| k.clone())
        {
            all.remove(&oldest);
        }
        all.insert(
            id.clone(),
            Session {
                token,
                csrf: random_id(),
                last_seen: now,
            },
        );
        id
    }

    /// The token and CSRF token of a live session, marking it used.
    fn touch(&self, id: &str) -> Option<(Secret<String>, String)> {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let session = all.get_mut(id)?;
        if now.duration_since(session.last_seen) >= IDLE {
            all.remove(id);
            return None;
        }
        session.last_seen = now;
        Some((session.token.clone(), session.csrf.clone()))
    }

    fn close(&self, id: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }
}

fn random_id() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The signed-in person of a dashboard request.
pub(crate) struct Viewer {
    pub principal: Arc<Principal>,
    /// Put in every form that changes something (see [`check_form`]).
    pub csrf: String,
    session: String,
}

/// Where a request without a live session goes.
pub(crate) struct SignIn;

impl IntoResponse for SignIn {
    fn into_response(self) -> Response {
        Redirect::to("/login").into_response()
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = SignIn;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, SignIn> {
        let session = cookie(&parts.headers, COOKIE).ok_or(SignIn)?;
        let (token, csrf) = state.web.sessions.touch(&session).ok_or(SignIn)?;
        match state
            .auth
            .authenticate_token(&state.store.tokens, token.expose())
            .await
        {
            Ok(principal) => Ok(Viewer {
                principal,
                csrf,
                session,
            }),
            Err(_) => {
                // Revoked or expired: the session ends with its token.
                state.web.sessions.close(&session);
                Err(SignIn)
            }
        }
    }
}

/// A cookie's value from the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

/// Whether a form post is one of ours: same site by the browser's word, and
/// carrying the session's CSRF token.
pub(crate) fn check_form(headers: &HeaderMap, viewer_csrf: &str, sent: &str) -> bool {
    same_site(headers) && bool::from(viewer_csrf.as_bytes().ct_eq(sent.as_bytes()))
}

fn same_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return matches!(site.to_str(), Ok("same-origin" | "none"));
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match (
        headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()),
        host,
    ) {
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest == host),
        // Neither header: not a browser's cross-site post (browsers send Origin on POST).
        (None, _) => true,
        _ => false,
    }
}

fn session_cookie(value: &str, secure: bool, max_age: Option<u64>) -> HeaderValue {
    let mut c = format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict");
    if secure {
        c.push_str("; Secure");
    }
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    // Only base64url and fixed text: always a valid header value.
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[derive(Deserialize)]
pub(crate) struct LoginQuery {
    #[serde(default)]
    error: Option<String>,
}

/// `GET /login`: the sign-in form.
pub(crate) async fn login_form(Query(q): Query<LoginQuery>) -> Response {
    let problem = q.error.as_deref().map(|e| match e {
        "token" => "That token is not valid: it is unknown, revoked or expired.",
        "site" => "The sign-in did not come from this page. Try again.",
        _ => "Sign-in failed. Try again.",
    });
    layout::bare("Sign in", layout::login(problem)).into_response()
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    token: String,
}

/// `POST /login`: check the token, open a session.
pub(crate) async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if !same_site(&headers) {
        return Redirect::to("/login?error=site").into_response();
    }
    let token = form.token.trim().to_owned();
    if state
        .auth
        .authenticate_token(&state.store.tokens, &token)
        .await
        .is_err()
    {
        return Redirect::to("/login?error=token").into_response();
    }
    let id = state.web.sessions.open(Secret::new(token));
    let mut res = Redirect::to("/").into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(&id, state.config.secure_cookies, None),
    );
    res
}

#[derive(Deserialize)]
pub(crate) struct LogoutForm {
    csrf: String,
}

/// `POST /logout`.
pub(crate) async fn logout(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    if !check_form(&headers, &viewer.csrf, &form.csrf) {
        return layout::refused().into_response();
    }
    state.web.sessions.close(&viewer.session);
    let mut res = Redirect::to("/login").into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie("", state.config.secure_cookies, Some(0)),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cross_site_post_is_told_apart() {
        let mut h = HeaderMap::new();
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_site(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_site(&h));
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!same_site(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_site(&h));
    }

    #[test]
    fn cookies_are_read_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; bb_session=xyz; b=2"),
        );
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
