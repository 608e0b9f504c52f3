//! The BankID gateway, without HTTP: web apps start auth or sign orders
//! through bankbridge, which holds the RP certificate, drives each order
//! (collect every 2 s, fresh QR data every second) and publishes its state.
//!
//! Each order's state sits in a `watch` channel: a subscriber sees the
//! current QR, hint and outcome at once and every change after, so a browser
//! that connects late or reconnects misses nothing that matters. Finished
//! orders stay readable for [`RETENTION`], then are dropped.
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
use rand::RngCore;
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How long a finished order stays readable.
pub const RETENTION: Duration = Duration::from_secs(10 * 60);
/// Most orders held at once (pending and finished).
const MAX_ORDERS: usize = 100_000;

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
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Pending,
    Complete,
    Failed,
    Cancelled,
    Error,
}

/// An order's state as subscribers see it.
#[derive(Clone, Debug, Serialize)]
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

/// BankID orders of one server.
#[derive(Clone)]
pub struct BankIdGateway {
    client: BankIdClient,
    orders: Arc<Mutex<HashMap<String, Arc<GatewayOrder>>>>,
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
            poll_interval: Duration::from_secs(2),
            pending: Arc::default(),
            max_pending: DEFAULT_MAX_PENDING,
        }
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
        self.sweep();
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

    /// The order's state channel, if `id` names an order.
    pub fn subscribe(&self, id: &str) -> Option<watch::Receiver<OrderState>> {
        self.get(id).map(|o| o.state.clone())
    }

    /// Whether `key` is the events key of order `id` (constant time).
    pub fn events_key_matches(&self, id: &str, key: &str) -> bool {
        use subtle::ConstantTimeEq;
        self.get(id)
            .is_some_and(|o| bool::from(o.events_key.as_bytes().ct_eq(key.as_bytes())))
    }

    /// BankID's orderRef of order `id`.
    pub fn order_ref(&self, id: &str) -> Option<String> {
        self.get(id).map(|o| o.order_ref.clone())
    }

    /// Cancel order `id`; false when there is no such order.
    pub fn cancel(&self, id: &str) -> bool {
        match self.get(id) {
            Some(order) => {
                order.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Orders held now.
    pub fn len(&self) -> usize {
        self.orders.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drop orders finished longer ago than [`RETENTION`].
    fn sweep(&self) {
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
