//! The official GoCardless Python client (`nordigen` from PyPI, installed
//! by scripts/test.sh into its virtualenv) runs its quick-start against the
//! simulated API over loopback, with only its base URL changed: tokens,
//! institutions, agreement and requisition, the bank visit, then each
//! account's metadata, details, balances and transactions, which match the
//! simulator's truth.
//!
//! Needs Python with `nordigen` (`BANKBRIDGE_PYTHON`, default
//! target/test-venv/bin/python); skips without it unless CI is set.
use std::process::Command;

use bankbridge_sandbox::SandboxConfig;
use serde_json::Value;

fn python() -> Option<String> {
    let py = std::env::var("BANKBRIDGE_PYTHON").unwrap_or_else(|_| {
        format!(
            "{}/../../target/test-venv/bin/python",
            env!("CARGO_MANIFEST_DIR")
        )
    });
    let has = Command::new(&py)
        .args(["-c", "import nordigen"])
        .output()
        .is_ok_and(|o| o.status.success());
    if has {
        return Some(py);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{py} has no `nordigen` module, and CI must run this test: scripts/test.sh installs it"
        );
    }
    eprintln!("skipped: {py} has no `nordigen` (scripts/test.sh installs it)");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_client_runs_its_quick_start() {
    let Some(py) = python() else { return };
    let sb = bankbridge_sandbox::spawn(SandboxConfig {
        seed: 3,
        accounts: 2,
        transactions: 300,
        years: 1,
        ..SandboxConfig::default()
    })
    .await
    .unwrap();
    let gc = sb.state().gocardless().clone();
    let creds = gc.credentials();
    let script = format!(
        "{}/tests/gocardless_quickstart.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let root = sb.root_url();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(py)
            .args([&script, &root, &creds.secret_id, &creds.secret_key])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "the client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        seen["banks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b == "SANDBOXFINANCE_SFIN0000")
    );
    assert_eq!(seen["revolut"], "REVOLUT_REVOLT21");
    assert_eq!(seen["status"], "LN");
    assert!(
        seen["back"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:9/back?ref=")
    );
    let truth = gc.truth();
    let accounts = seen["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), truth.len());
    for t in truth {
        let a = accounts
            .iter()
            .find(|a| a["iban"] == t.iban.as_str())
            .unwrap();
        assert_eq!(a["details_iban"], t.iban.as_str());
        assert_eq!(a["status"], "READY");
        assert_eq!(a["booked"].as_u64().unwrap(), t.booked_count, "{a}");
        // The truth's sum has two decimals: in minor units without the dot.
        let minor: i64 = t.booked_sum.replace('.', "").parse().unwrap();
        assert_eq!(a["booked_sum"].as_str().unwrap(), minor.to_string(), "{a}");
        assert_eq!(a["pending"].as_u64().unwrap(), t.pending_count);
        assert!(a["newest_day"].as_u64().unwrap() >= 1);
        assert_eq!(a["balances"], 2);
    }
}
