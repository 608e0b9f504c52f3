//! The dashboard's two busiest pages over the sync section's database
//! (300,000 transactions by default): the overview (its charts aggregate
//! every booked row of the last 12 months on each request; nothing is
//! cached) and the first transactions page. A signed-in session asks for
//! each page one request at a time; the time is the request's, sent and
//! read whole over loopback, so it holds the server's time and little else.
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bankbridge_store::{Scope, Store};

use super::{Table, mark, serve_child, thousands};

/// Requests timed per page, after a few that warm the caches of SQLite.
const TIMED: usize = 300;
const WARM: usize = 10;
/// The target for each page's p99.
const P99_MAX_MS: f64 = 100.0;

pub(crate) async fn dashboard_section(store: &dyn Store, dir: &Path, table: &mut Table) {
    let result = async {
        let (token, record) = bankbridge_server::auth::new_token("bench-dashboard", Scope::Read);
        store.create_token(&record).await?;
        let (mut server, base) = serve_child(dir, &[]).await?;
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let res = client
            .post(format!("{base}/login"))
            .header("Sec-Fetch-Site", "same-origin")
            .form(&[("token", token.expose().as_str())])
            .send()
            .await?;
        if res.headers().get("set-cookie").is_none() {
            bail!("signing in gave no session cookie ({})", res.status());
        }
        let mut out = Vec::new();
        for (name, path) in [
            ("overview", "/"),
            ("first transactions page", "/transactions"),
        ] {
            out.push((
                name,
                path,
                time_page(&client, &format!("{base}{path}")).await?,
            ));
        }
        let _ = server.kill().await;
        Ok::<_, anyhow::Error>(out)
    }
    .await;
    match result {
        Ok(pages) => {
            for (name, path, t) in pages {
                let ok = t.p99_ms < P99_MAX_MS;
                table.push(
                    format!("dashboard GET {path} ({name}), signed in"),
                    format!("{} B/page", thousands(t.bytes as u64)),
                    Some(t.total),
                    format!("p50 {:.1} ms", t.p50_ms),
                    format!("p99 {:.1} ms (< {P99_MAX_MS:.0} ms {})", t.p99_ms, mark(ok)),
                    format!(
                        "{TIMED} requests one at a time after {WARM} warm-up; max {:.1} ms; `bankbridge serve` child, loopback",
                        t.max_ms
                    ),
                );
            }
        }
        Err(e) => table.error("dashboard pages", &e),
    }
}

struct PageTimes {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    bytes: usize,
    total: Duration,
}

async fn time_page(client: &reqwest::Client, url: &str) -> Result<PageTimes> {
    let mut times = Vec::with_capacity(TIMED);
    let mut bytes = 0;
    let started = Instant::now();
    for i in 0..WARM + TIMED {
        let t = Instant::now();
        let res = client.get(url).send().await?;
        let status = res.status();
        let body = res.bytes().await.context("reading the page")?;
        let took = t.elapsed();
        if !status.is_success() {
            bail!("{url} answered {status}");
        }
        if i >= WARM {
            times.push(took.as_secs_f64() * 1000.0);
            bytes = body.len();
        }
    }
    let total = started.elapsed();
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    Ok(PageTimes {
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: times[times.len() - 1],
        bytes,
        total,
    })
}
