//! `bankbridge check agent`: one location of the flow checks. It long-polls
//! the server for the jobs of its location, runs each flow here (with this
//! machine's network, environment and `--var`s), and posts the result back.
//! It holds no state: stopping it only leaves its location's results
//! missing, which the server counts as failures of that location.
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use bankbridge_checks::flow;
use bankbridge_checks::runner::{RunOptions, Runner, stored_secrets};
use serde::Deserialize;

#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// The location this agent serves (as named in the flows' [locations]).
    #[arg(long)]
    pub location: String,
    /// The bankbridge server: https, or http to this machine
    /// (e.g. http://127.0.0.1:8080); the token and the jobs' secrets travel
    /// over it.
    #[arg(long, env = "BANKBRIDGE_SERVER", hide_env_values = true)]
    pub server: String,
    /// An API token with the agent scope (`bankbridge token create --scope agent`);
    /// jobs carry the flows' stored secrets, so read and write tokens are refused.
    #[arg(long, env = "BANKBRIDGE_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Set a variable (or secret) for every flow run here: NAME=VALUE. Repeatable.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// Let flows read this environment variable with `{ env = .. }`, beside
    /// the BANKBRIDGE_CHECK_* ones. Repeatable.
    #[arg(long = "allow-env", value_name = "NAME")]
    pub allow_env: Vec<String>,
}

#[derive(Deserialize)]
struct Jobs {
    data: Vec<Job>,
}

#[derive(Deserialize)]
struct Job {
    job_id: String,
    flow_id: String,
    file: String,
    source: String,
    #[serde(default)]
    secrets: BTreeMap<String, String>,
}

pub async fn run(args: AgentArgs) -> Result<ExitCode> {
    let overrides = super::check::parse_vars(&args.vars)?;
    let env_policy = super::check::env_policy(&args.allow_env)?;
    let server =
        bankbridge_core::net::secure_url(&args.server, "--server").map_err(anyhow::Error::msg)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .context("building the HTTP client")?;
    let base = server.as_str().trim_end_matches('/').to_string();
    let runner = Runner::new();
    let auth = format!("Bearer {}", args.token);
    eprintln!("check agent: location {:?}, server {base}", args.location);
    let mut backoff = Duration::from_secs(1);
    loop {
        let answer = http
            .get(format!("{base}/api/v1/agent/jobs"))
            .query(&[("location", args.location.as_str()), ("wait_ms", "20000")])
            .header(reqwest::header::AUTHORIZATION, &auth)
            .send()
            .await;
        let jobs = match answer {
            Ok(r) if r.status().is_success() => Some(match r.json::<Jobs>().await {
                Ok(j) => j.data,
                Err(e) => {
                    tracing::warn!(error = %e, "check agent: the server's answer is not a job list");
                    Vec::new()
                }
            }),
            Ok(r)
                if r.status() == reqwest::StatusCode::UNAUTHORIZED
                    || r.status() == reqwest::StatusCode::FORBIDDEN =>
            {
                anyhow::bail!(
                    "the server refused the token ({}): an agent needs a token of scope agent (`bankbridge token create --scope agent`)",
                    r.status()
                );
            }
            Ok(r) => {
                tracing::warn!(status = %r.status(), "check agent: the server refused the job request; retrying");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "check agent: cannot reach the server; retrying");
                None
            }
        };
        let Some(jobs) = jobs else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
            continue;
        };
        backoff = Duration::from_secs(1);
        for job in jobs {
            let http = http.clone();
            let runner = runner.clone();
            let base = base.clone();
            let auth = auth.clone();
            let location = args.location.clone();
            let overrides = overrides.clone();
            let env_policy = env_policy.clone();
            tokio::spawn(async move {
                let flow = match flow::parse(&job.flow_id, &job.file, &job.source) {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::error!(error = %e, "check agent: the server sent a flow this agent cannot parse");
                        return;
                    }
                };
                // `{ secret = .. }` values come with the job; `{ env = .. }`
                // ones from this agent's own environment.
                let opts = RunOptions {
                    location: location.clone(),
                    overrides,
                    secrets: stored_secrets(job.secrets),
                    env_policy,
                    ..RunOptions::default()
                };
                let report = runner.run_with_retries(&flow, &opts).await;
                tracing::info!(check = %flow.id, outcome = ?report.outcome, ms = report.duration_ms, "check agent: run finished");
                let body = serde_json::json!({ "job_id": job.job_id, "location": location, "report": report });
                // A lost result is a missing location for the server: retry a little.
                for attempt in 0..3 {
                    match http
                        .post(format!("{base}/api/v1/agent/results"))
                        .header(reqwest::header::AUTHORIZATION, &auth)
                        .json(&body)
                        .send()
                        .await
                    {
                        Ok(r)
                            if r.status().is_success()
                                || r.status() == reqwest::StatusCode::CONFLICT =>
                        {
                            return;
                        }
                        Ok(r) => {
                            tracing::warn!(status = %r.status(), "check agent: the server refused a result")
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "check agent: could not send a result")
                        }
                    }
                    tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
                }
            });
        }
    }
}
