//! The dashboard over HTTP: sign-in, sessions, CSRF, scopes, escaping.
//! (Pages as a person uses them are driven in Chromium by `tests/browser`.)
mod common;

use std::time::Duration;

use bankbridge_server::ServerConfig;
use bankbridge_store::Scope;
use chrono::Utc;
use common::{TestServer, seed};
use reqwest::StatusCode;
use reqwest::redirect::Policy;

/// A browser-like client: keeps cookies, does not follow redirects (so the
/// tests see them).
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn sign_in(s: &TestServer, client: &reqwest::Client, token: &str) -> reqwest::Response {
    client
        .post(s.url("/login"))
        .header("Sec-Fetch-Site", "same-origin")
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
}

fn location(res: &reqwest::Response) -> &str {
    res.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The CSRF token a page's sign-out form carries.
fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    page[at..].split('"').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_signs_in_and_the_cookie_is_locked_down() {
    let s = TestServer::start().await;
    let client = browser();
    let res = client.get(s.url("/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/login");

    let res = sign_in(&s, &client, "bb_nothing_like_a_token").await;
    assert_eq!(location(&res), "/login?error=token");
    let page = client
        .get(s.url("/login?error=token"))
        .send()
        .await
        .unwrap();
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("That token is not valid")
    );

    let token = s.token(Scope::Read).await;
    let res = sign_in(&s, &client, &token).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/");
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    for part in ["bb_session=", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert!(!cookie.contains(&token), "the cookie is not the token");
    let res = client.get(s.url("/")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("frame-ancestors 'none'"));
    let page = res.text().await.unwrap();
    assert!(page.contains("Overview") && page.contains("No accounts yet"));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_tls_the_cookie_is_secure() {
    let s = TestServer::start_with(ServerConfig {
        secure_cookies: true,
        ..ServerConfig::default()
    })
    .await;
    let token = s.token(Scope::Read).await;
    let res = sign_in(&s, &browser(), &token).await;
    assert!(
        res.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("; Secure")
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_post_is_refused() {
    let s = TestServer::start().await;
    let client = browser();
    let token = s.token(Scope::Read).await;
    // Signing in from another site's form does nothing.
    let res = client
        .post(s.url("/login"))
        .header("Sec-Fetch-Site", "cross-site")
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(location(&res), "/login?error=site");
    assert!(res.headers().get("set-cookie").is_none());

    sign_in(&s, &client, &token).await;
    let page = client
        .get(s.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = csrf_of(&page);
    // Another site posts the sign-out form: refused, session kept.
    for (site, sent) in [("cross-site", csrf.as_str()), ("same-origin", "forged")] {
        let res = client
            .post(s.url("/logout"))
            .header("Sec-Fetch-Site", site)
            .form(&[("csrf", sent)])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{site}");
        assert!(res.text().await.unwrap().contains("Nothing was changed"));
        let still = client.get(s.url("/")).send().await.unwrap();
        assert_eq!(still.status(), StatusCode::OK);
    }
    // Our own form signs out.
    let res = client
        .post(s.url("/logout"))
        .header("Sec-Fetch-Site", "same-origin")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(location(&res), "/login");
    let res = client.get(s.url("/")).send().await.unwrap();
    assert_eq!(location(&res), "/login");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_ends_its_session_within_seconds() {
    let s = TestServer::start_with(ServerConfig {
        token_cache_ttl: Duration::from_millis(300),
        ..ServerConfig::default()
    })
    .await;
    let client = browser();
    let token = s.token(Scope::Admin).await;
    sign_in(&s, &client, &token).await;
    assert_eq!(
        client.get(s.url("/")).send().await.unwrap().status(),
        StatusCode::OK
    );
    let id = bankbridge_server::auth::token_id(&token)
        .unwrap()
        .to_owned();
    s.store.revoke_token(&id, Utc::now()).await.unwrap();
    let started = std::time::Instant::now();
    loop {
        let res = client.get(s.url("/")).send().await.unwrap();
        if res.status() == StatusCode::SEE_OTHER {
            assert_eq!(location(&res), "/login");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the session outlived its token"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_text_shows_as_text_and_exports_keep_the_filters() {
    let s = TestServer::start().await;
    let (_conn, [acc, _]) = seed(s.store.as_ref(), 40).await;
    let client = browser();
    let token = s.token(Scope::Read).await;
    sign_in(&s, &client, &token).await;
    let page = client
        .get(s.url(&format!(
            "/transactions?account={acc}&from=&text=&order=desc"
        )))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The seeded counterparty is `Shop "Ünïcode" & <Co> N, Ltd`.
    assert!(
        page.contains("Shop &quot;Ünïcode&quot; &amp; &lt;Co&gt;"),
        "escaped"
    );
    assert!(!page.contains("<Co>"));
    let export = format!("/transactions/export?account={acc}&amp;format=csv");
    assert!(
        page.contains(&export),
        "the CSV link keeps the account filter"
    );
    let csv = client
        .get(s.url(&format!("/transactions/export?account={acc}&format=csv")))
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), StatusCode::OK);
    let text = csv.text().await.unwrap();
    // Records end in CRLF; a quoted remittance holds a bare LF.
    assert_eq!(
        text.matches("\r\n").count(),
        1 + 20,
        "a header and the account's 20 rows"
    );
    // A bad filter is said on the page, not as a JSON error.
    let res = client
        .get(s.url("/transactions?min_amount=lots"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap().contains("role=\"alert\""));
    s.shutdown().await;
}
