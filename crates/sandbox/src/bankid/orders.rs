//! Orders and their state machine.
//!
//! States move lazily: an order's deadlines are checked whenever it is
//! touched (and by a periodic sweep), against the simulator's clock, so a
//! test that advances the clock sees expiry at once and no timer per order
//! is needed.
//!
//! ```text
//! auth/sign/payment: outstandingTransaction ─scan/autostart─▶ started ─▶ (userMrtd) ─▶ userSign ─approve─▶ complete
//! phone/*:           userCallConfirm ─confirm─▶ started ─▶ userSign ─approve─▶ complete
//! failed: userCancel (decline), userDeclinedCall (phone, declined before confirming),
//!         startFailed (not started within the start window), expiredTransaction (lifetime over),
//!         cancelled (a new order for the same person), transactionRiskBlocked
//! ```
//!
//! Capacity: all orders live in one map in memory. A pending order costs a
//! few hundred bytes plus its userVisibleData/userNonVisibleData (up to 240 kB
//! when an RP sends the maximum); a completed one keeps its completionData
//! (about 4 kB) for the collect window. 10,000 concurrent pending orders are
//! a few MB; `max_orders` caps the total, past which starts answer 503
//! `maintenance`.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::BankIdSimConfig;
use super::validate::{OrderKind, StartRequest};

/// How an order was started in the app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum StartedVia {
    Qr,
    AutoStart,
    Phone,
}

#[derive(Clone, Debug)]
pub enum Stage {
    /// auth/sign/payment: the app has not got the order yet.
    Outstanding,
    /// phone: the app asks the user to confirm the call.
    CallConfirm,
    /// The app has the order, since `at`.
    Started { at: Duration, via: StartedVia },
}

#[derive(Clone, Debug)]
pub enum State {
    Pending(Stage),
    Complete {
        at: Duration,
        data: Arc<Value>,
    },
    Failed {
        at: Duration,
        hint: &'static str,
    },
    /// Cancelled by the RP: collect and cancel now answer invalidParameters.
    Cancelled {
        at: Duration,
    },
}

/// What an RP's QR code proves: the token that names the order and the
/// secret its HMAC is keyed with.
#[derive(Clone)]
pub struct QrTokens {
    pub auto_start_token: Uuid,
    pub qr_start_token: Uuid,
    pub qr_start_secret: String,
}

impl std::fmt::Debug for QrTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QrTokens")
            .field("auto_start_token", &self.auto_start_token)
            .field("qr_start_token", &self.qr_start_token)
            .field("qr_start_secret", &"[redacted]")
            .finish()
    }
}

#[derive(Clone, Debug)]
pub struct Order {
    pub order_ref: Uuid,
    pub request: StartRequest,
    pub created: Duration,
    pub tokens: Option<QrTokens>,
    /// Subject of the RP's client certificate.
    pub rp_name: String,
    pub state: State,
}

impl Order {
    pub fn kind(&self) -> OrderKind {
        self.request.kind
    }

    pub fn end_user_ip(&self) -> Option<IpAddr> {
        self.request.end_user_ip
    }

    pub fn is_pending(&self) -> bool {
        matches!(self.state, State::Pending(_))
    }

    /// Apply any deadline passed by `now`; `false` once the order is past
    /// its collect window and must be forgotten.
    fn settle(&mut self, now: Duration, cfg: &BankIdSimConfig) -> bool {
        if let State::Pending(stage) = &self.state {
            let expires = self.created + cfg.order_lifetime();
            let start_by = match stage {
                Stage::Outstanding => Some(self.created + cfg.start_window()),
                _ => None,
            };
            match start_by {
                Some(t) if t < expires && now >= t => {
                    self.state = State::Failed {
                        at: t,
                        hint: "startFailed",
                    };
                }
                _ if now >= expires => {
                    self.state = State::Failed {
                        at: expires,
                        hint: "expiredTransaction",
                    };
                }
                _ => {}
            }
        }
        match &self.state {
            State::Pending(_) => true,
            State::Complete { at, .. } => now < *at + cfg.complete_retention(),
            State::Failed { at, .. } | State::Cancelled { at } => {
                now < *at + cfg.failed_retention()
            }
        }
    }

    /// The pending hint at `now`.
    fn pending_hint(&self, stage: &Stage, now: Duration, cfg: &BankIdSimConfig) -> &'static str {
        match stage {
            Stage::Outstanding => "outstandingTransaction",
            Stage::CallConfirm => "userCallConfirm",
            Stage::Started { at, .. } => {
                let since = now.saturating_sub(*at);
                if since < cfg.started_hint() {
                    "started"
                } else if self.request.requirement.mrtd
                    && since < cfg.started_hint() + cfg.mrtd_hint()
                {
                    "userMrtd"
                } else {
                    "userSign"
                }
            }
        }
    }

    /// The collect answer.
    pub fn collect_json(&self, now: Duration, cfg: &BankIdSimConfig) -> Value {
        let order_ref = self.order_ref.to_string();
        match &self.state {
            State::Pending(stage) => json!({
                "orderRef": order_ref,
                "status": "pending",
                "hintCode": self.pending_hint(stage, now, cfg),
            }),
            State::Failed { hint, .. } => json!({
                "orderRef": order_ref,
                "status": "failed",
                "hintCode": hint,
            }),
            State::Complete { data, .. } => json!({
                "orderRef": order_ref,
                "status": "complete",
                "completionData": data.as_ref(),
            }),
            // Not reached: collect refuses cancelled orders first.
            State::Cancelled { .. } => json!({"orderRef": order_ref, "status": "cancelled"}),
        }
    }

    /// A debugging view for the control API (never the qrStartSecret).
    pub fn view(&self, now: Duration, cfg: &BankIdSimConfig) -> OrderView {
        self.view_with(now, cfg, true)
    }

    fn view_with(&self, now: Duration, cfg: &BankIdSimConfig, full: bool) -> OrderView {
        let (status, hint_code) = match &self.state {
            State::Pending(stage) => ("pending", Some(self.pending_hint(stage, now, cfg))),
            State::Complete { .. } => ("complete", None),
            State::Failed { hint, .. } => ("failed", Some(*hint)),
            State::Cancelled { .. } => ("cancelled", None),
        };
        let started_via = match &self.state {
            State::Pending(Stage::Started { via, .. }) => Some(*via),
            _ => None,
        };
        OrderView {
            order_ref: self.order_ref,
            kind: self.kind().path(),
            status,
            hint_code,
            started_via,
            personal_number: self.request.personal_number.clone(),
            end_user_ip: self.end_user_ip().map(|ip| ip.to_string()),
            age_secs: now.saturating_sub(self.created).as_secs(),
            qr_start_token: self.tokens.as_ref().map(|t| t.qr_start_token),
            auto_start_token: self.tokens.as_ref().map(|t| t.auto_start_token),
            mrtd: self.request.requirement.mrtd,
            completion_data: match &self.state {
                State::Complete { data, .. } if full => Some(data.as_ref().clone()),
                _ => None,
            },
        }
    }
}

/// An order as the control API shows it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderView {
    pub order_ref: Uuid,
    pub kind: &'static str,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint_code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_via: Option<StartedVia>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub personal_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_user_ip: Option<String>,
    pub age_secs: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qr_start_token: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_start_token: Option<Uuid>,
    pub mrtd: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_data: Option<Value>,
}

/// Every order, with indexes for the lookups the API and the app make.
#[derive(Default)]
pub struct Orders {
    map: HashMap<Uuid, Order>,
    /// Pending orders by the person they are for (alreadyInProgress).
    by_person: HashMap<String, Uuid>,
    by_qr_token: HashMap<Uuid, Uuid>,
    by_autostart: HashMap<Uuid, Uuid>,
}

/// Why a lookup found no usable order.
pub enum Lookup {
    Unknown,
    /// Known but past its collect window (and now forgotten).
    TooOld,
}

impl Orders {
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn insert(&mut self, order: Order) {
        if let Some(p) = &order.request.personal_number {
            self.by_person.insert(p.clone(), order.order_ref);
        }
        if let Some(t) = &order.tokens {
            self.by_qr_token.insert(t.qr_start_token, order.order_ref);
            self.by_autostart
                .insert(t.auto_start_token, order.order_ref);
        }
        self.map.insert(order.order_ref, order);
    }

    fn remove(&mut self, order_ref: Uuid) {
        if let Some(o) = self.map.remove(&order_ref) {
            if let Some(t) = &o.tokens {
                self.by_qr_token.remove(&t.qr_start_token);
                self.by_autostart.remove(&t.auto_start_token);
            }
            if let Some(p) = &o.request.personal_number {
                self.unindex_person(order_ref, p);
            }
        }
    }

    /// The order, settled at `now`; forgotten (and `TooOld`) when past its
    /// collect window.
    pub fn get_mut(
        &mut self,
        order_ref: Uuid,
        now: Duration,
        cfg: &BankIdSimConfig,
    ) -> Result<&mut Order, Lookup> {
        let Some(order) = self.map.get_mut(&order_ref) else {
            return Err(Lookup::Unknown);
        };
        let keep = order.settle(now, cfg);
        let person = (!order.is_pending())
            .then(|| order.request.personal_number.clone())
            .flatten();
        if !keep {
            self.remove(order_ref);
            return Err(Lookup::TooOld);
        }
        if let Some(p) = person {
            // No longer pending (maybe just now): free the person.
            self.unindex_person(order_ref, &p);
        }
        self.map.get_mut(&order_ref).ok_or(Lookup::Unknown)
    }

    fn unindex_person(&mut self, order_ref: Uuid, person: &str) {
        if self.by_person.get(person) == Some(&order_ref) {
            self.by_person.remove(person);
        }
    }

    /// The pending order for `person`, if any (settled at `now`).
    pub fn pending_for(
        &mut self,
        person: &str,
        now: Duration,
        cfg: &BankIdSimConfig,
    ) -> Option<Uuid> {
        let r = *self.by_person.get(person)?;
        match self.get_mut(r, now, cfg) {
            Ok(o) if o.is_pending() => Some(r),
            _ => {
                self.unindex_person(r, person);
                None
            }
        }
    }

    /// Move an order to a final state, freeing its person.
    pub fn finish(&mut self, order_ref: Uuid, state: State) {
        if let Some(o) = self.map.get_mut(&order_ref) {
            o.state = state;
            if let Some(p) = o.request.personal_number.clone() {
                self.unindex_person(order_ref, &p);
            }
        }
    }

    pub fn by_qr_token(&self, token: Uuid) -> Option<Uuid> {
        self.by_qr_token.get(&token).copied()
    }

    pub fn by_autostart(&self, token: Uuid) -> Option<Uuid> {
        self.by_autostart.get(&token).copied()
    }

    /// Settle every order; forget those past their window. Returns how
    /// many were forgotten.
    pub fn sweep(&mut self, now: Duration, cfg: &BankIdSimConfig) -> usize {
        let refs: Vec<Uuid> = self.map.keys().copied().collect();
        let mut gone = 0;
        for r in refs {
            if let Err(Lookup::TooOld) = self.get_mut(r, now, cfg) {
                gone += 1;
            }
        }
        gone
    }

    pub fn views(&self, now: Duration, cfg: &BankIdSimConfig) -> Vec<OrderView> {
        let mut v: Vec<&Order> = self.map.values().collect();
        v.sort_by_key(|o| o.created);
        v.into_iter()
            .map(|o| o.view_with(now, cfg, false))
            .collect()
    }
}
