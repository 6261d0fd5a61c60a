//! PostgreSQL tables of the `analytics` projection: the aggregates in schema `analytics`
//! (readable by `egec_analytics`), and the fold's working state in schema `crm` (keyed by
//! customer and user ids, so analysts must not see it).
//!
//! Counter tables take the fold's deltas (`INSERT … ON CONFLICT DO UPDATE SET n = n + …`)
//! and lose rows whose counters all reach zero; the daily table takes absolute rows.

use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::Transaction;
use uuid::Uuid;

use super::{ANALYTICS, CRM, Shadow, TableDef, prepare, table_for};
use crate::error::StorageError;
use crate::fold::analytics::{
    AnalyticsChanges, AnalyticsFold, AnalyticsWork, Daily, DailyRow, Entity,
};

/// Working state: one JSON document per customer or staff user, by id.
pub(super) const STATE: TableDef = TableDef {
    schema: CRM,
    live: "analytics_state",
    key: "id",
    columns: "id uuid NOT NULL, state text NOT NULL",
    indexes: &[],
};

const DAILY: TableDef = TableDef {
    schema: ANALYTICS,
    live: "customers_by_status_daily",
    key: "day, status",
    columns: "day date NOT NULL, status text NOT NULL, customers bigint NOT NULL, \
              entered bigint NOT NULL, exited bigint NOT NULL",
    indexes: &[],
};

const CONVERSION: TableDef = TableDef {
    schema: ANALYTICS,
    live: "conversion_by_source",
    key: "source",
    columns: "source text NOT NULL, customers bigint NOT NULL, enrolled bigint NOT NULL, \
              lost bigint NOT NULL",
    indexes: &[],
};

const TIME_IN_STATUS: TableDef = TableDef {
    schema: ANALYTICS,
    live: "time_in_status",
    key: "status, month",
    columns: "status text NOT NULL, month date NOT NULL, exits bigint NOT NULL, \
              total_seconds bigint NOT NULL",
    indexes: &[],
};

const OPEN_CUSTOMERS: TableDef = TableDef {
    schema: ANALYTICS,
    live: "agent_open_customers",
    key: "agent_id",
    columns: "agent_id uuid NOT NULL, open_customers bigint NOT NULL",
    indexes: &[],
};

const OPEN_FOLLOWUPS: TableDef = TableDef {
    schema: ANALYTICS,
    live: "agent_open_followups",
    key: "agent_id, due_at",
    columns: "agent_id uuid NOT NULL, due_at timestamptz NOT NULL, followups bigint NOT NULL",
    indexes: &[],
};

const LOGINS: TableDef = TableDef {
    schema: ANALYTICS,
    live: "logins_daily",
    key: "day, role",
    columns: "day date NOT NULL, role text NOT NULL, logins bigint NOT NULL, \
              failures bigint NOT NULL",
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

pub(super) const DROP_VIEW: &str = "DROP VIEW IF EXISTS analytics.agent_workload;";

/// The workload per agent. Whether a follow-up is overdue depends on the time of the query,
/// which a fold cannot know, so the view decides it with `now()`: overdue is due before now,
/// due today is due from now to the end of the current UTC day.
pub(super) const CREATE_VIEW: &str = "CREATE VIEW analytics.agent_workload AS \
     SELECT agent_id, \
       COALESCE(sum(open_customers), 0)::bigint AS open_customers, \
       COALESCE(sum(followups) FILTER (WHERE due_at >= now() AND due_at < \
         (date_trunc('day', now() AT TIME ZONE 'UTC') + interval '1 day') AT TIME ZONE 'UTC'), \
         0)::bigint AS followups_due_today, \
       COALESCE(sum(followups) FILTER (WHERE due_at < now()), 0)::bigint AS followups_overdue, \
       COALESCE(sum(followups), 0)::bigint AS followups_open \
     FROM (SELECT agent_id, open_customers, NULL::timestamptz AS due_at, 0::bigint AS followups \
           FROM analytics.agent_open_customers \
           UNION ALL \
           SELECT agent_id, 0::bigint, due_at, followups FROM analytics.agent_open_followups) w \
     GROUP BY agent_id;";

/// Grants `egec_analytics` SELECT on the live analytics tables and the view, where the role
/// exists. Default privileges (migration V3) already cover objects the migrating role
/// creates; this also covers a deployment whose application role differs from the
/// migrating one, as the owner may always grant on its own tables. Run after every creation
/// and swap, since a swap puts new tables in place.
pub(super) fn grant_sql() -> String {
    let names: Vec<String> = TABLES
        .iter()
        .filter(|d| d.schema == ANALYTICS)
        .map(|d| format!("{ANALYTICS}.{}", d.live))
        .chain(std::iter::once(format!("{ANALYTICS}.agent_workload")))
        .collect();
    format!(
        "DO $$ BEGIN \
           IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'egec_analytics') THEN \
             GRANT SELECT ON {} TO egec_analytics; \
           END IF; \
         END $$;",
        names.join(", ")
    )
}

pub(super) async fn load_state(
    tx: &Transaction<'_>,
    table: &str,
    ids: &[Uuid],
    cached: bool,
) -> Result<Vec<(Uuid, Entity)>, StorageError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!("SELECT id, state FROM {CRM}.{table} WHERE id = ANY($1)");
    let stmt = prepare(tx, &sql, cached).await?;
    let rows = tx.query(&stmt, &[&ids]).await?;
    rows.iter()
        .map(|r| {
            let id: Uuid = r.try_get(0)?;
            let state: String = r.try_get(1)?;
            let entity = serde_json::from_str(&state).map_err(|_| {
                StorageError::Corrupt(format!("{CRM}.{table}: unreadable state of {id}"))
            })?;
            Ok((id, entity))
        })
        .collect()
}

async fn load_last_day(
    tx: &Transaction<'_>,
    table: &str,
    cached: bool,
) -> Result<Vec<DailyRow>, StorageError> {
    let sql = format!(
        "SELECT day, status, customers, entered, exited FROM {ANALYTICS}.{table} \
         WHERE day = (SELECT max(day) FROM {ANALYTICS}.{table})"
    );
    let stmt = prepare(tx, &sql, cached).await?;
    let rows = tx.query(&stmt, &[]).await?;
    rows.iter()
        .map(|r| {
            let status: String = r.try_get(1)?;
            Ok(DailyRow {
                day: r.try_get(0)?,
                status: status.parse().map_err(|_| {
                    StorageError::Corrupt(format!("{ANALYTICS}.{table}: unknown status"))
                })?,
                customers: r.try_get(2)?,
                entered: r.try_get(3)?,
                exited: r.try_get(4)?,
            })
        })
        .collect()
}

/// Loads what the batch reads, folds it and writes the changes, inside `tx`.
pub(super) async fn apply(
    tx: &Transaction<'_>,
    shadow: Option<&Shadow>,
    cached: bool,
    work: &AnalyticsWork,
) -> Result<(), StorageError> {
    let state = load_state(tx, &table_for(STATE.live, shadow), &work.load, cached).await?;
    let last_day = load_last_day(tx, &table_for(DAILY.live, shadow), cached).await?;
    let mut fold = AnalyticsFold::new(Daily::from_last_day(&last_day));
    fold.add_loaded(&work.load, state);
    fold.fold(work);
    write(tx, shadow, cached, &fold.take_changes()).await
}

pub(super) async fn write(
    tx: &Transaction<'_>,
    shadow: Option<&Shadow>,
    cached: bool,
    c: &AnalyticsChanges,
) -> Result<(), StorageError> {
    let name = |def: &TableDef| format!("{}.{}", def.schema, table_for(def.live, shadow));
    if !c.entities.is_empty() {
        let id: Vec<Uuid> = c.entities.iter().map(|(id, _)| *id).collect();
        let state = c
            .entities
            .iter()
            .map(|(_, e)| serde_json::to_string(e))
            .collect::<Result<Vec<String>, _>>()
            .map_err(|e| StorageError::Corrupt(e.to_string()))?;
        let sql = format!(
            "INSERT INTO {} (id, state) SELECT * FROM unnest($1::uuid[], $2::text[]) \
             ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state",
            name(&STATE)
        );
        let stmt = prepare(tx, &sql, cached).await?;
        tx.execute(&stmt, &[&id, &state]).await?;
    }
    if !c.daily.is_empty() {
        let day: Vec<NaiveDate> = c.daily.iter().map(|r| r.day).collect();
        let status: Vec<&str> = c.daily.iter().map(|r| r.status.as_str()).collect();
        let customers: Vec<i64> = c.daily.iter().map(|r| r.customers).collect();
        let entered: Vec<i64> = c.daily.iter().map(|r| r.entered).collect();
        let exited: Vec<i64> = c.daily.iter().map(|r| r.exited).collect();
        let sql = format!(
            "INSERT INTO {} (day, status, customers, entered, exited) \
             SELECT * FROM unnest($1::date[], $2::text[], $3::int8[], $4::int8[], $5::int8[]) \
             ON CONFLICT (day, status) DO UPDATE SET customers = EXCLUDED.customers, \
               entered = EXCLUDED.entered, exited = EXCLUDED.exited",
            name(&DAILY)
        );
        let stmt = prepare(tx, &sql, cached).await?;
        tx.execute(&stmt, &[&day, &status, &customers, &entered, &exited])
            .await?;
    }
    let d = &c.deltas;
    if !d.conversion.is_empty() {
        let source: Vec<&str> = d.conversion.keys().map(String::as_str).collect();
        let v: Vec<[i64; 3]> = d.conversion.values().copied().collect();
        let col = |i: usize| v.iter().map(|x| x[i]).collect::<Vec<i64>>();
        let t = name(&CONVERSION);
        let sql = format!(
            "INSERT INTO {t} AS t (source, customers, enrolled, lost) \
             SELECT * FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[]) \
             ON CONFLICT (source) DO UPDATE SET customers = t.customers + EXCLUDED.customers, \
               enrolled = t.enrolled + EXCLUDED.enrolled, lost = t.lost + EXCLUDED.lost"
        );
        let stmt = prepare(tx, &sql, cached).await?;
        tx.execute(&stmt, &[&source, &col(0), &col(1), &col(2)])
            .await?;
        // A source whose last live customer was deleted or moved away has nothing to show.
        let sql = format!(
            "DELETE FROM {t} WHERE source = ANY($1) AND customers = 0 AND enrolled = 0 \
             AND lost = 0"
        );
        let stmt = prepare(tx, &sql, cached).await?;
        tx.execute(&stmt, &[&source]).await?;
    }
    if !d.time_in_status.is_empty() {
        let status: Vec<&str> = d.time_in_status.keys().map(|(s, _)| *s).collect();
        let month: Vec<NaiveDate> = d.time_in_status.keys().map(|(_, m)| *m).collect();
        let exits: Vec<i64> = d.time_in_status.values().map(|v| v[0]).collect();
        let seconds: Vec<i64> = d.time_in_status.values().map(|v| v[1]).collect();
        let sql = format!(
            "INSERT INTO {} AS t (status, month, exits, total_seconds) \
             SELECT * FROM unnest($1::text[], $2::date[], $3::int8[], $4::int8[]) \
             ON CONFLICT (status, month) DO UPDATE SET exits = t.exits + EXCLUDED.exits, \
               total_seconds = t.total_seconds + EXCLUDED.total_seconds",
            name(&TIME_IN_STATUS)
        );
        let stmt = prepare(tx, &sql, cached).await?;
        tx.execute(&stmt, &[&status, &month, &exits, &seconds])
            .await?;
    }
    if !d.open_customers.is_empty() {
        let agent: Vec<Uuid> = d.open_customers.keys().copied().collect();
        let n: Vec<i64> = d.open_customers.values().copied().collect();
        let t = name(&OPEN_CUSTOMERS);
        let sql = format!(
            "INSERT INTO {t} AS t (agent_id, open_customers) \
             SELECT * FROM unnest($1::uuid[], $2::int8[]) \
             ON CONFLICT (agent_id) DO UPDATE \
             SET open_customers = t.open_customers + EXCLUDED.open_customers"
        );
        let stmt = prepare(tx, &sql, cached).await?;
        tx.execute(&stmt, &[&agent, &n]).await?;
        let sql = format!("DELETE FROM {t} WHERE agent_id = ANY($1) AND open_customers = 0");
        let stmt = prepare(tx, &sql, cached).await?;
        tx.execute(&stmt, &[&agent]).await?;
    }
    if !d.open_followups.is_empty() {
        let agent: Vec<Uuid> = d.open_followups.keys().map(|(a, _)| *a).collect();
        let due: Vec<DateTime<Utc>> = d.open_followups.keys().map(|(_, t)| *t).collect();
        let n: Vec<i64> = d.open_followups.values().copied().collect();
        let t = name(&OPEN_FOLLOWUPS);
        let sql = format!(
            "INSERT INTO {t} AS t (agent_id, due_at, followups) \
             SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::int8[]) \
             ON CONFLICT (agent_id, due_at) DO UPDATE \
             SET followups = t.followups + EXCLUDED.followups"
        );
        let stmt = prepare(tx, &sql, cached).await?;
        tx.execute(&stmt, &[&agent, &due, &n]).await?;
        let sql = format!("DELETE FROM {t} WHERE agent_id = ANY($1) AND followups = 0");
        let stmt = prepare(tx, &sql, cached).await?;
        tx.execute(&stmt, &[&agent]).await?;
    }
    if !d.logins.is_empty() {
        let day: Vec<NaiveDate> = d.logins.keys().map(|(d, _)| *d).collect();
        let role: Vec<&str> = d.logins.keys().map(|(_, r)| r.as_str()).collect();
        let ok: Vec<i64> = d.logins.values().map(|v| v[0]).collect();
        let failed: Vec<i64> = d.logins.values().map(|v| v[1]).collect();
        let sql = format!(
            "INSERT INTO {} AS t (day, role, logins, failures) \
             SELECT * FROM unnest($1::date[], $2::text[], $3::int8[], $4::int8[]) \
             ON CONFLICT (day, role) DO UPDATE SET logins = t.logins + EXCLUDED.logins, \
               failures = t.failures + EXCLUDED.failures",
            name(&LOGINS)
        );
        let stmt = prepare(tx, &sql, cached).await?;
        tx.execute(&stmt, &[&day, &role, &ok, &failed]).await?;
    }
    Ok(())
}
