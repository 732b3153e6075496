//! Schedules fire: one task per slot, even with two schedulers; downtime gives one catch-up
//! task; cron schedules in a time zone; deleting a schedule stops it.

use std::time::Duration;

use harness::TestScheduler;
use serde_json::json;

async fn scheduled_slots(
    app: &TestScheduler,
    schedule_id: &str,
) -> Vec<chrono::DateTime<chrono::Utc>> {
    let db = app.database.connect().await;
    db.query(
        "SELECT schedule_slot FROM tasks WHERE schedule_id = $1 ORDER BY schedule_slot",
        &[&schedule_id],
    )
    .await
    .unwrap()
    .iter()
    .map(|row| row.get(0))
    .collect()
}

#[tokio::test]
async fn an_interval_schedule_creates_one_task_per_slot_with_two_schedulers() {
    let app = TestScheduler::start().await;
    let (stop_replica, replica) = app.start_replica().await;
    app.create_function("tick", "noop", "python3.11", "handler.handle", json!({}))
        .await;
    let (status, schedule) = app
        .post(
            "/tasks/v1/schedules",
            &json!({"interval": 1, "functionName": "tick", "data": {"k": "v"}, "priority": 3}),
        )
        .await;
    assert_eq!(status, 200, "{schedule}");
    let id = schedule["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let (status, _) = app.delete(&format!("/tasks/v1/schedules/{id}")).await;
    assert_eq!(status, 200);

    let slots = scheduled_slots(&app, &id).await;
    assert!(
        (4..=6).contains(&slots.len()),
        "one task per second: {slots:?}"
    );
    for pair in slots.windows(2) {
        assert_eq!(
            (pair[1] - pair[0]).num_milliseconds(),
            1000,
            "consecutive slots: {slots:?}"
        );
    }
    let (_, tasks) = app.get("/tasks/v1/?eq(functionName,tick)&limit(1)").await;
    assert_eq!(tasks["data"][0]["data"], json!({"k": "v"}));
    assert_eq!(tasks["data"][0]["priority"], 3);

    // Deleting the schedule stopped it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(scheduled_slots(&app, &id).await.len(), slots.len());
    let _ = stop_replica.send(());
    let _ = replica.await;
    app.stop().await;
}

#[tokio::test]
async fn missed_slots_after_downtime_give_one_catch_up_task() {
    let app = TestScheduler::start().await;
    app.create_function("daily", "noop", "python3.11", "handler.handle", json!({}))
        .await;
    let an_hour_ago = common::time::format(&(chrono::Utc::now() - chrono::Duration::minutes(61)));
    let (status, schedule) = app
        .post(
            "/tasks/v1/schedules",
            &json!({"interval": 60, "functionName": "daily", "startTimestamp": an_hour_ago}),
        )
        .await;
    assert_eq!(status, 200, "{schedule}");
    let id = schedule["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        scheduled_slots(&app, &id).await.len(),
        1,
        "one catch-up task, not 61"
    );
    let (_, list) = app.get(&format!("/tasks/v1/schedules?eq(id,{id})")).await;
    let next =
        chrono::DateTime::parse_from_rfc3339(list["data"][0]["nextTimestamp"].as_str().unwrap())
            .unwrap();
    assert!(
        next > chrono::Utc::now(),
        "the next slot is in the future: {next}"
    );
    app.stop().await;
}

#[tokio::test]
async fn cron_schedules_fire_in_their_time_zone() {
    let app = TestScheduler::start().await;
    app.create_function("cronned", "noop", "python3.11", "handler.handle", json!({}))
        .await;
    let (status, schedule) = app
        .post("/tasks/v1/schedules", &json!({"cron": "*/1 * * * * *", "timezone": "Europe/Brussels", "functionName": "cronned"}))
        .await;
    assert_eq!(status, 200, "{schedule}");
    assert_eq!(schedule["cron"], "*/1 * * * * *");
    assert_eq!(schedule["timezone"], "Europe/Brussels");
    assert!(schedule.get("interval").is_none());
    let id = schedule["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    app.delete(&format!("/tasks/v1/schedules/{id}")).await;
    let slots = scheduled_slots(&app, &id).await;
    assert!(slots.len() >= 2, "{slots:?}");
    assert!(
        slots.iter().all(|s| s.timestamp_subsec_millis() == 0),
        "cron slots fall on whole seconds"
    );

    // A nine o'clock Brussels schedule starts at 08:00 UTC in winter.
    let (status, nine) = app
        .post(
            "/tasks/v1/schedules",
            &json!({
                "cron": "0 9 * * *", "timezone": "Europe/Brussels", "functionName": "cronned",
                "startTimestamp": "2030-01-15T00:00:00.000Z"
            }),
        )
        .await;
    assert_eq!(status, 200, "{nine}");
    assert_eq!(nine["nextTimestamp"], "2030-01-15T08:00:00.000Z");

    for (body, what) in [
        (
            json!({"cron": "every day", "functionName": "cronned"}),
            "bad cron",
        ),
        (
            json!({"cron": "0 9 * * *", "timezone": "Mars/Olympus", "functionName": "cronned"}),
            "bad zone",
        ),
        (
            json!({"cron": "0 9 * * *", "interval": 5, "functionName": "cronned"}),
            "both",
        ),
    ] {
        let (status, response) = app.post("/tasks/v1/schedules", &body).await;
        assert_eq!(
            (status, response["code"].as_u64()),
            (400, Some(15)),
            "{what}: {response}"
        );
    }
    app.stop().await;
}
