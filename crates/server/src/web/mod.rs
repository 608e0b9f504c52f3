//! The dashboard `serve` shows at `/`: server-rendered HTML (maud, checked
//! at compile time), one embedded stylesheet, no script needed to read.
//! A person signs in with an API token ([`session`]); pages call the same
//! store and services as the API's handlers, and stay as thin.
use axum::Router;
use axum::routing::{get, post};

use crate::AppState;

mod charts;
mod connections;
mod form;
mod layout;
mod overview;
pub(crate) mod session;
mod syncs;
mod tokens;
mod transactions;

pub(crate) use session::Sessions;

/// What the dashboard keeps in the server's state.
#[derive(Default)]
pub(crate) struct Web {
    pub sessions: Sessions,
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
        .route("/syncs/{id}", get(syncs::page))
        .route("/syncs/{id}/live", get(syncs::fragment))
        .route("/syncs/{id}/answer", post(syncs::answer))
        .route("/assets/style.css", get(layout::style))
        .route("/assets/live.js", get(layout::live_js))
        .layer(axum::middleware::map_response(page_headers))
}

/// What every dashboard answer carries: no script or style from elsewhere,
/// no framing by another site, no content sniffing, no referrer leaving.
async fn page_headers(mut res: axum::response::Response) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    res
}
