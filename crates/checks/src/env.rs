//! Which environment variables a flow may read with `{ env = "NAME" }`.
//!
//! A flow file is text anyone with access to the checks folder (or an
//! agent's server) can write, and the process running it holds
//! bankbridge's own secrets in its environment. So a flow reads only what
//! the operator put there for flows: names under `BANKBRIDGE_CHECK_`, the
//! `BANKBRIDGE_VAR_<name>` overrides, and names the operator allows one by
//! one (`--allow-env`). bankbridge's own secrets are never readable, even
//! when listed.
use std::collections::BTreeSet;
use std::sync::Arc;

/// Names under this prefix are readable by every flow.
pub const FLOW_PREFIX: &str = "BANKBRIDGE_CHECK_";
/// `BANKBRIDGE_VAR_<name>` overrides a flow variable (the operator's own).
pub const VAR_PREFIX: &str = "BANKBRIDGE_VAR_";

/// bankbridge's own configuration that holds or leads to secrets: never
/// given to a flow. Every other `BANKBRIDGE_*` name is refused as well
/// unless it is under one of the two prefixes above.
const OWN_SECRETS: &[&str] = &[
    "BANKBRIDGE_MASTER_KEY",
    "BANKBRIDGE_DB",
    "BANKBRIDGE_TOKEN",
    "BANKBRIDGE_BANKID_KEY",
    "DATABASE_URL",
    "PGPASSWORD",
];

/// Reads one environment variable (the process's, or a test's map).
pub type EnvSource = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The operator's allowance: which names flows may read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvPolicy {
    allowed: BTreeSet<String>,
}

impl EnvPolicy {
    /// The default allowance plus `names`. Refuses a name that is one of
    /// bankbridge's own secrets.
    pub fn with_allowed<I, S>(names: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut allowed = BTreeSet::new();
        for name in names {
            let name = name.into();
            if is_own(&name) {
                return Err(format!(
                    "{name} holds bankbridge's own configuration and is never given to flows; \
                     put what a flow needs in a variable of its own (e.g. {FLOW_PREFIX}…)"
                ));
            }
            if name.is_empty() || name.contains('=') {
                return Err(format!("{name:?} is not an environment variable name"));
            }
            allowed.insert(name);
        }
        Ok(Self { allowed })
    }

    /// Whether a flow may read `name`.
    pub fn allows(&self, name: &str) -> bool {
        if is_own(name) {
            return false;
        }
        name.starts_with(FLOW_PREFIX) || name.starts_with(VAR_PREFIX) || self.allowed.contains(name)
    }

    /// Why a flow may not read `name`, for its run's error.
    pub fn refusal(&self, name: &str) -> String {
        if is_own(name) {
            format!("{name} is bankbridge's own configuration and is never given to a flow")
        } else {
            format!(
                "flows may read only {FLOW_PREFIX}* variables and those the operator allows: \
                 rename it {FLOW_PREFIX}{name}, or start with --allow-env {name}"
            )
        }
    }

    /// `source` behind this policy: names it does not allow read as unset.
    pub fn filter(self: &Arc<Self>, source: EnvSource) -> EnvSource {
        let policy = Arc::clone(self);
        Arc::new(move |name| {
            if policy.allows(name) {
                source(name)
            } else {
                None
            }
        })
    }
}

fn is_own(name: &str) -> bool {
    OWN_SECRETS.contains(&name)
        || (name.starts_with("BANKBRIDGE_")
            && !name.starts_with(FLOW_PREFIX)
            && !name.starts_with(VAR_PREFIX))
}

/// This process's environment.
pub fn process_env() -> EnvSource {
    Arc::new(|name| std::env::var(name).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_read_their_prefix_and_what_the_operator_allows() {
        let p = EnvPolicy::with_allowed(["XS2A_PASSWORD"]).unwrap();
        assert!(p.allows("BANKBRIDGE_CHECK_TOKEN"));
        assert!(p.allows("BANKBRIDGE_VAR_base_url"));
        assert!(p.allows("XS2A_PASSWORD"));
        assert!(!p.allows("XS2A_API_TOKEN"));
        assert!(!p.allows("HOME"));
        for own in [
            "BANKBRIDGE_MASTER_KEY",
            "BANKBRIDGE_DB",
            "BANKBRIDGE_HOME",
            "PGPASSWORD",
        ] {
            assert!(!p.allows(own), "{own}");
            assert!(EnvPolicy::with_allowed([own]).is_err(), "{own}");
        }
        assert!(p.refusal("HOME").contains("--allow-env HOME"));
    }

    #[test]
    fn a_filtered_source_hides_what_is_not_allowed() {
        let source: EnvSource = Arc::new(|name| Some(format!("value of {name}")));
        let env = Arc::new(EnvPolicy::default()).filter(source);
        assert_eq!(env("BANKBRIDGE_MASTER_KEY"), None);
        assert_eq!(env("SECRET"), None);
        assert_eq!(
            env("BANKBRIDGE_CHECK_X").as_deref(),
            Some("value of BANKBRIDGE_CHECK_X")
        );
    }
}
