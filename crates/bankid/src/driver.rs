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
            // Our own order is no longer known: someone cancelled it (this
            // service from another process, or a new order for the same
            // person). It ended; it is not a fault of the request.
            Err(e) if e.code() == Some(&crate::types::ErrorCode::InvalidParameters) => {
                debug!(order_ref, error = %e, "BankID no longer knows the order: cancelled elsewhere");
                sink.emit(OrderEvent::Cancelled).await;
                return Ok(Outcome::Cancelled);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Device, User};
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const TOKEN: &str = "67df3917-fa0d-44e5-b327-edcc928297f8";
    const SECRET: &str = "d28db9a7-4cde-429e-a983-359be676944c";

    /// Answers collects from a script; the last answer repeats.
    struct Scripted {
        script: Mutex<VecDeque<Result<CollectResponse, BankIdError>>>,
        last: Mutex<Option<CollectResponse>>,
        collects: AtomicUsize,
        cancels: AtomicUsize,
        delay: Duration,
    }

    impl Scripted {
        fn new(script: Vec<Result<CollectResponse, BankIdError>>) -> Self {
            Self {
                script: Mutex::new(script.into()),
                last: Mutex::new(None),
                collects: AtomicUsize::new(0),
                cancels: AtomicUsize::new(0),
                delay: Duration::ZERO,
            }
        }
    }

    impl OrderApi for Scripted {
        fn collect(
            &self,
            _order_ref: &str,
        ) -> impl Future<Output = Result<CollectResponse, BankIdError>> + Send {
            self.collects.fetch_add(1, Ordering::SeqCst);
            let next = self.script.lock().unwrap().pop_front();
            let answer = match next {
                Some(Ok(r)) => {
                    *self.last.lock().unwrap() = Some(r.clone());
                    Ok(r)
                }
                Some(Err(e)) => Err(e),
                None => Ok(self
                    .last
                    .lock()
                    .unwrap()
                    .clone()
                    .unwrap_or_else(|| pending("outstandingTransaction"))),
            };
            let delay = self.delay;
            async move {
                tokio::time::sleep(delay).await;
                answer
            }
        }

        fn cancel(&self, _order_ref: &str) -> impl Future<Output = Result<(), BankIdError>> + Send {
            self.cancels.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(()))
        }
    }

    fn pending(hint: &str) -> CollectResponse {
        CollectResponse {
            order_ref: "o".into(),
            status: Status::Pending,
            hint_code: Some(HintCode::parse(hint)),
            completion_data: None,
        }
    }

    fn failed(hint: &str) -> CollectResponse {
        CollectResponse {
            status: Status::Failed,
            ..pending(hint)
        }
    }

    fn completion() -> CompletionData {
        CompletionData {
            user: User {
                personal_number: "199001011239".into(),
                name: "Karl Karlsson".into(),
                given_name: "Karl".into(),
                surname: "Karlsson".into(),
            },
            device: Device {
                ip_address: "192.0.2.1".into(),
                uhi: None,
            },
            bank_id_issue_date: "2020-02-01".into(),
            step_up: None,
            signature: "c2ln".into(),
            ocsp_response: "b2NzcA==".into(),
            risk: None,
        }
    }

    fn complete() -> CollectResponse {
        CollectResponse {
            order_ref: "o".into(),
            status: Status::Complete,
            hint_code: None,
            completion_data: Some(completion()),
        }
    }

    fn qr_order() -> StartedOrder {
        StartedOrder {
            order_ref: "o".into(),
            qr: Some(QrCode::new(TOKEN, SECRET)),
        }
    }

    fn fast() -> DriveOptions {
        DriveOptions::default().with_poll_interval(MIN_POLL_INTERVAL)
    }

    fn describe(events: &[OrderEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                OrderEvent::Qr(d) => format!("qr{}", crate::qr::parse_qr_data(d).unwrap().1),
                OrderEvent::Hint(h) => format!("hint:{h}"),
                OrderEvent::Complete(_) => "complete".into(),
                OrderEvent::Failed(h) => format!("failed:{h}"),
                OrderEvent::Cancelled => "cancelled".into(),
                OrderEvent::DeadlineExceeded => "deadline".into(),
                OrderEvent::Error(_) => "error".into(),
            })
            .collect()
    }

    #[tokio::test]
    async fn hints_are_reported_once_per_change_and_complete_ends() {
        let api = Scripted::new(vec![
            Ok(pending("outstandingTransaction")),
            Ok(pending("outstandingTransaction")),
            Ok(pending("userSign")),
            Ok(pending("userSign")),
            Ok(complete()),
        ]);
        let mut events = Vec::new();
        let outcome = drive_with(&api, StartedOrder::phone("o"), fast(), |e| events.push(e))
            .await
            .unwrap();
        assert_eq!(outcome, Outcome::Complete(completion()));
        assert_eq!(
            describe(&events),
            ["hint:outstandingTransaction", "hint:userSign", "complete"]
        );
        assert_eq!(api.collects.load(Ordering::SeqCst), 5);
        assert_eq!(api.cancels.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn failed_ends_with_its_hint() {
        let api = Scripted::new(vec![Ok(pending("started")), Ok(failed("userCancel"))]);
        let mut events = Vec::new();
        let outcome = drive_with(&api, StartedOrder::phone("o"), fast(), |e| events.push(e))
            .await
            .unwrap();
        assert_eq!(outcome, Outcome::Failed(HintCode::UserCancel));
        assert_eq!(describe(&events), ["hint:started", "failed:userCancel"]);
    }

    #[tokio::test]
    async fn qr_codes_come_every_second_while_pending() {
        // Pending for 3 collects (about 2 s), then complete.
        let api = Scripted::new(vec![
            Ok(pending("outstandingTransaction")),
            Ok(pending("outstandingTransaction")),
            Ok(pending("outstandingTransaction")),
            Ok(complete()),
        ]);
        let mut events = Vec::new();
        drive_with(&api, qr_order(), fast(), |e| events.push(e))
            .await
            .unwrap();
        let d = describe(&events);
        let qrs: Vec<&String> = d.iter().filter(|s| s.starts_with("qr")).collect();
        // t = 0 at the start, then one per whole second until the end (~3 s).
        assert!((3..=5).contains(&qrs.len()), "{d:?}");
        for (i, q) in qrs.iter().enumerate() {
            assert_eq!(**q, format!("qr{i}"), "{d:?}");
        }
        assert_eq!(d.last().unwrap(), "complete");
        assert!(
            !d.iter()
                .skip_while(|s| *s != "complete")
                .skip(1)
                .any(|s| s.starts_with("qr"))
        );
    }

    #[tokio::test]
    async fn phone_orders_have_no_qr() {
        let api = Scripted::new(vec![Ok(pending("userCallConfirm")), Ok(complete())]);
        let mut events = Vec::new();
        drive_with(&api, StartedOrder::phone("o"), fast(), |e| events.push(e))
            .await
            .unwrap();
        assert_eq!(describe(&events), ["hint:userCallConfirm", "complete"]);
    }

    #[tokio::test]
    async fn qr_stops_after_scan_when_asked() {
        let api = Scripted::new(vec![
            Ok(pending("outstandingTransaction")),
            Ok(pending("userSign")),
            Ok(pending("userSign")),
            Ok(pending("userSign")),
            Ok(complete()),
        ]);
        let mut events = Vec::new();
        let options = DriveOptions {
            qr_until_scanned: true,
            ..fast()
        };
        drive_with(&api, qr_order(), options, |e| events.push(e))
            .await
            .unwrap();
        let d = describe(&events);
        let after_sign = d.iter().skip_while(|s| *s != "hint:userSign");
        assert!(!after_sign.clone().any(|s| s.starts_with("qr")), "{d:?}");
    }

    #[tokio::test]
    async fn poll_interval_is_clamped_to_one_second() {
        let api = Scripted::new(vec![]);
        let options = DriveOptions::default()
            .with_poll_interval(Duration::from_millis(50))
            .with_deadline(Duration::from_millis(2500));
        assert_eq!(options.effective_poll_interval(), MIN_POLL_INTERVAL);
        let outcome = drive_with(&api, StartedOrder::phone("o"), options, |_| {})
            .await
            .unwrap();
        assert_eq!(outcome, Outcome::DeadlineExceeded);
        // Collects at 0, 1 and 2 s: not 50 of them.
        assert_eq!(api.collects.load(Ordering::SeqCst), 3);
        assert_eq!(api.cancels.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn cancellation_cancels_the_order_even_mid_collect() {
        let mut api = Scripted::new(vec![]);
        api.delay = Duration::from_secs(30);
        let token = CancellationToken::new();
        let canceller = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            canceller.cancel();
        });
        let mut events = Vec::new();
        let started = std::time::Instant::now();
        let outcome = drive_with(&api, qr_order(), fast().with_cancel(token), |e| {
            events.push(e)
        })
        .await
        .unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(outcome, Outcome::Cancelled);
        assert_eq!(api.cancels.load(Ordering::SeqCst), 1);
        assert_eq!(describe(&events), ["qr0", "cancelled"]);
    }

    #[tokio::test]
    async fn transient_errors_are_retried_then_fatal() {
        let maintenance = || BankIdError::Api {
            endpoint: "collect",
            status: 503,
            code: crate::types::ErrorCode::Maintenance,
            details: String::new(),
        };
        let api = Scripted::new(vec![
            Err(maintenance()),
            Ok(pending("started")),
            Ok(complete()),
        ]);
        let mut events = Vec::new();
        let outcome = drive_with(&api, StartedOrder::phone("o"), fast(), |e| events.push(e))
            .await
            .unwrap();
        assert_eq!(outcome, Outcome::Complete(completion()));
        assert_eq!(describe(&events), ["error", "hint:started", "complete"]);

        let api = Scripted::new(vec![Err(maintenance()), Err(maintenance())]);
        let options = DriveOptions {
            max_transient_errors: 1,
            ..fast()
        };
        let err = drive_with(&api, StartedOrder::phone("o"), options, |_| {})
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(&crate::types::ErrorCode::Maintenance));

        // An order BankID no longer knows was cancelled elsewhere: it ends
        // as cancelled at once, not as an error.
        let gone = BankIdError::Api {
            endpoint: "collect",
            status: 400,
            code: crate::types::ErrorCode::InvalidParameters,
            details: "No such order".into(),
        };
        let api = Scripted::new(vec![Ok(pending("userSign")), Err(gone)]);
        let mut events = Vec::new();
        let outcome = drive_with(&api, StartedOrder::phone("o"), fast(), |e| events.push(e))
            .await
            .unwrap();
        assert_eq!(outcome, Outcome::Cancelled);
        assert_eq!(describe(&events), ["hint:userSign", "cancelled"]);
        assert_eq!(api.collects.load(Ordering::SeqCst), 2);

        // Another refusal is fatal at once.
        let refused = BankIdError::Api {
            endpoint: "collect",
            status: 401,
            code: crate::types::ErrorCode::Unauthorized,
            details: "not allowed".into(),
        };
        let api = Scripted::new(vec![Err(refused)]);
        let err = drive_with(&api, StartedOrder::phone("o"), fast(), |_| {})
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(&crate::types::ErrorCode::Unauthorized));
        assert_eq!(api.collects.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn complete_without_data_is_a_decode_error() {
        let mut broken = complete();
        broken.completion_data = None;
        let api = Scripted::new(vec![Ok(broken)]);
        let err = drive_with(&api, StartedOrder::phone("o"), fast(), |_| {})
            .await
            .unwrap_err();
        assert!(matches!(err, BankIdError::Decode { .. }), "{err}");
    }

    #[tokio::test]
    async fn spawned_drive_sends_events_on_a_channel() {
        let api = Scripted::new(vec![Ok(pending("userSign")), Ok(complete())]);
        let mut handle = spawn_drive_with(api, StartedOrder::phone("o"), fast());
        let mut events = Vec::new();
        while let Some(e) = handle.events.recv().await {
            events.push(e);
        }
        assert_eq!(describe(&events), ["hint:userSign", "complete"]);
        assert_eq!(
            handle.task.await.unwrap().unwrap(),
            Outcome::Complete(completion())
        );
    }

    /// Ten thousand orders on one current-thread runtime: each is pending for
    /// two collects and completes on the third, with QR codes every second.
    /// Counts, not timings, are asserted.
    #[tokio::test]
    async fn ten_thousand_drivers_share_one_thread() {
        use std::sync::Arc;
        const N: usize = 10_000;
        struct PerOrder {
            step: AtomicUsize,
            total: Arc<AtomicUsize>,
        }
        impl OrderApi for PerOrder {
            fn collect(
                &self,
                _: &str,
            ) -> impl Future<Output = Result<CollectResponse, BankIdError>> + Send {
                self.total.fetch_add(1, Ordering::Relaxed);
                let step = self.step.fetch_add(1, Ordering::Relaxed);
                std::future::ready(Ok(if step < 2 {
                    pending("outstandingTransaction")
                } else {
                    complete()
                }))
            }
            fn cancel(&self, _: &str) -> impl Future<Output = Result<(), BankIdError>> + Send {
                std::future::ready(Ok(()))
            }
        }
        let collects = Arc::new(AtomicUsize::new(0));
        let qrs = Arc::new(AtomicUsize::new(0));
        let mut set = tokio::task::JoinSet::new();
        for i in 0..N {
            let api = PerOrder {
                step: AtomicUsize::new(0),
                total: collects.clone(),
            };
            let qrs = qrs.clone();
            let order = StartedOrder {
                order_ref: format!("order-{i}"),
                qr: Some(QrCode::new(TOKEN, SECRET)),
            };
            set.spawn(async move {
                drive_with(&api, order, fast(), |e| {
                    if matches!(e, OrderEvent::Qr(_)) {
                        qrs.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .await
            });
        }
        let mut completes = 0;
        while let Some(done) = set.join_next().await {
            if matches!(done.unwrap(), Ok(Outcome::Complete(_))) {
                completes += 1;
            }
        }
        assert_eq!(completes, N);
        assert_eq!(collects.load(Ordering::Relaxed), 3 * N);
        // t = 0, 1 and usually 2 for each order.
        assert!(
            qrs.load(Ordering::Relaxed) >= 2 * N,
            "{}",
            qrs.load(Ordering::Relaxed)
        );
    }
}
