//! Interoperability: pybankid, the Python BankID client of the user story
//! (installed from PyPI, unmodified), against the simulator over mutual TLS.
//! The script (`tests/interop/pybankid_sim.py`) replays pybankid's own live
//! tests and full flows in which the simulated user scans the QR code
//! pybankid generates.
use std::path::Path;
use std::process::Command;

use bankbridge_sandbox::{BankIdSandboxConfig, SandboxConfig};

/// `BANKBRIDGE_PYTHON` (scripts/test.sh points it at a virtualenv holding
/// pybankid), else `python3`.
fn python() -> String {
    std::env::var("BANKBRIDGE_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

fn pybankid_available() -> bool {
    Command::new(python())
        .args(["-c", "import bankid, httpx"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[tokio::test]
async fn pybankid_works_against_the_simulator() {
    if !pybankid_available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 with pybankid is required in CI (scripts/test.sh installs it into target/test-venv)"
        );
        eprintln!(
            "SKIPPED: {} cannot import pybankid (pip install pybankid, or run scripts/test.sh)",
            python()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sb = bankbridge_sandbox::spawn(SandboxConfig {
        seed: 3,
        accounts: 1,
        transactions: 5,
        years: 1,
        bankid: Some(BankIdSandboxConfig {
            cert_dir: dir.path().to_path_buf(),
            ..BankIdSandboxConfig::default()
        }),
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox with BankID starts");
    let bankid = sb.bankid().expect("BankID simulator");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/pybankid_sim.py");
    let root = sb.root_url();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(script)
            .arg(&bankid.base_url)
            .arg(&bankid.ca_cert)
            .arg(&bankid.rp_cert)
            .arg(&bankid.rp_key)
            .arg(root)
            .output()
    })
    .await
    .unwrap()
    .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pybankid checks failed:\n{stdout}\n{stderr}"
    );
    // Every check ran (a silently shrinking script would pass vacuously).
    assert!(stdout.contains("16 passed, 0 failed"), "{stdout}\n{stderr}");
    eprintln!("{stdout}");
    sb.shutdown().await.unwrap();
}
