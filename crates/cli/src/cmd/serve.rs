use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use bankbridge_server::{AppState, ServerConfig};

use crate::config::Config;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "BANKBRIDGE_LISTEN", hide_env_values = true)]
    pub listen: Option<String>,
    /// Seconds between scheduler checks for connections due a sync.
    #[arg(long, default_value_t = 30)]
    pub scheduler_tick: u64,
    /// Serve identical `/api/v1/transactions` requests from memory for this
    /// many milliseconds (0 turns it off). Local writes drop the cache at
    /// once; syncs run by another process show after this long at most.
    #[arg(long, default_value_t = 1000)]
    pub page_cache_ms: u64,
    /// Seconds a card login/sign waits for its reader (one operation per
    /// reader at a time) before answering 503 `reader_busy`.
    #[arg(long, default_value_t = 30)]
    pub reader_wait: u64,
    /// BankID gateway: the simulated BankID of a running `bankbridge sandbox` (its URL).
    #[arg(long)]
    pub bankid_sandbox: Option<String>,
    /// BankID gateway: the RP API base URL (…/rp/v6.0/).
    #[arg(long, env = "BANKBRIDGE_BANKID_URL", hide_env_values = true)]
    pub bankid_url: Option<url::Url>,
    /// BankID gateway: RP certificate (PEM).
    #[arg(long, env = "BANKBRIDGE_BANKID_CERT", hide_env_values = true)]
    pub bankid_cert: Option<std::path::PathBuf>,
    /// BankID gateway: RP key (PEM).
    #[arg(long, env = "BANKBRIDGE_BANKID_KEY", hide_env_values = true)]
    pub bankid_key: Option<std::path::PathBuf>,
    /// BankID gateway: RP certificate and key as PKCS#12 (password from BANKBRIDGE_BANKID_P12_PASSWORD).
    #[arg(long, env = "BANKBRIDGE_BANKID_P12", hide_env_values = true)]
    pub bankid_p12: Option<std::path::PathBuf>,
    /// BankID gateway: the server CA to pin (PEM).
    #[arg(long, env = "BANKBRIDGE_BANKID_CA", hide_env_values = true)]
    pub bankid_ca: Option<std::path::PathBuf>,
    /// BankID gateway: most orders pending at once (each keeps a driver
    /// polling BankID); more get 429 bankid_too_many_orders.
    #[arg(long, default_value_t = bankbridge_server::bankid_gateway::DEFAULT_MAX_PENDING)]
    pub bankid_max_pending: usize,
    /// A reverse proxy whose X-Forwarded-For names the end user (repeatable).
    #[arg(long)]
    pub trusted_proxy: Vec<std::net::IpAddr>,
    /// Run the flow checks of this folder (*.toml flows and channels.toml)
    /// on their schedules; the folder is reloaded when it changes.
    #[arg(long, env = "BANKBRIDGE_CHECKS", hide_env_values = true)]
    pub checks: Option<std::path::PathBuf>,
    /// This server's own location name: flows listing it run here, the
    /// other locations are left to `bankbridge check agent`s.
    #[arg(long, default_value = "local")]
    pub checks_location: String,
    /// Keep check results this many days (each check's newest 100 runs are always kept).
    #[arg(long, default_value_t = 30)]
    pub checks_retention_days: u64,
    /// Let flows read this environment variable with `{ env = .. }`, beside
    /// the BANKBRIDGE_CHECK_* ones. Repeatable.
    #[arg(long = "checks-allow-env", value_name = "NAME")]
    pub checks_allow_env: Vec<String>,
    /// Seconds a client has to send a request's headers, and again its body.
    #[arg(long, default_value_t = 15)]
    pub read_timeout: u64,
    /// Server-sent event streams open at once (BankID order events).
    #[arg(long, default_value_t = 1_000)]
    pub max_event_streams: usize,
    /// Mark the dashboard's session cookie Secure: set it when users reach
    /// `serve` over https (a proxy terminating TLS in front of it).
    #[arg(long)]
    pub secure_cookies: bool,
    /// The address people reach this server at (https://bankbridge.example):
    /// banks with redirect SCA send the browser back to
    /// <URL>/sca/callback/<job> after the user agreed.
    #[arg(long)]
    pub public_url: Option<String>,
    /// This process's name among the `serve` instances sharing the
    /// database (listed at /api/v1/instances and in /metrics); two live
    /// instances cannot share one. Default: HOST:PORT.
    #[arg(long, env = "BANKBRIDGE_INSTANCE_NAME", hide_env_values = true)]
    pub instance_name: Option<String>,
}

pub async fn run(config: &Config, args: ServeArgs) -> Result<ExitCode> {
    // Checks with a channels.toml that does not load would fail silently:
    // no alert could go out, so refuse to start instead.
    if let Some(dir) = &args.checks
        && let Err(problems) = bankbridge_server::checks::load_channels(dir)
    {
        anyhow::bail!(
            "--checks {}: the alert channels are invalid, not starting:\n  {}",
            dir.display(),
            problems.join("\n  ")
        );
    }
    let (store, syncer) = super::open(config).await?;
    let listen = args
        .listen
        .or_else(|| config.file.listen.clone())
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let server_config = ServerConfig {
        scheduler_tick: Duration::from_secs(args.scheduler_tick.max(1)),
        page_cache_ttl: Duration::from_millis(args.page_cache_ms),
        reader_wait: Duration::from_secs(args.reader_wait.max(1)),
        trusted_proxies: args.trusted_proxy.clone(),
        read_timeout: Duration::from_secs(args.read_timeout.max(1)),
        max_event_streams: args.max_event_streams,
        secure_cookies: args.secure_cookies,
        public_url: args.public_url.clone(),
        ..Default::default()
    };
    let state = AppState::with_config(store, syncer, known_connectors(), server_config);
    state.set_connector_forms(bankbridge_connectors::FORMS);
    let bankid = super::bankid::Connection {
        sandbox: args.bankid_sandbox.clone(),
        url: args.bankid_url.clone(),
        cert: args.bankid_cert.clone(),
        key: args.bankid_key.clone(),
        p12: args.bankid_p12.clone(),
        ca: args.bankid_ca.clone(),
        ..Default::default()
    };
    if bankid.is_set() {
        let client = bankid
            .client()
            .await
            .context("setting up the BankID gateway")?;
        eprintln!("BankID gateway: orders go to {}", client.base_url());
        state.set_bankid(
            bankbridge_server::bankid_gateway::BankIdGateway::new(client)
                .with_max_pending(args.bankid_max_pending),
        );
    }
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr()?;
    let instance = args
        .instance_name
        .clone()
        .unwrap_or_else(|| format!("{}:{}", bankbridge_sync::hostname(), addr.port()));
    bankbridge_server::instances::register(&state, &instance, &addr.to_string()).await?;
    let heartbeat = bankbridge_server::instances::spawn_heartbeat(state.clone());
    tracing::info!(%addr, %instance, "serving the bankbridge API");
    eprintln!(
        "bankbridge API on http://{addr}/api/v1/ (OpenAPI: http://{addr}/api/v1/openapi.json)"
    );
    let checks = match &args.checks {
        Some(dir) => {
            if !dir.is_dir() {
                anyhow::bail!("--checks {}: not a folder of flow files", dir.display());
            }
            let mut cfg = bankbridge_server::checks::ChecksConfig::new(dir);
            cfg.location = args.checks_location.clone();
            cfg.retention = Duration::from_secs(args.checks_retention_days.max(1) * 24 * 3600);
            cfg.env_policy = super::check::env_policy(&args.checks_allow_env)?;
            eprintln!(
                "flow checks: {} (location {:?}; results at /api/v1/checks, metrics at /metrics)",
                dir.display(),
                cfg.location
            );
            state.set_checks(cfg)
        }
        None => None,
    };
    let scheduler = bankbridge_server::spawn_scheduler(state.clone());
    let served = bankbridge_server::serve(listener, state.clone(), shutdown_signal()).await;
    scheduler.abort();
    if let Some(checks) = checks {
        checks.abort();
    }
    heartbeat.abort();
    bankbridge_server::instances::stop(&state).await;
    served?;
    Ok(ExitCode::SUCCESS)
}

pub fn known_connectors() -> Vec<String> {
    bankbridge_connectors::KNOWN
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
