use std::process::ExitCode;
use std::str::FromStr;

use anyhow::{Context, Result, bail};
use bankbridge_core::Account;
use bankbridge_core::TxStatus;
use bankbridge_server::export::Format;
use bankbridge_store::{BankData, TxQuery};
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
    /// Smallest amount (debits are negative: --min-amount -100).
    #[arg(long, value_parser = Decimal::from_str, allow_hyphen_values = true)]
    pub min_amount: Option<Decimal>,
    /// Largest amount (--max-amount 0: debits only).
    #[arg(long, value_parser = Decimal::from_str, allow_hyphen_values = true)]
    pub max_amount: Option<Decimal>,
    /// Only rows of this category (as set by `bankbridge categorize`).
    #[arg(long)]
    pub category: Option<String>,
}

impl Filters {
    /// The store query; an `--account` that does not exist is an error (an
    /// empty table would read as "no transactions").
    async fn query(&self, store: &dyn BankData) -> Result<TxQuery> {
        if let Some(id) = self.account
            && store.get_account(id).await?.is_none()
        {
            bail!("no account with id {id}; see `bankbridge accounts`");
        }
        Ok(TxQuery {
            account_id: self.account,
            from: self.from,
            to: self.to,
            text: self.text.clone(),
            status: self.status.as_deref().and_then(TxStatus::parse),
            min_amount: self.min_amount,
            max_amount: self.max_amount,
            category: self.category.clone(),
            ..Default::default()
        })
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
    let store = config.parts().await?;
    // Rows come oldest first; keep only the newest `limit` while streaming.
    let mut rows = std::collections::VecDeque::new();
    let query = args.filters.query(store.bank.as_ref()).await?;
    let accounts: std::collections::HashMap<i64, Account> = store
        .bank
        .list_accounts(None)
        .await?
        .into_iter()
        .map(|a| (a.id, a))
        .collect();
    let mut stream = store.bank.stream_transactions(query);
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
            let account = accounts.get(&t.account_id);
            vec![
                t.id.to_string(),
                t.booking_date.to_string(),
                t.status.as_str().to_owned(),
                t.amount.to_string(),
                t.currency.to_string(),
                super::truncate(&account.map(Account::display_name).unwrap_or_default(), 20),
                account
                    .and_then(|a| a.iban.as_ref())
                    .map(|i| i.as_str().to_owned())
                    .unwrap_or_default(),
                t.category.clone().unwrap_or_default(),
                super::truncate(t.counterparty_name.as_deref().unwrap_or(""), 20),
                super::truncate(&t.label, 32),
            ]
        })
        .collect();
    super::print_table_aligned(
        &[
            "ID",
            "DATE",
            "STATUS",
            "AMOUNT",
            "CCY",
            "ACCOUNT",
            "IBAN",
            "CATEGORY",
            "COUNTERPARTY",
            "LABEL",
        ],
        &table,
        &[0, 3],
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// csv (a header row, amounts as money), json (one array), ofx (OFX 2.2,
    /// for accounting tools), beancount, ledger (a journal hledger and
    /// ledger read), qif, camt053 (ISO 20022 camt.053.001.08) or camt053-02
    /// (.001.02).
    #[arg(long, value_parser = ["csv", "json", "ofx", "beancount", "ledger", "qif", "camt053", "camt053-02", "camt053-08"])]
    pub format: String,
    /// Output file (default: standard output).
    #[arg(long, short)]
    pub output: Option<std::path::PathBuf>,
    /// Add pending rows, marked (OFX: in BANKTRANLISTP; beancount, ledger:
    /// flag !; QIF: uncleared, memo PENDING:; camt.053: status PDNG). Left
    /// out by default: accounting tools would import them a second time once
    /// they book.
    #[arg(long)]
    pub include_pending: bool,
    /// QIF: date style, us (MM/DD/YYYY), eu (DD/MM/YYYY) or iso.
    #[arg(long, default_value = "us", value_parser = ["us", "eu", "iso"])]
    pub qif_dates: String,
    /// Write only the transactions new or changed since the last export
    /// made under NAME (kept in the database per name, with its format),
    /// then remember this one. Ids in every format let the receiving tool
    /// skip a row it already has.
    #[arg(long, value_name = "NAME")]
    pub since_last: Option<String>,
    /// Add to the end of --output instead of replacing it (csv without a
    /// second header, beancount, ledger, qif).
    #[arg(long)]
    pub append: bool,
    /// beancount, ledger: account names from this TOML file (`[accounts]`
    /// IBAN = "Assets:…", `[categories]` category = "Expenses:…", and
    /// `bank`, `expenses`, `income`, `opening` for the defaults).
    #[arg(long, value_name = "FILE")]
    pub accounts_map: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub filters: Filters,
}

pub async fn export(config: &Config, args: ExportArgs) -> Result<ExitCode> {
    use bankbridge_server::export::{ExportOptions, LedgerNames, export_to_writer};
    let Some(format) = Format::parse(&args.format) else {
        bail!("unknown format {}", args.format)
    };
    let parts = config.parts().await?;
    let mut query = args.filters.query(parts.bank.as_ref()).await?;
    let ledger_names = match &args.accounts_map {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let names = LedgerNames::parse(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            Some(std::sync::Arc::new(names))
        }
        None => None,
    };
    let mut options = ExportOptions {
        include_pending: args.include_pending,
        ledger_names,
        qif_dates: args
            .qif_dates
            .parse()
            .map_err(|e: String| anyhow::anyhow!(e))?,
        ..ExportOptions::default()
    };
    if args.append {
        if !matches!(
            format,
            Format::Csv | Format::Beancount | Format::Ledger | Format::Qif
        ) {
            bail!(
                "--append needs a format a file can grow in (csv, beancount, ledger, qif); \
                 {format} files are one document each: write each export to its own file"
            );
        }
        if args.output.is_none() {
            bail!("--append needs --output FILE");
        }
    }
    // `--since-last NAME`: only what changed since that name's last export.
    let mark = match &args.since_last {
        Some(name) => {
            if name.trim().is_empty() {
                bail!("--since-last needs a name");
            }
            let mark = parts.outbound.export_mark(name).await?;
            if let Some(m) = &mark {
                if m.format != format.as_str() {
                    bail!(
                        "{name:?} is a {} export: use --format {} or another name",
                        m.format,
                        m.format
                    );
                }
                // Marks are whole microseconds: strictly after the last row written.
                let after = m.mark + chrono::TimeDelta::microseconds(1);
                query.updated_since = Some(query.updated_since.map_or(after, |t| t.max(after)));
                options.already_opened = std::sync::Arc::new(m.opened.iter().cloned().collect());
            }
            options.track_changes = true;
            Some((name.clone(), mark))
        }
        None => None,
    };
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
                export_to_writer(parts.bank.as_ref(), &query, format, options, &mut w).await?;
            tokio::io::AsyncWriteExt::flush(&mut w).await?;
            stats
        }
        Some(path) => {
            // Write beside the target and rename, so a failed export never
            // leaves half a file; appending copies the file first.
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let tmp = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("creating a file in {}", dir.display()))?;
            let mut file = tmp.reopen()?;
            if args.append && path.exists() {
                let mut old = std::fs::File::open(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let copied = std::io::copy(&mut old, &mut file)
                    .with_context(|| format!("copying {}", path.display()))?;
                options.csv_header = copied == 0;
            }
            let mut w = tokio::io::BufWriter::new(tokio::fs::File::from_std(file));
            let stats =
                export_to_writer(parts.bank.as_ref(), &query, format, options, &mut w).await?;
            tokio::io::AsyncWriteExt::flush(&mut w).await?;
            w.into_inner().sync_all().await?;
            tmp.persist(path)
                .with_context(|| format!("writing {}", path.display()))?;
            stats
        }
        None => {
            let mut out = tokio::io::stdout();
            let stats =
                export_to_writer(parts.bank.as_ref(), &query, format, options, &mut out).await?;
            tokio::io::AsyncWriteExt::flush(&mut out).await?;
            stats
        }
    };
    if let Some((name, old)) = mark {
        let now = chrono::Utc::now();
        let mut opened = old.as_ref().map(|m| m.opened.clone()).unwrap_or_default();
        opened.extend(stats.opened.iter().cloned());
        let new = bankbridge_store::ExportMark {
            name: name.clone(),
            format: format.as_str().to_owned(),
            mark: stats
                .newest_update
                .into_iter()
                .chain(old.as_ref().map(|m| m.mark))
                .max()
                .unwrap_or(chrono::DateTime::UNIX_EPOCH),
            opened,
            exports: old.as_ref().map_or(0, |m| m.exports) + 1,
            updated_at: now,
        };
        parts
            .outbound
            .save_export_mark(&new)
            .await
            .with_context(|| {
                format!(
                    "the export was written, but its mark {name:?} could not be saved: \
                 the next --since-last {name} repeats these rows"
                )
            })?;
        eprintln!(
            "{name}: export {} wrote {} new or changed transactions ({} bytes)",
            new.exports, stats.rows, stats.bytes
        );
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "exported {} transactions ({} bytes)",
        stats.rows, stats.bytes
    );
    Ok(ExitCode::SUCCESS)
}
