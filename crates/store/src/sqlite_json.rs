//! SQLite's JSON read path (see `tx_json`): transaction pages and the JSON
//! export read through rusqlite, not sqlx.
//!
//! Why a second driver on the same file: sqlx runs each SQLite connection
//! on a worker thread that copies every column of every row into its own
//! allocation and hands rows over a channel one at a time. Measured on the
//! API's page (`bankbridge bench`), that hand-over and those copies cost more
//! than SQLite itself. rusqlite steps the statement on the calling thread
//! and lends each value in place, so a row goes from SQLite's page straight
//! into the output buffer. It links the very same SQLite library as sqlx
//! (`libsqlite3-sys`, one copy), which is why its version is the one that
//! matches sqlx's rather than the newest.
//!
//! The connections here only read (`query_only`); WAL lets them read while
//! the writer writes. Each page runs on the blocking pool, one hop per page;
//! an export runs one blocking task that hands on chunks of whole rows.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bankbridge_core::Currency;
use chrono::{DateTime, NaiveDate, Utc};
use futures::stream::BoxStream;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, Row};

use crate::common::{self, Arg, Dialect, corrupt};
use crate::sqlite::tx_columns;
use crate::tx_json::{self, CHUNK_BYTES, JsonChunk, JsonPage, ROW_SEPARATOR, TxRow};
use crate::{Result, StoreError, TxQuery, codec};

/// Pages read at once, and idle connections kept for reuse: as many, so a
/// page always finds a connection with its statement prepared (opening one
/// per page under load cost more than the page).
const READERS: usize = 4;

/// Read-only connections of the JSON read path, opened on demand.
pub(crate) struct JsonReaders {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    pages: tokio::sync::Semaphore,
}

impl JsonReaders {
    pub(crate) fn new(path: &Path) -> Arc<Self> {
        Arc::new(Self {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
            pages: tokio::sync::Semaphore::new(READERS),
        })
    }

    /// Drop the idle connections (the store is closing).
    pub(crate) fn close(&self) {
        self.pages.close();
        self.idle_list().clear();
    }

    fn idle_list(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // A panic while holding this lock leaves only a list of connections.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` on a connection, on the blocking pool, at most [`READERS`] at once.
    async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let _turn = self
            .pages
            .acquire()
            .await
            .map_err(|_| StoreError::Read("the store is closed".into()))?;
        let readers = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let conn = readers.take()?;
            let out = f(&conn);
            readers.give_back(conn);
            out
        })
        .await
        .map_err(|e| StoreError::Read(format!("the read task failed: {e}")))?
    }

    fn take(&self) -> Result<Connection> {
        if let Some(c) = self.idle_list().pop() {
            return Ok(c);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "query_only", true)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle_list();
        if idle.len() < READERS {
            idle.push(conn);
        }
    }

    pub(crate) async fn page(
        self: &Arc<Self>,
        query: &TxQuery,
        out: &mut Vec<u8>,
    ) -> Result<JsonPage> {
        // One row more than the page tells whether another page follows.
        let probe = TxQuery {
            limit: query.limit.map(|l| l.saturating_add(1)),
            ..query.clone()
        };
        let (sql, args) = common::tx_query_sql(&probe, Dialect::Sqlite, tx_columns());
        let limit = query.limit.map(|l| l as usize);
        let mut buf = std::mem::take(out);
        let (buf, page) = self
            .run(move |conn| {
                let page = write_page(conn, &sql, &args, limit, &mut buf);
                Ok((buf, page))
            })
            .await?;
        *out = buf;
        page
    }

    pub(crate) fn stream(
        self: &Arc<Self>,
        query: TxQuery,
    ) -> BoxStream<'static, Result<JsonChunk>> {
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<Result<JsonChunk>>(2);
        let readers = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let (sql, args) = common::tx_query_sql(&query, Dialect::Sqlite, tx_columns());
            let result = readers.take().and_then(|conn| {
                let done = write_chunks(&conn, &sql, &args, &sender);
                readers.give_back(conn);
                done
            });
            if let Err(e) = result {
                let _ = sender.blocking_send(Err(e));
            }
        });
        Box::pin(futures::stream::poll_fn(move |cx| receiver.poll_recv(cx)))
    }
}

fn write_page(
    conn: &Connection,
    sql: &str,
    args: &[Arg],
    limit: Option<usize>,
    out: &mut Vec<u8>,
) -> Result<JsonPage> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(args.iter().map(bound)))?;
    let mut page = JsonPage::default();
    let mut last = None;
    while let Some(row) = rows.next()? {
        if limit.is_some_and(|l| page.rows >= l) {
            page.more_after = last.map(RowKey::parse).transpose()?;
            break;
        }
        if page.rows > 0 {
            out.push(b',');
        }
        last = Some(tx_json_row(row, out)?);
        page.rows += 1;
    }
    Ok(page)
}

/// Every row, in chunks of whole rows; stops quietly when the reader went away.
fn write_chunks(
    conn: &Connection,
    sql: &str,
    args: &[Arg],
    sender: &tokio::sync::mpsc::Sender<Result<JsonChunk>>,
) -> Result<()> {
    let fresh = || JsonChunk {
        bytes: Vec::with_capacity(CHUNK_BYTES + 4096),
        rows: 0,
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(args.iter().map(bound)))?;
    let mut chunk = fresh();
    while let Some(row) = rows.next()? {
        if chunk.rows > 0 {
            chunk.bytes.extend_from_slice(ROW_SEPARATOR);
        }
        tx_json_row(row, &mut chunk.bytes)?;
        chunk.rows += 1;
        if chunk.bytes.len() >= CHUNK_BYTES
            && sender
                .blocking_send(Ok(std::mem::replace(&mut chunk, fresh())))
                .is_err()
        {
            return Ok(());
        }
    }
    if chunk.rows > 0 {
        let _ = sender.blocking_send(Ok(chunk));
    }
    Ok(())
}

/// A query argument as sqlx binds it on SQLite, so that text compares equal
/// to what the writer stored (dates `YYYY-MM-DD`, instants RFC 3339 with
/// `+00:00`, money as exact decimal text).
fn bound(arg: &Arg) -> rusqlite::types::Value {
    use rusqlite::types::Value;
    match arg {
        Arg::I64(v) => Value::Integer(*v),
        Arg::I32(v) => Value::Integer(i64::from(*v)),
        Arg::Date(d) => Value::Text(d.format("%F").to_string()),
        Arg::Text(s) => Value::Text(s.clone()),
        Arg::OptText(s) => s.clone().map_or(Value::Null, Value::Text),
        Arg::Decimal(d) => Value::Text(d.to_string()),
        Arg::Time(t) => Value::Text(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)),
        Arg::Bytes(b) => Value::Blob(b.clone()),
    }
}

/// A TEXT column's bytes, borrowed. Not checked here: the row's JSON is
/// checked to be UTF-8 once, whole (see [`tx_json_row`]).
fn text<'r>(row: &'r Row<'_>, i: usize) -> Result<&'r [u8]> {
    opt_text(row, i)?.ok_or_else(|| corrupt(format!("column {i} is NULL")))
}

fn opt_text<'r>(row: &'r Row<'_>, i: usize) -> Result<Option<&'r [u8]>> {
    match row.get_ref(i)? {
        ValueRef::Text(bytes) => Ok(Some(bytes)),
        ValueRef::Null => Ok(None),
        other => Err(corrupt(format!(
            "column {i} holds {} where text was expected",
            other.data_type()
        ))),
    }
}

/// Short ASCII columns (codes, amounts), checked as they are read.
fn ascii(bytes: &[u8]) -> Result<&str> {
    std::str::from_utf8(bytes).map_err(|_| corrupt("a code or amount is not text"))
}

/// Write a row of [`tx_columns`] as the JSON object of its `Transaction`;
/// returns its key.
///
/// Text is copied as bytes and the finished object checked to be UTF-8 in
/// one pass: checking each short column on its own was a tenth of a row's
/// cost. A row that is not UTF-8 is taken back out and refused.
fn tx_json_row(r: &Row<'_>, out: &mut Vec<u8>) -> Result<RowKey> {
    let id = r.get_ref(0)?.as_i64()?;
    let booking = text(r, 7)?;
    let date: [u8; 10] = booking.try_into().map_err(|_| {
        corrupt(format!(
            "transaction {id}: booking date {:?}",
            String::from_utf8_lossy(booking)
        ))
    })?;
    let start = out.len();
    let written = tx_json::write_transaction(&SqliteTxRow(r), out);
    if written.is_err() || simdutf8::basic::from_utf8(&out[start..]).is_err() {
        out.truncate(start);
        written?;
        return Err(corrupt(format!(
            "transaction {id} holds text that is not UTF-8"
        )));
    }
    Ok(RowKey { date, id })
}

/// A rusqlite row read for [`tx_json::write_transaction`]: text as stored.
struct SqliteTxRow<'a, 'r>(&'a Row<'r>);

impl TxRow for SqliteTxRow<'_, '_> {
    fn int(&self, column: usize) -> Result<i64> {
        Ok(self.0.get_ref(column)?.as_i64()?)
    }

    fn text(&self, out: &mut Vec<u8>, column: usize) -> Result<()> {
        tx_json::opt_string_bytes(out, opt_text(self.0, column)?);
        Ok(())
    }

    fn date(&self, out: &mut Vec<u8>, column: usize) -> Result<()> {
        // Stored as `YYYY-MM-DD`, as it is written out.
        self.text(out, column)
    }

    fn currency(&self, column: usize) -> Result<Option<Currency>> {
        opt_text(self.0, column)?
            .map(|c| codec::currency(ascii(c)?))
            .transpose()
    }

    fn money(&self, out: &mut Vec<u8>, column: usize, currency: Currency) -> Result<()> {
        match opt_text(self.0, column)? {
            Some(amount) => tx_json::money_text(out, ascii(amount)?, currency),
            None => {
                out.extend_from_slice(b"null");
                Ok(())
            }
        }
    }

    fn instant(&self, out: &mut Vec<u8>, column: usize) -> Result<()> {
        instant_text(out, text(self.0, column)?)
    }

    fn raw(&self, out: &mut Vec<u8>, column: usize) -> Result<()> {
        out.extend_from_slice(text(self.0, column)?);
        Ok(())
    }
}

/// Where a row sits in the page order; its date parsed only when a cursor
/// needs it.
#[derive(Clone, Copy)]
struct RowKey {
    date: [u8; 10],
    id: i64,
}

impl RowKey {
    fn parse(self) -> Result<(NaiveDate, i64)> {
        let text = String::from_utf8_lossy(&self.date);
        let date = text
            .parse()
            .map_err(|_| corrupt(format!("transaction {}: booking date {text:?}", self.id)))?;
        Ok((date, self.id))
    }
}

/// A stored instant: the writer's RFC 3339 `…+00:00` becomes `…Z` as it is;
/// any other form is parsed and written in UTC.
fn instant_text(out: &mut Vec<u8>, stored: &[u8]) -> Result<()> {
    match stored.strip_suffix(b"+00:00") {
        // 0, 3, 6 or 9 fractional digits, as chrono writes them.
        Some(utc)
            if matches!(utc.len(), 19 | 23 | 26 | 29) && utc[10] == b'T' && utc.is_ascii() =>
        {
            out.push(b'"');
            out.extend_from_slice(utc);
            out.extend_from_slice(b"Z\"");
        }
        _ => {
            let text = String::from_utf8_lossy(stored);
            let t = DateTime::parse_from_rfc3339(&text)
                .map_err(|_| corrupt(format!("instant {text:?}")))?;
            tx_json::instant(out, t.with_timezone(&Utc));
        }
    }
    Ok(())
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Read(e.to_string())
    }
}

impl From<rusqlite::types::FromSqlError> for StoreError {
    fn from(e: rusqlite::types::FromSqlError) -> Self {
        corrupt(format!("a transaction column: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_instants_come_out_as_utc_instants_serialise() {
        for stored in [
            "2026-12-06T01:09:32.646641+00:00",
            "2026-12-06T01:09:32+00:00",
            "2026-12-06T01:09:32.120+00:00",
            "2026-12-06T03:09:32.5+02:00",
            "2026-12-06T01:09:32.5+00:00",
        ] {
            let mut out = Vec::new();
            instant_text(&mut out, stored.as_bytes()).unwrap();
            let t = DateTime::parse_from_rfc3339(stored)
                .unwrap()
                .with_timezone(&Utc);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&t).unwrap(),
                "{stored}"
            );
        }
        assert!(instant_text(&mut Vec::new(), b"yesterday").is_err());
    }
}
