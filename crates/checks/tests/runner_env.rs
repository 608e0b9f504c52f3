//! What a flow may read from the environment, and what a run keeps of
//! credential-looking fields: a flow runs against a local receiver with the
//! environment given as a map, under the operator's allowance.
use std::collections::BTreeMap;
use std::sync::Arc;

use bankbridge_checks::env::{EnvPolicy, EnvSource};
use bankbridge_checks::flow;
use bankbridge_checks::runner::{RunOptions, Runner};
use bankbridge_checks::schedule::Outcome;
use bankbridge_sandbox::receivers::HttpReceiver;

fn flow_text(url: &str, secret_env: &str, var_env: &str, extra: &str) -> String {
    format!(
        r#"name = "Env"
{extra}

[vars]
base = "{url}"
region = {{ env = "{var_env}" }}

[secrets]
token = {{ env = "{secret_env}" }}

[[steps]]
name = "Post"
method = "POST"
url = "{{{{ base }}}}/in/{{{{ region }}}}?access_token={{{{ token }}}}&page=1"
json = {{ password = "p-{{{{ token }}}}", consent_id = "c-77", user = "jo" }}
"#
    )
}

fn env_of(pairs: &[(&str, &str)]) -> EnvSource {
    let map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Arc::new(move |name| map.get(name).cloned())
}

fn options(env: EnvSource, allowed: &[&str]) -> RunOptions {
    RunOptions {
        env,
        env_policy: Arc::new(EnvPolicy::with_allowed(allowed.iter().copied()).unwrap()),
        ..RunOptions::default()
    }
}

#[tokio::test]
async fn flows_read_only_the_environment_meant_for_them() {
    let target = HttpReceiver::start().await.unwrap();
    let env = env_of(&[
        ("BANKBRIDGE_MASTER_KEY", "the-master-key"),
        ("BANKBRIDGE_CHECK_TOKEN", "tok-123"),
        ("REGION", "eu"),
    ]);
    let runner = Runner::new();
    let url = target.url();
    let url = url.trim_end_matches('/');

    // bankbridge's own secret: refused by name, even with --allow-env.
    let f = flow::parse(
        "a",
        "a.toml",
        &flow_text(url, "BANKBRIDGE_MASTER_KEY", "REGION", ""),
    )
    .unwrap();
    let report = runner.run(&f, &options(env.clone(), &["REGION"])).await;
    assert_eq!(report.outcome, Outcome::Failed);
    let error = report.error.clone().unwrap();
    assert!(error.contains("never given to a flow"), "{error}");
    assert!(!format!("{report:?}").contains("the-master-key"));
    assert!(EnvPolicy::with_allowed(["BANKBRIDGE_MASTER_KEY"]).is_err());

    // A plain name the operator did not allow: refused, saying how to allow it.
    let f = flow::parse(
        "b",
        "b.toml",
        &flow_text(url, "BANKBRIDGE_CHECK_TOKEN", "REGION", ""),
    )
    .unwrap();
    let report = runner.run(&f, &options(env.clone(), &[])).await;
    assert_eq!(report.outcome, Outcome::Failed);
    assert!(
        report
            .error
            .as_deref()
            .unwrap()
            .contains("--allow-env REGION"),
        "{:?}",
        report.error
    );
    assert!(target.requests().is_empty(), "nothing was sent");

    // Allowed: the run goes through, and what it keeps is masked.
    let report = runner.run(&f, &options(env, &["REGION"])).await;
    assert_eq!(report.outcome, Outcome::Passed, "{:?}", report.error);
    let sent = target.requests();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].path.starts_with("/in/eu?"), "{}", sent[0].path);
    let kept = serde_json::to_string(&report).unwrap();
    assert!(!kept.contains("tok-123"), "the secret is masked: {kept}");
    let request = report.steps[0].request.as_ref().unwrap();
    assert!(
        request.url.contains("access_token=***&page=1"),
        "{}",
        request.url
    );
    let body: serde_json::Value = serde_json::from_str(request.body.as_deref().unwrap()).unwrap();
    assert_eq!(body["password"], "***");
    assert_eq!(
        body["consent_id"], "***",
        "credential-looking fields are masked too"
    );
    assert_eq!(body["user"], "jo");
}

#[tokio::test]
async fn a_flow_can_keep_its_fields_as_sent() {
    let target = HttpReceiver::start().await.unwrap();
    let url = target.url();
    let text = flow_text(
        url.trim_end_matches('/'),
        "BANKBRIDGE_CHECK_TOKEN",
        "BANKBRIDGE_CHECK_REGION",
        "mask_credential_fields = false",
    );
    let f = flow::parse("c", "c.toml", &text).unwrap();
    let env = env_of(&[
        ("BANKBRIDGE_CHECK_TOKEN", "tok-9"),
        ("BANKBRIDGE_CHECK_REGION", "us"),
    ]);
    let report = Runner::new().run(&f, &options(env, &[])).await;
    assert_eq!(report.outcome, Outcome::Passed, "{:?}", report.error);
    let request = report.steps[0].request.as_ref().unwrap();
    let body: serde_json::Value = serde_json::from_str(request.body.as_deref().unwrap()).unwrap();
    // The flow's own secret is masked whatever the option; the rest is kept.
    assert_eq!(body["password"], "p-***");
    assert_eq!(body["consent_id"], "c-77");
}
