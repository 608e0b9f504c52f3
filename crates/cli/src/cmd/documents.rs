//! `bankbridge documents list|get`: statements and other documents the syncs stored.
use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use bankbridge_store::{DocumentQuery, sha256_hex};
use chrono::NaiveDate;
use clap::Subcommand;

use crate::config::Config;

#[derive(Subcommand, Debug)]
pub enum DocumentsCommand {
    /// List stored documents (bank statements, notices), oldest first.
    #[command(
        after_help = "Example: bankbridge documents list --connection my-bank --from 2024-01-01 --json"
    )]
    List(ListArgs),
    /// Write a document's bytes to a file (checked against its SHA-256).
    #[command(after_help = "Example: bankbridge documents get 12 --output statement-2024-01.pdf")]
    Get(GetArgs),
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Only this connection (name or id).
    #[arg(long)]
    pub connection: Option<String>,
    /// Only this account (id, see the API's /api/v1/accounts).
    #[arg(long)]
    pub account: Option<i64>,
    /// Document date on or after (YYYY-MM-DD).
    #[arg(long)]
    pub from: Option<NaiveDate>,
    /// Document date on or before (YYYY-MM-DD).
    #[arg(long)]
    pub to: Option<NaiveDate>,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// The document's id (from `documents list`).
    pub id: i64,
    /// Where to write the bytes; `-` for standard output.
    #[arg(long, short)]
    pub output: String,
}

pub async fn run(config: &Config, command: DocumentsCommand) -> Result<ExitCode> {
    match command {
        DocumentsCommand::List(args) => list(config, args).await,
        DocumentsCommand::Get(args) => get(config, args).await,
    }
}

async fn list(config: &Config, args: ListArgs) -> Result<ExitCode> {
    let store = config.parts().await?;
    let connection_id = match &args.connection {
        Some(name) => Some(
            store
                .connections
                .find_connection(name)
                .await?
                .with_context(|| {
                    format!("no connection named {name:?}; see `bankbridge connection list`")
                })?
                .id,
        ),
        None => None,
    };
    if let (Some(f), Some(t)) = (args.from, args.to)
        && f > t
    {
        bail!("--to ({t}) is before --from ({f})");
    }
    let docs = store
        .bank
        .list_documents(&DocumentQuery {
            connection_id,
            account_id: args.account,
            from: args.from,
            to: args.to,
            after: None,
            limit: None,
        })
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&docs)?);
        return Ok(ExitCode::SUCCESS);
    }
    if docs.is_empty() {
        eprintln!("no documents; a sync of a bank that offers statements stores them");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = docs
        .iter()
        .map(|d| {
            vec![
                d.id.to_string(),
                d.date.map(|d| d.to_string()).unwrap_or_else(|| "-".into()),
                d.kind.clone(),
                d.title.clone(),
                d.content_type.clone(),
                d.size.to_string(),
            ]
        })
        .collect();
    super::print_table(&["ID", "DATE", "KIND", "TITLE", "TYPE", "BYTES"], &rows);
    Ok(ExitCode::SUCCESS)
}

async fn get(config: &Config, args: GetArgs) -> Result<ExitCode> {
    let store = config.parts().await?;
    let Some((doc, bytes)) = store.bank.document_content(args.id).await? else {
        bail!(
            "no document with id {}; see `bankbridge documents list`",
            args.id
        );
    };
    if sha256_hex(&bytes) != doc.sha256 {
        bail!(
            "the stored bytes of document {} do not match its SHA-256; the database is damaged",
            doc.id
        );
    }
    if args.output == "-" {
        let mut out = std::io::stdout().lock();
        out.write_all(&bytes)?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let path = std::path::Path::new(&args.output);
    // Write beside the target, then rename: a reader never sees half a file.
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    tmp.write_all(&bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "wrote {} ({} bytes, {}, sha256 {})",
        path.display(),
        bytes.len(),
        doc.content_type,
        doc.sha256
    );
    Ok(ExitCode::SUCCESS)
}
