use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{Result, bail};
use async_trait::async_trait;
use bankbridge_core::{ScaAnswer, ScaChallenge, ScaSolver, ScaSolverError, Secret};
use bankbridge_store::Connection;
use bankbridge_sync::{SyncError, SyncSummary, Syncer};
use serde_json::json;

use crate::config::Config;
use crate::ui::SyncProgress;

/// Exit status of a sync that stopped because the bank wants a person.
pub const EXIT_NEEDS_USER: u8 = 2;
/// Exit status when another process was syncing a connection: nothing
/// failed, try again later.
pub const EXIT_BUSY: u8 = 3;
/// Exit status after Ctrl-C (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: u8 = 130;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Strong customer authentication (e.g. the keypad bank's 2FA for history \
older than 90 days): in a terminal the sync asks you to approve on your trusted device and waits; \
without one (scripts, cron, `--json` into a pipe) it stops at that point with everything before it \
stored, prints status needs_user and exits with status 2. Sync again in a terminal to go on.

Exit status: 0 all synced, 1 a sync failed, 2 the bank needs you, 3 busy (another process is \
syncing a connection: nothing failed, try again later), 130 interrupted (Ctrl-C: what was \
fetched is stored; run sync again to resume)."
)]
pub struct SyncArgs {
    /// Sync only this connection (name or id); default: all.
    #[arg(long)]
    pub connection: Option<String>,
    /// Print one JSON summary per connection instead of text.
    #[arg(long)]
    pub json: bool,
    /// When the bank asks for strong customer authentication: `auto` waits
    /// for you when stdin and stderr are a terminal, `wait` always waits for
    /// a decoupled approval (approve it elsewhere), `never` stops in needs_user.
    #[arg(long, value_enum, default_value_t = ScaMode::Auto)]
    pub sca: ScaMode,
    /// Send credentials the bank refused before once more. Without it, a
    /// connection whose login was refused is skipped until its credentials
    /// change (`bankbridge connection update`): banks lock the customer
    /// after a few failed logins.
    #[arg(long)]
    pub force: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaMode {
    Auto,
    Wait,
    Never,
}

pub async fn run(config: &Config, args: SyncArgs) -> Result<ExitCode> {
    let (store, syncer) = super::open(config).await?;
    let syncer = if args.force {
        syncer.forcing_refused_credentials()
    } else {
        syncer
    };
    let connections = match &args.connection {
        Some(name) => match store.find_connection(name).await? {
            Some(c) => vec![c],
            None => bail!("no connection named {name:?}; see `bankbridge connection list`"),
        },
        None => store.list_connections().await?,
    };
    if connections.is_empty() {
        bail!("no connections yet; add one with `bankbridge connection add`");
    }
    let terminal = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    let interactive = match args.sca {
        ScaMode::Auto => terminal,
        ScaMode::Wait => true,
        ScaMode::Never => false,
    };
    let (mut failed, mut needs_user, mut busy) = (false, false, false);
    for connection in &connections {
        let hidden = args.json || !std::io::stderr().is_terminal();
        let outcome = tokio::select! {
            r = sync_one_with(&syncer, connection, hidden, interactive, terminal) => r,
            _ = tokio::signal::ctrl_c() => {
                // Every finished window is committed; the next sync takes
                // the lease of this dead process over and goes on from there.
                eprintln!("\n{}: interrupted: run sync again to resume", connection.name);
                return Ok(ExitCode::from(EXIT_INTERRUPTED));
            }
        };
        match outcome {
            Ok(summary) => {
                if args.json {
                    println!("{}", summary_json(&summary, None));
                } else {
                    println!("{}: {}", summary.connection, counts(&summary));
                }
            }
            Err(e) => {
                let summary = e.partial_summary().cloned().unwrap_or_else(|| SyncSummary {
                    connection: connection.name.clone(),
                    ..Default::default()
                });
                let is_busy = matches!(e, SyncError::Busy { .. });
                if e.needs_user() {
                    needs_user = true;
                } else if is_busy {
                    busy = true;
                } else {
                    failed = true;
                }
                if args.json {
                    println!("{}", summary_json(&summary, Some(&e)));
                } else if is_busy {
                    eprintln!("{}: busy: {e}", connection.name);
                } else if e.needs_user() {
                    eprintln!("{}: needs you: {e}", connection.name);
                    println!("{}: {}", connection.name, counts(&summary));
                } else {
                    eprintln!("{}: sync failed: {e}", connection.name);
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else if needs_user {
        ExitCode::from(EXIT_NEEDS_USER)
    } else if busy {
        ExitCode::from(EXIT_BUSY)
    } else {
        ExitCode::SUCCESS
    })
}

fn counts(s: &SyncSummary) -> String {
    format!(
        "{} inserted, {} updated, {} unchanged, {} voided over {} windows in {} accounts; {} new documents",
        s.inserted, s.updated, s.unchanged, s.voided, s.windows, s.accounts, s.documents
    )
}

/// Sync one connection with a progress line on stderr, unattended.
pub async fn sync_one(
    syncer: &Syncer,
    connection: &Connection,
    hidden: bool,
) -> Result<SyncSummary, SyncError> {
    sync_one_with(syncer, connection, hidden, false, false).await
}

/// Sync one connection; with `interactive`, strong customer authentication
/// is answered at this terminal (codes are only asked when `can_prompt`).
pub async fn sync_one_with(
    syncer: &Syncer,
    connection: &Connection,
    hidden: bool,
    interactive: bool,
    can_prompt: bool,
) -> Result<SyncSummary, SyncError> {
    let progress = SyncProgress::new(&connection.name, hidden);
    let p = progress.clone();
    let on_event = move |e| p.on_event(e);
    let result = if interactive {
        let solver = TerminalSolver {
            connection: connection.name.clone(),
            progress: progress.clone(),
            can_prompt,
            sandbox_approve: sandbox_approve_url(connection),
        };
        syncer
            .sync_with_solver(connection, &on_event, &solver)
            .await
    } else {
        syncer.sync(connection, &on_event).await
    };
    match &result {
        Ok(s) => progress.finish(format!(
            "done · {} new, {} updated, {} voided, {} new documents",
            s.inserted, s.updated, s.voided, s.documents
        )),
        Err(e) if e.needs_user() => progress.abandon("stopped: the bank needs you".to_owned()),
        Err(SyncError::Busy { .. }) => progress.abandon("busy: another sync runs".to_owned()),
        Err(e) => progress.abandon(format!("failed: {e}")),
    }
    result
}

/// Strong customer authentication answered by the person at this terminal.
struct TerminalSolver {
    connection: String,
    progress: SyncProgress,
    can_prompt: bool,
    /// Where the sandbox's keypad bank takes approvals, for a connection to it.
    sandbox_approve: Option<String>,
}

/// A keypad connection to `bankbridge sandbox` (this machine, path
/// `/keypad`): its trusted device is a control route, named in the prompt.
fn sandbox_approve_url(connection: &Connection) -> Option<String> {
    if connection.connector != "keypad" {
        return None;
    }
    let base = connection.settings.get("base_url")?.as_str()?;
    let url = url::Url::parse(base).ok()?;
    (bankbridge_core::net::is_loopback(&url)
        && url.path().trim_end_matches('/').ends_with("/keypad"))
    .then(|| {
        let root = base.trim_end_matches('/').trim_end_matches("/keypad");
        format!("{root}/_sandbox/keypad/approve")
    })
}

#[async_trait]
impl ScaSolver for TerminalSolver {
    async fn solve(&self, challenge: &ScaChallenge) -> Result<ScaAnswer, ScaSolverError> {
        let name = &self.connection;
        match challenge {
            ScaChallenge::Decoupled {
                message,
                expires_at,
                ..
            } => {
                let until = expires_at
                    .map(|t| format!(" (the request expires at {})", t.format("%H:%M:%S UTC")))
                    .unwrap_or_default();
                self.progress.println(format!(
                    "  {name}: {message}. Waiting for the approval…{until}"
                ));
                if let Some(url) = &self.sandbox_approve {
                    self.progress.println(format!(
                        "  (the sandbox's trusted device: approve with `curl -X POST {url}`)"
                    ));
                }
                Ok(ScaAnswer::Approved)
            }
            ScaChallenge::Otp { prompt } if self.can_prompt => {
                let question =
                    format!("  {name}: the bank sent a one-time code ({prompt}); code: ");
                let code = tokio::task::block_in_place(|| {
                    self.progress
                        .suspend(|| rpassword::prompt_password(&question))
                })
                .map_err(|e| ScaSolverError(format!("cannot read the code: {e}")))?;
                let code = code.trim().to_owned();
                if code.is_empty() {
                    return Ok(ScaAnswer::Declined);
                }
                Ok(ScaAnswer::Code(Secret::new(code)))
            }
            other => {
                self.progress.println(format!(
                    "  {name}: the bank asks for {other}, which this terminal cannot answer yet"
                ));
                Ok(ScaAnswer::NotNow)
            }
        }
    }
}

fn summary_json(s: &SyncSummary, error: Option<&SyncError>) -> serde_json::Value {
    let mut v = json!({
        "connection": s.connection,
        "inserted": s.inserted,
        "updated": s.updated,
        "unchanged": s.unchanged,
        "voided": s.voided,
        "windows": s.windows,
        "accounts": s.accounts,
        "documents": s.documents,
        "status": error.map_or(bankbridge_store::SyncOutcome::Ok, SyncError::outcome).as_str(),
    });
    if let Some(e) = error {
        v["error"] = json!(e.to_string());
        if matches!(e, SyncError::Busy { .. }) {
            v["status"] = json!("busy");
        }
        if e.needs_user() {
            v["status"] = json!("needs_user");
            v["message"] = json!(e.to_string());
            if let SyncError::NeedsUser {
                challenge,
                stored_from,
                ..
            } = e
            {
                v["challenge"] = json!(challenge);
                v["stored_from"] = json!(stored_from);
            }
        }
    }
    v
}
