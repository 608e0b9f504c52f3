//! API tokens, without any HTTP: creation, parsing and verification.
//!
//! A token reads `bb_<id>_<secret>`: `id` is 12 random lower-case hex
//! characters (public; the store looks the token up by it), `secret` is 32
//! random bytes in unpadded base64url. Only the SHA-256 of the whole token is
//! stored; the plaintext is shown once, when it is created. Presented tokens
//! are compared with the stored hash in constant time.
use bankbridge_core::Secret;
use bankbridge_store::{Scope, TokenRecord};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every token starts with this.
pub const TOKEN_PREFIX: &str = "bb_";
const ID_BYTES: usize = 6;
const SECRET_BYTES: usize = 32;
/// Length of the base64url (unpadded) secret part.
const SECRET_CHARS: usize = 43;

/// Create a token. Returns the plaintext (print it once, never store it) and
/// the record to store with [`bankbridge_store::Store::create_token`].
pub fn new_token(name: &str, scope: Scope) -> (Secret<String>, TokenRecord) {
    let mut rng = rand::rng();
    let mut id = [0u8; ID_BYTES];
    rng.fill_bytes(&mut id);
    let mut secret = [0u8; SECRET_BYTES];
    rng.fill_bytes(&mut secret);
    let id = hex::encode(id);
    let plaintext = Secret::new(format!(
        "{TOKEN_PREFIX}{id}_{}",
        URL_SAFE_NO_PAD.encode(secret)
    ));
    secret.fill(0);
    let record = TokenRecord {
        id,
        name: name.to_owned(),
        scope,
        hash: hash_token(plaintext.expose()).to_vec(),
        created_at: Utc::now(),
        last_used_at: None,
        revoked_at: None,
        location: None,
        expires_at: None,
    };
    (plaintext, record)
}

/// SHA-256 of the whole presented token: what the store keeps, and the key
/// of the server's verified-token cache.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// How long a one-time sign-in link works.
pub const LOGIN_LINK_TTL: chrono::TimeDelta = chrono::TimeDelta::minutes(15);

/// A one-time sign-in link's secret for token `token_id`, kept in `tokens`
/// as its hash, working for [`LOGIN_LINK_TTL`]. The dashboard's link is
/// `<origin>/login/link/<secret>`.
pub async fn new_login_link(
    tokens: &dyn bankbridge_store::Tokens,
    token_id: &str,
) -> Result<Secret<String>, bankbridge_store::StoreError> {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    let secret = Secret::new(URL_SAFE_NO_PAD.encode(bytes));
    bytes.fill(0);
    let now = Utc::now();
    tokens
        .create_login_link(
            &hash_token(secret.expose()),
            token_id,
            now,
            now + LOGIN_LINK_TTL,
        )
        .await?;
    Ok(secret)
}

/// The public id of a well-formed token, `None` when the text cannot be a
/// bankbridge token (no store lookup is worth doing then).
pub fn token_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = (8..=12).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
    let secret_ok = secret.len() == SECRET_CHARS
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && secret_ok).then_some(id)
}

/// Whether `presented` is the token `record` was made from. Constant time in
/// the content of the hashes. Does not look at revocation: see [`check`].
pub fn verify(record: &TokenRecord, presented: &str) -> bool {
    verify_hash(record, &hash_token(presented))
}

/// [`verify`] with the hash already computed.
pub fn verify_hash(record: &TokenRecord, presented_hash: &[u8; 32]) -> bool {
    record.hash.len() == 32 && bool::from(record.hash.as_slice().ct_eq(presented_hash.as_slice()))
}

/// Why a presented token is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a bankbridge token (expected bb_<id>_<secret>)")]
    Malformed,
    #[error("the token is unknown or does not match")]
    Unknown,
    #[error("the token was revoked; create a new one with `bankbridge token create`")]
    Revoked,
    #[error("the token expired at {0}; create a new one with `bankbridge token create`")]
    Expired(String),
}

/// Full check of a presented token against the record its id names at
/// `now`: hash (constant time), revocation, expiry. Returns the token's scope.
pub fn check(
    record: &TokenRecord,
    presented_hash: &[u8; 32],
    now: DateTime<Utc>,
) -> Result<Scope, TokenError> {
    if !verify_hash(record, presented_hash) {
        return Err(TokenError::Unknown);
    }
    still_valid(record, now)
}

/// Whether the token `record` describes still works at `now` (not revoked,
/// not expired), for a holder already known: a dashboard session opened
/// with it. Returns the token's scope.
pub fn still_valid(record: &TokenRecord, now: DateTime<Utc>) -> Result<Scope, TokenError> {
    if record.revoked_at.is_some() {
        return Err(TokenError::Revoked);
    }
    if let Some(at) = record.expires_at
        && at <= now
    {
        return Err(TokenError::Expired(
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ));
    }
    Ok(record.scope)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_format_and_roundtrip() {
        let (plain, rec) = new_token("airtable", Scope::Read);
        let t = plain.expose();
        assert!(t.starts_with("bb_"), "{t}");
        assert_eq!(token_id(t), Some(rec.id.as_str()));
        assert_eq!(rec.id.len(), 12);
        assert_eq!(t.len(), 3 + 12 + 1 + SECRET_CHARS);
        assert!(verify(&rec, t));
        assert_eq!(rec.hash, hash_token(t).to_vec());
        assert!(
            !rec.hash
                .windows(8)
                .any(|w| t.as_bytes().windows(8).any(|x| x == w))
        );
        assert_eq!(format!("{plain:?}"), "[redacted]");
    }

    #[test]
    fn scopes_form_a_ladder_with_agent_beside_it() {
        use Scope::*;
        let all = [Read, Write, Admin, Agent];
        let allowed =
            |have: Scope| -> Vec<Scope> { all.into_iter().filter(|n| have.allows(*n)).collect() };
        assert_eq!(allowed(Read), [Read]);
        assert_eq!(allowed(Write), [Read, Write]);
        assert_eq!(allowed(Admin), [Read, Write, Admin, Agent]);
        assert_eq!(allowed(Agent), [Agent]);
        for s in all {
            assert_eq!(Scope::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn wrong_tokens_fail() {
        let (plain, rec) = new_token("x", Scope::Write);
        let t = plain.expose();
        let mut other = t.clone();
        let last = other.pop().unwrap();
        other.push(if last == 'A' { 'B' } else { 'A' });
        assert!(!verify(&rec, &other));
        let now = Utc::now();
        assert_eq!(
            check(&rec, &hash_token(&other), now),
            Err(TokenError::Unknown)
        );
        assert_eq!(check(&rec, &hash_token(t), now), Ok(Scope::Write));
        let mut revoked = rec.clone();
        revoked.revoked_at = Some(now);
        assert_eq!(
            check(&revoked, &hash_token(t), now),
            Err(TokenError::Revoked)
        );
        // Good until the second it expires, refused from then on.
        let mut expiring = rec.clone();
        expiring.expires_at = Some(now + chrono::Duration::days(90));
        assert_eq!(
            check(&expiring, &hash_token(t), now + chrono::Duration::days(89)),
            Ok(Scope::Write)
        );
        assert!(matches!(
            check(&expiring, &hash_token(t), now + chrono::Duration::days(90)),
            Err(TokenError::Expired(_))
        ));
        let mut short = rec.clone();
        short.hash.truncate(16);
        assert!(!verify(&short, t));
    }

    #[test]
    fn token_id_rejects_garbage() {
        assert_eq!(token_id(""), None);
        assert_eq!(token_id("bb_"), None);
        assert_eq!(token_id("bb_abc_def"), None);
        assert_eq!(
            token_id("xx_0123456789ab_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            None
        );
        assert_eq!(
            token_id("bb_0123456789AB_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            None
        );
        assert_eq!(
            token_id(&format!(
                "bb_0123456789ab_{}-_{}",
                "A".repeat(20),
                "A".repeat(21)
            )),
            Some("0123456789ab")
        );
        // Secrets may contain '_': only the first one after the id separates.
        let (plain, rec) = new_token("x", Scope::Read);
        assert_eq!(token_id(plain.expose()), Some(rec.id.as_str()));
    }
}
