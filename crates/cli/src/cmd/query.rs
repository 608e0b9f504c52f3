use std::process::ExitCode;
use std::str::FromStr;

use anyhow::{Context, Result, bail};
use bankbridge_core::TxStatus;
use bankbridge_server::export::Format;
use bankbridge_store::TxQuery;
use chrono::NaiveDate;
use rust_decimal::Decimal;

use crate::config::Config;

/// Filters shared by `transactions` and `export`.
#[derive(clap::Args, Debug, Clone)]
pub struct Filters {
    /// Account id.
    #[arg(long)]
    pub account: Option<i64>,
    /// First booking date (YYYY-MM-DD).
    #[arg(long)]
    pub from: Option<NaiveDate>,
    /// Last booking date (YYYY-MM-DD).
    #[arg(long)]
    pub to: Option<NaiveDate>,
    /// Text in the label, counterparty or remittance information.
    #[arg(long)]
    pub text: Option<String>,
    /// pending, booked or void.
    #[arg(long, value_parser = ["pending", "booked", "void"])]
    pub status: Option<String>,
    #[arg(long, value_parser = Decimal::from_str, allow_hyphen_values = true)]
    pub min_amount: Option<Decimal>,
    #[arg(long, value_parser = Decimal::from_str, allow_hyphen_values = true)]
    pub max_amount: Option<Decimal>,
}

impl Filters {
    fn query(&self) -> TxQuery {
        TxQuery {
            account_id: self.account,
            from: self.from,
            to: self.to,
            text: self.text.clone(),
            status: self.status.as_deref().and_then(TxStatus::parse),
            min_amount: self.min_amount,
            max_amount: self.max_amount,
            ..Default::default()
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct TransactionsArgs {
    #[command(flatten)]
    pub filters: Filters,
    /// Show the newest N rows matching (0 = all).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// One JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn transactions(config: &Config, args: TransactionsArgs) -> Result<ExitCode> {
    use futures::TryStreamExt;
    let store = config.store().await?;
    // Rows come oldest first; keep only the newest `limit` while streaming.
    let mut rows = std::collections::VecDeque::new();
    let mut stream = store.stream_transactions(args.filters.query());
    while let Some(tx) = stream.try_next().await? {
        rows.push_back(tx);
        if args.limit > 0 && rows.len() > args.limit {
            rows.pop_front();
        }
    }
    drop(stream);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                t.booking_date.to_string(),
                t.status.as_str().to_owned(),
                format!("{:>12}", t.amount.to_string()),
                t.currency.to_string(),
                truncate(t.counterparty_name.as_deref().unwrap_or(""), 24),
                truncate(&t.label, 40),
            ]
        })
        .collect();
    super::print_table(
        &[
            "ID",
            "DATE",
            "STATUS",
            "AMOUNT",
            "CCY",
            "COUNTERPARTY",
            "LABEL",
        ],
        &table,
    );
    Ok(ExitCode::SUCCESS)
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max - 1).collect();
        out.push('…');
        out
    }
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    #[arg(long, value_parser = ["csv", "json", "ofx"])]
    pub format: String,
    /// Output file (default: standard output).
    #[arg(long, short)]
    pub output: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub filters: Filters,
}

pub async fn export(config: &Config, args: ExportArgs) -> Result<ExitCode> {
    let Some(format) = Format::parse(&args.format) else {
        bail!("unknown format {}", args.format)
    };
    let store = config.store().await?;
    let query = args.filters.query();
    let stats = match &args.output {
        // A device or pipe (/dev/null, a FIFO) is written in place: renaming a
        // temporary file over it would replace it.
        Some(path) if path.exists() && !std::fs::metadata(path)?.is_file() => {
            let file = tokio::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .await
                .with_context(|| format!("opening {}", path.display()))?;
            let mut w = tokio::io::BufWriter::new(file);
            let stats =
                bankbridge_server::export::export_to_writer(store.as_ref(), &query, format, &mut w)
                    .await?;
            tokio::io::AsyncWriteExt::flush(&mut w).await?;
            stats
        }
        Some(path) => {
            // Write beside the target and rename, so a failed export never leaves half a file.
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let tmp = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("creating a file in {}", dir.display()))?;
            let file = tokio::fs::File::from_std(tmp.reopen()?);
            let mut w = tokio::io::BufWriter::new(file);
            let stats =
                bankbridge_server::export::export_to_writer(store.as_ref(), &query, format, &mut w)
                    .await?;
            tokio::io::AsyncWriteExt::flush(&mut w).await?;
            w.into_inner().sync_all().await?;
            tmp.persist(path)
                .with_context(|| format!("writing {}", path.display()))?;
            stats
        }
        None => {
            let mut out = tokio::io::stdout();
            let stats = bankbridge_server::export::export_to_writer(
                store.as_ref(),
                &query,
                format,
                &mut out,
            )
            .await?;
            tokio::io::AsyncWriteExt::flush(&mut out).await?;
            stats
        }
    };
    eprintln!(
        "exported {} transactions ({} bytes)",
        stats.rows, stats.bytes
    );
    Ok(ExitCode::SUCCESS)
}
