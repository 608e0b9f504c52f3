//! The BankID gateway, without HTTP: web apps start auth or sign orders
//! through bankbridge, which holds the RP certificate, drives each order
//! (collect every 2 s, fresh QR data every second) and publishes its state.
//!
//! Each order's state sits in a `watch` channel: a subscriber sees the
//! current QR, hint and outcome at once and every change after, so a browser
//! that connects late or reconnects misses nothing that matters. Finished
//! orders stay readable for [`RETENTION`], then are dropped.
//!
//! Instances sharing a database answer for each other's orders: the one
//! that starts an order drives it and writes each change to the store (at
//! least every few seconds while it is pending); another instance asked
//! about the order follows the stored row, read each second, and draws the
//! QR codes itself from the start token and secret. A cancel through
//! another instance cancels at BankID, and the driver's next collect sees it.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bankbridge_bankid::client::BankIdClient;
use bankbridge_bankid::driver::{self, DriveOptions, OrderEvent, Outcome, StartedOrder};
use bankbridge_bankid::error::BankIdError;
use bankbridge_bankid::messages;
use bankbridge_bankid::types::{AuthRequest, CompletionData, PersonalNumber, SignRequest};
use bankbridge_core::MasterKey;
use bankbridge_store::{BankIdOrders, StoredBankIdOrder};
use chrono::Utc;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long a finished order stays readable.
pub const RETENTION: Duration = Duration::from_secs(10 * 60);
/// Most orders held at once (pending and finished).
const MAX_ORDERS: usize = 100_000;
/// The driver writes a pending order at least this often, so followers
/// can tell a live driver from a dead one.
const DRIVER_BEAT: Duration = Duration::from_secs(5);
/// A pending order unwritten this long has lost its driver (the instance
/// driving it stopped): followers show it as ended with an error.
const DRIVER_SILENCE: Duration = Duration::from_secs(20);
/// How often a follower reads an order another instance drives.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// What a web app asks for.
#[derive(Clone, Debug, Default)]
pub struct OrderParams {
    pub sign: bool,
    pub personal_number: Option<String>,
    /// Plain text shown to the user (required to sign).
    pub user_visible_data: Option<String>,
    pub markdown: bool,
    pub user_non_visible_data: Option<String>,
    pub return_url: Option<String>,
}

/// Where an order is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Pending,
    Complete,
    Failed,
    Cancelled,
    Error,
}

impl OrderStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Complete => "complete",
            OrderStatus::Failed => "failed",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Error => "error",
        }
    }
}

/// An order's state as subscribers see it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OrderState {
    pub status: OrderStatus,
    /// The QR data to show now (pending QR orders).
    pub qr: Option<String>,
    /// The latest hint code (pending and failed orders).
    pub hint: Option<String>,
    pub completion: Option<CompletionData>,
    /// Why the order stopped, for `error` and `cancelled`.
    pub message: Option<String>,
    /// What to tell the user now (the guidelines' message for the hint,
    /// the failure or the cancellation), in English and Swedish.
    pub user_message: Option<bankbridge_bankid::messages::UserMessage>,
}

/// A started order, as the gateway answers it.
#[derive(Clone, Debug)]
pub struct StartedGatewayOrder {
    pub id: String,
    pub order_ref: String,
    pub auto_start_token: String,
    pub autostart_url: String,
    /// Lets a browser follow this order's events without the API token.
    pub events_key: String,
}

struct GatewayOrder {
    order_ref: String,
    events_key: String,
    state: watch::Receiver<OrderState>,
    cancel: CancellationToken,
    finished_at: Mutex<Option<Instant>>,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    Invalid(String),
    #[error("BankID refused the order: {0}")]
    BankId(#[from] BankIdError),
    #[error("too many BankID orders in progress; try again shortly")]
    Full,
    /// The server's cap on orders pending at once is reached.
    #[error(
        "{max} BankID orders are pending already (this server's limit); try again once one ends"
    )]
    TooManyPending { max: usize },
}

/// What the store keeps of an order's state, sealed (the completion data
/// is personal; the QR start secret lets anyone draw the codes).
#[derive(Serialize, Deserialize)]
struct SealedOrder {
    status: OrderStatus,
    hint: Option<String>,
    completion: Option<CompletionData>,
    message: Option<String>,
    /// The user message's guideline number and English text, found again
    /// with [`messages::find`].
    user_message: Option<(u8, String)>,
    qr_start_secret: Option<String>,
}

impl SealedOrder {
    fn of(s: &OrderState, qr_start_secret: Option<&str>) -> Self {
        Self {
            status: s.status.clone(),
            hint: s.hint.clone(),
            completion: s.completion.clone(),
            message: s.message.clone(),
            user_message: s.user_message.map(|m| (m.rfa, m.en.to_owned())),
            qr_start_secret: qr_start_secret.map(str::to_owned),
        }
    }
}

/// The store the gateway shares orders through, and how it seals them.
#[derive(Clone)]
struct SharedOrders {
    store: Arc<dyn BankIdOrders>,
    key: Arc<MasterKey>,
    /// This process, as the driver of the orders it starts.
    owner: String,
    /// When orders nobody wrote lately were last pruned.
    pruned_at: Arc<Mutex<Option<Instant>>>,
}

impl SharedOrders {
    fn purpose(id: &str) -> String {
        format!("bankid-order:{id}")
    }

    fn seal(&self, id: &str, order: &SealedOrder) -> Vec<u8> {
        let json = serde_json::to_vec(order).unwrap_or_default();
        self.key.seal(&json, &Self::purpose(id))
    }

    /// The stored order `id` and its opened state, if there is one.
    async fn load(&self, id: &str) -> Option<(StoredBankIdOrder, SealedOrder)> {
        let row = match self.store.bankid_order(id).await {
            Ok(row) => row?,
            Err(e) => {
                tracing::warn!(order = %id, error = %e, "could not read a BankID order from the store");
                return None;
            }
        };
        let opened = match self.key.open(&row.sealed, &Self::purpose(id)) {
            Ok(bytes) => serde_json::from_slice::<SealedOrder>(bytes.expose()).ok(),
            Err(_) => None,
        };
        let Some(opened) = opened else {
            tracing::warn!(order = %id, "a stored BankID order does not open with this server's key");
            return None;
        };
        Some((row, opened))
    }

    /// Writes the driven order's state: each change of status or hint at
    /// once, and at least every [`DRIVER_BEAT`] while it is pending.
    async fn mirror(
        self,
        id: String,
        mut rx: watch::Receiver<OrderState>,
        qr_start_secret: Option<String>,
    ) {
        let mut written = (OrderStatus::Pending, None::<String>);
        let mut written_at = Instant::now();
        loop {
            let open = tokio::select! {
                changed = rx.changed() => changed.is_ok(),
                () = tokio::time::sleep(DRIVER_BEAT) => true,
            };
            let state = rx.borrow_and_update().clone();
            let finished = state.status != OrderStatus::Pending;
            let now = (state.status.clone(), state.hint.clone());
            if finished || now != written || written_at.elapsed() >= DRIVER_BEAT {
                let sealed = self.seal(&id, &SealedOrder::of(&state, qr_start_secret.as_deref()));
                if let Err(e) = self
                    .store
                    .update_bankid_order(
                        &id,
                        &self.owner,
                        state.status.as_str(),
                        &sealed,
                        Utc::now(),
                        finished,
                    )
                    .await
                {
                    tracing::warn!(order = %id, error = %e, "could not store a BankID order's state");
                }
                written = now;
                written_at = Instant::now();
            }
            if finished || !open {
                return;
            }
        }
    }

    /// Forget orders nobody wrote for [`RETENTION`], at most once a minute.
    async fn prune(&self) {
        {
            let mut at = self.pruned_at.lock().unwrap_or_else(|p| p.into_inner());
            if at.is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
                return;
            }
            *at = Some(Instant::now());
        }
        let before = Utc::now() - chrono::Duration::from_std(RETENTION).unwrap_or_default();
        if let Err(e) = self.store.prune_bankid_orders(before).await {
            tracing::warn!(error = %e, "could not prune stored BankID orders");
        }
    }
}

/// A followed order's state as its stored row says now: the QR code drawn
/// for this second, and an order whose driver went silent shown as ended.
fn followed_state(
    row: &StoredBankIdOrder,
    order: &SealedOrder,
    now: chrono::DateTime<Utc>,
) -> OrderState {
    let user_message = order
        .user_message
        .as_ref()
        .and_then(|(rfa, en)| messages::find(*rfa, en));
    let mut state = OrderState {
        status: order.status.clone(),
        qr: None,
        hint: order.hint.clone(),
        completion: order.completion.clone(),
        message: order.message.clone(),
        user_message,
    };
    if state.status != OrderStatus::Pending {
        return state;
    }
    let silent = (now - row.updated_at).to_std().unwrap_or_default();
    if silent >= DRIVER_SILENCE {
        state.status = OrderStatus::Error;
        state.message = Some("the server driving this order stopped".into());
        state.user_message = Some(messages::for_failure(
            &bankbridge_bankid::HintCode::Unknown(String::new()),
        ));
        return state;
    }
    if let (Some(token), Some(secret)) = (&row.qr_start_token, &order.qr_start_secret) {
        let secs = (now - row.started_at).num_seconds().max(0) as u64;
        state.qr = Some(bankbridge_bankid::qr::qr_data(token, secret, secs));
    }
    state
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).to_vec()
}

/// BankID orders of one server, and of the others sharing its database
/// once given the store ([`BankIdGateway::with_store`]).
#[derive(Clone)]
pub struct BankIdGateway {
    client: BankIdClient,
    /// The orders this process drives.
    orders: Arc<Mutex<HashMap<String, Arc<GatewayOrder>>>>,
    shared: Option<SharedOrders>,
    poll_interval: Duration,
    /// Orders being started or driven now, against `max_pending`.
    pending: Arc<AtomicUsize>,
    max_pending: usize,
}

/// Orders pending at once by default: each holds a driver polling BankID.
pub const DEFAULT_MAX_PENDING: usize = 100;

/// One pending order's place under the cap, given back on drop.
struct PendingSlot(Arc<AtomicUsize>);

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl BankIdGateway {
    pub fn new(client: BankIdClient) -> Self {
        Self {
            client,
            orders: Arc::default(),
            shared: None,
            poll_interval: Duration::from_secs(2),
            pending: Arc::default(),
            max_pending: DEFAULT_MAX_PENDING,
        }
    }

    /// Share orders through `store`, sealed with `key`: other instances on
    /// the same database can follow and cancel this one's orders, and
    /// this one theirs. `owner` names this process as an order's driver.
    pub fn with_store(
        mut self,
        store: Arc<dyn BankIdOrders>,
        key: Arc<MasterKey>,
        owner: impl Into<String>,
    ) -> Self {
        self.shared = Some(SharedOrders {
            store,
            key,
            owner: owner.into(),
            pruned_at: Arc::default(),
        });
        self
    }

    /// Hold at most `max` orders pending at once (at least 1); more get
    /// [`GatewayError::TooManyPending`].
    pub fn with_max_pending(mut self, max: usize) -> Self {
        self.max_pending = max.max(1);
        self
    }

    /// Orders pending now.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// A place under the pending cap, or the refusal.
    fn reserve(&self) -> Result<PendingSlot, GatewayError> {
        let before = self.pending.fetch_add(1, Ordering::AcqRel);
        let slot = PendingSlot(self.pending.clone());
        if before >= self.max_pending {
            return Err(GatewayError::TooManyPending {
                max: self.max_pending,
            });
        }
        Ok(slot)
    }

    /// Collect more or less often than every 2 s (never below 1 s).
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    pub fn base_url(&self) -> &url::Url {
        self.client.base_url()
    }

    /// Start an order for the end user at `end_user_ip` and drive it in the background.
    pub async fn start(
        &self,
        params: OrderParams,
        end_user_ip: IpAddr,
    ) -> Result<StartedGatewayOrder, GatewayError> {
        self.sweep().await;
        if self.len() >= MAX_ORDERS {
            return Err(GatewayError::Full);
        }
        let slot = self.reserve()?;
        let ip = end_user_ip.to_string();
        let personal_number = params
            .personal_number
            .as_deref()
            .map(PersonalNumber::parse)
            .transpose()
            .map_err(|e| GatewayError::Invalid(format!("personal_number: {e}")))?;
        let response = if params.sign {
            let text = params.user_visible_data.as_deref().ok_or_else(|| {
                GatewayError::Invalid("user_visible_data is required to sign".into())
            })?;
            let mut r = SignRequest::new(&ip, text);
            if params.markdown {
                r = r.with_markdown(text);
            }
            if let Some(pn) = &personal_number {
                r = r.with_personal_number(pn);
            }
            if let Some(data) = &params.user_non_visible_data {
                r = r.with_user_non_visible_data(data.as_bytes());
            }
            if let Some(url) = &params.return_url {
                r = r.with_return_url(url.clone());
            }
            self.client.sign(&r).await?
        } else {
            let mut r = AuthRequest::new(&ip);
            if let Some(text) = &params.user_visible_data {
                r = if params.markdown {
                    r.with_markdown(text)
                } else {
                    r.with_user_visible_data(text)
                };
            }
            if let Some(pn) = &personal_number {
                r = r.with_personal_number(pn);
            }
            if let Some(data) = &params.user_non_visible_data {
                r = r.with_user_non_visible_data(data.as_bytes());
            }
            if let Some(url) = &params.return_url {
                r = r.with_return_url(url.clone());
            }
            self.client.auth(&r).await?
        };
        let id = random_hex(16);
        let events_key = random_hex(32);
        let started = StartedGatewayOrder {
            id: id.clone(),
            order_ref: response.order_ref.clone(),
            auto_start_token: response.auto_start_token.clone(),
            autostart_url: response.autostart_url(),
            events_key: events_key.clone(),
        };
        let order = StartedOrder::from(&response);
        let started_at = Utc::now();
        let first_qr = order.qr.as_ref().map(|q| q.data_now());
        let (tx, rx) = watch::channel(OrderState {
            status: OrderStatus::Pending,
            qr: first_qr,
            hint: None,
            completion: None,
            message: None,
            user_message: None,
        });
        let cancel = CancellationToken::new();
        if let Some(shared) = &self.shared {
            let qr_secret = order.qr.as_ref().map(|q| q.secret.expose().clone());
            let row = StoredBankIdOrder {
                id: id.clone(),
                order_ref: response.order_ref.clone(),
                events_key_hash: sha256(events_key.as_bytes()),
                qr_start_token: order.qr.as_ref().map(|q| q.token.clone()),
                started_at,
                status: OrderStatus::Pending.as_str().into(),
                sealed: shared.seal(&id, &SealedOrder::of(&rx.borrow(), qr_secret.as_deref())),
                driver: shared.owner.clone(),
                updated_at: started_at,
                finished_at: None,
            };
            // Without the row only this instance answers for the order;
            // it still works here, so the store's trouble is not the user's.
            match shared.store.insert_bankid_order(&row).await {
                Ok(()) => {
                    tokio::spawn(shared.clone().mirror(id.clone(), rx.clone(), qr_secret));
                }
                Err(e) => {
                    tracing::warn!(order = %id, error = %e, "could not store a BankID order; only this server can answer for it")
                }
            }
        }
        let entry = Arc::new(GatewayOrder {
            order_ref: response.order_ref.clone(),
            events_key,
            state: rx,
            cancel: cancel.clone(),
            finished_at: Mutex::new(None),
        });
        self.orders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), entry.clone());
        let options = DriveOptions::default()
            .with_poll_interval(self.poll_interval)
            .with_cancel(cancel);
        let client = self.client.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let result = driver::drive(&client, order, options, |event| {
                tx.send_modify(|s| match event {
                    OrderEvent::Qr(data) => s.qr = Some(data),
                    OrderEvent::Hint(hint) => {
                        s.user_message = Some(messages::for_hint(&hint));
                        s.hint = Some(hint.to_string());
                    }
                    _ => {}
                })
            })
            .await;
            tx.send_modify(|s| {
                s.qr = None;
                match result {
                    Ok(Outcome::Complete(data)) => {
                        s.status = OrderStatus::Complete;
                        s.completion = Some(data);
                    }
                    Ok(Outcome::Failed(hint)) => {
                        s.status = OrderStatus::Failed;
                        s.user_message = Some(messages::for_failure(&hint));
                        s.hint = Some(hint.to_string());
                    }
                    Ok(Outcome::Cancelled) => {
                        s.status = OrderStatus::Cancelled;
                        s.message = Some("cancelled".into());
                        s.user_message = Some(messages::for_cancelled());
                    }
                    Ok(Outcome::DeadlineExceeded) => {
                        s.status = OrderStatus::Cancelled;
                        s.message = Some("the deadline passed".into());
                        s.user_message = Some(messages::for_hint(
                            &bankbridge_bankid::HintCode::ExpiredTransaction,
                        ));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "a BankID order stopped with an error");
                        s.status = OrderStatus::Error;
                        s.user_message =
                            Some(e.code().and_then(messages::for_error).unwrap_or_else(|| {
                                messages::for_failure(&bankbridge_bankid::HintCode::Unknown(
                                    String::new(),
                                ))
                            }));
                        s.message = Some(e.to_string());
                    }
                }
            });
            *entry.finished_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        });
        Ok(started)
    }

    fn get(&self, id: &str) -> Option<Arc<GatewayOrder>> {
        self.orders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// The order's state channel, if `id` names an order: this process's
    /// own, or one another instance drives, followed through the store.
    pub async fn subscribe(&self, id: &str) -> Option<watch::Receiver<OrderState>> {
        if let Some(order) = self.get(id) {
            return Some(order.state.clone());
        }
        self.follow(id).await
    }

    /// Follows order `id` of another instance: its row is read each
    /// [`FOLLOW_EVERY`] while anyone holds the receiver and it is pending.
    async fn follow(&self, id: &str) -> Option<watch::Receiver<OrderState>> {
        let shared = self.shared.clone()?;
        let (row, order) = shared.load(id).await?;
        let first = followed_state(&row, &order, Utc::now());
        let pending = first.status == OrderStatus::Pending;
        let (tx, rx) = watch::channel(first);
        if !pending {
            return Some(rx);
        }
        let id = id.to_owned();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tx.closed() => return,
                    () = tokio::time::sleep(FOLLOW_EVERY) => {}
                }
                // Gone from the store: dropping `tx` tells the followers so.
                let Some(read) = shared.load(&id).await else {
                    return;
                };
                let now = followed_state(&read.0, &read.1, Utc::now());
                let ended = now.status != OrderStatus::Pending;
                tx.send_if_modified(|s| {
                    let changed = *s != now;
                    *s = now;
                    changed
                });
                if ended {
                    return;
                }
            }
        });
        Some(rx)
    }

    /// Whether `key` is the events key of order `id` (constant time).
    pub async fn events_key_matches(&self, id: &str, key: &str) -> bool {
        use subtle::ConstantTimeEq;
        if let Some(order) = self.get(id) {
            return bool::from(order.events_key.as_bytes().ct_eq(key.as_bytes()));
        }
        let Some(shared) = &self.shared else {
            return false;
        };
        match shared.store.bankid_order(id).await {
            Ok(Some(row)) => bool::from(row.events_key_hash.ct_eq(&sha256(key.as_bytes()))),
            _ => false,
        }
    }

    /// BankID's orderRef of order `id`.
    pub async fn order_ref(&self, id: &str) -> Option<String> {
        if let Some(order) = self.get(id) {
            return Some(order.order_ref.clone());
        }
        let shared = self.shared.as_ref()?;
        shared
            .store
            .bankid_order(id)
            .await
            .ok()?
            .map(|r| r.order_ref)
    }

    /// Cancel order `id`; false when there is no such order. An order
    /// another instance drives is cancelled at BankID: its driver's next
    /// collect finds it gone and ends it as cancelled.
    pub async fn cancel(&self, id: &str) -> bool {
        if let Some(order) = self.get(id) {
            order.cancel.cancel();
            return true;
        }
        let Some(shared) = &self.shared else {
            return false;
        };
        let Some((row, _)) = shared.load(id).await else {
            return false;
        };
        if row.finished_at.is_none()
            && let Err(e) = self.client.cancel(&row.order_ref).await
        {
            tracing::warn!(order = %id, error = %e, "BankID did not take the cancel of another instance's order");
        }
        true
    }

    /// Orders held now.
    pub fn len(&self) -> usize {
        self.orders.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drop orders finished longer ago than [`RETENTION`].
    async fn sweep(&self) {
        if let Some(shared) = &self.shared {
            shared.prune().await;
        }
        let now = Instant::now();
        self.orders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, o| {
                o.finished_at
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_none_or(|t| now.duration_since(t) < RETENTION)
            });
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// The end user's address: the TCP peer, or — when the peer is a trusted
/// proxy — the right-most address in `X-Forwarded-For` that is not one.
/// `forwarded_for` holds the header's lines in the order they came: a list
/// split over several lines is one list (RFC 9110, section 5.3), so the
/// right-most hop is the last line's last entry.
pub fn end_user_ip(peer: IpAddr, forwarded_for: &[&str], trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    forwarded_for
        .iter()
        .rev()
        .flat_map(|h| h.split(',').rev())
        .filter_map(|part| part.trim().parse::<IpAddr>().ok())
        .find(|ip| !trusted.contains(ip))
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        // An untrusted peer cannot claim another address.
        assert_eq!(end_user_ip(other, &["203.0.113.7"], &[proxy]), other);
        // Behind a trusted proxy: the right-most untrusted hop.
        assert_eq!(
            end_user_ip(proxy, &["10.9.9.9, 203.0.113.7"], &[proxy]),
            client
        );
        assert_eq!(
            end_user_ip(proxy, &["203.0.113.7, 127.0.0.1"], &[proxy]),
            client
        );
        assert_eq!(end_user_ip(proxy, &["garbage"], &[proxy]), proxy);
        assert_eq!(end_user_ip(proxy, &[], &[proxy]), proxy);
        // Several header lines are one list, in order: a client's forged
        // first line cannot hide the address the proxy appended last.
        assert_eq!(
            end_user_ip(proxy, &["10.9.9.9", "203.0.113.7"], &[proxy]),
            client
        );
        assert_eq!(
            end_user_ip(
                proxy,
                &["198.51.100.1, 10.9.9.9", "203.0.113.7, 127.0.0.1"],
                &[proxy]
            ),
            client
        );
    }
}
