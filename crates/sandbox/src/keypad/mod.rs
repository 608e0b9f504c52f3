//! A simulated French "keypad bank" (`docs/keypad-bank-api.md`): a 6-digit
//! PIN typed on a shuffled keypad and sent obfuscated ([`codec`]), login and
//! contract tokens valid 21 days, transactions paged by index with a 90-day
//! limit lifted by a decoupled 2FA, and PDF statements with no limit at all.
//!
//! Everything answers under [`PREFIX`]; control routes live under
//! `/_sandbox/keypad/`. The bank's clock is the sandbox day at the real time
//! of day in Paris (sent as the `Date` header); `advance` moves it, booking
//! new days and ageing tokens, keypads and 2FA requests.
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};

use base64::Engine;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::SandboxConfig;
use crate::fibank::render::money_string;
use crate::util::{lock, read, write};

pub mod codec;
pub mod data;
pub mod docs;
mod http;
pub mod pdf;

pub use http::routes;

use codec::Keys;
use data::{Params, World};

/// The path prefix every simulated keypad-bank route answers under.
pub const PREFIX: &str = "/keypad";
/// Lifetime of every token, against the bank's clock.
pub const TOKEN_SECS: i64 = 21 * 86_400;
/// A keypad's seed must come back within this many seconds.
pub const KEYPAD_SECS: i64 = 300;
/// A 2FA request waits this long for its approval.
pub const TWOFA_REQUEST_SECS: i64 = 300;
/// An approved 2FA opens the whole history for this long.
pub const TWOFA_GRANT_SECS: i64 = 21 * 86_400;
/// Consecutive wrong PINs that lock the identifier.
pub const MAX_ATTEMPTS: u32 = 3;
/// Rows older than this many days before the bank's today need 2FA.
pub const GATE_DAYS: i64 = 90;
/// At most this many rows per transactions call.
pub const MAX_ROWS: u64 = 100;
/// The clock moves at most this many days per call.
pub const MAX_ADVANCE_DAYS: u32 = 3660;
/// Beyond this many live keypads, tokens or requests the oldest are forgotten.
const MAX_ENTRIES: usize = 20_000;

/// The keypad bank's part of the sandbox configuration (its data comes from
/// the shared `seed`, `accounts`, `transactions`, `years` and `today`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeypadConfig {
    /// Approve every 2FA request as soon as it is made.
    pub auto_approve: bool,
}

/// The simulated customer's login.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeypadCredentials {
    pub identifier: String,
    pub pin: String,
    /// `http://127.0.0.1:PORT/keypad` once the server knows its address.
    pub base_url: String,
}

impl std::fmt::Debug for KeypadCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeypadCredentials")
            .field("identifier", &self.identifier)
            .field("pin", &"[redacted]")
            .field("base_url", &self.base_url)
            .finish()
    }
}

/// What an account holds at the bank's today, for checking a sync.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeypadAccountTruth {
    pub iban: String,
    pub currency: String,
    /// The contract's id (not base64).
    pub contract_id: String,
    pub internal_id: String,
    pub external_id: String,
    /// Every booked transaction up to the bank's today.
    pub count: u64,
    /// Their signed sum, as a decimal string (`-12.30`).
    pub sum: String,
    pub balance: String,
    /// Monthly statements, newest first.
    pub statements: Vec<StatementTruth>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatementTruth {
    pub download_token: String,
    /// Hex SHA-256 of the PDF bytes.
    pub sha256: String,
    /// `2020-11`
    pub month: String,
}

/// A 2FA request as the control routes show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TwoFaRequestInfo {
    pub request_id: String,
    pub contract_id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub status: TwoFaStatus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TwoFaStatus {
    Pending,
    Approved,
    Expired,
    Declined,
}

/// Why a control action on a 2FA request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TwoFaError {
    #[error("no 2FA request {0:?}")]
    Unknown(String),
    #[error("2FA request {0:?} is {1:?}, not pending")]
    NotPending(String, TwoFaStatus),
}

#[derive(Clone, Debug)]
struct Issued {
    keys: Keys,
    at: i64,
}

/// A chain of tokens: one login, or one contract opened from a login, and
/// every refresh of them. 2FA rights belong to the chain.
#[derive(Clone, Debug)]
struct Session {
    contract: Option<usize>,
    twofa_until: Option<i64>,
}

#[derive(Clone, Debug)]
struct TokenEntry {
    session: u64,
    refresh: bool,
    issued: i64,
    expires_at: i64,
}

#[derive(Clone, Debug)]
struct TwoFa {
    session: u64,
    contract: usize,
    created: i64,
    expires_at: i64,
    /// Pending, Approved or Declined; expiry is computed from the clock.
    status: TwoFaStatus,
}

impl TwoFa {
    fn status(&self, now: i64) -> TwoFaStatus {
        if self.status == TwoFaStatus::Pending && now >= self.expires_at {
            TwoFaStatus::Expired
        } else {
            self.status
        }
    }
}

#[derive(Debug, Default)]
struct AuthState {
    keypads: HashMap<String, Issued>,
    /// Consecutive wrong PINs per identifier (any identifier, so an unknown
    /// one answers exactly like the real one).
    failures: HashMap<String, u32>,
    sessions: HashMap<u64, Session>,
    tokens: HashMap<String, TokenEntry>,
    requests: HashMap<String, TwoFa>,
    next_session: u64,
    /// PIN logins checked (right or wrong), for tests to count what a
    /// client sent.
    pin_logins: u64,
    /// Of those, the refused ones.
    wrong_pins: u64,
}

/// The outcome of `POST api/login`'s credential check.
pub(crate) enum LoginOutcome {
    Ok(Tokens),
    BadCredentials { remaining: u32 },
    Locked,
    KeypadInvalid(String),
}

pub(crate) struct Tokens {
    pub access: String,
    pub refresh: String,
    pub expires_at: i64,
}

/// Why a bearer or refresh token is refused.
pub(crate) enum TokenError {
    Missing,
    Invalid(&'static str),
    Expired,
    NeedContract,
    NeedLogin,
}

/// What a valid access token grants.
pub(crate) struct Grant {
    pub session: u64,
    pub contract: Option<usize>,
    pub twofa: bool,
}

/// The simulated keypad bank: its books behind the bank's clock, and its
/// keypads, tokens and 2FA requests.
pub struct KeypadBank {
    world: RwLock<World>,
    auth: Mutex<AuthState>,
    auto_approve: AtomicBool,
    base_url: RwLock<Option<String>>,
    /// SHA-256 of documents by token (a listed document never changes).
    hashes: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for KeypadBank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeypadBank")
            .field("today", &self.today())
            .finish_non_exhaustive()
    }
}

fn random_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// What clients send as a contract id: base64 of the id without its last 2
/// characters (its `==` padding).
pub fn short_contract_id(id: &str) -> String {
    let mut b = base64::engine::general_purpose::STANDARD.encode(id);
    b.truncate(b.len().saturating_sub(2));
    b
}

/// Drop expired entries, then the oldest, until `map` has room.
fn make_room<T>(
    map: &mut HashMap<String, T>,
    expired: impl Fn(&T) -> bool,
    age: impl Fn(&T) -> i64,
) {
    if map.len() < MAX_ENTRIES {
        return;
    }
    map.retain(|_, v| !expired(v));
    if map.len() >= MAX_ENTRIES {
        let mut by_age: Vec<(i64, String)> = map.iter().map(|(k, v)| (age(v), k.clone())).collect();
        by_age.sort();
        for (_, k) in by_age.into_iter().take(map.len() / 2 + 1) {
            map.remove(&k);
        }
    }
}

impl KeypadBank {
    pub fn new(config: &SandboxConfig) -> KeypadBank {
        let world = World::new(Params {
            seed: config.seed,
            accounts: config.accounts,
            transactions: config.transactions,
            years: config.years,
            today: config.day_in(chrono_tz::Europe::Paris),
        });
        KeypadBank {
            world: RwLock::new(world),
            auth: Mutex::new(AuthState::default()),
            auto_approve: AtomicBool::new(config.keypad.auto_approve),
            base_url: RwLock::new(None),
            hashes: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn set_base_url(&self, url: String) {
        *write(&self.base_url) = Some(url);
    }

    pub(crate) fn world(&self) -> RwLockReadGuard<'_, World> {
        read(&self.world)
    }

    pub fn credentials(&self) -> KeypadCredentials {
        let w = read(&self.world);
        KeypadCredentials {
            identifier: w.identifier.clone(),
            pin: w.pin.clone(),
            base_url: read(&self.base_url)
                .clone()
                .unwrap_or_else(|| PREFIX.to_owned()),
        }
    }

    /// The bank's today.
    pub fn today(&self) -> NaiveDate {
        read(&self.world).day
    }

    /// The bank's clock: its today at the real time of day in Paris.
    pub fn now(&self) -> DateTime<Utc> {
        crate::util::wall_clock_on(self.today(), chrono_tz::Europe::Paris, chrono::Utc::now())
    }

    fn now_secs(&self) -> i64 {
        self.now().timestamp()
    }

    /// IBANs in the bank's order.
    pub fn ibans(&self) -> Vec<String> {
        read(&self.world)
            .accounts
            .iter()
            .map(|a| a.iban.to_string())
            .collect()
    }

    /// Move the bank's clock forward (at most [`MAX_ADVANCE_DAYS`]): new
    /// rows book; tokens, keypads and 2FA requests age. Returns the new day.
    pub fn advance(&self, days: u32) -> NaiveDate {
        let mut w = write(&self.world);
        w.advance(days.min(MAX_ADVANCE_DAYS));
        w.day
    }

    pub fn auto_approve(&self) -> bool {
        self.auto_approve.load(Ordering::Relaxed)
    }

    pub fn set_auto_approve(&self, on: bool) {
        self.auto_approve.store(on, Ordering::Relaxed);
    }

    /// Count, sum and balance of every account, with its statements' hashes.
    /// CPU-bound the first time (it renders every statement).
    pub fn truth(&self) -> Vec<KeypadAccountTruth> {
        let w = read(&self.world);
        let mut statements: HashMap<usize, Vec<StatementTruth>> = HashMap::new();
        for c in 0..w.contracts.len() {
            for doc in docs::statements(&w, c) {
                let docs::Kind::Statement { account, .. } = doc.kind else {
                    continue;
                };
                statements.entry(account).or_default().push(StatementTruth {
                    sha256: self.document_hash(&w, &doc),
                    month: doc.month().unwrap_or_default(),
                    download_token: doc.token,
                });
            }
        }
        w.accounts
            .iter()
            .enumerate()
            .map(|(i, a)| KeypadAccountTruth {
                iban: a.iban.to_string(),
                currency: "EUR".to_owned(),
                contract_id: w.contracts[a.contract].id.clone(),
                internal_id: a.internal_id.clone(),
                external_id: a.external_id.clone(),
                count: a.rows.len() as u64,
                sum: money_string(a.sum),
                balance: money_string(a.balance),
                statements: statements.remove(&i).unwrap_or_default(),
            })
            .collect()
    }

    fn document_hash(&self, w: &World, doc: &docs::Doc) -> String {
        if let Some(h) = lock(&self.hashes).get(&doc.token) {
            return h.clone();
        }
        let h = hex::encode(Sha256::digest(docs::render(w, doc)));
        lock(&self.hashes).insert(doc.token.clone(), h.clone());
        h
    }

    /// The PDF behind a download token, if the bank lists it today.
    pub fn document(&self, token: &str) -> Option<Vec<u8>> {
        self.document_of(token, None)
    }

    /// The PDF behind a download token, when it belongs to `contract` (any
    /// contract when `None`).
    pub(crate) fn document_of(&self, token: &str, contract: Option<usize>) -> Option<Vec<u8>> {
        let w = read(&self.world);
        let doc = docs::all(&w).find(|d| d.token == token)?;
        if contract.is_some_and(|c| c != doc.contract) {
            return None;
        }
        Some(docs::render(&w, &doc))
    }

    /// Forget every token (and the 2FA requests of their sessions): the next
    /// call of any client fails with `TOKEN_INVALID` and it must log in with
    /// its PIN again. Returns how many tokens were live.
    pub fn revoke_all(&self) -> usize {
        let mut auth = lock(&self.auth);
        let n = auth.tokens.len();
        auth.tokens.clear();
        auth.sessions.clear();
        auth.requests.clear();
        n
    }

    /// PIN logins the bank checked since it started: (all, refused).
    pub fn pin_logins(&self) -> (u64, u64) {
        let auth = lock(&self.auth);
        (auth.pin_logins, auth.wrong_pins)
    }

    /// Forget wrong-PIN counts: locked identifiers can log in again.
    pub fn unlock(&self) {
        lock(&self.auth).failures.clear();
    }

    /// 2FA requests still waiting for approval, oldest first.
    pub fn pending_requests(&self) -> Vec<TwoFaRequestInfo> {
        let now = self.now_secs();
        let w = read(&self.world);
        let auth = lock(&self.auth);
        let mut out: Vec<TwoFaRequestInfo> = auth
            .requests
            .iter()
            .filter(|(_, r)| r.status(now) == TwoFaStatus::Pending)
            .map(|(id, r)| TwoFaRequestInfo {
                request_id: id.clone(),
                contract_id: w.contracts[r.contract].id.clone(),
                created_at: r.created,
                expires_at: r.expires_at,
                status: TwoFaStatus::Pending,
            })
            .collect();
        out.sort_by(|a, b| (a.created_at, &a.request_id).cmp(&(b.created_at, &b.request_id)));
        out
    }

    /// Approve one pending 2FA request, or every pending one; returns their ids.
    pub fn approve(&self, request_id: Option<&str>) -> Result<Vec<String>, TwoFaError> {
        self.settle(request_id, TwoFaStatus::Approved)
    }

    /// Decline one pending 2FA request, or every pending one; returns their ids.
    pub fn decline(&self, request_id: Option<&str>) -> Result<Vec<String>, TwoFaError> {
        self.settle(request_id, TwoFaStatus::Declined)
    }

    fn settle(&self, request_id: Option<&str>, to: TwoFaStatus) -> Result<Vec<String>, TwoFaError> {
        let now = self.now_secs();
        let mut auth = lock(&self.auth);
        let ids: Vec<String> = match request_id {
            Some(id) => {
                let r = auth
                    .requests
                    .get(id)
                    .ok_or_else(|| TwoFaError::Unknown(id.to_owned()))?;
                let status = r.status(now);
                if status != TwoFaStatus::Pending {
                    return Err(TwoFaError::NotPending(id.to_owned(), status));
                }
                vec![id.to_owned()]
            }
            None => auth
                .requests
                .iter()
                .filter(|(_, r)| r.status(now) == TwoFaStatus::Pending)
                .map(|(id, _)| id.clone())
                .collect(),
        };
        for id in &ids {
            settle_one(&mut auth, id, to, now);
        }
        Ok(ids)
    }

    /// A new keypad field; its seed and keys are kept for [`KEYPAD_SECS`].
    pub(crate) fn issue_keypad(&self) -> String {
        let now = self.now_secs();
        let (seed, keys) = codec::new_keypad(&mut rand::rng());
        let field = codec::encode_field(&seed, &keys);
        let mut auth = lock(&self.auth);
        make_room(&mut auth.keypads, |k| now - k.at >= KEYPAD_SECS, |k| k.at);
        auth.keypads.insert(seed, Issued { keys, at: now });
        field
    }

    /// Check a login: the identifier's lock, the keypad seed (consumed
    /// whatever the outcome), then the PIN.
    pub(crate) fn login(&self, identifier: &str, token: &str) -> LoginOutcome {
        let now = self.now_secs();
        let (real_id, real_pin) = {
            let w = read(&self.world);
            (w.identifier.clone(), w.pin.clone())
        };
        let mut auth = lock(&self.auth);
        if auth.failures.get(identifier).copied().unwrap_or(0) >= MAX_ATTEMPTS {
            return LoginOutcome::Locked;
        }
        let (seed, mangled) = match codec::decode_token(token) {
            Ok(parts) => parts,
            Err(e) => {
                return LoginOutcome::KeypadInvalid(format!("keypad value is malformed: {e}"));
            }
        };
        let keys = match auth.keypads.remove(&seed) {
            Some(k) if now - k.at < KEYPAD_SECS => k.keys,
            Some(_) => {
                return LoginOutcome::KeypadInvalid(
                    "keypad expired: fetch a new one (GET api/login/keypad)".into(),
                );
            }
            None => {
                return LoginOutcome::KeypadInvalid(
                    "unknown or already used keypad: fetch a new one (GET api/login/keypad)".into(),
                );
            }
        };
        let pin = codec::unmangle(&mangled, &keys).unwrap_or_default();
        auth.pin_logins += 1;
        if identifier == real_id && pin == real_pin {
            auth.failures.remove(identifier);
            let session = new_session(&mut auth, None);
            return LoginOutcome::Ok(issue(&mut auth, session, now));
        }
        if auth.failures.len() >= MAX_ENTRIES {
            auth.failures.retain(|_, n| *n >= MAX_ATTEMPTS);
        }
        auth.wrong_pins += 1;
        let n = auth.failures.entry(identifier.to_owned()).or_insert(0);
        *n += 1;
        if *n >= MAX_ATTEMPTS {
            LoginOutcome::Locked
        } else {
            LoginOutcome::BadCredentials {
                remaining: MAX_ATTEMPTS - *n,
            }
        }
    }

    /// Check a bearer token and the kind of token the route needs.
    pub(crate) fn authorize(
        &self,
        bearer: Option<&str>,
        contract: bool,
    ) -> Result<Grant, TokenError> {
        let token = bearer.ok_or(TokenError::Missing)?;
        let now = self.now_secs();
        let auth = lock(&self.auth);
        let t = auth
            .tokens
            .get(token)
            .ok_or(TokenError::Invalid("unknown or revoked token"))?;
        if t.refresh {
            return Err(TokenError::Invalid(
                "a refresh token is not an access token",
            ));
        }
        if now >= t.expires_at {
            return Err(TokenError::Expired);
        }
        let s = auth
            .sessions
            .get(&t.session)
            .ok_or(TokenError::Invalid("unknown or revoked token"))?;
        match (contract, s.contract) {
            (true, None) => return Err(TokenError::NeedContract),
            (false, Some(_)) => return Err(TokenError::NeedLogin),
            _ => {}
        }
        Ok(Grant {
            session: t.session,
            contract: s.contract,
            twofa: s.twofa_until.is_some_and(|u| now < u),
        })
    }

    /// Open a contract session from a login session.
    pub(crate) fn open_contract(&self, contract: usize) -> Tokens {
        let now = self.now_secs();
        let mut auth = lock(&self.auth);
        let session = new_session(&mut auth, Some(contract));
        issue(&mut auth, session, now)
    }

    /// Trade a refresh token for a new pair of the same session.
    pub(crate) fn refresh(&self, refresh: &str) -> Result<Tokens, TokenError> {
        let now = self.now_secs();
        let mut auth = lock(&self.auth);
        let t = auth.tokens.get(refresh).ok_or(TokenError::Invalid(
            "unknown, used or revoked refresh token",
        ))?;
        if !t.refresh {
            return Err(TokenError::Invalid(
                "an access token is not a refresh token",
            ));
        }
        if now >= t.expires_at {
            return Err(TokenError::Expired);
        }
        let session = t.session;
        auth.tokens.remove(refresh);
        if !auth.sessions.contains_key(&session) {
            return Err(TokenError::Invalid("unknown or revoked token"));
        }
        Ok(issue(&mut auth, session, now))
    }

    /// A new 2FA request for a contract session: (request id, expiry).
    pub(crate) fn request_twofa(&self, session: u64, contract: usize) -> (String, i64) {
        let now = self.now_secs();
        let id = hex::encode(uuid::Uuid::new_v4().as_bytes());
        let mut auth = lock(&self.auth);
        make_room(&mut auth.requests, |r| now >= r.expires_at, |r| r.created);
        let expires_at = now + TWOFA_REQUEST_SECS;
        auth.requests.insert(
            id.clone(),
            TwoFa {
                session,
                contract,
                created: now,
                expires_at,
                status: TwoFaStatus::Pending,
            },
        );
        if self.auto_approve() {
            settle_one(&mut auth, &id, TwoFaStatus::Approved, now);
        }
        (id, expires_at)
    }

    /// The status of a 2FA request made by `session` (None: no such request).
    pub(crate) fn twofa_status(&self, session: u64, id: &str) -> Option<TwoFaStatus> {
        let now = self.now_secs();
        let auth = lock(&self.auth);
        auth.requests
            .get(id)
            .filter(|r| r.session == session)
            .map(|r| r.status(now))
    }
}

fn settle_one(auth: &mut AuthState, id: &str, to: TwoFaStatus, now: i64) {
    let Some(r) = auth.requests.get_mut(id) else {
        return;
    };
    r.status = to;
    let session = r.session;
    if to == TwoFaStatus::Approved
        && let Some(s) = auth.sessions.get_mut(&session)
    {
        s.twofa_until = Some(now + TWOFA_GRANT_SECS);
    }
}

fn new_session(auth: &mut AuthState, contract: Option<usize>) -> u64 {
    auth.next_session += 1;
    let id = auth.next_session;
    auth.sessions.insert(
        id,
        Session {
            contract,
            twofa_until: None,
        },
    );
    id
}

fn issue(auth: &mut AuthState, session: u64, now: i64) -> Tokens {
    if auth.tokens.len() >= MAX_ENTRIES {
        make_room(&mut auth.tokens, |t| now >= t.expires_at, |t| t.issued);
        let live: HashSet<u64> = auth.tokens.values().map(|t| t.session).collect();
        auth.sessions
            .retain(|id, _| live.contains(id) || *id == session);
    }
    let expires_at = now + TOKEN_SECS;
    let access = random_token();
    let refresh = random_token();
    for (token, is_refresh) in [(&access, false), (&refresh, true)] {
        auth.tokens.insert(
            token.clone(),
            TokenEntry {
                session,
                refresh: is_refresh,
                issued: now,
                expires_at,
            },
        );
    }
    Tokens {
        access,
        refresh,
        expires_at,
    }
}
