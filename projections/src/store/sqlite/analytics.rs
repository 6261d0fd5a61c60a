//! SQLite tables of the `analytics` projection, in `read.db` beside the read models, with
//! the names of PostgreSQL's schema `analytics` (SQLite has no roles: an analyst is given a
//! copy of these tables, never the file). The fold's working state is `analytics_state`.
//!
//! Analysts query these tables with plain SQL, so values are stored readably: days as
//! `YYYY-MM-DD`, due times as `YYYY-MM-DD HH:MM:SS` (UTC, the format of SQLite's own
//! `datetime()`, so the view compares them with `datetime('now')`), ids as hyphenated text.

use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{Connection, Transaction, params};
use uuid::Uuid;

use super::{Shadow, TableDef, bad, table_for, uuid_at, uuid_text};
use crate::error::StorageError;
use crate::fold::analytics::{
    AnalyticsChanges, AnalyticsFold, AnalyticsWork, Daily, DailyRow, Entity,
};

pub(super) const STATE: TableDef = TableDef {
    live: "analytics_state",
    columns: "id TEXT PRIMARY KEY NOT NULL, state TEXT NOT NULL",
    without_rowid: true,
    indexes: &[],
};

const DAILY: TableDef = TableDef {
    live: "customers_by_status_daily",
    columns: "day TEXT NOT NULL, status TEXT NOT NULL, customers INTEGER NOT NULL, \
              entered INTEGER NOT NULL, exited INTEGER NOT NULL, PRIMARY KEY (day, status)",
    without_rowid: true,
    indexes: &[],
};

const CONVERSION: TableDef = TableDef {
    live: "conversion_by_source",
    columns: "source TEXT PRIMARY KEY NOT NULL, customers INTEGER NOT NULL, \
              enrolled INTEGER NOT NULL, lost INTEGER NOT NULL",
    without_rowid: true,
    indexes: &[],
};

const TIME_IN_STATUS: TableDef = TableDef {
    live: "time_in_status",
    columns: "status TEXT NOT NULL, month TEXT NOT NULL, exits INTEGER NOT NULL, \
              total_seconds INTEGER NOT NULL, PRIMARY KEY (status, month)",
    without_rowid: true,
    indexes: &[],
};

const OPEN_CUSTOMERS: TableDef = TableDef {
    live: "agent_open_customers",
    columns: "agent_id TEXT PRIMARY KEY NOT NULL, open_customers INTEGER NOT NULL",
    without_rowid: true,
    indexes: &[],
};

const OPEN_FOLLOWUPS: TableDef = TableDef {
    live: "agent_open_followups",
    columns: "agent_id TEXT NOT NULL, due_at TEXT NOT NULL, followups INTEGER NOT NULL, \
              PRIMARY KEY (agent_id, due_at)",
    without_rowid: true,
    indexes: &[],
};

const LOGINS: TableDef = TableDef {
    live: "logins_daily",
    columns: "day TEXT NOT NULL, role TEXT NOT NULL, logins INTEGER NOT NULL, \
              failures INTEGER NOT NULL, PRIMARY KEY (day, role)",
    without_rowid: true,
    indexes: &[],
};

pub(super) const TABLES: [TableDef; 7] = [
    STATE,
    DAILY,
    CONVERSION,
    TIME_IN_STATUS,
    OPEN_CUSTOMERS,
    OPEN_FOLLOWUPS,
    LOGINS,
];

/// SQLite rewrites a view when a table it reads is renamed, so a swap drops the view first
/// and makes it again over the new tables.
pub(super) const DROP_VIEW: &str = "DROP VIEW IF EXISTS agent_workload;";

/// The workload per agent, with overdue (due before now) and due today (from now to the
/// end of the current UTC day) decided at query time.
pub(super) const CREATE_VIEW: &str = "CREATE VIEW agent_workload AS \
     SELECT agent_id, \
       COALESCE(sum(open_customers), 0) AS open_customers, \
       COALESCE(sum(CASE WHEN due_at >= datetime('now') \
                          AND due_at < datetime('now', 'start of day', '+1 day') \
                     THEN followups END), 0) AS followups_due_today, \
       COALESCE(sum(CASE WHEN due_at < datetime('now') THEN followups END), 0) \
         AS followups_overdue, \
       COALESCE(sum(followups), 0) AS followups_open \
     FROM (SELECT agent_id, open_customers, NULL AS due_at, 0 AS followups \
           FROM agent_open_customers \
           UNION ALL \
           SELECT agent_id, 0, due_at, followups FROM agent_open_followups) \
     GROUP BY agent_id;";

const DAY: &str = "%Y-%m-%d";
const TIME: &str = "%Y-%m-%d %H:%M:%S";

fn day_text(d: NaiveDate) -> String {
    d.format(DAY).to_string()
}

fn time_text(t: DateTime<Utc>) -> String {
    t.format(TIME).to_string()
}

pub(super) fn load_state(
    conn: &Connection,
    table: &str,
    ids: &[Uuid],
) -> Result<Vec<(Uuid, Entity)>, StorageError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids = serde_json::to_string(ids).map_err(|e| StorageError::Corrupt(e.to_string()))?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT id, state FROM {table} WHERE id IN (SELECT value FROM json_each(?1))"
    ))?;
    let rows = stmt
        .query_map([ids], |r| {
            let id = uuid_at(r, 0)?;
            let state: String = r.get(1)?;
            let entity: Entity =
                serde_json::from_str(&state).map_err(|_| bad(1, "unreadable analytics state"))?;
            Ok((id, entity))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

fn load_last_day(conn: &Connection, table: &str) -> Result<Vec<DailyRow>, StorageError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT day, status, customers, entered, exited FROM {table} \
         WHERE day = (SELECT max(day) FROM {table})"
    ))?;
    let rows = stmt
        .query_map([], |r| {
            let day: String = r.get(0)?;
            let status: String = r.get(1)?;
            Ok(DailyRow {
                day: NaiveDate::parse_from_str(&day, DAY).map_err(|_| bad(0, "not a day"))?,
                status: status.parse().map_err(|_| bad(1, "unknown status"))?,
                customers: r.get(2)?,
                entered: r.get(3)?,
                exited: r.get(4)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Loads what the batch reads, folds it and writes the changes, inside `tx`.
pub(super) fn apply(
    tx: &Transaction<'_>,
    shadow: Option<&Shadow>,
    work: &AnalyticsWork,
) -> Result<(), StorageError> {
    let state = load_state(tx, &table_for(STATE.live, shadow), &work.load)?;
    let last_day = load_last_day(tx, &table_for(DAILY.live, shadow))?;
    let mut fold = AnalyticsFold::new(Daily::from_last_day(&last_day));
    fold.add_loaded(&work.load, state);
    fold.fold(work);
    write(tx, shadow, &fold.take_changes())
}

pub(super) fn write(
    tx: &Transaction<'_>,
    shadow: Option<&Shadow>,
    c: &AnalyticsChanges,
) -> Result<(), StorageError> {
    let name = |def: &TableDef| table_for(def.live, shadow);
    if !c.entities.is_empty() {
        let mut stmt = tx.prepare_cached(&format!(
            "INSERT INTO {} (id, state) VALUES (?1, ?2) \
             ON CONFLICT (id) DO UPDATE SET state = excluded.state",
            name(&STATE)
        ))?;
        for (id, e) in &c.entities {
            let state =
                serde_json::to_string(e).map_err(|e| StorageError::Corrupt(e.to_string()))?;
            stmt.execute(params![uuid_text(id), state])?;
        }
    }
    if !c.daily.is_empty() {
        let mut stmt = tx.prepare_cached(&format!(
            "INSERT INTO {} (day, status, customers, entered, exited) \
             VALUES (?1, ?2, ?3, ?4, ?5) \
             ON CONFLICT (day, status) DO UPDATE SET customers = excluded.customers, \
               entered = excluded.entered, exited = excluded.exited",
            name(&DAILY)
        ))?;
        for r in &c.daily {
            stmt.execute(params![
                day_text(r.day),
                r.status.as_str(),
                r.customers,
                r.entered,
                r.exited
            ])?;
        }
    }
    let d = &c.deltas;
    if !d.conversion.is_empty() {
        let t = name(&CONVERSION);
        let mut add = tx.prepare_cached(&format!(
            "INSERT INTO {t} (source, customers, enrolled, lost) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (source) DO UPDATE SET customers = customers + excluded.customers, \
               enrolled = enrolled + excluded.enrolled, lost = lost + excluded.lost"
        ))?;
        // A source whose last live customer was deleted or moved away has nothing to show.
        let mut prune = tx.prepare_cached(&format!(
            "DELETE FROM {t} WHERE source = ?1 AND customers = 0 AND enrolled = 0 AND lost = 0"
        ))?;
        for (source, v) in &d.conversion {
            add.execute(params![source, v[0], v[1], v[2]])?;
            prune.execute([source])?;
        }
    }
    if !d.time_in_status.is_empty() {
        let mut add = tx.prepare_cached(&format!(
            "INSERT INTO {} (status, month, exits, total_seconds) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (status, month) DO UPDATE SET exits = exits + excluded.exits, \
               total_seconds = total_seconds + excluded.total_seconds",
            name(&TIME_IN_STATUS)
        ))?;
        for ((status, month), v) in &d.time_in_status {
            add.execute(params![status, day_text(*month), v[0], v[1]])?;
        }
    }
    if !d.open_customers.is_empty() {
        let t = name(&OPEN_CUSTOMERS);
        let mut add = tx.prepare_cached(&format!(
            "INSERT INTO {t} (agent_id, open_customers) VALUES (?1, ?2) \
             ON CONFLICT (agent_id) DO UPDATE \
             SET open_customers = open_customers + excluded.open_customers"
        ))?;
        let mut prune = tx.prepare_cached(&format!(
            "DELETE FROM {t} WHERE agent_id = ?1 AND open_customers = 0"
        ))?;
        for (agent, n) in &d.open_customers {
            add.execute(params![uuid_text(agent), n])?;
            prune.execute([uuid_text(agent)])?;
        }
    }
    if !d.open_followups.is_empty() {
        let t = name(&OPEN_FOLLOWUPS);
        let mut add = tx.prepare_cached(&format!(
            "INSERT INTO {t} (agent_id, due_at, followups) VALUES (?1, ?2, ?3) \
             ON CONFLICT (agent_id, due_at) DO UPDATE \
             SET followups = followups + excluded.followups"
        ))?;
        let mut prune = tx.prepare_cached(&format!(
            "DELETE FROM {t} WHERE agent_id = ?1 AND due_at = ?2 AND followups = 0"
        ))?;
        for ((agent, due), n) in &d.open_followups {
            add.execute(params![uuid_text(agent), time_text(*due), n])?;
            prune.execute([uuid_text(agent), time_text(*due)])?;
        }
    }
    if !d.logins.is_empty() {
        let mut add = tx.prepare_cached(&format!(
            "INSERT INTO {} (day, role, logins, failures) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (day, role) DO UPDATE SET logins = logins + excluded.logins, \
               failures = failures + excluded.failures",
            name(&LOGINS)
        ))?;
        for ((day, role), v) in &d.logins {
            add.execute(params![day_text(*day), role, v[0], v[1]])?;
        }
    }
    Ok(())
}
