//! A SimpleFIN server (protocol 1.0), so budgeting apps that pull from a
//! SimpleFIN Bridge (Actual Budget, Sure, …) pull from bankbridge instead.
//! No HTTP here: `api::simplefin` maps requests and answers.
//!
//! The flow, as the protocol has it:
//! 1. `bankbridge simplefin token create` makes a *SimpleFIN Token*: the
//!    base64 of a one-time claim URL `<root>/claim/<code>`. Only the code's
//!    SHA-256 is kept. The token is scoped to chosen accounts, read-only.
//! 2. The app `POST`s the claim URL once and gets the *Access URL*,
//!    `https://<id>:<password>@host/…/simplefin`; only the password's
//!    SHA-256 is kept. A second claim, or a claim of a revoked token: 403.
//! 3. The app `GET`s `<root>/accounts` with those credentials (HTTP Basic)
//!    and the filters `start-date`, `end-date` (epoch seconds, end
//!    exclusive), `pending=1`, `account=<id>` (repeatable),
//!    `balances-only=1`. A revoked token gets 403.
//!
//! What the answer holds, and which of it is our modelling (the protocol
//! leaves it open, so we fill it the way a client written against the
//! SimpleFIN Bridge expects):
//! - `org` is the account's connection: `name`, `id` (`conn-<id>`),
//!   `sfin-url` (this server's root) and `domain` (the bank host when the
//!   connection names one, else `<connector>.bankbridge`); the Bridge
//!   always fills `domain`, so we never leave it out.
//! - Account `id` is `acct-<id>`: stable, not sensitive (no IBAN).
//!   `balance` is the newest booked balance (else the available one),
//!   `balance-date` the moment bankbridge fetched it, and
//!   `available-balance` is always written (the newest available balance,
//!   else the same as `balance`), as the Bridge does.
//! - Transaction `id` is the bank's id (unique within its account),
//!   `posted` the booking day at 00:00 UTC (also for pending rows: some
//!   clients read 0 as 1970), `transacted_at` the day of the card payment
//!   when known, `description` our cleaned label, `payee` the counterparty
//!   (else the label), `memo` the remittance text, `pending` true for
//!   pending rows. Void rows are never listed.
//! - Without `start-date` every row is listed (the Bridge keeps about 90
//!   days; bankbridge keeps everything it synced).
//! - `errors` says "Connection to <name> may need attention" for each
//!   connection in scope whose last sync did not succeed: the Bridge's
//!   wording, which clients parse.
use std::collections::BTreeMap;

use bankbridge_core::TxStatus;
use bankbridge_store::{
    BankData, Connections, Outbound, SimplefinToken, StoreError, SyncOutcome, TxQuery,
};
use base64::Engine as _;
use chrono::{DateTime, NaiveDate, Utc};
use futures::StreamExt;
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The protocol versions served (`GET /info`).
pub const VERSIONS: [&str; 1] = ["1.0"];

#[derive(Debug, thiserror::Error)]
pub enum SimplefinError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A new token: what is stored, and the SimpleFIN Token to hand to the app
/// (shown once).
pub struct NewToken {
    pub token: SimplefinToken,
    pub setup_token: String,
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewToken")
            .field("token", &self.token)
            .field("setup_token", &"<redacted>")
            .finish()
    }
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn sha256(text: &str) -> Vec<u8> {
    Sha256::digest(text.as_bytes()).to_vec()
}

/// `root_url` is how the app reaches `serve`, e.g. `https://host:8443`;
/// the SimpleFIN root is `<root_url>/simplefin`.
pub async fn create_token(
    store: &dyn Outbound,
    bank: &dyn BankData,
    name: &str,
    accounts: &[i64],
    root_url: &str,
    now: DateTime<Utc>,
) -> Result<NewToken, SimplefinError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(SimplefinError::Invalid(
            "a token needs a name of 1 to 100 characters".into(),
        ));
    }
    if accounts.is_empty() {
        return Err(SimplefinError::Invalid(
            "name the accounts the token may read (--account ID, or --all-accounts)".into(),
        ));
    }
    for id in accounts {
        if bank.get_account(*id).await?.is_none() {
            return Err(SimplefinError::Invalid(format!("there is no account {id}")));
        }
    }
    let root = url::Url::parse(root_url.trim_end_matches('/'))
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| {
            SimplefinError::Invalid(format!(
                "{root_url:?} is not an http(s) address the app can reach bankbridge at"
            ))
        })?;
    let base_url = format!("{}/simplefin", root.as_str().trim_end_matches('/'));
    let code = random_hex(24);
    let token = SimplefinToken {
        id: format!("sf{}", random_hex(8)),
        name: name.to_owned(),
        accounts: accounts.to_vec(),
        base_url,
        created_at: now,
        claimed_at: None,
        last_used_at: None,
        revoked_at: None,
    };
    store.create_simplefin_token(&token, &sha256(&code)).await?;
    let claim_url = format!("{}/claim/{code}", token.base_url);
    let setup_token = base64::engine::general_purpose::STANDARD.encode(claim_url);
    Ok(NewToken { token, setup_token })
}

/// Claim a token once: its Access URL, or None (unknown, already claimed
/// or revoked: the app must warn its user).
pub async fn claim(
    store: &dyn Outbound,
    code: &str,
    now: DateTime<Utc>,
) -> Result<Option<String>, StoreError> {
    let password = random_hex(24);
    let Some(token) = store
        .claim_simplefin_token(&sha256(code), &sha256(&password), now)
        .await?
    else {
        return Ok(None);
    };
    let mut url = url::Url::parse(&token.base_url)
        .map_err(|e| StoreError::Conflict(format!("stored SimpleFIN root: {e}")))?;
    let _ = url.set_username(&token.id);
    let _ = url.set_password(Some(&password));
    Ok(Some(url.to_string()))
}

/// The token the Basic credentials belong to, when they are right and it is
/// not revoked.
pub async fn authenticate(
    store: &dyn Outbound,
    user: &str,
    password: &str,
    now: DateTime<Utc>,
) -> Result<Option<SimplefinToken>, StoreError> {
    let Some((token, hash)) = store.simplefin_access(user).await? else {
        return Ok(None);
    };
    let ok: bool = sha256(password).ct_eq(&hash).into();
    if !ok || token.revoked_at.is_some() {
        return Ok(None);
    }
    store.touch_simplefin_token(&token.id, now).await?;
    Ok(Some(token))
}

/// `GET /accounts`'s filters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountsQuery {
    /// Epoch seconds; rows posted at or after.
    pub start_date: Option<i64>,
    /// Epoch seconds; rows posted before (exclusive).
    pub end_date: Option<i64>,
    pub pending: bool,
    /// Account ids (`acct-<id>`); empty: all the token may read.
    pub accounts: Vec<String>,
    pub balances_only: bool,
}

#[derive(Serialize, Debug)]
pub struct AccountSet {
    pub errors: Vec<String>,
    pub accounts: Vec<SfAccount>,
}

#[derive(Serialize, Debug, Clone)]
pub struct Organization {
    pub domain: String,
    pub name: String,
    #[serde(rename = "sfin-url")]
    pub sfin_url: String,
    pub id: String,
}

#[derive(Serialize, Debug)]
pub struct SfAccount {
    pub org: Organization,
    pub id: String,
    pub name: String,
    pub currency: String,
    pub balance: String,
    #[serde(rename = "available-balance")]
    pub available_balance: String,
    #[serde(rename = "balance-date")]
    pub balance_date: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transactions: Option<Vec<SfTransaction>>,
    pub extra: serde_json::Value,
}

#[derive(Serialize, Debug)]
pub struct SfTransaction {
    pub id: String,
    pub posted: i64,
    pub amount: String,
    pub description: String,
    pub payee: String,
    pub memo: String,
    pub transacted_at: i64,
    pub pending: bool,
}

fn day_epoch(day: NaiveDate) -> i64 {
    day.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp())
        .unwrap_or_default()
}

/// The first day whose 00:00 UTC is at or after `epoch`.
fn first_day_at_or_after(epoch: i64) -> Option<NaiveDate> {
    let days = epoch.div_euclid(86_400) + i64::from(epoch.rem_euclid(86_400) != 0);
    NaiveDate::from_ymd_opt(1970, 1, 1)?.checked_add_signed(chrono::Duration::days(days))
}

pub fn account_id(id: i64) -> String {
    format!("acct-{id}")
}

/// The Account Set the token may see, filtered.
pub async fn account_set(
    bank: &dyn BankData,
    connections: &dyn Connections,
    token: &SimplefinToken,
    query: &AccountsQuery,
) -> Result<AccountSet, StoreError> {
    let from = query.start_date.and_then(first_day_at_or_after);
    // Posted before `end`: days whose 00:00 is before it.
    let to = query
        .end_date
        .and_then(first_day_at_or_after)
        .and_then(|d| d.pred_opt());
    let mut errors = Vec::new();
    let mut orgs: BTreeMap<i64, Organization> = BTreeMap::new();
    let mut accounts = Vec::new();
    let mut names_used: BTreeMap<String, usize> = BTreeMap::new();
    for id in &token.accounts {
        if !query.accounts.is_empty() && !query.accounts.contains(&account_id(*id)) {
            continue;
        }
        let Some(account) = bank.get_account(*id).await? else {
            continue;
        };
        if !orgs.contains_key(&account.connection_id) {
            let Some(connection) = connections.get_connection(account.connection_id).await? else {
                continue;
            };
            if matches!(
                connection.last_sync_status,
                SyncOutcome::Failed | SyncOutcome::NeedsUser | SyncOutcome::CredentialsRefused
            ) {
                errors.push(format!(
                    "Connection to {} may need attention",
                    connection.name
                ));
            }
            orgs.insert(
                connection.id,
                Organization {
                    domain: domain_of(&connection.settings, &connection.connector),
                    name: connection.name.clone(),
                    sfin_url: token.base_url.clone(),
                    id: format!("conn-{}", connection.id),
                },
            );
        }
        let org = orgs[&account.connection_id].clone();
        let balances = bank.list_balances(account.id).await?;
        let current = bankbridge_store::current_balance(&balances);
        let available = balances
            .iter()
            .filter(|b| b.balance.kind == bankbridge_core::BalanceKind::Available)
            .max_by_key(|b| (b.balance.reference_date, b.fetched_at))
            .or(current);
        let money = |amount| account.currency.money(amount).to_string();
        let balance = current.map(|b| money(b.balance.amount));
        if balance.is_none() {
            errors.push(format!(
                "{}: the bank has reported no balance yet",
                account.display_name()
            ));
        }
        let balance = balance.unwrap_or_else(|| money(rust_decimal::Decimal::ZERO));
        // Names are unique among a user's accounts.
        let mut name = account.display_name();
        let n = names_used.entry(name.clone()).or_default();
        *n += 1;
        if *n > 1 {
            name = format!("{name} ({})", account.id);
        }
        let transactions = if query.balances_only {
            None
        } else {
            let mut rows = Vec::new();
            let mut stream = bank.stream_transactions(TxQuery {
                account_id: Some(account.id),
                from,
                to,
                ..TxQuery::default()
            });
            while let Some(tx) = stream.next().await {
                let tx = tx?;
                match tx.status {
                    TxStatus::Void => continue,
                    TxStatus::Pending if !query.pending => continue,
                    _ => {}
                }
                let description = tx.label.trim().to_owned();
                rows.push(SfTransaction {
                    id: tx.provider_id.clone(),
                    posted: day_epoch(tx.booking_date),
                    amount: tx.currency.money(tx.amount).to_string(),
                    payee: tx
                        .counterparty_name
                        .clone()
                        .filter(|p| !p.trim().is_empty())
                        .unwrap_or_else(|| description.clone()),
                    memo: tx.remittance_info.clone().unwrap_or_default(),
                    description,
                    transacted_at: day_epoch(tx.transaction_date.unwrap_or(tx.booking_date)),
                    pending: tx.status == TxStatus::Pending,
                });
            }
            Some(rows)
        };
        // Without an available balance, the booked one, as the Bridge fills it.
        let available_balance = available
            .map(|b| money(b.balance.amount))
            .unwrap_or_else(|| balance.clone());
        accounts.push(SfAccount {
            org,
            id: account_id(account.id),
            name,
            currency: account.currency.as_str().to_owned(),
            balance,
            available_balance,
            balance_date: current.map(|b| b.fetched_at.timestamp()).unwrap_or(0),
            transactions,
            extra: serde_json::json!({}),
        });
    }
    Ok(AccountSet { errors, accounts })
}

/// The bank's host when the connection's settings name a URL, else a name
/// made of the connector's.
fn domain_of(settings: &serde_json::Value, connector: &str) -> String {
    let host = settings.as_object().and_then(|o| {
        o.values()
            .filter_map(|v| v.as_str())
            .filter_map(|s| url::Url::parse(s).ok())
            .find_map(|u| u.host_str().map(str::to_owned))
    });
    host.unwrap_or_else(|| format!("{connector}.bankbridge"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_bounds_become_days() {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).unwrap();
        assert_eq!(
            first_day_at_or_after(day_epoch(d(2026, 3, 1))),
            Some(d(2026, 3, 1))
        );
        assert_eq!(
            first_day_at_or_after(day_epoch(d(2026, 3, 1)) + 1),
            Some(d(2026, 3, 2))
        );
        assert_eq!(first_day_at_or_after(0), Some(d(1970, 1, 1)));
    }

    #[test]
    fn the_domain_comes_from_the_bank_url() {
        let settings = serde_json::json!({"base_url": "https://api.bank.example/v1", "x": 1});
        assert_eq!(domain_of(&settings, "xs2a"), "api.bank.example");
        assert_eq!(
            domain_of(&serde_json::json!({}), "fibank"),
            "fibank.bankbridge"
        );
    }
}
