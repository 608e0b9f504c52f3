//! End to end: `bankbridge sandbox` serves the BankID simulator over mutual
//! TLS; `bankbridge bankid auth` follows an order while the simulated user
//! (`bankbridge bankid user …`) scans its QR and approves; and the gateway in
//! `bankbridge serve` streams an order's events to a web app.
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use serde_json::{Value, json};

const PERSON: &str = "199001011239";

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Lines of a child's stderr, as they come.
fn stderr_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let err = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in err.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_line(rx: &mpsc::Receiver<String>, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with(prefix) => return line,
            Ok(_) => {}
            Err(e) => panic!("no line starting {prefix:?}: {e}"),
        }
    }
}

#[test]
fn cli_auth_with_the_simulated_user_scanning_and_approving() {
    let env = Env::sqlite();
    let (_sandbox, root) = env.bankid_sandbox();
    let mut auth = env
        .command(&[
            "bankid",
            "auth",
            "--sandbox",
            &root,
            "--personal-number",
            PERSON,
            "--no-qr",
            "--poll",
            "1",
            "--deadline",
            "60",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut auth);
    let started = wait_line(&lines, "order ");
    let order_ref = started.split_whitespace().nth(1).unwrap().to_owned();
    let qr = wait_line(&lines, "qr: ")
        .trim_start_matches("qr: ")
        .to_owned();
    assert!(qr.starts_with("bankid."), "{qr}");
    // A forged QR (its last hex digit changed) is refused by the simulated app.
    let last = if qr.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{last}", &qr[..qr.len() - 1]);
    let out = env.run(&["bankid", "user", "scan", &forged, "--sandbox", &root]);
    assert!(!out.status.success(), "a forged QR was accepted");
    // The real one, fresh: scan it, then approve.
    let qr = wait_line(&lines, "qr: ")
        .trim_start_matches("qr: ")
        .to_owned();
    env.run_ok(&["bankid", "user", "scan", &qr, "--sandbox", &root]);
    env.run_ok(&[
        "bankid",
        "user",
        "approve",
        &order_ref,
        "--personal-number",
        PERSON,
        "--sandbox",
        &root,
    ]);
    let out = auth.wait_with_output().unwrap();
    assert!(out.status.success());
    let completion: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(completion["user"]["personalNumber"], PERSON);
    assert!(
        completion["signature"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
}

#[test]
fn cli_collect_and_cancel() {
    let env = Env::sqlite();
    let (_sandbox, root) = env.bankid_sandbox();
    let mut auth = env
        .command(&["bankid", "auth", "--sandbox", &root, "--no-qr"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = stderr_lines(&mut auth);
    let order_ref = wait_line(&lines, "order ")
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned();
    let collected: Value =
        serde_json::from_str(&env.run_ok(&["bankid", "collect", &order_ref, "--sandbox", &root]))
            .unwrap();
    assert_eq!(collected["status"], "pending");
    assert_eq!(collected["hintCode"], "outstandingTransaction");
    env.run_ok(&["bankid", "cancel", &order_ref, "--sandbox", &root]);
    // The following `auth` sees the order gone: it ends as cancelled (an
    // outcome, in words), not as BankID's HTTP error.
    let out = auth.wait_with_output().unwrap();
    assert!(!out.status.success());
    let said: Vec<String> = lines.iter().collect();
    let said = said.join("\n");
    assert!(
        said.contains("Open the BankID app") && said.contains("(outstandingTransaction)"),
        "hints in words: {said}"
    );
    assert!(said.contains("cancelled: "), "{said}");
    assert!(
        !said.contains("HTTP 400") && !said.contains("error:"),
        "{said}"
    );
    // Cancelling twice is refused by BankID (invalidParameters), clearly.
    let out = env.run(&["bankid", "cancel", &order_ref, "--sandbox", &root]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalidParameters"), "{stderr}");
}

/// `serve` with the BankID gateway on the sandbox at `root`, once it answers;
/// its log goes to serve.log in the data folder.
async fn serve_gateway(env: &Env, root: &str, extra: &[&str]) -> (KillOnDrop, String) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["serve", "--listen", &listen, "--bankid-sandbox", root];
    args.extend_from_slice(extra);
    let log = std::fs::File::create(env.home.path().join("serve.log")).unwrap();
    let server = KillOnDrop(Some(
        env.command(&args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    ));
    let base = format!("http://{listen}");
    let http = reqwest::Client::new();
    let started = Instant::now();
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (server, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_streams_an_order_to_completion_and_refuses_bad_input() {
    let env = Env::sqlite();
    let (_sandbox, root) = env.bankid_sandbox();
    env.run_ok(&["init"]);
    let token = env
        .run_ok(&["token", "create", "--scope", "write", "--name", "webapp"])
        .trim()
        .to_owned();
    let (_server, base) = serve_gateway(&env, &root, &["--trusted-proxy", "127.0.0.1"]).await;
    let http = reqwest::Client::new();
    let orders = format!("{base}/api/v1/bankid/orders");

    // Bad input: the documented errors, never a 500. A request of the
    // documented shape that BankID's own rules refuse (a check digit, a sign
    // order without text, text too long once encoded) gets 422.
    for (body, status) in [
        (
            json!({"type": "auth", "personal_number": "199001011238"}),
            422,
        ),
        (
            json!({"type": "auth", "personal_number": "1990-0101-1239"}),
            400,
        ),
        (json!({"type": "sign"}), 422),
        (
            json!({"type": "sign", "user_visible_data": "x".repeat(40_000)}),
            422,
        ),
        (json!({"type": "hug"}), 400),
        (json!({"type": "auth", "colour": "red"}), 400),
    ] {
        let res = http
            .post(&orders)
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), status, "{body}");
        let err: Value = res.json().await.unwrap();
        assert!(err["code"].is_string(), "{err}");
    }
    let res = http
        .post(&orders)
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("type=auth")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    let res = http
        .get(format!("{base}/api/v1/bankid/orders/0000/events"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);

    // A sign order for a user behind a trusted proxy.
    let res = http
        .post(&orders)
        .bearer_auth(&token)
        .header("x-forwarded-for", "203.0.113.9")
        .json(&json!({"type": "sign", "user_visible_data": "Pay 100 SEK to Alice", "personal_number": PERSON}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let order: Value = res.json().await.unwrap();
    // Absolute: a web app hands it to the browser as is.
    let events_url = order["events_url"].as_str().unwrap().to_owned();
    assert!(
        events_url.starts_with(&format!("{base}/api/v1/")),
        "{events_url}"
    );
    // The current QR code as SVG, for a web app that draws none (the events
    // key is enough, as for an <img>); it changes every second.
    let key = events_url.split("key=").nth(1).unwrap().to_owned();
    let qr_url = format!(
        "{base}/api/v1/bankid/orders/{}/qr.svg?key={key}",
        order["id"].as_str().unwrap()
    );
    let res = http.get(&qr_url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/svg+xml");
    assert_eq!(res.headers()["cache-control"], "no-store");
    let svg = res.text().await.unwrap();
    assert!(svg.contains("<svg") && svg.contains("</svg>"), "{svg}");
    let res = http
        .get(format!(
            "{base}/api/v1/bankid/orders/{}/qr.svg?key=nope",
            order["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // The browser's way: the events URL alone, no token.
    let mut hints_with_words = 0;
    let res = http.get(&events_url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let mut stream = res.bytes_stream();
    let mut buf = String::new();
    let mut scanned = false;
    let mut approved = false;
    let control = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let completion: Value = loop {
        assert!(
            Instant::now() < deadline,
            "no completion; events so far:\n{buf}"
        );
        let chunk = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("an event within 30 s")
            .expect("the stream goes on")
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        let mut done = None;
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let name = event
                .lines()
                .find_map(|l| l.strip_prefix("event:"))
                .map(str::trim)
                .unwrap_or("");
            let data: String = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim)
                .collect();
            match name {
                "qr" if !scanned => {
                    let r = control
                        .post(format!("{root}/_sandbox/bankid/scan"))
                        .json(&json!({"qrData": data}))
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
                    scanned = true;
                }
                "hint"
                    if {
                        // Every hint comes with what to tell the user, in both languages.
                        let v: Value = serde_json::from_str(&data).unwrap();
                        let m = &v["user_message"];
                        assert!(
                            m["rfa"].as_u64().is_some()
                                && m["en"].is_string()
                                && m["sv"].is_string(),
                            "{data}"
                        );
                        hints_with_words += 1;
                        false
                    } => {}
                "hint" if scanned && !approved && data.contains("userSign") => {
                    assert!(data.contains("\"rfa\":9"), "{data}");
                    let r = control
                        .post(format!(
                            "{root}/_sandbox/bankid/orders/{}/approve",
                            order["order_ref"].as_str().unwrap()
                        ))
                        .json(&json!({"personalNumber": PERSON}))
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
                    approved = true;
                }
                "complete" => done = Some(serde_json::from_str(&data).unwrap()),
                "failed" | "error" | "cancelled" => panic!("{name}: {data}"),
                _ => {}
            }
        }
        if let Some(c) = done {
            break c;
        }
    };
    assert_eq!(completion["user"]["personalNumber"], PERSON);
    assert_eq!(completion["device"]["ipAddress"], "203.0.113.9");
    assert!(hints_with_words >= 1);

    // Cancel: the events end with `cancelled`.
    let res = http
        .post(&orders)
        .bearer_auth(&token)
        .json(&json!({"type": "auth"}))
        .send()
        .await
        .unwrap();
    let order: Value = res.json().await.unwrap();
    let res = http
        .post(order["cancel_url"].as_str().unwrap())
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let text = tokio::time::timeout(
        Duration::from_secs(30),
        http.get(order["events_url"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .text(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(text.contains("event: cancelled"), "{text}");
    assert!(text.contains("\"user_message\":{"), "{text}");
    // A wrong events key and no token: 401.
    let res = http
        .get(format!(
            "{base}/api/v1/bankid/orders/{}/events?key=nope",
            order["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

/// Bounded work: the gateway holds at most `--bankid-max-pending` orders
/// pending (429 past it, a place again once one ends) and at most
/// `--max-event-streams` event streams open (503 past it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_caps_pending_orders_and_event_streams() {
    let env = Env::sqlite();
    let (_sandbox, root) = env.bankid_sandbox();
    env.run_ok(&["init"]);
    let token = env
        .run_ok(&["token", "create", "--scope", "write", "--name", "webapp"])
        .trim()
        .to_owned();
    let (_server, base) = serve_gateway(
        &env,
        &root,
        &["--bankid-max-pending", "3", "--max-event-streams", "2"],
    )
    .await;
    let http = reqwest::Client::new();
    let orders = format!("{base}/api/v1/bankid/orders");
    let start = || {
        http.post(&orders)
            .bearer_auth(&token)
            .json(&json!({"type": "auth"}))
            .send()
    };
    let mut made = Vec::new();
    for _ in 0..3 {
        let res = start().await.unwrap();
        assert_eq!(res.status(), 201);
        made.push(res.json::<Value>().await.unwrap());
    }
    let res = start().await.unwrap();
    assert_eq!(res.status(), 429);
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["code"], "bankid_too_many_orders", "{err}");

    // Two event streams open; a third is refused until one closes.
    let events = |o: &Value| o["events_url"].as_str().unwrap().to_owned();
    let first = http.get(events(&made[0])).send().await.unwrap();
    let second = http.get(events(&made[1])).send().await.unwrap();
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let res = http.get(events(&made[2])).send().await.unwrap();
    assert_eq!(res.status(), 503);
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["code"], "too_many_streams", "{err}");
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let res = http.get(events(&made[2])).send().await.unwrap();
        if res.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed stream's place never came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A cancelled order frees its place.
    let res = http
        .post(made[0]["cancel_url"].as_str().unwrap())
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let res = start().await.unwrap();
        if res.status() == 201 {
            break;
        }
        assert_eq!(res.status(), 429);
        assert!(
            Instant::now() < deadline,
            "the cancelled order's place never came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
