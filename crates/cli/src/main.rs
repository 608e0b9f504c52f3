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
    /// Export transactions: CSV, JSON, OFX, beancount, ledger, QIF, camt.053.
    #[command(after_help = "Example: bankbridge export --format ofx --output statement.ofx")]
    Export(cmd::query::ExportArgs),
    /// Create, list or revoke API tokens.
    #[command(subcommand)]
    Token(cmd::token::TokenCommand),
    /// A SimpleFIN server for budgeting apps: create, list or revoke its tokens.
    #[command(subcommand)]
    Simplefin(cmd::simplefin::SimplefinCommand),
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
    Bench(bankbridge_bench::BenchArgs),
}

/// Commands that never open the database: their help shows no `--db`.
const WITHOUT_DATABASE: [&str; 4] = ["bankid", "sandbox", "demo", "bench"];

/// The command line: `--db` is added to (and shared down from) every
/// command that opens the database, and only to those.
fn command_line() -> clap::Command {
    use clap::CommandFactory;
    let names: Vec<String> = Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .filter(|n| !WITHOUT_DATABASE.contains(&n.as_str()))
        .collect();
    names.into_iter().fold(Cli::command(), |cmd, name| {
        cmd.mut_subcommand(name, |c| {
            c.arg(
                clap::Arg::new("db")
                    .long("db")
                    .env("BANKBRIDGE_DB")
                    .hide_env_values(true)
                    .global(true)
                    .value_name("DB")
                    .help("Database: a SQLite file path or a postgres:// URL"),
            )
        })
    })
}

/// `--db` (or `BANKBRIDGE_DB`) wherever on the command line it was given.
fn database_arg(matches: &clap::ArgMatches) -> Option<String> {
    let mut m = matches;
    loop {
        if let Ok(Some(db)) = m.try_get_one::<String>("db") {
            return Some(db.clone());
        }
        m = m.subcommand()?.1;
    }
}

fn main() -> ExitCode {
    use clap::FromArgMatches;
    let matches = command_line().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let db = database_arg(&matches);
    let config = match Config::load(db.as_deref()) {
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
    if quiet && !matches!(cli.command, Command::Card(_)) {
        // One-shot commands end quietly when their reader goes away
        // (`bankbridge transactions | head -1`), as Unix tools do, instead of
        // panicking on a failed print. Servers keep Rust's default: a peer
        // closing a socket must not kill them; so do the card commands,
        // whose PC/SC library writes to pcscd's socket (a pcscd that dies
        // must give an error, not a silent death).
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
        Command::Simplefin(c) => cmd::simplefin::run(&config, c).await,
        Command::Card(c) => cmd::card::run(&config, c).await,
        Command::Bankid(c) => cmd::bankid::run(c).await,
        Command::Categorize(args) => cmd::categorize::run(&config, args).await,
        Command::Check(c) => cmd::check::run(&config, c).await,
        Command::Bench(args) => {
            let hooks = bankbridge_bench::Hooks {
                sandbox_bankid_client: Box::new(|url| {
                    Box::pin(async move { cmd::bankid::sandbox_client(&url).await })
                }),
            };
            bankbridge_bench::run(args, hooks).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command with its path, depth first.
    fn all(cmd: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        for sub in cmd.get_subcommands() {
            let p = format!("{path} {}", sub.get_name());
            out.push((p.clone(), sub.clone()));
            all(sub, p, out);
        }
    }

    #[test]
    fn every_argument_is_described_and_db_only_where_used() {
        let mut cmd = command_line();
        cmd.build();
        let mut commands = Vec::new();
        all(&cmd, "bankbridge".into(), &mut commands);
        assert!(commands.len() > 40, "{}", commands.len());
        let mut undescribed = Vec::new();
        for (path, c) in commands
            .iter()
            .filter(|(p, _)| !p.split(' ').any(|w| w == "help"))
        {
            for arg in c.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.is_hide_set() || id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().or(arg.get_long_help()).is_none() {
                    undescribed.push(format!("`{path}` {id}"));
                }
                // An unset variable is not shown as `[env: NAME=]`.
                if arg.get_env().is_some() {
                    assert!(arg.is_hide_env_values_set(), "`{path}`: --{id}");
                }
            }
            let top = path.split(' ').nth(1).unwrap_or("");
            let has_db = c.get_arguments().any(|a| a.get_id() == "db");
            assert_eq!(
                has_db,
                !WITHOUT_DATABASE.contains(&top),
                "`{path}`: --db where it is not used, or missing"
            );
        }
        assert!(
            undescribed.is_empty(),
            "arguments without a description:\n{}",
            undescribed.join("\n")
        );
    }
}
