use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use bankbridge_cap::pcsc::PcscReaders;
use bankbridge_cap::transport::{ChainedReaders, VirtualReaders};
use bankbridge_cap::virtual_card::{Profile, VirtualCard, VirtualCardConfig};
use bankbridge_core::{ConnectionSettings, Credentials, MasterKey, Secret};
use bankbridge_server::bankid_gateway::BankIdGateway;
use bankbridge_server::cards::{CardRegistration, new_id};
use bankbridge_server::{AppState, ServerConfig};
use bankbridge_store::{NewInstitution, Scope};

use super::sandbox::SandboxDataArgs;
use crate::config::Config;

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Address of the API server.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    #[command(flatten)]
    pub data: SandboxDataArgs,
    /// Sync, print the curl line, and exit instead of serving until Ctrl-C.
    #[arg(long)]
    pub no_serve: bool,
}

/// The demo's virtual card: its reader and PIN.
const DEMO_READER: &str = "bankbridge demo virtual reader";
const DEMO_PIN: &str = "1234";

/// Sandbox + server on embedded SQLite in a throwaway data directory.
pub async fn run(args: DemoArgs) -> Result<ExitCode> {
    let home = tempfile::Builder::new()
        .prefix("bankbridge-demo-")
        .tempdir()?;
    let config = Config::for_home(home.path());
    eprintln!(
        "data directory: {} (deleted on exit)",
        home.path().display()
    );

    let mut sandbox_config = args.data.config();
    // The sandbox's BankID simulator too, with certificates in the demo's data dir.
    sandbox_config.bankid = Some(bankbridge_sandbox::BankIdSandboxConfig {
        cert_dir: home.path().join("sandbox").join("bankid"),
        port: 0,
        ..Default::default()
    });
    sandbox_config.validate()?;
    eprintln!(
        "starting the simulated Fibank: {} accounts × {} transactions over {} years…",
        sandbox_config.accounts, sandbox_config.transactions, sandbox_config.years
    );
    let sandbox = bankbridge_sandbox::spawn(sandbox_config)
        .await
        .context("starting the sandbox")?;
    let key = Arc::new(MasterKey::create_file(&config.key_file())?);
    let store = config.store().await?;
    let syncer = super::syncer(store.clone(), key.clone());

    let creds = sandbox.credentials();
    let settings = ConnectionSettings {
        interval_secs: Some(3600),
        ..ConnectionSettings::new(sandbox.base_url(), &creds.username)
    };
    let connection = bankbridge_sync::add_connection(
        store.as_ref(),
        &key,
        "fibank-sandbox",
        "fibank",
        &settings,
        &Credentials::with_password(Secret::new(creds.password.clone())),
    )
    .await?;
    let summary = super::sync::sync_one(&syncer, &connection, false).await?;
    eprintln!(
        "synced {} transactions in {} accounts over {} windows",
        summary.inserted, summary.accounts, summary.windows
    );

    let (token, record) = bankbridge_server::auth::new_token("demo-read", Scope::Read);
    store.create_token(&record).await?;

    // A virtual bank card in an in-process reader (beside any real PC/SC
    // readers), registered with the card service.
    let virtual_readers = VirtualReaders::new();
    virtual_readers.insert(
        DEMO_READER,
        Box::new(VirtualCard::new(VirtualCardConfig::new(
            Profile::CapBe,
            DEMO_PIN,
        ))?),
    );
    let readers = Arc::new(ChainedReaders(vec![
        Box::new(virtual_readers),
        Box::new(PcscReaders::new()),
    ]));
    let state = AppState::with_readers(
        store.clone(),
        syncer,
        super::serve::known_connectors(),
        ServerConfig::default(),
        readers,
    );
    state.set_connector_forms(bankbridge_connectors::FORMS);
    // The dashboard: an admin token, and a one-time link that signs in with it.
    let (_, record) = bankbridge_server::auth::new_token("demo-dashboard", Scope::Admin);
    store.create_token(&record).await?;
    let login_link = bankbridge_server::auth::new_login_link(store.as_ref(), &record.id).await?;
    let institution = store
        .create_institution(&NewInstitution {
            id: new_id("fi"),
            name: "Demo Bank (simulated)".into(),
            country: Some("BE".into()),
        })
        .await?;
    let card = state
        .cards
        .register(
            &institution,
            CardRegistration {
                host: None,
                reader: DEMO_READER.into(),
                label: "demo card".into(),
                account_reference: "BE68 5390 0754 7034".into(),
                pin: Secret::new(DEMO_PIN.into()),
                min_pin_tries: None,
            },
            "demo",
        )
        .await
        .context("registering the demo's virtual card")?;
    let (card_token, record) = bankbridge_server::auth::new_token("demo-cards", Scope::Write);
    store.create_token(&record).await?;

    // The BankID gateway, speaking mutual TLS to the sandbox's simulator.
    if let Some(endpoint) = sandbox.bankid() {
        let client = super::bankid::client_from_pem_files(
            &endpoint.base_url,
            &endpoint.rp_cert,
            &endpoint.rp_key,
            &endpoint.ca_cert,
        )?;
        state.set_bankid(BankIdGateway::new(client));
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| {
            format!(
                "listening on {} (pass --listen 127.0.0.1:PORT to pick another port)",
                args.listen
            )
        })?;
    let addr = listener.local_addr()?;

    println!();
    println!("bankbridge demo is up");
    println!(
        "  dashboard:   http://{addr}/login/link/{}  (a one-time sign-in link: it works once, within 15 minutes)",
        login_link.expose()
    );
    println!("  API:         http://{addr}/api/v1/  (OpenAPI: http://{addr}/api/v1/openapi.json)");
    println!("  read token:  {}", token.expose());
    println!(
        "  sandbox:     {}  (truth: {}/_sandbox/fibank/truth)",
        sandbox.base_url(),
        sandbox.root_url()
    );
    println!("  try:");
    println!(
        "    curl -s -H 'Authorization: Bearer {}' 'http://{addr}/api/v1/transactions?limit=5'",
        token.expose()
    );
    println!(
        "  card login:  curl -s -X POST -H 'Authorization: Bearer {}' -H 'Content-Type: application/json' -d '{{\"challenge\": \"123456\"}}' 'http://{addr}/api/v1/financial-institutions/{}/cards/{}/logins'",
        card_token.expose(),
        institution.id,
        card.id
    );
    if sandbox.bankid().is_some() {
        println!(
            "  BankID:      curl -s -X POST -H 'Authorization: Bearer {}' -H 'Content-Type: application/json' -d '{{\"type\": \"auth\"}}' 'http://{addr}/api/v1/bankid/orders'",
            card_token.expose()
        );
        println!(
            "               then follow its events_url, and play the user: bankbridge bankid user scan QRDATA --sandbox {}",
            sandbox.root_url()
        );
    }
    println!();
    if args.no_serve {
        return Ok(ExitCode::SUCCESS);
    }
    println!("Ctrl-C stops the demo and deletes its data.");
    let scheduler = bankbridge_server::spawn_scheduler(state.clone());
    bankbridge_server::serve(listener, state, super::serve::shutdown_signal()).await?;
    scheduler.abort();
    drop(sandbox);
    Ok(ExitCode::SUCCESS)
}
