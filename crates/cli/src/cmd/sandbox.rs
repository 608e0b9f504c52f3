use std::process::ExitCode;

use anyhow::{Context, Result};
use bankbridge_sandbox::{BankIdSandboxConfig, FaultConfig, SandboxConfig, SandboxState};

use crate::config::Config;

#[derive(clap::Args, Debug, Clone)]
pub struct SandboxArgs {
    /// Address to serve the simulated banks on (loopback).
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: String,
    #[command(flatten)]
    pub data: SandboxDataArgs,
    /// HTTPS port of the simulated BankID RP API on 127.0.0.1 (0 picks one).
    #[arg(long, default_value_t = 9443)]
    pub bankid_port: u16,
    /// Leave the BankID simulator out.
    #[arg(long)]
    pub no_bankid: bool,
    /// The keypad bank approves every 2FA request at once (no
    /// `POST /_sandbox/keypad/approve` needed to read past 90 days).
    #[arg(long)]
    pub auto_approve: bool,
}

/// What the simulated banks hold and how badly they behave.
#[derive(clap::Args, Debug, Clone)]
pub struct SandboxDataArgs {
    /// Seed of the generated data (same seed, same bank).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Accounts of the test customer.
    #[arg(long, default_value_t = 3)]
    pub accounts: usize,
    /// Booked transactions per account.
    #[arg(long, default_value_t = 2000)]
    pub transactions: usize,
    /// Years of history.
    #[arg(long, default_value_t = 5)]
    pub years: u32,
    /// Share of bank API requests that fail (5xx, 429 with Retry-After, truncated JSON).
    #[arg(long, default_value_t = 0.0)]
    pub fault_rate: f64,
    /// Delay added to every bank request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Refuse statement requests longer than this many days.
    #[arg(long)]
    pub max_range_days: Option<u32>,
    /// Access tokens expire after this many API requests.
    #[arg(long)]
    pub session_ttl_requests: Option<u32>,
}

impl SandboxDataArgs {
    pub fn config(&self) -> SandboxConfig {
        SandboxConfig {
            seed: self.seed,
            accounts: self.accounts,
            transactions: self.transactions,
            years: self.years,
            max_range_days: self.max_range_days,
            fault: FaultConfig {
                fault_rate: self.fault_rate,
                latency_ms: self.latency_ms,
                session_ttl_requests: self.session_ttl_requests,
                ..FaultConfig::default()
            },
            ..SandboxConfig::default()
        }
    }
}

pub async fn run(config_dir: &Config, args: SandboxArgs) -> Result<ExitCode> {
    let mut config = args.data.config();
    config.keypad.auto_approve = args.auto_approve;
    if !args.no_bankid {
        // The simulator's CA and RP certificate live with the data so that
        // clients configured once keep working across restarts.
        config.bankid = Some(BankIdSandboxConfig {
            cert_dir: config_dir.home.join("sandbox").join("bankid"),
            port: args.bankid_port,
            ..BankIdSandboxConfig::default()
        });
    }
    config.validate()?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    eprintln!(
        "generating {} accounts × {} transactions (seed {})…",
        config.accounts, config.transactions, config.seed
    );
    let state = tokio::task::spawn_blocking(move || SandboxState::new(config)).await??;
    let creds = state.fibank().credentials();
    println!("simulated banks on http://{addr}");
    println!(
        "fibank   base URL http://{addr}/fibank   username {}   password {}",
        creds.username, creds.password
    );
    println!("         truth    http://{addr}/_sandbox/fibank/truth");
    println!(
        "add it:  echo '{}' | bankbridge connection add --name fibank-sandbox --connector fibank --base-url http://{addr}/fibank --username {} --password-stdin",
        creds.password, creds.username
    );
    let keypad = state.keypad().credentials();
    println!(
        "keypad   base URL http://{addr}/keypad   identifier {}   PIN {}",
        keypad.identifier, keypad.pin
    );
    println!(
        "         truth    http://{addr}/_sandbox/keypad/truth   2FA {}",
        if args.auto_approve {
            "approved at once (--auto-approve)".to_owned()
        } else {
            format!("approve with: curl -X POST http://{addr}/_sandbox/keypad/approve")
        }
    );
    for bank in state.xs2a().all() {
        let c = bank.credentials();
        let name = &c.bank;
        println!(
            "xs2a     {name:<8} http://{addr}/xs2a/{name}   PSU-ID {}{}   ({})",
            c.psu_id,
            if c.password.is_empty() {
                String::new()
            } else {
                format!("   password {}", c.password)
            },
            bank.profile.title
        );
    }
    println!("         truth    http://{addr}/_sandbox/xs2a/{{be,se,redirect}}/truth");
    if let Some(be) = state.xs2a().get("be") {
        let c = be.credentials();
        println!(
            "         card     bankbridge card virtual --profile cap-be --pin {} --key-seed {}   (the be bank's card)",
            be.card().pin,
            be.card_key_seed()
        );
        println!(
            "add it:  echo '{}' | bankbridge connection add --name be-sandbox --connector xs2a --bank sandbox-be --base-url http://{addr} --username {} --password-stdin",
            c.password, c.psu_id
        );
    }
    let gc = state.gocardless().credentials();
    println!(
        "gocardless base URL http://{addr}/gocardless/api/v2   secret_id {}   secret_key {}",
        gc.secret_id, gc.secret_key
    );
    println!(
        "         truth    http://{addr}/_sandbox/gocardless/truth   (GoCardless Bank Account Data v2; link a requisition with POST http://{addr}/_sandbox/gocardless/requisitions/ID/link)"
    );
    println!(
        "add it:  echo '{}' | bankbridge connection add --name gc-sandbox --connector gocardless --base-url http://{addr}/gocardless/api/v2 --username {} --password-stdin --country LV --institution 'Sandbox Finance' --link",
        gc.secret_key, gc.secret_id
    );
    // The application's key, made for this run, where --private-key can read it.
    let eb = state.enablebanking().credentials();
    let key_path = config_dir
        .home
        .join("sandbox")
        .join("enablebanking-app.pem");
    let key_note = match std::fs::create_dir_all(key_path.parent().unwrap_or(&config_dir.home))
        .and_then(|()| write_private(&key_path, eb.private_key_pem.as_bytes()))
    {
        Ok(()) => key_path.display().to_string(),
        Err(e) => {
            format!("(not written: {e}; GET http://{addr}/_sandbox/enablebanking/credentials)")
        }
    };
    println!(
        "enablebanking base URL http://{addr}/enablebanking   application id {}   private key {key_note}",
        eb.application_id
    );
    println!(
        "add it:  bankbridge connection add --name eb-sandbox --connector enablebanking --base-url http://{addr}/enablebanking --application-id {} --private-key {key_note} --country FI --institution 'Sandbox Pankki' --link",
        eb.application_id
    );
    let cb = state.cardbank();
    println!(
        "cardbank web login http://{addr}/cardbank/login   card number {}   (codes from the be bank's card: bankbridge card virtual --profile cap-be --pin {} --key-seed {})",
        cb.card().pan,
        cb.card().pin,
        cb.key_seed()
    );
    let kl = state.xs2a_playground().credentials();
    println!(
        "klarna   base URL http://{addr}/xs2a-playground   API token {}   test bank {} in {}: login {} PIN {}",
        kl.api_token, kl.bank_code, kl.country_code, kl.username, kl.password
    );
    println!(
        "         truth    http://{addr}/_sandbox/xs2a-playground/truth   (Klarna's XS2A playground; the monitoring story's flow runs here too)"
    );
    println!(
        "add it:  bankbridge connection add --name klarna-sandbox --connector klarna --base-url http://{addr}/xs2a-playground --username {} --country {} --institution {} --link   (asks for the token, then the PIN)",
        kl.username, kl.country_code, kl.bank_code
    );
    if let Some(sim) = state.bankid() {
        let base = state
            .start_bankid()
            .await
            .context("starting the BankID simulator (is its port free? --bankid-port)")?
            .unwrap_or_default();
        let paths = sim.paths();
        println!("bankid   RP API   {base}   (mutual TLS)");
        println!(
            "         CA {}   RP cert {}   RP key {}",
            paths.ca_cert.display(),
            paths.rp_cert.display(),
            paths.rp_key.display()
        );
        println!("         info     http://{addr}/_sandbox/bankid/info");
        println!(
            "try it:  bankbridge bankid auth --sandbox http://{addr}   (then: bankbridge bankid user scan QRDATA --sandbox http://{addr})"
        );
    }
    bankbridge_sandbox::serve_state(listener, state, super::serve::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Write a secret file readable by its owner only.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}
