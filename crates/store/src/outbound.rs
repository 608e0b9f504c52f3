//! What bankbridge hands to other tools and must remember doing so:
//! SimpleFIN access tokens (only hashes of their secrets kept) and the
//! marks of incremental exports. One implementation for both backends
//! ([`outbound_store!`]): the SQL is the same text on both.
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::Result;

/// A SimpleFIN token as listed: never its secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimplefinToken {
    /// Public id; the access URL's user name once claimed.
    pub id: String,
    pub name: String,
    /// The accounts it may read (bankbridge account ids).
    pub accounts: Vec<i64>,
    /// The server's SimpleFIN root as the token's user reaches it.
    pub base_url: String,
    pub created_at: DateTime<Utc>,
    pub claimed_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Where an incremental export (`export --since-last NAME`) stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportMark {
    pub name: String,
    /// The format it was made in: a name keeps its format.
    pub format: String,
    /// The newest `updated_at` among the rows already written.
    pub mark: DateTime<Utc>,
    /// Ledger accounts already opened (beancount `open`, journal `account`).
    pub opened: Vec<String>,
    /// How many exports this name has made.
    pub exports: i64,
    pub updated_at: DateTime<Utc>,
}

#[async_trait]
pub trait Outbound: Send + Sync + 'static {
    /// Keep a new token with the SHA-256 of its claim code. `Conflict` when
    /// the id or the name is taken.
    async fn create_simplefin_token(&self, token: &SimplefinToken, claim_hash: &[u8])
    -> Result<()>;
    async fn list_simplefin_tokens(&self) -> Result<Vec<SimplefinToken>>;
    /// By id or name; false when none matched.
    async fn revoke_simplefin_token(&self, id_or_name: &str, at: DateTime<Utc>) -> Result<bool>;
    /// Claim the token whose claim code hashes to `claim_hash`, once: it
    /// gets the access password's hash. None when no unclaimed, unrevoked
    /// token matches (a second claim gets None too).
    async fn claim_simplefin_token(
        &self,
        claim_hash: &[u8],
        access_hash: &[u8],
        at: DateTime<Utc>,
    ) -> Result<Option<SimplefinToken>>;
    /// A claimed token by id, with the hash its access password must match.
    async fn simplefin_access(&self, id: &str) -> Result<Option<(SimplefinToken, Vec<u8>)>>;
    async fn touch_simplefin_token(&self, id: &str, at: DateTime<Utc>) -> Result<()>;

    async fn export_mark(&self, name: &str) -> Result<Option<ExportMark>>;
    /// Insert or replace the mark of `mark.name`.
    async fn save_export_mark(&self, mark: &ExportMark) -> Result<()>;
}

macro_rules! outbound_store {
    ($Store:ty, $Row:ty) => {
        #[async_trait]
        impl $crate::outbound::Outbound for $Store {
            async fn create_simplefin_token(
                &self,
                token: &$crate::outbound::SimplefinToken,
                claim_hash: &[u8],
            ) -> Result<()> {
                let accounts = serde_json::to_string(&token.accounts)
                    .map_err(|e| StoreError::Conflict(e.to_string()))?;
                sqlx::query(
                    "INSERT INTO simplefin_tokens (id, name, accounts, base_url, claim_hash, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&token.id)
                .bind(&token.name)
                .bind(accounts)
                .bind(&token.base_url)
                .bind(claim_hash)
                .bind(crate::common::micros(token.created_at))
                .execute(self.writes())
                .await
                .map_err(|e| {
                    if crate::common::is_unique_violation(&e) {
                        StoreError::Conflict(format!(
                            "a SimpleFIN token named {:?} already exists",
                            token.name
                        ))
                    } else {
                        e.into()
                    }
                })?;
                Ok(())
            }

            async fn list_simplefin_tokens(&self) -> Result<Vec<$crate::outbound::SimplefinToken>> {
                let rows = sqlx::query(&format!(
                    "SELECT {} FROM simplefin_tokens ORDER BY created_at, id",
                    $crate::outbound::SIMPLEFIN_COLUMNS
                ))
                .fetch_all(self.reads())
                .await?;
                rows.iter().map(simplefin_from_row).collect()
            }

            async fn revoke_simplefin_token(&self, id_or_name: &str, at: DateTime<Utc>) -> Result<bool> {
                let done = sqlx::query(
                    "UPDATE simplefin_tokens SET revoked_at = COALESCE(revoked_at, $1) \
                     WHERE id = $2 OR name = $2",
                )
                .bind(crate::common::micros(at))
                .bind(id_or_name)
                .execute(self.writes())
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn claim_simplefin_token(
                &self,
                claim_hash: &[u8],
                access_hash: &[u8],
                at: DateTime<Utc>,
            ) -> Result<Option<$crate::outbound::SimplefinToken>> {
                // One statement checks and claims: two claims cannot both win.
                let row = sqlx::query(&format!(
                    "UPDATE simplefin_tokens SET access_hash = $1, claimed_at = $2 \
                     WHERE claim_hash = $3 AND claimed_at IS NULL AND revoked_at IS NULL \
                     RETURNING {}",
                    $crate::outbound::SIMPLEFIN_COLUMNS
                ))
                .bind(access_hash)
                .bind(crate::common::micros(at))
                .bind(claim_hash)
                .fetch_optional(self.writes())
                .await?;
                row.as_ref().map(simplefin_from_row).transpose()
            }

            async fn simplefin_access(
                &self,
                id: &str,
            ) -> Result<Option<($crate::outbound::SimplefinToken, Vec<u8>)>> {
                let row = sqlx::query(&format!(
                    "SELECT {}, access_hash FROM simplefin_tokens \
                     WHERE id = $1 AND access_hash IS NOT NULL",
                    $crate::outbound::SIMPLEFIN_COLUMNS
                ))
                .bind(id)
                .fetch_optional(self.reads())
                .await?;
                let Some(row) = row else { return Ok(None) };
                let hash: Vec<u8> = row.try_get(8)?;
                Ok(Some((simplefin_from_row(&row)?, hash)))
            }

            async fn touch_simplefin_token(&self, id: &str, at: DateTime<Utc>) -> Result<()> {
                sqlx::query("UPDATE simplefin_tokens SET last_used_at = $1 WHERE id = $2")
                    .bind(crate::common::micros(at))
                    .bind(id)
                    .execute(self.writes())
                    .await?;
                Ok(())
            }

            async fn export_mark(&self, name: &str) -> Result<Option<$crate::outbound::ExportMark>> {
                let row = sqlx::query(
                    "SELECT name, format, mark, opened, exports, updated_at FROM export_marks WHERE name = $1",
                )
                .bind(name)
                .fetch_optional(self.reads())
                .await?;
                let Some(r) = row else { return Ok(None) };
                let opened: String = r.try_get(3)?;
                Ok(Some($crate::outbound::ExportMark {
                    name: r.try_get(0)?,
                    format: r.try_get(1)?,
                    mark: r.try_get(2)?,
                    opened: $crate::outbound::parse_json(&opened, "export mark's opened accounts")?,
                    exports: r.try_get(4)?,
                    updated_at: r.try_get(5)?,
                }))
            }

            async fn save_export_mark(&self, mark: &$crate::outbound::ExportMark) -> Result<()> {
                let opened = serde_json::to_string(&mark.opened)
                    .map_err(|e| StoreError::Conflict(e.to_string()))?;
                sqlx::query(
                    "INSERT INTO export_marks (name, format, mark, opened, exports, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (name) DO UPDATE SET format = excluded.format, mark = excluded.mark, \
                     opened = excluded.opened, exports = excluded.exports, updated_at = excluded.updated_at",
                )
                .bind(&mark.name)
                .bind(&mark.format)
                .bind(crate::common::micros(mark.mark))
                .bind(opened)
                .bind(mark.exports)
                .bind(crate::common::micros(mark.updated_at))
                .execute(self.writes())
                .await?;
                Ok(())
            }
        }

        fn simplefin_from_row(r: &$Row) -> Result<$crate::outbound::SimplefinToken> {
            let accounts: String = r.try_get(2)?;
            Ok($crate::outbound::SimplefinToken {
                id: r.try_get(0)?,
                name: r.try_get(1)?,
                accounts: $crate::outbound::parse_json(&accounts, "SimpleFIN token's accounts")?,
                base_url: r.try_get(3)?,
                created_at: r.try_get(4)?,
                claimed_at: r.try_get(5)?,
                last_used_at: r.try_get(6)?,
                revoked_at: r.try_get(7)?,
            })
        }
    };
}
pub(crate) use outbound_store;

pub(crate) const SIMPLEFIN_COLUMNS: &str =
    "id, name, accounts, base_url, created_at, claimed_at, last_used_at, revoked_at";

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text)
        .map_err(|e| crate::common::corrupt(format!("{what} is not valid JSON: {e}")))
}
