//! The `serve` processes sharing one database, each under a name, with a
//! heartbeat: what `GET /api/v1/instances` and `/metrics` list, and what
//! keeps two live processes from taking one name. One implementation for
//! both backends ([`instances_store!`]): the SQL is the same text on both.
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::Result;

/// One `serve` process as it registered and last beat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    /// `serve --instance-name`: unique among live instances.
    pub name: String,
    /// Its lease owner name (pid, host, run), as its syncs hold leases.
    pub owner: String,
    /// The bankbridge version it runs.
    pub version: String,
    /// The address it listens on.
    pub listen: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    /// Gone from then on unless it beats again.
    pub expires_at: DateTime<Utc>,
    /// Set by a clean stop.
    pub stopped_at: Option<DateTime<Utc>>,
}

impl Instance {
    /// Beating at `now`: not stopped, not expired.
    pub fn alive(&self, now: DateTime<Utc>) -> bool {
        self.stopped_at.is_none() && self.expires_at > now
    }
}

#[async_trait]
pub trait Instances: Send + Sync + 'static {
    /// Take `instance.name` for `instance.owner`: false when a live
    /// instance of another owner has it (stopped or expired ones give it up).
    async fn register_instance(&self, instance: &Instance) -> Result<bool>;
    /// Beat: move `expires_at` on; false when the name is no longer this
    /// owner's (it expired and another process took it).
    async fn beat_instance(
        &self,
        name: &str,
        owner: &str,
        at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<bool>;
    /// A clean stop: the name is free at once.
    async fn stop_instance(&self, name: &str, owner: &str, at: DateTime<Utc>) -> Result<()>;
    /// Every instance that ever registered, by name.
    async fn list_instances(&self) -> Result<Vec<Instance>>;
}

macro_rules! instances_store {
    ($Store:ty) => {
        #[async_trait]
        impl $crate::instances::Instances for $Store {
            async fn register_instance(&self, i: &$crate::instances::Instance) -> Result<bool> {
                if i.name.trim().is_empty() {
                    return Err(StoreError::Conflict("an instance name must not be empty".into()));
                }
                // One statement: two processes starting under one name
                // cannot both win it.
                let done = sqlx::query(
                    "INSERT INTO instances (name, owner, version, listen, started_at, heartbeat_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, version = excluded.version, \
                     listen = excluded.listen, started_at = excluded.started_at, \
                     heartbeat_at = excluded.heartbeat_at, expires_at = excluded.expires_at, stopped_at = NULL \
                     WHERE instances.owner = excluded.owner OR instances.stopped_at IS NOT NULL \
                     OR instances.expires_at < excluded.heartbeat_at",
                )
                .bind(&i.name)
                .bind(&i.owner)
                .bind(&i.version)
                .bind(&i.listen)
                .bind(crate::common::micros(i.started_at))
                .bind(crate::common::micros(i.heartbeat_at))
                .bind(crate::common::micros(i.expires_at))
                .execute(self.writes())
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn beat_instance(
                &self,
                name: &str,
                owner: &str,
                at: DateTime<Utc>,
                expires_at: DateTime<Utc>,
            ) -> Result<bool> {
                let done = sqlx::query(
                    "UPDATE instances SET heartbeat_at = $1, expires_at = $2 \
                     WHERE name = $3 AND owner = $4 AND stopped_at IS NULL",
                )
                .bind(crate::common::micros(at))
                .bind(crate::common::micros(expires_at))
                .bind(name)
                .bind(owner)
                .execute(self.writes())
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn stop_instance(&self, name: &str, owner: &str, at: DateTime<Utc>) -> Result<()> {
                sqlx::query("UPDATE instances SET stopped_at = $1 WHERE name = $2 AND owner = $3")
                    .bind(crate::common::micros(at))
                    .bind(name)
                    .bind(owner)
                    .execute(self.writes())
                    .await?;
                Ok(())
            }

            async fn list_instances(&self) -> Result<Vec<$crate::instances::Instance>> {
                let rows = sqlx::query(
                    "SELECT name, owner, version, listen, started_at, heartbeat_at, expires_at, stopped_at \
                     FROM instances ORDER BY name",
                )
                .fetch_all(self.reads())
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok($crate::instances::Instance {
                            name: r.try_get(0)?,
                            owner: r.try_get(1)?,
                            version: r.try_get(2)?,
                            listen: r.try_get(3)?,
                            started_at: r.try_get(4)?,
                            heartbeat_at: r.try_get(5)?,
                            expires_at: r.try_get(6)?,
                            stopped_at: r.try_get(7)?,
                        })
                    })
                    .collect()
            }
        }
    };
}
pub(crate) use instances_store;
