//! The frame every dashboard page shares: head, navigation, sign-out, and
//! the small formatting rules a reader relies on (money right-aligned with
//! its currency, dates as YYYY-MM-DD, instants in UTC).
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bankbridge_store::Scope;
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};

use super::session::Viewer;

/// The stylesheet, shipped in the binary.
const STYLE: &str = include_str!("style.css");
/// The one script: live updates (a sync's progress, a BankID order's QR).
const LIVE_JS: &str = include_str!("live.js");

/// `GET /assets/style.css`.
pub(crate) async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        STYLE,
    )
        .into_response()
}

/// `GET /assets/live.js`.
pub(crate) async fn live_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        LIVE_JS,
    )
        .into_response()
}

/// Pages of the navigation, in order: (path, label, scope needed).
const NAV: [(&str, &str, Scope); 8] = [
    ("/", "Overview", Scope::Read),
    ("/transactions", "Transactions", Scope::Read),
    ("/connections", "Connections", Scope::Read),
    ("/documents", "Documents", Scope::Read),
    ("/cards", "Cards", Scope::Admin),
    ("/checks", "Checks", Scope::Read),
    ("/bankid", "BankID", Scope::Read),
    ("/tokens", "Tokens", Scope::Admin),
];

/// The head; with `refresh`, a page that reloads itself every that many
/// seconds when script is off (with script, `live.js` updates it in place).
fn head(title: &str, refresh: Option<u32>) -> Markup {
    html! {
        (DOCTYPE)
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · bankbridge" }
            link rel="stylesheet" href="/assets/style.css";
            @if let Some(secs) = refresh {
                noscript { meta http-equiv="refresh" content=(secs); }
            }
        }
    }
}

/// A signed-in page: navigation, the page's title and its body.
pub(crate) fn page(viewer: &Viewer, active: &str, title: &str, body: Markup) -> Markup {
    page_refreshing(viewer, active, title, body, None)
}

/// [`page`], reloading itself every `refresh` seconds without script.
pub(crate) fn page_refreshing(
    viewer: &Viewer,
    active: &str,
    title: &str,
    body: Markup,
    refresh: Option<u32>,
) -> Markup {
    html! {
        html lang="en" {
            (head(title, refresh))
            body {
                header.top {
                    a.brand href="/" { "bankbridge" }
                    nav aria-label="Pages" {
                        ul {
                            @for (path, label, scope) in NAV {
                                @if viewer.principal.scope.allows(scope) {
                                    li {
                                        a href=(path) aria-current=[(path == active).then_some("page")] { (label) }
                                    }
                                }
                            }
                        }
                    }
                    form.signout method="post" action="/logout" {
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        span.who { (viewer.principal.token_name) " (" (viewer.principal.scope.as_str()) ")" }
                        button type="submit" { "Sign out" }
                    }
                }
                main id="main" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page without navigation (sign-in).
pub(crate) fn bare(title: &str, body: Markup) -> Markup {
    html! {
        html lang="en" {
            (head(title, None))
            body.bare {
                main id="main" { (body) }
            }
        }
    }
}

pub(crate) fn login(problem: Option<&str>) -> Markup {
    html! {
        h1 { "Sign in to bankbridge" }
        @if let Some(p) = problem {
            p.error role="alert" { (p) }
        }
        form.card method="post" action="/login" {
            label for="token" { "API token" }
            input id="token" name="token" type="password" autocomplete="off" required
                placeholder="bb_…" spellcheck="false";
            p.hint { "Create one with " code { "bankbridge token create --scope read" } "." }
            button type="submit" { "Sign in" }
        }
    }
}

/// A form post that did not come from our own page.
pub(crate) fn refused() -> Response {
    (
        StatusCode::FORBIDDEN,
        bare(
            "Refused",
            html! {
                h1 { "Refused" }
                p.error role="alert" {
                    "This form did not come from a bankbridge page (or its page is too old). "
                    "Nothing was changed. Go back, reload the page and try again."
                }
            },
        ),
    )
        .into_response()
}

/// An amount right-aligned with its currency: `-12.30 EUR`.
pub(crate) fn money(amount: &str, currency: &str) -> Markup {
    let negative = amount.starts_with('-');
    html! {
        span.money.neg[negative] { (amount) " " span.ccy { (currency) } }
    }
}

/// An instant in UTC, minute precision, with the exact value on hover.
pub(crate) fn instant(t: &DateTime<Utc>) -> Markup {
    html! {
        time datetime=(t.to_rfc3339()) title=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M")) " UTC" }
    }
}

/// A secret just made, shown this once in a read-only field (API tokens,
/// SimpleFIN tokens): the page that shows it is sent `no-store`.
pub(crate) fn shown_once(
    heading: &str,
    note: &str,
    field_id: &str,
    label: &str,
    value: &str,
) -> Markup {
    html! {
        section.notice role="status" aria-labelledby="shown-once" {
            h2 id="shown-once" { (heading) }
            p { (note) }
            label for=(field_id) { (label) }
            input id=(field_id) type="text" readonly value=(value) spellcheck="false" autocomplete="off";
        }
    }
}
