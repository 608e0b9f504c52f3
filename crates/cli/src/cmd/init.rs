use std::process::ExitCode;

use anyhow::{Context, Result};
use bankbridge_core::MasterKey;

use crate::config::{Config, redact_url};

/// Create the data directory, the master key file and the database.
pub async fn run(config: &Config) -> Result<ExitCode> {
    config.create_home()?;
    let key_file = config.key_file();
    if std::env::var_os(bankbridge_core::crypto::MASTER_KEY_ENV).is_some() {
        println!(
            "master key: from {} (no key file written)",
            bankbridge_core::crypto::MASTER_KEY_ENV
        );
    } else if key_file.exists() {
        MasterKey::load(&key_file)?;
        println!("master key: {} (already there, kept)", key_file.display());
    } else {
        MasterKey::create_file(&key_file)?;
        println!(
            "master key: {} (created, mode 0600 — back it up: without it stored credentials cannot be read)",
            key_file.display()
        );
    }
    let (key, store) = config
        .keyed_store()
        .await
        .context("the master key and the database do not belong together; nothing was changed")?;
    println!(
        "database:   {} ({}); master key check value {}",
        redact_url(&config.db),
        store.backend(),
        key.check_value()
    );
    println!("next:       bankbridge connection add --help");
    Ok(ExitCode::SUCCESS)
}
