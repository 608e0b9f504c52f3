//! One module per command.
use std::sync::Arc;

use anyhow::{Context, Result};
use bankbridge_core::MasterKey;
use bankbridge_store::Store;
use bankbridge_sync::{ConnectorFactory, Syncer};

use crate::config::Config;

pub mod accounts;
pub mod bankid;
pub mod card;
pub mod card_agent;
pub mod categorize;
pub mod check;
pub mod check_agent;
pub mod check_secret;
pub mod connection;
pub mod demo;
pub mod documents;
pub mod init;
pub mod query;
pub mod sandbox;
pub mod serve;
pub mod simplefin;
pub mod sync;
pub mod token;

/// Every connector this binary knows, behind the sync engine's factory.
pub fn connector_factory() -> ConnectorFactory {
    Arc::new(|connection, settings, credentials| {
        bankbridge_connectors::build(&connection.connector, settings, credentials)
    })
}

/// A syncer with the default options, tunable by `BANKBRIDGE_SYNC_MAX_ATTEMPTS`,
/// `BANKBRIDGE_SYNC_BACKOFF_MS` (first retry pause) and
/// `BANKBRIDGE_SYNC_MAX_RETRY_AFTER` (seconds: the cap on a bank's `Retry-After`).
pub fn syncer(store: Arc<dyn Store>, key: Arc<MasterKey>) -> Syncer {
    let mut s = Syncer::new(store, key, connector_factory());
    let env_u64 = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = env_u64("BANKBRIDGE_SYNC_MAX_ATTEMPTS") {
        s.options.max_attempts = n.clamp(1, 100) as u32;
    }
    if let Some(ms) = env_u64("BANKBRIDGE_SYNC_BACKOFF_MS") {
        s.options.backoff_base = std::time::Duration::from_millis(ms);
    }
    if let Some(secs) = env_u64("BANKBRIDGE_SYNC_MAX_RETRY_AFTER") {
        s.options.max_retry_after = std::time::Duration::from_secs(secs);
    }
    s
}

/// Store and syncer of a configured data directory.
pub async fn open(config: &Config) -> Result<(Arc<dyn Store>, Syncer)> {
    let (key, store) = config.keyed_store().await?;
    let mut syncer = syncer(store.clone(), key);
    syncer.options.categories = category_rules(config)?.map(Arc::new);
    Ok((store, syncer))
}

/// The category rules applied at import: `BANKBRIDGE_CATEGORIES` or
/// `categories` in config.toml (a path relative to the data directory).
pub fn category_rules(config: &Config) -> Result<Option<bankbridge_core::categories::Rules>> {
    let path = match std::env::var_os("BANKBRIDGE_CATEGORIES") {
        Some(p) if !p.is_empty() => std::path::PathBuf::from(p),
        _ => match &config.file.categories {
            Some(p) => config.home.join(p),
            None => return Ok(None),
        },
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the category rules {}", path.display()))?;
    Ok(Some(bankbridge_core::categories::Rules::parse(
        &text,
        &path.display().to_string(),
    )?))
}

/// Print rows as an aligned text table.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    print_table_aligned(headers, rows, &[]);
}

/// Print rows as a text table whose `right` columns (numbers, amounts) are
/// right-aligned.
pub fn print_table_aligned(headers: &[&str], rows: &[Vec<String>], right: &[usize]) {
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
            .enumerate()
            .map(|(i, (c, w))| {
                if right.contains(&i) {
                    format!("{c:>w$}", w = *w)
                } else {
                    format!("{c:<w$}", w = *w)
                }
            })
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// `s` cut to `max` characters, an ellipsis marking the cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}
