//! A micro-cache of serialised responses for hot read routes.
//!
//! A page of transactions costs the store about a millisecond to read and
//! decode; a dashboard or a spreadsheet refreshing the same page many times a
//! second should not pay that each time. Responses are kept for
//! `page_cache_ttl` (default 1 s; `serve --page-cache-ms`), keyed by route and query string, and the
//! whole cache is dropped whenever this process changes bank data (a sync job
//! ends, a connection is created or deleted). Writes by another process (a
//! `bankbridge sync` run from the command line) show up within the TTL.
//!
//! A generation counter makes invalidation race-free: a response computed
//! before an invalidation is never stored after it.
use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;

/// Largest response kept.
const MAX_ENTRY: usize = 512 * 1024;
/// Longest key (route and query string) kept.
const MAX_KEY: usize = 4 * 1024;
/// Most bytes kept in all: keys, bodies and a per-entry overhead.
const MAX_TOTAL: usize = 32 * 1024 * 1024;
/// Most entries kept: many tiny distinct pages must not grow the map without end.
const MAX_ENTRIES: usize = 10_000;
/// What an entry costs beside its key and body (map slot, `Entry`, `String`).
const ENTRY_OVERHEAD: usize = 96;

struct Entry {
    until: Instant,
    body: Bytes,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Bytes the entries cost ([`cost`]).
    bytes: usize,
    /// Expired entries are dropped at the first put after this.
    next_sweep: Option<Instant>,
}

fn cost(key: &str, body: &Bytes) -> usize {
    key.len() + body.len() + ENTRY_OVERHEAD
}

impl Inner {
    fn sweep(&mut self, now: Instant) {
        self.entries.retain(|_, e| e.until > now);
        self.bytes = self.entries.iter().map(|(k, e)| cost(k, &e.body)).sum();
    }
}

pub(crate) struct PageCache {
    ttl: Duration,
    generation: AtomicU64,
    inner: RwLock<Inner>,
}

impl PageCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            generation: AtomicU64::new(0),
            inner: RwLock::new(Inner::default()),
        }
    }

    /// The generation to pass back to [`PageCache::put`].
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn get(&self, key: &str) -> Option<Bytes> {
        if self.ttl.is_zero() {
            return None;
        }
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner
            .entries
            .get(key)
            .filter(|e| e.until > Instant::now())
            .map(|e| e.body.clone())
    }

    /// Keep `body` under `key`, unless the data changed since `generation` was read.
    pub(crate) fn put(&self, key: &str, body: &Bytes, generation: u64) {
        if self.ttl.is_zero() || body.len() > MAX_ENTRY || key.len() > MAX_KEY {
            return;
        }
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if self.generation() != generation {
            return;
        }
        let now = Instant::now();
        if inner.next_sweep.is_none_or(|t| now >= t) {
            inner.sweep(now);
            inner.next_sweep = Some(now + self.ttl);
        }
        let added = cost(key, body);
        let full = |i: &Inner| i.bytes + added > MAX_TOTAL || i.entries.len() >= MAX_ENTRIES;
        if full(&inner) {
            inner.sweep(now);
            if full(&inner) {
                inner.entries.clear();
                inner.bytes = 0;
            }
        }
        let entry = Entry {
            until: now + self.ttl,
            body: body.clone(),
        };
        if let Some(old) = inner.entries.insert(key.to_owned(), entry) {
            inner.bytes -= cost(key, &old.body);
        }
        inner.bytes += added;
    }

    /// (entries, bytes) held now.
    #[cfg(test)]
    fn usage(&self) -> (usize, usize) {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        (inner.entries.len(), inner.bytes)
    }

    /// Forget everything: bank data changed.
    pub(crate) fn invalidate(&self) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        inner.entries.clear();
        inner.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_generations_are_not_stored() {
        let c = PageCache::new(Duration::from_secs(60));
        let body = Bytes::from_static(b"page");
        let g = c.generation();
        c.put("k", &body, g);
        assert_eq!(c.get("k"), Some(body.clone()));
        let g = c.generation();
        c.invalidate();
        assert_eq!(c.get("k"), None);
        c.put("k", &body, g);
        assert_eq!(c.get("k"), None, "computed before the invalidation");
    }

    #[test]
    fn keys_count_entries_are_capped_and_expired_ones_go() {
        let c = PageCache::new(Duration::from_secs(60));
        let body = Bytes::from_static(b"{}");
        // Many distinct tiny pages: the map never holds more than the cap.
        for i in 0..(MAX_ENTRIES + 500) {
            c.put(
                &format!("/api/v1/transactions?cursor={i}"),
                &body,
                c.generation(),
            );
        }
        let (entries, bytes) = c.usage();
        assert!(entries <= MAX_ENTRIES, "{entries}");
        assert!(
            bytes >= entries * (body.len() + ENTRY_OVERHEAD),
            "keys and overhead count"
        );
        // A key past the limit is not kept.
        let long = format!("/api/v1/transactions?text={}", "x".repeat(MAX_KEY));
        c.put(&long, &body, c.generation());
        assert_eq!(c.get(&long), None);

        // Expired entries leave at the next put after a TTL, not only when full.
        let c = PageCache::new(Duration::from_millis(20));
        for i in 0..100 {
            c.put(&format!("k{i}"), &body, c.generation());
        }
        std::thread::sleep(Duration::from_millis(40));
        c.put("fresh", &body, c.generation());
        assert_eq!(c.usage().0, 1);
        assert_eq!(c.usage().1, cost("fresh", &body));
    }

    #[test]
    fn zero_ttl_disables_and_entries_expire() {
        let c = PageCache::new(Duration::ZERO);
        c.put("k", &Bytes::from_static(b"x"), c.generation());
        assert_eq!(c.get("k"), None);
        let c = PageCache::new(Duration::from_millis(1));
        c.put("k", &Bytes::from_static(b"x"), c.generation());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c.get("k"), None);
    }
}
