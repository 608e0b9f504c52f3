//! The flow-check scheduler of `serve --checks`, in process: a real
//! `AppState` with `set_checks` over a temporary flows folder, a SQLite
//! store in a temporary directory, and every target, webhook and TLS host a
//! real socket on 127.0.0.1.
//!
//! - A `[[maintenance]]` window covering now skips every round (no run
//!   stored, no request sent) while its twin without the window runs, and
//!   the API reports `in_maintenance`.
//! - A certificate expiring within a webhook's `ssl_expiry_threshold_days`
//!   alerts exactly once per day however many certificate passes run; one
//!   expiring later than the threshold does not alert.
//! - Retention keeps each check's newest `keep_latest` runs, and exactly
//!   those.
//! - Round-robin locations alternate: each round runs in one location (this
//!   server's `local`, then an agent's `eu-west` served over the agent
//!   routes), and the stored runs are tagged with it.
//! - A change of health to failing is logged at WARN (check, name, step,
//!   error), a recovery at INFO, and a check the store knows as failing is
//!   warned about once at start.
//! - Two servers on one database with one flows folder run each round of a
//!   check's cadence once and alert each change of health once.
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bankbridge_checks::flow;
use bankbridge_checks::runner::{RunOptions, Runner};
use bankbridge_sandbox::receivers::HttpReceiver;
use bankbridge_server::checks::ChecksConfig;
use bankbridge_store::{CheckRun, CheckRunQuery, Scope, Store};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use tokio::net::TcpListener;

mod common;

use common::TestServer;

/// A scheduler over `dir` that wakes often, so a test takes seconds.
fn fast_config(dir: &Path) -> ChecksConfig {
    let mut config = ChecksConfig::new(dir);
    config.tick = Duration::from_millis(50);
    config.reload_every = Duration::from_millis(200);
    config
}

/// Polls `probe` every 50 ms until it answers, or fails naming `what`.
async fn until<T>(what: &str, limit: Duration, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every stored run of `check`, oldest first.
async fn runs_of(store: &dyn Store, check: &str) -> Vec<CheckRun> {
    let mut runs = store
        .list_check_runs(&CheckRunQuery {
            check_id: Some(check.into()),
            limit: 500,
            ..CheckRunQuery::default()
        })
        .await
        .unwrap();
    runs.reverse();
    runs
}

/// Paths of the POSTs `receiver` took, in order.
fn paths(receiver: &HttpReceiver) -> Vec<String> {
    receiver.requests().into_iter().map(|r| r.path).collect()
}

/// A one-step flow POSTing to `url` (a template over `vars`), expecting 200.
fn one_step_flow(name: &str, every: &str, vars: &str, url: &str, extra: &str) -> String {
    format!(
        r#"name = "{name}"
{extra}

[schedule]
every = "{every}"

[vars]
{vars}

[[steps]]
name = "Ping"
method = "POST"
url = "{url}"
assert = [{{ status = 200 }}]
"#
    )
}

fn write(dir: &Path, file: &str, text: &str) {
    std::fs::write(dir.join(file), text).unwrap();
}

// ---------------------------------------------------------------- maintenance

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintenance_window_skips_every_round_while_its_twin_runs() {
    let server = TestServer::start().await;
    let target = HttpReceiver::start().await.unwrap();
    let flows = tempfile::tempdir().unwrap();
    let vars = format!("target = \"{}\"", target.url());
    let now = Utc::now();
    let window = format!(
        "\n[[maintenance]]\nfrom = \"{}\"\nuntil = \"{}\"\n",
        (now - TimeDelta::hours(1)).to_rfc3339(),
        (now + TimeDelta::hours(1)).to_rfc3339()
    );
    write(
        flows.path(),
        "in-window.toml",
        &(one_step_flow("In window", "1s", &vars, "{{ target }}/in-window", "") + &window),
    );
    write(
        flows.path(),
        "twin.toml",
        &one_step_flow("Twin", "1s", &vars, "{{ target }}/twin", ""),
    );
    let scheduler = server.state.set_checks(fast_config(flows.path())).unwrap();
    let store = server.store.clone();

    // The twin runs on its 1 s cadence: wait for three of its rounds, each
    // stored and each one request at the target.
    let (twin_runs, sent) = until(
        "three rounds of the twin",
        Duration::from_secs(8),
        async || {
            let sent = paths(&target);
            let runs = runs_of(store.as_ref(), "twin").await;
            let twin_sent = sent.iter().filter(|p| *p == "/twin").count();
            (runs.len() >= 3 && twin_sent == runs.len()).then_some((runs, sent))
        },
    )
    .await;
    for run in &twin_runs {
        assert_eq!(
            (
                run.outcome.as_str(),
                run.location.as_str(),
                run.trigger.as_str()
            ),
            ("passed", "local", "schedule"),
            "{run:?}"
        );
    }

    // Three twin rounds span at least two cadence periods, in which the
    // flow in its window was due at least twice: nothing ran.
    assert_eq!(runs_of(store.as_ref(), "in-window").await, vec![]);
    assert!(sent.iter().all(|p| p == "/twin"), "{sent:?}");
    assert!(
        paths(&target).iter().all(|p| p == "/twin"),
        "{:?}",
        paths(&target)
    );

    // The API says why.
    let token = server.token(Scope::Read).await;
    let body = server.get_json("/api/v1/checks", &token).await;
    let checks = body["data"].as_array().unwrap();
    assert_eq!(checks.len(), 2, "{body}");
    let check = |id: &str| checks.iter().find(|c| c["id"] == id).unwrap().clone();
    let in_window = check("in-window");
    assert_eq!(in_window["in_maintenance"], true, "{in_window}");
    assert_eq!(in_window["last_round"], Value::Null, "{in_window}");
    let twin = check("twin");
    assert_eq!(twin["in_maintenance"], false, "{twin}");
    assert_eq!(twin["last_round"]["outcome"], "passed", "{twin}");
    let one = server.get_json("/api/v1/checks/in-window", &token).await;
    assert_eq!(one["in_maintenance"], true, "{one}");
    assert_eq!(body["invalid"], json!([]), "{body}");

    scheduler.abort();
    server.shutdown().await;
}

// ---------------------------------------------------------------- certificates

/// Serves TLS on 127.0.0.1 with a fresh self-signed certificate valid until
/// `not_after`; returns the port and the number of connections taken so far.
async fn serve_tls(not_after: DateTime<Utc>) -> (u16, Arc<AtomicUsize>) {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let since_epoch = |t: DateTime<Utc>| Duration::from_secs(u64::try_from(t.timestamp()).unwrap());
    params.not_before = epoch + since_epoch(Utc::now() - TimeDelta::days(1));
    params.not_after = epoch + since_epoch(not_after);
    let cert = params.self_signed(&key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let taken = Arc::new(AtomicUsize::new(0));
    let count = taken.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // The probe hangs up after the handshake; errors are expected.
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
    (port, taken)
}

/// A whole second, `days` days (and an hour, so whole days stay whole
/// during the test) from now.
fn in_days(days: i64) -> DateTime<Utc> {
    let t = Utc::now() + TimeDelta::days(days) + TimeDelta::hours(1);
    DateTime::from_timestamp(t.timestamp(), 0).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_certificate_alerts_once_a_day_and_a_later_one_not_at_all() {
    let server = TestServer::start().await;
    let hook = HttpReceiver::start().await.unwrap();
    let soon = in_days(5);
    let later = in_days(60);
    let (soon_port, soon_probes) = serve_tls(soon).await;
    let (later_port, later_probes) = serve_tls(later).await;
    let flows = tempfile::tempdir().unwrap();
    // Only certificate alerts: the flows' own rounds (a week away) could
    // not alert anyway.
    write(
        flows.path(),
        "channels.toml",
        &format!(
            r#"[[channel]]
name = "ops"
type = "webhook"
url = "{}/hook"
send_failure = false
send_recovery = false
ssl_expiry = true
ssl_expiry_threshold_days = 14
"#,
            hook.url()
        ),
    );
    let alerts = "alerts = [\"ops\"]";
    write(
        flows.path(),
        "soon.toml",
        &one_step_flow(
            "Bank soon",
            "7days",
            &format!("base = \"https://127.0.0.1:{soon_port}\""),
            "{{ base }}/login",
            alerts,
        ),
    );
    write(
        flows.path(),
        "later.toml",
        &one_step_flow(
            "Bank later",
            "7days",
            &format!("base = \"https://127.0.0.1:{later_port}\""),
            "{{ base }}/login",
            alerts,
        ),
    );
    let mut config = fast_config(flows.path());
    config.certificate_every = Duration::from_millis(150);
    let scheduler = server.state.set_checks(config).unwrap();

    let first = hook.wait_for(1, Duration::from_secs(10)).await.unwrap();
    // Then at least three more passes over both hosts (the first pass may
    // have read one host before the other).
    let soon_then = soon_probes.load(Ordering::SeqCst);
    let later_then = later_probes.load(Ordering::SeqCst);
    until(
        "three more certificate passes",
        Duration::from_secs(10),
        async || {
            (soon_probes.load(Ordering::SeqCst) >= soon_then + 3
                && later_probes.load(Ordering::SeqCst) >= later_then + 3)
                .then_some(())
        },
    )
    .await;
    // A delivery still on its way would land within this.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let received = hook.requests();
    assert_eq!(received.len(), 1, "{received:#?}");
    assert_eq!(received[0], first[0]);
    let alert = &received[0].body;
    assert_eq!(received[0].path, "/hook");
    assert_eq!(alert["channel"], "ops", "{alert}");
    assert_eq!(alert["kind"], "certificate_expiry", "{alert}");
    assert_eq!(alert["check_id"], "soon", "{alert}");
    assert_eq!(alert["reminder"], false, "{alert}");
    let host = format!("127.0.0.1:{soon_port}");
    assert_eq!(
        alert["certificate"],
        json!({ "host": host, "expires_at": soon, "days_left": 5 }),
        "{alert}"
    );
    let summary = alert["summary"].as_str().unwrap();
    assert!(
        summary.contains(&host) && summary.contains("(5 days left)"),
        "{summary}"
    );

    scheduler.abort();
    server.shutdown().await;
}

// ---------------------------------------------------------------- retention

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_newest_runs_of_each_check() {
    let server = TestServer::start().await;
    let target = HttpReceiver::start().await.unwrap();
    let flows = tempfile::tempdir().unwrap();
    // Rounds are started by hand (the API's "run now"): its schedule is a
    // week away.
    write(
        flows.path(),
        "kept.toml",
        &one_step_flow(
            "Kept",
            "7days",
            &format!("target = \"{}\"", target.url()),
            "{{ target }}/kept",
            "",
        ),
    );
    let mut config = fast_config(flows.path());
    config.retention = Duration::from_millis(1);
    config.keep_latest = 3;
    config.prune_every = Duration::from_millis(100);
    let scheduler = server.state.set_checks(config).unwrap();
    let store = server.store.clone();
    let token = server.token(Scope::Write).await;
    until("the flow loaded", Duration::from_secs(5), async || {
        server.state.checks.get()?.summary("kept")
    })
    .await;

    // Six rounds, one after the other; each run is the newest when stored,
    // so pruning never takes it before it is seen.
    let mut ids = Vec::new();
    for _ in 0..6 {
        // The previous round closes just after its run is stored.
        let res = until("a round started", Duration::from_secs(5), async || {
            let res = server
                .post_json("/api/v1/checks/kept/run", &token, &json!({}))
                .await;
            (res.status().as_u16() != 409).then_some(res)
        })
        .await;
        assert_eq!(res.status().as_u16(), 202);
        let round: Value = res.json().await.unwrap();
        let round = round["round_id"].as_str().unwrap().to_owned();
        let run = until("the round's run", Duration::from_secs(5), async || {
            let runs = store
                .list_check_runs(&CheckRunQuery {
                    round_id: Some(round.clone()),
                    ..CheckRunQuery::default()
                })
                .await
                .unwrap();
            runs.into_iter().next()
        })
        .await;
        assert_eq!(
            (
                run.check_id.as_str(),
                run.trigger.as_str(),
                run.outcome.as_str()
            ),
            ("kept", "manual", "passed")
        );
        ids.push(run.id);
    }
    assert_eq!(paths(&target).len(), 6);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    let newest: Vec<i64> = ids[3..].to_vec();
    until(
        "the older runs pruned",
        Duration::from_secs(5),
        async || {
            let left: Vec<i64> = runs_of(store.as_ref(), "kept")
                .await
                .iter()
                .map(|r| r.id)
                .collect();
            (left.len() <= 3).then_some(())
        },
    )
    .await;
    // Several more passes delete nothing more.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let left: Vec<i64> = runs_of(store.as_ref(), "kept")
        .await
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, newest);
    for old in &ids[..3] {
        assert_eq!(store.get_check_run(*old).await.unwrap(), None, "run {old}");
    }
    let (_, steps) = store.get_check_run(newest[0]).await.unwrap().unwrap();
    assert_eq!(steps.len(), 1);

    scheduler.abort();
    server.shutdown().await;
}

// ---------------------------------------------------------------- round robin

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_rounds_alternate_between_the_server_and_an_agent() {
    let server = TestServer::start().await;
    let target = HttpReceiver::start().await.unwrap();
    let flows = tempfile::tempdir().unwrap();
    // `who` names the runner in the request path: the agent overrides it.
    write(
        flows.path(),
        "rotating.toml",
        &(one_step_flow(
            "Rotating",
            "1s",
            &format!("target = \"{}\"\nwho = \"local\"", target.url()),
            "{{ target }}/probe/{{ who }}",
            "",
        ) + "\n[locations]\nnames = [\"local\", \"eu-west\"]\nmode = \"round_robin\"\n"),
    );
    let scheduler = server.state.set_checks(fast_config(flows.path())).unwrap();
    let store = server.store.clone();

    // An agent at eu-west, as `bankbridge check agent` does it, over HTTP
    // with an agent token.
    let token = server.token_at(Scope::Agent, Some("eu-west")).await;
    let agent = {
        let client = server.client.clone();
        let base = server.base.clone();
        tokio::spawn(async move {
            let runner = Runner::new();
            loop {
                let res = client
                    .get(format!("{base}/api/v1/agent/jobs"))
                    .query(&[("location", "eu-west"), ("wait_ms", "500")])
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status().as_u16(), 200);
                let jobs: Value = res.json().await.unwrap();
                for job in jobs["data"].as_array().unwrap() {
                    let text = |k: &str| job[k].as_str().unwrap().to_owned();
                    let flow =
                        flow::parse(&text("flow_id"), &text("file"), &text("source")).unwrap();
                    let opts = RunOptions {
                        location: "eu-west".into(),
                        overrides: [("who".to_owned(), "eu-west".to_owned())].into(),
                        ..RunOptions::default()
                    };
                    let report = runner.run_with_retries(&flow, &opts).await;
                    let res = client
                        .post(format!("{base}/api/v1/agent/results"))
                        .bearer_auth(&token)
                        .json(&json!({ "job_id": job["job_id"], "location": "eu-west", "report": report }))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(res.status().as_u16(), 202);
                }
            }
        })
    };

    let runs = until("four rounds", Duration::from_secs(10), async || {
        let runs = runs_of(store.as_ref(), "rotating").await;
        (runs.len() >= 4).then_some(runs)
    })
    .await;
    assert!(!agent.is_finished(), "the agent stopped");
    let runs = &runs[..4];
    let locations: Vec<&str> = runs.iter().map(|r| r.location.as_str()).collect();
    // Which location takes the first round follows the slot's number (the
    // same on every server); from there they alternate.
    let first = if locations[0] == "local" {
        ["local", "eu-west"]
    } else {
        ["eu-west", "local"]
    };
    assert_eq!(locations, [first[0], first[1], first[0], first[1]]);
    for run in runs {
        assert_eq!(
            (run.outcome.as_str(), run.trigger.as_str()),
            ("passed", "schedule"),
            "{run:?}"
        );
        // One location per round: the round holds this run only.
        let in_round = store
            .list_check_runs(&CheckRunQuery {
                round_id: Some(run.round_id.clone()),
                ..CheckRunQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(in_round, vec![run.clone()]);
    }
    let rounds: std::collections::HashSet<&str> =
        runs.iter().map(|r| r.round_id.as_str()).collect();
    assert_eq!(rounds.len(), 4);
    // Each run was made where it says: the agent's requests carry its name.
    let expected: Vec<String> = locations.iter().map(|l| format!("/probe/{l}")).collect();
    assert_eq!(paths(&target)[..4], expected[..]);
    let summary = server
        .state
        .checks
        .get()
        .unwrap()
        .summary("rotating")
        .unwrap();
    let last = summary.last_round.unwrap();
    assert!(
        last.missing.is_empty() && last.failed.is_empty(),
        "{last:?}"
    );

    agent.abort();
    scheduler.abort();
    server.shutdown().await;
}

// ---------------------------------------------------------------- run now

/// "Run now" while a round of the check is in flight answers 409: repeated
/// clicks cannot pile up runs against a bank.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_waits_for_the_round_in_flight() {
    // A host that takes connections and never answers: a run stays in flight
    // until the flow's 2 s deadline.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let server = TestServer::start().await;
    let flows = tempfile::tempdir().unwrap();
    write(
        flows.path(),
        "slow.toml",
        &one_step_flow(
            "Slow",
            "7days",
            &format!("target = \"http://{addr}\""),
            "{{ target }}/slow",
            "timeout = \"2s\"",
        ),
    );
    let _scheduler = server.state.set_checks(fast_config(flows.path())).unwrap();
    let token = server.token(Scope::Write).await;
    until("the flow loaded", Duration::from_secs(5), async || {
        server.state.checks.get()?.summary("slow")
    })
    .await;
    let run_now = async || {
        server
            .post_json("/api/v1/checks/slow/run", &token, &json!({}))
            .await
    };
    let res = run_now().await;
    assert_eq!(res.status().as_u16(), 202);
    let round: Value = res.json().await.unwrap();
    for _ in 0..3 {
        let body = common::expect_error(run_now().await, 409, "run_in_flight").await;
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains(round["round_id"].as_str().unwrap()),
            "{body}"
        );
    }
    // Once the round ends (the run failed on its deadline), a new one starts.
    until("a new round", Duration::from_secs(15), async || {
        let res = run_now().await;
        (res.status().as_u16() == 202).then_some(())
    })
    .await;
    let runs = runs_of(server.store.as_ref(), "slow").await;
    assert_eq!(runs.len(), 1, "one run for the first round");
    assert_eq!(runs[0].outcome, "failed");
}

/// A stored run keeps credential-looking fields masked, and its bodies go
/// to write and admin tokens only: a read token sees timings and outcomes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_bodies_are_masked_and_kept_from_read_tokens() {
    let target = HttpReceiver::start().await.unwrap();
    target.set_response_body(r#"{"access_token":"minted-by-bank","balance":"12.30"}"#);
    let server = TestServer::start().await;
    let flows = tempfile::tempdir().unwrap();
    write(
        flows.path(),
        "bodies.toml",
        &format!(
            r#"name = "Bodies"

[schedule]
every = "7days"

[[steps]]
name = "Login"
method = "POST"
url = "{}/login"
form = {{ username = "jo", password = "hunter2" }}
"#,
            target.url().trim_end_matches('/')
        ),
    );
    let _scheduler = server.state.set_checks(fast_config(flows.path())).unwrap();
    let write_token = server.token(Scope::Write).await;
    let read_token = server.token(Scope::Read).await;
    until("the flow loaded", Duration::from_secs(5), async || {
        server.state.checks.get()?.summary("bodies")
    })
    .await;
    let res = server
        .post_json("/api/v1/checks/bodies/run", &write_token, &json!({}))
        .await;
    assert_eq!(res.status().as_u16(), 202);
    let run = until("the run", Duration::from_secs(5), async || {
        runs_of(server.store.as_ref(), "bodies").await.pop()
    })
    .await;
    let path = format!("/api/v1/runs/{}", run.id);
    let full = server.get_json(&path, &write_token).await;
    let detail = &full["steps"][0]["detail"];
    let sent = detail["request"]["body"].as_str().unwrap();
    assert!(
        sent.contains("username=jo") && sent.contains("password=***"),
        "{sent}"
    );
    let answer = detail["response"]["body"].as_str().unwrap();
    assert!(answer.contains(r#""access_token":"***""#), "{answer}");
    assert!(answer.contains("12.30"), "{answer}");
    let text = full.to_string();
    assert!(
        !text.contains("hunter2") && !text.contains("minted-by-bank"),
        "{text}"
    );

    let read = server.get_json(&path, &read_token).await;
    let detail = &read["steps"][0]["detail"];
    assert_eq!(detail["request"]["body"], Value::Null);
    assert_eq!(detail["response"]["body"], Value::Null);
    assert_eq!(detail["response"]["status"], 200, "the rest stays");
    assert_eq!(read["outcome"], "passed");
}

// ---------------------------------------------------------------- health in the log

/// The first line of `logs` holding every one of `parts`.
fn log_line(parts: &[&str]) -> Option<String> {
    common::logs()
        .lines()
        .find(|l| parts.iter().all(|p| l.contains(p)))
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_of_health_and_failures_found_at_start_are_logged() {
    common::capture_logs();
    let server = TestServer::start().await;
    let target = HttpReceiver::start_with_status(500).await.unwrap();
    target.set_response_body("bank down");
    let flows = tempfile::tempdir().unwrap();
    let vars = format!("target = \"{}\"", target.url());
    write(
        flows.path(),
        "log-breaks.toml",
        &one_step_flow("Log breaks", "1s", &vars, "{{ target }}/breaks", ""),
    );
    write(
        flows.path(),
        "log-was-down.toml",
        &one_step_flow("Log was down", "7days", &vars, "{{ target }}/down", ""),
    );
    // The store knows `log-was-down` as failing since a run an hour ago.
    let then = Utc::now() - TimeDelta::hours(1);
    let mut state = bankbridge_checks::schedule::CheckState::new(then);
    state.health = bankbridge_checks::schedule::Health::Failing;
    server
        .store
        .put_check_state(
            "log-was-down",
            &serde_json::to_string(&state).unwrap(),
            then,
        )
        .await
        .unwrap();
    server
        .store
        .save_check_run(&bankbridge_store::NewCheckRun {
            check_id: "log-was-down".into(),
            check_name: "Log was down".into(),
            location: "local".into(),
            round_id: "r-before".into(),
            trigger: "schedule".into(),
            started_at: then,
            finished_at: then,
            duration_ms: 5,
            outcome: "failed".into(),
            attempts: 1,
            failed_step: Some("Login".into()),
            error: Some("status 503\nbank down".into()),
            steps: Vec::new(),
        })
        .await
        .unwrap();
    let scheduler = server.state.set_checks(fast_config(flows.path())).unwrap();

    let at_start = until("the start warning", Duration::from_secs(10), async || {
        log_line(&["check=log-was-down", "failing at start"])
    })
    .await;
    for part in [
        " WARN ",
        "name=Log was down",
        "health=failing",
        "step=Login",
        "error=status 503 bank down",
    ] {
        assert!(at_start.contains(part), "{part:?} not in {at_start}");
    }

    // Two failed rounds (the default threshold) make `log-breaks` failing.
    let failing = until(
        "the change to failing",
        Duration::from_secs(20),
        async || log_line(&["check=log-breaks", "health=failing"]),
    )
    .await;
    for part in [
        " WARN ",
        "name=Log breaks",
        "from=passing",
        "step=Ping",
        "error=answered status 500",
        "log-breaks is now failing",
    ] {
        assert!(failing.contains(part), "{part:?} not in {failing}");
    }

    target.set_status(200);
    let recovered = until("the recovery", Duration::from_secs(20), async || {
        log_line(&["check=log-breaks", "health=passing"])
    })
    .await;
    assert!(recovered.contains(" INFO "), "{recovered}");
    assert!(recovered.contains("from=failing"), "{recovered}");
    // Said once: the start warning is not repeated by later reloads.
    let starts = common::logs()
        .lines()
        .filter(|l| l.contains("check=log-was-down") && l.contains("at start"))
        .count();
    assert_eq!(starts, 1);
    scheduler.abort();
    server.shutdown().await;
}

// ---------------------------------------------------------------- channels.toml

/// What `serve --checks` checks before it starts: every problem of the
/// channels file, each as `FILE:LINE:COLUMN: message`; no file is no channels.
#[test]
fn load_channels_names_the_file_and_line_of_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        bankbridge_server::checks::load_channels(dir.path())
            .unwrap()
            .is_empty()
    );
    write(
        dir.path(),
        "channels.toml",
        "[[channel]]\nname = \"a\"\ntype = \"sms\"\n\n[[channel]]\nname = \"b\"\ntype = \"telegram\"\nchat_id = 1\n",
    );
    let problems = bankbridge_server::checks::load_channels(dir.path()).unwrap_err();
    let file = dir.path().join("channels.toml").display().to_string();
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems[0].starts_with(&format!(
            "{file}:3:1: channel \"a\": unknown channel type \"sms\""
        )),
        "{problems:#?}"
    );
    assert_eq!(
        problems[1],
        format!("{file}:5:1: channel \"b\": a telegram channel needs `bot_token`")
    );
}

// ---------------------------------------------------------------- two servers

/// Two servers on one database with the same flows folder (here two states
/// on one store, each with its own scheduler): every round of the check's
/// cadence runs once, not once per server, and each change of health is
/// alerted once, whichever server closed the round that changed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_database_run_each_round_once_and_alert_each_change_once() {
    let server = TestServer::start().await;
    let target = HttpReceiver::start().await.unwrap();
    let hook = HttpReceiver::start().await.unwrap();
    let flows = tempfile::tempdir().unwrap();
    write(
        flows.path(),
        "channels.toml",
        &format!(
            "[[channel]]\nname = \"ops\"\ntype = \"webhook\"\nurl = \"{}/hook\"\n",
            hook.url()
        ),
    );
    write(
        flows.path(),
        "shared.toml",
        &one_step_flow(
            "Shared",
            "1s",
            &format!("target = \"{}\"", target.url()),
            "{{ target }}/probe",
            "alerts = [\"ops\"]",
        ),
    );
    let other = bankbridge_server::AppState::with_config(
        server.store.clone(),
        server.state.syncer.clone(),
        vec![],
        bankbridge_server::ServerConfig::default(),
    );
    let first = server.state.set_checks(fast_config(flows.path())).unwrap();
    let second = other.set_checks(fast_config(flows.path())).unwrap();
    let store = server.store.clone();
    let kinds = |hook: &HttpReceiver| -> Vec<String> {
        hook.requests()
            .iter()
            .map(|r| r.body["kind"].as_str().unwrap_or("?").to_owned())
            .collect()
    };

    until(
        "three passing rounds",
        Duration::from_secs(10),
        async || (runs_of(store.as_ref(), "shared").await.len() >= 3).then_some(()),
    )
    .await;
    target.set_status(500);
    until("the failure alert", Duration::from_secs(15), async || {
        kinds(&hook).contains(&"failure".to_owned()).then_some(())
    })
    .await;
    target.set_status(200);
    until("the recovery alert", Duration::from_secs(15), async || {
        kinds(&hook).contains(&"recovery".to_owned()).then_some(())
    })
    .await;
    // Rounds after the recovery: a second alert would have come by now.
    let seen = runs_of(store.as_ref(), "shared").await.len();
    until("three more rounds", Duration::from_secs(10), async || {
        (runs_of(store.as_ref(), "shared").await.len() >= seen + 3).then_some(())
    })
    .await;
    first.abort();
    second.abort();

    let kinds = kinds(&hook);
    assert_eq!(
        kinds.iter().filter(|k| *k == "failure").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "recovery").count(),
        1,
        "{kinds:?}"
    );
    assert!(
        kinds.windows(2).all(|w| w[0] != w[1]),
        "each change once: {kinds:?}"
    );
    // One run per 1 s slot: two servers running the same slot would store
    // two runs tens of milliseconds apart.
    let runs = runs_of(store.as_ref(), "shared").await;
    let starts: Vec<DateTime<Utc>> = runs.iter().map(|r| r.started_at).collect();
    for pair in starts.windows(2) {
        assert!(
            pair[1] - pair[0] >= TimeDelta::milliseconds(500),
            "two runs of one slot: {pair:?}"
        );
    }
    let rounds: std::collections::HashSet<&str> =
        runs.iter().map(|r| r.round_id.as_str()).collect();
    assert_eq!(rounds.len(), runs.len(), "one run per round");
}

/// An agent may poll any server for its location's jobs and report to
/// any: here the rounds are all the first server's (the second loads no
/// flows), and the agent talks to the second only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_polling_another_server_runs_the_first_servers_rounds() {
    let server = TestServer::start().await;
    let target = HttpReceiver::start().await.unwrap();
    let flows = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    write(
        flows.path(),
        "remote.toml",
        &(one_step_flow(
            "Remote",
            "1s",
            &format!("target = \"{}\"", target.url()),
            "{{ target }}/probe",
            "",
        ) + "\n[locations]\nnames = [\"eu-west\"]\n"),
    );
    let first = server.state.set_checks(fast_config(flows.path())).unwrap();
    let other = bankbridge_server::AppState::with_config(
        server.store.clone(),
        server.state.syncer.clone(),
        vec![],
        bankbridge_server::ServerConfig::default(),
    );
    let second = other.set_checks(fast_config(empty.path())).unwrap();
    let agent = {
        let service = other.checks.get().unwrap().clone();
        tokio::spawn(async move {
            let runner = Runner::new();
            loop {
                for job in service
                    .take_jobs("eu-west", Duration::from_millis(500))
                    .await
                {
                    let flow = flow::parse(&job.flow_id, &job.file, &job.source).unwrap();
                    let opts = RunOptions {
                        location: "eu-west".into(),
                        ..RunOptions::default()
                    };
                    let report = runner.run_with_retries(&flow, &opts).await;
                    assert!(
                        service
                            .report_job(&job.job_id, "eu-west", report.clone())
                            .await
                    );
                    // Answered once.
                    assert!(!service.report_job(&job.job_id, "eu-west", report).await);
                }
            }
        })
    };
    let store = server.store.clone();
    let runs = until(
        "three rounds run by the agent",
        Duration::from_secs(15),
        async || {
            let runs = runs_of(store.as_ref(), "remote").await;
            (runs.len() >= 3).then_some(runs)
        },
    )
    .await;
    assert!(!agent.is_finished(), "the agent stopped");
    for run in &runs {
        assert_eq!(
            (run.location.as_str(), run.outcome.as_str()),
            ("eu-west", "passed"),
            "{run:?}"
        );
    }
    let summary = server
        .state
        .checks
        .get()
        .unwrap()
        .summary("remote")
        .unwrap();
    let last = summary.last_round.unwrap();
    assert!(
        last.missing.is_empty(),
        "the first server got the report: {last:?}"
    );
    agent.abort();
    first.abort();
    second.abort();
    server.shutdown().await;
}

/// A round whose server stopped before closing it (its claim is left
/// open past its lease) is run by another server, late rather than never,
/// and once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_left_open_by_a_dead_server_is_taken_over_once() {
    let server = TestServer::start().await;
    let target = HttpReceiver::start().await.unwrap();
    let flows = tempfile::tempdir().unwrap();
    let text = one_step_flow(
        "Lapsed",
        "4s",
        &format!("target = \"{}\"", target.url()),
        "{{ target }}/probe",
        "",
    );
    write(flows.path(), "lapsed.toml", &text);
    // A server that claimed the next slot and died: its lease ends 1.5 s
    // after the slot.
    let parsed = flow::parse("lapsed", "lapsed.toml", &text).unwrap();
    let slot = parsed
        .schedule
        .first_slot("lapsed", Utc::now() + TimeDelta::seconds(1));
    let until_at = slot + TimeDelta::milliseconds(1_500);
    assert!(
        server
            .store
            .claim_check_round(
                "lapsed",
                slot.timestamp_millis(),
                "a dead server",
                Utc::now(),
                until_at
            )
            .await
            .unwrap()
    );
    let scheduler = server.state.set_checks(fast_config(flows.path())).unwrap();
    let store = server.store.clone();
    let after = slot + TimeDelta::seconds(4);
    until(
        "the round after the lapsed one",
        Duration::from_secs(15),
        async || {
            let runs = runs_of(store.as_ref(), "lapsed").await;
            runs.iter().any(|r| r.started_at >= after).then_some(())
        },
    )
    .await;
    scheduler.abort();
    let runs = runs_of(store.as_ref(), "lapsed").await;
    let starts: Vec<DateTime<Utc>> = runs.iter().map(|r| r.started_at).collect();
    // The lapsed slot ran once, after its lease ended and before the next.
    let late: Vec<_> = starts
        .iter()
        .filter(|t| **t >= slot && **t < after)
        .collect();
    assert_eq!(
        late.len(),
        1,
        "{starts:?} (slot {slot}, lease until {until_at})"
    );
    assert!(*late[0] >= until_at, "{starts:?} (lease until {until_at})");
    assert!(
        server
            .store
            .lapsed_check_rounds(Utc::now(), Utc::now() - TimeDelta::minutes(10))
            .await
            .unwrap()
            .is_empty(),
        "the taken-over round is closed"
    );
    server.shutdown().await;
}

/// An alert whose server died while holding it (stored with its change of
/// health, claimed, never marked done) is delivered by another server once
/// the claim lapses, and only once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_held_by_a_dead_server_is_delivered_by_another_once() {
    use bankbridge_checks::alerts::{Alert, AlertKind};
    let server = TestServer::start().await;
    let hook = HttpReceiver::start().await.unwrap();
    let flows = tempfile::tempdir().unwrap();
    write(
        flows.path(),
        "channels.toml",
        &format!(
            "[[channel]]\nname = \"ops\"\ntype = \"webhook\"\nurl = \"{}/hook\"\n",
            hook.url()
        ),
    );
    let alert = Alert::new(
        AlertKind::Failure,
        "orphan",
        "Orphan",
        "Orphan failed at Ping",
        Utc::now(),
    );
    let queued = bankbridge_store::OutboxAlert {
        id: "alert-1".into(),
        channel: "ops".into(),
        alert: serde_json::to_string(&alert).unwrap(),
        created_at: Utc::now(),
    };
    assert!(
        server
            .store
            .swap_check_state_with_alerts("orphan", None, "{}", Utc::now(), &[queued])
            .await
            .unwrap()
    );
    let lapses = Utc::now() + TimeDelta::seconds(2);
    let held = server
        .store
        .claim_alerts("a dead server", Utc::now(), lapses, 10)
        .await
        .unwrap();
    assert_eq!(held.len(), 1);
    let scheduler = server.state.set_checks(fast_config(flows.path())).unwrap();
    until("the alert", Duration::from_secs(10), async || {
        (!hook.requests().is_empty()).then_some(())
    })
    .await;
    let delivered = Utc::now();
    assert!(delivered >= lapses, "not before the claim lapsed");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let requests = hook.requests();
    assert_eq!(requests.len(), 1, "once");
    assert_eq!(requests[0].body["check_id"], "orphan");
    assert_eq!(requests[0].body["kind"], "failure");
    scheduler.abort();
    server.shutdown().await;
}
