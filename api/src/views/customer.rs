use chrono::{DateTime, Utc};
use egec_domain::customer::{Customer, CustomerEvent, CustomerState, evolve};
use egec_domain::event::{DomainEvent, Envelope};
use egec_domain::masking;
use egec_domain::personal::ERASED;
use serde::Serialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// The customer JSON of API.md.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CustomerView {
    pub id: Uuid,
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub passport_number: Option<String>,
    pub country: Option<String>,
    pub source: Option<String>,
    pub status: String,
    pub notes: Option<String>,
    pub assigned_agent_ids: Vec<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
    pub deleted: bool,
}

/// Masks a passport number for callers who may not see it; `[ERASED]` stays as it is.
pub fn passport_shown(p: &str, reveal: bool) -> String {
    if reveal || p == ERASED {
        p.to_owned()
    } else {
        masking::passport(p)
    }
}

impl CustomerView {
    pub fn from_row(r: &egec_projections::CustomerRow, reveal: bool) -> Self {
        Self {
            id: r.id,
            name: r.name.clone(),
            email: r.email.clone(),
            phone: r.phone.clone(),
            passport_number: r
                .passport_number
                .as_deref()
                .map(|p| passport_shown(p, reveal)),
            country: r.country.clone(),
            source: r.source.clone(),
            status: r.status.as_str().to_owned(),
            notes: r.notes.clone(),
            assigned_agent_ids: r.assigned_agent_ids.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
            version: r.version,
            deleted: r.deleted,
        }
    }

    /// The view of a replayed customer, through the same mapping the projection uses, so a
    /// read model row and a replay can never render differently.
    pub fn from_state(c: &Customer, reveal: bool) -> Self {
        Self::from_row(&egec_projections::fold::customer_row(c, 0), reveal)
    }
}

/// Field-by-field differences between two views (ids and bookkeeping fields left out).
fn diff(before: Option<&CustomerView>, after: &CustomerView) -> Map<String, Value> {
    let to_map = |v: &CustomerView| -> Map<String, Value> {
        match serde_json::to_value(v) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    };
    let a = to_map(after);
    let b = before.map(to_map).unwrap_or_default();
    let mut out = Map::new();
    for (k, to) in a {
        if matches!(k.as_str(), "id" | "created_at" | "updated_at" | "version") {
            continue;
        }
        let from = b.get(&k).cloned().unwrap_or(Value::Null);
        if from != to && !(before.is_none() && to.is_null()) {
            out.insert(k, json!({ "from": from, "to": to }));
        }
    }
    out
}

/// Whether history items (as [`history_items`] built them) show a passport number in clear:
/// some change has one as its old or new value, not a masked one or a marker. Used only for
/// callers who may see passports, whose values are never masked.
pub fn history_shows_passport(items: &[Value]) -> bool {
    let clear = |v: &Value| {
        v.as_str()
            .is_some_and(|p| p != ERASED && p != egec_domain::personal::EXPIRED)
    };
    items.iter().any(|item| {
        let change = &item["changes"]["passport_number"];
        clear(&change["from"]) || clear(&change["to"])
    })
}

/// The history of API.md: each event with its actor, time and field diffs, masked per role.
pub fn history_items(events: &[Envelope], reveal: bool) -> Vec<Value> {
    let mut state = CustomerState::Absent;
    let mut items = Vec::new();
    for env in events {
        let DomainEvent::Customer(e) = &env.event else {
            continue;
        };
        let before = state
            .customer()
            .map(|c| CustomerView::from_state(c, reveal));
        state = evolve(state, e);
        let Some(after) = state
            .customer()
            .map(|c| CustomerView::from_state(c, reveal))
        else {
            continue;
        };
        let changes = match e {
            // An erasure blanks fields; listing `from` would defeat it, so it lists none.
            CustomerEvent::Erased { .. } => Map::new(),
            // An attachment changes no field of the customer: the file it added is the change.
            CustomerEvent::AttachmentAdded(a) => {
                let mut m = Map::new();
                m.insert(
                    "attachments".into(),
                    json!({ "from": null, "to": {
                        "id": a.attachment_id,
                        "file_name": a.file_name.shown(),
                        "content_type": a.content_type.mime(),
                        "size": a.size,
                    }}),
                );
                m
            }
            _ => diff(before.as_ref(), &after),
        };
        items.push(json!({
            "position": env.position,
            "version": env.stream_version,
            "action": e.action(),
            "occurred_at": env.metadata.occurred_at,
            "actor": {
                "id": env.metadata.actor_id.map(|a| a.as_uuid()),
                "role": env.metadata.actor_role.map(|r| r.as_str()),
            },
            "changes": changes,
        }));
    }
    items
}
