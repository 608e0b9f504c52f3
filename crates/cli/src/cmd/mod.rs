//! One module per command.
use std::sync::Arc;

use anyhow::Result;
use bankbridge_core::MasterKey;
use bankbridge_store::Store;
use bankbridge_sync::{ConnectorFactory, Syncer};

use crate::config::Config;

pub mod bankid;
pub mod bench;
pub mod card;
pub mod connection;
pub mod demo;
pub mod documents;
pub mod init;
pub mod query;
pub mod sandbox;
pub mod serve;
pub mod sync;
pub mod token;

/// Every connector this binary knows, behind the sync engine's factory.
pub fn connector_factory() -> ConnectorFactory {
    Arc::new(|connection, settings, credentials| {
        bankbridge_connectors::build(&connection.connector, settings, credentials)
    })
}

/// A syncer with the default options, tunable by `BANKBRIDGE_SYNC_MAX_ATTEMPTS`
/// and `BANKBRIDGE_SYNC_BACKOFF_MS` (first retry pause).
pub fn syncer(store: Arc<dyn Store>, key: Arc<MasterKey>) -> Syncer {
    let mut s = Syncer::new(store, key, connector_factory());
    let env_u64 = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = env_u64("BANKBRIDGE_SYNC_MAX_ATTEMPTS") {
        s.options.max_attempts = n.clamp(1, 100) as u32;
    }
    if let Some(ms) = env_u64("BANKBRIDGE_SYNC_BACKOFF_MS") {
        s.options.backoff_base = std::time::Duration::from_millis(ms);
    }
    s
}

/// Store and syncer of a configured data directory.
pub async fn open(config: &Config) -> Result<(Arc<dyn Store>, Syncer)> {
    let key = config.master_key()?;
    let store = config.store().await?;
    Ok((store.clone(), syncer(store, key)))
}

/// Print rows as an aligned text table.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}", w = *w))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
