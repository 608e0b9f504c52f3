//! Dashboard sessions: a person signs in with an API token and gets an
//! HttpOnly, SameSite=Strict cookie naming a session held in memory.
//!
//! The session keeps the id of the token it was opened with (never the
//! token) and reads that token's record on every request, so revoking or
//! expiring the token ends its sessions at once. A session opens with a
//! typed token or with a one-time link (`token create --login`). Each session has a CSRF token that every state-changing form
//! carries; a form post is also refused unless the browser says it came from
//! this site (`Sec-Fetch-Site`, else `Origin`).
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, extract::Query};
use bankbridge_core::Secret;
use bankbridge_store::Scope;
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
    token_id: String,
    csrf: String,
    last_seen: Instant,
}

/// The sessions of this process.
#[derive(Default)]
pub(crate) struct Sessions(Mutex<HashMap<String, Session>>);

impl Sessions {
    fn open(&self, token_id: String) -> String {
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
                token_id,
                csrf: random_id(),
                last_seen: now,
            },
        );
        id
    }

    /// The token id and CSRF token of a live session, marking it used.
    fn touch(&self, id: &str) -> Option<(String, String)> {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let session = all.get_mut(id)?;
        if now.duration_since(session.last_seen) >= IDLE {
            all.remove(id);
            return None;
        }
        session.last_seen = now;
        Some((session.token_id.clone(), session.csrf.clone()))
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

/// Why a request has no signed-in person.
pub(crate) enum SignIn {
    /// No live session: to the sign-in page.
    Again,
    /// The store cannot be read now.
    Unavailable,
}

impl IntoResponse for SignIn {
    fn into_response(self) -> Response {
        match self {
            SignIn::Again => Redirect::to("/login").into_response(),
            SignIn::Unavailable => super::form::PageError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "bankbridge cannot read its database just now. Try again in a moment.",
            )
            .into_response(),
        }
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = SignIn;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, SignIn> {
        let session = cookie(&parts.headers, COOKIE).ok_or(SignIn::Again)?;
        let (token_id, csrf) = state.web.sessions.touch(&session).ok_or(SignIn::Again)?;
        let record = match state.store.tokens.find_token(&token_id).await {
            Ok(record) => record,
            // The database is away: say so rather than sign the person out.
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a session's token");
                return Err(SignIn::Unavailable);
            }
        };
        let scope = record
            .as_ref()
            .map(|r| crate::auth::still_valid(r, chrono::Utc::now()));
        match (record, scope) {
            // An agent token serves a check agent and sees no bank data.
            (Some(record), Some(Ok(scope))) if scope.allows(Scope::Read) => {
                state.auth.touch(&state.store.tokens, &record.id);
                Ok(Viewer {
                    principal: Arc::new(Principal {
                        token_id: record.id,
                        token_name: record.name,
                        scope,
                        location: record.location,
                    }),
                    csrf,
                    session,
                })
            }
            _ => {
                // Revoked, expired, deleted (or an agent's): the session ends.
                state.web.sessions.close(&session);
                Err(SignIn::Again)
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
        "agent" => "That is a check agent's token: it cannot sign in to the dashboard. Use a read, write or admin token.",
        "link" => "That sign-in link is used, expired or unknown: links work once, for 15 minutes. Create another with bankbridge token create --login, or sign in with a token.",
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
    let token = Secret::new(form.token.trim().to_owned());
    let principal = match state
        .auth
        .authenticate_token(&state.store.tokens, token.expose())
        .await
    {
        Ok(p) if p.scope.allows(Scope::Read) => p,
        Ok(_) => return Redirect::to("/login?error=agent").into_response(),
        Err(_) => return Redirect::to("/login?error=token").into_response(),
    };
    signed_in(&state, principal.token_id.clone())
}

/// A new session for `token_id`, and the way to the overview.
fn signed_in(state: &AppState, token_id: String) -> Response {
    let id = state.web.sessions.open(token_id);
    let mut res = Redirect::to("/").into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(&id, state.config.secure_cookies, None),
    );
    res
}

/// `GET /login/link/{secret}`: a one-time link asks before it signs in, so
/// a link preview or a prefetch does not spend it.
pub(crate) async fn link_form(Path(secret): Path<String>) -> Response {
    layout::bare(
        "Sign in",
        maud::html! {
            h1 { "Sign in to bankbridge" }
            form.card method="post" action="/login/link" {
                input type="hidden" name="secret" value=(secret);
                p { "This one-time link signs you in once, within 15 minutes of its creation." }
                button type="submit" { "Sign in" }
            }
        },
    )
    .into_response()
}

#[derive(Deserialize)]
pub(crate) struct LinkForm {
    secret: String,
}

/// `POST /login/link`: spend the link, open a session as its token.
pub(crate) async fn link(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LinkForm>,
) -> Response {
    if !same_site(&headers) {
        return Redirect::to("/login?error=site").into_response();
    }
    let hash = crate::auth::hash_token(form.secret.trim());
    let token_id = match state
        .store
        .tokens
        .use_login_link(&hash, chrono::Utc::now())
        .await
    {
        Ok(Some(id)) => id,
        Ok(None) => return Redirect::to("/login?error=link").into_response(),
        Err(e) => return super::form::PageError::from(e).into_response(),
    };
    // The link's token must still work (not revoked since).
    match state.store.tokens.find_token(&token_id).await {
        Ok(Some(record))
            if crate::auth::still_valid(&record, chrono::Utc::now())
                .is_ok_and(|scope| scope.allows(Scope::Read)) =>
        {
            signed_in(&state, token_id)
        }
        Ok(_) => Redirect::to("/login?error=token").into_response(),
        Err(e) => super::form::PageError::from(e).into_response(),
    }
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
