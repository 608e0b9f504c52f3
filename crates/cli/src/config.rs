//! Where bankbridge keeps its data and how it is configured.
//!
//! Precedence: command-line flag, then `BANKBRIDGE_*` environment variable,
//! then `$BANKBRIDGE_HOME/config.toml`, then defaults that need no file
//! (SQLite at `$BANKBRIDGE_HOME/bankbridge.db`).
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use bankbridge_core::MasterKey;
use bankbridge_store::{Store, StoreParts};
use serde::Deserialize;

/// `$BANKBRIDGE_HOME/config.toml`. Every field is optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// A SQLite path or a `postgres://` URL.
    pub db: Option<String>,
    /// Address `serve` listens on.
    pub listen: Option<String>,
    /// Log as JSON lines instead of human text.
    pub log_json: Option<bool>,
    /// Category rules applied at import (a TOML file; relative to the data directory).
    pub categories: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub home: PathBuf,
    pub db: String,
    pub file: FileConfig,
}

impl Config {
    /// Resolve the data directory and the database location.
    pub fn load(db_flag: Option<&str>) -> Result<Self> {
        let home = home_dir();
        let path = home.join("config.toml");
        let file: FileConfig = match std::fs::read_to_string(&path) {
            Ok(text) => {
                toml::from_str(&text).with_context(|| format!("reading {}", path.display()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileConfig::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let db = db_flag
            .map(str::to_owned)
            .or_else(|| {
                std::env::var("BANKBRIDGE_DB")
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .or_else(|| file.db.clone())
            .unwrap_or_else(|| home.join("bankbridge.db").display().to_string());
        Ok(Self { home, db, file })
    }

    pub fn for_home(home: &Path) -> Self {
        Self {
            home: home.to_owned(),
            db: home.join("bankbridge.db").display().to_string(),
            file: FileConfig::default(),
        }
    }

    pub fn key_file(&self) -> PathBuf {
        self.home.join("master.key")
    }

    pub fn master_key(&self) -> Result<Arc<MasterKey>> {
        Ok(Arc::new(MasterKey::load(&self.key_file())?))
    }

    /// The master key and the database it seals secrets for, checked to
    /// belong together before anything is sealed (see
    /// [`bankbridge_sync::check_master_key`]).
    pub async fn keyed_store(&self) -> Result<(Arc<MasterKey>, Arc<dyn Store>)> {
        let key = self.master_key()?;
        let store = self.store().await?;
        bankbridge_sync::check_master_key(store.as_ref(), &key).await?;
        Ok((key, store))
    }

    /// Create the data directory, readable by its owner only.
    pub fn create_home(&self) -> Result<()> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder
            .create(&self.home)
            .with_context(|| format!("creating the data directory {}", self.home.display()))
    }

    /// The store by domain, without bank writes: for the commands that read
    /// bank data or manage connections, tokens and cards.
    pub async fn parts(&self) -> Result<StoreParts> {
        Ok(StoreParts::of(&self.store().await?))
    }

    pub async fn store(&self) -> Result<Arc<dyn Store>> {
        bankbridge_store::open(&self.db)
            .await
            .with_context(|| format!("opening the database {}", redact_url(&self.db)))
    }
}

/// `$BANKBRIDGE_HOME`, else `~/.local/share/bankbridge` (the platform data dir).
pub fn home_dir() -> PathBuf {
    if let Some(h) = std::env::var_os("BANKBRIDGE_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("bankbridge")
}

/// Hide the password of a database URL before printing it.
pub fn redact_url(location: &str) -> String {
    match reqwest::Url::parse(location) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("redacted"));
            url.to_string()
        }
        _ => location.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_password_is_hidden() {
        assert_eq!(
            redact_url("postgres://bb:s3cret@127.0.0.1:5432/bb"),
            "postgres://bb:redacted@127.0.0.1:5432/bb"
        );
        assert_eq!(redact_url("/tmp/x.db"), "/tmp/x.db");
    }
}
