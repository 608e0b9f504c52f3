//! Plain-text accounting exports read by the real tools: a beancount file
//! checked by `bean-check` (beancount 3, PyPI) and summed by `bean-query`,
//! and a journal checked by `hledger check` and summed by hledger and by
//! ledger (Debian's packages). The sandbox's accounts are in three
//! currencies, with pending rows and Cyrillic labels; every tool's balance
//! of each bank account must be the sandbox bank's own.
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

/// A tool of the test virtualenv (beside `BANKBRIDGE_PYTHON`), else of PATH.
fn tool(name: &str) -> Option<PathBuf> {
    if let Ok(python) = std::env::var("BANKBRIDGE_PYTHON") {
        let beside = Path::new(&python).with_file_name(name);
        if beside.exists() {
            return Some(beside);
        }
    }
    Command::new(name)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| PathBuf::from(name))
}

fn run(tool: &Path, args: &[&str]) -> String {
    let out = Command::new(tool).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{}\n{}",
        tool.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// "7030.57 BGN" per account, from lines that name an account and hold an
/// amount with its commodity before it (hledger, ledger) or after it
/// (bean-query).
fn balances(text: &str) -> BTreeMap<String, String> {
    let number = |w: &str| w.parse::<f64>().is_ok();
    text.lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let at = words.iter().position(|w| w.starts_with("Assets:"))?;
            let amount = if at >= 2 && number(words[at - 2]) {
                format!("{} {}", words[at - 2], words[at - 1])
            } else if words.len() >= at + 3 && number(words[at + 1]) {
                format!("{} {}", words[at + 1], words[at + 2])
            } else {
                return None;
            };
            Some((words[at].to_owned(), amount))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn beancount_hledger_and_ledger_read_the_exports_and_agree_with_the_bank() {
    let tools = ["bean-check", "bean-query", "hledger", "ledger"].map(tool);
    if tools.iter().any(Option::is_none) {
        assert!(
            std::env::var_os("CI").is_none(),
            "bean-check, bean-query, hledger and ledger are required in CI (scripts/test.sh installs them)"
        );
        eprintln!(
            "SKIPPED: bean-check, bean-query (pip install beancount beanquery), hledger or ledger missing"
        );
        return;
    }
    let [bean_check, bean_query, hledger, ledger] = tools.map(Option::unwrap);
    let (sb, env) = synced_fibank(17, export_test_rows()).await;
    let truth = fibank_truth(&sb).await;
    let bank: BTreeMap<String, String> = truth
        .iter()
        .map(|a| {
            (
                format!("Assets:Bank:{}", a["iban"].as_str().unwrap()),
                format!(
                    "{} {}",
                    a["balance"].as_str().unwrap(),
                    a["currency"].as_str().unwrap()
                ),
            )
        })
        .collect();
    assert_eq!(bank.len(), 3);
    assert!(
        truth.iter().any(|a| a["pending_count"].as_u64() > Some(0)),
        "the sandbox has pending rows: {truth:?}"
    );

    let dir = env.home.path();
    let bean = dir.join("books.beancount");
    let journal = dir.join("books.journal");
    env.run_ok(&[
        "export",
        "--format",
        "beancount",
        "-o",
        bean.to_str().unwrap(),
    ]);
    env.run_ok(&[
        "export",
        "--format",
        "ledger",
        "-o",
        journal.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&bean).unwrap();
    assert!(text.contains("bank_id: \""), "bank ids as metadata");
    assert!(text.contains("Плащане"), "labels kept as they are");
    assert!(
        text.contains(" balance Assets:Bank:"),
        "the bank's balance asserted"
    );

    // beancount: the file checks (balance assertions included), and its sums are the bank's.
    run(&bean_check, &[bean.to_str().unwrap()]);
    let sums = run(
        &bean_query,
        &[
            bean.to_str().unwrap(),
            "SELECT account, sum(position) WHERE account ~ '^Assets' GROUP BY account",
        ],
    );
    assert_eq!(balances(&sums), bank, "bean-query:\n{sums}");
    eprintln!("bean-query:\n{sums}");

    // hledger: `check` (parse, balanced, assertions), then its balances.
    let journal_path = journal.to_str().unwrap();
    run(&hledger, &["-f", journal_path, "check"]);
    let hl = run(
        &hledger,
        &["-f", journal_path, "bal", "^Assets", "--flat", "-N"],
    );
    assert_eq!(balances(&hl), bank, "hledger bal:\n{hl}");
    eprintln!("hledger bal:\n{hl}");
    // ledger reads the same journal, assertions in file order.
    let lg = run(
        &ledger,
        &["-f", journal_path, "bal", "--flat", "--no-total", "^Assets"],
    );
    assert_eq!(balances(&lg), bank, "ledger bal:\n{lg}");
    eprintln!("ledger bal:\n{lg}\nthe bank: {bank:?}");

    // With pending rows: flagged `!`, no assertion (the bank's booked balance
    // leaves them out), and the totals are booked plus pending.
    let with_pending = dir.join("pending.journal");
    env.run_ok(&[
        "export",
        "--format",
        "ledger",
        "--include-pending",
        "-o",
        with_pending.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&with_pending).unwrap();
    assert!(text.contains(" ! "), "pending rows flagged");
    assert!(!text.contains("Balance reported by the bank"));
    run(&hledger, &["-f", with_pending.to_str().unwrap(), "check"]);
    let hl = run(
        &hledger,
        &[
            "-f",
            with_pending.to_str().unwrap(),
            "bal",
            "^Assets",
            "--flat",
            "-N",
        ],
    );
    let with_pending_truth: BTreeMap<String, String> = truth
        .iter()
        .map(|a| {
            let balance: f64 = a["balance"].as_str().unwrap().parse().unwrap();
            let pending: f64 = a["pending_sum"].as_str().unwrap().parse().unwrap();
            (
                format!("Assets:Bank:{}", a["iban"].as_str().unwrap()),
                format!(
                    "{:.2} {}",
                    balance + pending,
                    a["currency"].as_str().unwrap()
                ),
            )
        })
        .collect();
    assert_eq!(
        balances(&hl),
        with_pending_truth,
        "hledger bal with pending:\n{hl}"
    );
    let pending_bean = dir.join("pending.beancount");
    env.run_ok(&[
        "export",
        "--format",
        "beancount",
        "--include-pending",
        "-o",
        pending_bean.to_str().unwrap(),
    ]);
    run(&bean_check, &[pending_bean.to_str().unwrap()]);

    // A mapping file names the accounts; a wrong name is refused, naming it.
    let first_iban = truth[0]["iban"].as_str().unwrap();
    let map = dir.join("accounts.toml");
    std::fs::write(
        &map,
        format!(
            "opening = \"Equity:Start\"\n[accounts]\n\"{first_iban}\" = \"Assets:Fibank:Current\"\n"
        ),
    )
    .unwrap();
    let mapped = dir.join("mapped.beancount");
    env.run_ok(&[
        "export",
        "--format",
        "beancount",
        "--accounts-map",
        map.to_str().unwrap(),
        "-o",
        mapped.to_str().unwrap(),
    ]);
    run(&bean_check, &[mapped.to_str().unwrap()]);
    let text = std::fs::read_to_string(&mapped).unwrap();
    assert!(text.contains("Assets:Fibank:Current"));
    assert!(text.contains("Equity:Start"));
    std::fs::write(&map, "[accounts]\n\"X\" = \"Assets:bad name\"\n").unwrap();
    let out = env.run(&[
        "export",
        "--format",
        "beancount",
        "--accounts-map",
        map.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("accounts.\"X\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The API serves the same formats.
    env.run_ok(&["token", "create", "--scope", "read", "--name", "books"]);
    let token = env
        .run_ok(&["token", "create", "--scope", "read", "--name", "books-2"])
        .trim()
        .to_owned();
    let (_server, base, _log) = env.serve().await;
    let res = reqwest::Client::new()
        .get(format!("{base}/api/v1/export?format=ledger"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .ends_with(".journal\""),
        "{:?}",
        res.headers()
    );
    let served = dir.join("served.journal");
    std::fs::write(&served, res.bytes().await.unwrap()).unwrap();
    run(&hledger, &["-f", served.to_str().unwrap(), "check"]);
    let hl = run(
        &hledger,
        &[
            "-f",
            served.to_str().unwrap(),
            "bal",
            "^Assets",
            "--flat",
            "-N",
        ],
    );
    assert_eq!(
        balances(&hl),
        bank,
        "hledger bal of the served journal:\n{hl}"
    );
}

/// `export --since-last NAME`: a first export, a sync that brings new rows,
/// a second export that holds only those; hledger imports both (the first
/// twice: the second time adds nothing) and its balances are the bank's;
/// beancount reads both files together (no account opened twice), and a
/// file grown with `--append` checks too.
#[tokio::test(flavor = "multi_thread")]
async fn incremental_exports_hold_only_new_rows_and_import_without_duplicates() {
    let tools = ["bean-check", "bean-query", "hledger"].map(tool);
    if tools.iter().any(Option::is_none) {
        assert!(
            std::env::var_os("CI").is_none(),
            "bean-check, bean-query and hledger are required in CI (scripts/test.sh installs them)"
        );
        eprintln!("SKIPPED: bean-check, bean-query or hledger missing");
        return;
    }
    let [bean_check, bean_query, hledger] = tools.map(Option::unwrap);
    let (sb, env) = synced_fibank(19, 1200).await;
    let truth = || fibank_truth(&sb);
    let booked = |truth: &[Value]| -> u64 {
        truth
            .iter()
            .map(|a| a["booked_count"].as_u64().unwrap())
            .sum()
    };
    let bank = |truth: &[Value]| -> BTreeMap<String, String> {
        truth
            .iter()
            .map(|a| {
                (
                    format!("Assets:Bank:{}", a["iban"].as_str().unwrap()),
                    format!(
                        "{} {}",
                        a["balance"].as_str().unwrap(),
                        a["currency"].as_str().unwrap()
                    ),
                )
            })
            .collect()
    };
    let before = truth().await;
    let dir = env.home.path();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let export = |name: &str, format: &str, file: &str, extra: &[&str]| {
        let mut args = vec![
            "export",
            "--format",
            format,
            "--since-last",
            name,
            "-o",
            file,
        ];
        args.extend_from_slice(extra);
        env.run_ok(&args);
    };
    let count = |text: &str, marker: &str| text.matches(marker).count() as u64;

    export("books", "ledger", &path("first.journal"), &[]);
    export("beans", "beancount", &path("first.beancount"), &[]);
    export(
        "grown",
        "beancount",
        &path("grown.beancount"),
        &["--append"],
    );
    let first = std::fs::read_to_string(path("first.journal")).unwrap();
    assert_eq!(count(&first, "; bank_id: "), booked(&before));

    // Nothing new yet: the next export is empty.
    export("books", "ledger", &path("empty.journal"), &[]);
    let empty = std::fs::read_to_string(path("empty.journal")).unwrap();
    assert_eq!(count(&empty, "; bank_id: "), 0, "{empty}");

    let r = reqwest::Client::new()
        .post(format!("{}/_sandbox/fibank/advance", sb.root_url()))
        .json(&serde_json::json!({"days": 20}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert!(env.sync().1);
    let after = truth().await;
    let new_rows = booked(&after) - booked(&before);
    assert!(new_rows > 0, "the sandbox booked rows in 20 days");

    export("books", "ledger", &path("second.journal"), &[]);
    export("beans", "beancount", &path("second.beancount"), &[]);
    export(
        "grown",
        "beancount",
        &path("grown.beancount"),
        &["--append"],
    );
    let second = std::fs::read_to_string(path("second.journal")).unwrap();
    assert_eq!(
        count(&second, "; bank_id: "),
        new_rows,
        "the second file holds only the new rows"
    );
    assert!(!second.contains("Opening balance"));

    // hledger: import the first file twice and the second once.
    let main = path("main.journal");
    std::fs::write(&main, "").unwrap();
    for file in ["first.journal", "first.journal", "second.journal"] {
        run(&hledger, &["-f", &main, "import", &path(file)]);
    }
    let imported = std::fs::read_to_string(&main).unwrap();
    assert_eq!(
        count(&imported, "; bank_id: "),
        booked(&after),
        "every row imported once"
    );
    run(&hledger, &["-f", &main, "check"]);
    let hl = run(&hledger, &["-f", &main, "bal", "^Assets", "--flat", "-N"]);
    assert_eq!(
        balances(&hl),
        bank(&after),
        "hledger bal after import:\n{hl}"
    );

    // beancount: both files together (no account opened twice), and the grown file.
    let both = path("both.beancount");
    std::fs::write(
        &both,
        "include \"first.beancount\"\ninclude \"second.beancount\"\n",
    )
    .unwrap();
    for file in [&both, &path("grown.beancount")] {
        run(&bean_check, &[file]);
        let sums = run(
            &bean_query,
            &[
                file,
                "SELECT account, sum(position) WHERE account ~ '^Assets' GROUP BY account",
            ],
        );
        assert_eq!(balances(&sums), bank(&after), "bean-query {file}:\n{sums}");
    }

    // A name keeps its format; --append needs a growable format.
    let out = env.run(&["export", "--format", "qif", "--since-last", "books"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a ledger export"));
    let out = env.run(&[
        "export",
        "--format",
        "ofx",
        "--append",
        "-o",
        &path("x.ofx"),
    ]);
    assert!(!out.status.success());
}
