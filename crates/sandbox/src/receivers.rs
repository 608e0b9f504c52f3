//! Local receivers for alert deliveries, so tests send to a real socket
//! instead of mocking the client: [`HttpReceiver`] records webhook, Slack and
//! PagerDuty POSTs; [`SmtpSink`] speaks enough SMTP to accept mail.
//!
//! Both listen on 127.0.0.1 on a free port and stop when dropped.
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::util::lock;

/// Wait until `count` reaches `n`, or fail with how many arrived.
async fn wait_count(
    mut count: watch::Receiver<usize>,
    n: usize,
    timeout: Duration,
    what: &str,
) -> io::Result<()> {
    let waited = tokio::time::timeout(timeout, count.wait_for(|c| *c >= n))
        .await
        .map(|r| r.map(|_| ()));
    match waited {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(io::Error::other(format!("the {what} receiver stopped"))),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "{} {what}(s) arrived within {timeout:?}, {n} expected",
                *count.borrow()
            ),
        )),
    }
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// One POST an [`HttpReceiver`] took.
#[derive(Clone, Debug, PartialEq)]
pub struct ReceivedRequest {
    /// Path and query, as sent.
    pub path: String,
    /// Names in lower case, in the order sent; values decoded lossily.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON, or a JSON string of its text when it is not JSON.
    pub body: Value,
    /// The body as text (lossy UTF-8).
    pub text: String,
}

impl ReceivedRequest {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug)]
struct HttpShared {
    requests: Mutex<Vec<ReceivedRequest>>,
    count: watch::Sender<usize>,
    status: AtomicU16,
    response_body: Mutex<String>,
}

/// An HTTP server on 127.0.0.1 that records every POST (any path) and
/// answers with a status of the test's choice (200 unless told).
#[derive(Debug)]
pub struct HttpReceiver {
    addr: SocketAddr,
    shared: Arc<HttpShared>,
    task: JoinHandle<()>,
}

impl HttpReceiver {
    pub async fn start() -> io::Result<HttpReceiver> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(HttpShared {
            requests: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
            status: AtomicU16::new(200),
            response_body: Mutex::new(String::new()),
        });
        let app = axum::Router::new()
            .fallback(record)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "HTTP receiver stopped");
            }
        });
        Ok(HttpReceiver { addr, shared, task })
    }

    /// Start answering every POST with `status` (e.g. 202 as PagerDuty does).
    pub async fn start_with_status(status: u16) -> io::Result<HttpReceiver> {
        let receiver = HttpReceiver::start().await?;
        receiver.set_status(status);
        Ok(receiver)
    }

    /// `http://127.0.0.1:PORT`; any path under it is recorded.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The status of every later answer (an invalid code becomes 500).
    pub fn set_status(&self, status: u16) {
        self.shared.status.store(status, Ordering::Relaxed);
    }

    /// The body of every later answer (empty unless set).
    pub fn set_response_body(&self, body: impl Into<String>) {
        *lock(&self.shared.response_body) = body.into();
    }

    /// Every POST so far, oldest first.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Wait until at least `n` POSTs arrived; returns all of them.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> io::Result<Vec<ReceivedRequest>> {
        wait_count(self.shared.count.subscribe(), n, timeout, "request").await?;
        Ok(self.requests())
    }

    /// Stop serving (dropping does the same).
    pub fn shutdown(self) {}
}

impl Drop for HttpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(
    State(shared): State<Arc<HttpShared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method != Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    let request = ReceivedRequest {
        path: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned()),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(text.clone())),
        text,
    };
    let count = {
        let mut requests = lock(&shared.requests);
        requests.push(request);
        requests.len()
    };
    shared.count.send_replace(count);
    let status = StatusCode::from_u16(shared.status.load(Ordering::Relaxed))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = lock(&shared.response_body).clone();
    (status, body).into_response()
}

// ---------------------------------------------------------------------------
// SMTP
// ---------------------------------------------------------------------------

/// Longest command line taken (RFC 5321 allows 512; AUTH lines run longer).
const MAX_LINE: usize = 4096;
/// Largest message kept; a bigger one is read to its end and refused.
const MAX_MESSAGE: usize = 10 * 1024 * 1024;
/// A silent client is dropped after this long.
const IDLE: Duration = Duration::from_secs(60);

/// Credentials a client gave with AUTH PLAIN or AUTH LOGIN (any are accepted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtpAuth {
    pub username: String,
    pub password: String,
}

/// One message an [`SmtpSink`] accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedMail {
    /// The MAIL FROM address, without angle brackets.
    pub from: String,
    /// Every RCPT TO address, without angle brackets.
    pub to: Vec<String>,
    /// The DATA, dot-unstuffed, CRLF line ends kept (lossy UTF-8).
    pub data: String,
    pub auth: Option<SmtpAuth>,
}

impl ReceivedMail {
    /// The header section and the body, split at the first empty line.
    fn split(&self) -> (&str, &str) {
        self.data
            .split_once("\r\n\r\n")
            .or_else(|| self.data.split_once("\n\n"))
            .unwrap_or((&self.data, ""))
    }

    /// A header's value, unfolded, by case-insensitive name (not
    /// RFC 2047-decoded).
    pub fn header(&self, name: &str) -> Option<String> {
        let (head, _) = self.split();
        let mut found: Option<String> = None;
        for line in head.lines() {
            if line.starts_with([' ', '\t']) {
                if let Some(value) = found.as_mut() {
                    value.push(' ');
                    value.push_str(line.trim());
                }
                continue;
            }
            if found.is_some() {
                break;
            }
            if let Some((n, v)) = line.split_once(':')
                && n.trim().eq_ignore_ascii_case(name)
            {
                found = Some(v.trim().to_owned());
            }
        }
        found
    }

    /// The body as text, undoing a quoted-printable or base64 transfer
    /// encoding (single-part messages only).
    pub fn body(&self) -> String {
        let (_, body) = self.split();
        let encoding = self
            .header("Content-Transfer-Encoding")
            .unwrap_or_default()
            .to_ascii_lowercase();
        match encoding.as_str() {
            "base64" => {
                let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
                base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_else(|_| body.to_owned())
            }
            "quoted-printable" => decode_quoted_printable(body),
            _ => body.to_owned(),
        }
    }
}

fn decode_quoted_printable(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'=' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let rest = &bytes[i + 1..];
        if rest.starts_with(b"\r\n") {
            i += 3;
        } else if rest.starts_with(b"\n") {
            i += 2;
        } else if let Some(byte) = rest
            .get(..2)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(b'=');
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug)]
struct SmtpShared {
    messages: Mutex<Vec<ReceivedMail>>,
    count: watch::Sender<usize>,
}

/// An SMTP server on 127.0.0.1 that accepts every message (plain text, no
/// STARTTLS, any AUTH) and records it.
#[derive(Debug)]
pub struct SmtpSink {
    addr: SocketAddr,
    shared: Arc<SmtpShared>,
    task: JoinHandle<()>,
}

impl SmtpSink {
    pub async fn start() -> io::Result<SmtpSink> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(SmtpShared {
            messages: Mutex::new(Vec::new()),
            count: watch::channel(0).0,
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(SmtpSink { addr, shared, task })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every accepted message so far, oldest first.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        lock(&self.shared.messages).clone()
    }

    /// Wait until at least `n` messages arrived; returns all of them.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> io::Result<Vec<ReceivedMail>> {
        wait_count(self.shared.count.subscribe(), n, timeout, "message").await?;
        Ok(self.messages())
    }

    /// Stop serving (dropping does the same).
    pub fn shutdown(self) {}
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which ends every
        // connection too.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<SmtpShared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    connections.spawn(async move {
                        if let Err(e) = smtp_session(stream, shared).await {
                            tracing::debug!(error = %e, "SMTP sink connection ended");
                        }
                    });
                }
                Err(e) => {
                    tracing::debug!(error = %e, "SMTP sink accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// A line read from the client: its bytes without the line end, or too long.
enum Line {
    Text(Vec<u8>),
    TooLong,
}

/// Read one line (up to `max` bytes), `None` at end of stream. A silent
/// client times out.
async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> io::Result<Option<Line>> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let buf = match tokio::time::timeout(IDLE, reader.fill_buf()).await {
            Ok(buf) => buf?,
            Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "client idle")),
        };
        if buf.is_empty() {
            return Ok(if line.is_empty() && !too_long {
                None
            } else if too_long {
                Some(Line::TooLong)
            } else {
                Some(Line::Text(line))
            });
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        let used = chunk.len();
        if !too_long {
            if line.len() + used > max + 2 {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        reader.consume(used);
        if done {
            if too_long {
                return Ok(Some(Line::TooLong));
            }
            while matches!(line.last(), Some(b'\n' | b'\r')) {
                line.pop();
            }
            return Ok(Some(Line::Text(line)));
        }
    }
}

/// The address inside `<…>` after a `FROM:`/`TO:` prefix (parameters after
/// the bracket, such as `BODY=8BITMIME`, are ignored).
fn path_argument(arg: &str, prefix: &str) -> Option<String> {
    let arg = arg.trim();
    if arg.len() < prefix.len() || !arg[..prefix.len()].eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = arg[prefix.len()..].trim_start();
    if let Some(inner) = rest.strip_prefix('<') {
        inner.find('>').map(|end| inner[..end].to_owned())
    } else {
        rest.split_whitespace().next().map(str::to_owned)
    }
}

fn decode_b64(text: &str) -> Option<String> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
}

/// `\0user\0password` (an authorisation identity before the first NUL is ignored).
fn parse_plain(text: &str) -> Option<SmtpAuth> {
    let decoded = decode_b64(text)?;
    let mut parts = decoded.split('\0');
    let _authzid = parts.next()?;
    let username = parts.next()?.to_owned();
    let password = parts.next()?.to_owned();
    Some(SmtpAuth { username, password })
}

async fn smtp_session(stream: TcpStream, shared: Arc<SmtpShared>) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    write
        .write_all(b"220 bankbridge-sandbox ESMTP ready\r\n")
        .await?;
    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    let mut auth: Option<SmtpAuth> = None;

    macro_rules! reply {
        ($text:expr) => {
            write.write_all($text.as_bytes()).await?
        };
    }

    loop {
        let line = match read_line(&mut reader, MAX_LINE).await? {
            None => return Ok(()),
            Some(Line::TooLong) => {
                reply!("500 5.5.2 line too long\r\n");
                continue;
            }
            Some(Line::Text(line)) => String::from_utf8_lossy(&line).into_owned(),
        };
        let (verb, arg) = match line.split_once(' ') {
            Some((v, a)) => (v.to_ascii_uppercase(), a.trim().to_owned()),
            None => (line.trim().to_ascii_uppercase(), String::new()),
        };
        match verb.as_str() {
            "EHLO" => reply!(
                "250-bankbridge-sandbox\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-AUTH PLAIN LOGIN\r\n250 SIZE 10485760\r\n"
            ),
            "HELO" => reply!("250 bankbridge-sandbox\r\n"),
            "AUTH" => {
                let mut words = arg.split_whitespace();
                let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
                let initial = words.next().map(str::to_owned);
                let given = match mechanism.as_str() {
                    "PLAIN" => {
                        let response = match initial {
                            Some(r) => Some(r),
                            None => {
                                reply!("334 \r\n");
                                read_text_line(&mut reader).await?
                            }
                        };
                        response.as_deref().and_then(parse_plain)
                    }
                    "LOGIN" => {
                        let username = match initial {
                            Some(u) => Some(u),
                            None => {
                                reply!("334 VXNlcm5hbWU6\r\n");
                                read_text_line(&mut reader).await?
                            }
                        };
                        let username = username.as_deref().and_then(decode_b64);
                        match username {
                            Some(username) => {
                                reply!("334 UGFzc3dvcmQ6\r\n");
                                read_text_line(&mut reader)
                                    .await?
                                    .as_deref()
                                    .and_then(decode_b64)
                                    .map(|password| SmtpAuth { username, password })
                            }
                            None => None,
                        }
                    }
                    _ => {
                        reply!("504 5.5.4 mechanism not supported\r\n");
                        continue;
                    }
                };
                match given {
                    Some(a) => {
                        auth = Some(a);
                        reply!("235 2.7.0 authenticated\r\n");
                    }
                    None => reply!("501 5.5.2 cannot decode the credentials\r\n"),
                }
            }
            "MAIL" => match path_argument(&arg, "FROM:") {
                Some(address) => {
                    from = Some(address);
                    to.clear();
                    reply!("250 2.1.0 OK\r\n");
                }
                None => reply!("501 5.5.4 syntax: MAIL FROM:<address>\r\n"),
            },
            "RCPT" => match (&from, path_argument(&arg, "TO:")) {
                (None, _) => reply!("503 5.5.1 MAIL first\r\n"),
                (Some(_), Some(address)) if !address.is_empty() => {
                    to.push(address);
                    reply!("250 2.1.5 OK\r\n");
                }
                (Some(_), _) => reply!("501 5.5.4 syntax: RCPT TO:<address>\r\n"),
            },
            "DATA" => {
                let Some(sender) = from.clone().filter(|_| !to.is_empty()) else {
                    reply!("503 5.5.1 MAIL and RCPT first\r\n");
                    continue;
                };
                reply!("354 end data with <CR><LF>.<CR><LF>\r\n");
                let Some(data) = read_data(&mut reader).await? else {
                    return Ok(());
                };
                match data {
                    Some(data) => {
                        let mail = ReceivedMail {
                            from: sender,
                            to: std::mem::take(&mut to),
                            data: String::from_utf8_lossy(&data).into_owned(),
                            auth: auth.clone(),
                        };
                        let count = {
                            let mut messages = lock(&shared.messages);
                            messages.push(mail);
                            messages.len()
                        };
                        shared.count.send_replace(count);
                        reply!("250 2.0.0 OK queued\r\n");
                    }
                    None => reply!("552 5.3.4 message too big\r\n"),
                }
                from = None;
                to.clear();
            }
            "RSET" => {
                from = None;
                to.clear();
                reply!("250 2.0.0 OK\r\n");
            }
            "NOOP" => reply!("250 2.0.0 OK\r\n"),
            "VRFY" => reply!("252 2.5.0 cannot verify\r\n"),
            "STARTTLS" => reply!("454 4.7.0 TLS not available\r\n"),
            "QUIT" => {
                reply!("221 2.0.0 bye\r\n");
                write.shutdown().await.ok();
                return Ok(());
            }
            _ => reply!("500 5.5.2 command not recognised\r\n"),
        }
    }
}

/// A line of an AUTH exchange; `None` at end of stream or when too long.
async fn read_text_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<Option<String>> {
    Ok(match read_line(reader, MAX_LINE).await? {
        Some(Line::Text(line)) => Some(String::from_utf8_lossy(&line).into_owned()),
        _ => None,
    })
}

/// The DATA section up to the lone `.`, dot-unstuffed, with CRLF line ends:
/// `None` at end of stream, `Some(None)` when it was too big (read anyway, so
/// the session stays in step).
async fn read_data<R: AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<Option<Option<Vec<u8>>>> {
    let mut data = Vec::new();
    let mut too_big = false;
    loop {
        let line = match read_line(reader, MAX_LINE).await? {
            None => return Ok(None),
            Some(Line::TooLong) => {
                // RFC 5321 caps lines at 1000 bytes; refuse rather than guess.
                too_big = true;
                continue;
            }
            Some(Line::Text(line)) => line,
        };
        if line == b"." {
            return Ok(Some((!too_big).then_some(data)));
        }
        let line = line.strip_prefix(b".").unwrap_or(&line);
        if data.len() + line.len() + 2 > MAX_MESSAGE {
            too_big = true;
        }
        if !too_big {
            data.extend_from_slice(line);
            data.extend_from_slice(b"\r\n");
        }
    }
}
