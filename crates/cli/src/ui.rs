//! Logging set-up and the sync progress display.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bankbridge_sync::SyncEvent;
use indicatif::{ProgressBar, ProgressStyle};
use tracing_subscriber::EnvFilter;

/// Logs go to stderr; `BANKBRIDGE_LOG` (or `RUST_LOG`) sets the filter.
/// One-shot commands log warnings only, so progress bars stay readable.
pub fn init_logging(json: bool, quiet: bool) {
    let default = if quiet { "warn" } else { "info" };
    let filter = std::env::var("BANKBRIDGE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Colour only on a terminal, and never with `NO_COLOR` set (no-color.org):
/// logs redirected to a file hold no escape codes.
pub fn colour() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// A progress line for one connection's sync: windows done, rows written;
/// once an account's windows are planned, its percentage and an ETA.
#[derive(Clone)]
pub struct SyncProgress {
    bar: ProgressBar,
    inserted: Arc<AtomicU64>,
    updated: Arc<AtomicU64>,
}

impl SyncProgress {
    pub fn new(connection: &str, hidden: bool) -> Self {
        let bar = if hidden {
            ProgressBar::hidden()
        } else {
            ProgressBar::new_spinner()
        };
        bar.set_style(
            ProgressStyle::with_template(&styled(
                "{spinner:.green} {prefix:.bold} [{elapsed_precise}] {pos} windows · {msg}",
            ))
            .expect("valid template"),
        );
        bar.set_prefix(connection.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        Self {
            bar,
            inserted: Arc::default(),
            updated: Arc::default(),
        }
    }

    pub fn on_event(&self, event: SyncEvent) {
        match event {
            SyncEvent::LoggedIn => self.bar.set_message("logged in"),
            SyncEvent::Accounts { count } => self.bar.set_message(format!("{count} accounts")),
            SyncEvent::Planned { account, windows } => {
                self.bar.set_style(planned_style());
                self.bar.set_length(windows as u64);
                self.bar.set_position(0);
                self.bar.reset_eta();
                self.bar
                    .set_message(format!("{account}: {windows} windows to fetch"));
            }
            SyncEvent::WindowDone {
                account,
                window,
                stats,
            } => {
                let ins =
                    self.inserted.fetch_add(stats.inserted, Ordering::Relaxed) + stats.inserted;
                let upd = self.updated.fetch_add(stats.updated, Ordering::Relaxed) + stats.updated;
                self.bar.inc(1);
                self.bar
                    .set_message(format!("{account} {window} · {ins} new, {upd} updated"));
            }
            SyncEvent::Retrying {
                what,
                attempt,
                delay,
                reason,
            } => self.bar.println(format!(
                "  retry {attempt} of {what} in {:.1}s: {reason}",
                delay.as_secs_f64()
            )),
            SyncEvent::Relogin => self
                .bar
                .println("  the bank session expired; logged in again"),
            SyncEvent::WindowShrunk {
                account,
                window,
                new_days,
            } => self.bar.println(format!(
                "  {account}: the bank refused {window}; fetching {new_days}-day windows"
            )),
            SyncEvent::ScaRequired { challenge } => self.bar.set_message(format!(
                "strong customer authentication: {}",
                challenge.kind()
            )),
            SyncEvent::ScaDone => self
                .bar
                .println("  strong customer authentication done; going on"),
            SyncEvent::ScaStopped {
                account,
                oldest_stored,
            } => self.bar.println(format!(
                "  {account}: stopped where the bank asks for strong customer authentication{}",
                oldest_stored
                    .map(|d| format!(" (stored from {d} on)"))
                    .unwrap_or_default()
            )),
            SyncEvent::Deferred { account, reason } => {
                self.bar.println(format!("  {account}: waits: {reason}"))
            }
            SyncEvent::Documents { listed, stored } => self
                .bar
                .set_message(format!("{listed} documents listed, {stored} new")),
        }
    }

    /// A line above the progress bar.
    pub fn println(&self, line: impl AsRef<str>) {
        if self.bar.is_hidden() {
            eprintln!("{}", line.as_ref());
        } else {
            self.bar.println(line);
        }
    }

    /// Run `f` with the progress bar out of the way (for a prompt).
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    pub fn finish(&self, message: String) {
        self.bar.finish_with_message(message);
    }

    pub fn abandon(&self, message: String) {
        self.bar.abandon_with_message(message);
    }
}

/// The bar once an account's windows are counted.
fn planned_style() -> ProgressStyle {
    ProgressStyle::with_template(&styled(
        "{spinner:.green} {prefix:.bold} [{elapsed_precise}] {bar:20} {pos}/{len} windows {percent}% · ETA {eta} · {msg}",
    ))
    .expect("valid template")
}

/// A progress template without its colours when [`colour`] says no.
fn styled(template: &str) -> String {
    if colour() {
        template.to_owned()
    } else {
        template.replace(":.green}", "}").replace(":.bold}", "}")
    }
}
