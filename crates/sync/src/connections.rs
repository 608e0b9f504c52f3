//! Adding and changing connections: the rules a connection's settings keep
//! (in one place for the CLI and the API), and credentials sealed before
//! they reach the store.
use bankbridge_core::{ConnectionSettings, Credentials, MasterKey, Secret};
use bankbridge_store::{Connection, ConnectionUpdate, Connections, NewConnection};
use chrono::NaiveDate;

use crate::{SyncError, Syncer};

/// Where the master key's check value is kept (`Store::meta`).
pub const KEY_CHECK: &str = "master_key_check";

/// Make sure `key` is the master key this database's secrets are sealed
/// with, before anything is sealed under it: a database remembers the check
/// value of its key. One that does not yet (made before check values were
/// kept) learns it once the key has opened a secret already stored there.
pub async fn check_master_key(store: &dyn Connections, key: &MasterKey) -> Result<(), SyncError> {
    let ours = key.check_value();
    if let Some(recorded) = store.meta(KEY_CHECK).await? {
        return if recorded == ours {
            Ok(())
        } else {
            Err(SyncError::WrongMasterKey {
                recorded,
                given: ours,
            })
        };
    }
    if let Some(c) = store.list_connections().await?.first()
        && key
            .open(&c.credentials_sealed, &credentials_purpose(&c.name))
            .is_err()
    {
        return Err(SyncError::WrongMasterKey {
            recorded: "unknown (this database predates check values)".into(),
            given: ours,
        });
    }
    let recorded = store.init_meta(KEY_CHECK, &ours).await?;
    if recorded != ours {
        return Err(SyncError::WrongMasterKey {
            recorded,
            given: ours,
        });
    }
    Ok(())
}

/// Shortest interval between scheduled syncs: banks do not like being polled.
pub const MIN_INTERVAL_SECS: u64 = 60;
/// Longest interval between scheduled syncs: 366 days.
pub const MAX_INTERVAL_SECS: u64 = 366 * 24 * 3600;

/// The sealing purpose of a connection's credentials (binds the blob to its row).
pub fn credentials_purpose(connection_name: &str) -> String {
    format!("bankbridge/connection/{connection_name}/credentials")
}

pub fn session_purpose(connection_name: &str) -> String {
    format!("bankbridge/connection/{connection_name}/session")
}

fn invalid(field: &'static str, message: impl Into<String>) -> SyncError {
    SyncError::InvalidField {
        field,
        message: message.into(),
    }
}

/// What a connection's name is: an ASCII letter, then up to 63 letters,
/// digits, spaces, `.`, `_` or `-` (never only digits: a name must not
/// read as an id). As a regular expression, for the API document.
pub const NAME_PATTERN: &str = "^[A-Za-z][A-Za-z0-9 ._-]{0,63}$";

/// Check a new connection's name against [`NAME_PATTERN`].
pub fn check_name(name: &str) -> Result<(), SyncError> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "name",
            "name must start with a letter and hold up to 64 letters, digits, spaces, '.', '_' or '-'",
        ))
    }
}

/// The rules every connection's settings keep: a base URL secrets may go to
/// (https, or http to this machine), a username, window and overlap in
/// range, no interval shorter than [`MIN_INTERVAL_SECS`].
pub fn check_settings(s: &ConnectionSettings) -> Result<(), SyncError> {
    bankbridge_core::net::secure_url(&s.base_url, "base_url")
        .map_err(|m| invalid("base_url", m))?;
    if s.username.is_empty() || s.username.chars().count() > 256 {
        return Err(invalid("username", "username must be 1 to 256 characters"));
    }
    if !(1..=366).contains(&s.window_days) {
        return Err(invalid("window_days", "window_days must be 1 to 366"));
    }
    if s.overlap_days > 365 {
        return Err(invalid("overlap_days", "overlap_days must be 0 to 365"));
    }
    if s.interval_secs.is_some_and(|i| i < MIN_INTERVAL_SECS) {
        return Err(invalid(
            "interval_secs",
            format!(
                "the interval must be at least {MIN_INTERVAL_SECS} seconds (banks do not like being polled)"
            ),
        ));
    }
    if s.interval_secs.is_some_and(|i| i > MAX_INTERVAL_SECS) {
        return Err(invalid(
            "interval_secs",
            format!("the interval must be at most {MAX_INTERVAL_SECS} seconds (366 days)"),
        ));
    }
    Ok(())
}

/// Longest secret a connection keeps: an application's RSA private key in
/// PEM (Enable Banking) is its longest kind, about 3,300 characters at 4096 bits.
pub const MAX_SECRET_CHARS: usize = 16_384;

pub fn check_password(password: &Secret<String>) -> Result<(), SyncError> {
    let len = password.expose().chars().count();
    if len == 0 || len > MAX_SECRET_CHARS {
        return Err(invalid(
            "password",
            format!("password must be 1 to {MAX_SECRET_CHARS} characters"),
        ));
    }
    Ok(())
}

/// Seal credentials and create a connection. The settings are stored as
/// given (the CLI and the API check them with [`check_settings`] first).
pub async fn add_connection(
    store: &dyn Connections,
    key: &MasterKey,
    name: &str,
    connector: &str,
    settings: &ConnectionSettings,
    credentials: &Credentials,
) -> Result<Connection, SyncError> {
    let sealed = key.seal(
        credentials.to_json_for_sealing().as_bytes(),
        &credentials_purpose(name),
    );
    let new = NewConnection {
        name: name.to_owned(),
        connector: connector.to_owned(),
        settings: serde_json::to_value(settings).expect("settings serialise"),
        credentials_sealed: sealed,
    };
    Ok(store.create_connection(&new).await?)
}

/// An existing connection that logs into the same place as the same person:
/// same connector, base URL (trailing slashes and letter case aside) and
/// username. Two of them double every request to the bank, and banks lock
/// a customer whose logins fail from two places.
pub fn same_login<'a>(
    existing: &'a [Connection],
    connector: &str,
    settings: &ConnectionSettings,
) -> Option<&'a Connection> {
    let url = |u: &str| u.trim_end_matches('/').to_ascii_lowercase();
    existing.iter().find(|c| {
        let Ok(theirs) = serde_json::from_value::<ConnectionSettings>(c.settings.clone()) else {
            return false;
        };
        c.connector == connector
            && url(&theirs.base_url) == url(&settings.base_url)
            && theirs.username.trim() == settings.username.trim()
    })
}

/// What to change on a connection; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct ConnectionChange {
    pub base_url: Option<String>,
    pub username: Option<String>,
    /// The new password or PIN: the credentials' version goes up, which
    /// lifts the block a refused login put on the connection.
    pub password: Option<Secret<String>>,
    pub window_days: Option<u32>,
    pub overlap_days: Option<u32>,
    /// `Some(None)` removes the oldest-day limit.
    pub since: Option<Option<NaiveDate>>,
    /// `Some(None)` turns scheduled syncs off.
    pub interval_secs: Option<Option<u64>>,
    /// The connector's options, all of them (replacing the stored ones).
    pub options: Option<std::collections::BTreeMap<String, String>>,
    /// `Some(None)` unbinds the card that answers card-reader challenges.
    pub sca_card: Option<Option<String>>,
}

impl ConnectionChange {
    /// Whether the change names the login's place or account: that comes
    /// with the password, always.
    fn moves(&self) -> bool {
        self.base_url.is_some() || self.username.is_some()
    }
}

/// Change `connection`'s settings and credentials. A base URL or username
/// comes with the password in the same change: stored credentials never go
/// to another bank or account unasked. New credentials or a move also
/// forget the kept bank session. `Ok(None)` when the connection is gone.
pub async fn update_connection(
    store: &dyn Connections,
    key: &MasterKey,
    connection: &Connection,
    change: &ConnectionChange,
) -> Result<Option<Connection>, SyncError> {
    let mut settings = Syncer::settings(connection)?;
    let moves = change.moves();
    if moves && change.password.is_none() {
        return Err(invalid(
            "password",
            "a base URL or username comes with the password in the same change \
             (stored credentials are not sent to another bank or account)",
        ));
    }
    if let Some(url) = &change.base_url {
        settings.base_url = url.clone();
    }
    if let Some(username) = &change.username {
        settings.username = username.clone();
    }
    if let Some(w) = change.window_days {
        settings.window_days = w;
    }
    if let Some(o) = change.overlap_days {
        settings.overlap_days = o;
    }
    if let Some(since) = change.since {
        settings.since = since;
    }
    if let Some(interval) = change.interval_secs {
        settings.interval_secs = interval;
    }
    if let Some(options) = &change.options {
        settings.options = options.clone();
    }
    if let Some(card) = &change.sca_card {
        settings.sca_card = card.clone();
    }
    check_settings(&settings)?;
    let credentials_sealed = match &change.password {
        Some(password) => {
            check_password(password)?;
            let mut credentials = Credentials::from_json(
                key.open_str(
                    &connection.credentials_sealed,
                    &credentials_purpose(&connection.name),
                )?
                .expose(),
            )
            .map_err(|e| SyncError::Settings {
                connection: connection.name.clone(),
                detail: format!("sealed credentials are not a JSON object: {e}"),
            })?;
            credentials
                .fields
                .insert("password".to_owned(), password.clone());
            Some(key.seal(
                credentials.to_json_for_sealing().as_bytes(),
                &credentials_purpose(&connection.name),
            ))
        }
        None => None,
    };
    let update = ConnectionUpdate {
        settings: Some(serde_json::to_value(&settings).expect("settings serialise")),
        clear_session: credentials_sealed.is_some() || moves,
        credentials_sealed,
    };
    Ok(store.update_connection(connection.id, &update).await?)
}
