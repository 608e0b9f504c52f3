//! Several `bankbridge serve` processes on one PostgreSQL, as a team runs
//! them behind a load balancer: each registers under its name (a live name
//! cannot be taken twice), each lists the others with their heartbeats (API
//! and `/metrics`), a revoked token stops working on each within 5 s, a
//! killed one shows as gone and frees its name, and the
//! scheduled syncs of a connection run one at a time, each slot once,
//! whichever instance claims it.
use std::time::{Duration, Instant};

use bankbridge_sandbox::{SandboxConfig, SandboxHandle};
use serde_json::Value;

mod common;

use common::Env;

/// A sync job's status, start, end and error, from the database.
type JobRow = (
    String,
    Option<chrono::DateTime<chrono::Utc>>,
    Option<chrono::DateTime<chrono::Utc>>,
    Option<String>,
);

/// A fresh PostgreSQL database with one Fibank connection to a new
/// sandbox bank; None without `BANKBRIDGE_TEST_PG_URL`.
async fn postgres_with_fibank(config: SandboxConfig) -> Option<(Env, SandboxHandle)> {
    let env = Env::postgres().await?;
    let sb = bankbridge_sandbox::spawn(config).await.unwrap();
    env.init_with_fibank(&sb);
    Some((env, sb))
}

/// The JSON `GET url` answers with `token`.
async fn get_json(url: &str, token: &str) -> Value {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn instances(base: &str, token: &str) -> Vec<Value> {
    let v = get_json(&format!("{base}/api/v1/instances"), token).await;
    v["data"].as_array().cloned().unwrap_or_default()
}

fn named<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
    list.iter().find(|i| i["name"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_instances_on_one_postgres_register_beat_and_sync_each_slot_once() {
    let Some((env, _sb)) = postgres_with_fibank(SandboxConfig {
        seed: 19,
        accounts: 2,
        transactions: 150,
        years: 1,
        ..SandboxConfig::default()
    })
    .await
    else {
        return;
    };
    // Every 2 s: many slots in a few seconds. The CLI and the API refuse
    // intervals under a minute (banks do not like being polled), so the
    // test writes the setting itself.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&env.db)
        .await
        .unwrap();
    sqlx::query("UPDATE connections SET settings = jsonb_set(settings, '{interval_secs}', '2')")
        .execute(&mut conn)
        .await
        .unwrap();
    let admin = env
        .run_ok(&["token", "create", "--scope", "admin", "--name", "ops"])
        .trim()
        .to_owned();
    let tick = ["--scheduler-tick", "1"];
    let (mut a, base_a, _) = env
        .serve_with(&[&["--instance-name", "a"][..], &tick].concat(), &[])
        .await;
    let (_b, base_b, _) = env
        .serve_with(&[&["--instance-name", "b"][..], &tick].concat(), &[])
        .await;

    // A third process under a live name is refused, and says by whom.
    let out = env.run(&["serve", "--listen", "127.0.0.1:0", "--instance-name", "a"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("instance \"a\"") && err.contains("--instance-name"),
        "{err}"
    );

    // Each lists both, alive, and knows which one it is.
    let seen_by_b = instances(&base_b, &admin).await;
    assert_eq!(seen_by_b.len(), 2, "{seen_by_b:?}");
    let (ia, ib) = (
        named(&seen_by_b, "a").unwrap(),
        named(&seen_by_b, "b").unwrap(),
    );
    assert_eq!(
        (ia["alive"].clone(), ib["alive"].clone()),
        (true.into(), true.into())
    );
    assert_eq!(
        (ia["this"].clone(), ib["this"].clone()),
        (false.into(), true.into())
    );
    assert_eq!(ia["listen"], base_a.trim_start_matches("http://"));
    // A read token may not list them.
    let read = env
        .run_ok(&["token", "create", "--scope", "read", "--name", "viewer"])
        .trim()
        .to_owned();
    let res = reqwest::Client::new()
        .get(format!("{base_a}/api/v1/instances"))
        .bearer_auth(&read)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);

    // A token revoked (here from the command line, which tells no server)
    // stops working on every instance within the 5 s its check is cached.
    let http = reqwest::Client::new();
    let status = async |base: &str| {
        http.get(format!("{base}/api/v1/accounts"))
            .bearer_auth(&read)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!((status(&base_a).await, status(&base_b).await), (200, 200));
    env.run_ok(&["token", "revoke", "viewer"]);
    let revoked = Instant::now();
    let mut refused = [None, None];
    while refused.iter().any(Option::is_none) {
        for (i, base) in [&base_a, &base_b].into_iter().enumerate() {
            if refused[i].is_none() && status(base).await == 401 {
                refused[i] = Some(revoked.elapsed());
            }
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(10),
            "still accepted: {refused:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for took in refused.into_iter().flatten() {
        assert!(
            took <= Duration::from_millis(5_300),
            "revocation took {took:?}"
        );
    }

    // Both schedulers see the connection due every 2 s for a while.
    tokio::time::sleep(Duration::from_secs(9)).await;
    let metrics = reqwest::Client::new()
        .get(format!("{base_a}/metrics"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "bankbridge_instance_up{instance=\"a\"} 1",
        "bankbridge_instance_up{instance=\"b\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }

    // kill -9: no clean stop; after the silence the others list it as gone,
    // and its name is free for a new process.
    a.0.as_mut().unwrap().kill().unwrap();
    let killed = Instant::now();
    loop {
        let list = instances(&base_b, &admin).await;
        if named(&list, "a").is_some_and(|i| i["alive"] == false) {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "a killed instance still listed alive: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (_a2, base_a2, _) = env
        .serve_with(&[&["--instance-name", "a"][..], &tick].concat(), &[])
        .await;
    let list = instances(&base_a2, &admin).await;
    assert_eq!(named(&list, "a").unwrap()["alive"], true, "{list:?}");
    tokio::time::sleep(Duration::from_secs(4)).await;

    // The sync jobs, from the database: several, none overlapping another,
    // none refused for a sync running elsewhere, all synced the bank.
    let jobs: Vec<JobRow> = sqlx::query_as(
        "SELECT status, started_at, finished_at, error FROM sync_jobs ORDER BY created_at, id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(jobs.len() >= 3, "scheduled syncs ran: {jobs:?}");
    for (status, _, _, error) in &jobs {
        assert!(
            status == "succeeded" || status == "running" || status == "queued",
            "{status} {error:?}"
        );
    }
    let spans: Vec<_> = jobs
        .iter()
        .filter_map(|(_, s, f, _)| Some(((*s)?, (*f)?)))
        .collect();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "two syncs at once: {pair:?}");
    }
}

/// The events of one server-sent event stream, as (name, data) pairs.
struct Events<S> {
    stream: S,
    buf: String,
}

impl<S, B> Events<S>
where
    S: futures::Stream<Item = reqwest::Result<B>> + Unpin,
    B: AsRef<[u8]>,
{
    async fn next(&mut self) -> Option<(String, String)> {
        use futures::StreamExt;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let event: String = self.buf.drain(..end + 2).collect();
                let field = |key: &str| -> String {
                    event
                        .lines()
                        .filter_map(|l| l.strip_prefix(key))
                        .map(str::trim)
                        .collect()
                };
                return Some((field("event:"), field("data:")));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.stream.next())
                .await
                .expect("an event within 30 s")?
                .unwrap();
            self.buf.push_str(&String::from_utf8_lossy(chunk.as_ref()));
        }
    }
}

/// A BankID order belongs to no one instance: started through A, its
/// events (QR codes the simulated app accepts, hints) followed through B,
/// cancelled through C, and its outcome the same on all three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bankid_order_started_on_one_instance_is_followed_on_a_second_and_cancelled_on_a_third() {
    let Some(env) = Env::postgres().await else {
        return;
    };
    let (_sandbox, root) = env.bankid_sandbox();
    env.run_ok(&["init"]);
    let token = env
        .run_ok(&["token", "create", "--scope", "write", "--name", "webapp"])
        .trim()
        .to_owned();
    let gateway = ["--bankid-sandbox", root.as_str()];
    let mut bases = Vec::new();
    let mut servers = Vec::new();
    for name in ["a", "b", "c"] {
        let (server, base, _) = env
            .serve_with(&[&["--instance-name", name][..], &gateway].concat(), &[])
            .await;
        servers.push(server);
        bases.push(base);
    }
    let (base_a, base_b, base_c) = (&bases[0], &bases[1], &bases[2]);
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{base_a}/api/v1/bankid/orders"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"type": "auth"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let order: Value = res.json().await.unwrap();
    let id = order["id"].as_str().unwrap().to_owned();
    // The events URL is A's; a load balancer may send the browser to B.
    let events_b = order["events_url"]
        .as_str()
        .unwrap()
        .replacen(base_a.as_str(), base_b, 1);
    assert!(events_b.starts_with(base_b.as_str()), "{events_b}");
    let res = http.get(&events_b).send().await.unwrap();
    assert_eq!(res.status(), 200, "B follows A's order with its events key");
    let mut events = Events {
        stream: Box::pin(res.bytes_stream()),
        buf: String::new(),
    };
    // B draws the QR codes itself: they change each second, and the
    // simulated app accepts one (a code with a wrong secret or time would
    // be refused), which A's driver then sees as the user signing in.
    let mut codes = std::collections::HashSet::new();
    let mut scanned = false;
    let cancelled_at = loop {
        let (name, data) = events.next().await.expect("the stream goes on");
        match name.as_str() {
            "qr" => {
                codes.insert(data.clone());
                if codes.len() == 2 && !scanned {
                    let r = http
                        .post(format!("{root}/_sandbox/bankid/scan"))
                        .json(&serde_json::json!({"qrData": data}))
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
                    scanned = true;
                }
            }
            "hint" if scanned && data.contains("userSign") => {
                let res = http
                    .post(format!("{base_c}/api/v1/bankid/orders/{id}/cancel"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 202, "C cancels A's order");
                break Instant::now();
            }
            "hint" => {}
            other => panic!("{other}: {data}"),
        }
    };
    let ended = loop {
        let (name, data) = events
            .next()
            .await
            .expect("the stream ends with the outcome");
        match name.as_str() {
            "cancelled" => break data,
            "qr" | "hint" => {}
            other => panic!("{other}: {data}"),
        }
    };
    assert!(ended.contains("\"user_message\":{"), "{ended}");
    let took = cancelled_at.elapsed();
    assert!(
        events.next().await.is_none(),
        "the stream ends after the outcome"
    );
    // Every instance tells the same outcome.
    for base in &bases {
        let v = get_json(&format!("{base}/api/v1/bankid/orders/{id}"), &token).await;
        assert_eq!(v["status"], "cancelled", "{base}: {v}");
    }
    eprintln!("cancelled through C; B's stream said so {took:?} later");
    // A wrong events key is refused on an instance that only reads the row.
    let res = http
        .get(format!(
            "{base_c}/api/v1/bankid/orders/{id}/events?key=nope"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

/// An HTTP target that answers 200 `delay` after each request: a round
/// probing it stays open that long.
async fn slow_target(delay: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                tokio::time::sleep(delay).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    url
}

/// The pid in a lease owner's name ("pid N on HOST …").
fn pid_of(owner: &str) -> u32 {
    owner
        .strip_prefix("pid ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {owner:?}"))
}

/// Booked rows per IBAN, as stored and as the bank has them.
async fn booked(store: &dyn bankbridge_store::Store) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for a in store.list_accounts(None).await.unwrap() {
        let totals = store.account_totals(a.id).await.unwrap();
        out.insert(a.iban.unwrap().to_string(), totals.booked_count);
    }
    out
}

/// `kill -9` of the instance in the middle of a sync, then of the one in
/// the middle of a check round: another instance finishes each, the sync
/// at once (the dead holder's lease is void) and the round when its claim
/// lapses; the synced data is the bank's, and the round runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_sync_and_mid_round_another_instance_finishes_the_work() {
    let mut config = SandboxConfig {
        seed: 23,
        accounts: 2,
        transactions: 400,
        years: 4,
        ..SandboxConfig::default()
    };
    config.fault.latency_ms = 25;
    let Some((env, sb)) = postgres_with_fibank(config).await else {
        return;
    };
    let truth: std::collections::BTreeMap<String, u64> = sb
        .truth()
        .into_iter()
        .map(|t| (t.iban, t.booked_count))
        .collect();
    let total: u64 = truth.values().sum();
    let target = slow_target(Duration::from_secs(3)).await;
    let flows = tempfile::tempdir().unwrap();
    std::fs::write(
        flows.path().join("slow.toml"),
        format!(
            "name = \"Slow\"\ntimeout = \"4s\"\n\n[schedule]\nevery = \"25s\"\n\n\
             [[steps]]\nname = \"Probe\"\nmethod = \"POST\"\nurl = \"{target}/probe\"\n\
             assert = [{{ status = 200 }}]\n"
        ),
    )
    .unwrap();
    let flows_dir = flows.path().display().to_string();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&env.db)
        .await
        .unwrap();
    // Scheduled hourly: due at once (never synced), then not again here.
    sqlx::query("UPDATE connections SET settings = jsonb_set(settings, '{interval_secs}', '3600')")
        .execute(&mut conn)
        .await
        .unwrap();
    let mut servers = Vec::new();
    for name in ["a", "b", "c"] {
        let (server, _, _) = env
            .serve_with(
                &[
                    "--instance-name",
                    name,
                    "--scheduler-tick",
                    "1",
                    "--checks",
                    &flows_dir,
                ],
                &[],
            )
            .await;
        servers.push(server);
    }
    let kill = |servers: &mut Vec<common::KillOnDrop>, pid: u32| {
        let at = servers
            .iter()
            .position(|s| s.0.as_ref().is_some_and(|c| c.id() == pid))
            .unwrap_or_else(|| panic!("pid {pid} is none of the instances"));
        let mut server = servers.remove(at);
        let child = server.0.as_mut().unwrap();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    };
    let store = env.store().await;

    // Mid-sync: a third of the rows stored, the lease held.
    let started = Instant::now();
    let holder = loop {
        let owner: Option<String> =
            sqlx::query_scalar("SELECT lease_owner FROM connections WHERE lease_until > now()")
                .fetch_optional(&mut conn)
                .await
                .unwrap()
                .flatten();
        let stored: u64 = booked(store.as_ref()).await.values().sum();
        if let Some(owner) = owner
            && stored >= total / 3
        {
            assert!(stored < total, "the sync ended before it could be killed");
            break owner;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no sync started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    kill(&mut servers, pid_of(&holder));
    let killed = Instant::now();
    let succeeded = async |conn: &mut sqlx::PgConnection| -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM sync_jobs WHERE status = 'succeeded'")
            .fetch_one(conn)
            .await
            .unwrap()
    };
    while booked(store.as_ref()).await != truth || succeeded(&mut conn).await == 0 {
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "no other instance finished the sync"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sync_done = killed.elapsed();
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT status FROM sync_jobs ORDER BY created_at")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert!(
        statuses.iter().any(|s| s == "succeeded"),
        "another instance's sync succeeded: {statuses:?}"
    );

    // Mid-round: the claim held, its run waiting on the slow target.
    let (check_id, slot_ms, claimed_by, until): (
        String,
        i64,
        String,
        chrono::DateTime<chrono::Utc>,
    ) = loop {
        let open = sqlx::query_as(
            "SELECT check_id, slot_ms, claimed_by, until FROM check_claims \
             WHERE done_at IS NULL AND until > now() AND claimed_at < now() - interval '1 second'",
        )
        .fetch_optional(&mut conn)
        .await
        .unwrap();
        if let Some(open) = open {
            break open;
        }
        assert!(
            started.elapsed() < Duration::from_secs(150),
            "no round started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    kill(&mut servers, pid_of(&claimed_by));
    let (done_by, done_at): (String, Option<chrono::DateTime<chrono::Utc>>) = loop {
        let row: (String, Option<chrono::DateTime<chrono::Utc>>) = sqlx::query_as(
            "SELECT claimed_by, done_at FROM check_claims WHERE check_id = $1 AND slot_ms = $2",
        )
        .bind(&check_id)
        .bind(slot_ms)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if row.1.is_some() {
            break row;
        }
        assert!(
            chrono::Utc::now() < until + chrono::Duration::seconds(20),
            "nobody took the round over"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_ne!(done_by, claimed_by, "another instance closed the round");
    let slot = chrono::DateTime::from_timestamp_millis(slot_ms).unwrap();
    let runs: Vec<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "SELECT started_at FROM check_runs WHERE check_id = $1 AND started_at >= $2 \
         AND started_at < $3 ORDER BY started_at",
    )
    .bind(&check_id)
    .bind(slot)
    .bind(slot + chrono::Duration::seconds(25))
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(runs.len(), 1, "the slot's round ran once: {runs:?}");
    assert!(
        runs[0] >= until,
        "after the claim lapsed: {runs:?} (until {until})"
    );
    eprintln!(
        "sync finished by another instance {sync_done:?} after the kill; \
         the round's claim lapsed at {until}, closed at {}",
        done_at.unwrap()
    );
}

/// The page cache is per instance with a short life (1 s by default): a
/// write through one instance shows on the others within that bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_instance_shows_on_another_within_the_page_cache_life() {
    let Some((env, _sb)) = postgres_with_fibank(SandboxConfig {
        seed: 31,
        accounts: 1,
        transactions: 40,
        years: 1,
        ..SandboxConfig::default()
    })
    .await
    else {
        return;
    };
    assert!(env.sync().1, "the sandbox syncs");
    let admin = env
        .run_ok(&["token", "create", "--scope", "admin", "--name", "ops"])
        .trim()
        .to_owned();
    let (_a, base_a, _) = env.serve_with(&["--instance-name", "a"], &[]).await;
    let (_b, base_b, _) = env.serve_with(&["--instance-name", "b"], &[]).await;
    let http = reqwest::Client::new();
    let rows_on_b = async || -> usize {
        let v = get_json(&format!("{base_b}/api/v1/transactions?limit=500"), &admin).await;
        v["data"].as_array().map_or(0, Vec::len)
    };
    assert!(rows_on_b().await > 0);
    assert!(rows_on_b().await > 0, "B has the page cached now");
    let connections = get_json(&format!("{base_a}/api/v1/connections"), &admin).await;
    let id = connections["data"][0]["id"].as_i64().unwrap();
    let res = http
        .delete(format!("{base_a}/api/v1/connections/{id}"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let deleted = Instant::now();
    while rows_on_b().await > 0 {
        assert!(
            deleted.elapsed() < Duration::from_secs(5),
            "B still shows the deleted connection's rows"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = deleted.elapsed();
    eprintln!("B showed the write through A after {took:?}");
    // The bound is the cache's life (1 s) from the write; the rest is the
    // time one request takes on a busy machine.
    assert!(
        took <= Duration::from_secs(2),
        "the page cache's bound is 1 s: {took:?}"
    );
}

/// Three instances started at once on a database nobody migrated yet:
/// each migration runs once (sqlx holds an advisory lock while it
/// migrates), and all three come up and see each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_starting_together_on_a_fresh_database_migrate_it_once() {
    let Some(env) = Env::postgres().await else {
        return;
    };
    // `init` makes the master key (and migrates env's own database); the
    // instances run on a second, empty one.
    env.run_ok(&["init"]);
    let fresh = Env::postgres().await.unwrap();
    let overrides = [("BANKBRIDGE_DB", fresh.db.as_str())];
    let (a, b, c) = futures::join!(
        env.serve_with(&["--instance-name", "a"], &overrides),
        env.serve_with(&["--instance-name", "b"], &overrides),
        env.serve_with(&["--instance-name", "c"], &overrides),
    );
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&fresh.db)
        .await
        .unwrap();
    let migrated: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let files = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../store/migrations/postgres"
    ))
    .unwrap()
    .count();
    assert_eq!(migrated.len(), files, "{migrated:?}");
    assert!(migrated.iter().all(|(_, ok)| *ok), "{migrated:?}");
    let admin = env
        .command(&["token", "create", "--scope", "admin", "--name", "ops"])
        .env("BANKBRIDGE_DB", &fresh.db)
        .output()
        .unwrap();
    assert!(admin.status.success());
    let admin = String::from_utf8(admin.stdout).unwrap().trim().to_owned();
    let listed = instances(&c.1, &admin).await;
    assert_eq!(
        listed.iter().filter(|i| i["alive"] == true).count(),
        3,
        "{listed:?}"
    );
    drop((a, b, c));
}
