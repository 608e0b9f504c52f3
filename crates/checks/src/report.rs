//! What a run looks like to people and to CI: the per-step table printed by
//! `check run`, and the JSON and JUnit reports written with `--report`.
//! Reports are built from [`RunReport`]s, whose secrets the runner has
//! already masked.
use std::fmt::Write as _;

use crate::runner::{RunReport, StepOutcome};
use crate::schedule::Outcome;

/// Report formats of `check run --report FORMAT FILE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Junit,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(Format::Json),
            "junit" => Ok(Format::Junit),
            other => Err(format!("unknown report format {other:?} (json or junit)")),
        }
    }
}

pub fn outcome_word(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Passed => "PASSED",
        Outcome::Degraded => "DEGRADED",
        Outcome::Failed => "FAILED",
    }
}

/// The per-step table of one run.
pub fn table(run: &RunReport) -> String {
    let mut rows: Vec<[String; 5]> = vec![[
        "#".into(),
        "STEP".into(),
        "STATUS".into(),
        "TIME".into(),
        "DETAIL".into(),
    ]];
    for s in &run.steps {
        let status = match (s.outcome, &s.response) {
            (StepOutcome::Skipped, _) => "skipped".to_string(),
            (o, Some(r)) => format!("{} {}", o.as_str(), r.status),
            (o, None) => o.as_str().to_string(),
        };
        let time = if s.outcome == StepOutcome::Skipped {
            "-".to_string()
        } else {
            format!("{} ms", s.duration_ms)
        };
        let mut detail: Vec<String> = s
            .captures
            .iter()
            .map(|(k, v)| format!("{k}={}", ellipsis(v, 40)))
            .collect();
        if let Some(note) = &s.note {
            detail.push(note.clone());
        }
        if let Some(e) = &s.error {
            detail.push(ellipsis(e, 160));
        }
        if s.requests > 1 {
            detail.push(format!("{} requests", s.requests));
        }
        rows.push([
            (s.index + 1).to_string(),
            s.name.clone(),
            status,
            time,
            detail.join("  "),
        ]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} at {} — {}",
        run.flow_name,
        run.location,
        run.started_at.format("%Y-%m-%d %H:%M:%S UTC")
    );
    for r in &rows {
        let mut line = String::new();
        for (c, w) in widths.iter().enumerate() {
            let _ = write!(line, "{:<w$}  ", r[c], w = *w);
        }
        line.push_str(&r[4]);
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let _ = write!(
        out,
        "{} in {} ms",
        outcome_word(run.outcome),
        run.duration_ms
    );
    if run.attempts > 1 {
        let _ = write!(out, " after {} attempts", run.attempts);
    }
    if let Some(step) = &run.failed_step {
        let _ = write!(out, " — failed at step {step:?}");
    } else if let Some(e) = &run.error {
        let _ = write!(out, " — {e}");
    }
    out.push('\n');
    out
}

fn ellipsis(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let cut: String = text.chars().take(max).collect();
        format!("{cut}…")
    }
}

/// The runs as pretty JSON.
pub fn json(runs: &[RunReport]) -> String {
    serde_json::to_string_pretty(runs).unwrap_or_else(|_| "[]".into())
}

/// The runs as JUnit XML: one test suite per run, one test case per step.
pub fn junit(runs: &[RunReport]) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let failures: usize = runs.iter().map(failed_cases).sum();
    let tests: usize = runs.iter().map(|r| r.steps.len().max(1)).sum();
    let _ = writeln!(
        out,
        "<testsuites name=\"bankbridge checks\" tests=\"{tests}\" failures=\"{failures}\">"
    );
    for run in runs {
        let skipped = run
            .steps
            .iter()
            .filter(|s| s.outcome == StepOutcome::Skipped)
            .count();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{:.3}\" timestamp=\"{}\" hostname=\"{}\">",
            xml(&run.flow_name),
            run.steps.len().max(1),
            failed_cases(run),
            skipped,
            run.duration_ms as f64 / 1000.0,
            run.started_at.format("%Y-%m-%dT%H:%M:%S"),
            xml(&run.location),
        );
        if run.steps.is_empty() {
            let _ = writeln!(
                out,
                "    <testcase name=\"setup\" classname=\"{}\">",
                xml(&run.flow_id)
            );
            if let Some(e) = &run.error {
                let _ = writeln!(out, "      <failure message=\"{}\"/>", xml(e));
            }
            let _ = writeln!(out, "    </testcase>");
        }
        for s in &run.steps {
            let _ = write!(
                out,
                "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
                xml(&format!("{}. {}", s.index + 1, s.name)),
                xml(&run.flow_id),
                s.duration_ms as f64 / 1000.0
            );
            match s.outcome {
                StepOutcome::Failed => {
                    let message = s.error.clone().unwrap_or_else(|| "failed".into());
                    let mut body = String::new();
                    if let Some(req) = &s.request {
                        let _ = writeln!(body, "{} {}", req.method, req.url);
                    }
                    if let Some(resp) = &s.response {
                        let _ = writeln!(body, "status {}", resp.status);
                        if let Some(b) = &resp.body {
                            let _ = writeln!(body, "{}", ellipsis(b, 2000));
                        }
                    }
                    let _ = writeln!(
                        out,
                        ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                        xml(&message),
                        xml(&body)
                    );
                }
                StepOutcome::Skipped => {
                    let _ = writeln!(
                        out,
                        ">\n      <skipped message=\"an earlier step failed\"/>\n    </testcase>"
                    );
                }
                StepOutcome::Degraded => {
                    let _ = writeln!(
                        out,
                        ">\n      <system-out>{}</system-out>\n    </testcase>",
                        xml(s.note.as_deref().unwrap_or("degraded"))
                    );
                }
                StepOutcome::Passed => {
                    let _ = writeln!(out, "/>");
                }
            }
        }
        let _ = writeln!(out, "  </testsuite>");
    }
    out.push_str("</testsuites>\n");
    out
}

/// A run's failed test cases: its failed steps, or its setup when it failed
/// before any step.
fn failed_cases(run: &RunReport) -> usize {
    let steps_failed = run
        .steps
        .iter()
        .filter(|s| s.outcome == StepOutcome::Failed)
        .count();
    steps_failed + usize::from(run.steps.is_empty() && run.outcome == Outcome::Failed)
}

/// Escapes text for XML attributes and content (and drops the control
/// characters XML 1.0 cannot carry at all).
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' | '\r' => out.push(' '),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::{ResponseRecord, StepReport};
    use std::collections::BTreeMap;

    fn run() -> RunReport {
        let step = |i: usize, name: &str, outcome: StepOutcome| StepReport {
            index: i,
            name: name.into(),
            kind: "http".into(),
            outcome,
            duration_ms: 12,
            requests: 1,
            request: None,
            response: Some(ResponseRecord {
                status: if outcome == StepOutcome::Failed {
                    503
                } else {
                    200
                },
                headers: vec![],
                body: Some("<oops & \"quotes\">".into()),
                size: 17,
                truncated: false,
            }),
            captures: BTreeMap::from([("sid".to_string(), "abc".to_string())]),
            asserts: vec![],
            error: (outcome == StepOutcome::Failed)
                .then(|| "assert failed: status is 2xx (got 503)".into()),
            note: None,
        };
        RunReport {
            flow_id: "demo".into(),
            flow_name: "Demo <flow>".into(),
            location: "local".into(),
            started_at: chrono::Utc::now(),
            duration_ms: 40,
            outcome: Outcome::Failed,
            attempts: 1,
            failed_step: Some("Get Consent".into()),
            error: Some("assert failed".into()),
            network_error: false,
            steps: vec![
                step(0, "Start Session", StepOutcome::Passed),
                step(1, "Get Consent", StepOutcome::Failed),
                StepReport {
                    response: None,
                    ..step(2, "Balances", StepOutcome::Skipped)
                },
            ],
        }
    }

    #[test]
    fn the_table_names_the_failed_step() {
        let t = table(&run());
        assert!(t.contains("Get Consent"), "{t}");
        assert!(t.contains("failed 503"), "{t}");
        assert!(t.contains("skipped"), "{t}");
        assert!(t.contains("sid=abc"), "{t}");
        assert!(
            t.trim_end().ends_with("failed at step \"Get Consent\""),
            "{t}"
        );
    }

    #[test]
    fn junit_is_escaped_and_counts_failures() {
        let x = junit(&[run()]);
        assert!(x.contains("failures=\"1\""), "{x}");
        assert!(x.contains("name=\"Demo &lt;flow&gt;\""), "{x}");
        assert!(x.contains("&lt;oops &amp; &quot;quotes&quot;&gt;"), "{x}");
        assert!(x.contains("<skipped"), "{x}");
        assert!(!x.contains("<oops"), "{x}");
    }
}
