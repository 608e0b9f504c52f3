//! Documents (statements, notices): metadata rows and content-addressed bytes.
//!
//! The bytes of a document live once in `document_blobs`, keyed by their
//! SHA-256 (computed here, never trusted from the caller); a document row is
//! unique per (connection, provider key). Saving a document both backends do
//! in one database transaction: the blob if it is new, then the row if it is
//! new; a document saved again is returned as it was stored.
use bankbridge_core::Document;
use chrono::{DateTime, NaiveDate, Utc};
use sha2::{Digest, Sha256};

use crate::common::Arg;
use crate::{Result, StoreError};

/// A document to store, with its bytes given beside it to [`crate::BankWrites::save_document`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDocument {
    pub connection_id: i64,
    pub account_id: Option<i64>,
    /// The connector's stable key of the document within the connection.
    pub provider_id: String,
    pub kind: String,
    pub category: Option<String>,
    pub title: String,
    pub date: Option<NaiveDate>,
    pub content_type: String,
    pub now: DateTime<Utc>,
}

/// What [`crate::BankWrites::save_document`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedDocument {
    pub document: Document,
    /// A new document row (false: the connection already had this provider key).
    pub inserted: bool,
    /// New bytes (false: a document with the same SHA-256 was stored before).
    pub blob_inserted: bool,
}

/// Filters of [`crate::BankData::list_documents`]; dates bound the document's own date.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DocumentQuery {
    pub connection_id: Option<i64>,
    pub account_id: Option<i64>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    /// Keyset position: documents strictly after (date, id) in the list's
    /// order (dated ones by date, then the undated ones; then id).
    pub after: Option<(Option<NaiveDate>, i64)>,
    pub limit: Option<u32>,
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub(crate) fn check_new_document(d: &NewDocument, lease: crate::LeaseToken) -> Result<()> {
    let bad = |what: &str| {
        Err(StoreError::Conflict(format!(
            "document {:?} of connection {}: {what}",
            d.provider_id, d.connection_id
        )))
    };
    if d.connection_id != lease.connection_id {
        return bad(&format!(
            "the sync saving it holds the lease of connection {}",
            lease.connection_id
        ));
    }
    if d.provider_id.trim().is_empty() {
        return bad("the provider key is empty");
    }
    if d.kind.trim().is_empty() {
        return bad("the kind is empty");
    }
    if d.title.trim().is_empty() {
        return bad("the title is empty");
    }
    if d.content_type.trim().is_empty() || d.content_type.chars().any(char::is_control) {
        return bad("the content type is empty or has control characters");
    }
    Ok(())
}

/// The bytes' size as stored (a BIGINT).
pub(crate) fn stored_size(content: &[u8]) -> Result<i64> {
    i64::try_from(content.len())
        .map_err(|_| StoreError::Conflict("a document larger than 2^63 bytes".into()))
}

/// `$1` account id: the connection the account belongs to.
pub(crate) const ACCOUNT_OWNER: &str = "SELECT connection_id FROM accounts WHERE id = $1";

/// A document's account must belong to its connection (`owner` is what
/// [`ACCOUNT_OWNER`] found, None for no such account).
pub(crate) fn check_account_owner(
    d: &NewDocument,
    account_id: i64,
    owner: Option<i64>,
) -> Result<()> {
    if owner != Some(d.connection_id) {
        return Err(StoreError::NotFound(format!(
            "account {account_id} of connection {}",
            d.connection_id
        )));
    }
    Ok(())
}

macro_rules! document_columns {
    () => {
        "id, connection_id, account_id, provider_id, kind, category, title, date, content_type, \
         sha256, size, first_seen"
    };
}

pub(crate) const BLOB_INSERT: &str = "INSERT INTO document_blobs (sha256, size, content, created_at) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (sha256) DO NOTHING";

pub(crate) const DOCUMENT_INSERT: &str = concat!(
    "INSERT INTO documents (connection_id, account_id, provider_id, kind, category, title, date, \
     content_type, sha256, size, first_seen) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
     ON CONFLICT (connection_id, provider_id) DO NOTHING RETURNING ",
    document_columns!()
);

pub(crate) const DOCUMENT_BY_KEY: &str = concat!(
    "SELECT ",
    document_columns!(),
    " FROM documents WHERE connection_id = $1 AND provider_id = $2"
);

pub(crate) const DOCUMENT_GET: &str = concat!(
    "SELECT ",
    document_columns!(),
    " FROM documents WHERE id = $1"
);

pub(crate) const DOCUMENT_KEYS: &str = "SELECT provider_id FROM documents WHERE connection_id = $1";

pub(crate) const BLOB_CONTENT: &str = "SELECT content FROM document_blobs WHERE sha256 = $1";

/// Blobs no document refers to (run after deleting a connection).
pub(crate) const ORPHAN_BLOBS_DELETE: &str = "DELETE FROM document_blobs WHERE NOT EXISTS \
     (SELECT 1 FROM documents d WHERE d.sha256 = document_blobs.sha256)";

/// `SELECT … FROM documents WHERE … ORDER BY date (undated last), id`.
pub(crate) fn list_sql(q: &DocumentQuery) -> (String, Vec<Arg>) {
    let mut args: Vec<Arg> = Vec::new();
    let mut conds: Vec<String> = Vec::new();
    if let Some(c) = q.connection_id {
        args.push(Arg::I64(c));
        conds.push(format!("connection_id = ${}", args.len()));
    }
    if let Some(a) = q.account_id {
        args.push(Arg::I64(a));
        conds.push(format!("account_id = ${}", args.len()));
    }
    if let Some(f) = q.from {
        args.push(Arg::Date(f));
        conds.push(format!("date >= ${}", args.len()));
    }
    if let Some(t) = q.to {
        args.push(Arg::Date(t));
        conds.push(format!("date <= ${}", args.len()));
    }
    match q.after {
        Some((Some(d), id)) => {
            args.push(Arg::Date(d));
            let pd = args.len();
            args.push(Arg::I64(id));
            let pi = args.len();
            conds.push(format!(
                "(date IS NULL OR date > ${pd} OR (date = ${pd} AND id > ${pi}))"
            ));
        }
        Some((None, id)) => {
            args.push(Arg::I64(id));
            conds.push(format!("(date IS NULL AND id > ${})", args.len()));
        }
        None => {}
    }
    let mut sql = concat!("SELECT ", document_columns!(), " FROM documents").to_owned();
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    sql.push_str(" ORDER BY date IS NULL, date, id");
    if let Some(limit) = q.limit {
        args.push(Arg::I64(i64::from(limit)));
        sql.push_str(&format!(" LIMIT ${}", args.len()));
    }
    (sql, args)
}

#[derive(sqlx::FromRow)]
pub(crate) struct DocumentRow {
    id: i64,
    connection_id: i64,
    account_id: Option<i64>,
    provider_id: String,
    kind: String,
    category: Option<String>,
    title: String,
    date: Option<NaiveDate>,
    content_type: String,
    sha256: String,
    size: i64,
    first_seen: DateTime<Utc>,
}

impl TryFrom<DocumentRow> for Document {
    type Error = StoreError;

    fn try_from(r: DocumentRow) -> Result<Self> {
        Ok(Document {
            id: r.id,
            connection_id: r.connection_id,
            account_id: r.account_id,
            provider_id: r.provider_id,
            kind: r.kind,
            category: r.category,
            title: r.title,
            date: r.date,
            content_type: r.content_type,
            sha256: r.sha256,
            size: u64::try_from(r.size)
                .map_err(|_| StoreError::Corrupt(format!("document {} size {}", r.id, r.size)))?,
            first_seen: r.first_seen,
        })
    }
}

pub(crate) fn documents(rows: Vec<DocumentRow>) -> Result<Vec<Document>> {
    rows.into_iter().map(Document::try_from).collect()
}

/// The content read back ([`BLOB_CONTENT`]) must exist and be the bytes its key names.
pub(crate) fn with_content(doc: Document, content: Option<Vec<u8>>) -> Result<(Document, Vec<u8>)> {
    let content = content.ok_or_else(|| {
        StoreError::Corrupt(format!(
            "document {} has no bytes (sha256 {})",
            doc.id, doc.sha256
        ))
    })?;
    if sha256_hex(&content) != doc.sha256 {
        return Err(StoreError::Corrupt(format!(
            "the stored bytes of document {} do not hash to its sha256 {}",
            doc.id, doc.sha256
        )));
    }
    Ok((doc, content))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_nothing_is_the_known_one() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn list_sql_numbers_its_parameters() {
        let (sql, args) = list_sql(&DocumentQuery {
            connection_id: Some(1),
            account_id: None,
            from: Some(NaiveDate::from_ymd_opt(2024, 1, 1).unwrap()),
            to: None,
            after: Some((NaiveDate::from_ymd_opt(2024, 2, 1), 7)),
            limit: Some(5),
        });
        assert!(sql.contains("connection_id = $1 AND date >= $2"), "{sql}");
        // The cursor's date is one parameter, used twice.
        assert!(
            sql.contains("(date IS NULL OR date > $3 OR (date = $3 AND id > $4))"),
            "{sql}"
        );
        assert!(sql.ends_with("LIMIT $5"), "{sql}");
        assert_eq!(args.len(), 5);
    }
}
