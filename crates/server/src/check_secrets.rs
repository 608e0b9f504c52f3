//! The secrets flow files name with `{ secret = "name" }`, kept by the
//! server: sealed with the master key at rest, bound to their name (a row
//! copied under another name does not open), written through the API or
//! `bankbridge check secret set`, and never read back by either. Only a run
//! sees a value: a local run, or an agent's job (the agent routes need the
//! admin scope, like writing a secret).
//!
//! No HTTP here: `api::check_secrets` exposes it.
use std::collections::BTreeMap;
use std::sync::Arc;

use bankbridge_checks::flow::{Flow, SecretSource};
use bankbridge_core::{MasterKey, Secret};
use bankbridge_store::{CheckSecretInfo, FlowChecks, StoreError};
use chrono::{DateTime, SubsecRound, Utc};

/// Seals, stores and opens flow secrets; cheap to clone.
#[derive(Clone)]
pub struct CheckSecrets {
    store: Arc<dyn FlowChecks>,
    key: Arc<MasterKey>,
}

impl std::fmt::Debug for CheckSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckSecrets").finish_non_exhaustive()
    }
}

/// The sealing purpose ties a ciphertext to its secret's name.
fn purpose(name: &str) -> String {
    format!("check-secret:{name}")
}

impl CheckSecrets {
    pub fn new(store: Arc<dyn FlowChecks>, key: Arc<MasterKey>) -> Self {
        Self { store, key }
    }

    /// Stores (or replaces) a secret: whether the name is new, and the
    /// change time recorded. `Conflict` for a name outside
    /// `A-Z a-z 0-9 _ - .` (1–100 characters).
    pub async fn put(
        &self,
        name: &str,
        value: &Secret<String>,
    ) -> Result<(bool, DateTime<Utc>), StoreError> {
        let sealed = self.key.seal_str(value, &purpose(name));
        let at = Utc::now().trunc_subsecs(6);
        let created = self.store.put_check_secret(name, &sealed, at).await?;
        Ok((created, at))
    }

    pub async fn delete(&self, name: &str) -> Result<bool, StoreError> {
        self.store.delete_check_secret(name).await
    }

    /// Names and change times only.
    pub async fn list(&self) -> Result<Vec<CheckSecretInfo>, StoreError> {
        self.store.list_check_secrets().await
    }

    /// The values of the store secrets `flow` names, by secret name. One
    /// that is missing or does not open (a different master key) is left
    /// out and logged: the run then fails naming it.
    pub async fn for_flow(&self, flow: &Flow) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for source in flow.secrets.values() {
            let SecretSource::Store(name) = source else {
                continue;
            };
            if out.contains_key(name) {
                continue;
            }
            match self.store.get_check_secret(name).await {
                Ok(Some(sealed)) => match self.key.open_str(&sealed, &purpose(name)) {
                    Ok(value) => {
                        out.insert(name.clone(), value.expose().clone());
                    }
                    Err(e) => {
                        tracing::error!(check = %flow.id, secret = %name, error = %e, "checks: a stored secret does not open with this master key");
                    }
                },
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(check = %flow.id, secret = %name, error = %e, "checks: could not read a stored secret");
                }
            }
        }
        out
    }
}
