//! A BankID RP API v6.0 simulator: the relying-party endpoints over mutual
//! TLS (`https://127.0.0.1:PORT/rp/v6.0/`), with orders, hint codes, time
//! limits, QR codes checked as the app checks them, and completion data
//! carrying a real XML signature and OCSP response; and a simulated user,
//! driven through control routes on the sandbox's plain-HTTP router
//! (`/_sandbox/bankid/...`, see [`control`]).
//!
//! * [`certs`]: the CA, server and RP certificates (made once per directory);
//! * [`validate`]: request validation from raw JSON (no client types);
//! * [`orders`]: the order state machine and its capacity note;
//! * [`api`]: the RP endpoints and their JSON errors; [`tls`]: the server;
//! * [`signature`]: completionData, signature XML and OCSP;
//! * [`users`]: deterministic simulated users.
//!
//! Start it with the sandbox (a [`crate::BankIdSandboxConfig`] in
//! [`crate::SandboxConfig::bankid`]) or alone with [`spawn`].
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

pub mod api;
pub mod certs;
pub mod control;
pub mod der;
pub mod orders;
pub mod signature;
pub mod tls;
pub mod users;
pub mod validate;

pub use certs::CertPaths;
pub use orders::OrderView;

use api::ApiError;
use orders::{Lookup, Order, Orders, QrTokens, Stage, StartedVia, State};
use validate::{Risk, StartRequest};

/// The path every RP endpoint answers under.
pub const API_PREFIX: &str = "/rp/v6.0/";

/// What happens when a start request names a person who already has a
/// pending order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlreadyInProgressPolicy {
    /// Refuse the new request (`alreadyInProgress`) and fail the pending
    /// order with hint `cancelled`, so the person starts over cleanly.
    #[default]
    RefuseAndCancelExisting,
    /// Refuse the new request; the pending order goes on.
    RefuseOnly,
    /// Accept the new request; the pending order fails with `cancelled`.
    ReplaceExisting,
}

/// The simulator's rules. Times are whole seconds of the simulator's clock
/// ([`SimClock`], which tests can advance).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BankIdSimConfig {
    /// A pending order fails with `expiredTransaction` after this long.
    pub order_lifetime_secs: u64,
    /// An auth/sign/payment order not scanned or autostarted within this
    /// fails with `startFailed`.
    pub start_window_secs: u64,
    /// A completed order can be collected for this long, then it is
    /// unknown (`invalidParameters`).
    pub complete_retention_secs: u64,
    /// Likewise for failed and cancelled orders.
    pub failed_retention_secs: u64,
    /// The app refuses a QR code whose qrTime is older than this.
    pub qr_max_age_secs: u64,
    /// After a scan or autostart the hint is `started` for this long…
    pub started_hint_secs: u64,
    /// …then `userMrtd` this long when requirement.mrtd, then `userSign`.
    pub mrtd_hint_secs: u64,
    pub already_in_progress: AlreadyInProgressPolicy,
    /// Larger request bodies get `invalidParameters`.
    pub max_body_bytes: usize,
    /// Refuse fields the API does not define (`invalidParameters` naming
    /// the field) rather than ignore them.
    pub reject_unknown_fields: bool,
    /// The RP name the app shows (and the signature's `displayName`).
    pub rp_display_name: String,
    /// Orders kept at once (all states); past it starts answer 503
    /// `maintenance`.
    pub max_orders: usize,
}

impl Default for BankIdSimConfig {
    fn default() -> Self {
        BankIdSimConfig {
            order_lifetime_secs: 180,
            start_window_secs: 30,
            complete_retention_secs: 180,
            failed_retention_secs: 300,
            qr_max_age_secs: 2,
            started_hint_secs: 1,
            mrtd_hint_secs: 2,
            already_in_progress: AlreadyInProgressPolicy::default(),
            // userVisibleData (40,000) + userNonVisibleData (200,000) + room.
            max_body_bytes: 256 * 1024,
            reject_unknown_fields: true,
            rp_display_name: "bankbridge sandbox RP".to_owned(),
            max_orders: 200_000,
        }
    }
}

impl BankIdSimConfig {
    pub fn order_lifetime(&self) -> Duration {
        Duration::from_secs(self.order_lifetime_secs)
    }
    pub fn start_window(&self) -> Duration {
        Duration::from_secs(self.start_window_secs)
    }
    pub fn complete_retention(&self) -> Duration {
        Duration::from_secs(self.complete_retention_secs)
    }
    pub fn failed_retention(&self) -> Duration {
        Duration::from_secs(self.failed_retention_secs)
    }
    pub fn started_hint(&self) -> Duration {
        Duration::from_secs(self.started_hint_secs)
    }
    pub fn mrtd_hint(&self) -> Duration {
        Duration::from_secs(self.mrtd_hint_secs)
    }
}

/// The simulator's clock: real time plus whatever tests added with
/// [`SimClock::advance`]. Cheap to clone; clones share the offset.
#[derive(Clone, Debug)]
pub struct SimClock(Arc<ClockInner>);

#[derive(Debug)]
struct ClockInner {
    origin: Instant,
    wall_origin: DateTime<Utc>,
    offset_ms: AtomicU64,
}

impl Default for SimClock {
    fn default() -> Self {
        SimClock::new()
    }
}

impl SimClock {
    pub fn new() -> Self {
        SimClock(Arc::new(ClockInner {
            origin: Instant::now(),
            wall_origin: Utc::now(),
            offset_ms: AtomicU64::new(0),
        }))
    }

    /// Time since the clock was made, advances included.
    pub fn now(&self) -> Duration {
        self.0.origin.elapsed() + Duration::from_millis(self.0.offset_ms.load(Ordering::Relaxed))
    }

    /// Move the clock forward (it never goes back).
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        let _ = self
            .0
            .offset_ms
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_add(ms))
            });
    }

    /// Wall-clock time on this clock (for dates in certificates and OCSP).
    pub fn wall(&self) -> DateTime<Utc> {
        self.0.wall_origin
            + chrono::Duration::from_std(self.now()).unwrap_or(chrono::Duration::zero())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BankIdError {
    #[error(transparent)]
    Pki(#[from] certs::PkiError),
    #[error("BankID simulator: cannot listen on 127.0.0.1:{port}: {source}")]
    Bind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
}

/// A refusal of a control request (the simulated user's action).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ControlError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ControlError {
            status,
            code,
            message: message.into(),
        }
    }
    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "wrong_state", message)
    }
    fn refused(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }
    fn unknown_order(r: Uuid) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_order",
            format!("no order {r} (never started here, or forgotten after its collect window)"),
        )
    }
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ControlError {}

/// What the simulated user answers when approving.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Approval {
    /// Who approves; required unless the order names its person.
    pub personal_number: Option<String>,
    /// The risk BankID assesses for this order ("low" by default). Above
    /// requirement.risk the order fails with `transactionRiskBlocked`.
    pub risk: Option<String>,
    /// The device's IP address in completionData (default: the order's
    /// endUserIp, or 127.0.0.1 for phone orders).
    pub ip_address: Option<String>,
}

/// The simulator: its PKI, its orders and its clock. Shared by the TLS
/// server and the control routes.
pub struct BankIdSim {
    config: BankIdSimConfig,
    clock: SimClock,
    pki: certs::Pki,
    orders: Mutex<Orders>,
    base_url: OnceLock<String>,
}

impl std::fmt::Debug for BankIdSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BankIdSim")
            .field("base_url", &self.base_url.get())
            .field("paths", &self.pki.paths)
            .finish_non_exhaustive()
    }
}

fn state_name(o: &Order) -> &'static str {
    match &o.state {
        State::Pending(_) => "pending",
        State::Complete { .. } => "complete",
        State::Failed { .. } => "failed",
        State::Cancelled { .. } => "cancelled",
    }
}

impl BankIdSim {
    /// Load (or make) the certificates in `dir` and set up an empty
    /// simulator. Does not listen: see [`spawn`] or [`tls::serve`].
    pub fn new(
        dir: &Path,
        config: BankIdSimConfig,
        clock: SimClock,
    ) -> Result<Arc<BankIdSim>, BankIdError> {
        let pki = certs::Pki::load_or_create(dir)?;
        Ok(Arc::new(BankIdSim {
            config,
            clock,
            pki,
            orders: Mutex::new(Orders::default()),
            base_url: OnceLock::new(),
        }))
    }

    pub fn config(&self) -> &BankIdSimConfig {
        &self.config
    }

    pub fn clock(&self) -> &SimClock {
        &self.clock
    }

    pub fn paths(&self) -> &CertPaths {
        &self.pki.paths
    }

    /// The root CA certificate (PEM) that signed the server certificate.
    pub fn ca_pem(&self) -> &str {
        &self.pki.ca_pem
    }

    /// `https://127.0.0.1:PORT/rp/v6.0/` once serving.
    pub fn base_url(&self) -> Option<&str> {
        self.base_url.get().map(String::as_str)
    }

    pub(crate) fn set_addr(&self, addr: SocketAddr) {
        let _ = self.base_url.set(format!("https://{addr}{API_PREFIX}"));
    }

    pub(crate) fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.pki.server_config.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Orders> {
        // A panic elsewhere must not wedge the simulator.
        self.orders.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// GET /_sandbox/bankid/info
    pub fn info(&self) -> Value {
        json!({
            "baseUrl": self.base_url(),
            "caCertPath": self.pki.paths.ca_cert,
            "rpCertPath": self.pki.paths.rp_cert,
            "rpKeyPath": self.pki.paths.rp_key,
            "serverCertPath": self.pki.paths.server_cert,
            "certDir": self.pki.paths.dir,
            "caPem": self.pki.ca_pem,
            "config": self.config,
            "clockSecs": self.clock.now().as_secs_f64(),
            "orders": self.lock().len(),
        })
    }

    // ---- the RP API ----

    pub(crate) fn start(&self, req: StartRequest, rp_name: String) -> Result<Value, ApiError> {
        let now = self.clock.now();
        let cfg = &self.config;
        let mut orders = self.lock();
        if orders.len() >= cfg.max_orders {
            orders.sweep(now, cfg);
            if orders.len() >= cfg.max_orders {
                return Err(ApiError::maintenance(format!(
                    "the simulator holds its maximum of {} orders; try again later",
                    cfg.max_orders
                )));
            }
        }
        if let Some(person) = &req.personal_number
            && let Some(existing) = orders.pending_for(person, now, cfg)
        {
            let cancel_existing = || State::Failed {
                at: now,
                hint: "cancelled",
            };
            match cfg.already_in_progress {
                AlreadyInProgressPolicy::RefuseAndCancelExisting => {
                    orders.finish(existing, cancel_existing());
                    return Err(ApiError::already_in_progress(true));
                }
                AlreadyInProgressPolicy::RefuseOnly => {
                    return Err(ApiError::already_in_progress(false));
                }
                AlreadyInProgressPolicy::ReplaceExisting => {
                    orders.finish(existing, cancel_existing());
                }
            }
        }
        let order_ref = Uuid::new_v4();
        let (tokens, stage) = if req.kind.is_phone() {
            (None, Stage::CallConfirm)
        } else {
            (
                Some(QrTokens {
                    auto_start_token: Uuid::new_v4(),
                    qr_start_token: Uuid::new_v4(),
                    qr_start_secret: Uuid::new_v4().to_string(),
                }),
                Stage::Outstanding,
            )
        };
        let body = match &tokens {
            Some(t) => json!({
                "orderRef": order_ref.to_string(),
                "autoStartToken": t.auto_start_token.to_string(),
                "qrStartToken": t.qr_start_token.to_string(),
                "qrStartSecret": t.qr_start_secret,
            }),
            None => json!({ "orderRef": order_ref.to_string() }),
        };
        tracing::debug!(%order_ref, kind = req.kind.path(), "BankID simulator: order started");
        orders.insert(Order {
            order_ref,
            request: req,
            created: now,
            tokens,
            rp_name,
            state: State::Pending(stage),
        });
        Ok(body)
    }

    /// Start an identification for `personal_number` the way a bank's
    /// back end does for its PSD2 API (the simulated NextGenPSD2 banks run
    /// in this process): the tokens a relying party gets, as `/auth` answers.
    pub fn start_for_bank(
        &self,
        personal_number: &str,
        end_user_ip: &str,
        bank: &str,
    ) -> Result<Value, String> {
        let body = json!({
            "endUserIp": end_user_ip,
            "requirement": {"personalNumber": personal_number},
        });
        let request = validate::start_request(validate::OrderKind::Auth, &body, false)
            .map_err(|e| e.details)?;
        self.start(request, bank.to_owned()).map_err(|e| e.details)
    }

    fn lookup_error(&self, r: Uuid, e: Lookup) -> ApiError {
        match e {
            Lookup::Unknown => ApiError::invalid_parameters(format!(
                "no such order: orderRef {r} is unknown (never started here, or forgotten after its collect window)"
            )),
            Lookup::TooOld => ApiError::invalid_parameters(format!(
                "orderRef {r} is too old: completed orders can be collected for {} s and failed ones for {} s",
                self.config.complete_retention_secs, self.config.failed_retention_secs
            )),
        }
    }

    pub(crate) fn collect(&self, r: Uuid) -> Result<Value, ApiError> {
        let now = self.clock.now();
        let mut orders = self.lock();
        let order = orders
            .get_mut(r, now, &self.config)
            .map_err(|e| self.lookup_error(r, e))?;
        if let State::Cancelled { .. } = order.state {
            return Err(ApiError::invalid_parameters(format!(
                "order {r} was cancelled by the RP"
            )));
        }
        Ok(order.collect_json(now, &self.config))
    }

    pub(crate) fn cancel(&self, r: Uuid) -> Result<(), ApiError> {
        let now = self.clock.now();
        let mut orders = self.lock();
        let order = orders
            .get_mut(r, now, &self.config)
            .map_err(|e| self.lookup_error(r, e))?;
        match &order.state {
            State::Pending(_) => {
                orders.finish(r, State::Cancelled { at: now });
                Ok(())
            }
            State::Cancelled { .. } => Err(ApiError::invalid_parameters(format!(
                "order {r} is already cancelled"
            ))),
            _ => Err(ApiError::invalid_parameters(format!(
                "order {r} is {} and can no longer be cancelled",
                state_name(order)
            ))),
        }
    }

    // ---- the simulated user (control API) ----

    /// The app scans QR data: format, known token, HMAC with the order's
    /// secret, and age (the qrTime must be the order's current age in whole
    /// seconds, at most `qr_max_age_secs` behind).
    pub fn scan(&self, qr_data: &str) -> Result<OrderView, ControlError> {
        let Some((token, qr_time, _)) = bankbridge_bankid::qr::parse_qr_data(qr_data) else {
            return Err(ControlError::bad(
                "invalid_qr",
                "not BankID QR data: expected bankid.<qrStartToken>.<qrTime>.<qrAuthCode> with a decimal qrTime and 64 lowercase hex digits",
            ));
        };
        let unknown = || {
            ControlError::new(
                StatusCode::NOT_FOUND,
                "unknown_qr",
                "no order has this qrStartToken",
            )
        };
        let token_id = Uuid::parse_str(token).map_err(|_| unknown())?;
        let now = self.clock.now();
        let cfg = &self.config;
        let mut orders = self.lock();
        let r = orders.by_qr_token(token_id).ok_or_else(unknown)?;
        let order = orders
            .get_mut(r, now, cfg)
            .map_err(|_| ControlError::unknown_order(r))?;
        let Some(tokens) = &order.tokens else {
            return Err(unknown());
        };
        if bankbridge_bankid::qr::verify_qr_data(qr_data, token, &tokens.qr_start_secret).is_none()
        {
            return Err(ControlError::refused(
                "forged_qr",
                "the qrAuthCode is not the HMAC of the qrTime under this order's qrStartSecret (forged or corrupted QR code)",
            ));
        }
        let age = now.saturating_sub(order.created).as_secs();
        // One second of slack ahead: the RP starts counting when the start
        // response arrives, a moment after the simulator did.
        if qr_time > age + 1 {
            return Err(ControlError::refused(
                "qr_from_future",
                format!("qrTime {qr_time} is ahead of the order's age ({age} s)"),
            ));
        }
        if age - qr_time.min(age) > cfg.qr_max_age_secs {
            return Err(ControlError::refused(
                "qr_too_old",
                format!(
                    "this QR code is {} s old (qrTime {qr_time}, order age {age} s); the app takes codes at most {} s old: show a fresh code every second",
                    age - qr_time.min(age),
                    cfg.qr_max_age_secs
                ),
            ));
        }
        self.begin(order, now, StartedVia::Qr)
    }

    /// The app is opened on the same device with the autoStartToken.
    pub fn autostart(&self, auto_start_token: &str) -> Result<OrderView, ControlError> {
        let unknown = || {
            ControlError::new(
                StatusCode::NOT_FOUND,
                "unknown_autostart_token",
                "no order has this autoStartToken",
            )
        };
        let token = Uuid::parse_str(auto_start_token.trim()).map_err(|_| unknown())?;
        let now = self.clock.now();
        let mut orders = self.lock();
        let r = orders.by_autostart(token).ok_or_else(unknown)?;
        let order = orders
            .get_mut(r, now, &self.config)
            .map_err(|_| ControlError::unknown_order(r))?;
        self.begin(order, now, StartedVia::AutoStart)
    }

    fn begin(
        &self,
        order: &mut Order,
        now: Duration,
        via: StartedVia,
    ) -> Result<OrderView, ControlError> {
        match &order.state {
            State::Pending(Stage::Outstanding) => {
                order.state = State::Pending(Stage::Started { at: now, via });
                Ok(order.view(now, &self.config))
            }
            State::Pending(_) => Err(ControlError::conflict(format!(
                "order {} has already been started in the app",
                order.order_ref
            ))),
            _ => Err(ControlError::conflict(format!(
                "order {} is {}, not waiting to be started",
                order.order_ref,
                state_name(order)
            ))),
        }
    }

    /// Phone orders: the user confirms being in a call with the RP.
    pub fn confirm_call(&self, r: Uuid) -> Result<OrderView, ControlError> {
        let now = self.clock.now();
        let mut orders = self.lock();
        let order = orders
            .get_mut(r, now, &self.config)
            .map_err(|_| ControlError::unknown_order(r))?;
        match &order.state {
            State::Pending(Stage::CallConfirm) => {
                order.state = State::Pending(Stage::Started {
                    at: now,
                    via: StartedVia::Phone,
                });
                Ok(order.view(now, &self.config))
            }
            _ => Err(ControlError::conflict(format!(
                "order {r} is not a phone order waiting for the call to be confirmed"
            ))),
        }
    }

    /// The user signs: the order completes with completionData (phone
    /// orders: confirming the call first). Fails it with
    /// `transactionRiskBlocked` when the assessed risk is above the
    /// order's requirement.risk.
    pub fn approve(&self, r: Uuid, approval: Approval) -> Result<OrderView, ControlError> {
        let risk = match approval.risk.as_deref() {
            None => Risk::Low,
            Some(s) => Risk::parse(s).ok_or_else(|| {
                ControlError::bad(
                    "invalid_risk",
                    format!("risk must be \"low\", \"moderate\" or \"high\", got {s:?}"),
                )
            })?,
        };
        let now = self.clock.now();
        let cfg = &self.config;
        let (snapshot, person) = {
            let mut orders = self.lock();
            let order = orders
                .get_mut(r, now, cfg)
                .map_err(|_| ControlError::unknown_order(r))?;
            match &order.state {
                State::Pending(Stage::Started { .. }) | State::Pending(Stage::CallConfirm) => {}
                State::Pending(Stage::Outstanding) => {
                    return Err(ControlError::conflict(format!(
                        "order {r} has not reached the app: scan its QR code or use its autoStartToken first"
                    )));
                }
                _ => {
                    return Err(ControlError::conflict(format!(
                        "order {r} is {}, not waiting for the user",
                        state_name(order)
                    )));
                }
            }
            let person = match (&approval.personal_number, &order.request.personal_number) {
                (Some(p), _) => {
                    validate::check_personal_number(p).map_err(|why| {
                        ControlError::bad(
                            "invalid_personal_number",
                            format!("personalNumber {why}"),
                        )
                    })?;
                    p.clone()
                }
                (None, Some(p)) => p.clone(),
                (None, None) => {
                    return Err(ControlError::bad(
                        "personal_number_required",
                        "personalNumber is required: this order does not name its person (no requirement.personalNumber)",
                    ));
                }
            };
            if let Some(required) = &order.request.personal_number
                && *required != person
            {
                return Err(ControlError::refused(
                    "wrong_person",
                    format!(
                        "order {r} is for personal number {required}, not {person} (the app tells the user the order is not for them)"
                    ),
                ));
            }
            if let Some(max) = order.request.requirement.risk
                && risk > max
            {
                orders.finish(
                    r,
                    State::Failed {
                        at: now,
                        hint: "transactionRiskBlocked",
                    },
                );
                let order = orders
                    .get_mut(r, now, cfg)
                    .map_err(|_| ControlError::unknown_order(r))?;
                return Ok(order.view(now, cfg));
            }
            (order.clone(), person)
        };

        // Keys, XML and OCSP are built outside the lock.
        let user = users::User::from_personal_number(&person);
        let device_ip = approval.ip_address.unwrap_or_else(|| {
            snapshot
                .end_user_ip()
                .map(|ip| ip.to_string())
                .unwrap_or_else(|| Ipv4Addr::LOCALHOST.to_string())
        });
        let req = &snapshot.request;
        let completion = signature::Completion {
            kind: req.kind,
            user: &user,
            device_ip,
            requirement: &req.requirement,
            return_risk: req.return_risk,
            risk,
            user_visible_data: req.user_visible_data.as_deref(),
            user_non_visible_data: req.user_non_visible_data.as_deref(),
            rp_name: &snapshot.rp_name,
            rp_display_name: &cfg.rp_display_name,
            now: self.clock.wall(),
        };
        let data = signature::completion_data(&self.pki, &completion).map_err(|e| {
            ControlError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "signing_failed",
                format!("could not build completionData: {e}"),
            )
        })?;

        let now = self.clock.now();
        let mut orders = self.lock();
        let order = orders
            .get_mut(r, now, cfg)
            .map_err(|_| ControlError::unknown_order(r))?;
        if !order.is_pending() {
            return Err(ControlError::conflict(format!(
                "order {r} became {} while the user was signing",
                state_name(order)
            )));
        }
        orders.finish(
            r,
            State::Complete {
                at: now,
                data: Arc::new(data),
            },
        );
        let order = orders
            .get_mut(r, now, cfg)
            .map_err(|_| ControlError::unknown_order(r))?;
        Ok(order.view(now, cfg))
    }

    /// The user cancels in the app: `userCancel`, or `userDeclinedCall` for
    /// a phone order whose call was not confirmed.
    pub fn decline(&self, r: Uuid) -> Result<OrderView, ControlError> {
        let now = self.clock.now();
        let cfg = &self.config;
        let mut orders = self.lock();
        let order = orders
            .get_mut(r, now, cfg)
            .map_err(|_| ControlError::unknown_order(r))?;
        let hint = match &order.state {
            State::Pending(Stage::CallConfirm) => "userDeclinedCall",
            State::Pending(Stage::Started { .. }) => "userCancel",
            State::Pending(Stage::Outstanding) => {
                return Err(ControlError::conflict(format!(
                    "order {r} has not reached the app: scan its QR code or use its autoStartToken first"
                )));
            }
            _ => {
                return Err(ControlError::conflict(format!(
                    "order {r} is {}, not waiting for the user",
                    state_name(order)
                )));
            }
        };
        orders.finish(r, State::Failed { at: now, hint });
        let order = orders
            .get_mut(r, now, cfg)
            .map_err(|_| ControlError::unknown_order(r))?;
        Ok(order.view(now, cfg))
    }

    /// One order, with its completionData when complete.
    pub fn order(&self, r: Uuid) -> Option<OrderView> {
        let now = self.clock.now();
        let mut orders = self.lock();
        orders
            .get_mut(r, now, &self.config)
            .ok()
            .map(|o| o.view(now, &self.config))
    }

    /// Every order still kept, oldest first (without completionData).
    pub fn orders(&self) -> Vec<OrderView> {
        let now = self.clock.now();
        let mut orders = self.lock();
        orders.sweep(now, &self.config);
        orders.views(now, &self.config)
    }

    /// Apply deadlines to every order and forget those past their window.
    pub fn sweep(&self) -> usize {
        let now = self.clock.now();
        self.lock().sweep(now, &self.config)
    }
}

/// A simulator serving HTTPS on a loopback port; stops when dropped.
#[derive(Debug)]
pub struct BankIdSimHandle {
    sim: Arc<BankIdSim>,
    addr: SocketAddr,
    shutdown: Option<tokio::sync::watch::Sender<bool>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl BankIdSimHandle {
    pub fn sim(&self) -> &Arc<BankIdSim> {
        &self.sim
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT/rp/v6.0/`
    pub fn base_url(&self) -> String {
        format!("https://{}{API_PREFIX}", self.addr)
    }

    pub fn paths(&self) -> &CertPaths {
        self.sim.paths()
    }

    pub fn ca_pem(&self) -> &str {
        self.sim.ca_pem()
    }

    pub fn clock(&self) -> &SimClock {
        self.sim.clock()
    }

    /// Stop serving and wait for the server to end.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for BankIdSimHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
    }
}

/// Start a simulator on an ephemeral port of 127.0.0.1 with its
/// certificates in `dir` (made there on first use).
pub async fn spawn(
    dir: impl AsRef<Path>,
    config: BankIdSimConfig,
) -> Result<BankIdSimHandle, BankIdError> {
    spawn_with(dir, 0, config, SimClock::new()).await
}

/// [`spawn`] on a given port (0: any free one) with a given clock.
pub async fn spawn_with(
    dir: impl AsRef<Path>,
    port: u16,
    config: BankIdSimConfig,
    clock: SimClock,
) -> Result<BankIdSimHandle, BankIdError> {
    let dir: PathBuf = dir.as_ref().to_path_buf();
    let sim = tokio::task::spawn_blocking(move || BankIdSim::new(&dir, config, clock))
        .await
        .map_err(|e| BankIdError::Bind {
            port,
            source: std::io::Error::other(e),
        })??;
    start_server(sim, port).await
}

/// Serve `sim` on 127.0.0.1:`port` in the background.
pub async fn start_server(sim: Arc<BankIdSim>, port: u16) -> Result<BankIdSimHandle, BankIdError> {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .await
        .map_err(|source| BankIdError::Bind { port, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| BankIdError::Bind { port, source })?;
    sim.set_addr(addr);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(tls::serve(listener, sim.clone(), rx));
    Ok(BankIdSimHandle {
        sim,
        addr,
        shutdown: Some(tx),
        task: Some(task),
    })
}
