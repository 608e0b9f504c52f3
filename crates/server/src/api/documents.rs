//! Documents (statements) synced from the banks: list, metadata, bytes.
use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use bankbridge_core::Document;
use bankbridge_store::{DocumentQuery, Scope, TxQuery};
use chrono::NaiveDate;
use utoipa::{IntoParams, OpenApi};

use super::{PathId, guarded, json};
use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::params;

pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/api/v1/documents", guarded(state, Scope::Read, get(list)))
        .route(
            "/api/v1/documents/{id}",
            guarded(state, Scope::Read, get(get_one)),
        )
        .route(
            "/api/v1/documents/{id}/content",
            guarded(state, Scope::Read, get(content)),
        )
}

#[derive(OpenApi)]
#[openapi(
    paths(list, get_one, content),
    components(schemas(super::schema::Document, super::schema::DocumentList))
)]
pub(crate) struct Doc;

/// Filters of `GET /api/v1/documents` (for the document; parsed by hand).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct DocumentParams {
    /// Only this connection (id).
    #[param(minimum = 1)]
    connection: Option<i64>,
    /// Only this account (id).
    #[param(minimum = 1)]
    account: Option<i64>,
    /// Document date on or after (YYYY-MM-DD); undated documents are left out.
    from: Option<chrono::NaiveDate>,
    /// Document date on or before (YYYY-MM-DD); undated documents are left out.
    to: Option<chrono::NaiveDate>,
    /// Documents per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000, default = 100)]
    limit: Option<u32>,
    /// The `next` value of the previous page.
    #[param(pattern = "^[A-Za-z0-9_-]{16}$")]
    cursor: Option<String>,
}

const LIST_PARAMS: &[&str] = &["connection", "account", "from", "to", "limit", "cursor"];

/// Documents per page unless `limit` says.
const DEFAULT_LIMIT: u32 = 100;

/// Parse the query string of `GET /api/v1/documents`.
pub(crate) fn parse_query(raw: Option<&str>) -> Result<DocumentQuery, ApiError> {
    // The transaction filters parse ids and dates with errors naming the parameter.
    let mut q = TxQuery::default();
    let mut limit = DEFAULT_LIMIT;
    let mut after = None;
    for (name, value) in params::pairs(raw) {
        match name.as_ref() {
            "limit" => limit = params::parse_limit(&value)?,
            // Undated documents come last: their position is the latest day.
            "cursor" => {
                let (day, id) = params::decode_cursor(&value)?;
                after = Some(((day != NaiveDate::MAX).then_some(day), id));
            }
            other if LIST_PARAMS.contains(&other) => {
                params::apply_filter(&mut q, other, &value)?;
            }
            other => return Err(params::unknown(other, LIST_PARAMS)),
        }
    }
    Ok(DocumentQuery {
        connection_id: q.connection_id,
        account_id: q.account_id,
        from: q.from,
        to: q.to,
        after,
        limit: Some(limit),
    })
}

/// Documents, ordered by date (undated last), then id, a page at a time
/// like transactions. Unknown parameters are refused.
#[utoipa::path(
    get,
    path = "/api/v1/documents",
    tag = "documents",
    params(DocumentParams),
    responses(
        (status = 200, body = super::schema::DocumentList),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
    )
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let mut query = parse_query(raw.as_deref())?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT) as usize;
    // One more than asked tells whether another page follows.
    query.limit = Some(limit as u32 + 1);
    let mut docs = state.store.bank.list_documents(&query).await?;
    let next = if docs.len() > limit {
        docs.truncate(limit);
        docs.last()
            .map(|d| params::encode_cursor(d.date.unwrap_or(NaiveDate::MAX), d.id))
    } else {
        None
    };
    Ok(json(
        StatusCode::OK,
        &DocumentPage { data: &docs, next },
        docs.len() * 350 + 64,
    ))
}

#[derive(serde::Serialize)]
struct DocumentPage<'a> {
    data: &'a [Document],
    next: Option<String>,
}

/// One document's metadata.
#[utoipa::path(
    get,
    path = "/api/v1/documents/{id}",
    tag = "documents",
    params(("id" = i64, Path, description = "Document id")),
    responses(
        (status = 200, body = super::schema::Document),
        (status = 404, body = ErrorBody),
    )
)]
pub(crate) async fn get_one(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    let doc = state
        .store
        .bank
        .get_document(id)
        .await?
        .ok_or_else(|| no_document(id))?;
    Ok(json(StatusCode::OK, &doc, 350))
}

/// The document's bytes, with the content type the bank gave them and a
/// download file name.
#[utoipa::path(
    get,
    path = "/api/v1/documents/{id}/content",
    tag = "documents",
    params(("id" = i64, Path, description = "Document id")),
    responses(
        (status = 200, description = "The bytes (e.g. a PDF statement)", content_type = "application/octet-stream", body = Vec<u8>,
         headers(
             ("Content-Disposition" = String, description = "attachment; filename=\"2024-01-31-releve-de-compte.pdf\""),
             ("ETag" = String, description = "The SHA-256 of the bytes, quoted"),
         )),
        (status = 404, body = ErrorBody),
    )
)]
pub(crate) async fn content(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    document_file(&state, id, false).await
}

/// A document's bytes, as a download; with `inline`, a PDF shows in the
/// browser (and may be framed by our own pages), anything else still downloads.
pub(crate) async fn document_file(
    state: &AppState,
    id: i64,
    inline: bool,
) -> Result<Response, ApiError> {
    let (doc, bytes) = state
        .store
        .bank
        .document_content(id)
        .await?
        .ok_or_else(|| no_document(id))?;
    let inline = inline && content_type(&doc.content_type) == "application/pdf";
    let mut res = Response::new(Body::from(bytes));
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type(&doc.content_type));
    let disposition = content_disposition(&doc);
    let disposition = if inline {
        disposition.replacen("attachment", "inline", 1)
    } else {
        disposition
    };
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", doc.sha256)) {
        headers.insert(header::ETAG, v);
    }
    // Bank-supplied bytes never run as a page of this origin. A PDF shown
    // inline goes to the browser's viewer, which a sandbox would block.
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(if inline {
            "default-src 'none'; frame-ancestors 'self'"
        } else {
            "sandbox; default-src 'none'"
        }),
    );
    if inline {
        headers.insert(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("SAMEORIGIN"),
        );
    }
    Ok(res)
}

fn no_document(id: i64) -> ApiError {
    ApiError::not_found(format!("no document with id {id}"))
}

/// The stored type when it looks like `type/subtype[; params]`, else octet-stream.
fn content_type(stored: &str) -> HeaderValue {
    let essence = stored.split(';').next().unwrap_or("").trim();
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    let ok = essence
        .split_once('/')
        .is_some_and(|(t, s)| token(t) && token(s));
    if ok && let Ok(v) = HeaderValue::from_str(stored.trim()) {
        return v;
    }
    HeaderValue::from_static("application/octet-stream")
}

/// The usual extension of a content type (for download names).
fn extension(content_type: &str) -> &'static str {
    match content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
        .as_str()
    {
        "application/pdf" => "pdf",
        "text/csv" => "csv",
        "text/plain" => "txt",
        "application/json" => "json",
        "application/xml" | "text/xml" => "xml",
        "image/png" => "png",
        "image/jpeg" => "jpg",
        _ => "bin",
    }
}

/// `attachment; filename="<ascii>"; filename*=UTF-8''<percent-encoded>`: the
/// date and title of the document, safe for any file system.
pub(crate) fn content_disposition(doc: &Document) -> String {
    let mut stem = String::new();
    if let Some(d) = doc.date {
        stem.push_str(&d.to_string());
        stem.push('-');
    }
    stem.push_str(doc.title.trim());
    let stem: String = stem.chars().take(120).collect();
    let ext = extension(&doc.content_type);
    let name = format!("{stem}.{ext}");
    let mut ascii = String::new();
    for c in stem.chars() {
        let c = match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' => c,
            'à' | 'â' | 'ä' | 'á' => 'a',
            'é' | 'è' | 'ê' | 'ë' => 'e',
            'î' | 'ï' | 'í' => 'i',
            'ô' | 'ö' | 'ó' => 'o',
            'û' | 'ü' | 'ù' | 'ú' => 'u',
            'ç' => 'c',
            _ => '-',
        };
        if !(c == '-' && (ascii.is_empty() || ascii.ends_with('-'))) {
            ascii.push(c);
        }
    }
    let ascii = ascii.trim_end_matches('-');
    let ascii = if ascii.is_empty() {
        format!("document-{}.{ext}", doc.id)
    } else {
        format!("{ascii}.{ext}")
    };
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, Utc};

    fn doc(title: &str, content_type: &str) -> Document {
        Document {
            id: 7,
            connection_id: 1,
            account_id: None,
            provider_id: "k".into(),
            kind: "statement".into(),
            category: None,
            title: title.into(),
            date: NaiveDate::from_ymd_opt(2020, 12, 2),
            content_type: content_type.into(),
            sha256: "0".repeat(64),
            size: 1,
            first_seen: Utc::now(),
        }
    }

    #[test]
    fn download_names_are_safe_and_keep_the_title() {
        let d = doc("Relevé de compte \"n°12\"/../etc", "application/pdf");
        let cd = content_disposition(&d);
        assert!(
            cd.starts_with("attachment; filename=\"2020-12-02-Releve-de-compte-n-12-etc.pdf\";"),
            "{cd}"
        );
        assert!(!cd.contains('/'), "{cd}");
        assert!(
            cd.contains("filename*=UTF-8''2020-12-02-Relev%C3%A9%20de%20compte"),
            "{cd}"
        );
        assert!(HeaderValue::from_str(&cd).is_ok());
        let odd = content_disposition(&Document {
            date: None,
            ..doc("???", "x")
        });
        assert!(odd.contains("filename=\"document-7.bin\""), "{odd}");
    }

    #[test]
    fn content_types_from_the_bank_are_checked() {
        assert_eq!(content_type("application/pdf"), "application/pdf");
        assert_eq!(
            content_type("text/plain; charset=utf-8"),
            "text/plain; charset=utf-8"
        );
        assert_eq!(content_type("nonsense"), "application/octet-stream");
        assert_eq!(content_type("a/b\r\nX: y"), "application/octet-stream");
    }

    #[test]
    fn list_parameters_are_checked() {
        let q = parse_query(Some("connection=2&from=2024-01-01&to=2024-12-31")).unwrap();
        assert_eq!(q.connection_id, Some(2));
        assert_eq!(q.from, NaiveDate::from_ymd_opt(2024, 1, 1));
        assert!(parse_query(Some("text=x")).is_err());
        // An empty range is no error: it matches nothing.
        assert!(parse_query(Some("from=2024-02-01&to=2024-01-01")).is_ok());
        assert!(parse_query(Some("account=abc")).is_err());
    }
}
