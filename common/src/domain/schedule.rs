//! A schedule: the function it runs and when, an interval or cron in a time zone.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::id::ObjectId;

/// A recurring task: every `interval` seconds, or at the times of a `cron` expression in a
/// `timezone`, a task of `functionName`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    #[schema(value_type = String, example = "64ad169e4d29c1b246ee25df")]
    pub id: ObjectId,
    pub function_name: String,
    /// Seconds between two tasks (absent for a cron schedule).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    /// Cron expression (5 fields, or 6 with seconds first), instead of an interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// IANA time zone the cron expression is read in (default `UTC`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[schema(value_type = Object)]
    pub data: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::domain::Priority>)]
    pub priority: Option<i64>,
    #[serde(with = "crate::time::millis")]
    pub start_timestamp: DateTime<Utc>,
    /// When the next task is due.
    #[serde(with = "crate::time::millis")]
    pub next_timestamp: DateTime<Utc>,
    #[serde(with = "crate::time::millis")]
    pub creation_timestamp: DateTime<Utc>,
    #[serde(with = "crate::time::millis")]
    pub update_timestamp: DateTime<Utc>,
}

/// When a schedule fires.
#[derive(Debug, Clone)]
pub enum Recurrence {
    Interval(chrono::Duration),
    Cron { cron: Box<Cron>, timezone: Tz },
}

impl Recurrence {
    /// From the stored or requested fields: exactly one of `interval` (whole seconds ≥ 1) and
    /// `cron`; `timezone` (default UTC) only with `cron`.
    pub fn parse(
        interval: Option<i64>,
        cron: Option<&str>,
        timezone: Option<&str>,
    ) -> Result<Recurrence, String> {
        match (interval, cron) {
            (Some(seconds), None) => {
                if timezone.is_some() {
                    return Err("timezone applies to cron schedules only".into());
                }
                if seconds < 1 {
                    return Err(format!("interval must be at least 1 second, got {seconds}"));
                }
                Ok(Recurrence::Interval(chrono::Duration::seconds(seconds)))
            }
            (None, Some(expression)) => {
                let cron = CronParser::builder()
                    .seconds(Seconds::Optional)
                    .build()
                    .parse(expression)
                    .map_err(|e| format!("cron `{expression}` is invalid: {e}"))?;
                let timezone = match timezone {
                    None => Tz::UTC,
                    Some(name) => name
                        .parse::<Tz>()
                        .map_err(|_| format!("timezone `{name}` is not an IANA time zone name"))?,
                };
                Ok(Recurrence::Cron {
                    cron: Box::new(cron),
                    timezone,
                })
            }
            (Some(_), Some(_)) => Err("give either interval or cron, not both".into()),
            (None, None) => Err("give interval or cron".into()),
        }
    }

    /// The first slot at or after `from`.
    pub fn first_slot(&self, from: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Recurrence::Interval(_) => Some(from),
            Recurrence::Cron { cron, timezone } => cron
                .find_next_occurrence(&from.with_timezone(timezone), true)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
        }
    }

    /// The slot that follows `slot` once it fired at `now`: the first one after both, so slots
    /// missed during downtime are skipped (the fired task stands for them) instead of firing
    /// in a burst.
    pub fn next_slot(&self, slot: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Recurrence::Interval(period) => {
                let period_ms = period.num_milliseconds().max(1);
                let behind_ms = (now - slot).num_milliseconds().max(0);
                let steps = behind_ms / period_ms + 1;
                Some(slot + chrono::Duration::milliseconds(period_ms.saturating_mul(steps)))
            }
            Recurrence::Cron { cron, timezone } => cron
                .find_next_occurrence(&slot.max(now).with_timezone(timezone), false)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        crate::time::parse(text).unwrap()
    }

    fn slots(recurrence: &Recurrence, from: &str, count: usize) -> Vec<String> {
        let mut slot = recurrence.first_slot(utc(from)).unwrap();
        let mut out = vec![crate::time::format(&slot)];
        for _ in 1..count {
            slot = recurrence.next_slot(slot, slot).unwrap();
            out.push(crate::time::format(&slot));
        }
        out
    }

    #[test]
    fn interval_slots_skip_downtime_without_a_burst() {
        let every_minute = Recurrence::parse(Some(60), None, None).unwrap();
        let slot = utc("2024-01-01T00:00:00Z");
        assert_eq!(
            every_minute.next_slot(slot, slot),
            Some(utc("2024-01-01T00:01:00Z"))
        );
        // Down for 10 minutes and 30 seconds: the next slot is the first one in the future.
        let now = utc("2024-01-01T00:10:30Z");
        assert_eq!(
            every_minute.next_slot(slot, now),
            Some(utc("2024-01-01T00:11:00Z"))
        );
    }

    #[test]
    fn brussels_cron_across_the_spring_forward_change() {
        // 31 March 2024: Brussels moves from UTC+1 to UTC+2 at 02:00 local time.
        let daily_nine =
            Recurrence::parse(None, Some("0 9 * * *"), Some("Europe/Brussels")).unwrap();
        assert_eq!(
            slots(&daily_nine, "2024-03-30T00:00:00Z", 3),
            vec![
                "2024-03-30T08:00:00.000Z",
                "2024-03-31T07:00:00.000Z",
                "2024-04-01T07:00:00.000Z"
            ]
        );
        // 02:30 does not exist on 31 March: that day's run happens at 03:00 local (01:00 UTC).
        let night = Recurrence::parse(None, Some("30 2 * * *"), Some("Europe/Brussels")).unwrap();
        assert_eq!(
            slots(&night, "2024-03-30T00:00:00Z", 3),
            vec![
                "2024-03-30T01:30:00.000Z",
                "2024-03-31T01:00:00.000Z",
                "2024-04-01T00:30:00.000Z"
            ]
        );
    }

    #[test]
    fn brussels_cron_across_the_fall_back_change() {
        // 27 October 2024: Brussels moves from UTC+2 to UTC+1 at 03:00 local time; 02:30
        // happens twice and the job runs once.
        let night = Recurrence::parse(None, Some("30 2 * * *"), Some("Europe/Brussels")).unwrap();
        assert_eq!(
            slots(&night, "2024-10-26T00:00:00Z", 3),
            vec![
                "2024-10-26T00:30:00.000Z",
                "2024-10-27T00:30:00.000Z",
                "2024-10-28T01:30:00.000Z"
            ]
        );
        // An hourly job keeps one run per real hour through the repeated hour.
        let hourly = Recurrence::parse(None, Some("0 * * * *"), Some("Europe/Brussels")).unwrap();
        assert_eq!(
            slots(&hourly, "2024-10-26T23:30:00Z", 4),
            vec![
                "2024-10-27T00:00:00.000Z",
                "2024-10-27T01:00:00.000Z",
                "2024-10-27T02:00:00.000Z",
                "2024-10-27T03:00:00.000Z"
            ]
        );
    }

    #[test]
    fn rejects_bad_definitions() {
        assert!(Recurrence::parse(Some(0), None, None).is_err());
        assert!(Recurrence::parse(Some(5), Some("* * * * *"), None).is_err());
        assert!(Recurrence::parse(None, None, None).is_err());
        assert!(Recurrence::parse(None, Some("not cron"), None).is_err());
        assert!(Recurrence::parse(None, Some("0 9 * * *"), Some("Mars/Olympus")).is_err());
        assert!(Recurrence::parse(Some(5), None, Some("UTC")).is_err());
    }
}
