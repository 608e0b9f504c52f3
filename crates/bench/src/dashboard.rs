//! The dashboard's two busiest pages over the sync section's database
//! (300,000 transactions by default): the overview and the first
//! transactions page. A signed-in session asks for each page one request at
//! a time; the time is the request's, sent and read whole over loopback, so
//! it holds the server's time and little else.
//!
//! The overview's charts sum every booked row of the last 12 months; the
//! sums are kept while no transaction changes, so the overview is timed
//! twice: as people mostly see it (nothing changed since the last view) and
//! right after a change (a category set by hand before each request), when
//! it sums anew.
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bankbridge_store::{Scope, Store};

use super::{Table, mark, serve_child, thousands};

/// Requests timed per page, after a few that warm the caches of SQLite.
const TIMED: usize = 300;
const WARM: usize = 10;
/// Overviews timed right after a change.
const COLD: usize = 30;
/// The target for each page's p99.
const P99_MAX_MS: f64 = 100.0;

pub(crate) async fn dashboard_section(store: &dyn Store, dir: &Path, table: &mut Table) {
    let result = async {
        // Write: the cold overview follows a category set by hand.
        let (token, record) = bankbridge_server::auth::new_token("bench-dashboard", Scope::Write);
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
        out.push((
            "overview right after a change",
            "/",
            time_cold(&client, &base).await?,
        ));
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
                        "{} requests one at a time; max {:.1} ms; `bankbridge serve` child, loopback",
                        if name.contains("change") { format!("{COLD} (each after a category set by hand)") } else { format!("{TIMED} after {WARM} warm-up") },
                        t.max_ms
                    ),
                );
            }
        }
        Err(e) => table.error("dashboard pages", &e),
    }
}

/// The overview, each time right after a category was set by hand.
async fn time_cold(client: &reqwest::Client, base: &str) -> Result<PageTimes> {
    let page = client
        .get(format!("{base}/transactions"))
        .send()
        .await?
        .text()
        .await?;
    let field = |marker: &str| -> Result<String> {
        let at = page
            .find(marker)
            .context("the transactions page has no category form")?
            + marker.len();
        Ok(page[at..].split('"').next().unwrap_or_default().to_owned())
    };
    let csrf = field("name=\"csrf\" value=\"")?;
    let action = format!("/transactions/{}", field("action=\"/transactions/")?);
    let mut times = Vec::with_capacity(COLD);
    let mut bytes = 0;
    let started = Instant::now();
    for i in 0..COLD {
        let set = client
            .post(format!("{base}{action}"))
            .header("Sec-Fetch-Site", "same-origin")
            .form(&[
                ("csrf", csrf.as_str()),
                ("category", if i % 2 == 0 { "bench-a" } else { "bench-b" }),
                ("back", "/transactions"),
            ])
            .send()
            .await?;
        if !set.status().is_redirection() {
            bail!("setting a category answered {}", set.status());
        }
        let t = Instant::now();
        let res = client.get(format!("{base}/")).send().await?;
        let status = res.status();
        bytes = res.bytes().await?.len();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        if !status.is_success() {
            bail!("the overview answered {status}");
        }
    }
    Ok(PageTimes::of(times, bytes, started.elapsed()))
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
    Ok(PageTimes::of(times, bytes, started.elapsed()))
}

impl PageTimes {
    fn of(mut times: Vec<f64>, bytes: usize, total: Duration) -> Self {
        times.sort_by(f64::total_cmp);
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        PageTimes {
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: times[times.len() - 1],
            bytes,
            total,
        }
    }
}
