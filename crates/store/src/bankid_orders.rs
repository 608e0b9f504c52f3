//! The BankID gateway's orders, shared by the `serve` instances on one
//! database: the instance that starts an order drives it and writes each
//! change; any instance reads it to answer for events, QR codes and
//! cancellation. One implementation for both backends
//! ([`bankid_orders_store!`]): the SQL is the same text on both.
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::Result;

/// One order as stored. `sealed` is opaque here: the server seals the QR
/// start secret and the order's state (completion data is personal).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredBankIdOrder {
    /// The gateway's own id (not BankID's `orderRef`).
    pub id: String,
    pub order_ref: String,
    /// SHA-256 of the events key.
    pub events_key_hash: Vec<u8>,
    /// The QR start token (public: it is in every QR code drawn).
    pub qr_start_token: Option<String>,
    /// When the start response came: the QR codes' clock.
    pub started_at: DateTime<Utc>,
    /// `pending`, `complete`, `failed`, `cancelled` or `error`.
    pub status: String,
    pub sealed: Vec<u8>,
    /// The process driving the order (a lease owner name).
    pub driver: String,
    /// The driver's last write: it writes at least every few seconds while
    /// the order is pending, so a silent driver is a dead one.
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for StoredBankIdOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredBankIdOrder")
            .field("id", &self.id)
            .field("order_ref", &self.order_ref)
            .field("status", &self.status)
            .field(
                "sealed",
                &format_args!("<{} bytes sealed>", self.sealed.len()),
            )
            .field("driver", &self.driver)
            .field("updated_at", &self.updated_at)
            .field("finished_at", &self.finished_at)
            .finish_non_exhaustive()
    }
}

#[async_trait]
pub trait BankIdOrders: Send + Sync + 'static {
    /// Keep a new order. `Conflict` when its id is taken.
    async fn insert_bankid_order(&self, order: &StoredBankIdOrder) -> Result<()>;
    /// The driver's write of the order's state: false when the order is
    /// gone, finished already, or driven by another process.
    async fn update_bankid_order(
        &self,
        id: &str,
        driver: &str,
        status: &str,
        sealed: &[u8],
        at: DateTime<Utc>,
        finished: bool,
    ) -> Result<bool>;
    async fn bankid_order(&self, id: &str) -> Result<Option<StoredBankIdOrder>>;
    /// Forget orders nobody wrote since `before` (finished ones, and
    /// pending ones whose driver died); how many.
    async fn prune_bankid_orders(&self, before: DateTime<Utc>) -> Result<u64>;
}

macro_rules! bankid_orders_store {
    ($Store:ty) => {
        #[async_trait]
        impl $crate::bankid_orders::BankIdOrders for $Store {
            async fn insert_bankid_order(
                &self,
                o: &$crate::bankid_orders::StoredBankIdOrder,
            ) -> Result<()> {
                sqlx::query(
                    "INSERT INTO bankid_orders (id, order_ref, events_key_hash, qr_start_token, \
                     started_at, status, sealed, driver, updated_at, finished_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(&o.id)
                .bind(&o.order_ref)
                .bind(&o.events_key_hash)
                .bind(&o.qr_start_token)
                .bind(crate::common::micros(o.started_at))
                .bind(&o.status)
                .bind(&o.sealed)
                .bind(&o.driver)
                .bind(crate::common::micros(o.updated_at))
                .bind(crate::common::opt_micros(o.finished_at))
                .execute(self.writes())
                .await
                .map_err(|e| match e {
                    sqlx::Error::Database(d) if d.is_unique_violation() => {
                        StoreError::Conflict(format!("a BankID order {} exists", o.id))
                    }
                    e => e.into(),
                })?;
                Ok(())
            }

            async fn update_bankid_order(
                &self,
                id: &str,
                driver: &str,
                status: &str,
                sealed: &[u8],
                at: DateTime<Utc>,
                finished: bool,
            ) -> Result<bool> {
                let at = crate::common::micros(at);
                let done = sqlx::query(
                    "UPDATE bankid_orders SET status = $1, sealed = $2, updated_at = $3, finished_at = $4 \
                     WHERE id = $5 AND driver = $6 AND finished_at IS NULL",
                )
                .bind(status)
                .bind(sealed)
                .bind(at)
                .bind(finished.then_some(at))
                .bind(id)
                .bind(driver)
                .execute(self.writes())
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn bankid_order(
                &self,
                id: &str,
            ) -> Result<Option<$crate::bankid_orders::StoredBankIdOrder>> {
                let row = sqlx::query(
                    "SELECT id, order_ref, events_key_hash, qr_start_token, started_at, status, \
                     sealed, driver, updated_at, finished_at FROM bankid_orders WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(self.reads())
                .await?;
                row.map(|r| {
                    Ok($crate::bankid_orders::StoredBankIdOrder {
                        id: r.try_get(0)?,
                        order_ref: r.try_get(1)?,
                        events_key_hash: r.try_get(2)?,
                        qr_start_token: r.try_get(3)?,
                        started_at: r.try_get(4)?,
                        status: r.try_get(5)?,
                        sealed: r.try_get(6)?,
                        driver: r.try_get(7)?,
                        updated_at: r.try_get(8)?,
                        finished_at: r.try_get(9)?,
                    })
                })
                .transpose()
            }

            async fn prune_bankid_orders(&self, before: DateTime<Utc>) -> Result<u64> {
                let done = sqlx::query("DELETE FROM bankid_orders WHERE updated_at < $1")
                    .bind(crate::common::micros(before))
                    .execute(self.writes())
                    .await?;
                Ok(done.rows_affected())
            }
        }
    };
}
pub(crate) use bankid_orders_store;
