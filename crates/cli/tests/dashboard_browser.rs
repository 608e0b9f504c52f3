//! The dashboard in a real browser: one `serve` over a synced sandbox bank,
//! with flow checks, a virtual card in vpcd (through pcscd) and the BankID
//! simulator, driven in Debian's Chromium by `tests/browser/dashboard.mjs`
//! (playwright-core) through every page as people use them. Screenshots of
//! each page land in `target/browser-artifacts/dashboard/`.
//!
//! Needs /usr/bin/chromium (or `BANKBRIDGE_CHROMIUM`), node, and
//! `npm ci` run in `tests/browser` (scripts/test.sh does both). Without
//! them the test says so and passes, except under CI, where it fails.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use bankbridge_cap::pcsc::wait_for_card;
use bankbridge_cap::vpcd::SlotsLock;
use bankbridge_sandbox::{BankIdSandboxConfig, SandboxConfig};
use common::{Env, KillOnDrop};

/// vpcd's first slot, where the virtual card sits.
const SLOT0: &str = "Virtual PCD 00 00";
const CARD_PIN: &str = "24681357";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Why the browser test cannot run here, if it cannot.
fn missing() -> Option<String> {
    let chromium =
        std::env::var("BANKBRIDGE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Some(format!(
            "no Chromium at {chromium} (apt-get install chromium)"
        ));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("no node on PATH".into());
    }
    if !browser_dir().join("node_modules/playwright-core").exists() {
        return Some(format!(
            "playwright-core is not installed: run `npm ci` in {}",
            browser_dir().display()
        ));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_use_every_page_in_chromium() {
    if let Some(why) = missing() {
        assert!(
            std::env::var_os("CI").is_none(),
            "under CI the browser test must run: {why}"
        );
        eprintln!("skipped: {why}");
        return;
    }
    // The card team's part needs a virtual card in vpcd (pcscd): the slot lock
    // says whether pcscd is here (and fails under CI when it is not).
    let Some(_slots) = SlotsLock::for_tests() else {
        return;
    };
    let env = Env::sqlite();
    let sandbox = bankbridge_sandbox::spawn(SandboxConfig {
        seed: 11,
        accounts: 2,
        transactions: 300,
        years: 2,
        bankid: Some(BankIdSandboxConfig {
            cert_dir: env.home.path().join("bankid-certs"),
            ..BankIdSandboxConfig::default()
        }),
        ..SandboxConfig::default()
    })
    .await
    .unwrap();
    env.init_with_fibank(&sandbox);
    let (summary, ok, err) = env.sync();
    assert!(ok, "sync failed: {summary} {err}");

    // Flow checks: the example flow against the sandbox, and a file that does not load.
    let flows = env.home.path().join("flows");
    std::fs::create_dir(&flows).unwrap();
    let example = std::fs::read_to_string(repo("examples/flows/klarna-xs2a.toml"))
        .unwrap()
        .replace(
            "base_url = \"http://127.0.0.1:9000/xs2a-playground\"",
            &format!("base_url = \"{}/xs2a-playground\"", sandbox.root_url()),
        )
        .replace("every = \"1m\"", "every = \"1h\"");
    std::fs::write(flows.join("klarna-xs2a.toml"), example).unwrap();
    std::fs::write(
        flows.join("typo.toml"),
        "name = \"A flow with a typo\"\n\n[schedule]\nevry = \"1m\"\n",
    )
    .unwrap();
    let api_token = sandbox.state().xs2a_playground().credentials().api_token;

    // A virtual card in vpcd's first slot, as a USB reader would hold it.
    let _card = KillOnDrop(Some(
        env.command(&[
            "card",
            "virtual",
            "--vpcd",
            "127.0.0.1:35963",
            "--profile",
            "cap-be",
            "--pin",
            CARD_PIN,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    ));
    wait_for_card(SLOT0, Duration::from_secs(15)).expect("pcscd sees the virtual card");

    let root = sandbox.root_url();
    let (_server, base, log) = env
        .serve_with(
            &[
                "--checks",
                flows.to_str().unwrap(),
                "--bankid-sandbox",
                &root,
                // Redirect SCA comes back to this server (Klarna's bank page).
                "--public-url",
                "{base}",
            ],
            &[
                ("BANKBRIDGE_CHECK_XS2A_API_TOKEN", api_token.as_str()),
                ("BANKBRIDGE_CHECK_XS2A_PASSWORD", "123456"),
            ],
        )
        .await;
    let read_token = env
        .run_ok(&[
            "token",
            "create",
            "--scope",
            "read",
            "--name",
            "browser-read",
        ])
        .trim()
        .to_owned();
    let created = env.run_ok(&[
        "token",
        "create",
        "--scope",
        "admin",
        "--name",
        "browser-admin",
        "--login",
        "--url",
        &base,
    ]);
    let admin_link = created
        .lines()
        .find(|l| l.contains("/login/link/"))
        .expect("a sign-in link")
        .trim()
        .to_owned();
    let keypad = sandbox.keypad().credentials();
    let klarna = sandbox.klarna().credentials();
    let shots =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/browser-artifacts/dashboard");
    std::fs::create_dir_all(&shots).unwrap();
    let config = serde_json::json!({
        "base": base,
        "adminLink": admin_link,
        "readToken": read_token,
        "sandboxRoot": root,
        "keypad": {"baseUrl": sandbox.keypad_base_url(), "identifier": keypad.identifier, "pin": keypad.pin},
        "card": {"reader": SLOT0, "pin": CARD_PIN},
        "klarna": {
            "baseUrl": format!("{root}{}", bankbridge_sandbox::xs2a_playground::PREFIX),
            "username": klarna.username,
            "token": klarna.api_token,
            "bankCode": klarna.bank_code,
            "countryCode": klarna.country_code,
            "pin": klarna.password,
        },
        "shots": shots.display().to_string(),
    });
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(browser_dir().join("dashboard.mjs"))
            .arg(config.to_string())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "the browser run failed:\n{stdout}\n{stderr}\nserve's log: {}",
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
    for page in [
        "login",
        "overview",
        "transactions",
        "connections",
        "sync-approval",
        "sync",
        "documents",
        "document",
        "cards",
        "card",
        "card-audit",
        "checks",
        "check",
        "run",
        "bankid",
        "bankid-complete",
        "tokens",
        "overview-phone",
        "forbidden",
    ] {
        assert!(
            shots.join(format!("{page}.png")).exists(),
            "a screenshot of {page}"
        );
    }
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}
