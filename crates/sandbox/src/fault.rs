//! Fault injection for the simulated banks' APIs.
//!
//! Decisions are random per request (the thread RNG, not the data seed) so a
//! retry of a failed request can succeed. Faults never touch login pages (they
//! only get the latency) nor the `/_sandbox/...` control routes.
use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// One kind of failure an API request can meet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// HTTP 500, 502 or 503.
    ServerError,
    /// HTTP 429 with `Retry-After: 1`.
    RateLimited,
    /// HTTP 200 whose JSON body stops halfway.
    Truncated,
    /// HTTP 200 with complete JSON of the wrong shape.
    Malformed,
    /// `getFilteredAccounts` reports an IBAN whose check digits are wrong
    /// (other endpoints are unaffected).
    BadIban,
}

impl FaultKind {
    /// The kinds a non-zero `fault_rate` picks from unless told otherwise.
    pub const DEFAULT: &'static [FaultKind] = &[
        FaultKind::ServerError,
        FaultKind::RateLimited,
        FaultKind::Truncated,
    ];
}

/// Fault knobs, settable at start and at run time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Delay before every bank request is answered (login pages included).
    pub latency_ms: u64,
    /// Share of API requests (0 to 1) that fail with one of `kinds`, picked uniformly.
    pub fault_rate: f64,
    /// The kinds of fault to inject.
    pub kinds: Vec<FaultKind>,
    /// An access token stops working (HTTP 401) after this many API requests.
    pub session_ttl_requests: Option<u32>,
    /// An access token stops working (HTTP 401) this many seconds after login.
    pub session_ttl_secs: Option<u64>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            latency_ms: 0,
            fault_rate: 0.0,
            kinds: FaultKind::DEFAULT.to_vec(),
            session_ttl_requests: None,
            session_ttl_secs: None,
        }
    }
}

impl FaultConfig {
    /// Every request fails with `kind`: for tests.
    pub fn always(kind: FaultKind) -> Self {
        FaultConfig {
            fault_rate: 1.0,
            kinds: vec![kind],
            ..FaultConfig::default()
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.fault_rate.is_finite() && (0.0..=1.0).contains(&self.fault_rate)) {
            return Err(ConfigError::FaultRate(self.fault_rate.to_string()));
        }
        Ok(())
    }

    /// Decide the fate of one API request.
    pub fn roll(&self) -> Option<FaultKind> {
        if self.fault_rate <= 0.0 || self.kinds.is_empty() {
            return None;
        }
        use rand::Rng;
        let mut rng = rand::rng();
        if rng.random::<f64>() < self.fault_rate {
            Some(self.kinds[rng.random_range(0..self.kinds.len())])
        } else {
            None
        }
    }

    pub fn latency(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.latency_ms.min(60_000))
    }
}

/// HTTP status of a server-error fault: 500, 502 or 503.
pub fn server_error_status() -> u16 {
    use rand::Rng;
    [500, 502, 503][rand::rng().random_range(0..3)]
}

/// The first half of `body`, cut on a character boundary so what is left is
/// valid UTF-8 that simply ends too early.
pub fn truncate(body: &str) -> String {
    let mut cut = body.len() / 2;
    while cut > 0 && !body.is_char_boundary(cut) {
        cut -= 1;
    }
    body[..cut].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_zero_never_and_one_always() {
        let none = FaultConfig::default();
        assert!((0..100).all(|_| none.roll().is_none()));
        let all = FaultConfig::always(FaultKind::Truncated);
        assert!((0..100).all(|_| all.roll() == Some(FaultKind::Truncated)));
    }

    #[test]
    fn truncation_keeps_utf8() {
        let s = "{\"a\":\"ЖЖЖЖЖЖ\"}";
        for _ in 0..3 {
            let t = truncate(s);
            assert!(t.len() < s.len());
            assert!(
                serde_json::from_str::<serde_json::Value>(&t)
                    .unwrap_err()
                    .is_eof()
            );
        }
    }

    #[test]
    fn kinds_serialise_snake_case() {
        let j = serde_json::to_string(&FaultConfig::always(FaultKind::BadIban)).unwrap();
        assert!(j.contains("\"bad_iban\""), "{j}");
        assert!(serde_json::from_str::<FaultConfig>(r#"{"nope":1}"#).is_err());
    }
}
