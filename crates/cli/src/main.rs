//! `bankbridge`: the command-line front of every bankbridge crate.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;
mod config;
mod ui;

use config::Config;

/// Bank connectivity you own: sync banks into your own database, serve them
/// through an authenticated JSON API, export them.
#[derive(Parser, Debug)]
#[command(name = "bankbridge", version, propagate_version = true)]
#[command(
    after_help = "Start with `bankbridge demo` to see everything run against a simulated bank.\n\
Data lives in $BANKBRIDGE_HOME (default ~/.local/share/bankbridge)."
)]
struct Cli {
    /// Database: a SQLite file path or a postgres:// URL.
    #[arg(long, global = true, env = "BANKBRIDGE_DB", hide_env_values = true)]
    db: Option<String>,
    /// Log as JSON lines (for log collectors) instead of human text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the data directory and the master key (mode 0600).
    #[command(after_help = "Example: BANKBRIDGE_HOME=~/bank bankbridge init")]
    Init,
    /// Serve the JSON API and run scheduled syncs.
    #[command(after_help = "Example: bankbridge serve --listen 127.0.0.1:8080")]
    Serve(cmd::serve::ServeArgs),
    /// Run everything at once against a simulated bank, in a throwaway data directory.
    #[command(after_help = "Example: bankbridge demo --listen 127.0.0.1:8080")]
    Demo(cmd::demo::DemoArgs),
    /// Serve the simulated banks (and print their base URLs and test logins).
    #[command(
        after_help = "Example: bankbridge sandbox --listen 127.0.0.1:9000 --transactions 100000 --fault-rate 0.1"
    )]
    Sandbox(cmd::sandbox::SandboxArgs),
    /// Sync connections now.
    #[command(after_help = "Example: bankbridge sync --connection my-fibank --json")]
    Sync(cmd::sync::SyncArgs),
    /// Add, list or remove bank connections.
    #[command(subcommand)]
    Connection(cmd::connection::ConnectionCommand),
    /// List accounts with their IBAN, currency, balance now and last sync.
    #[command(after_help = "Example: bankbridge accounts --connection my-fibank")]
    Accounts(cmd::accounts::AccountsArgs),
    /// List stored transactions.
    #[command(
        after_help = "Example: bankbridge transactions --from 2024-01-01 --text coffee --limit 20"
    )]
    Transactions(cmd::query::TransactionsArgs),
    /// List synced documents (bank statements) or write one to a file.
    #[command(subcommand, after_help = "Example: bankbridge documents list --json")]
    Documents(cmd::documents::DocumentsCommand),
    /// Export transactions as CSV, JSON or OFX.
    #[command(after_help = "Example: bankbridge export --format ofx --output statement.ofx")]
    Export(cmd::query::ExportArgs),
    /// Create, list or revoke API tokens.
    #[command(subcommand)]
    Token(cmd::token::TokenCommand),
    /// EMV-CAP codes from a bank card in a reader (M1 login, M2 sign), and a virtual card.
    #[command(subcommand)]
    Card(cmd::card::CardCommand),
    /// BankID as a relying party (auth, sign, phone orders, collect, cancel), and the sandbox's simulated user.
    #[command(subcommand)]
    Bankid(cmd::bankid::BankIdCommand),
    /// Apply category rules (TOML, first match wins) to stored transactions.
    #[command(after_help = "Example: bankbridge categorize --rules categories.toml --dry-run")]
    Categorize(cmd::categorize::CategorizeArgs),
    /// Flow checks: run or validate multi-step API flow files, or serve a location as an agent.
    #[command(subcommand)]
    Check(cmd::check::CheckCommand),
    /// Measure sync, reconcile, API and export speed (prints tables).
    #[command(after_help = "Example: bankbridge bench --transactions 100000")]
    Bench(cmd::bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.db.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let quiet = !matches!(
        cli.command,
        Command::Serve(_)
            | Command::Sandbox(_)
            | Command::Demo(_)
            | Command::Card(cmd::card::CardCommand::Virtual(_))
            | Command::Check(cmd::check::CheckCommand::Agent(_))
    );
    if quiet {
        // One-shot commands end quietly when their reader goes away
        // (`bankbridge transactions | head -1`), as Unix tools do, instead of
        // panicking on a failed print. Servers keep Rust's default: a peer
        // closing a socket must not kill them.
        sigpipe::reset();
    }
    ui::init_logging(cli.log_json || config.file.log_json.unwrap_or(false), quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, config: Config) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Init => cmd::init::run(&config).await,
        Command::Serve(args) => cmd::serve::run(&config, args).await,
        Command::Demo(args) => cmd::demo::run(args).await,
        Command::Sandbox(args) => cmd::sandbox::run(&config, args).await,
        Command::Sync(args) => cmd::sync::run(&config, args).await,
        Command::Connection(c) => cmd::connection::run(&config, c).await,
        Command::Accounts(args) => cmd::accounts::run(&config, args).await,
        Command::Transactions(args) => cmd::query::transactions(&config, args).await,
        Command::Export(args) => cmd::query::export(&config, args).await,
        Command::Documents(c) => cmd::documents::run(&config, c).await,
        Command::Token(c) => cmd::token::run(&config, c).await,
        Command::Card(c) => cmd::card::run(&config, c).await,
        Command::Bankid(c) => cmd::bankid::run(c).await,
        Command::Categorize(args) => cmd::categorize::run(&config, args).await,
        Command::Check(c) => cmd::check::run(&config, c).await,
        Command::Bench(args) => cmd::bench::run(args).await,
    }
}
