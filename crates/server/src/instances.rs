//! This `serve` process among those sharing the database: it registers
//! under its name (refused while a live instance has it), beats every
//! [`BEAT`] so the others see it alive until [`GONE_AFTER`] of silence, and
//! says so on a clean stop. No HTTP here: `api::instances` lists them.
use std::time::Duration;

use bankbridge_store::{Instance, StoreError};
use chrono::Utc;

use crate::AppState;

/// How often an instance beats.
pub const BEAT: Duration = Duration::from_secs(2);
/// Silence after which an instance counts as gone (and its name is free).
pub const GONE_AFTER: Duration = Duration::from_secs(10);

/// Why this process cannot run under a name.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(
        "another bankbridge serve runs as instance {name:?} on this database ({owner}, listening on {listen}); \
         give this one another --instance-name, or stop that one"
    )]
    Taken {
        name: String,
        owner: String,
        listen: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn gone_after() -> chrono::Duration {
    chrono::Duration::from_std(GONE_AFTER).unwrap_or(chrono::Duration::seconds(10))
}

/// Take `name` for this process and remember it in `state`.
pub async fn register(state: &AppState, name: &str, listen: &str) -> Result<(), RegisterError> {
    let now = Utc::now();
    let owner = bankbridge_sync::process_owner();
    let instance = Instance {
        name: name.to_owned(),
        owner: owner.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        listen: listen.to_owned(),
        started_at: now,
        heartbeat_at: now,
        expires_at: now + gone_after(),
        stopped_at: None,
    };
    if !state.store.instances.register_instance(&instance).await? {
        let holder = state
            .store
            .instances
            .list_instances()
            .await?
            .into_iter()
            .find(|i| i.name == name);
        return Err(RegisterError::Taken {
            name: name.to_owned(),
            owner: holder.as_ref().map_or("?".into(), |h| h.owner.clone()),
            listen: holder.map_or("?".into(), |h| h.listen),
        });
    }
    let _ = state.instance.set(name.to_owned());
    Ok(())
}

/// Beat until aborted; each beat also refreshes the instance metrics.
pub fn spawn_heartbeat(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(name) = state.instance.get().cloned() else {
            return;
        };
        let owner = bankbridge_sync::process_owner();
        let mut tick = tokio::time::interval(BEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = Utc::now();
            match state
                .store
                .instances
                .beat_instance(&name, owner, now, now + gone_after())
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    // Silent too long (a frozen machine) and the name taken:
                    // this process keeps serving, but says it loudly.
                    tracing::error!(instance = %name, "instances: another process took this instance's name");
                }
                Err(e) => tracing::warn!(instance = %name, error = %e, "instances: could not beat"),
            }
            if let Ok(all) = state.store.instances.list_instances().await {
                state.metrics.set_instances(&all, now);
            }
        }
    })
}

/// A clean stop: the name is free at once.
pub async fn stop(state: &AppState) {
    let Some(name) = state.instance.get() else {
        return;
    };
    let owner = bankbridge_sync::process_owner();
    if let Err(e) = state
        .store
        .instances
        .stop_instance(name, owner, Utc::now())
        .await
    {
        tracing::warn!(instance = %name, error = %e, "instances: could not record the stop");
    }
}
