//! Customer import and export (CSV), both streamed so memory does not follow the file size.
//!
//! **Import.** The body is read chunk by chunk into a bounded channel; a blocking task parses
//! it with the `csv` crate and hands rows over a second bounded channel to the handler,
//! which looks them up in the read model [`LOOKUP_BATCH`] at a time, matches each row to a
//! customer (email, then phone, then passport number; earlier rows of the same file first,
//! then the read model) and dispatches creates and updates, [`PARALLEL`] at once. It waits
//! for the projections only every [`CHUNK_ROWS`] rows, after which the read model answers
//! the lookups and the memory of the file's earlier rows is dropped. A dry run appends
//! nothing, so it has no read model to lean on: it keeps every row's values (a few hundred
//! bytes a row) for the whole file.
//!
//! **Export.** Keyset pages of [`EXPORT_PAGE`] customers from the read model, written as CSV
//! and sent as they are ready. The export is audited by an `ExportCustomers` event once the
//! last row went out; if the client goes away first, the event is still written (in the
//! background), with the rows produced so far and `complete = false`, so an interrupted
//! export is never unaudited.

use crate::auth::actor::Actor;
use crate::customer_csv::{Current, Header, ImportRow, export_chunk, parse_row};
use crate::error::ApiError;
use crate::routes::customers::{Fields, domain_error};
use crate::routes::meta::RequestMeta;
use crate::state::AppState;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use egec_commands::handler::HandlerError;
use egec_domain::aggregate::CustomerAggregate;
use egec_domain::customer::{
    CreateCustomer, CustomerCommand, CustomerError, CustomerStatus, UpdateCustomer,
};
use egec_domain::event::{DomainEvent, Metadata};
use egec_domain::export::{CustomersExported, ExportEvent, exports_stream_id};
use egec_domain::permission::{Action, can_see_deleted_customers, customer_visibility};
use egec_domain::{CustomerId, UserId};
use egec_projections::{CustomerKey, CustomerQuery, CustomerRow};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use uuid::Uuid;

/// Rows between two waits for the projections (and the memory of the file's rows).
const CHUNK_ROWS: usize = 2_000;
/// The longest the import waits for the projections between chunks.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(60);
/// Rows looked up in the read model at once (three queries a batch).
const LOOKUP_BATCH: usize = 256;
/// Creates and updates in flight at once.
const PARALLEL: usize = 64;
/// Row errors listed in the answer; the rest are only counted (`failed`).
const MAX_LISTED_ERRORS: usize = 1_000;
/// Customers per export page.
pub const EXPORT_PAGE: u32 = 500;

/// Namespace of the ids the import derives (batch ids, customer ids, command ids).
const IMPORT_NAMESPACE: Uuid = Uuid::from_u128(0x3b1f_77a2_0c4e_4d8b_a6f5_1e2d_3c4b_5a69);

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ImportParams {
    /// Validate and match, report the counts, append nothing.
    pub dry_run: Option<bool>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RowError {
    /// The row as a spreadsheet numbers it: the header is row 1.
    pub row: u64,
    pub message: String,
}

#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct ImportReport {
    /// Carried by every event the import caused (`Metadata.batch_id`).
    pub batch_id: Uuid,
    pub dry_run: bool,
    pub created: u64,
    pub updated: u64,
    pub skipped: u64,
    /// Rows refused; the first 1,000 are listed in `errors`.
    pub failed: u64,
    pub errors: Vec<RowError>,
}

impl ImportReport {
    fn fail(&mut self, row: u64, message: String) {
        self.failed += 1;
        if self.errors.len() < MAX_LISTED_ERRORS {
            self.errors.push(RowError { row, message });
        }
    }

    fn count(&mut self, row: u64, outcome: Outcome) {
        match outcome {
            Outcome::Created => self.created += 1,
            Outcome::Updated => self.updated += 1,
            Outcome::Skipped => self.skipped += 1,
            Outcome::Failed(m) => self.fail(row, m),
        }
    }
}

enum Outcome {
    Created,
    Updated,
    Skipped,
    Failed(String),
}

/// What the parsing task hands the handler.
enum Parsed {
    BadHeader(String),
    Row(u64, Result<ImportRow, String>),
    /// The body could not be read (too large, or the connection failed).
    Unreadable(Unreadable),
}

#[derive(Debug, Clone, Copy)]
enum Unreadable {
    TooLarge,
    Broken,
}

/// A `std::io::Read` over body chunks arriving on a channel, for the synchronous CSV
/// reader on the blocking pool.
struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, Unreadable>>,
    current: Bytes,
    failed: Option<Unreadable>,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => {
                    self.failed = Some(e);
                    return Err(std::io::Error::other("request body unreadable"));
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Reads the body into a bounded channel, refusing it past `limit` bytes.
fn forward_body(body: Body, limit: u64) -> mpsc::Receiver<Result<Bytes, Unreadable>> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut stream = body.into_data_stream();
        let mut seen: u64 = 0;
        while let Some(chunk) = stream.next().await {
            let item = match chunk {
                Ok(b) => {
                    seen += b.len() as u64;
                    if seen > limit {
                        Err(Unreadable::TooLarge)
                    } else {
                        Ok(b)
                    }
                }
                Err(_) => Err(Unreadable::Broken),
            };
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                return;
            }
        }
    });
    rx
}

/// Parses the CSV on the blocking pool, one row at a time, into a bounded channel.
fn parse_body(
    body: mpsc::Receiver<Result<Bytes, Unreadable>>,
    region: Option<String>,
) -> mpsc::Receiver<Parsed> {
    let (tx, rx) = mpsc::channel(256);
    tokio::task::spawn_blocking(move || {
        let source = ChannelReader {
            rx: body,
            current: Bytes::new(),
            failed: None,
        };
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(source);
        let header = match reader.headers() {
            Ok(names) => Header::parse(names.iter()),
            Err(e) => Err(format!("the header row is not valid CSV ({})", kind_of(&e))),
        };
        let header = match header {
            Ok(h) => h,
            Err(msg) => {
                let msg = match reader.get_ref().failed {
                    Some(u) => Parsed::Unreadable(u),
                    None => Parsed::BadHeader(msg),
                };
                let _ = tx.blocking_send(msg);
                return;
            }
        };
        let mut record = csv::StringRecord::new();
        let mut row: u64 = 1;
        loop {
            row += 1;
            let parsed = match reader.read_record(&mut record) {
                Ok(false) => return,
                Ok(true) => parse_row(&header, &record, region.as_deref()),
                Err(e) => {
                    if let Some(u) = reader.get_ref().failed {
                        let _ = tx.blocking_send(Parsed::Unreadable(u));
                        return;
                    }
                    Err(format!("not valid CSV ({})", kind_of(&e)))
                }
            };
            if tx.blocking_send(Parsed::Row(row, parsed)).is_err() {
                return;
            }
        }
    });
    rx
}

/// What went wrong in the CSV, without quoting the data.
fn kind_of(e: &csv::Error) -> &'static str {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "not UTF-8",
        csv::ErrorKind::Io(_) => "unreadable",
        _ => "malformed",
    }
}

/// The customers the import touched in the current chunk (all of them in a dry run), by
/// identifying field: a later row of the file matches them before the read model knows.
#[derive(Default)]
struct Seen {
    by_key: HashMap<(u8, String), CustomerId>,
    current: HashMap<CustomerId, Current>,
}

impl Seen {
    fn remember(&mut self, id: CustomerId, cur: Current) {
        for (k, v) in [(0, &cur.email), (1, &cur.phone), (2, &cur.passport_number)] {
            if let Some(v) = v {
                self.by_key.insert((k, v.clone()), id);
            }
        }
        self.current.insert(id, cur);
    }
}

/// The identifying fields, in the order they match: email, then phone, then passport.
const KEYS: [CustomerKey; 3] = [
    CustomerKey::Email,
    CustomerKey::Phone,
    CustomerKey::Passport,
];

fn key_of(row: &ImportRow, k: usize) -> Option<&str> {
    match k {
        0 => row.email.as_ref().map(|v| v.as_str()),
        1 => row.phone.as_ref().map(|v| v.as_str()),
        _ => row.passport_number.as_ref().map(|v| v.as_str()),
    }
}

fn column_of(row: &CustomerRow, k: usize) -> Option<&String> {
    match k {
        0 => row.email.as_ref(),
        1 => row.phone.as_ref(),
        _ => row.passport_number.as_ref(),
    }
}

/// The read model's customers matching a batch of rows, by key and value: three indexed
/// queries a batch instead of up to three a row.
#[derive(Default)]
struct Found([HashMap<String, CustomerRow>; 3]);

async fn lookup(state: &AppState, rows: &[(u64, ImportRow)]) -> Result<Found, ApiError> {
    let read = state.read();
    let values = |k: usize| -> Vec<String> {
        rows.iter()
            .filter_map(|(_, r)| key_of(r, k))
            .map(str::to_owned)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect()
    };
    let (email, phone, passport) = futures::try_join!(
        read.find_customers_by(KEYS[0], values(0)),
        read.find_customers_by(KEYS[1], values(1)),
        read.find_customers_by(KEYS[2], values(2)),
    )
    .map_err(ApiError::internal)?;
    let mut found = Found::default();
    for (k, matches) in [email, phone, passport].into_iter().enumerate() {
        // Oldest first: of several customers sharing a value, the oldest is the match.
        for r in matches {
            if let Some(v) = column_of(&r, k).cloned() {
                found.0[k].entry(v).or_insert(r);
            }
        }
    }
    Ok(found)
}

/// The customer a row is about: by email, then phone, then passport number; for each,
/// the file's earlier rows first (newer than the read model), then the read model.
fn find(seen: &Seen, found: &Found, row: &ImportRow) -> Option<(CustomerId, Current)> {
    for k in 0..KEYS.len() {
        let Some(value) = key_of(row, k) else {
            continue;
        };
        if let Some(id) = seen.by_key.get(&(k as u8, value.to_owned()))
            && let Some(cur) = seen.current.get(id)
        {
            return Some((*id, cur.clone()));
        }
        if let Some(r) = found.0[k].get(value) {
            let id = CustomerId::from_uuid(r.id);
            let cur = seen
                .current
                .get(&id)
                .cloned()
                .unwrap_or_else(|| Current::of_row(r));
            return Some((id, cur));
        }
    }
    None
}

fn row_bytes(batch: Uuid, row: u64, what: &str) -> Vec<u8> {
    let mut b = batch.as_bytes().to_vec();
    b.extend_from_slice(&row.to_be_bytes());
    b.extend_from_slice(what.as_bytes());
    b
}

/// A row's outcome and the log position it reached; an error stops the whole import.
type RowResult = Result<(Outcome, Option<i64>), ApiError>;

/// Runs one row's command; a technical failure stops the whole import.
async fn run_row(
    state: AppState,
    meta: Arc<Metadata>,
    batch: Uuid,
    row: u64,
    target: Result<CustomerId, ImportRow>,
    update: Option<UpdateCustomer>,
) -> RowResult {
    let command_id = Uuid::new_v5(&IMPORT_NAMESPACE, &row_bytes(batch, row, "command"));
    let result = match target {
        Ok(id) => {
            let Some(update) = update else {
                return Ok((Outcome::Skipped, None));
            };
            state
                .bus
                .execute::<CustomerAggregate>(
                    &id.stream_id(),
                    &id.subject(),
                    None,
                    command_id,
                    &meta,
                    CustomerCommand::Update(update),
                )
                .await
                .map(|done| {
                    let outcome = if done.events.is_empty() {
                        Outcome::Skipped
                    } else {
                        Outcome::Updated
                    };
                    (outcome, done.position)
                })
        }
        Err(new) => {
            // Derived from the batch and the row, so a retried request (same
            // Idempotency-Key, hence same batch) lands on the same streams.
            let id = CustomerId::from_uuid(Uuid::new_v5(
                &IMPORT_NAMESPACE,
                &row_bytes(batch, row, "customer"),
            ));
            let cmd = CreateCustomer {
                customer_id: id,
                name: new.name,
                email: new.email,
                phone: new.phone,
                passport_number: new.passport_number,
                country: new.country,
                source: new.source,
                status: new.status,
                notes: new.notes,
                assigned_agent_ids: Vec::<UserId>::new(),
            };
            state
                .bus
                .execute_new::<CustomerAggregate>(
                    &id.stream_id(),
                    &id.subject(),
                    command_id,
                    &meta,
                    CustomerCommand::Create(Box::new(cmd)),
                )
                .await
                .map(|done| (Outcome::Created, done.position))
        }
    };
    match result {
        Ok(r) => Ok(r),
        Err(HandlerError::Domain(CustomerError::AlreadyExists)) => Ok((Outcome::Skipped, None)),
        Err(HandlerError::Domain(e)) => Ok((Outcome::Failed(row_message(e)), None)),
        Err(HandlerError::Contention(_)) => Ok((
            Outcome::Failed("the customer was being changed by someone else; retry".into()),
            None,
        )),
        Err(e) => Err(ApiError::internal(e)),
    }
}

fn row_message(e: CustomerError) -> String {
    match domain_error(e.clone()) {
        ApiError::Validation(fields) => fields
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("; "),
        _ => e.to_string(),
    }
}

/// Waits until the projections applied `position`. Longer than a read-your-writes wait:
/// the lookups of the next rows depend on it, and forgetting the file's earlier rows before
/// the read model knows them could create a customer twice.
async fn caught_up(state: &AppState, position: Option<i64>) -> Result<(), ApiError> {
    match position {
        Some(p) if !state.runner.wait_for(p, CATCH_UP).await => Err(ApiError::Unavailable),
        _ => Ok(()),
    }
}

/// The rows in flight, and what the import learnt from those that finished.
struct InFlight {
    tasks: JoinSet<(u64, RowResult)>,
    ids: HashSet<CustomerId>,
    last_position: Option<i64>,
}

impl InFlight {
    async fn join_one(&mut self, report: &mut ImportReport) -> Result<(), ApiError> {
        if let Some(joined) = self.tasks.join_next().await {
            let (row, result) = joined.map_err(ApiError::internal)?;
            let (outcome, position) = result?;
            self.last_position = self.last_position.max(position);
            report.count(row, outcome);
        }
        Ok(())
    }

    async fn drain(&mut self, report: &mut ImportReport) -> Result<(), ApiError> {
        while !self.tasks.is_empty() {
            self.join_one(report).await?;
        }
        self.ids.clear();
        Ok(())
    }
}

#[utoipa::path(post, path = "/api/customers/import", params(ImportParams),
    request_body(content = String, content_type = "text/csv",
        description = "A header row (name, email, phone, passport_number, country, source, status, notes; any order; name required), then one customer a row."),
    responses((status = 200, body = ImportReport), (status = 403), (status = 413), (status = 422)),
    tag = "customers")]
pub async fn import(
    State(state): State<AppState>,
    actor: Actor,
    meta: RequestMeta,
    Query(params): Query<ImportParams>,
    body: Body,
) -> Result<Json<ImportReport>, ApiError> {
    actor.require(Action::CustomersImport)?;
    let dry_run = params.dry_run.unwrap_or(false);
    let batch_id = match meta.idempotency_key {
        Some(k) => Uuid::new_v5(&IMPORT_NAMESPACE, k.as_bytes()),
        None => Uuid::now_v7(),
    };
    let mut md = meta.metadata(&actor);
    md.batch_id = Some(batch_id);
    let md = Arc::new(md);
    let mut rows = parse_body(
        forward_body(body, state.config.import_max_bytes),
        state.config.phone_default_region.clone(),
    );
    let mut report = ImportReport {
        batch_id,
        dry_run,
        ..ImportReport::default()
    };
    let mut seen = Seen::default();
    let mut flight = InFlight {
        tasks: JoinSet::new(),
        ids: HashSet::new(),
        last_position: None,
    };
    let mut in_chunk = 0usize;
    while let Some(first) = rows.recv().await {
        // Whatever the parser has ready, up to a batch, is looked up at once.
        let mut batch = vec![first];
        while batch.len() < LOOKUP_BATCH {
            match rows.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let mut valid = Vec::with_capacity(batch.len());
        for parsed in batch {
            match parsed {
                Parsed::BadHeader(msg) => return Err(ApiError::field("header", msg)),
                Parsed::Unreadable(Unreadable::TooLarge) => {
                    return Err(ApiError::PayloadTooLarge);
                }
                Parsed::Unreadable(Unreadable::Broken) => {
                    return Err(ApiError::BadRequest(
                        "the request body could not be read".into(),
                    ));
                }
                Parsed::Row(row, Err(msg)) => report.fail(row, msg),
                Parsed::Row(row, Ok(new)) => valid.push((row, new)),
            }
        }
        let found = lookup(&state, &valid).await?;
        for (row, new) in valid {
            let (target, update, after) = match find(&seen, &found, &new) {
                Some((id, mut cur)) => match cur.update_for(&new) {
                    Err(msg) => {
                        report.fail(row, msg);
                        continue;
                    }
                    Ok(None) => {
                        report.skipped += 1;
                        continue;
                    }
                    Ok(Some(update)) => {
                        cur.apply(&new);
                        (Ok(id), Some(update), (id, cur))
                    }
                },
                None => {
                    let id = CustomerId::from_uuid(Uuid::new_v5(
                        &IMPORT_NAMESPACE,
                        &row_bytes(batch_id, row, "customer"),
                    ));
                    let cur = Current::created(&new);
                    (Err(new), None, (id, cur))
                }
            };
            if dry_run {
                let outcome = if update.is_some() {
                    Outcome::Updated
                } else {
                    Outcome::Created
                };
                report.count(row, outcome);
                seen.remember(after.0, after.1);
                continue;
            }
            // Two commands on one customer must not race: the second waits for the first.
            if flight.ids.contains(&after.0) {
                flight.drain(&mut report).await?;
            }
            while flight.tasks.len() >= PARALLEL {
                flight.join_one(&mut report).await?;
            }
            flight.ids.insert(after.0);
            seen.remember(after.0, after.1);
            let (state2, md2) = (state.clone(), md.clone());
            flight.tasks.spawn(async move {
                (
                    row,
                    run_row(state2, md2, batch_id, row, target, update).await,
                )
            });
            in_chunk += 1;
        }
        // Only between batches: a batch's lookups were made before its rows were applied,
        // so the memory of the file's rows must outlive the batch.
        if in_chunk >= CHUNK_ROWS {
            // From here on the read model answers the lookups of these rows.
            flight.drain(&mut report).await?;
            caught_up(&state, flight.last_position).await?;
            seen = Seen::default();
            in_chunk = 0;
        }
    }
    flight.drain(&mut report).await?;
    state.wait_for_write(flight.last_position).await;
    Ok(Json(report))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    pub q: Option<String>,
    pub status: Option<String>,
    pub agent_id: Option<Uuid>,
}

/// Records the export: `finish` at the end of the body; dropped unfinished (the client went
/// away, or a page failed), it records in the background what was sent, `complete = false`.
struct ExportAudit {
    state: AppState,
    meta: Metadata,
    subject: String,
    event: CustomersExported,
    armed: bool,
}

impl ExportAudit {
    async fn record(state: &AppState, meta: &Metadata, subject: &str, event: CustomersExported) {
        let stream = exports_stream_id(event.at);
        let result = state
            .bus
            .record(
                &stream,
                subject,
                meta,
                &[DomainEvent::Export(ExportEvent::CustomersExported(event))],
            )
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "recording a customer export failed");
        }
    }

    /// Records the completed export before the body ends, so a client that read the whole
    /// file finds the export in the log.
    async fn finish(mut self) {
        self.armed = false;
        let mut event = self.event.clone();
        event.complete = true;
        event.at = chrono::Utc::now();
        Self::record(&self.state, &self.meta, &self.subject, event).await;
    }
}

impl Drop for ExportAudit {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut event = self.event.clone();
        event.at = chrono::Utc::now();
        let (state, meta, subject) = (self.state.clone(), self.meta.clone(), self.subject.clone());
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move { ExportAudit::record(&state, &meta, &subject, event).await });
        }
    }
}

/// Where an export is: the last id sent, and its audit record.
struct Cursor {
    after: Option<Uuid>,
    audit: ExportAudit,
}

#[utoipa::path(get, path = "/api/customers/export.csv", params(ExportParams),
    responses((status = 200, content_type = "text/csv"), (status = 403), (status = 422)),
    tag = "customers")]
pub async fn export(
    State(state): State<AppState>,
    actor: Actor,
    meta: RequestMeta,
    Query(p): Query<ExportParams>,
) -> Result<Response, ApiError> {
    actor.require(Action::CustomersExport)?;
    let mut f = Fields::default();
    let status = f.opt("status", p.status.as_deref(), str::parse::<CustomerStatus>);
    f.finish()?;
    let q = p.q.filter(|q| !q.trim().is_empty());
    let event = CustomersExported {
        export_id: Uuid::now_v7(),
        role: actor.role,
        searched: q.is_some(),
        status: status.map(|s| s.as_str().to_owned()),
        agent_filter: p.agent_id,
        rows: 0,
        complete: false,
        at: chrono::Utc::now(),
    };
    // Row-level visibility applies as in the list: an agent's export (should the matrix
    // ever allow one) holds only the customers assigned to them.
    let query = Arc::new(CustomerQuery {
        q,
        status,
        agent_id: p.agent_id.map(UserId::from_uuid),
        visibility: customer_visibility(actor.role, actor.user_id),
        include_deleted: can_see_deleted_customers(actor.role),
    });
    let reveal = actor.can(Action::PassportReveal);
    let header_line = export_chunk(&[], reveal, true).map_err(ApiError::internal)?;
    let cursor = Cursor {
        after: None,
        audit: ExportAudit {
            state: state.clone(),
            meta: meta.metadata(&actor),
            subject: actor.user_id.subject(),
            event,
            armed: true,
        },
    };
    let first = futures::stream::once(async move { Ok::<_, std::io::Error>(header_line) });
    let rest = futures::stream::unfold(Some(cursor), move |cursor| {
        let state = state.clone();
        let query = query.clone();
        async move {
            let mut c = cursor?;
            match state
                .read()
                .customers_after(&query, c.after, EXPORT_PAGE)
                .await
            {
                Ok(rows) if rows.is_empty() => {
                    c.audit.finish().await;
                    None
                }
                Ok(rows) => match export_chunk(&rows, reveal, false) {
                    Ok(chunk) => {
                        c.after = rows.last().map(|r| r.id);
                        c.audit.event.rows += rows.len() as u64;
                        Some((Ok(chunk), Some(c)))
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "customer export failed");
                        Some((Err(std::io::Error::other("customer export failed")), None))
                    }
                },
                Err(e) => {
                    // The status line is gone already: cut the body short so the client sees
                    // an incomplete transfer rather than a complete-looking file.
                    tracing::error!(error = %e, "customer export failed");
                    Some((Err(std::io::Error::other("customer export failed")), None))
                }
            }
        }
    });
    let mut resp = Body::from_stream(first.chain(rest)).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"customers.csv\""),
    );
    Ok(resp)
}
