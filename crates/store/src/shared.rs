//! The store's logic written once for both backends.
//!
//! Each backend module invokes [`shared_store!`] with its store type and
//! row type; the macro expands to the domain traits' impls (`Connections`,
//! `BankData`, …) and the row decoders, for that backend. The SQL is the
//! same text on both (`$N` parameters work on SQLite too); what differs is
//! reached through a few items each backend defines beside the invocation:
//!
//! - `Self::NAME`, `Self::DIALECT`, and `Self::JSON_CAST` / `JSONB_CAST` / `BYTEA_CAST`
//!   (PostgreSQL needs a parameter's type spelled out where SQLite has none);
//! - `self.reads()`, `self.writes()` (SQLite: a pool of readers and a
//!   one-connection writer; PostgreSQL: one pool), `self.write_tx()`,
//!   `self.read_snapshot()`;
//! - the column lists (`CONNECTION_COLUMNS`, `tx_columns()`, …: PostgreSQL
//!   reads JSON as text), `decimal_at` / `opt_decimal_at` (money is TEXT on
//!   SQLite, NUMERIC on PostgreSQL), `money` (how money is bound), `id_set` and
//!   `in_id_set` (a set of row ids: JSON for `json_each`, or an array);
//! - the methods that really differ, passed in: `account_totals` (SQLite sums
//!   in Rust, its SUM would use floats), and inside `commit_window` the bulk
//!   writes `insert_rows`, `update_rows`, `update_ids` (multi-row INSERTs and
//!   `json_each` on SQLite, `UNNEST`ed arrays on PostgreSQL) and `money`.
//!
//! A macro rather than code generic over `sqlx::Database`: the generic form
//! needs an `Encode`/`Decode`/`Type` bound per Rust type per query and
//! buries the SQL under them; expanded per backend, each query stays plain
//! sqlx and the compiler checks it against the concrete driver.

macro_rules! shared_store {
    (
        $Store:ty, $Row:ty;
        bank_data { $($data:tt)* }
    ) => {
        #[async_trait]
        impl $crate::Connections for $Store {
        fn backend(&self) -> &'static str {
            Self::NAME
        }

        async fn create_connection(&self, new: &NewConnection) -> Result<Connection> {
            let settings = serde_json::to_string(&new.settings).map_err(|e| {
                StoreError::Conflict(format!("connection settings cannot be serialised: {e}"))
            })?;
            let jsonb = Self::JSONB_CAST;
            let row = sqlx::query(&format!(
                "INSERT INTO connections (name, connector, settings, credentials_sealed, created_at) \
                 VALUES ($1, $2, $3{jsonb}, $4, $5) RETURNING {CONNECTION_COLUMNS}"
            ))
            .bind(&new.name)
            .bind(&new.connector)
            .bind(settings)
            .bind(&new.credentials_sealed)
            .bind(micros(Utc::now()))
            .fetch_one(self.writes())
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict(format!("a connection named {:?} already exists", new.name))
                } else {
                    e.into()
                }
            })?;
            connection_from_row(&row)
        }

        async fn list_connections(&self) -> Result<Vec<Connection>> {
            let rows = sqlx::query(&format!(
                "SELECT {CONNECTION_COLUMNS} FROM connections ORDER BY id"
            ))
            .fetch_all(self.reads())
            .await?;
            rows.iter().map(connection_from_row).collect()
        }

        async fn get_connection(&self, id: i64) -> Result<Option<Connection>> {
            let row = sqlx::query(&format!(
                "SELECT {CONNECTION_COLUMNS} FROM connections WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(self.reads())
            .await?;
            row.as_ref().map(connection_from_row).transpose()
        }

        async fn find_connection(&self, id_or_name: &str) -> Result<Option<Connection>> {
            if let Ok(id) = id_or_name.trim().parse::<i64>()
                && let Some(c) = self.get_connection(id).await?
            {
                return Ok(Some(c));
            }
            let row = sqlx::query(&format!(
                "SELECT {CONNECTION_COLUMNS} FROM connections WHERE name = $1"
            ))
            .bind(id_or_name)
            .fetch_optional(self.reads())
            .await?;
            row.as_ref().map(connection_from_row).transpose()
        }

        async fn delete_connection(&self, id: i64) -> Result<bool> {
            let mut tx = self.write_tx().await?;
            let done = sqlx::query("DELETE FROM connections WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(documents::ORPHAN_BLOBS_DELETE)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(done.rows_affected() > 0)
        }

        async fn mark_consent_warned(&self, id: i64, valid_until: NaiveDate) -> Result<bool> {
            let done = sqlx::query(
                "UPDATE connections SET consent_warned_for = $1 WHERE id = $2 \
                 AND (consent_warned_for IS NULL OR consent_warned_for <> $1)",
            )
            .bind(valid_until)
            .bind(id)
            .execute(self.writes())
            .await?;
            Ok(done.rows_affected() > 0)
        }

        async fn connection_footprint(&self, id: i64) -> Result<Option<ConnectionFootprint>> {
            let row: Option<(i64, i64, i64)> = sqlx::query_as(&common::footprint_sql(Self::DIALECT))
                .bind(id)
                .fetch_optional(self.reads())
                .await?;
            Ok(common::footprint(row))
        }

        async fn update_connection(
            &self,
            id: i64,
            update: &ConnectionUpdate,
        ) -> Result<Option<Connection>> {
            let settings = common::settings_text(update)?;
            let (jsonb, bytea) = (Self::JSONB_CAST, Self::BYTEA_CAST);
            let row = sqlx::query(&format!(
                "UPDATE connections SET settings = COALESCE($1{jsonb}, settings), \
                 credentials_sealed = COALESCE($2, credentials_sealed), \
                 credentials_version = credentials_version + (CASE WHEN $2{bytea} IS NULL THEN 0 ELSE 1 END), \
                 session_sealed = CASE WHEN $3 THEN NULL ELSE session_sealed END \
                 WHERE id = $4 RETURNING {CONNECTION_COLUMNS}"
            ))
            .bind(settings)
            .bind(update.credentials_sealed.as_deref())
            .bind(update.clear_session)
            .bind(id)
            .fetch_optional(self.writes())
            .await?;
            row.as_ref().map(connection_from_row).transpose()
        }

        async fn meta(&self, name: &str) -> Result<Option<String>> {
            Ok(sqlx::query_scalar("SELECT value FROM meta WHERE name = $1")
                .bind(name)
                .fetch_optional(self.writes())
                .await?)
        }

        async fn init_meta(&self, name: &str, value: &str) -> Result<String> {
            sqlx::query("INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
                .bind(name)
                .bind(value)
                .execute(self.writes())
                .await?;
            Ok(sqlx::query_scalar("SELECT value FROM meta WHERE name = $1")
                .bind(name)
                .fetch_one(self.writes())
                .await?)
        }

        async fn claim_scheduled_sync(
            &self,
            connection_id: i64,
            owner: &str,
            seen: Option<DateTime<Utc>>,
            now: DateTime<Utc>,
            until: DateTime<Utc>,
        ) -> Result<Option<LeaseToken>> {
            let generation: Option<i64> = sqlx::query_scalar(common::LEASE_CLAIM_SCHEDULED)
                .bind(owner)
                .bind(micros(until))
                .bind(connection_id)
                .bind(micros(now))
                .bind(opt_micros(seen))
                .fetch_optional(self.writes())
                .await?;
            Ok(generation.map(|generation| LeaseToken {
                connection_id,
                generation,
            }))
        }

        async fn acquire_sync_lease(
            &self,
            connection_id: i64,
            owner: &str,
            now: DateTime<Utc>,
            until: DateTime<Utc>,
        ) -> Result<Lease> {
            let (now, until) = (micros(now), micros(until));
            // A holder may release between the UPDATE and the read-back; try again then.
            for _ in 0..3 {
                let generation: Option<i64> = sqlx::query_scalar(common::LEASE_ACQUIRE)
                    .bind(owner)
                    .bind(until)
                    .bind(connection_id)
                    .bind(now)
                    .fetch_optional(self.writes())
                    .await?;
                if let Some(generation) = generation {
                    return Ok(Lease::Acquired(LeaseToken {
                        connection_id,
                        generation,
                    }));
                }
                let row = sqlx::query_as(common::LEASE_HOLDER)
                    .bind(connection_id)
                    .fetch_optional(self.writes())
                    .await?;
                if let Some(held) = common::lease_held(connection_id, row, now)? {
                    return Ok(held);
                }
            }
            Err(StoreError::Conflict(format!(
                "the sync lease of connection {connection_id} keeps changing hands; try again"
            )))
        }

        async fn renew_sync_lease(&self, lease: LeaseToken, until: DateTime<Utc>) -> Result<()> {
            let done = sqlx::query(common::LEASE_RENEW)
                .bind(micros(until))
                .bind(lease.connection_id)
                .bind(lease.generation)
                .execute(self.writes())
                .await?;
            common::fenced(done.rows_affected(), lease)
        }

        async fn release_sync_lease(&self, lease: LeaseToken) -> Result<()> {
            sqlx::query(common::LEASE_RELEASE)
                .bind(lease.connection_id)
                .bind(lease.generation)
                .execute(self.writes())
                .await?;
            Ok(())
        }

        }

        #[async_trait]
        impl $crate::BankData for $Store {
        async fn transactions_changed_at(&self) -> Result<Option<DateTime<Utc>>> {
            // `transactions_updated` answers it from the index's last entry.
            Ok(sqlx::query_scalar("SELECT max(updated_at) FROM transactions")
                .fetch_one(self.reads())
                .await?)
        }

        async fn list_accounts(&self, connection_id: Option<i64>) -> Result<Vec<Account>> {
            let rows =
                match connection_id {
                    Some(c) => sqlx::query(&format!(
                        "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE connection_id = $1 ORDER BY id"
                    ))
                    .bind(c)
                    .fetch_all(self.reads())
                    .await?,
                    None => {
                        sqlx::query(&format!(
                            "SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY id"
                        ))
                        .fetch_all(self.reads())
                        .await?
                    }
                };
            rows.iter().map(account_from_row).collect()
        }

        async fn get_account(&self, id: i64) -> Result<Option<Account>> {
            let row = sqlx::query(&format!(
                "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(self.reads())
            .await?;
            row.as_ref().map(account_from_row).transpose()
        }

        async fn list_balances(&self, account_id: i64) -> Result<Vec<StoredBalance>> {
            let rows = sqlx::query(
                "SELECT account_id, kind, amount, currency, reference_date, fetched_at FROM balances \
                 WHERE account_id = $1 ORDER BY reference_date, kind, id",
            )
            .bind(account_id)
            .fetch_all(self.reads())
            .await?;
            rows.iter()
                .map(|r| {
                    let kind: &str = r.try_get(1)?;
                    Ok(StoredBalance {
                        account_id: r.try_get(0)?,
                        balance: Balance {
                            kind: BalanceKind::parse(kind)
                                .ok_or_else(|| corrupt(format!("balance kind {kind:?}")))?,
                            amount: decimal_at(r, 2)?,
                            currency: codec::currency(r.try_get(3)?)?,
                            reference_date: r.try_get(4)?,
                        }
                        .as_money(),
                        fetched_at: r.try_get(5)?,
                    })
                })
                .collect()
        }

        async fn checkpoint(&self, account_id: i64) -> Result<Checkpoint> {
            let row: Option<(Option<NaiveDate>, Option<NaiveDate>, bool, i64)> = sqlx::query_as(
                "SELECT oldest_covered, newest_covered, backfill_done, empty_streak FROM checkpoints WHERE account_id = $1",
            )
            .bind(account_id)
            .fetch_optional(self.reads())
            .await?;
            Ok(match row {
                Some((oldest, newest, done, streak)) => Checkpoint {
                    oldest_covered: oldest,
                    newest_covered: newest,
                    backfill_done: done,
                    empty_streak: common::streak(streak)?,
                },
                None => Checkpoint::default(),
            })
        }

        async fn load_window(
            &self,
            account_id: i64,
            from: NaiveDate,
            to: NaiveDate,
        ) -> Result<Vec<Transaction>> {
            let rows = sqlx::query(&format!(
                "SELECT {} FROM transactions WHERE account_id = $1 AND booking_date >= $2 AND booking_date <= $3 \
                 ORDER BY booking_date, id",
                tx_columns()
            ))
            .bind(account_id)
            .bind(from)
            .bind(to)
            .fetch_all(self.reads())
            .await?;
            rows.iter().map(tx_from_row).collect()
        }

        async fn query_transactions(&self, query: &TxQuery) -> Result<Vec<Transaction>> {
            let (sql, args) = common::tx_query_sql(query, Self::DIALECT, tx_columns());
            let rows = sqlx::query_with(&sql, bind_args(args)?)
                .fetch_all(self.reads())
                .await?;
            rows.iter().map(tx_from_row).collect()
        }

        fn stream_transactions(&self, query: TxQuery) -> BoxStream<'_, Result<Transaction>> {
            common::produced_stream(64, move |mut sender| async move {
                let (sql, args) = common::tx_query_sql(&query, Self::DIALECT, tx_columns());
                let args = match bind_args(args) {
                    Ok(a) => a,
                    Err(e) => {
                        let _ = sender.send(Err(e)).await;
                        return;
                    }
                };
                let mut rows = sqlx::query_with(&sql, args).fetch(self.reads());
                while let Some(row) = rows.next().await {
                    let item = row.map_err(StoreError::from).and_then(|r| tx_from_row(&r));
                    let failed = item.is_err();
                    if sender.send(item).await.is_err() || failed {
                        return;
                    }
                }
            })
        }

        async fn document_keys(&self, connection_id: i64) -> Result<std::collections::HashSet<String>> {
            let keys: Vec<String> = sqlx::query_scalar(documents::DOCUMENT_KEYS)
                .bind(connection_id)
                .fetch_all(self.reads())
                .await?;
            Ok(keys.into_iter().collect())
        }

        async fn list_documents(&self, query: &DocumentQuery) -> Result<Vec<Document>> {
            let (sql, args) = documents::list_sql(query);
            let rows: Vec<documents::DocumentRow> = sqlx::query_as_with(&sql, bind_args(args)?)
                .fetch_all(self.reads())
                .await?;
            documents::documents(rows)
        }

        async fn get_document(&self, id: i64) -> Result<Option<Document>> {
            let row: Option<documents::DocumentRow> = sqlx::query_as(documents::DOCUMENT_GET)
                .bind(id)
                .fetch_optional(self.reads())
                .await?;
            row.map(Document::try_from).transpose()
        }

        async fn document_content(&self, id: i64) -> Result<Option<(Document, Vec<u8>)>> {
            let Some(doc) = self.get_document(id).await? else {
                return Ok(None);
            };
            let content: Option<Vec<u8>> = sqlx::query_scalar(documents::BLOB_CONTENT)
                .bind(&doc.sha256)
                .fetch_optional(self.reads())
                .await?;
            documents::with_content(doc, content).map(Some)
        }

            $($data)*

        }

        #[async_trait]
        impl $crate::BankWrites for $Store {
            async fn upsert_account(
                &self,
                lease: LeaseToken,
                account: &FetchedAccount,
                now: DateTime<Utc>,
            ) -> Result<Account> {
                let raw = serde_json::to_string(&account.raw)
                    .map_err(|e| StoreError::Conflict(format!("account raw cannot be serialised: {e}")))?;
                let connection_id = lease.connection_id;
                let mut tx = self.write_tx().await?;
                fence(&mut tx, lease).await?;
                let json = Self::JSON_CAST;
                let row = sqlx::query(&format!(
                    "INSERT INTO accounts AS a (connection_id, provider_id, iban, currency, name, kind, raw, first_seen, \
                     last_seen, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7{json}, $8, $8, $8) \
                     ON CONFLICT (connection_id, provider_id) DO UPDATE SET \
                     updated_at = CASE WHEN a.iban IS DISTINCT FROM EXCLUDED.iban \
                       OR a.currency IS DISTINCT FROM EXCLUDED.currency OR a.name IS DISTINCT FROM EXCLUDED.name \
                       OR a.kind IS DISTINCT FROM EXCLUDED.kind \
                       OR CAST(a.raw AS TEXT) IS DISTINCT FROM CAST(EXCLUDED.raw AS TEXT) \
                       THEN EXCLUDED.updated_at ELSE a.updated_at END, \
                     iban = EXCLUDED.iban, currency = EXCLUDED.currency, name = EXCLUDED.name, kind = EXCLUDED.kind, \
                     raw = EXCLUDED.raw, last_seen = EXCLUDED.last_seen \
                     RETURNING {ACCOUNT_COLUMNS}"
                ))
                .bind(connection_id)
                .bind(&account.provider_id)
                .bind(account.iban.as_ref().map(|i| i.as_str()))
                .bind(account.currency.as_str())
                .bind(account.name.as_deref())
                .bind(account.kind.as_deref())
                .bind(raw)
                .bind(micros(now))
                .fetch_one(&mut *tx)
                .await?;
                let account = account_from_row(&row)?;
                tx.commit().await?;
                Ok(account)
            }

            async fn commit_window(&self, commit: &WindowCommit) -> Result<CommitStats> {
                let prepared = common::prepare_commit(commit)?;
                let now = prepared.now;
                let account_id = commit.account_id;
                let connection_id = commit.lease.connection_id;
                let mut tx = self.write_tx().await?;
                fence(&mut tx, commit.lease).await?;

                let owner: Option<i64> =
                    sqlx::query_scalar("SELECT connection_id FROM accounts WHERE id = $1")
                        .bind(account_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                match owner {
                    None => return Err(StoreError::NotFound(format!("account {account_id}"))),
                    Some(c) if c != connection_id => {
                        return Err(StoreError::Conflict(format!(
                            "account {account_id} belongs to connection {c}, not {connection_id}"
                        )));
                    }
                    Some(_) => {}
                }

                insert_rows(&mut tx, connection_id, account_id, now, &prepared.inserts).await?;
                update_rows(&mut tx, account_id, now, &prepared.updates).await?;
                update_ids(&mut tx, "status = 'void', updated_at = $1", now, account_id, &prepared.voids, "transactions to void").await?;
                update_ids(&mut tx, "last_seen = $1", now, account_id, &prepared.touch, "transactions to touch").await?;

                let mut stats = CommitStats::default();
                for b in &commit.balances {
                    let existing = sqlx::query(
                        "SELECT amount, currency FROM balances WHERE account_id = $1 AND kind = $2 AND reference_date = $3",
                    )
                    .bind(account_id)
                    .bind(b.kind.as_str())
                    .bind(b.reference_date)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let changed = match &existing {
                        None => true,
                        Some(row) => {
                            let currency: &str = row.try_get(1)?;
                            decimal_at(row, 0)? != b.amount || currency != b.currency.as_str()
                        }
                    };
                    if changed {
                        sqlx::query(
                            "INSERT INTO balances (account_id, kind, amount, currency, reference_date, fetched_at) \
                             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (account_id, kind, reference_date) DO UPDATE SET \
                             amount = excluded.amount, currency = excluded.currency, fetched_at = excluded.fetched_at",
                        )
                        .bind(account_id)
                        .bind(b.kind.as_str())
                        .bind(money(b.amount))
                        .bind(b.currency.as_str())
                        .bind(b.reference_date)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                        stats.balances_written += 1;
                    }
                }

                let cp = &commit.checkpoint;
                sqlx::query(
                    "INSERT INTO checkpoints (account_id, oldest_covered, newest_covered, backfill_done, empty_streak, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (account_id) DO UPDATE SET \
                     oldest_covered = excluded.oldest_covered, newest_covered = excluded.newest_covered, \
                     backfill_done = excluded.backfill_done, empty_streak = excluded.empty_streak, updated_at = excluded.updated_at",
                )
                .bind(account_id)
                .bind(cp.oldest_covered)
                .bind(cp.newest_covered)
                .bind(cp.backfill_done)
                .bind(i64::from(cp.empty_streak))
                .bind(now)
                .execute(&mut *tx)
                .await?;

                tx.commit().await?;
                Ok(stats)
            }

        async fn save_document(
            &self,
            lease: LeaseToken,
            doc: &NewDocument,
            content: &[u8],
        ) -> Result<SavedDocument> {
            documents::check_new_document(doc, lease)?;
            let sha256 = documents::sha256_hex(content);
            let size = documents::stored_size(content)?;
            let now = micros(doc.now);
            let mut tx = self.write_tx().await?;
            fence(&mut tx, lease).await?;
            if let Some(account_id) = doc.account_id {
                let owner: Option<i64> = sqlx::query_scalar(documents::ACCOUNT_OWNER)
                    .bind(account_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                documents::check_account_owner(doc, account_id, owner)?;
            }
            let blob = sqlx::query(documents::BLOB_INSERT)
                .bind(&sha256)
                .bind(size)
                .bind(content)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let row: Option<documents::DocumentRow> = sqlx::query_as(documents::DOCUMENT_INSERT)
                .bind(doc.connection_id)
                .bind(doc.account_id)
                .bind(&doc.provider_id)
                .bind(&doc.kind)
                .bind(doc.category.as_deref())
                .bind(&doc.title)
                .bind(doc.date)
                .bind(&doc.content_type)
                .bind(&sha256)
                .bind(size)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| {
                    if is_foreign_key_violation(&e) {
                        StoreError::NotFound(format!("connection {}", doc.connection_id))
                    } else {
                        e.into()
                    }
                })?;
            let (row, inserted) = match row {
                Some(r) => (r, true),
                None => {
                    let existing: documents::DocumentRow = sqlx::query_as(documents::DOCUMENT_BY_KEY)
                        .bind(doc.connection_id)
                        .bind(&doc.provider_id)
                        .fetch_one(&mut *tx)
                        .await?;
                    (existing, false)
                }
            };
            // Bytes only this call brought and no document keeps are not kept.
            let blob_inserted = blob.rows_affected() == 1 && inserted;
            if blob.rows_affected() == 1 && !inserted {
                tx.rollback().await?;
            } else {
                tx.commit().await?;
            }
            Ok(SavedDocument {
                document: row.try_into()?,
                inserted,
                blob_inserted,
            })
        }

        async fn save_session(&self, lease: LeaseToken, session_sealed: Option<&[u8]>) -> Result<()> {
            let mut tx = self.write_tx().await?;
            fence(&mut tx, lease).await?;
            sqlx::query("UPDATE connections SET session_sealed = $1 WHERE id = $2")
                .bind(session_sealed)
                .bind(lease.connection_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        }

        async fn record_consent(
            &self,
            lease: LeaseToken,
            status: &str,
            valid_until: Option<NaiveDate>,
        ) -> Result<()> {
            let done = sqlx::query(
                "UPDATE connections SET consent_status = $1, consent_valid_until = $2 \
                 WHERE id = $3 AND lease_generation = $4 AND lease_owner IS NOT NULL",
            )
            .bind(status)
            .bind(valid_until)
            .bind(lease.connection_id)
            .bind(lease.generation)
            .execute(self.writes())
            .await?;
            common::fenced(done.rows_affected(), lease)
        }

        async fn record_sync_result(
            &self,
            lease: LeaseToken,
            at: DateTime<Utc>,
            outcome: SyncOutcome,
            error: Option<&str>,
            credentials_version: i64,
        ) -> Result<()> {
            let done = sqlx::query(
                "UPDATE connections SET last_sync_at = $1, last_sync_status = $2, last_sync_error = $3, \
                 last_sync_credentials_version = $4 WHERE id = $5 AND lease_generation = $6 \
                 AND lease_owner IS NOT NULL",
            )
            .bind(micros(at))
            .bind(outcome.as_str())
            .bind(error)
            .bind(credentials_version)
            .bind(lease.connection_id)
            .bind(lease.generation)
            .execute(self.writes())
            .await?;
            common::fenced(done.rows_affected(), lease)
        }

        async fn set_categories(
            &self,
            changes: &[(i64, Option<String>)],
            now: DateTime<Utc>,
        ) -> Result<u64> {
            let mut tx = self.write_tx().await?;
            let mut changed = 0;
            for (id, category) in changes {
                changed += sqlx::query(common::category_update(Self::DIALECT))
                    .bind(category.as_deref())
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            }
            tx.commit().await?;
            Ok(changed)
        }


        }

        #[async_trait]
        impl $crate::UserEdits for $Store {
        async fn set_manual_category(
            &self,
            id: i64,
            category: Option<&str>,
            now: DateTime<Utc>,
        ) -> Result<bool> {
            let done = sqlx::query(
                "UPDATE transactions SET category = $1, category_manual = $2, updated_at = $3 WHERE id = $4",
            )
            .bind(category)
            .bind(category.is_some())
            .bind(micros(now))
            .bind(id)
            .execute(self.writes())
            .await?;
            Ok(done.rows_affected() > 0)
        }
        }

        #[async_trait]
        impl $crate::Tokens for $Store {
        async fn create_token(&self, record: &TokenRecord) -> Result<()> {
            sqlx::query(
                "INSERT INTO api_tokens (id, name, scope, hash, created_at, last_used_at, revoked_at, location, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&record.id)
            .bind(&record.name)
            .bind(record.scope.as_str())
            .bind(&record.hash)
            .bind(micros(record.created_at))
            .bind(opt_micros(record.last_used_at))
            .bind(opt_micros(record.revoked_at))
            .bind(record.location.as_deref())
            .bind(opt_micros(record.expires_at))
            .execute(self.writes())
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Conflict(format!(
                        "a token with id {:?} or name {:?} already exists",
                        record.id, record.name
                    ))
                } else {
                    e.into()
                }
            })?;
            Ok(())
        }

        async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
            let rows = sqlx::query(&format!(
                "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at, id"
            ))
            .fetch_all(self.reads())
            .await?;
            rows.iter().map(token_from_row).collect()
        }

        async fn find_token(&self, id: &str) -> Result<Option<TokenRecord>> {
            let row = sqlx::query(&format!(
                "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(self.reads())
            .await?;
            row.as_ref().map(token_from_row).transpose()
        }

        async fn revoke_token(&self, id_or_name: &str, at: DateTime<Utc>) -> Result<bool> {
            let done = sqlx::query(
                "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = COALESCE(\
                 (SELECT id FROM api_tokens WHERE id = $2), (SELECT id FROM api_tokens WHERE name = $2))",
            )
            .bind(micros(at))
            .bind(id_or_name)
            .execute(self.writes())
            .await?;
            Ok(done.rows_affected() > 0)
        }

        async fn touch_token(&self, id: &str, at: DateTime<Utc>) -> Result<()> {
            sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
                .bind(micros(at))
                .bind(id)
                .execute(self.writes())
                .await?;
            Ok(())
        }

        async fn create_login_link(
            &self,
            hash: &[u8],
            token_id: &str,
            created_at: DateTime<Utc>,
            expires_at: DateTime<Utc>,
        ) -> Result<()> {
            sqlx::query(
                "INSERT INTO login_links (hash, token_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(hash)
            .bind(token_id)
            .bind(micros(created_at))
            .bind(micros(expires_at))
            .execute(self.writes())
            .await
            .map_err(|e| {
                if is_foreign_key_violation(&e) {
                    StoreError::NotFound(format!("token {token_id}"))
                } else {
                    e.into()
                }
            })?;
            Ok(())
        }

        async fn use_login_link(&self, hash: &[u8], now: DateTime<Utc>) -> Result<Option<String>> {
            // One statement marks the link used and reads it: two requests
            // with one link cannot both sign in.
            let row = sqlx::query(
                "UPDATE login_links SET used_at = $1 WHERE hash = $2 AND used_at IS NULL \
                 RETURNING token_id, expires_at",
            )
            .bind(micros(now))
            .bind(hash)
            .fetch_optional(self.writes())
            .await?;
            let Some(row) = row else { return Ok(None) };
            let expires_at: DateTime<Utc> = row.try_get(1)?;
            Ok((expires_at > now).then(|| row.try_get(0)).transpose()?)
        }

        }

        #[async_trait]
        impl $crate::SyncJobs for $Store {
        async fn create_sync_job(&self, connection_id: i64, at: DateTime<Utc>) -> Result<SyncJob> {
            let row = sqlx::query(&format!(
                "INSERT INTO sync_jobs (connection_id, status, created_at) VALUES ($1, 'queued', $2) RETURNING {JOB_COLUMNS}"
            ))
            .bind(connection_id)
            .bind(micros(at))
            .fetch_one(self.writes())
            .await
            .map_err(|e| {
                if is_foreign_key_violation(&e) {
                    StoreError::NotFound(format!("connection {connection_id}"))
                } else {
                    e.into()
                }
            })?;
            job_from_row(&row)
        }

        async fn update_sync_job(&self, job: &SyncJob) -> Result<()> {
            let summary = job
                .summary
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(|e| {
                    StoreError::Conflict(format!("sync job summary cannot be serialised: {e}"))
                })?;
            let jsonb = Self::JSONB_CAST;
            let done = sqlx::query(&format!(
                "UPDATE sync_jobs SET status = $1, started_at = $2, finished_at = $3, summary = $4{jsonb}, \
                 error = $5 WHERE id = $6"
            ))
            .bind(&job.status)
            .bind(opt_micros(job.started_at))
            .bind(opt_micros(job.finished_at))
            .bind(summary)
            .bind(job.error.as_deref())
            .bind(job.id)
            .execute(self.writes())
            .await?;
            if done.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("sync job {}", job.id)));
            }
            Ok(())
        }

        async fn get_sync_job(&self, id: i64) -> Result<Option<SyncJob>> {
            let row = sqlx::query(&format!(
                "SELECT {JOB_COLUMNS} FROM sync_jobs WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(self.reads())
            .await?;
            row.as_ref().map(job_from_row).transpose()
        }

        }

        #[async_trait]
        impl $crate::CardRecords for $Store {
        async fn create_institution(&self, new: &NewInstitution) -> Result<Institution> {
            common::check_new_institution(new)?;
            let row: InstitutionRow = sqlx::query_as(common::INSTITUTION_INSERT)
                .bind(&new.id)
                .bind(&new.name)
                .bind(new.country.as_deref())
                .bind(micros(Utc::now()))
                .fetch_one(self.writes())
                .await
                .map_err(|e| common::institution_insert_error(e, new))?;
            Ok(row.into())
        }

        async fn list_institutions(&self) -> Result<Vec<Institution>> {
            let rows: Vec<InstitutionRow> = sqlx::query_as(common::INSTITUTION_LIST)
                .fetch_all(self.reads())
                .await?;
            Ok(rows.into_iter().map(Institution::from).collect())
        }

        async fn get_institution(&self, id: &str) -> Result<Option<Institution>> {
            let row: Option<InstitutionRow> = sqlx::query_as(common::INSTITUTION_GET)
                .bind(id)
                .fetch_optional(self.reads())
                .await?;
            Ok(row.map(Institution::from))
        }

        async fn delete_institution(&self, id: &str) -> Result<bool> {
            let mut tx = self.write_tx().await?;
            let cards: Vec<String> = sqlx::query_scalar(common::INSTITUTION_CARD_IDS)
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
            if !cards.is_empty() {
                return Err(common::institution_has_cards(id, &cards));
            }
            let done = sqlx::query(common::INSTITUTION_DELETE)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    if is_foreign_key_violation(&e) {
                        common::institution_has_cards(id, &[])
                    } else {
                        e.into()
                    }
                })?;
            tx.commit().await?;
            Ok(done.rows_affected() > 0)
        }

        async fn create_card(&self, new: &NewCard) -> Result<Card> {
            common::check_new_card(new)?;
            let mut tx = self.write_tx().await?;
            let institution: Option<String> = sqlx::query_scalar(common::INSTITUTION_EXISTS)
                .bind(&new.institution_id)
                .fetch_optional(&mut *tx)
                .await?;
            if institution.is_none() {
                return Err(common::institution_not_found(&new.institution_id));
            }
            let holder: Option<(String, String)> = sqlx::query_as(common::CARD_IN_READER)
                .bind(new.host.as_deref().unwrap_or_default())
                .bind(&new.reader)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some((card, label)) = &holder {
                return Err(common::reader_taken(
                    new.host.as_deref(),
                    &new.reader,
                    Some((card, label)),
                ));
            }
            let existing: Option<String> = sqlx::query_scalar(common::CARD_EXISTS)
                .bind(&new.id)
                .fetch_optional(&mut *tx)
                .await?;
            if existing.is_some() {
                return Err(common::card_exists(&new.id));
            }
            let row: CardRow = sqlx::query_as(common::CARD_INSERT)
                .bind(&new.id)
                .bind(&new.institution_id)
                .bind(&new.label)
                .bind(&new.account_reference)
                .bind(&new.reader)
                .bind(new.pan_last4.as_deref())
                .bind(new.psn.as_deref())
                .bind(new.records_digest.as_deref())
                .bind(new.application.as_deref())
                .bind(&new.pin_sealed)
                .bind(i32::from(new.min_pin_tries))
                .bind(micros(new.created_at))
                .bind(new.host.as_deref().unwrap_or_default())
                .fetch_one(&mut *tx)
                .await
                .map_err(|e| common::card_insert_error(e, new))?;
            let card = Card::try_from(row)?;
            tx.commit().await?;
            Ok(card)
        }

        async fn list_cards(&self, institution_id: Option<&str>) -> Result<Vec<Card>> {
            let rows: Vec<CardRow> = match institution_id {
                Some(i) => {
                    sqlx::query_as(common::CARD_LIST_OF_INSTITUTION)
                        .bind(i)
                        .fetch_all(self.reads())
                        .await?
                }
                None => {
                    sqlx::query_as(common::CARD_LIST)
                        .fetch_all(self.reads())
                        .await?
                }
            };
            common::cards(rows)
        }

        async fn get_card(&self, id: &str) -> Result<Option<Card>> {
            let row: Option<CardRow> = sqlx::query_as(common::CARD_GET)
                .bind(id)
                .fetch_optional(self.reads())
                .await?;
            row.map(Card::try_from).transpose()
        }

        async fn find_card_by_reader(
            &self,
            host: Option<&str>,
            reader: &str,
        ) -> Result<Option<Card>> {
            let row: Option<CardRow> = sqlx::query_as(common::CARD_BY_READER)
                .bind(host.unwrap_or_default())
                .bind(reader)
                .fetch_optional(self.reads())
                .await?;
            row.map(Card::try_from).transpose()
        }

        async fn update_card(
            &self,
            id: &str,
            update: &CardUpdate,
            now: DateTime<Utc>,
        ) -> Result<Option<Card>> {
            common::check_card_update(id, update)?;
            let (sql, args) = common::card_update_sql(id, update, now);
            let row: Option<CardRow> = sqlx::query_as_with(&sql, bind_args(args)?)
                .fetch_optional(self.writes())
                .await?;
            if row.is_none() && common::activates_without_pin(update) {
                let refused: Option<bool> = sqlx::query_scalar(common::CARD_PIN_REFUSED)
                    .bind(id)
                    .fetch_optional(self.writes())
                    .await?;
                if refused == Some(true) {
                    return Err(common::pin_refused_needs_new_pin(id));
                }
            }
            row.map(Card::try_from).transpose()
        }

        async fn set_card_status(
            &self,
            id: &str,
            status: CardStatus,
            reason: Option<&str>,
            now: DateTime<Utc>,
        ) -> Result<bool> {
            common::check_set_status(id, status)?;
            let done = sqlx::query(common::CARD_SET_STATUS)
                .bind(status.as_str())
                .bind(reason)
                .bind(micros(now))
                .bind(id)
                .execute(self.writes())
                .await?;
            Ok(done.rows_affected() > 0)
        }

        async fn mark_card_pin_refused(
            &self,
            id: &str,
            reason: &str,
            blocked: bool,
            now: DateTime<Utc>,
        ) -> Result<bool> {
            let done = sqlx::query(common::CARD_MARK_PIN_REFUSED)
                .bind(blocked)
                .bind(reason)
                .bind(micros(now))
                .bind(id)
                .execute(self.writes())
                .await?;
            Ok(done.rows_affected() > 0)
        }

        async fn touch_card(
            &self,
            id: &str,
            at: DateTime<Utc>,
            pin_tries_left: Option<u8>,
        ) -> Result<()> {
            sqlx::query(common::CARD_TOUCH)
                .bind(micros(at))
                .bind(id)
                .bind(pin_tries_left.map(i32::from))
                .execute(self.writes())
                .await?;
            Ok(())
        }

        async fn delete_card(&self, id: &str) -> Result<bool> {
            let done = sqlx::query(common::CARD_DELETE)
                .bind(id)
                .execute(self.writes())
                .await?;
            Ok(done.rows_affected() > 0)
        }

        async fn record_card_audit(&self, entry: &CardAuditEntry) -> Result<i64> {
            let (atc, duration_ms) = common::audit_numbers(entry)?;
            let id: i64 = sqlx::query_scalar(common::CARD_AUDIT_INSERT)
                .bind(micros(entry.at))
                .bind(&entry.token_name)
                .bind(&entry.card_id)
                .bind(&entry.institution_id)
                .bind(&entry.mode)
                .bind(&entry.outcome)
                .bind(entry.detail.as_deref())
                .bind(atc)
                .bind(duration_ms)
                .fetch_one(self.writes())
                .await?;
            Ok(id)
        }

        async fn list_card_audit(&self, query: &CardAuditQuery) -> Result<Vec<CardAuditEntry>> {
            let (sql, args) = common::card_audit_query_sql(query);
            let rows: Vec<CardAuditRow> = sqlx::query_as_with(&sql, bind_args(args)?)
                .fetch_all(self.reads())
                .await?;
            rows.into_iter().map(CardAuditEntry::try_from).collect()
        }

        }

        #[async_trait]
        impl $crate::FlowChecks for $Store {
        async fn save_check_run(&self, run: &NewCheckRun) -> Result<CheckRun> {
            checks::check_new_run(run)?;
            let mut tx = self.write_tx().await?;
            let row: checks::CheckRunRow = sqlx::query_as(checks::RUN_INSERT)
                .bind(&run.check_id)
                .bind(&run.check_name)
                .bind(&run.location)
                .bind(&run.round_id)
                .bind(&run.trigger)
                .bind(micros(run.started_at))
                .bind(micros(run.finished_at))
                .bind(run.duration_ms)
                .bind(&run.outcome)
                .bind(run.attempts)
                .bind(run.failed_step.as_deref())
                .bind(run.error.as_deref())
                .fetch_one(&mut *tx)
                .await?;
            let saved = CheckRun::from(row);
            for step in &run.steps {
                sqlx::query(checks::step_insert(Self::DIALECT))
                    .bind(saved.id)
                    .bind(step.index)
                    .bind(&step.name)
                    .bind(&step.kind)
                    .bind(&step.outcome)
                    .bind(step.duration_ms)
                    .bind(&step.detail)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(saved)
        }

        async fn list_check_runs(&self, query: &CheckRunQuery) -> Result<Vec<CheckRun>> {
            let (sql, args) = checks::list_sql(query);
            let rows: Vec<checks::CheckRunRow> = sqlx::query_as_with(&sql, bind_args(args)?)
                .fetch_all(self.reads())
                .await?;
            Ok(rows.into_iter().map(CheckRun::from).collect())
        }

        async fn get_check_run(&self, id: i64) -> Result<Option<(CheckRun, Vec<CheckStep>)>> {
            // One read transaction (one WAL snapshot): a run pruned between the
            // two reads would otherwise come back without its steps.
            let mut tx = self.read_snapshot().await?;
            let row: Option<checks::CheckRunRow> = sqlx::query_as(checks::RUN_GET)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            let steps: Vec<checks::CheckStepRow> =
                sqlx::query_as(checks::steps_of_run(Self::DIALECT))
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?;
            tx.commit().await?;
            Ok(Some((
                row.into(),
                steps.into_iter().map(CheckStep::from).collect(),
            )))
        }

        async fn prune_check_runs(&self, older_than: DateTime<Utc>, keep_latest: u32) -> Result<u64> {
            let done = sqlx::query(checks::RUNS_PRUNE)
                .bind(micros(older_than))
                .bind(i64::from(keep_latest))
                .execute(self.writes())
                .await?;
            Ok(done.rows_affected())
        }

        async fn prune_check_claims(&self, older_than: DateTime<Utc>) -> Result<u64> {
            let done = sqlx::query(checks::CLAIMS_PRUNE)
                .bind(micros(older_than))
                .execute(self.writes())
                .await?;
            Ok(done.rows_affected())
        }

        async fn put_check_state(
            &self,
            check_id: &str,
            state_json: &str,
            at: DateTime<Utc>,
        ) -> Result<()> {
            checks::check_state(check_id, state_json)?;
            sqlx::query(checks::state_upsert(Self::DIALECT))
                .bind(check_id)
                .bind(state_json)
                .bind(micros(at))
                .execute(self.writes())
                .await?;
            Ok(())
        }

        async fn check_states(&self) -> Result<Vec<(String, String)>> {
            Ok(sqlx::query_as(checks::states_list(Self::DIALECT))
                .fetch_all(self.reads())
                .await?)
        }

        async fn check_state(&self, check_id: &str) -> Result<Option<String>> {
            // From the writer: a swap right after must compare with the newest.
            Ok(sqlx::query_scalar(checks::state_get(Self::DIALECT))
                .bind(check_id)
                .fetch_optional(self.writes())
                .await?)
        }

        async fn swap_check_state(
            &self,
            check_id: &str,
            old: Option<&str>,
            new: &str,
            at: DateTime<Utc>,
        ) -> Result<bool> {
            self.swap_check_state_with_alerts(check_id, old, new, at, &[])
                .await
        }

        async fn swap_check_state_with_alerts(
            &self,
            check_id: &str,
            old: Option<&str>,
            new: &str,
            at: DateTime<Utc>,
            alerts: &[$crate::OutboxAlert],
        ) -> Result<bool> {
            checks::check_state(check_id, new)?;
            let mut tx = self.write_tx().await?;
            let done = match old {
                None => sqlx::query(checks::state_insert(Self::DIALECT))
                    .bind(check_id)
                    .bind(new)
                    .bind(micros(at))
                    .execute(&mut *tx)
                    .await?,
                Some(old) => sqlx::query(checks::state_swap(Self::DIALECT))
                    .bind(check_id)
                    .bind(new)
                    .bind(micros(at))
                    .bind(old)
                    .execute(&mut *tx)
                    .await?,
            };
            if done.rows_affected() != 1 {
                return Ok(false);
            }
            for alert in alerts {
                sqlx::query(
                    "INSERT INTO alert_outbox (id, channel, alert, created_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(&alert.id)
                .bind(&alert.channel)
                .bind(&alert.alert)
                .bind(micros(alert.created_at))
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(true)
        }

        async fn claim_check_slot(
            &self,
            check_id: &str,
            slot_ms: i64,
            owner: &str,
            at: DateTime<Utc>,
        ) -> Result<bool> {
            if check_id.is_empty() {
                return Err(StoreError::Conflict("a check id must not be empty".into()));
            }
            let done = sqlx::query(checks::CLAIM_SLOT)
                .bind(check_id)
                .bind(slot_ms)
                .bind(owner)
                .bind(micros(at))
                .execute(self.writes())
                .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn put_check_secret(&self, name: &str, sealed: &[u8], at: DateTime<Utc>) -> Result<bool> {
            checks::check_secret_name(name)?;
            let mut tx = self.write_tx().await?;
            let existed = sqlx::query(checks::SECRET_EXISTS)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            sqlx::query(checks::SECRET_UPSERT)
                .bind(name)
                .bind(sealed)
                .bind(micros(at))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(!existed)
        }

        async fn get_check_secret(&self, name: &str) -> Result<Option<Vec<u8>>> {
            Ok(sqlx::query_scalar(checks::SECRET_GET)
                .bind(name)
                .fetch_optional(self.reads())
                .await?)
        }

        async fn list_check_secrets(&self) -> Result<Vec<checks::CheckSecretInfo>> {
            let rows: Vec<(String, DateTime<Utc>)> = sqlx::query_as(checks::SECRET_LIST)
                .fetch_all(self.reads())
                .await?;
            Ok(rows
                .into_iter()
                .map(|(name, updated_at)| checks::CheckSecretInfo { name, updated_at })
                .collect())
        }

        async fn delete_check_secret(&self, name: &str) -> Result<bool> {
            let done = sqlx::query(checks::SECRET_DELETE)
                .bind(name)
                .execute(self.writes())
                .await?;
            Ok(done.rows_affected() > 0)
        }

        }

        /// Those of `ids` that are not transactions of the account.
        async fn missing_ids(
            tx: &mut <<$Row as sqlx::Row>::Database as sqlx::Database>::Connection,
            account_id: i64,
            ids: &[i64],
        ) -> Result<Vec<i64>> {
            let sql = format!(
                "SELECT id FROM transactions WHERE account_id = $1 AND id {}",
                in_id_set(2)
            );
            let found: Vec<i64> = sqlx::query_scalar(&sql)
                .bind(account_id)
                .bind(id_set(ids))
                .fetch_all(&mut *tx)
                .await?;
            let found: std::collections::HashSet<i64> = found.into_iter().collect();
            Ok(ids.iter().copied().filter(|id| !found.contains(id)).collect())
        }

        /// `SET assignments` (with `$1` for `now`) on the account's rows
        /// `ids`; `NotFound` naming the ids that are not its rows.
        async fn update_ids(
            tx: &mut <<$Row as sqlx::Row>::Database as sqlx::Database>::Connection,
            assignments: &str,
            now: DateTime<Utc>,
            account_id: i64,
            ids: &[i64],
            what: &str,
        ) -> Result<()> {
            if ids.is_empty() {
                return Ok(());
            }
            let sql = format!(
                "UPDATE transactions SET {assignments} WHERE account_id = $2 AND id {}",
                in_id_set(3)
            );
            let done = sqlx::query(&sql)
                .bind(now)
                .bind(account_id)
                .bind(id_set(ids))
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() != ids.len() as u64 {
                let missing = missing_ids(tx, account_id, ids).await?;
                return Err(common::not_in_account(what, &missing, account_id));
            }
            Ok(())
        }

        const ACCOUNT_COLUMNS: &str =
            "id, connection_id, provider_id, iban, currency, name, kind, first_seen, last_seen";
        const TOKEN_COLUMNS: &str =
            "id, name, scope, hash, created_at, last_used_at, revoked_at, location, expires_at";

        /// Arguments built by the shared query builders, bound for this backend.
        fn bind_args(
            args: Vec<Arg>,
        ) -> Result<<<$Row as sqlx::Row>::Database as sqlx::Database>::Arguments<'static>> {
            let mut out = <<$Row as sqlx::Row>::Database as sqlx::Database>::Arguments::default();
            for a in args {
                match a {
                    Arg::I64(v) => out.add(v),
                    Arg::Date(v) => out.add(v),
                    Arg::Text(v) => out.add(v),
                    Arg::Decimal(v) => out.add(money(v)),
                    Arg::Time(v) => out.add(v),
                    Arg::I32(v) => out.add(v),
                    Arg::OptText(v) => out.add(v),
                    Arg::Bytes(v) => out.add(v),
                }
                .map_err(encode_err)?;
            }
            Ok(out)
        }

        fn connection_from_row(r: &$Row) -> Result<Connection> {
            Ok(Connection {
                id: r.try_get(0)?,
                name: r.try_get(1)?,
                connector: r.try_get(2)?,
                settings: common::json(r.try_get(3)?, "connection settings")?,
                credentials_sealed: r.try_get(4)?,
                session_sealed: r.try_get(5)?,
                created_at: r.try_get(6)?,
                last_sync_at: r.try_get(7)?,
                last_sync_status: common::sync_outcome(r.try_get(8)?)?,
                last_sync_error: r.try_get(9)?,
                credentials_version: r.try_get(10)?,
                last_sync_credentials_version: r.try_get(11)?,
                lease_owner: r.try_get(12)?,
                lease_until: r.try_get(13)?,
                consent: r
                    .try_get::<Option<String>, _>(14)?
                    .map(|status| -> Result<crate::ConsentRecord> {
                        Ok(crate::ConsentRecord {
                            status,
                            valid_until: r.try_get(15)?,
                            warned_for: r.try_get(16)?,
                        })
                    })
                    .transpose()?,
            })
        }

        fn account_from_row(r: &$Row) -> Result<Account> {
            Ok(Account {
                id: r.try_get(0)?,
                connection_id: r.try_get(1)?,
                provider_id: r.try_get(2)?,
                iban: common::opt_iban(r.try_get(3)?)?,
                currency: codec::currency(r.try_get(4)?)?,
                name: r.try_get(5)?,
                kind: r.try_get(6)?,
                first_seen: r.try_get(7)?,
                last_seen: r.try_get(8)?,
            })
        }

        fn tx_from_row(r: &$Row) -> Result<Transaction> {
            Ok(Transaction {
                id: r.try_get(0)?,
                connection_id: r.try_get(1)?,
                account_id: r.try_get(2)?,
                provider_id: r.try_get(3)?,
                pending_provider_id: r.try_get(4)?,
                fingerprint: r.try_get(5)?,
                status: common::tx_status(r.try_get(6)?)?,
                booking_date: r.try_get(7)?,
                value_date: r.try_get(8)?,
                transaction_date: r.try_get(9)?,
                amount: decimal_at(r, 10)?,
                currency: codec::currency(r.try_get(11)?)?,
                original_amount: opt_decimal_at(r, 12)?,
                original_currency: common::opt_currency(r.try_get(13)?)?,
                raw_label: r.try_get(14)?,
                label: r.try_get(15)?,
                counterparty_name: r.try_get(16)?,
                counterparty_iban: r.try_get(17)?,
                remittance_info: r.try_get(18)?,
                bank_code: r.try_get(19)?,
                running_balance: opt_decimal_at(r, 20)?,
                raw: common::raw_json(r.try_get(21)?, "transaction raw")?,
                first_seen: r.try_get(22)?,
                last_seen: r.try_get(23)?,
                updated_at: r.try_get(24)?,
                category: r.try_get(25)?,
            }
            .as_money())
        }

        fn token_from_row(r: &$Row) -> Result<TokenRecord> {
            let scope: &str = r.try_get(2)?;
            Ok(TokenRecord {
                id: r.try_get(0)?,
                name: r.try_get(1)?,
                scope: Scope::parse(scope).ok_or_else(|| corrupt(format!("token scope {scope:?}")))?,
                hash: r.try_get(3)?,
                created_at: r.try_get(4)?,
                last_used_at: r.try_get(5)?,
                revoked_at: r.try_get(6)?,
                location: r.try_get(7)?,
                expires_at: r.try_get(8)?,
            })
        }

        fn job_from_row(r: &$Row) -> Result<SyncJob> {
            let summary: Option<&str> = r.try_get(6)?;
            Ok(SyncJob {
                id: r.try_get(0)?,
                connection_id: r.try_get(1)?,
                status: r.try_get(2)?,
                created_at: r.try_get(3)?,
                started_at: r.try_get(4)?,
                finished_at: r.try_get(5)?,
                summary: summary
                    .map(|s| common::json(s, "sync job summary"))
                    .transpose()?,
                error: r.try_get(7)?,
            })
        }

        /// The lease check a sync's write transaction starts with (see [`common::LEASE_FENCE`]).
        async fn fence(tx: &mut sqlx::Transaction<'static, <$Row as sqlx::Row>::Database>, lease: LeaseToken) -> Result<()> {
            let done = sqlx::query(common::LEASE_FENCE)
                .bind(lease.connection_id)
                .bind(lease.generation)
                .execute(&mut **tx)
                .await?;
            common::fenced(done.rows_affected(), lease)
        }

    };
}

pub(crate) use shared_store;
