//! End to end: flow checks with the `bankbridge` binary against the
//! sandbox's XS2A playground over loopback.
//!
//! - `check run` passes the example flow, and with a failure injected at
//!   each of its 11 requests in turn fails at that step and names it.
//! - `serve --checks` runs it on a schedule and alerts real local receivers
//!   (an HTTP webhook and an SMTP sink): one failure alert past the
//!   threshold, none while it keeps failing, one degraded, one recovery.
//! - Two agents at two locations report to a server on PostgreSQL: results
//!   tagged by location, the round's verdict follows the quorum.
//! - No secret (the API token, the password) appears in any output, report,
//!   stored result, log or API answer.
use std::path::Path;
use std::time::{Duration, Instant};

use bankbridge_sandbox::receivers::{HttpReceiver, SmtpSink};
use bankbridge_sandbox::{SandboxConfig, SandboxHandle};
use serde_json::{Value, json};

mod common;

use common::*;

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/flows/klarna-xs2a.toml"
);
const BROKEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/broken/klarna-xs2a-broken.toml"
);
const PASSWORD: &str = "123456";

const STEPS: [&str; 11] = [
    "Start Session",
    "Start Account Details Flow",
    "Select Test Bank (Germany)",
    "Get Flow Configuration",
    "Select Transport",
    "Enter Credentials",
    "Complete Flow",
    "Select Account",
    "Get Consent",
    "Get Account Details",
    "Get Account Balance",
];

async fn sandbox() -> (SandboxHandle, String, String) {
    let sb = bankbridge_sandbox::spawn(SandboxConfig {
        accounts: 1,
        transactions: 10,
        years: 1,
        ..SandboxConfig::default()
    })
    .await
    .unwrap();
    let base = format!("{}/xs2a-playground", sb.root_url());
    let token = sb.state().xs2a_playground().credentials().api_token;
    (sb, base, token)
}

async fn control(sb: &SandboxHandle, path: &str, body: Value) {
    let res = reqwest::Client::new()
        .post(format!("{}/_sandbox/xs2a-playground/{path}", sb.root_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{path}: {}", res.status());
}

/// The example flow, adapted for a test: a fast schedule, no retries, the
/// given alert channels and extra top-level settings.
fn test_flow(every: &str, alerts: &[&str], extra: &str) -> String {
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    let mut out = String::new();
    out.push_str(&format!(
        "alerts = [{}]\n{extra}\n",
        alerts
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let mut skip_retry = false;
    for line in text.lines() {
        if line.starts_with('[') {
            skip_retry = line == "[retry]";
        }
        if skip_retry {
            continue;
        }
        let line = match line {
            l if l.starts_with("every = ") => format!("every = {every:?}"),
            l if l.starts_with("jitter = ") => "jitter = \"0s\"".to_string(),
            l => l.to_string(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn check_run(env: &Env, token: &str, args: &[&str]) -> std::process::Output {
    env.command(&[&["check", "run"], args].concat())
        .env("BANKBRIDGE_CHECK_XS2A_API_TOKEN", token)
        .env("BANKBRIDGE_CHECK_XS2A_PASSWORD", PASSWORD)
        .output()
        .unwrap()
}

fn assert_no_secret(what: &str, text: &str, token: &str) {
    assert!(
        !text.contains(token),
        "{what} contains the API token:\n{text}"
    );
    assert!(
        !text.contains(PASSWORD),
        "{what} contains the password:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_run_passes_and_names_each_injected_failure() {
    let env = Env::sqlite();
    let (sb, base, token) = sandbox().await;
    let var = format!("base_url={base}");
    let report = env.home.path().join("report.json");
    let junit = env.home.path().join("report.xml");

    let out = check_run(
        &env,
        &token,
        &[
            EXAMPLE,
            "--var",
            &var,
            "--report",
            "json",
            report.to_str().unwrap(),
            "--report",
            "junit",
            junit.to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in STEPS {
        assert!(stdout.contains(step), "{step} missing:\n{stdout}");
    }
    assert!(stdout.contains("PASSED"), "{stdout}");
    let runs: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(runs[0]["outcome"], "passed");
    assert_eq!(runs[0]["steps"].as_array().unwrap().len(), 11);
    // The consent token rotated: step 11 sent the one step 10 returned.
    assert_eq!(runs[0]["steps"][9]["captures"]["next_consent_token"], "***");
    let junit_text = std::fs::read_to_string(&junit).unwrap();
    assert!(
        junit_text.contains("tests=\"11\" failures=\"0\""),
        "{junit_text}"
    );
    for text in [
        &stdout,
        &std::fs::read_to_string(&report).unwrap(),
        &junit_text,
    ] {
        assert_no_secret("check run output", text, &token);
    }

    // A failure at each request in turn: the run fails at that step.
    for (n, step) in STEPS.iter().enumerate() {
        control(&sb, "fail", json!({ "request": n + 1 })).await;
        let out = check_run(
            &env,
            &token,
            &[
                EXAMPLE,
                "--var",
                &var,
                "--report",
                "json",
                report.to_str().unwrap(),
            ],
        );
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(1), "request {}: {stdout}", n + 1);
        assert!(
            stdout.contains(&format!("failed at step {step:?}")),
            "request {}: {stdout}",
            n + 1
        );
        let runs: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        assert_eq!(runs[0]["failed_step"], *step);
        assert_eq!(runs[0]["steps"][n]["response"]["status"], 503);
        assert!(
            runs[0]["steps"][n]["error"]
                .as_str()
                .unwrap()
                .contains("injected"),
            "{}",
            runs[0]["steps"][n]
        );
        for later in n + 1..11 {
            assert_eq!(runs[0]["steps"][later]["outcome"], "skipped");
        }
    }

    // The broken variant reuses a consent token: step 11 is named.
    let out = check_run(&env, &token, &[BROKEN, "--var", &var]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("failed at step \"Get Account Balance\"")
            && stdout.contains("CONSENT_TOKEN_USED"),
        "{stdout}"
    );

    // A missing secret is a clear setup failure, not a request sent without it.
    let out = env
        .command(&["check", "run", EXAMPLE, "--var", &var])
        .env_remove("BANKBRIDGE_CHECK_XS2A_API_TOKEN")
        .env_remove("BANKBRIDGE_CHECK_XS2A_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("BANKBRIDGE_CHECK_XS2A_API_TOKEN"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // `{ secret = .. }` reads this data directory's secret store: named
    // while it is missing, used once `check secret set` stored it.
    env.run_ok(&["init"]);
    let stored_flow = env.home.path().join("stored-secret.toml");
    std::fs::write(
        &stored_flow,
        std::fs::read_to_string(EXAMPLE).unwrap().replace(
            "password = { env = \"BANKBRIDGE_CHECK_XS2A_PASSWORD\" }",
            "password = { secret = \"xs2a-password\" }",
        ),
    )
    .unwrap();
    let run_stored = || {
        env.command(&["check", "run", stored_flow.to_str().unwrap(), "--var", &var])
            .env("BANKBRIDGE_CHECK_XS2A_API_TOKEN", &token)
            .env_remove("BANKBRIDGE_CHECK_XS2A_PASSWORD")
            .output()
            .unwrap()
    };
    let out = run_stored();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("check secret set xs2a-password"),
        "{stdout}"
    );
    set_secret(&env, "xs2a-password", PASSWORD);
    let out = run_stored();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert_no_secret("check run with a stored secret", &stdout, &token);
    assert!(
        !env.run_ok(&["check", "secret", "list"]).contains(PASSWORD)
            && env
                .run_ok(&["check", "secret", "list"])
                .contains("xs2a-password")
    );
}

#[test]
fn validate_names_file_line_and_field() {
    let env = Env::sqlite();
    let out = env.run(&["check", "validate", EXAMPLE]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = env.home.path().join("bad.toml");
    let text = std::fs::read_to_string(EXAMPLE)
        .unwrap()
        .replace("{{ next_consent_token }}", "{{ nxt_token }}");
    std::fs::write(&bad, &text).unwrap();
    let out = env.run(&["check", "validate", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let line = text.lines().position(|l| l.contains("nxt_token")).unwrap() + 1;
    assert!(
        stderr.contains(&format!("bad.toml:{line}:"))
            && stderr.contains("steps[10].json")
            && stderr.contains("nxt_token"),
        "{stderr}"
    );
}

async fn api(base: &str, token: &str, path: &str) -> Value {
    loaded(base, token, path)
        .await
        .unwrap_or_else(|| panic!("{path}: 404 Not Found"))
}

/// Like [`api`], but `None` while the check is unknown (404): the scheduler
/// reads the flow folder after the server starts listening.
async fn loaded(base: &str, token: &str, path: &str) -> Option<Value> {
    let res = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    if res.status() == reqwest::StatusCode::NOT_FOUND {
        return None;
    }
    assert!(res.status().is_success(), "{path}: {}", res.status());
    Some(res.json().await.unwrap())
}

async fn api_text(base: &str, token: &str, path: &str) -> String {
    reqwest::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Polls `probe` until it is true (or fails the test after `limit`).
async fn until<F, Fut>(what: &str, limit: Duration, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !probe().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn kinds(hook: &HttpReceiver) -> Vec<String> {
    hook.requests()
        .iter()
        .map(|r| r.body["kind"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_alerts_once_per_change_of_health() {
    let env = Env::sqlite();
    env.run_ok(&["init"]);
    let api_token = env
        .run_ok(&["token", "create", "--scope", "read", "--name", "ops"])
        .trim()
        .to_owned();
    let (sb, base, token) = sandbox().await;
    let hook = HttpReceiver::start().await.unwrap();
    let smtp = SmtpSink::start().await.unwrap();
    let dir = env.home.path().join("flows");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("channels.toml"),
        format!(
            "[[channel]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"{}/alerts\"\nsend_degraded = true\n\n\
             [[channel]]\nname = \"mail\"\ntype = \"email\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\ntls = \"none\"\n\
             from = \"bankbridge <checks@example.org>\"\nto = [\"ops@example.org\"]\nsend_degraded = true\n",
            hook.url().trim_end_matches('/'),
            smtp.port()
        ),
    )
    .unwrap();
    // Degraded when a step takes over 150 ms; failing after 2 failed rounds.
    let flow =
        test_flow("1s", &["hook", "mail"], "").replace("degraded_ms = 2000", "degraded_ms = 150");
    std::fs::write(dir.join("klarna-xs2a.toml"), flow).unwrap();
    let (_server, server, log) = env
        .serve_with(
            &["--checks", dir.to_str().unwrap()],
            &[
                ("BANKBRIDGE_CHECK_XS2A_API_TOKEN", &token),
                ("BANKBRIDGE_CHECK_XS2A_PASSWORD", PASSWORD),
                ("BANKBRIDGE_VAR_base_url", &base),
            ],
        )
        .await;
    let health = || {
        let server = server.clone();
        let api_token = api_token.clone();
        async move { api(&server, &api_token, "/api/v1/checks/klarna-xs2a").await["health"].clone() }
    };
    let limit = Duration::from_secs(60);

    // Passing: runs are stored, nothing is sent.
    until("a passing run", limit, || async {
        loaded(&server, &api_token, "/api/v1/checks/klarna-xs2a/runs")
            .await
            .is_some_and(|runs| {
                runs["data"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|r| r["outcome"] == "passed"))
            })
    })
    .await;
    assert!(hook.requests().is_empty());

    // Failing at Get Consent: one alert per channel once past the threshold.
    control(&sb, "fail", json!({ "request": 9, "persist": true })).await;
    until("failing", limit, || async { health().await == "failing" }).await;
    hook.wait_for(1, Duration::from_secs(10)).await.unwrap();
    smtp.wait_for(1, Duration::from_secs(10)).await.unwrap();
    // It keeps failing for several rounds: no storm.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(kinds(&hook), ["failure"], "{:?}", hook.requests());
    let alert = &hook.requests()[0].body;
    assert_eq!(alert["failed_step"], "Get Consent");
    assert!(
        alert["summary"].as_str().unwrap().contains("Get Consent"),
        "{alert}"
    );
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1);
    assert!(
        mails[0].header("Subject").unwrap().contains("FAILING"),
        "{:?}",
        mails[0].header("Subject")
    );

    // Slow but working: one degraded alert.
    control(&sb, "fail", json!({ "request": 0 })).await;
    control(&sb, "latency", json!({ "ms": 200 })).await;
    until("degraded", limit, || async { health().await == "degraded" }).await;
    hook.wait_for(2, Duration::from_secs(10)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(kinds(&hook), ["failure", "degraded"]);

    // Fast again: one recovery alert.
    control(&sb, "latency", json!({ "ms": 0 })).await;
    until("passing", limit, || async { health().await == "passing" }).await;
    hook.wait_for(3, Duration::from_secs(10)).await.unwrap();
    smtp.wait_for(3, Duration::from_secs(10)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(kinds(&hook), ["failure", "degraded", "recovery"]);
    let subjects: Vec<String> = smtp
        .messages()
        .iter()
        .map(|m| m.header("Subject").unwrap_or_default())
        .collect();
    assert_eq!(subjects.len(), 3, "{subjects:?}");
    assert!(subjects[2].contains("RECOVERED"), "{subjects:?}");

    // Metrics: outcomes and per-step latency.
    let metrics = api_text(&server, &api_token, "/metrics").await;
    assert!(metrics.contains("bankbridge_check_runs_total{check=\"klarna-xs2a\",location=\"local\",outcome=\"failed\"}"), "{metrics}");
    assert!(
        metrics.lines().any(
            |l| l.starts_with("bankbridge_check_step_duration_seconds_bucket{")
                && l.contains("step=\"Get Consent\"")
        ),
        "{metrics}"
    );

    // No secret anywhere: API answers (every stored run), alerts, mails, the log.
    let runs = api(
        &server,
        &api_token,
        "/api/v1/checks/klarna-xs2a/runs?limit=500",
    )
    .await;
    let mut seen = String::new();
    for run in runs["data"].as_array().unwrap() {
        let detail = api_text(&server, &api_token, &format!("/api/v1/runs/{}", run["id"])).await;
        assert!(detail.contains("\"steps\""), "{detail}");
        seen.push_str(&detail);
    }
    seen.push_str(&api_text(&server, &api_token, "/api/v1/checks").await);
    for r in hook.requests() {
        seen.push_str(&r.text);
    }
    for m in smtp.messages() {
        seen.push_str(&m.data);
    }
    seen.push_str(&std::fs::read_to_string(&log).unwrap());
    assert_no_secret(
        "stored results, API answers, alerts and the log",
        &seen,
        &token,
    );
    assert!(
        seen.contains("Token ***"),
        "the Authorization header is recorded, masked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_at_two_locations_report_to_a_postgres_server() {
    let Some(env) = Env::postgres().await else {
        return;
    };
    env.run_ok(&["init"]);
    // Agents take jobs that carry stored secrets: their tokens have the
    // agent scope, which allows nothing else.
    let token_of = |scope: &str| {
        env.run_ok(&["token", "create", "--scope", scope, "--name", scope])
            .trim()
            .to_owned()
    };
    let write = token_of("write");
    let admin = token_of("admin");
    // An agent token serves the one location it was made for.
    let agent_of = |location: &str| {
        env.run_ok(&[
            "token",
            "create",
            "--scope",
            "agent",
            "--name",
            location,
            "--location",
            location,
        ])
        .trim()
        .to_owned()
    };
    let eu_token = agent_of("eu-west");
    let us_token = agent_of("us-east");
    let agent_token = eu_token.clone();
    // The password comes from the server's secret store, not the agents' environment.
    set_secret(&env, "xs2a-password", PASSWORD);
    let (_sb, base, token) = sandbox().await;
    let dir = env.home.path().join("flows");
    std::fs::create_dir(&dir).unwrap();
    let write_flow = |share: &str| {
        let text = test_flow("1s", &[], "")
            .replace(
                "password = { env = \"BANKBRIDGE_CHECK_XS2A_PASSWORD\" }",
                "password = { secret = \"xs2a-password\" }",
            )
            .replace("names = [\"local\"]", "names = [\"eu-west\", \"us-east\"]")
            .replace(
                "mode = \"parallel\"",
                &format!("mode = \"parallel\"\nfailure_share = {share}"),
            )
            .replace("failure = 2", "failure = 1");
        // Write beside and rename: the scheduler never reads half a file.
        let tmp = dir.join("flow.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join("klarna-xs2a.toml")).unwrap();
    };
    write_flow("0.5");
    let (_server, server, _log) = env
        .serve_with(&["--checks", dir.to_str().unwrap()], &[])
        .await;
    let agent = |location: &str, agent_tok: &str, base_url: &str| {
        KillOnDrop(Some(
            env.command(&[
                "check",
                "agent",
                "--location",
                location,
                "--server",
                &server,
                "--token",
                agent_tok,
                "--var",
                &format!("base_url={base_url}"),
            ])
            .env("BANKBRIDGE_CHECK_XS2A_API_TOKEN", &token)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
        ))
    };
    // us-east cannot reach the bank (a closed loopback port).
    let _eu = agent("eu-west", &eu_token, &base);
    let _us = agent("us-east", &us_token, "http://127.0.0.1:9/xs2a-playground");
    let limit = Duration::from_secs(60);

    let round_outcome = |want: &'static str| {
        let server = server.clone();
        let write = write.clone();
        async move {
            loaded(&server, &write, "/api/v1/checks/klarna-xs2a")
                .await
                .is_some_and(|c| c["last_round"]["outcome"] == want)
        }
    };
    // Half the locations failed, failure_share 0.5: the round fails.
    until("a failed round", limit, || round_outcome("failed")).await;
    let check = api(&server, &write, "/api/v1/checks/klarna-xs2a").await;
    assert_eq!(check["last_round"]["failed"], json!(["us-east"]));
    assert_eq!(check["health"], "failing");
    let runs = api(&server, &write, "/api/v1/checks/klarna-xs2a/runs?limit=50").await;
    let runs = runs["data"].as_array().unwrap();
    let eu: Vec<&Value> = runs.iter().filter(|r| r["location"] == "eu-west").collect();
    let us: Vec<&Value> = runs.iter().filter(|r| r["location"] == "us-east").collect();
    assert!(
        eu.iter().all(|r| r["outcome"] == "passed") && !eu.is_empty(),
        "{runs:?}"
    );
    assert!(
        us.iter().all(|r| r["outcome"] == "failed") && !us.is_empty(),
        "{runs:?}"
    );
    assert!(us[0]["failed_step"] == "Start Session", "{:?}", us[0]);
    // One round, one result per location, sharing the round id.
    let round = &eu[0]["round_id"];
    assert!(runs.iter().filter(|r| &r["round_id"] == round).count() <= 2);

    // All locations must fail now: one of two makes the round degraded.
    write_flow("1.0");
    until("a degraded round", limit, || round_outcome("degraded")).await;

    // Stored in PostgreSQL, with the location.
    let store = env.store().await;
    let stored = store
        .list_check_runs(&bankbridge_store::CheckRunQuery {
            check_id: Some("klarna-xs2a".into()),
            location: Some("us-east".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!stored.is_empty() && stored.iter().all(|r| r.outcome == "failed"));
    assert!(Path::new(&env.db).to_str().unwrap().starts_with("postgres"));

    // A write token can neither take jobs (they carry secret values) nor
    // list secrets; the agent token can do nothing but the agent routes.
    let http = reqwest::Client::new();
    for (token, path) in [
        (&write, "/api/v1/agent/jobs?location=eu-west"),
        (&eu_token, "/api/v1/agent/jobs?location=us-east"),
        (&write, "/api/v1/check-secrets"),
        (&agent_token, "/api/v1/check-secrets"),
        (&agent_token, "/api/v1/checks"),
        (&agent_token, "/api/v1/accounts"),
    ] {
        let res = http
            .get(format!("{server}{path}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{path}");
    }
    let listed = api(&server, &admin, "/api/v1/check-secrets").await;
    assert_eq!(listed["data"][0]["name"], "xs2a-password");
    assert!(!listed.to_string().contains(PASSWORD), "{listed}");
}

/// `bankbridge check secret set NAME --stdin`, the value on standard input.
fn set_secret(env: &Env, name: &str, value: &str) {
    use std::io::Write;
    let mut child = env
        .command(&["check", "secret", "set", name, "--stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{value}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
