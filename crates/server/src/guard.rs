//! The HTTP side of authentication: `Authorization: Bearer <token>` →
//! [`Principal`], with a short-lived in-memory cache of verified tokens.
//!
//! Per request: hash the presented token (SHA-256); a cache hit younger than
//! `token_cache_ttl` answers at once; otherwise parse the id, load the record
//! (`Store::find_token`), compare hashes in constant time, refuse revoked
//! tokens, cache the result and, at most once a minute per token, record
//! `last_used_at` in a background task. A revocation therefore takes effect
//! within `token_cache_ttl` (default 5 s). Failed lookups are not cached.
//!
//! The cache is keyed by the hash of the presented token, so a lookup reveals
//! nothing about the token through timing that SHA-256 does not already hide.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bankbridge_store::{Scope, Tokens};
use chrono::Utc;

use crate::AppState;
use crate::auth::{self, TokenError};
use crate::error::ApiError;

/// The authenticated caller, available to handlers as an `Extension<Arc<Principal>>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub token_id: String,
    pub token_name: String,
    pub scope: Scope,
    /// The check location an `agent` token serves, or the card host a
    /// `card-agent` token serves.
    pub location: Option<String>,
}

impl Principal {
    /// Whether this caller may take and report jobs of check `location` (or
    /// card host `location`; the route's scope says which): admin tokens
    /// for any, an agent token for its own only.
    pub fn serves_location(&self, location: &str) -> bool {
        match self.scope {
            Scope::Admin => true,
            Scope::Agent | Scope::CardAgent => self.location.as_deref() == Some(location),
            _ => false,
        }
    }
}

const CACHE_MAX: usize = 10_000;
const TOUCH_EVERY: Duration = Duration::from_secs(60);

struct Cached {
    principal: Arc<Principal>,
    until: Instant,
}

/// Verified-token cache and `last_used_at` bookkeeping.
pub(crate) struct TokenAuth {
    ttl: Duration,
    cache: RwLock<HashMap<[u8; 32], Cached>>,
    touched: Mutex<HashMap<String, Instant>>,
}

impl TokenAuth {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            cache: RwLock::new(HashMap::new()),
            touched: Mutex::new(HashMap::new()),
        }
    }

    /// Who presents these headers.
    pub(crate) async fn authenticate(
        &self,
        store: &Arc<dyn Tokens>,
        headers: &HeaderMap,
    ) -> Result<Arc<Principal>, ApiError> {
        self.authenticate_token(store, bearer(headers)?).await
    }

    /// Who holds this token (a bearer header's, or a dashboard session's).
    pub(crate) async fn authenticate_token(
        &self,
        store: &Arc<dyn Tokens>,
        token: &str,
    ) -> Result<Arc<Principal>, ApiError> {
        let hash = auth::hash_token(token);
        let now = Instant::now();
        if let Some(hit) = self
            .cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&hash)
            && hit.until > now
        {
            return Ok(hit.principal.clone());
        }
        let id = auth::token_id(token).ok_or_else(|| refuse(TokenError::Malformed))?;
        let record = store
            .find_token(id)
            .await?
            .ok_or_else(|| refuse(TokenError::Unknown))?;
        let scope = auth::check(&record, &hash, Utc::now()).map_err(refuse)?;
        let principal = Arc::new(Principal {
            token_id: record.id.clone(),
            token_name: record.name.clone(),
            scope,
            location: record.location.clone(),
        });
        if !self.ttl.is_zero() {
            let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= CACHE_MAX {
                cache.retain(|_, c| c.until > now);
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
            }
            // Never trusted past its expiry.
            let left = record
                .expires_at
                .and_then(|at| (at - Utc::now()).to_std().ok())
                .unwrap_or(self.ttl);
            cache.insert(
                hash,
                Cached {
                    principal: principal.clone(),
                    until: now + self.ttl.min(left),
                },
            );
        }
        self.maybe_touch(store, &record.id, now);
        Ok(principal)
    }

    /// Forget what is cached of token `token_id` (revoked in this process:
    /// it stops working here at once, elsewhere within the cache's lifetime).
    pub(crate) fn forget(&self, token_id: &str) {
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, c| c.principal.token_id != token_id);
    }

    /// A use of token `id` other than a bearer header's (a dashboard session).
    pub(crate) fn touch(&self, store: &Arc<dyn Tokens>, id: &str) {
        self.maybe_touch(store, id, Instant::now());
    }

    /// Record `last_used_at`, at most once a minute per token, off the request path.
    fn maybe_touch(&self, store: &Arc<dyn Tokens>, id: &str, now: Instant) {
        {
            let mut touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
            if touched
                .get(id)
                .is_some_and(|t| now.duration_since(*t) < TOUCH_EVERY)
            {
                return;
            }
            if touched.len() >= CACHE_MAX {
                touched.retain(|_, t| now.duration_since(*t) < TOUCH_EVERY);
            }
            touched.insert(id.to_owned(), now);
        }
        let store = store.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            if let Err(e) = store.touch_token(&id, Utc::now()).await {
                tracing::warn!(token_id = %id, error = %e, "cannot record the token's last use");
            }
        });
    }
}

fn refuse(e: TokenError) -> ApiError {
    ApiError::invalid_token(e.to_string())
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::unauthorized());
    };
    let value = value.to_str().map_err(|_| refuse(TokenError::Malformed))?;
    let Some((scheme, token)) = value.trim().split_once(' ') else {
        // The usual slip: the token alone, without its scheme.
        return Err(ApiError::unauthorized_because(
            "the Authorization header holds no scheme: send `Authorization: Bearer <token>`, \
             the word Bearer, a space, then the token",
        ));
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::unauthorized_because(format!(
            "this API takes bearer tokens, not {scheme}: send `Authorization: Bearer <token>`"
        )));
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(ApiError::unauthorized());
    }
    Ok(token)
}

/// Middleware: authenticate, then require `scope`. Installed per route with
/// `route_layer` (see [`crate::api::guarded`]), so unknown routes still answer 404.
pub(crate) async fn require(
    State((state, needed)): State<(AppState, Scope)>,
    mut req: Request,
    next: Next,
) -> Response {
    let principal = match state
        .auth
        .authenticate(&state.store.tokens, req.headers())
        .await
    {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if !principal.scope.allows(needed) {
        return ApiError::forbidden(format!(
            "this route needs a token with scope {} or above; this token has scope {}",
            needed.as_str(),
            principal.scope.as_str()
        ))
        .into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer(&headers("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer(&headers("bearer  abc ")).unwrap(), "abc");
        assert_eq!(bearer(&HeaderMap::new()).unwrap_err().code, "unauthorized");
        assert_eq!(
            bearer(&headers("Basic abc")).unwrap_err().code,
            "unauthorized"
        );
        assert_eq!(
            bearer(&headers("Bearer ")).unwrap_err().code,
            "unauthorized"
        );
        // A token without its scheme, or under another, says what to send.
        let bare = bearer(&headers("bb_abc_def")).unwrap_err();
        assert_eq!(bare.code, "unauthorized");
        assert!(
            bare.message.contains("Authorization: Bearer <token>"),
            "{}",
            bare.message
        );
        assert!(bare.message.contains("no scheme"), "{}", bare.message);
        let basic = bearer(&headers("Basic dTpw")).unwrap_err();
        assert!(basic.message.contains("not Basic"), "{}", basic.message);
    }
}
