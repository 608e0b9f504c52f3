//! The dashboard `serve` shows at `/`: server-rendered HTML (maud, checked
//! at compile time), one embedded stylesheet, no script needed to read.
//! A person signs in with an API token ([`session`]); pages call the same
//! store and services as the API's handlers, and stay as thin.
use axum::Router;
use axum::routing::{get, post};

use crate::AppState;

mod bankid;
mod cards;
mod charts;
mod checks;
mod connections;
mod documents;
mod form;
mod layout;
mod overview;
pub(crate) mod session;
mod simplefin;
mod syncs;
mod tokens;
mod transactions;

pub(crate) use session::Sessions;

/// What the dashboard keeps in the server's state.
#[derive(Default)]
pub(crate) struct Web {
    pub sessions: Sessions,
    /// The overview's spending sums, while the transactions under them are unchanged.
    pub flows: overview::FlowCache,
    /// The overview's monthly sums, month by month.
    pub months: overview::MonthSums,
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(overview::page))
        .route("/login", get(session::login_form).post(session::login))
        .route("/login/link/{secret}", get(session::link_form))
        .route("/login/link", post(session::link))
        .route("/logout", post(session::logout))
        .route("/tokens", get(tokens::page).post(tokens::create))
        .route("/tokens/{id}/revoke", post(tokens::revoke))
        .route(
            "/tokens/simplefin",
            get(simplefin::page).post(simplefin::create),
        )
        .route("/tokens/simplefin/{id}/revoke", post(simplefin::revoke))
        .route("/transactions", get(transactions::page))
        .route("/transactions/export", get(transactions::export))
        .route(
            "/transactions/{id}/category",
            post(transactions::set_category),
        )
        .route(
            "/connections",
            get(connections::page).post(connections::create),
        )
        .route(
            "/connections/{id}",
            get(connections::show).post(connections::update),
        )
        .route("/connections/{id}/remove", post(connections::remove))
        .route("/connections/{id}/sync", post(connections::sync))
        .route("/cards", get(cards::page).post(cards::add_card))
        .route("/cards/institutions", post(cards::add_institution))
        .route("/cards/audit", get(cards::audit))
        .route(
            "/cards/{institution}/{card}",
            get(cards::show).post(cards::edit),
        )
        .route(
            "/cards/{institution}/{card}/status",
            post(cards::set_status),
        )
        .route("/cards/{institution}/{card}/test", post(cards::test_login))
        .route("/checks", get(checks::page))
        .route("/checks/{id}", get(checks::show))
        .route("/checks/{id}/run", post(checks::run_now))
        .route("/runs/{id}", get(checks::run))
        .route("/bankid", get(bankid::page).post(bankid::start))
        .route("/bankid/orders/{id}", get(bankid::order))
        .route("/bankid/orders/{id}/live", get(bankid::live))
        .route("/bankid/orders/{id}/cancel", post(bankid::cancel))
        .route("/documents", get(documents::page))
        .route("/documents/{id}", get(documents::show))
        .route("/documents/{id}/file", get(documents::file))
        .route("/syncs/{id}", get(syncs::page))
        .route("/syncs/{id}/live", get(syncs::fragment))
        .route("/syncs/{id}/answer", post(syncs::answer))
        .route("/sca/callback/{id}", get(syncs::redirect_callback))
        .route("/assets/style.css", get(layout::style))
        .route("/assets/live.js", get(layout::live_js))
        .layer(axum::middleware::map_response(page_headers))
}

/// What every dashboard answer carries: no script or style from elsewhere,
/// no framing by another site, no content sniffing, no referrer leaving.
async fn page_headers(mut res: axum::response::Response) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let h = res.headers_mut();
    // A handler's own policy stands (a statement shown inline sets one).
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::X_FRAME_OPTIONS)
        .or_insert(HeaderValue::from_static("DENY"));
    res
}
