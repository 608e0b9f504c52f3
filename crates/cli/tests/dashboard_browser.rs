//! The dashboard in a real browser: `serve` over a synced sandbox bank,
//! driven in Debian's Chromium by `tests/browser/dashboard.mjs`
//! (playwright-core). Screenshots of each page land in
//! `target/browser-artifacts/dashboard/`.
//!
//! Needs /usr/bin/chromium (or `BANKBRIDGE_CHROMIUM`), node, and
//! `npm ci` run in `tests/browser` (scripts/test.sh does both). Without
//! them the test says so and passes, except under CI, where it fails.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use bankbridge_sandbox::SandboxConfig;
use common::Env;

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
async fn a_person_signs_in_reads_filters_exports_and_signs_out() {
    if let Some(why) = missing() {
        assert!(
            std::env::var_os("CI").is_none(),
            "under CI the browser test must run: {why}"
        );
        eprintln!("skipped: {why}");
        return;
    }
    let sandbox = bankbridge_sandbox::spawn(SandboxConfig {
        seed: 11,
        accounts: 2,
        transactions: 300,
        years: 2,
        ..SandboxConfig::default()
    })
    .await
    .unwrap();
    let env = Env::sqlite();
    env.init_with_fibank(&sandbox);
    let (summary, ok, err) = env.sync();
    assert!(ok, "sync failed: {summary} {err}");
    let token = env
        .run_ok(&["token", "create", "--scope", "read", "--name", "browser"])
        .trim()
        .to_owned();
    let (_server, base, log) = env.serve().await;
    let shots =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/browser-artifacts/dashboard");
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("node")
        .arg(browser_dir().join("dashboard.mjs"))
        .args([&base, &token, &shots.display().to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser run failed:\n{stdout}\n{stderr}\nserve's log: {}",
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    for page in ["login", "overview", "transactions"] {
        assert!(
            shots.join(format!("{page}.png")).exists(),
            "a screenshot of {page}"
        );
    }
}
