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

/// A signed-in client and the CSRF token of its session.
async fn signed_in(s: &TestServer, scope: Scope) -> (reqwest::Client, String) {
    let client = browser();
    let token = s.token(scope).await;
    sign_in(s, &client, &token).await;
    let page = client
        .get(s.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = csrf_of(&page);
    (client, csrf)
}

async fn post_form(
    s: &TestServer,
    client: &reqwest::Client,
    path: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    client
        .post(s.url(path))
        .header("Sec-Fetch-Site", "same-origin")
        .form(fields)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_creates_a_token_once_and_a_read_session_cannot_reach_admin_actions() {
    let s = TestServer::start().await;
    let (admin, csrf) = signed_in(&s, Scope::Admin).await;
    let res = post_form(
        &s,
        &admin,
        "/tokens",
        &[
            ("csrf", &csrf),
            ("name", "airtable"),
            ("scope", "read"),
            ("location", ""),
            ("expires", "90"),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let page = res.text().await.unwrap();
    let at = page.find("value=\"bb_").expect("the new token, shown once") + 7;
    let plain = page[at..].split('"').next().unwrap().to_owned();
    // It works as an API token, and the list never shows it again.
    let accounts = s.get("/api/v1/accounts", &plain).await;
    assert_eq!(accounts.status(), StatusCode::OK);
    let list = admin
        .get(s.url("/tokens"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(list.contains("airtable") && !list.contains(&plain));
    // The same name again is said on the page.
    let res = post_form(
        &s,
        &admin,
        "/tokens",
        &[
            ("csrf", &csrf),
            ("name", "airtable"),
            ("scope", "read"),
            ("expires", "never"),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert!(res.text().await.unwrap().contains("exists already"));

    // A read session: no Tokens link, and the admin URLs answer 403.
    let (reader, reader_csrf) = signed_in(&s, Scope::Read).await;
    let overview = reader
        .get(s.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!overview.contains("href=\"/tokens\""));
    let res = reader.get(s.url("/tokens")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("needs a token with scope admin")
    );
    let id = bankbridge_server::auth::token_id(&plain)
        .unwrap()
        .to_owned();
    let res = post_form(
        &s,
        &reader,
        &format!("/tokens/{id}/revoke"),
        &[("csrf", &reader_csrf)],
    )
    .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        s.get("/api/v1/accounts", &plain).await.status(),
        StatusCode::OK,
        "not revoked"
    );
    let res = post_form(
        &s,
        &reader,
        "/tokens",
        &[
            ("csrf", &reader_csrf),
            ("scope", "admin"),
            ("expires", "never"),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    // The admin revokes it: the API refuses it at once (new token, no cache).
    let res = post_form(
        &s,
        &admin,
        &format!("/tokens/{id}/revoke"),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(location(&res), "/tokens");
    assert_eq!(
        s.get("/api/v1/accounts", &plain).await.status(),
        StatusCode::UNAUTHORIZED
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_time_link_signs_in_once() {
    let s = TestServer::start().await;
    let token = s.token(Scope::Read).await;
    let id = bankbridge_server::auth::token_id(&token)
        .unwrap()
        .to_owned();
    let secret = bankbridge_server::auth::new_login_link(s.store.as_ref(), &id)
        .await
        .unwrap();
    let client = browser();
    // Opening the link only asks: a link preview does not spend it.
    let page = client
        .get(s.url(&format!("/login/link/{}", secret.expose())))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("action=\"/login/link\""));
    let use_link = |client: reqwest::Client| {
        let s = &s;
        let secret = secret.expose().clone();
        async move {
            client
                .post(s.url("/login/link"))
                .header("Sec-Fetch-Site", "same-origin")
                .form(&[("secret", secret.as_str())])
                .send()
                .await
                .unwrap()
        }
    };
    let res = use_link(client.clone()).await;
    assert_eq!(location(&res), "/");
    assert_eq!(
        client.get(s.url("/")).send().await.unwrap().status(),
        StatusCode::OK
    );
    // Twice: refused.
    let other = browser();
    let res = use_link(other.clone()).await;
    assert_eq!(location(&res), "/login?error=link");
    assert_eq!(
        location(&other.get(s.url("/")).send().await.unwrap()),
        "/login"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_added_in_the_page_syncs_after_the_person_types_the_code() {
    let s = TestServer::start().await;
    let (client, csrf) = signed_in(&s, Scope::Admin).await;
    let page = client
        .get(s.url("/connections"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("No bank connections yet"));
    // A bad name is said on the page, and nothing is added.
    let bad = post_form(
        &s,
        &client,
        "/connections",
        &[
            ("csrf", &csrf),
            ("name", "<script>"),
            ("connector", "otp"),
            ("base_url", "http://127.0.0.1:1"),
            ("username", "me"),
            ("password", common::FAKE_PASSWORD),
            ("since", ""),
            ("interval", ""),
        ],
    )
    .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let text = bad.text().await.unwrap();
    assert!(text.contains("role=\"alert\"") && !text.contains("<script>"));
    assert!(s.store.list_connections().await.unwrap().is_empty());

    let res = post_form(
        &s,
        &client,
        "/connections",
        &[
            ("csrf", &csrf),
            ("name", "otp-bank"),
            ("connector", "otp"),
            ("base_url", "http://127.0.0.1:1"),
            ("username", "me"),
            ("password", common::FAKE_PASSWORD),
            ("since", ""),
            ("interval", "86400"),
        ],
    )
    .await;
    let at = location(&res).to_owned();
    assert!(at.starts_with("/connections/"), "{at}");
    let page = client
        .get(s.url(&at))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("never synced") && page.contains("due now"));
    assert!(
        !page.contains(common::FAKE_PASSWORD),
        "the password is never shown"
    );

    // Sync now: the job page asks for the bank's one-time code.
    let res = post_form(&s, &client, &format!("{at}/sync"), &[("csrf", &csrf)]).await;
    let job = location(&res).to_owned();
    assert!(job.starts_with("/syncs/"), "{job}");
    let (live, question) = question_of(&s, &client, &job).await;
    assert!(live.contains("SMS to +359"), "{live}");
    let res = post_form(
        &s,
        &client,
        &format!("{job}/answer"),
        &[
            ("csrf", &csrf),
            ("question", &question),
            ("answer", "code"),
            ("code", common::FAKE_OTP),
        ],
    )
    .await;
    assert_eq!(location(&res), job);
    let done = finished(&s, &client, &job).await;
    assert!(done.contains("status-succeeded"), "{done}");
    assert!(done.contains("3 new"), "{done}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_sets_a_category_by_hand_with_a_write_session_only() {
    let s = TestServer::start().await;
    let (_conn, [acc, _]) = seed(s.store.as_ref(), 4).await;
    let rows = s
        .store
        .query_transactions(&bankbridge_store::TxQuery {
            account_id: Some(acc),
            ..Default::default()
        })
        .await
        .unwrap();
    // A booked payment, so it counts as spending on the overview.
    let row = rows
        .iter()
        .find(|r| r.status == bankbridge_core::TxStatus::Booked && r.amount.is_sign_negative())
        .expect("a booked payment")
        .clone();
    let id = row.id;
    let (reader, reader_csrf) = signed_in(&s, Scope::Read).await;
    let page = reader
        .get(s.url("/transactions"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !page.contains("/category\""),
        "no category forms for a read session"
    );
    let res = post_form(
        &s,
        &reader,
        &format!("/transactions/{id}/category"),
        &[
            ("csrf", &reader_csrf),
            ("category", "gifts"),
            ("back", "/transactions"),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);

    let (writer, csrf) = signed_in(&s, Scope::Write).await;
    let overview = |client: reqwest::Client| {
        let url = s.url("/?from=2000-01-01");
        async move { client.get(url).send().await.unwrap().text().await.unwrap() }
    };
    assert!(!overview(writer.clone()).await.contains("gifts"));
    let back = format!("/transactions?account={acc}");
    let res = post_form(
        &s,
        &writer,
        &format!("/transactions/{id}/category"),
        &[("csrf", &csrf), ("category", " gifts "), ("back", &back)],
    )
    .await;
    assert_eq!(location(&res), back, "back to the same filtered page");
    let api = s
        .get_json(
            &format!("/api/v1/transactions?account={acc}&category=gifts"),
            &s.token(Scope::Read).await,
        )
        .await;
    assert_eq!(api["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        api["data"][0]["label"],
        row.label.as_str(),
        "bank fields unchanged"
    );
    // The overview's sums follow at once (they are kept only while nothing changed).
    assert!(overview(writer.clone()).await.contains("gifts"));
    // Elsewhere than our pages is never a way back.
    let res = post_form(
        &s,
        &writer,
        &format!("/transactions/{id}/category"),
        &[
            ("csrf", &csrf),
            ("category", ""),
            ("back", "https://evil.example/"),
        ],
    )
    .await;
    assert_eq!(location(&res), "/transactions");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_sums_follow_a_sync() {
    let s = TestServer::start().await;
    // Rows of 2024 only: nothing in the last 12 months yet.
    seed(s.store.as_ref(), 10).await;
    let (client, csrf) = signed_in(&s, Scope::Write).await;
    let page = client
        .get(s.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("No booked transactions in the last 12 months"));
    let job = add_and_sync(&s, &client, &csrf, "fake").await;
    let live = finished(&s, &client, &job).await;
    assert!(live.contains("status-succeeded"), "{live}");
    // The fake bank's salary (1200.00, five days ago) is in its month's bar.
    let salary_month = (Utc::now() - chrono::Duration::days(5))
        .format("%Y-%m")
        .to_string();
    let page = client
        .get(s.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&format!("{salary_month} in: 1200 EUR")),
        "{page}"
    );
    // An edit re-sums only its month (the accounts are the same): the same sums.
    let salary = s
        .store
        .query_transactions(&bankbridge_store::TxQuery {
            text: Some("salary".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .remove(0);
    post_form(
        &s,
        &client,
        &format!("/transactions/{}/category", salary.id),
        &[
            ("csrf", &csrf),
            ("category", "income"),
            ("back", "/transactions"),
        ],
    )
    .await;
    let again = client
        .get(s.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(again.contains(&format!("{salary_month} in: 1200 EUR")));
    assert!(
        again.contains("4.5 EUR") || again.contains("-4.5"),
        "the coffee is still out"
    );
    s.shutdown().await;
}

/// Add a connection of `connector` through the page and sync it now: the
/// job's page path.
async fn add_and_sync(
    s: &TestServer,
    client: &reqwest::Client,
    csrf: &str,
    connector: &str,
) -> String {
    let res = post_form(
        s,
        client,
        "/connections",
        &[
            ("csrf", csrf),
            ("name", &format!("{connector}-bank")),
            ("connector", connector),
            ("base_url", "http://127.0.0.1:1"),
            ("username", "me"),
            ("password", common::FAKE_PASSWORD),
            ("since", ""),
            ("interval", ""),
        ],
    )
    .await;
    let at = location(&res).to_owned();
    assert!(at.starts_with("/connections/"), "{at}");
    let res = post_form(s, client, &format!("{at}/sync"), &[("csrf", csrf)]).await;
    location(&res).to_owned()
}

/// The live fragment of `job` once it shows a question: (fragment, number).
async fn question_of(s: &TestServer, client: &reqwest::Client, job: &str) -> (String, String) {
    loop {
        let live = client
            .get(s.url(&format!("{job}/live")))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if let Some(i) = live.find("name=\"question\" value=\"") {
            let n = live[i + 23..].split('"').next().unwrap().to_owned();
            return (live, n);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn finished(s: &TestServer, client: &reqwest::Client, job: &str) -> String {
    loop {
        let live = client
            .get(s.url(&format!("{job}/live")))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if live.contains("data-done") {
            return live;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_card_answers_the_banks_card_reader_question() {
    use bankbridge_cap::transport::VirtualReaders;
    use bankbridge_cap::virtual_card::{Profile, VirtualCard, VirtualCardConfig};
    let readers = VirtualReaders::new();
    readers.insert(
        "Reader W",
        Box::new(VirtualCard::new(VirtualCardConfig::new(Profile::CapBe, "1234")).unwrap()),
    );
    let s =
        TestServer::start_with_readers(ServerConfig::default(), Some(std::sync::Arc::new(readers)))
            .await;
    let (client, csrf) = signed_in(&s, Scope::Admin).await;
    let res = post_form(
        &s,
        &client,
        "/cards/institutions",
        &[("csrf", &csrf), ("name", "Test Bank"), ("country", "")],
    )
    .await;
    assert_eq!(location(&res), "/cards");
    let institution = s.store.list_institutions().await.unwrap().remove(0).id;
    let res = post_form(
        &s,
        &client,
        "/cards",
        &[
            ("csrf", &csrf),
            ("institution", &institution),
            ("reader", "Reader W"),
            ("label", "team card"),
            ("account_reference", "BE68 5390 0754 7034"),
            ("pin", "1234"),
            ("min_pin_tries", "3"),
        ],
    )
    .await;
    let card_page = location(&res).to_owned();
    assert!(
        card_page.starts_with(&format!("/cards/{institution}/")),
        "{card_page}"
    );
    let card = card_page.rsplit('/').next().unwrap().to_owned();

    let job = add_and_sync(&s, &client, &csrf, "card").await;
    let (live, number) = question_of(&s, &client, &job).await;
    assert!(
        live.contains(common::FAKE_CHALLENGE),
        "the bank's challenge is shown"
    );
    assert!(
        live.contains("team card (Reader W)"),
        "the registered card is offered"
    );
    let res = post_form(
        &s,
        &client,
        &format!("{job}/answer"),
        &[
            ("csrf", &csrf),
            ("question", &number),
            ("answer", "card"),
            ("card", &format!("{institution}/{card}")),
        ],
    )
    .await;
    assert_eq!(location(&res), job);
    let done = finished(&s, &client, &job).await;
    assert!(done.contains("status-succeeded"), "{done}");
    // The card's use is in the audit, under the person's token.
    let audit = client
        .get(s.url("/cards/audit"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        audit.contains("login code") && audit.contains(">ok<"),
        "{audit}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_followed_and_a_declined_question_fails_the_sync() {
    let s = TestServer::start().await;
    let (client, csrf) = signed_in(&s, Scope::Write).await;
    let job = add_and_sync(&s, &client, &csrf, "redirect").await;
    let (live, number) = question_of(&s, &client, &job).await;
    assert!(live.contains("href=\"https://bank.example/sca/approve?id=42\""));
    assert!(live.contains("rel=\"noopener noreferrer\""));
    post_form(
        &s,
        &client,
        &format!("{job}/answer"),
        &[
            ("csrf", &csrf),
            ("question", &number),
            ("answer", "approved"),
        ],
    )
    .await;
    assert!(
        finished(&s, &client, &job)
            .await
            .contains("status-succeeded")
    );

    // Declined: the sync fails and says so; nothing waits any more.
    let res = post_form(&s, &client, "/connections/1/sync", &[("csrf", &csrf)]).await;
    let again = location(&res).to_owned();
    let (_, number) = question_of(&s, &client, &again).await;
    post_form(
        &s,
        &client,
        &format!("{again}/answer"),
        &[
            ("csrf", &csrf),
            ("question", &number),
            ("answer", "decline"),
        ],
    )
    .await;
    let done = finished(&s, &client, &again).await;
    assert!(
        done.contains("status-failed") || done.contains("status-needs_user"),
        "{done}"
    );
    let res = post_form(
        &s,
        &client,
        &format!("{again}/answer"),
        &[
            ("csrf", &csrf),
            ("question", &number),
            ("answer", "approved"),
        ],
    )
    .await;
    assert_eq!(res.status(), StatusCode::CONFLICT, "the sync is over");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_added_on_the_page_keeps_its_settings_and_refuses_an_unknown_card() {
    let s = TestServer::start().await;
    let (client, csrf) = signed_in(&s, Scope::Write).await;
    let form = |card: &'static str, options: &'static str| {
        vec![
            ("csrf", csrf.clone()),
            ("name", "psd2".to_owned()),
            ("connector", "fake".to_owned()),
            ("base_url", "http://127.0.0.1:1".to_owned()),
            ("username", "me".to_owned()),
            ("password", common::FAKE_PASSWORD.to_owned()),
            ("since", String::new()),
            ("interval", String::new()),
            ("sca_card", card.to_owned()),
            ("options", options.to_owned()),
        ]
    };
    let post = |fields: Vec<(&'static str, String)>| {
        client.post(s.url("/connections")).form(&fields).send()
    };
    let res = post(form("", "not a setting")).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.text().await.unwrap().contains("is not KEY=VALUE"));
    let res = post(form("card-nope", "")).await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(
        s.store.list_connections().await.unwrap().is_empty(),
        "nothing stored"
    );
    let res = post(form("", "bank = sandbox-be\n\nconsent_days=30\n"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let stored = s.store.find_connection("psd2").await.unwrap().unwrap();
    assert_eq!(stored.settings["options"]["bank"], "sandbox-be");
    assert_eq!(stored.settings["options"]["consent_days"], "30");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_back_from_the_banks_page_lets_the_sync_go_on() {
    let s = TestServer::start().await;
    let (client, csrf) = signed_in(&s, Scope::Write).await;
    let job = add_and_sync(&s, &client, &csrf, "redirect").await;
    question_of(&s, &client, &job).await;
    // What the bank's redirect does: the browser comes to the callback.
    let id = job.trim_start_matches("/syncs/");
    let res = client
        .get(s.url(&format!("/sca/callback/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), job, "back to the job's page");
    assert!(
        finished(&s, &client, &job)
            .await
            .contains("status-succeeded")
    );
    // A stray visit later answers nothing and shows the job.
    let res = browser()
        .get(s.url(&format!("/sca/callback/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banks_bankid_order_shows_its_qr_code_until_approved() {
    let s = TestServer::start().await;
    let (client, csrf) = signed_in(&s, Scope::Write).await;
    let job = add_and_sync(&s, &client, &csrf, "bankid").await;
    let live = loop {
        let live = client
            .get(s.url(&format!("{job}/live")))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if live.contains("data-qr") {
            break live;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        live.contains("data-qr=\"bankid.67df3917-fa0d-44e5-b327-edcc928297f8."),
        "{live}"
    );
    assert!(live.contains("<svg"), "the QR code is drawn");
    assert!(
        live.contains("bankid:///?autostarttoken=7c40b5c9-fa74-49cf-b98c-bfe651f9a7c6"),
        "{live}"
    );
    assert!(
        !live.contains("d28db9a7"),
        "the QR secret never reaches the page"
    );
    let done = finished(&s, &client, &job).await;
    assert!(done.contains("status-succeeded"), "{done}");
    assert!(
        !done.contains("data-qr"),
        "the code goes once the bank accepted"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_removes_a_connection_and_a_write_session_cannot() {
    let s = TestServer::start().await;
    let (writer, wcsrf) = signed_in(&s, Scope::Write).await;
    let job = add_and_sync(&s, &writer, &wcsrf, "fake").await;
    assert!(
        finished(&s, &writer, &job)
            .await
            .contains("status-succeeded")
    );
    let res = post_form(&s, &writer, "/connections/1/remove", &[("csrf", &wcsrf)]).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(s.store.list_connections().await.unwrap().len(), 1);
    let page = writer
        .get(s.url("/connections/1"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains("/remove\""), "no remove button for write");

    let (admin, acsrf) = signed_in(&s, Scope::Admin).await;
    let page = admin
        .get(s.url("/connections/1"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("/remove\"") && page.contains("User name"));
    let res = post_form(&s, &admin, "/connections/1/remove", &[("csrf", &acsrf)]).await;
    assert_eq!(location(&res), "/connections");
    assert!(s.store.list_connections().await.unwrap().is_empty());
    assert!(
        s.store.list_accounts(None).await.unwrap().is_empty(),
        "its accounts went too"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_agents_token_cannot_open_the_dashboard() {
    let s = TestServer::start().await;
    seed(s.store.as_ref(), 4).await;
    let agent = s.token_at(Scope::Agent, Some("eu-west")).await;
    let client = browser();
    let res = sign_in(&s, &client, &agent).await;
    assert_eq!(location(&res), "/login?error=agent");
    assert!(res.headers().get("set-cookie").is_none());
    for path in [
        "/",
        "/transactions",
        "/transactions/export?format=csv",
        "/documents",
    ] {
        let res = client.get(s.url(path)).send().await.unwrap();
        assert_eq!(location(&res), "/login", "{path}");
    }
    // Nor through a one-time link.
    let id = bankbridge_server::auth::token_id(&agent)
        .unwrap()
        .to_owned();
    let secret = bankbridge_server::auth::new_login_link(s.store.as_ref(), &id)
        .await
        .unwrap();
    let res = client
        .post(s.url("/login/link"))
        .header("Sec-Fetch-Site", "same-origin")
        .form(&[("secret", secret.expose().as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(location(&res), "/login?error=token");
    assert_eq!(
        location(&client.get(s.url("/")).send().await.unwrap()),
        "/login"
    );
    s.shutdown().await;
}
