//! The simulated user, on the sandbox's plain-HTTP router:
//!
//! | route | what the user does |
//! |---|---|
//! | `GET  /_sandbox/bankid/info` | base URL, PEM paths, CA PEM, config |
//! | `POST /_sandbox/bankid/scan {"qrData"}` | scans a QR code (checked as the app does) |
//! | `POST /_sandbox/bankid/autostart {"autoStartToken"}` | opens the app on the same device |
//! | `POST /_sandbox/bankid/orders/{orderRef}/confirm-call` | phone: confirms the call |
//! | `POST /_sandbox/bankid/orders/{orderRef}/approve {"personalNumber"?, "risk"?, "ipAddress"?}` | signs |
//! | `POST /_sandbox/bankid/orders/{orderRef}/decline` | cancels in the app |
//! | `GET  /_sandbox/bankid/orders`, `/orders/{orderRef}` | what the simulator holds |
//! | `POST /_sandbox/bankid/advance {"seconds"}` | moves the simulator's clock forward |
//!
//! Refusals are `{"error": code, "message": text}` with 400 (bad input),
//! 404 (unknown order or token), 409 (wrong state) or 422 (the app refuses:
//! forged or old QR code, wrong person).
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::{Approval, BankIdSim, ControlError};

/// Where the control routes are nested.
pub const PREFIX: &str = "/_sandbox/bankid";
/// The clock moves at most this far per call (a year).
const MAX_ADVANCE_SECS: f64 = 366.0 * 86_400.0;

type Sim = State<Arc<BankIdSim>>;

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(serde_json::json!({ "error": self.code, "message": self.message })),
        )
            .into_response()
    }
}

/// The control routes, to merge into the sandbox router.
pub fn routes(sim: Arc<BankIdSim>) -> Router {
    let control = Router::new()
        .route("/info", get(info))
        .route("/scan", post(scan))
        .route("/autostart", post(autostart))
        .route("/advance", post(advance))
        .route("/orders", get(list))
        .route("/orders/{order_ref}", get(one))
        .route("/orders/{order_ref}/approve", post(approve))
        .route("/orders/{order_ref}/decline", post(decline))
        .route("/orders/{order_ref}/confirm-call", post(confirm_call));
    Router::new().nest(PREFIX, control.with_state(sim))
}

fn body<T: DeserializeOwned + Default>(bytes: &[u8], required: bool) -> Result<T, ControlError> {
    if bytes.iter().all(u8::is_ascii_whitespace) && !required {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| ControlError {
        status: StatusCode::BAD_REQUEST,
        code: "invalid_body",
        message: format!("the body is not the expected JSON: {e}"),
    })
}

fn order_ref(s: &str) -> Result<Uuid, ControlError> {
    Uuid::parse_str(s).map_err(|_| ControlError {
        status: StatusCode::BAD_REQUEST,
        code: "invalid_order_ref",
        message: format!(
            "not an orderRef (a UUID): {:?}",
            super::validate::truncate(s, 64)
        ),
    })
}

async fn info(State(sim): Sim) -> Response {
    axum::Json(sim.info()).into_response()
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ScanBody {
    qr_data: String,
}

async fn scan(State(sim): Sim, bytes: Bytes) -> Result<Response, ControlError> {
    let b: ScanBody = body(&bytes, true)?;
    Ok(axum::Json(sim.scan(&b.qr_data)?).into_response())
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct AutostartBody {
    auto_start_token: String,
}

async fn autostart(State(sim): Sim, bytes: Bytes) -> Result<Response, ControlError> {
    let b: AutostartBody = body(&bytes, true)?;
    Ok(axum::Json(sim.autostart(&b.auto_start_token)?).into_response())
}

#[derive(Deserialize, Default)]
struct AdvanceBody {
    seconds: f64,
}

async fn advance(State(sim): Sim, bytes: Bytes) -> Result<Response, ControlError> {
    let b: AdvanceBody = body(&bytes, true)?;
    if !(0.0..=MAX_ADVANCE_SECS).contains(&b.seconds) {
        return Err(ControlError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_seconds",
            message: format!("seconds must be from 0 to {MAX_ADVANCE_SECS}"),
        });
    }
    sim.clock().advance(Duration::from_secs_f64(b.seconds));
    Ok(
        axum::Json(serde_json::json!({ "clockSecs": sim.clock().now().as_secs_f64() }))
            .into_response(),
    )
}

async fn list(State(sim): Sim) -> Response {
    axum::Json(sim.orders()).into_response()
}

async fn one(State(sim): Sim, Path(r): Path<String>) -> Result<Response, ControlError> {
    let r = order_ref(&r)?;
    sim.order(r)
        .map(|o| axum::Json(o).into_response())
        .ok_or_else(|| ControlError {
            status: StatusCode::NOT_FOUND,
            code: "unknown_order",
            message: format!("no order {r}"),
        })
}

async fn approve(
    State(sim): Sim,
    Path(r): Path<String>,
    bytes: Bytes,
) -> Result<Response, ControlError> {
    let r = order_ref(&r)?;
    let approval: Approval = body(&bytes, false)?;
    // Signing builds keys and XML: keep it off the async workers.
    let view = tokio::task::spawn_blocking(move || sim.approve(r, approval))
        .await
        .map_err(|e| ControlError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: e.to_string(),
        })??;
    Ok(axum::Json(view).into_response())
}

async fn decline(State(sim): Sim, Path(r): Path<String>) -> Result<Response, ControlError> {
    Ok(axum::Json(sim.decline(order_ref(&r)?)?).into_response())
}

async fn confirm_call(State(sim): Sim, Path(r): Path<String>) -> Result<Response, ControlError> {
    Ok(axum::Json(sim.confirm_call(order_ref(&r)?)?).into_response())
}
