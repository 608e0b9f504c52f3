//! The order driver: polls `collect` until an order ends, reporting each new
//! hint, a fresh QR code every second, and honouring cancellation and a
//! deadline (both cancel the order at BankID).
//!
//! A driver is one future with two timers and at most one request in flight:
//! no thread per order, so thousands run side by side on one runtime.
use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::client::BankIdClient;
use crate::error::BankIdError;
use crate::qr::QrCode;
use crate::types::{
    CollectResponse, CompletionData, HintCode, OrderResponse, PhoneOrderResponse, Status,
};

/// Shortest collect interval: BankID forbids collecting more than once a second.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The interval BankID asks for.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);
const QR_INTERVAL: Duration = Duration::from_secs(1);

/// The calls a driver makes. [`BankIdClient`] is the real one; tests and
/// simulators can plug in their own.
pub trait OrderApi {
    /// `collect` the order.
    fn collect(
        &self,
        order_ref: &str,
    ) -> impl Future<Output = Result<CollectResponse, BankIdError>> + Send;
    /// `cancel` the order.
    fn cancel(&self, order_ref: &str) -> impl Future<Output = Result<(), BankIdError>> + Send;
}

impl OrderApi for BankIdClient {
    fn collect(
        &self,
        order_ref: &str,
    ) -> impl Future<Output = Result<CollectResponse, BankIdError>> + Send {
        BankIdClient::collect(self, order_ref)
    }

    fn cancel(&self, order_ref: &str) -> impl Future<Output = Result<(), BankIdError>> + Send {
        BankIdClient::cancel(self, order_ref)
    }
}

/// An order to drive.
#[derive(Clone, Debug)]
pub struct StartedOrder {
    pub order_ref: String,
    /// The animated QR code (auth, sign, payment); `None` for phone orders.
    pub qr: Option<QrCode>,
}

impl StartedOrder {
    /// A phone order: no QR code.
    pub fn phone(order_ref: impl Into<String>) -> Self {
        Self {
            order_ref: order_ref.into(),
            qr: None,
        }
    }
}

impl From<&OrderResponse> for StartedOrder {
    fn from(r: &OrderResponse) -> Self {
        Self {
            order_ref: r.order_ref.clone(),
            qr: Some(r.qr_code()),
        }
    }
}

impl From<OrderResponse> for StartedOrder {
    fn from(r: OrderResponse) -> Self {
        Self::from(&r)
    }
}

impl From<PhoneOrderResponse> for StartedOrder {
    fn from(r: PhoneOrderResponse) -> Self {
        Self::phone(r.order_ref)
    }
}

impl From<&PhoneOrderResponse> for StartedOrder {
    fn from(r: &PhoneOrderResponse) -> Self {
        Self::phone(r.order_ref.clone())
    }
}

/// How to drive an order.
#[derive(Clone, Debug)]
pub struct DriveOptions {
    /// Time between the starts of two collects (default 2 s; at least 1 s).
    pub poll_interval: Duration,
    /// Give up after this long (from the start of `drive`): cancel the order
    /// and report [`Outcome::DeadlineExceeded`]. `None` leaves it to BankID
    /// (an order expires after about three minutes).
    pub deadline: Option<Duration>,
    /// Cancelling this token cancels the order and ends the drive with
    /// [`Outcome::Cancelled`].
    pub cancel: CancellationToken,
    /// Stop sending QR codes once the app has the order (the hint is no
    /// longer `outstandingTransaction`/`noClient`). Default: send them while
    /// the order is pending.
    pub qr_until_scanned: bool,
    /// Transient collect failures (maintenance, no answer) tolerated in a
    /// row before the drive fails (default 3). Each is reported as
    /// [`OrderEvent::Error`].
    pub max_transient_errors: u32,
}

impl Default for DriveOptions {
    fn default() -> Self {
        Self {
            poll_interval: DEFAULT_POLL_INTERVAL,
            deadline: None,
            cancel: CancellationToken::new(),
            qr_until_scanned: false,
            max_transient_errors: 3,
        }
    }
}

impl DriveOptions {
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }
    pub fn with_cancel(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }
    /// The poll interval actually used: never below one second.
    pub fn effective_poll_interval(&self) -> Duration {
        self.poll_interval.max(MIN_POLL_INTERVAL)
    }
}

/// What happens to an order, in order.
#[derive(Debug)]
pub enum OrderEvent {
    /// New QR data to show (every second while pending; QR orders only).
    Qr(String),
    /// The pending hint changed (the first hint is reported too).
    Hint(HintCode),
    /// The order completed.
    Complete(CompletionData),
    /// The order failed with this hint.
    Failed(HintCode),
    /// The drive was cancelled; the order was cancelled at BankID.
    Cancelled,
    /// The deadline passed; the order was cancelled at BankID.
    DeadlineExceeded,
    /// A tolerated error: a transient collect failure the driver retries, or
    /// a failed `cancel` after cancellation or the deadline. A fatal error is
    /// not an event: `drive` returns it.
    Error(BankIdError),
}

/// How a drive ended.
// Returned once per order: boxing the completion data would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Complete(CompletionData),
    Failed(HintCode),
    Cancelled,
    DeadlineExceeded,
}

/// Drive `order` to its end with `client`, calling `events` for each
/// [`OrderEvent`]. Returns how the order ended, or the error that stopped the
/// drive (a refused collect, a malformed answer, or too many transient
/// failures in a row).
pub async fn drive(
    client: &BankIdClient,
    order: StartedOrder,
    options: DriveOptions,
    events: impl FnMut(OrderEvent),
) -> Result<Outcome, BankIdError> {
    drive_with(client, order, options, events).await
}

/// [`drive`] over any [`OrderApi`].
pub async fn drive_with<A: OrderApi>(
    api: &A,
    order: StartedOrder,
    options: DriveOptions,
    mut events: impl FnMut(OrderEvent),
) -> Result<Outcome, BankIdError> {
    run(api, order, options, &mut CallbackSink(&mut events)).await
}

/// A driven order running as its own task.
#[derive(Debug)]
pub struct DriveHandle {
    /// The events, in order. Dropping the receiver does not stop the drive.
    pub events: mpsc::Receiver<OrderEvent>,
    /// Cancel the order.
    pub cancel: CancellationToken,
    /// The outcome.
    pub task: JoinHandle<Result<Outcome, BankIdError>>,
}

/// Drive `order` in a spawned task, with the events on a channel. Needs a
/// Tokio runtime. A slow reader slows the driver down (the channel holds 16
/// events) rather than losing events.
pub fn spawn_drive(
    client: BankIdClient,
    order: StartedOrder,
    options: DriveOptions,
) -> DriveHandle {
    spawn_drive_with(client, order, options)
}

/// [`spawn_drive`] over any [`OrderApi`].
pub fn spawn_drive_with<A>(api: A, order: StartedOrder, options: DriveOptions) -> DriveHandle
where
    A: OrderApi + Send + Sync + 'static,
{
    let (tx, rx) = mpsc::channel(16);
    let cancel = options.cancel.clone();
    let task = tokio::spawn(async move {
        let mut sink = ChannelSink(Some(tx));
        run(&api, order, options, &mut sink).await
    });
    DriveHandle {
        events: rx,
        cancel,
        task,
    }
}

trait Sink {
    fn emit(&mut self, event: OrderEvent) -> impl Future<Output = ()> + Send;
}

struct CallbackSink<'a, F>(&'a mut F);

impl<F: FnMut(OrderEvent)> Sink for CallbackSink<'_, F> {
    fn emit(&mut self, event: OrderEvent) -> impl Future<Output = ()> + Send {
        (self.0)(event);
        std::future::ready(())
    }
}

struct ChannelSink(Option<mpsc::Sender<OrderEvent>>);

impl Sink for ChannelSink {
    async fn emit(&mut self, event: OrderEvent) {
        // Once the receiver is gone, stop sending (the drive goes on).
        if let Some(tx) = &self.0
            && tx.send(event).await.is_err()
        {
            self.0 = None;
        }
    }
}

/// Why the loop stopped early.
enum Stop {
    Cancelled,
    Deadline,
}

async fn run<A: OrderApi, S: Sink>(
    api: &A,
    order: StartedOrder,
    options: DriveOptions,
    sink: &mut S,
) -> Result<Outcome, BankIdError> {
    let interval = options.effective_poll_interval();
    let start = Instant::now();
    let deadline = options.deadline.map(|d| start + d);
    let order_ref = order.order_ref.as_str();
    debug!(order_ref, ?interval, ?options.deadline, "driving BankID order");

    // The QR clock runs from the start response, not from now.
    let qr_origin = order.qr.as_ref().map(|q| Instant::from_std(q.started));
    let mut qr_active = order.qr.is_some();
    let mut next_qr = start;
    if let (Some(qr), Some(origin)) = (&order.qr, qr_origin) {
        let secs = start.saturating_duration_since(origin).as_secs();
        sink.emit(OrderEvent::Qr(qr.data_at(secs))).await;
        next_qr = origin + QR_INTERVAL * (secs as u32 + 1);
    }

    let mut next_poll = start;
    let mut in_flight = None;
    let mut last_hint: Option<HintCode> = None;
    let mut transient_errors = 0u32;
    let mut warned_status = false;

    let stop = loop {
        if in_flight.is_none() {
            // Wait for the next poll, while ticking the QR code.
            tokio::select! {
                biased;
                _ = options.cancel.cancelled() => break Stop::Cancelled,
                _ = wait_until(deadline) => break Stop::Deadline,
                _ = sleep_until(next_qr), if qr_active => {
                    emit_qr(&order, qr_origin, &mut next_qr, sink).await;
                    continue;
                }
                _ = sleep_until(next_poll) => {
                    next_poll = Instant::now() + interval;
                    in_flight = Some(Box::pin(api.collect(order_ref)));
                    continue;
                }
            }
        }
        let result = tokio::select! {
            biased;
            _ = options.cancel.cancelled() => break Stop::Cancelled,
            _ = wait_until(deadline) => break Stop::Deadline,
            _ = sleep_until(next_qr), if qr_active => {
                emit_qr(&order, qr_origin, &mut next_qr, sink).await;
                continue;
            }
            result = async { in_flight.as_mut().expect("a collect is in flight").await } => result,
        };
        in_flight = None;
        let response = match result {
            Ok(r) => {
                transient_errors = 0;
                r
            }
            Err(e) if e.is_transient() && transient_errors < options.max_transient_errors => {
                transient_errors += 1;
                debug!(order_ref, error = %e, transient_errors, "collect failed; will retry");
                sink.emit(OrderEvent::Error(e)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        match response.status {
            Status::Complete => {
                let Some(data) = response.completion_data else {
                    return Err(BankIdError::Decode {
                        endpoint: "collect",
                        status: 200,
                        reason: "status complete without completionData".into(),
                        body: String::new(),
                    });
                };
                debug!(order_ref, "BankID order complete");
                sink.emit(OrderEvent::Complete(data.clone())).await;
                return Ok(Outcome::Complete(data));
            }
            Status::Failed => {
                let hint = response
                    .hint_code
                    .unwrap_or_else(|| HintCode::Unknown(String::new()));
                debug!(order_ref, hint = %hint, "BankID order failed");
                sink.emit(OrderEvent::Failed(hint.clone())).await;
                return Ok(Outcome::Failed(hint));
            }
            Status::Pending => {
                if let Some(hint) = response.hint_code
                    && last_hint.as_ref() != Some(&hint)
                {
                    debug!(order_ref, hint = %hint, "BankID order hint");
                    if options.qr_until_scanned && !hint.is_waiting_for_app() {
                        qr_active = false;
                    }
                    last_hint = Some(hint.clone());
                    sink.emit(OrderEvent::Hint(hint)).await;
                }
            }
            Status::Unknown(ref s) => {
                if !warned_status {
                    warn!(order_ref, status = %s, "unknown collect status; still polling");
                    warned_status = true;
                }
            }
        }
    };

    // Cancelled or out of time: cancel the order at BankID.
    drop(in_flight);
    if let Err(e) = api.cancel(order_ref).await {
        debug!(order_ref, error = %e, "cancel after stop failed");
        sink.emit(OrderEvent::Error(e)).await;
    }
    Ok(match stop {
        Stop::Cancelled => {
            debug!(order_ref, "BankID order cancelled");
            sink.emit(OrderEvent::Cancelled).await;
            Outcome::Cancelled
        }
        Stop::Deadline => {
            debug!(order_ref, "BankID order deadline passed; cancelled");
            sink.emit(OrderEvent::DeadlineExceeded).await;
            Outcome::DeadlineExceeded
        }
    })
}

async fn emit_qr<S: Sink>(
    order: &StartedOrder,
    origin: Option<Instant>,
    next_qr: &mut Instant,
    sink: &mut S,
) {
    let (Some(qr), Some(origin)) = (&order.qr, origin) else {
        return;
    };
    let secs = Instant::now().saturating_duration_since(origin).as_secs();
    // The next whole second after now (skips ticks missed under load).
    *next_qr = origin + QR_INTERVAL * (secs as u32 + 1);
    sink.emit(OrderEvent::Qr(qr.data_at(secs))).await;
}

async fn wait_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}
