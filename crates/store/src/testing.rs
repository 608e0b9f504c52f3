//! Helpers for tests of other crates (feature `test-support`).
use std::sync::atomic::{AtomicU32, Ordering};

use chrono::Utc;
use sqlx::{Connection as _, Executor as _};

use crate::{Lease, LeaseToken, Store};

/// Take the sync lease of connection `connection_id` for an hour, as a sync
/// would before writing bank data; panics when someone holds it (a test
/// that seeds data owns its database).
pub async fn hold_lease(store: &dyn Store, connection_id: i64) -> LeaseToken {
    let now = Utc::now();
    match store
        .acquire_sync_lease(connection_id, "test", now, now + chrono::Duration::hours(1))
        .await
        .expect("acquire the sync lease")
    {
        Lease::Acquired(lease) => lease,
        Lease::Held { owner, .. } => panic!("connection {connection_id} is leased by {owner}"),
    }
}

/// The admin URL of the test PostgreSQL server (`BANKBRIDGE_TEST_PG_URL`).
/// `None` (with a note on stderr) when unset, except under `CI`, where the
/// PostgreSQL tests must run: then it panics.
pub fn pg_admin_url() -> Option<String> {
    match std::env::var("BANKBRIDGE_TEST_PG_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
                panic!(
                    "BANKBRIDGE_TEST_PG_URL is not set, and CI is: the PostgreSQL store tests must run in CI. \
                     Start a server with `export BANKBRIDGE_TEST_PG_URL=\"$(scripts/pg-throwaway.sh start)\"`."
                );
            }
            eprintln!(
                "skipped: set BANKBRIDGE_TEST_PG_URL to run the PostgreSQL tests \
                 (e.g. export BANKBRIDGE_TEST_PG_URL=\"$(scripts/pg-throwaway.sh start)\")"
            );
            None
        }
    }
}

/// The same URL pointing at database `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.find('?') {
        Some(i) => (&url[..i], &url[i..]),
        None => (url, ""),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let base = match base[after_scheme..].find('/') {
        Some(i) => &base[..after_scheme + i],
        None => base,
    };
    format!("{base}/{db}{query}")
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh database on the test server; dropped (best effort) by `drop_pg_database`.
pub async fn create_pg_database(admin: &str) -> (sqlx::PgConnection, String, String) {
    let mut conn = sqlx::PgConnection::connect(admin)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to BANKBRIDGE_TEST_PG_URL: {e}"));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let db = format!(
        "bb_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    );
    conn.execute(format!("CREATE DATABASE {db}").as_str())
        .await
        .expect("CREATE DATABASE");
    let url = with_database(admin, &db);
    (conn, db, url)
}

/// Drop a database [`create_pg_database`] made.
pub async fn drop_pg_database(mut conn: sqlx::PgConnection, db: &str) {
    let _ = conn
        .execute(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)").as_str())
        .await;
    let _ = conn.close().await;
}

/// The `search_text` column the store writes for a row (for benchmarks that
/// insert rows behind the store's back, to compare against it).
pub fn search_text(w: &crate::TxWrite) -> String {
    crate::common::search_text(w)
}
