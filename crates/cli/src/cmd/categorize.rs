//! `bankbridge categorize --rules FILE`: apply category rules to stored
//! transactions (the same rules `sync` applies at import when configured).
use std::process::ExitCode;

use anyhow::{Context, Result};
use bankbridge_core::categories::{Rules, Subject};
use bankbridge_store::TxQuery;
use chrono::Utc;
use futures::TryStreamExt;

use crate::config::Config;

#[derive(clap::Args, Debug)]
pub struct CategorizeArgs {
    /// The rules file (TOML; `[[rule]]` tables, first match wins).
    #[arg(long)]
    rules: std::path::PathBuf,
    /// Also clear the category of rows no rule matches (default: leave them).
    #[arg(long)]
    clear_unmatched: bool,
    /// Say what would change without writing.
    #[arg(long)]
    dry_run: bool,
    /// Print `{"examined":N,"changed":N}`.
    #[arg(long)]
    json: bool,
}

/// Rows written per database transaction.
const BATCH: usize = 1000;

pub async fn run(config: &Config, args: CategorizeArgs) -> Result<ExitCode> {
    let text = std::fs::read_to_string(&args.rules)
        .with_context(|| format!("reading {}", args.rules.display()))?;
    let rules = Rules::parse(&text, &args.rules.display().to_string())?;
    let store = config.store().await?;
    let mut examined = 0u64;
    let mut changes: Vec<(i64, Option<String>)> = Vec::new();
    let mut changed = 0u64;
    {
        let mut rows = store.stream_transactions(TxQuery::default());
        while let Some(tx) = rows.try_next().await? {
            examined += 1;
            let category = rules.categorize(&Subject::from(&tx)).map(str::to_owned);
            let wanted = match category {
                Some(c) => Some(c),
                None if args.clear_unmatched => None,
                None => continue,
            };
            if wanted != tx.category {
                changes.push((tx.id, wanted));
            }
        }
    }
    if !args.dry_run {
        for batch in changes.chunks(BATCH) {
            changed += store.set_categories(batch, Utc::now()).await?;
        }
    } else {
        changed = changes.len() as u64;
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({"examined": examined, "changed": changed, "dry_run": args.dry_run})
        );
    } else {
        eprintln!(
            "{examined} transactions examined, {changed} {} ({} rules)",
            if args.dry_run {
                "would change"
            } else {
                "changed"
            },
            rules.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
