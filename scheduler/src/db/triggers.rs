//! The `triggers` table, and turning one platform event into the tasks of its triggers.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde_json::{Map, Value};
use tokio_postgres::Row;

use common::db::list::{ListRequest, Page, fetch_page};
use common::db::{StoreError, text};
use common::domain::trigger::{EVENT_KEY, event_type_matches};
use common::domain::{Trigger, task};
use common::id::ObjectId;
use rql::{Field, FieldKind, Schema};

pub static TRIGGER_SCHEMA: Schema = Schema {
    fields: &[
        Field::new("id", "id", FieldKind::Text),
        Field::new("eventType", "event_type", FieldKind::Text),
        Field::new("functionName", "function_name", FieldKind::Text),
        Field::new("data", "data", FieldKind::Json),
        Field::new("priority", "priority", FieldKind::Integer),
        Field::new("delaySeconds", "delay_seconds", FieldKind::Integer),
        Field::new("tags", "tags", FieldKind::TextArray),
        Field::new("enabled", "enabled", FieldKind::Bool),
        Field::new(
            "creationTimestamp",
            "creation_timestamp",
            FieldKind::Timestamp,
        ),
        Field::new("updateTimestamp", "update_timestamp", FieldKind::Timestamp),
    ],
};

const COLUMNS: &str = "id, event_type, function_name, data, priority, delay_seconds, tags, enabled, \
    creation_timestamp, update_timestamp";

/// The fields of a trigger a client sets.
#[derive(Debug, Clone)]
pub struct TriggerFields {
    pub event_type: String,
    pub function_name: String,
    pub data: Value,
    pub priority: Option<i64>,
    pub delay_seconds: i64,
    pub tags: Vec<String>,
    pub enabled: bool,
}

impl From<&Trigger> for TriggerFields {
    fn from(trigger: &Trigger) -> Self {
        TriggerFields {
            event_type: trigger.event_type.clone(),
            function_name: trigger.function_name.clone(),
            data: trigger.data.clone(),
            priority: trigger.priority,
            delay_seconds: trigger.delay_seconds,
            tags: trigger.tags.clone(),
            enabled: trigger.enabled,
        }
    }
}

/// A platform event, already validated.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub event_type: String,
    /// The whole envelope as received, stored in the task's data under `event`.
    pub envelope: Value,
}

#[derive(Clone)]
pub struct Triggers {
    pool: Pool,
}

impl Triggers {
    pub fn new(pool: Pool) -> Self {
        Triggers { pool }
    }

    pub async fn insert(&self, fields: &TriggerFields) -> Result<Trigger, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                &format!(
                    "INSERT INTO triggers ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
                     RETURNING {COLUMNS}"
                ),
                &[
                    &ObjectId::generate().to_string(),
                    &fields.event_type,
                    &fields.function_name,
                    &fields.data,
                    &fields.priority,
                    &fields.delay_seconds,
                    &fields.tags,
                    &fields.enabled,
                    &common::time::now(),
                ],
            )
            .await?;
        trigger_from_row(&row)
    }

    pub async fn get(&self, id: &ObjectId) -> Result<Option<Trigger>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM triggers WHERE id = $1"),
                &[&id.to_string()],
            )
            .await?;
        row.as_ref().map(trigger_from_row).transpose()
    }

    pub async fn list(&self, request: &ListRequest) -> Result<Page<Trigger>, StoreError> {
        let client = self.pool.get().await?;
        fetch_page(
            &client,
            "triggers",
            COLUMNS,
            None,
            "creation_timestamp ASC, id ASC",
            request,
            trigger_from_row,
        )
        .await
    }

    /// Returns the number of triggers updated.
    pub async fn update(&self, id: &ObjectId, fields: &TriggerFields) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        Ok(client
            .execute(
                "UPDATE triggers SET event_type = $2, function_name = $3, data = $4, priority = $5, \
                   delay_seconds = $6, tags = $7, enabled = $8, update_timestamp = $9 WHERE id = $1",
                &[
                    &id.to_string(),
                    &fields.event_type,
                    &fields.function_name,
                    &fields.data,
                    &fields.priority,
                    &fields.delay_seconds,
                    &fields.tags,
                    &fields.enabled,
                    &common::time::now(),
                ],
            )
            .await?)
    }

    /// Returns the number of triggers deleted.
    pub async fn delete(&self, id: &ObjectId) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        Ok(client
            .execute("DELETE FROM triggers WHERE id = $1", &[&id.to_string()])
            .await?)
    }

    /// Creates one task per enabled trigger matching each event, for all the events in one
    /// statement. A redelivered event creates nothing new: the (trigger, event id) pair is
    /// unique. An event whose tasks could never be stored creates none. Returns what became of
    /// each event.
    pub async fn create_tasks_for(
        &self,
        events: &[Event],
    ) -> Result<Vec<EventOutcome>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &format!("SELECT {COLUMNS} FROM triggers WHERE enabled"),
                &[],
            )
            .await?;
        let triggers = rows
            .iter()
            .map(trigger_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let now = common::time::now();
        let mut outcomes = Vec::with_capacity(events.len());
        let mut inserts = Vec::new();
        for (index, event) in events.iter().enumerate() {
            match triggered_tasks(index, event, &triggers, now) {
                Ok(tasks) => {
                    outcomes.push(EventOutcome::Stored {
                        matched: tasks.len(),
                        created: 0,
                    });
                    inserts.extend(tasks);
                }
                Err(reason) => outcomes.push(EventOutcome::Unusable(reason)),
            }
        }
        if inserts.is_empty() {
            return Ok(outcomes);
        }
        let statement = client
            .prepare_cached(
                "INSERT INTO tasks (id, function_name, status, status_changed_timestamp, data, tags, \
                   start_timestamp, priority, source, trigger_id, event_id, creation_timestamp, \
                   update_timestamp) \
                 SELECT n.id, n.function_name, 'new', $1::timestamptz, n.data, \
                   ARRAY(SELECT jsonb_array_elements_text(n.tags)), n.start_timestamp, \
                   COALESCE(n.priority, f.default_priority, 0), 'event', n.trigger_id, n.event_id, $1, $1 \
                 FROM UNNEST($2::text[], $3::text[], $4::jsonb[], $5::jsonb[], $6::timestamptz[], \
                   $7::int8[], $8::text[], $9::text[]) \
                   AS n(id, function_name, data, tags, start_timestamp, priority, trigger_id, event_id) \
                 LEFT JOIN functions f ON f.name = n.function_name \
                 ON CONFLICT (trigger_id, event_id) WHERE trigger_id IS NOT NULL DO NOTHING \
                 RETURNING id",
            )
            .await?;
        let rows = client
            .query(
                &statement,
                &[
                    &now,
                    &inserts.iter().map(|t| &t.id).collect::<Vec<_>>(),
                    &inserts
                        .iter()
                        .map(|t| &t.trigger.function_name)
                        .collect::<Vec<_>>(),
                    &inserts.iter().map(|t| &t.data).collect::<Vec<_>>(),
                    &inserts.iter().map(|t| &t.tags).collect::<Vec<_>>(),
                    &inserts.iter().map(|t| t.start).collect::<Vec<_>>(),
                    &inserts
                        .iter()
                        .map(|t| t.trigger.priority)
                        .collect::<Vec<_>>(),
                    &inserts.iter().map(|t| &t.trigger_id).collect::<Vec<_>>(),
                    &inserts
                        .iter()
                        .map(|t| events[t.event].id.as_str())
                        .collect::<Vec<_>>(),
                ],
            )
            .await?;
        let created = rows
            .iter()
            .map(|row| row.try_get::<_, String>(0))
            .collect::<Result<HashSet<_>, _>>()?;
        for task in inserts.iter().filter(|task| created.contains(&task.id)) {
            if let Some(EventOutcome::Stored { created, .. }) = outcomes.get_mut(task.event) {
                *created += 1;
            }
        }
        Ok(outcomes)
    }
}

/// What became of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOutcome {
    /// The tasks of its triggers are stored: how many enabled triggers matched it, how many
    /// tasks were created (fewer when it was delivered before).
    Stored { matched: usize, created: u64 },
    /// It can never become tasks, for this reason.
    Unusable(String),
}

/// The tasks the triggers matching `event` (the `index`-th of its batch) create, or why it
/// can create none: the database could not store it, or a task's data would pass the limit.
fn triggered_tasks<'a>(
    index: usize,
    event: &Event,
    triggers: &'a [Trigger],
    now: DateTime<Utc>,
) -> Result<Vec<TriggeredTask<'a>>, String> {
    let mut matching = triggers
        .iter()
        .filter(|trigger| event_type_matches(&trigger.event_type, &event.event_type))
        .peekable();
    // The id is part of the envelope, so this covers the task's tag and key too. An event no
    // trigger wants is never stored, and fine as it is.
    if matching.peek().is_some() && !text::json_is_storable(&event.envelope) {
        return Err(format!("the event {}", text::HOLDS_NUL));
    }
    let mut tasks = Vec::new();
    for trigger in matching {
        let mut data = match &trigger.data {
            Value::Object(map) => map.clone(),
            _ => Map::new(),
        };
        data.insert(EVENT_KEY.to_owned(), event.envelope.clone());
        let data = Value::Object(data);
        if let Some(error) = task::data_size_error(&data) {
            return Err(format!(
                "the task of trigger {} cannot be created: its {error}",
                trigger.id
            ));
        }
        let mut tags = trigger.tags.clone();
        tags.push(format!("event:{}", event.id));
        tasks.push(TriggeredTask {
            event: index,
            id: ObjectId::generate().to_string(),
            data,
            // Arrays of arrays must be rectangular in Postgres: the tags travel as JSON.
            tags: Value::from(tags),
            start: now + chrono::Duration::seconds(trigger.delay_seconds),
            trigger_id: trigger.id.to_string(),
            trigger,
        });
    }
    Ok(tasks)
}

/// A task an event's trigger creates.
struct TriggeredTask<'a> {
    /// Index of the event in the batch.
    event: usize,
    id: String,
    data: Value,
    tags: Value,
    start: DateTime<Utc>,
    trigger_id: String,
    trigger: &'a Trigger,
}

fn trigger_from_row(row: &Row) -> Result<Trigger, StoreError> {
    let id: String = row.try_get("id")?;
    Ok(Trigger {
        id: id
            .parse()
            .map_err(|e: common::id::InvalidObjectId| StoreError::Corrupt(e.to_string()))?,
        event_type: row.try_get("event_type")?,
        function_name: row.try_get("function_name")?,
        data: row.try_get("data")?,
        priority: row.try_get("priority")?,
        delay_seconds: row.try_get("delay_seconds")?,
        tags: row.try_get("tags")?,
        enabled: row.try_get("enabled")?,
        creation_timestamp: row.try_get::<_, DateTime<Utc>>("creation_timestamp")?,
        update_timestamp: row.try_get("update_timestamp")?,
    })
}
