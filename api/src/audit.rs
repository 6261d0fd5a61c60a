//! The audit log as the API and the CLI show it: entries read from the log itself.
//!
//! The `audit` projection is only an index: it answers which log positions match a filter
//! (and how many do). Every entry shown is then read from the log at those positions, decoded
//! and described there, with the same function the index was built with. So what an auditor
//! sees is the log's own record, never a copy that could have drifted: an index row whose
//! position holds another event (or none) in the log fails the request loudly instead of
//! showing it.
//!
//! The IP address is personal data under a monthly retention key and exists only in the
//! log: once retention destroys a month's key, every view of that month's IPs (this one
//! included) reads `[EXPIRED]` without a rebuild.

use anyhow::{Context, bail};
use egec_commands::codec::Codec;
use egec_commands::store::EventLog;
use egec_projections::fold::audit_row;
use egec_projections::{AuditQuery, AuditRow, ReadModels};
use serde_json::{Value, json};
use std::collections::HashMap;

/// Positions closer together than this are read from the log in one range.
const RUN_GAP: i64 = 256;
/// Rows per page of an export.
pub const EXPORT_PAGE: u32 = 1_000;

/// One audit entry, as read from the log: the event's audit row and its IP address (`None`:
/// the event carries none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub row: AuditRow,
    pub ip: Option<String>,
}

/// The entries of the log at the positions of `index` (rows of the audit index), in the
/// index's order. Fails if the log does not hold, at a position, the event the index names.
pub async fn entries(
    log: &dyn EventLog,
    codec: &Codec,
    index: &[AuditRow],
) -> anyhow::Result<Vec<Entry>> {
    let mut sorted: Vec<i64> = index.iter().map(|r| r.position).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut found: HashMap<i64, Entry> = HashMap::with_capacity(sorted.len());
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        let mut j = i + 1;
        while j < sorted.len() && sorted[j] - end < RUN_GAP {
            end = sorted[j];
            j += 1;
        }
        let len = usize::try_from(end - start + 1).unwrap_or(1);
        let wanted = &sorted[i..j];
        for rec in log
            .read_all(start - 1, len)
            .await
            .context("reading the log")?
        {
            if wanted.binary_search(&rec.global_position).is_err() {
                continue;
            }
            let env = codec.decode(&rec).await.context("decoding an event")?;
            let ip = env.metadata.ip.as_ref().map(|ip| ip.shown().to_owned());
            found.insert(
                rec.global_position,
                Entry {
                    row: audit_row(&env),
                    ip,
                },
            );
        }
        i = j;
    }
    let mut out = Vec::with_capacity(index.len());
    for r in index {
        match found.get(&r.position) {
            Some(e) if e.row.event_id == r.event_id => out.push(e.clone()),
            Some(_) => bail!(
                "the audit index disagrees with the log at position {}: another event is there",
                r.position
            ),
            None => bail!(
                "the audit index names position {}, which the log does not hold",
                r.position
            ),
        }
    }
    Ok(out)
}

fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// One item of `GET /api/audit`.
pub fn item_json(e: &Entry) -> Value {
    let r = &e.row;
    json!({
        "position": r.position,
        "occurred_at": time(r.occurred_at),
        "action": r.action,
        "entity_type": r.entity_type,
        "entity_id": r.entity_id,
        "actor": { "id": r.actor_id, "role": r.actor_role },
        "ip": e.ip,
        "description": r.description,
    })
}

/// The CSV header of an export.
pub const CSV_HEADER: [&str; 9] = [
    "position",
    "occurred_at",
    "action",
    "entity_type",
    "entity_id",
    "actor_id",
    "actor_role",
    "ip",
    "description",
];

/// CSV text of a page of entries (with the header first when asked).
pub fn csv_chunk(entries: &[Entry], header: bool) -> anyhow::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    if header {
        w.write_record(CSV_HEADER)?;
    }
    for e in entries {
        let r = &e.row;
        let ip = e.ip.clone().unwrap_or_default();
        let cells = [
            r.position.to_string(),
            time(r.occurred_at),
            r.action.clone(),
            r.entity_type.clone(),
            r.entity_id.to_string(),
            r.actor_id.map(|a| a.to_string()).unwrap_or_default(),
            r.actor_role.clone().unwrap_or_default(),
            ip,
            r.description.clone(),
        ];
        // Descriptions quote facts such as a path or a reason: neutralised like every CSV
        // cell the API writes, so none can run as a spreadsheet formula.
        w.write_record(
            cells
                .iter()
                .map(|c| egec_domain::export::csv_cell(c).into_owned()),
        )?;
    }
    w.into_inner().map_err(|e| anyhow::anyhow!("csv: {e}"))
}

/// The next CSV chunk of an export after log position `after`: `None` when done. Memory stays
/// at one page whatever the size of the log.
pub async fn export_page(
    read: &ReadModels,
    log: &dyn EventLog,
    codec: &Codec,
    query: &AuditQuery,
    after: i64,
) -> anyhow::Result<Option<(Vec<u8>, i64)>> {
    let rows = read
        .audit_after(query, after, EXPORT_PAGE)
        .await
        .context("reading the audit index")?;
    let Some(last) = rows.last().map(|r| r.position) else {
        return Ok(None);
    };
    let entries = entries(log, codec, &rows).await?;
    Ok(Some((csv_chunk(&entries, false)?, last)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_csv_cells_that_could_run_as_formulas_are_neutralised() {
        let row = AuditRow {
            position: 7,
            event_id: uuid::Uuid::from_u128(1),
            occurred_at: chrono::DateTime::UNIX_EPOCH,
            action: "LOGIN_FAILED".into(),
            entity_type: "user".into(),
            entity_id: uuid::Uuid::from_u128(2),
            actor_id: None,
            actor_role: Some("@admin".into()),
            description: "=HYPERLINK(\"http://evil.example\")".into(),
        };
        let entry = Entry {
            row,
            ip: Some("-1+1".to_owned()),
        };
        let text = String::from_utf8(csv_chunk(&[entry], false).unwrap()).unwrap();
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(text.as_bytes());
        let record = reader.records().next().unwrap().unwrap();
        assert_eq!(&record[6], "'@admin");
        assert_eq!(&record[7], "'-1+1");
        assert_eq!(&record[8], "'=HYPERLINK(\"http://evil.example\")");
        assert_eq!(&record[0], "7");
    }
}
