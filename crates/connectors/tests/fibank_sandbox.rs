//! The Fibank connector against the simulated Fibank over loopback HTTP.
use std::collections::HashSet;
use std::time::Duration;

use bankbridge_connectors::FibankConnector;
use bankbridge_core::{
    BalanceKind, ConnectionSettings, Connector, ConnectorError, Credentials, DateWindow,
    FetchedAccount, Secret, TransientKind, TxStatus,
};
use bankbridge_sandbox::{FaultConfig, FaultKind, SandboxConfig, SandboxHandle};
use chrono::{Days, NaiveDate};
use rust_decimal::Decimal;

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 6, 15).unwrap()
}

async fn sandbox(seed: u64) -> SandboxHandle {
    bankbridge_sandbox::spawn(SandboxConfig {
        seed,
        accounts: 2,
        transactions: 150,
        years: 1,
        today: Some(today()),
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox starts")
}

fn connector(sb: &SandboxHandle, password: Option<&str>) -> FibankConnector {
    let creds = sb.credentials();
    let settings = ConnectionSettings::new(sb.base_url(), creds.username);
    let password = password.map(str::to_owned).unwrap_or(creds.password);
    FibankConnector::new(&settings, Credentials::with_password(Secret::new(password)))
        .expect("connector builds")
        .with_timeout(Duration::from_secs(20))
}

fn windows(from: NaiveDate, to: NaiveDate, days: u64) -> Vec<DateWindow> {
    let mut out = Vec::new();
    let mut start = from;
    while start <= to {
        let end = start.checked_add_days(Days::new(days - 1)).unwrap().min(to);
        out.push(DateWindow::new(start, end));
        start = end.succ_opt().unwrap();
    }
    out
}

#[tokio::test]
async fn a_full_sync_matches_the_sandbox_truth() {
    let sb = sandbox(7).await;
    let mut c = connector(&sb, None);
    assert_eq!(c.limits().max_window_days, Some(30));
    c.login().await.expect("login");
    let accounts = c.accounts().await.expect("accounts");
    let truth = sb.truth();
    assert_eq!(accounts.len(), truth.len());
    assert_eq!(accounts[0].currency.as_str(), "BGN");
    assert_eq!(accounts[1].currency.as_str(), "EUR");

    let mut seen_ids = HashSet::new();
    for (account, t) in accounts.iter().zip(&truth) {
        assert_eq!(account.provider_id, t.iban);
        assert_eq!(
            account.iban.as_ref().map(|i| i.to_string()).as_deref(),
            Some(t.iban.as_str())
        );
        let (mut count, mut sum, mut pending, mut pending_sum) =
            (0u64, Decimal::ZERO, 0u64, Decimal::ZERO);
        let mut last_close = None;
        for w in windows(NaiveDate::from_ymd_opt(2023, 1, 1).unwrap(), today(), 30) {
            let page = c.window(account, w).await.expect("window");
            let open = page
                .balances
                .iter()
                .find(|b| b.kind == BalanceKind::OpeningBooked)
                .expect("OP");
            let close = page
                .balances
                .iter()
                .find(|b| b.kind == BalanceKind::ClosingBooked)
                .expect("CL");
            assert_eq!(open.reference_date, w.from);
            assert_eq!(close.reference_date, w.to);
            if let Some(prev) = last_close {
                assert_eq!(open.amount, prev, "balances chain across windows");
            }
            let mut running = open.amount;
            for tx in &page.transactions {
                assert!(w.contains(tx.booking_date), "{tx:?} outside {w}");
                assert_eq!(tx.currency, account.currency);
                assert!(
                    seen_ids.insert(tx.provider_id.clone().unwrap()),
                    "ids are unique bank-wide"
                );
                match tx.status {
                    TxStatus::Booked => {
                        count += 1;
                        sum += tx.amount;
                        running += tx.amount;
                        assert_eq!(tx.running_balance, Some(running));
                    }
                    _ => {
                        pending += 1;
                        pending_sum += tx.amount;
                    }
                }
            }
            assert_eq!(running, close.amount);
            last_close = Some(close.amount);
        }
        assert_eq!(count, t.booked_count, "{}", t.iban);
        assert_eq!(sum, t.booked_sum.parse::<Decimal>().unwrap(), "{}", t.iban);
        assert_eq!(pending, t.pending_count);
        assert_eq!(pending_sum, t.pending_sum.parse::<Decimal>().unwrap());
        assert_eq!(last_close.unwrap(), t.balance.parse::<Decimal>().unwrap());
    }
    sb.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_wrong_password_is_invalid_credentials() {
    let sb = sandbox(1).await;
    let mut c = connector(&sb, Some("not-the-password"));
    match c.login().await {
        Err(ConnectorError::InvalidCredentials(m)) => assert!(m.contains("login"), "{m}"),
        other => panic!("expected InvalidCredentials, got {other:?}"),
    }
    assert!(c.session_state().is_none());
}

#[tokio::test]
async fn a_long_window_is_refused_when_the_bank_caps_ranges() {
    let sb = sandbox(2).await;
    sb.fibank().set_max_range_days(Some(10));
    let mut c = connector(&sb, None);
    c.login().await.unwrap();
    let account = c.accounts().await.unwrap().remove(0);
    let w = DateWindow::new(
        NaiveDate::from_ymd_opt(2024, 5, 1).unwrap(),
        NaiveDate::from_ymd_opt(2024, 5, 30).unwrap(),
    );
    match c.window(&account, w).await {
        Err(ConnectorError::WindowRefused { window, message }) => {
            assert_eq!(window, w);
            assert!(message.contains("10"), "{message}");
        }
        other => panic!("expected WindowRefused, got {other:?}"),
    }
    let short = DateWindow::new(w.from, w.from.checked_add_days(Days::new(9)).unwrap());
    c.window(&account, short)
        .await
        .expect("a 10-day window is served");
}

async fn logged_in(sb: &SandboxHandle) -> (FibankConnector, FetchedAccount) {
    let mut c = connector(sb, None);
    c.login().await.unwrap();
    let account = c.accounts().await.unwrap().remove(0);
    (c, account)
}

fn last_month() -> DateWindow {
    DateWindow::new(today().checked_sub_days(Days::new(29)).unwrap(), today())
}

#[tokio::test]
async fn injected_faults_map_to_typed_errors() {
    let sb = sandbox(3).await;
    let (mut c, account) = logged_in(&sb).await;

    sb.fibank()
        .set_fault(FaultConfig::always(FaultKind::ServerError))
        .unwrap();
    match c.window(&account, last_month()).await {
        Err(ConnectorError::Transient {
            kind: TransientKind::Server(s),
            ..
        }) => assert!([500, 502, 503].contains(&s)),
        other => panic!("expected a server error, got {other:?}"),
    }

    sb.fibank()
        .set_fault(FaultConfig::always(FaultKind::RateLimited))
        .unwrap();
    let e = c.accounts().await.unwrap_err();
    assert!(
        matches!(
            e,
            ConnectorError::Transient {
                kind: TransientKind::RateLimited,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));

    sb.fibank()
        .set_fault(FaultConfig::always(FaultKind::Truncated))
        .unwrap();
    let e = c.window(&account, last_month()).await.unwrap_err();
    assert!(
        matches!(
            e,
            ConnectorError::Transient {
                kind: TransientKind::Truncated,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.is_transient());

    sb.fibank()
        .set_fault(FaultConfig::always(FaultKind::Malformed))
        .unwrap();
    for e in [
        c.window(&account, last_month()).await.unwrap_err(),
        c.accounts().await.unwrap_err(),
    ] {
        assert!(matches!(e, ConnectorError::Malformed { .. }), "{e:?}");
    }

    sb.fibank()
        .set_fault(FaultConfig::always(FaultKind::BadIban))
        .unwrap();
    match c.accounts().await {
        Err(ConnectorError::Malformed { what, detail }) => {
            assert_eq!(what, "getFilteredAccounts");
            assert!(detail.contains("BG"), "the IBAN is named: {detail}");
        }
        other => panic!("expected Malformed, got {other:?}"),
    }

    // Faults are random per request: at a partial rate, retries get through.
    sb.fibank()
        .set_fault(FaultConfig {
            fault_rate: 0.5,
            ..FaultConfig::default()
        })
        .unwrap();
    let mut ok = 0;
    for _ in 0..40 {
        match c.window(&account, last_month()).await {
            Ok(_) => ok += 1,
            Err(e) => assert!(e.is_transient(), "{e:?}"),
        }
    }
    assert!(ok > 0 && ok < 40, "{ok} of 40 succeeded");
}

#[tokio::test]
async fn an_expired_token_is_session_expired_and_login_again_works() {
    let sb = sandbox(4).await;
    // getCustQuery during login, getFilteredAccounts and GetCustBal use up
    // the token: the window's blocked-amounts query meets it expired.
    sb.fibank()
        .set_fault(FaultConfig {
            session_ttl_requests: Some(3),
            ..FaultConfig::default()
        })
        .unwrap();
    let (mut c, account) = logged_in(&sb).await;
    let e = c.window(&account, last_month()).await.unwrap_err();
    assert!(matches!(e, ConnectorError::SessionExpired), "{e:?}");
    c.login().await.expect("a new dance");
    c.window(&account, last_month())
        .await
        .expect("works after re-login");

    sb.fibank()
        .set_fault(FaultConfig {
            session_ttl_secs: Some(0),
            ..FaultConfig::default()
        })
        .unwrap();
    let mut c = connector(&sb, None);
    // The login's own getCustQuery already meets the expired token.
    assert!(matches!(
        c.login().await,
        Err(ConnectorError::SessionExpired)
    ));
}

#[tokio::test]
async fn a_restored_session_skips_the_dance_until_rejected() {
    let sb = sandbox(5).await;
    let (c, _) = logged_in(&sb).await;
    let state = c.session_state().expect("a session to keep");
    drop(c);

    // A wrong password proves the restored token is used without logging in.
    let mut later = connector(&sb, Some("wrong"));
    later.restore_session(state);
    later.login().await.expect("restored session reused");
    let accounts = later
        .accounts()
        .await
        .expect("accounts with the restored token");
    assert_eq!(accounts.len(), 2);

    sb.fibank()
        .set_fault(FaultConfig {
            session_ttl_requests: Some(0),
            ..FaultConfig::default()
        })
        .unwrap();
    assert!(matches!(
        later.accounts().await,
        Err(ConnectorError::SessionExpired)
    ));
    // Now login must dance, and the wrong password shows.
    assert!(matches!(
        later.login().await,
        Err(ConnectorError::InvalidCredentials(_))
    ));
}

#[tokio::test]
async fn pending_items_book_under_new_ids_as_the_clock_moves() {
    let sb = sandbox(6).await;
    let (mut c, account) = logged_in(&sb).await;
    let w = DateWindow::new(today().checked_sub_days(Days::new(10)).unwrap(), today());
    let before = c.window(&account, w).await.unwrap();
    let pending: Vec<_> = before
        .transactions
        .iter()
        .filter(|t| t.status == TxStatus::Pending)
        .cloned()
        .collect();
    assert!(!pending.is_empty(), "recent card payments are pending");

    sb.fibank().advance(6);
    // A later sync: a connector reads the holds once per run.
    let (mut c, account) = logged_in(&sb).await;
    let w2 = DateWindow::new(w.from, w.to.checked_add_days(Days::new(6)).unwrap());
    let after = c.window(&account, w2).await.unwrap();
    let ids: HashSet<_> = after
        .transactions
        .iter()
        .map(|t| t.provider_id.clone())
        .collect();
    let mut booked_matches = 0;
    for p in &pending {
        assert!(
            !ids.contains(&p.provider_id),
            "a pending id never turns into a booked id"
        );
        if after.transactions.iter().any(|t| {
            t.status == TxStatus::Booked
                && t.amount == p.amount
                && t.raw_label == p.raw_label
                && t.value_date == Some(p.booking_date)
                && (1..=3).contains(&(t.booking_date - p.booking_date).num_days())
        }) {
            booked_matches += 1;
        }
    }
    assert!(
        booked_matches > 0,
        "pending items booked after the clock moved"
    );
}

#[tokio::test]
async fn slow_and_unreachable_banks_are_transient() {
    let sb = sandbox(8).await;
    let (c, account) = logged_in(&sb).await;
    let mut c = c.with_timeout(Duration::from_millis(200));
    // with_timeout builds a new client: the session (a bearer token) survives it.
    sb.fibank()
        .set_fault(FaultConfig {
            latency_ms: 1_000,
            ..FaultConfig::default()
        })
        .unwrap();
    let e = c.window(&account, last_month()).await.unwrap_err();
    assert!(
        matches!(
            e,
            ConnectorError::Transient {
                kind: TransientKind::Timeout,
                ..
            }
        ),
        "{e:?}"
    );

    // Nothing listens on the sandbox's port once it is shut down.
    let settings = ConnectionSettings::new(sb.base_url(), "demo");
    sb.shutdown().await.unwrap();
    let mut gone =
        FibankConnector::new(&settings, Credentials::with_password(Secret::from("x"))).unwrap();
    let e = gone.login().await.unwrap_err();
    assert!(
        matches!(
            e,
            ConnectorError::Transient {
                kind: TransientKind::Network,
                ..
            }
        ),
        "{e:?}"
    );
}

/// A bank (or whatever answers at its address) that sends the login form
/// somewhere else: the connector refuses to follow, so the session and the
/// token in the redirect never reach another host. A minimal HTTP/1 server
/// on loopback plays the bank; the redirect names 127.0.0.2, another host.
#[tokio::test]
async fn a_redirect_to_another_host_is_not_followed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = served.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let line = head.lines().next().unwrap_or("").to_owned();
                log.lock().unwrap().push(line.clone());
                let answer = if line.starts_with("POST /oauth2-server/login") {
                    "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.2:9/oauth2-server/oauth/authorize?x=1\r\n\
                     Content-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_owned()
                } else {
                    let body =
                        "<html><head>\n<meta name=\"_csrf\" content=\"c-1\" />\n</head></html>";
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
                         Connection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    let settings = ConnectionSettings::new(format!("http://127.0.0.1:{port}"), "jdoe");
    let mut c = FibankConnector::new(
        &settings,
        Credentials::with_password(Secret::new("pw".to_owned())),
    )
    .unwrap()
    .with_timeout(Duration::from_secs(5));
    let err = c.login().await.unwrap_err();
    assert!(
        matches!(&err, ConnectorError::Malformed { detail, .. } if detail.contains("another host")),
        "{err:?}"
    );
    let lines = served.lock().unwrap().clone();
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("POST /oauth2-server/login"),
        "nothing followed the redirect: {lines:?}"
    );
}

#[test]
fn only_https_or_loopback_base_urls() {
    let creds = || Credentials::with_password(Secret::new("pw".to_owned()));
    for url in [
        "http://my.fibank.bg",
        "http://10.1.2.3:8080",
        "ftp://127.0.0.1",
    ] {
        let err = FibankConnector::new(&ConnectionSettings::new(url, "jdoe"), creds()).unwrap_err();
        assert!(
            err.contains("https") || err.contains("only"),
            "{url}: {err}"
        );
    }
    for url in [
        "https://my.fibank.bg",
        "http://127.0.0.1:9000/fibank",
        "http://[::1]:9",
    ] {
        FibankConnector::new(&ConnectionSettings::new(url, "jdoe"), creds())
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    }
}
