//! The BankID gateway's routes: start an order, follow it as server-sent
//! events (QR data each second, hint changes, the outcome), cancel it. The
//! logic lives in [`crate::bankid_gateway`].
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Extension;
use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bankbridge_store::Scope;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::{ApiJson, guarded, json};
use crate::AppState;
use crate::bankid_gateway::{
    BankIdGateway, GatewayError, OrderParams, OrderState, OrderStatus, end_user_ip,
};
use crate::error::{ApiError, ErrorBody};

pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/bankid/orders",
            guarded(state, Scope::Write, post(create)),
        )
        .route(
            "/api/v1/bankid/orders/{id}",
            guarded(state, Scope::Read, get(show)),
        )
        // Authenticated inside: a bearer token or the order's events key.
        .route("/api/v1/bankid/orders/{id}/events", get(events))
        .route("/api/v1/bankid/orders/{id}/qr.svg", get(qr_svg))
        .route(
            "/api/v1/bankid/orders/{id}/cancel",
            guarded(state, Scope::Write, post(cancel)),
        )
}

#[derive(OpenApi)]
#[openapi(
    paths(create, show, events, qr_svg, cancel),
    components(schemas(CreateOrder, OrderView, OrderStateView, UserMessageView))
)]
pub(crate) struct Doc;

/// Start a BankID order for the end user of the calling web app.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateOrder {
    /// `auth` or `sign`.
    #[serde(rename = "type")]
    #[schema(pattern = "^(auth|sign)$")]
    kind: String,
    /// Only this person may complete the order: 12 digits, YYYYMMDDNNNC
    /// (a date and check digit that do not hold get 422).
    #[schema(pattern = "^[0-9]{12}$")]
    personal_number: Option<String>,
    /// Text shown to the user (plain text, or simple Markdown with `markdown: true`); required to sign.
    user_visible_data: Option<String>,
    #[serde(default)]
    markdown: bool,
    /// Data signed but not shown.
    user_non_visible_data: Option<String>,
    /// Where the BankID app returns on the same device.
    return_url: Option<String>,
    /// The end user's IP, when this server is not the one they talk to and the
    /// caller is trusted to say it (admin scope); otherwise it is taken from
    /// the connection or a trusted proxy's `X-Forwarded-For`.
    end_user_ip: Option<String>,
}

/// A started order.
#[derive(Serialize, ToSchema)]
pub(crate) struct OrderView {
    id: String,
    order_ref: String,
    auto_start_token: String,
    /// Opens the BankID app on this device.
    autostart_url: String,
    /// Server-sent events of this order, an absolute URL; usable by a
    /// browser as is (it carries the order's key).
    events_url: String,
    /// Absolute URL.
    cancel_url: String,
}

/// An order's state now.
#[derive(Serialize, ToSchema)]
pub(crate) struct OrderStateView {
    /// `pending`, `complete`, `failed`, `cancelled` or `error`.
    status: String,
    /// QR data to show now, while pending.
    qr: Option<String>,
    hint: Option<String>,
    /// What to show the user now, instead of the raw hint.
    user_message: Option<UserMessageView>,
    /// BankID's completionData, once complete.
    #[schema(value_type = Option<Object>)]
    completion: Option<serde_json::Value>,
    message: Option<String>,
}

/// The message BankID's guidelines recommend for the order's state (their
/// RFA number), in English and Swedish.
#[derive(Serialize, ToSchema)]
pub(crate) struct UserMessageView {
    #[schema(minimum = 1, maximum = 23, example = 9)]
    rfa: u8,
    #[schema(example = "Enter your security code in the BankID app and confirm.")]
    en: String,
    #[schema(example = "Skriv in din säkerhetskod i BankID-appen och bekräfta.")]
    sv: String,
}

fn user_message_view(m: &bankbridge_bankid::messages::UserMessage) -> UserMessageView {
    UserMessageView {
        rfa: m.rfa,
        en: m.en.to_owned(),
        sv: m.sv.to_owned(),
    }
}

fn gateway(state: &AppState) -> Result<&BankIdGateway, ApiError> {
    state.bankid.get().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "bankid_not_configured",
            "this server has no BankID relying-party certificate; start it with --bankid-* options",
        )
    })
}

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> Self {
        let msg = e.to_string();
        match e {
            // The request has the documented shape but says something
            // BankID's rules refuse (a check digit, text too long once
            // encoded, sign without text).
            GatewayError::Invalid(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", msg)
            }
            GatewayError::Full => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "bankid_busy", msg)
            }
            GatewayError::TooManyPending { .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "bankid_too_many_orders", msg)
            }
            // The request passed our checks, so BankID's refusal is about its
            // content (422) or another order for the same person (409).
            GatewayError::BankId(b) => match b.status() {
                Some(400) if b.code() == Some(&bankbridge_bankid::ErrorCode::AlreadyInProgress) => {
                    ApiError::new(StatusCode::CONFLICT, "bankid_refused", msg)
                }
                Some(400) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "bankid_refused", msg),
                _ if matches!(b, bankbridge_bankid::BankIdError::InvalidRequest(_)) => {
                    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", msg)
                }
                _ => ApiError::new(StatusCode::BAD_GATEWAY, "bankid_unavailable", msg),
            },
        }
    }
}

/// Start an auth or sign order. Needs scope `write`.
#[utoipa::path(post, path = "/api/v1/bankid/orders", tag = "bankid", request_body = CreateOrder,
    responses((status = 201, body = OrderView), (status = 400, body = ErrorBody),
        (status = 409, description = "`bankid_refused`: an order for this person is already in progress at BankID", body = ErrorBody),
        (status = 422, description = "`unprocessable`: BankID's rules refuse what the request says (a personal number's date or check digit, text too long once encoded, a sign order without text, an end_user_ip that is not an address); `bankid_refused`: BankID itself refused it (invalidParameters)", body = ErrorBody),
        (status = 429, description = "`bankid_too_many_orders`: the server's cap on pending orders (`serve --bankid-max-pending`)", body = ErrorBody),
        (status = 502, description = "BankID did not answer", body = ErrorBody),
        (status = 503, description = "`bankid_not_configured`, `bankid_busy`", body = ErrorBody)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    Extension(who): Extension<std::sync::Arc<crate::Principal>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateOrder>,
) -> Result<Response, ApiError> {
    let gw = gateway(&state)?;
    let sign = match body.kind.as_str() {
        "auth" => false,
        "sign" => true,
        _ => {
            return Err(ApiError::invalid_parameter(
                "type",
                "type must be auth or sign",
            ));
        }
    };
    if let Some(pn) = &body.personal_number
        && !(pn.len() == 12 && pn.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(ApiError::invalid_parameter(
            "personal_number",
            "personal_number must be 12 digits (YYYYMMDDNNNC)",
        ));
    }
    let peer_ip = peer.as_ref().map(|Extension(ConnectInfo(addr))| addr.ip());
    let ip = match &body.end_user_ip {
        Some(given) if who.scope.allows(Scope::Admin) => given.parse().map_err(|_| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unprocessable",
                "end_user_ip must be an IPv4 or IPv6 address",
            )
        })?,
        Some(_) => {
            return Err(ApiError::forbidden(
                "only an admin token may state end_user_ip; others get the address of the connection",
            ));
        }
        None => {
            let peer = peer_ip.unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
            let forwarded: Vec<&str> = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            end_user_ip(peer, &forwarded, &state.config.trusted_proxies)
        }
    };
    let started = gw
        .start(
            OrderParams {
                sign,
                personal_number: body.personal_number,
                user_visible_data: body.user_visible_data,
                markdown: body.markdown,
                user_non_visible_data: body.user_non_visible_data,
                return_url: body.return_url,
            },
            ip,
        )
        .await?;
    tracing::info!(order = %started.id, sign, "BankID order started");
    let origin = super::origin(&state, peer_ip, &headers);
    let view = OrderView {
        events_url: format!(
            "{origin}/api/v1/bankid/orders/{}/events?key={}",
            started.id, started.events_key
        ),
        cancel_url: format!("{origin}/api/v1/bankid/orders/{}/cancel", started.id),
        id: started.id,
        order_ref: started.order_ref,
        auto_start_token: started.auto_start_token,
        autostart_url: started.autostart_url,
    };
    Ok(json(StatusCode::CREATED, &view, 400))
}

fn state_view(s: &OrderState) -> OrderStateView {
    OrderStateView {
        status: status_name(&s.status).to_owned(),
        qr: s.qr.clone(),
        hint: s.hint.clone(),
        user_message: s.user_message.as_ref().map(user_message_view),
        completion: s
            .completion
            .as_ref()
            .and_then(|c| serde_json::to_value(c).ok()),
        message: s.message.clone(),
    }
}

fn status_name(s: &OrderStatus) -> &'static str {
    match s {
        OrderStatus::Pending => "pending",
        OrderStatus::Complete => "complete",
        OrderStatus::Failed => "failed",
        OrderStatus::Cancelled => "cancelled",
        OrderStatus::Error => "error",
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!(
        "no BankID order {id} (finished orders are kept 10 minutes)"
    ))
}

/// An order's state now (for callers that poll instead of following events). Needs scope `read`.
#[utoipa::path(get, path = "/api/v1/bankid/orders/{id}", tag = "bankid",
    params(("id" = String, Path)),
    responses((status = 200, body = OrderStateView), (status = 404, body = ErrorBody)))]
pub(crate) async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let rx = gateway(&state)?
        .subscribe(&id)
        .await
        .ok_or_else(|| not_found(&id))?;
    let view = state_view(&rx.borrow());
    Ok(json(StatusCode::OK, &view, 600))
}

#[derive(Debug, Deserialize, IntoParams)]
pub(crate) struct EventsParams {
    /// The order's events key (from `events_url`); instead of a bearer token.
    key: Option<String>,
}

/// Server-sent events of an order: `qr` (data to draw, each second while
/// pending), `hint` (`{"hint", "user_message"}`), then one of `complete`
/// (completionData), `failed` (`{"hint", "user_message"}`), `cancelled` or
/// `error` (`{"message", "user_message"}`), and the
/// stream ends. The current state is sent first. Needs the order's events key
/// or a token with scope `read`.
#[utoipa::path(get, path = "/api/v1/bankid/orders/{id}/events", tag = "bankid",
    params(("id" = String, Path), EventsParams),
    responses((status = 200, description = "text/event-stream"), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, description = "`too_many_streams`: the server's cap on open event streams", body = ErrorBody)))]
pub(crate) async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<EventsParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let gw = gateway(&state)?;
    may_follow(&state, gw, &id, params.key.as_deref(), &headers).await?;
    let rx = gw.subscribe(&id).await.ok_or_else(|| not_found(&id))?;
    let permit = state
        .event_streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_streams",
                format!(
                    "{} event streams are open already (this server's limit); poll \
                 GET /api/v1/bankid/orders/{id} instead, or try again shortly",
                    state.config.max_event_streams
                ),
            )
        })?;
    Ok(Sse::new(event_stream(rx, permit))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// Whether the caller may follow order `id`: its events key, or a token with
/// scope `read` (a browser's `<img>` or `EventSource` sends no header).
async fn may_follow(
    state: &AppState,
    gw: &BankIdGateway,
    id: &str,
    key: Option<&str>,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    if let Some(k) = key
        && gw.events_key_matches(id, k).await
    {
        return Ok(());
    }
    let principal = state
        .auth
        .authenticate(&state.store.tokens, headers)
        .await?;
    if !principal.scope.allows(Scope::Read) {
        return Err(ApiError::forbidden(
            "following BankID orders needs scope read",
        ));
    }
    Ok(())
}

/// The QR code to show now, drawn as SVG, for web apps that draw none
/// themselves: reload it each second while the order is pending (its data
/// changes every second). Needs the order's events key or scope `read`.
#[utoipa::path(get, path = "/api/v1/bankid/orders/{id}/qr.svg", tag = "bankid",
    params(("id" = String, Path), EventsParams),
    responses(
        (status = 200, description = "The current QR code", content_type = "image/svg+xml", body = String),
        (status = 401, body = ErrorBody),
        (status = 404, description = "No such order, or it shows no QR code now (not pending, or a phone order)", body = ErrorBody)))]
pub(crate) async fn qr_svg(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<EventsParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let gw = gateway(&state)?;
    may_follow(&state, gw, &id, params.key.as_deref(), &headers).await?;
    let rx = gw.subscribe(&id).await.ok_or_else(|| not_found(&id))?;
    let (qr, status) = {
        let s = rx.borrow();
        (s.qr.clone(), status_name(&s.status))
    };
    let Some(qr) = qr else {
        return Err(ApiError::not_found(format!(
            "order {id} shows no QR code now (it is {status})"
        )));
    };
    let mut res = bankbridge_bankid::qr::render_svg(&qr).into_response();
    let h = res.headers_mut();
    h.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("image/svg+xml"),
    );
    h.insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(res)
}

/// The order's changes as SSE events, ending after the outcome. The stream
/// holds its `permit` (a place under the server's cap) until it ends.
fn event_stream(
    rx: watch::Receiver<OrderState>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> impl Stream<Item = Result<Event, Infallible>> {
    struct Cursor {
        rx: watch::Receiver<OrderState>,
        last: Option<OrderState>,
        done: bool,
        _permit: tokio::sync::OwnedSemaphorePermit,
    }
    futures::stream::unfold(
        Cursor {
            rx,
            last: None,
            done: false,
            _permit: permit,
        },
        |mut c| async move {
            if c.done {
                return None;
            }
            // The first round sends the state as it is; later rounds wait for a change.
            if c.last.is_some() && c.rx.changed().await.is_err() {
                // The driver is gone without an outcome: say so once.
                c.done = true;
                let e = Event::default()
                    .event("error")
                    .data(r#"{"message":"the order's driver stopped"}"#);
                return Some((futures::stream::iter(vec![Ok(e)]), c));
            }
            let now = c.rx.borrow_and_update().clone();
            let mut out = Vec::new();
            let prev = c.last.as_ref();
            if now.hint.is_some()
                && prev.and_then(|p| p.hint.as_ref()) != now.hint.as_ref()
                && now.status == OrderStatus::Pending
            {
                out.push(Event::default().event("hint").data(
                    serde_json::json!({"hint": now.hint, "user_message": now.user_message})
                        .to_string(),
                ));
            }
            if let Some(qr) = &now.qr
                && prev.and_then(|p| p.qr.as_ref()) != Some(qr)
            {
                out.push(Event::default().event("qr").data(qr.clone()));
            }
            match now.status {
                OrderStatus::Pending => {}
                OrderStatus::Complete => {
                    let data = now
                        .completion
                        .as_ref()
                        .and_then(|d| serde_json::to_string(d).ok())
                        .unwrap_or_else(|| "{}".into());
                    out.push(Event::default().event("complete").data(data));
                    c.done = true;
                }
                OrderStatus::Failed => {
                    out.push(Event::default().event("failed").data(
                        serde_json::json!({"hint": now.hint, "user_message": now.user_message})
                            .to_string(),
                    ));
                    c.done = true;
                }
                OrderStatus::Cancelled | OrderStatus::Error => {
                    out.push(
                        Event::default().event(status_name(&now.status)).data(
                            serde_json::json!({"message": now.message, "user_message": now.user_message})
                                .to_string(),
                        ),
                    );
                    c.done = true;
                }
            }
            c.last = Some(now);
            Some((
                futures::stream::iter(out.into_iter().map(Ok).collect::<Vec<_>>()),
                c,
            ))
        },
    )
    .flatten()
}

/// Cancel an order. Needs scope `write`.
#[utoipa::path(post, path = "/api/v1/bankid/orders/{id}/cancel", tag = "bankid",
    params(("id" = String, Path)),
    responses((status = 202, description = "Cancelling; the events end with `cancelled`"), (status = 404, body = ErrorBody)))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !gateway(&state)?.cancel(&id).await {
        return Err(not_found(&id));
    }
    Ok(StatusCode::ACCEPTED)
}
