//! Fidelity: an independent Python client written in the manner of the user
//! story's connector (requests, redirects followed, token from the second
//! redirect, a literal `%2B0200` in FromDate, summary lines skipped, every
//! other statement line parsed strictly into typed fields) must read exactly
//! the sandbox's truth.
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use bankbridge_sandbox::SandboxConfig;
use serde::Deserialize;

#[derive(Debug, Deserialize, PartialEq, Eq)]
struct Totals {
    count: u64,
    sum: String,
    pending_count: u64,
    pending_sum: String,
}

/// `BANKBRIDGE_PYTHON` (set by scripts/test.sh when it installs `requests`
/// into a virtualenv), else `python3`.
fn python() -> String {
    std::env::var("BANKBRIDGE_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

fn requests_available() -> bool {
    Command::new(python())
        .args(["-c", "import requests"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[tokio::test]
async fn the_story_python_client_reads_the_truth() {
    if !requests_available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 with the `requests` module is required in CI (pip install requests)"
        );
        eprintln!(
            "SKIPPED: python3 with `requests` is not available here (pip install requests to run this test)"
        );
        return;
    }
    // ToDate is "now", so the sandbox day must be today (the default).
    let sb = bankbridge_sandbox::spawn(SandboxConfig {
        seed: 2022,
        accounts: 3,
        transactions: 400,
        years: 2,
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox starts");
    let creds = sb.credentials();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python_client.py");
    let base = sb.base_url();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(script)
            .args([&base, &creds.username, &creds.password])
            .output()
    })
    .await
    .unwrap()
    .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: BTreeMap<String, Totals> = serde_json::from_str(stdout.trim()).expect("JSON totals");
    let truth = sb.truth();
    assert_eq!(got.len(), truth.len());
    for t in &truth {
        let g = &got[&t.iban];
        assert_eq!(
            g,
            &Totals {
                count: t.booked_count,
                sum: t.booked_sum.clone(),
                pending_count: t.pending_count,
                pending_sum: t.pending_sum.clone(),
            },
            "{}",
            t.iban
        );
        assert!(t.booked_count > 300, "{t:?}");
    }
    assert!(
        truth.iter().any(|t| t.pending_count > 0),
        "the sandbox day has open card holds, so the strict parse meets them"
    );
    sb.shutdown().await.unwrap();
}
