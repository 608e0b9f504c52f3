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
    /// Where a bank's redirect SCA sends your browser back: this loopback
    /// port (`http://127.0.0.1:PORT/callback`); default: a free port.
    #[arg(long)]
    pub redirect_port: Option<u16>,
}

/// How a run answers strong customer authentication.
#[derive(Clone, Default)]
pub struct SolveOptions {
    /// A person is there: ask them (and tell the bank they are present).
    pub interactive: bool,
    /// Codes can be typed at this terminal.
    pub can_prompt: bool,
    /// `--redirect-port`.
    pub redirect_port: Option<u16>,
    /// The card service, when a connection has a bank card bound.
    pub cards: Option<bankbridge_server::cards::CardService>,
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
    let cards = if connections
        .iter()
        .any(|c| Syncer::settings(c).is_ok_and(|s| s.sca_card.is_some()))
    {
        let (key, store) = config.keyed_store().await?;
        Some(bankbridge_server::cards::CardService::new(
            store,
            key,
            std::sync::Arc::new(bankbridge_cap::pcsc::PcscReaders::new()),
            std::time::Duration::from_secs(60),
        ))
    } else {
        None
    };
    let solve = SolveOptions {
        interactive,
        can_prompt: terminal,
        redirect_port: args.redirect_port,
        cards,
    };
    let (mut failed, mut needs_user, mut busy) = (false, false, false);
    for connection in &connections {
        let hidden = args.json || !std::io::stderr().is_terminal();
        let outcome = tokio::select! {
            r = sync_one_with(&syncer, connection, hidden, &solve) => r,
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

pub(crate) fn counts(s: &SyncSummary) -> String {
    let waits = match (&s.deferred_reason, s.deferred) {
        (Some(why), n) if n > 0 => format!("; {n} waiting for the bank's request budget ({why})"),
        _ => String::new(),
    };
    format!(
        "{} inserted, {} updated, {} unchanged, {} voided over {} windows in {} accounts; {} new documents{waits}",
        s.inserted, s.updated, s.unchanged, s.voided, s.windows, s.accounts, s.documents
    )
}

/// Sync one connection with a progress line on stderr, unattended.
pub async fn sync_one(
    syncer: &Syncer,
    connection: &Connection,
    hidden: bool,
) -> Result<SyncSummary, SyncError> {
    sync_one_with(syncer, connection, hidden, &SolveOptions::default()).await
}

/// Sync one connection; with `interactive`, strong customer authentication
/// is answered at this terminal (codes are only asked when `can_prompt`);
/// a bank card bound to the connection answers card challenges either way.
pub async fn sync_one_with(
    syncer: &Syncer,
    connection: &Connection,
    hidden: bool,
    solve: &SolveOptions,
) -> Result<SyncSummary, SyncError> {
    let progress = SyncProgress::new(&connection.name, hidden);
    let p = progress.clone();
    let qr = QrDrawing::default();
    let drawing = qr.clone();
    let on_event = move |e: bankbridge_sync::SyncEvent| {
        if matches!(
            e,
            bankbridge_sync::SyncEvent::ScaDone | bankbridge_sync::SyncEvent::ScaStopped { .. }
        ) {
            drawing.stop();
        }
        p.on_event(e)
    };
    let terminal_solver;
    let person: &dyn ScaSolver = if solve.interactive {
        // Connectors whose bank may send the browser back here.
        let callback = if bankbridge_connectors::may_redirect(&connection.connector) {
            match RedirectCallback::listen(solve.redirect_port).await {
                Ok(c) => Some(c),
                Err(e) => {
                    progress.println(format!(
                        "  {}: cannot listen for the bank's redirect: {e}",
                        connection.name
                    ));
                    None
                }
            }
        } else {
            None
        };
        terminal_solver = TerminalSolver {
            connection: connection.name.clone(),
            progress: progress.clone(),
            can_prompt: solve.can_prompt,
            sandbox_approve: sandbox_approve_url(connection),
            callback,
            qr: qr.clone(),
        };
        &terminal_solver
    } else {
        &bankbridge_core::Unattended
    };
    let card = Syncer::settings(connection).ok().and_then(|s| s.sca_card);
    let result = match (card, &solve.cards) {
        (Some(card), Some(cards)) => {
            let solver = bankbridge_server::card_solver::CardSolver::new(
                cards.clone(),
                card,
                &connection.name,
                person,
            );
            syncer
                .sync_with_solver(connection, &on_event, &solver)
                .await
        }
        _ => syncer.sync_with_solver(connection, &on_event, person).await,
    };
    qr.stop();
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
    /// The loopback listener a bank's redirect comes back to.
    callback: Option<RedirectCallback>,
    qr: QrDrawing,
}

/// A BankID QR code redrawn each second on the terminal until the bank
/// says the identification is done.
#[derive(Clone, Default)]
struct QrDrawing(std::sync::Arc<std::sync::Mutex<Option<tokio::task::AbortHandle>>>);

impl QrDrawing {
    fn start(&self, progress: SyncProgress, code: bankbridge_bankid::qr::QrCode) {
        self.stop();
        let task = tokio::spawn(async move {
            use std::io::Write;
            let mut drawn = 0usize;
            loop {
                let data = code.data_now();
                let picture = bankbridge_bankid::qr::render_terminal(&data);
                progress.suspend(|| {
                    let mut err = std::io::stderr().lock();
                    // Redraw in place: up over the last picture, clear below.
                    if drawn > 0 {
                        let _ = write!(err, "\x1b[{drawn}A\x1b[J");
                    }
                    let _ = write!(err, "{picture}");
                });
                drawn = picture.lines().count();
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.abort_handle());
    }

    fn stop(&self) {
        if let Some(task) = self.0.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

/// A one-route web server on a loopback port: the bank's redirect SCA sends
/// the browser to `http://127.0.0.1:PORT/callback` when the user is done.
struct RedirectCallback {
    uri: String,
    /// The query string each return came with (the bank's `code`, or its error).
    returned: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<String>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for RedirectCallback {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl RedirectCallback {
    async fn listen(port: Option<u16>) -> std::io::Result<RedirectCallback> {
        let listener =
            tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port.unwrap_or(0)))
                .await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let app = axum::Router::new().route(
            "/callback",
            axum::routing::get(move |axum::extract::RawQuery(query): axum::extract::RawQuery| {
                let tx = tx.clone();
                async move {
                    let _ = tx.try_send(query.unwrap_or_default());
                    axum::response::Html(
                        "<!doctype html><meta charset=utf-8><title>bankbridge</title>\
                         <p>Thank you: bankbridge goes on in your terminal. You may close this page.</p>",
                    )
                }
            }),
        );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(RedirectCallback {
            uri: format!("http://{addr}/callback"),
            returned: tokio::sync::Mutex::new(rx),
            server,
        })
    }
}

/// Open `url` in the desktop's browser, where there is a desktop.
fn open_browser(url: &str) -> bool {
    let desktop =
        std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else if desktop {
        "xdg-open"
    } else {
        return false;
    };
    std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
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
            ScaChallenge::Secret { prompt } if self.can_prompt => {
                let question = format!("  {name}: {prompt}; for this link only, not kept: ");
                let secret = tokio::task::block_in_place(|| {
                    self.progress
                        .suspend(|| rpassword::prompt_password(&question))
                })
                .map_err(|e| ScaSolverError(format!("cannot read it: {e}")))?;
                if secret.is_empty() {
                    return Ok(ScaAnswer::Declined);
                }
                Ok(ScaAnswer::Code(Secret::new(secret)))
            }
            // A script that links a bank gives the form's secrets on
            // standard input, one a line (after --password-stdin's line).
            ScaChallenge::Secret { prompt } if !std::io::stdin().is_terminal() => {
                let mut line = String::new();
                let read = tokio::task::block_in_place(|| {
                    std::io::BufRead::read_line(&mut std::io::stdin().lock(), &mut line)
                })
                .map_err(|e| ScaSolverError(format!("cannot read standard input: {e}")))?;
                let secret = line.trim_end_matches(['\n', '\r']).to_owned();
                if read == 0 || secret.is_empty() {
                    self.progress.println(format!(
                        "  {name}: {prompt} is needed: run this in a terminal, or give it on standard input"
                    ));
                    return Ok(ScaAnswer::NotNow);
                }
                Ok(ScaAnswer::Code(Secret::new(secret)))
            }
            ScaChallenge::Redirect { url } => {
                let opened = open_browser(url);
                self.progress.println(format!(
                    "  {name}: the bank asks you to agree on its page{}:\n    {url}",
                    if opened {
                        " (opened in your browser)"
                    } else {
                        "; open it in a browser"
                    }
                ));
                if let Some(callback) = &self.callback {
                    self.progress.println(format!(
                        "  waiting for the browser to come back to {}…",
                        callback.uri
                    ));
                    let mut returned = callback.returned.lock().await;
                    return Ok(
                        match tokio::time::timeout(REDIRECT_WAIT, returned.recv()).await {
                            Ok(Some(query)) if query.is_empty() => ScaAnswer::Approved,
                            Ok(Some(query)) => ScaAnswer::Returned(Secret::new(query)),
                            _ => ScaAnswer::NotNow,
                        },
                    );
                }
                if self.can_prompt {
                    // Without a loopback port the browser can reach (another
                    // machine, a container), the address it ended on carries
                    // what the bank sent back.
                    let question = format!(
                        "  {name}: once you have finished at the bank, paste the address your browser ended on (or press Enter): "
                    );
                    let landed = tokio::task::block_in_place(|| {
                        self.progress
                            .suspend(|| rpassword::prompt_password(&question))
                    })
                    .map_err(|e| ScaSolverError(format!("cannot read the answer: {e}")))?;
                    return Ok(match landed.trim().split_once('?') {
                        Some((_, query)) if !query.is_empty() => {
                            ScaAnswer::Returned(Secret::new(query.to_owned()))
                        }
                        _ => ScaAnswer::Approved,
                    });
                }
                Ok(ScaAnswer::NotNow)
            }
            ScaChallenge::BankId {
                auto_start_token,
                qr_start_token,
                qr_start_secret,
            } => {
                self.progress.println(format!(
                    "  {name}: identify yourself with BankID: scan the QR code with the BankID app, \
                     or open bankid:///?autostarttoken={auto_start_token}&redirect=null on this device"
                ));
                if let (Some(token), Some(secret)) = (qr_start_token, qr_start_secret) {
                    self.qr.start(
                        self.progress.clone(),
                        bankbridge_bankid::qr::QrCode::new(token.clone(), secret.clone()),
                    );
                }
                Ok(ScaAnswer::Approved)
            }
            other => {
                self.progress.println(format!(
                    "  {name}: the bank asks for {other}, which this terminal cannot answer \
                     (bind a registered card to the connection: `connection add --card`)"
                ));
                Ok(ScaAnswer::NotNow)
            }
        }
    }

    fn attendance(&self) -> bankbridge_core::Attendance {
        bankbridge_core::Attendance {
            psu_present: true,
            redirect_uri: self.callback.as_ref().map(|c| c.uri.clone()),
        }
    }
}

/// How long the terminal waits for the browser to come back from the bank.
const REDIRECT_WAIT: std::time::Duration = std::time::Duration::from_secs(10 * 60);

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
        "deferred": s.deferred,
        "deferred_reason": s.deferred_reason,
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
