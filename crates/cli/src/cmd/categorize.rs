//! `bankbridge categorize --rules FILE`: apply category rules to stored
//! transactions (the same rules `sync` applies at import when configured).
use std::process::ExitCode;

use anyhow::{Context, Result};
use bankbridge_core::categories::{Rules, Subject};
use bankbridge_store::TxQuery;
use chrono::Utc;
use futures::TryStreamExt;

use crate::config::Config;

/// How rows without a category are listed.
const UNCATEGORIZED: &str = "(none)";

#[derive(clap::Args, Debug)]
pub struct CategorizeArgs {
    /// The rules file (TOML; `[[rule]]` tables, first match wins).
    #[arg(long)]
    rules: std::path::PathBuf,
    /// Also clear the category of rows no rule matches (default: leave them).
    #[arg(long)]
    clear_unmatched: bool,
    /// Write nothing: show per category how many rows it would hold and
    /// change, with examples.
    #[arg(long)]
    dry_run: bool,
    /// Print `{"examined":N,"changed":N,"categories":{…}}`.
    #[arg(long)]
    json: bool,
}

/// Rows written per database transaction.
const BATCH: usize = 1000;

/// Examples shown per category in a dry run.
const EXAMPLES: usize = 3;

/// What the rules make of one category.
#[derive(Default, serde::Serialize)]
struct Tally {
    /// Rows the category holds after the rules ran.
    rows: u64,
    /// Of them, rows whose category changes.
    changes: u64,
    examples: Vec<String>,
}

pub async fn run(config: &Config, args: CategorizeArgs) -> Result<ExitCode> {
    let text = std::fs::read_to_string(&args.rules)
        .with_context(|| format!("reading {}", args.rules.display()))?;
    let rules = Rules::parse(&text, &args.rules.display().to_string())?;
    let store = config.store().await?;
    let mut examined = 0u64;
    let mut changes: Vec<(i64, Option<String>)> = Vec::new();
    let mut changed = 0u64;
    let mut tallies: std::collections::BTreeMap<String, Tally> = Default::default();
    {
        let mut rows = store.stream_transactions(TxQuery::default());
        while let Some(tx) = rows.try_next().await? {
            examined += 1;
            let category = rules.categorize(&Subject::from(&tx)).map(str::to_owned);
            let wanted = match category {
                Some(c) => Some(c),
                None if args.clear_unmatched => None,
                None => tx.category.clone(),
            };
            let tally = tallies
                .entry(wanted.clone().unwrap_or_else(|| UNCATEGORIZED.into()))
                .or_default();
            tally.rows += 1;
            if wanted != tx.category {
                tally.changes += 1;
                if tally.examples.len() < EXAMPLES {
                    tally.examples.push(format!(
                        "{} {} {} {}",
                        tx.booking_date,
                        tx.amount,
                        tx.currency,
                        super::truncate(&tx.label, 40)
                    ));
                }
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
            serde_json::json!({
                "examined": examined, "changed": changed, "dry_run": args.dry_run,
                "categories": tallies,
            })
        );
    } else {
        if args.dry_run {
            let rows: Vec<Vec<String>> = tallies
                .iter()
                .map(|(name, t)| {
                    vec![
                        name.clone(),
                        t.rows.to_string(),
                        t.changes.to_string(),
                        t.examples.join("; "),
                    ]
                })
                .collect();
            super::print_table_aligned(
                &["CATEGORY", "ROWS", "WOULD CHANGE", "EXAMPLES OF CHANGES"],
                &rows,
                &[1, 2],
            );
        }
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
