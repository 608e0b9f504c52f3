//! Helpers shared by the binary's end-to-end tests: a data directory and
//! database per test, running the binary, children that die with the test.
#![allow(dead_code)]

use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bankbridge_sandbox::SandboxHandle;
use bankbridge_store::{Store, TxQuery};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_bankbridge");

/// A data directory and database for one test.
pub struct Env {
    pub home: tempfile::TempDir,
    pub db: String,
}

impl Env {
    pub fn sqlite() -> Env {
        let home = tempfile::tempdir().unwrap();
        let db = home.path().join("bb.db").display().to_string();
        Env { home, db }
    }

    pub async fn postgres() -> Option<Env> {
        let admin = match std::env::var("BANKBRIDGE_TEST_PG_URL") {
            Ok(u) => u,
            Err(_) if std::env::var_os("CI").is_some() => {
                panic!("BANKBRIDGE_TEST_PG_URL is not set in CI: scripts/test.sh starts PostgreSQL")
            }
            Err(_) => {
                eprintln!(
                    "skipped: set BANKBRIDGE_TEST_PG_URL (scripts/test.sh does) to run the PostgreSQL case"
                );
                return None;
            }
        };
        let name = format!(
            "bb_e2e_{}",
            std::process::id() as u64 * 1000 + rand_suffix()
        );
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let mut url = reqwest::Url::parse(&admin).unwrap();
        url.set_path(&name);
        Some(Env {
            home: tempfile::tempdir().unwrap(),
            db: url.to_string(),
        })
    }

    pub fn db_kind(&self) -> &'static str {
        if self.db.starts_with("postgres") {
            "postgres"
        } else {
            "sqlite"
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("BANKBRIDGE_HOME", self.home.path())
            .env("BANKBRIDGE_DB", &self.db)
            .env("BANKBRIDGE_SYNC_BACKOFF_MS", "20")
            .env_remove("BANKBRIDGE_MASTER_KEY")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    pub fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "bankbridge {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `connection add` of the sandbox's Fibank (it logs in first), which must succeed.
    pub fn add_connection(&self, sandbox: &SandboxHandle, name: &str, password: &str) {
        let out = self.try_add_connection(sandbox, name, password, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `connection add` of the sandbox's Fibank with `extra` flags
    /// (`--no-check` for a password the test wants refused at sync).
    pub fn try_add_connection(
        &self,
        sandbox: &SandboxHandle,
        name: &str,
        password: &str,
        extra: &[&str],
    ) -> Output {
        use std::io::Write;
        let creds = sandbox.credentials();
        let base_url = sandbox.base_url();
        let mut args = vec![
            "connection",
            "add",
            "--name",
            name,
            "--connector",
            "fibank",
            "--base-url",
            &base_url,
            "--username",
            &creds.username,
            "--password-stdin",
        ];
        args.extend_from_slice(extra);
        let mut child = self
            .command(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        child.wait_with_output().unwrap()
    }

    /// `init` and a connection to the sandbox's Fibank with its real password.
    pub fn init_with_fibank(&self, sandbox: &SandboxHandle) {
        self.run_ok(&["init"]);
        self.add_connection(sandbox, "fibank", &sandbox.credentials().password);
    }

    pub async fn has_no_transactions(&self) -> bool {
        self.store()
            .await
            .query_transactions(&TxQuery {
                limit: Some(1),
                ..Default::default()
            })
            .await
            .unwrap()
            .is_empty()
    }

    /// `sync --json`: the summary object and whether the command succeeded.
    pub fn sync(&self) -> (Value, bool, String) {
        let out = self.run(&["sync", "--json"]);
        let stdout = String::from_utf8(out.stdout).unwrap();
        let line = stdout.lines().last().unwrap_or("{}");
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"));
        (
            v,
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `bankbridge serve` on a free loopback port, logging at debug level to
    /// a file (a pipe nobody reads would fill up and block the server).
    /// Returns once `/healthz` answers: the child, the base URL, the log path.
    pub async fn serve(&self) -> (KillOnDrop, String, std::path::PathBuf) {
        self.serve_with(&[], &[]).await
    }

    /// `serve` with extra arguments and environment variables.
    pub async fn serve_with(
        &self,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> (KillOnDrop, String, std::path::PathBuf) {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let log_path = self.home.path().join(format!("serve-{port}.log"));
        let log_file = std::fs::File::create(&log_path).unwrap();
        // `{base}` in an argument is the address the server will listen at.
        let base = format!("http://127.0.0.1:{port}");
        let extra: Vec<String> = extra.iter().map(|a| a.replace("{base}", &base)).collect();
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let server = KillOnDrop(Some(
            self.command(
                &[
                    &["serve", "--listen", &format!("127.0.0.1:{port}")],
                    &extra[..],
                ]
                .concat(),
            )
            .envs(envs.iter().copied())
            .env("BANKBRIDGE_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap(),
        ));
        let http = reqwest::Client::new();
        let started = Instant::now();
        while http.get(format!("{base}/healthz")).send().await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "serve did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (server, base, log_path)
    }

    pub async fn store(&self) -> Arc<dyn Store> {
        bankbridge_store::open(&self.db).await.unwrap()
    }

    /// `bankbridge sandbox` with BankID on ephemeral ports: the child, and
    /// the sandbox's root URL once it prints its addresses.
    pub fn bankid_sandbox(&self) -> (KillOnDrop, String) {
        use std::io::BufRead;
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut child = self
            .command(&[
                "sandbox",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--bankid-port",
                "0",
                "--transactions",
                "10",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let child = KillOnDrop(Some(child));
        for line in out.lines() {
            if line.unwrap().starts_with("try it:") {
                return (child, format!("http://127.0.0.1:{port}"));
            }
        }
        panic!("the sandbox ended before printing its BankID address");
    }
}

pub fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        % 1000
}

/// A child process that dies with the test, even when an assertion fails.
pub struct KillOnDrop(pub Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The sandbox Fibank's own totals per account (`/_sandbox/fibank/truth`).
pub async fn fibank_truth(sandbox: &SandboxHandle) -> Vec<Value> {
    reqwest::get(format!("{}/_sandbox/fibank/truth", sandbox.root_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A sandbox Fibank with three accounts (three currencies, pending rows,
/// twins, Cyrillic labels) of `rows` transactions each over two years, and
/// an [`Env`] that has synced it.
pub async fn synced_fibank(seed: u64, rows: usize) -> (SandboxHandle, Env) {
    let sb = bankbridge_sandbox::spawn(bankbridge_sandbox::SandboxConfig {
        seed,
        accounts: 3,
        transactions: rows,
        years: 2,
        ..bankbridge_sandbox::SandboxConfig::default()
    })
    .await
    .unwrap();
    let env = Env::sqlite();
    env.init_with_fibank(&sb);
    assert!(env.sync().1, "the sandbox syncs");
    (sb, env)
}

/// Rows per sandbox account for the export tests:
/// `BANKBRIDGE_EXPORT_TEST_ROWS` (the check used 20000), else 1500.
pub fn export_test_rows() -> usize {
    std::env::var("BANKBRIDGE_EXPORT_TEST_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500)
}
