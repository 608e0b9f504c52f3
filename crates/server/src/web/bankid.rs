//! `/bankid`: start a BankID auth or sign order and watch it: the animated
//! QR code (new data each second, drawn on the server), BankID's
//! recommended message for each hint, and the result. The live part is a
//! fragment `live.js` swaps in each second; without script the page
//! reloads itself each second.
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use bankbridge_store::Scope;
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;

use super::form::{NoFields, PageError, PageResult, Posted};
use super::layout;
use super::session::Viewer;
use crate::AppState;
use crate::bankid_gateway::{BankIdGateway, OrderParams, OrderState, OrderStatus, end_user_ip};

fn gateway(state: &AppState) -> Result<&BankIdGateway, PageError> {
    state.bankid.get().ok_or_else(|| {
        PageError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "This server has no BankID relying-party certificate: start it with the --bankid-* options.",
        )
    })
}

pub(crate) async fn page(State(state): State<AppState>, viewer: Viewer) -> PageResult {
    let body = html! {
        @if state.bankid.get().is_none() {
            p.empty { "BankID is off: start the server with " code { "--bankid-url" } " and its certificate options (or "
                code { "--bankid-sandbox URL" } " for the simulator)." }
        } @else if !viewer.allows(Scope::Write) {
            p.empty { "Starting a BankID order needs a token with scope write." }
        } @else {
            (start_form(&viewer, None))
        }
    };
    Ok(layout::page(&viewer, "/bankid", "BankID", body).into_response())
}

fn start_form(viewer: &Viewer, problem: Option<&str>) -> Markup {
    html! {
        @if let Some(p) = problem { p.error role="alert" { (p) } }
        form.card method="post" action="/bankid" {
            input type="hidden" name="csrf" value=(viewer.csrf);
            fieldset {
                legend { "What the person does" }
                label { input type="radio" name="type" value="auth" checked; " Identify themselves (auth)" }
                label { input type="radio" name="type" value="sign" ; " Sign a text (sign)" }
            }
            label for="text" { "Text shown in the BankID app (needed to sign)" }
            textarea #text name="text" rows="3" maxlength="1500" {}
            label for="personal_number" { "Only this person may answer (12 digits, optional)" }
            input #personal_number name="personal_number" type="text" inputmode="numeric" pattern="[0-9]{12}";
            button type="submit" { "Start" }
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct StartForm {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    personal_number: String,
}

/// `POST /bankid` (write): start an order for the person at this browser.
pub(crate) async fn start(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: axum::http::HeaderMap,
    Posted { viewer, form }: Posted<StartForm>,
) -> PageResult {
    viewer.require(Scope::Write)?;
    let gw = gateway(&state)?;
    let sign = match form.kind.as_str() {
        "auth" => false,
        "sign" => true,
        _ => {
            let body = start_form(
                &viewer,
                Some("Choose whether the person identifies themselves or signs."),
            );
            return Ok((
                StatusCode::BAD_REQUEST,
                layout::page(&viewer, "/bankid", "BankID", body),
            )
                .into_response());
        }
    };
    let text = form.text.trim();
    let pn = form.personal_number.trim();
    let params = OrderParams {
        sign,
        personal_number: (!pn.is_empty()).then(|| pn.to_owned()),
        user_visible_data: (!text.is_empty()).then(|| text.to_owned()),
        ..Default::default()
    };
    let peer = peer
        .map(|Extension(ConnectInfo(a))| a.ip())
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let ip = end_user_ip(peer, &forwarded, &state.config.trusted_proxies);
    match gw.start(params, ip).await {
        Ok(order) => {
            tracing::info!(order = %order.id, sign, by = %viewer.principal.token_name, "BankID order started in the dashboard");
            Ok(Redirect::to(&format!("/bankid/orders/{}", order.id)).into_response())
        }
        Err(e) => {
            let e = crate::error::ApiError::from(e);
            let body = start_form(&viewer, Some(&e.message));
            Ok((e.status, layout::page(&viewer, "/bankid", "BankID", body)).into_response())
        }
    }
}

/// `GET /bankid/orders/{id}`.
pub(crate) async fn order(
    State(state): State<AppState>,
    Path(id): Path<String>,
    viewer: Viewer,
) -> PageResult {
    let gw = gateway(&state)?;
    let (live, done) = fragment_of(gw, &id).await?;
    let order_ref = gw.order_ref(&id).await.unwrap_or_default();
    let body = html! {
        (live)
        @if viewer.allows(Scope::Write) && !done {
            form method="post" action={"/bankid/orders/" (id) "/cancel"} {
                input type="hidden" name="csrf" value=(viewer.csrf);
                button.secondary type="submit" { "Cancel the order" }
            }
        }
        p.hint { "BankID order reference " code #order-ref { (order_ref) } }
        p { a href="/bankid" { "Start another order" } }
        script src="/assets/live.js" defer {}
    };
    Ok(layout::page_refreshing(
        &viewer,
        "/bankid",
        "BankID order",
        body,
        (!done).then_some(1),
    )
    .into_response())
}

/// `GET /bankid/orders/{id}/live`.
pub(crate) async fn live(
    State(state): State<AppState>,
    Path(id): Path<String>,
    _viewer: Viewer,
) -> PageResult {
    Ok(fragment_of(gateway(&state)?, &id).await?.0.into_response())
}

async fn fragment_of(gw: &BankIdGateway, id: &str) -> Result<(Markup, bool), PageError> {
    let rx = gw.subscribe(id).await.ok_or_else(|| {
        PageError::not_found(format!(
            "There is no BankID order {id} (finished orders are kept 10 minutes)."
        ))
    })?;
    let s: OrderState = rx.borrow().clone();
    let done = s.status != OrderStatus::Pending;
    Ok((fragment(id, &s, done), done))
}

fn fragment(id: &str, s: &OrderState, done: bool) -> Markup {
    let status = match s.status {
        OrderStatus::Pending => "waiting for the person",
        OrderStatus::Complete => "complete",
        OrderStatus::Failed => "failed",
        OrderStatus::Cancelled => "cancelled",
        OrderStatus::Error => "error",
    };
    html! {
        section #live data-src={"/bankid/orders/" (id) "/live"} data-every="1000" data-done[done] aria-live="polite" {
            p.big { "Status: " span class={"bankid-" (status.replace(' ', "-"))} { (status) } }
            @if let Some(m) = &s.user_message {
                p.notice { (m.en) br; span.hint lang="sv" { (m.sv) } }
            }
            @if let Some(qr) = &s.qr {
                // Our own renderer's SVG: markup we make, holding only the QR's modules.
                figure.qr data-qr=(qr) {
                    (PreEscaped(inline_svg(&bankbridge_bankid::qr::render_svg(qr))))
                    figcaption { "Scan with the BankID app. The code changes every second." }
                }
            }
            @if let Some(c) = &s.completion {
                dl.facts {
                    dt { "Name" } dd #bankid-name { (c.user.name) }
                    dt { "Personal number" } dd { (c.user.personal_number) }
                    dt { "BankID issued" } dd { (c.bank_id_issue_date) }
                }
            }
            @if let Some(m) = &s.message { p.error role="alert" { (m) } }
        }
    }
}

/// An SVG document as an element of the page: without its XML prolog.
pub(crate) fn inline_svg(doc: &str) -> &str {
    doc.find("<svg").map_or(doc, |at| &doc[at..])
}

/// `POST /bankid/orders/{id}/cancel` (write).
pub(crate) async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted { viewer, .. }: Posted<NoFields>,
) -> PageResult {
    viewer.require(Scope::Write)?;
    gateway(&state)?.cancel(&id).await;
    Ok(Redirect::to(&format!("/bankid/orders/{id}")).into_response())
}
