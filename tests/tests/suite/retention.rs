//! Retention: what is older than `retention.days` goes, with its logs, while tasks flow;
//! nothing younger, nothing unfinished and nothing a retry chain or a schedule still needs.

use std::time::Duration;

use harness::TestScheduler;
use serde_json::json;

/// Stores a task of `noop` as if created `created_days_ago` and finished (or last changed)
/// `changed_days_ago`, with one log line.
async fn insert_task(
    db: &tokio_postgres::Client,
    id: &str,
    status: &str,
    created_days_ago: i32,
    changed_days_ago: i32,
    extra: &str,
) {
    insert_task_of(
        db,
        "noop",
        id,
        status,
        created_days_ago,
        changed_days_ago,
        extra,
    )
    .await
}

/// [`insert_task`] for a task of `function`.
async fn insert_task_of(
    db: &tokio_postgres::Client,
    function: &str,
    id: &str,
    status: &str,
    created_days_ago: i32,
    changed_days_ago: i32,
    extra: &str,
) {
    db.execute(
        &format!(
            "INSERT INTO tasks (id, function_name, status, start_timestamp, \
               status_changed_timestamp, source, creation_timestamp, update_timestamp, \
               lease_expires_at{columns}) \
             VALUES ($1, $5, $2, now() - make_interval(days => $3), \
               now() - make_interval(days => $4), 'api', now() - make_interval(days => $3), \
               now() - make_interval(days => $4), now() + interval '1 hour'{values})",
            columns = if extra.is_empty() {
                ""
            } else {
                ", retry_for_task_ids, schedule_id, schedule_slot"
            },
            values = if extra.is_empty() {
                String::new()
            } else {
                format!(", {extra}")
            },
        ),
        &[
            &id,
            &status,
            &created_days_ago,
            &changed_days_ago,
            &function,
        ],
    )
    .await
    .unwrap();
    db.execute(
        "INSERT INTO task_logs (task_id, timestamp, message) VALUES ($1, now(), 'a line')",
        &[&id],
    )
    .await
    .unwrap();
}

async fn remaining_tasks(db: &tokio_postgres::Client, ids: &[&str]) -> Vec<String> {
    let ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    let mut left: Vec<String> = db
        .query("SELECT id FROM tasks WHERE id = ANY($1)", &[&ids])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    left.sort();
    left
}

#[tokio::test]
async fn what_is_older_than_the_retention_goes_and_nothing_else() {
    // Each pass of the retention sweep deletes at most one batch of 2 and then the next.
    let app = TestScheduler::start_with(|config| {
        config.retention.days = 7;
        config.retention.interval_ms = 200;
        config.retention.batch = 2;
    })
    .await;
    let worker = app.start_worker(2).await;
    app.create_noop_function("noop").await;
    let db = app.database.connect().await;
    let none = "";
    // Old and finished: they go, with their logs.
    insert_task(&db, "old-complete", "complete", 40, 40, none).await;
    insert_task(&db, "old-failed", "failed", 30, 30, none).await;
    insert_task(&db, "old-canceled", "canceled", 8, 8, none).await;
    // A chain ended long ago goes whole; one whose retry is still to run stays whole.
    insert_task(&db, "chain-first", "retried", 40, 40, none).await;
    insert_task(
        &db,
        "chain-end",
        "complete",
        39,
        39,
        "'{chain-first}', NULL, NULL",
    )
    .await;
    insert_task(&db, "live-first", "retried", 40, 40, none).await;
    insert_task(&db, "live-end", "new", 39, 39, "'{live-first}', NULL, NULL").await;
    // Old but not finished, or finished lately, or young: they stay.
    insert_task(&db, "old-new", "new", 40, 40, none).await;
    insert_task(&db, "old-running", "inProgress", 40, 1, none).await;
    insert_task(&db, "finished-lately", "complete", 40, 2, none).await;
    insert_task(&db, "young", "complete", 6, 6, none).await;
    // A schedule's older slots go; its newest task stays.
    let slot = |days: i32| format!("'{{}}', 'sched', now() - make_interval(days => {days})");
    insert_task(&db, "slot-1", "complete", 40, 40, &slot(40)).await;
    insert_task(&db, "slot-2", "complete", 39, 39, &slot(39)).await;
    insert_task(&db, "slot-3", "complete", 38, 38, &slot(38)).await;
    // API requests and their logs.
    for (id, days) in [("old-request", 9), ("young-request", 1)] {
        db.execute(
            "INSERT INTO api_requests (id, function_name, method, path, status_code, timestamp, duration) \
             VALUES ($1, 'noop', 'GET', '/', 200, now() - make_interval(days => $2), 1.0)",
            &[&id, &days],
        )
        .await
        .unwrap();
        db.execute(
            "INSERT INTO api_request_logs (api_request_id, timestamp, message) VALUES ($1, now(), 'a line')",
            &[&id],
        )
        .await
        .unwrap();
    }
    // Tasks flow meanwhile.
    let flowing = app.create_tasks("noop", 40).await;

    let all = [
        "old-complete",
        "old-failed",
        "old-canceled",
        "chain-first",
        "chain-end",
        "live-first",
        "live-end",
        "old-new",
        "old-running",
        "finished-lately",
        "young",
        "slot-1",
        "slot-2",
        "slot-3",
    ];
    let kept = [
        "finished-lately",
        "live-end",
        "live-first",
        "old-new",
        "old-running",
        "slot-3",
        "young",
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while remaining_tasks(&db, &all).await.len() > kept.len()
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.assert_all_complete(&flowing).await;
    // Another few passes, to see that they leave the rest alone.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(remaining_tasks(&db, &all).await, kept);

    let count = |sql: &'static str| {
        let db = &db;
        async move { db.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    // Every log line of a deleted task went with it; the kept ones' lines stayed.
    assert_eq!(
        count("SELECT count(*) FROM task_logs WHERE task_id NOT IN (SELECT id FROM tasks)").await,
        0
    );
    assert_eq!(
        count("SELECT count(DISTINCT task_id) FROM task_logs WHERE task_id IN ('finished-lately', 'live-end', 'live-first', 'old-new', 'old-running', 'slot-3', 'young')").await,
        7
    );
    let flowing_left = db
        .query_one("SELECT count(*) FROM tasks WHERE id = ANY($1)", &[&flowing])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(flowing_left, 40, "the tasks that just ran are all kept");
    assert_eq!(
        count("SELECT count(*) FROM api_requests WHERE id = 'old-request'").await,
        0
    );
    assert_eq!(
        count("SELECT count(*) FROM api_requests WHERE id = 'young-request'").await,
        1
    );
    assert_eq!(
        count("SELECT count(*) FROM api_request_logs WHERE api_request_id = 'old-request'").await,
        0
    );
    assert_eq!(
        count("SELECT count(*) FROM api_request_logs WHERE api_request_id = 'young-request'").await,
        1
    );
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn zero_days_keeps_everything() {
    let app = TestScheduler::start_with(|config| {
        config.retention.days = 0;
        config.retention.interval_ms = 100;
    })
    .await;
    let db = app.database.connect().await;
    insert_task(&db, "ancient", "complete", 4000, 4000, "").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(remaining_tasks(&db, &["ancient"]).await, ["ancient"]);
    app.stop().await;
}

#[tokio::test]
async fn a_function_may_keep_its_tasks_longer_or_shorter() {
    let app = TestScheduler::start_with(|config| {
        config.retention.days = 7;
        config.retention.interval_ms = 200;
    })
    .await;
    for (name, days) in [("brief", json!(2)), ("keeper", json!(0))] {
        let (status, body) = app
            .post(
                "/tasks/v1/functions",
                &json!({"name": name, "code": harness::function_code("noop"),
                        "entryPoint": "handler.handle", "runtime": "python3.11",
                        "executionOptions": {"retentionDays": days}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["executionOptions"]["retentionDays"], days);
    }
    for bad in [json!(-1), json!(36_501), json!(1.5), json!("2")] {
        let (status, body) = app
            .put(
                "/tasks/v1/functions/brief",
                &json!({"executionOptions": {"retentionDays": bad}}),
            )
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let db = app.database.connect().await;
    for (id, function, days) in [
        ("brief-3", "brief", 3),
        ("brief-1", "brief", 1),
        ("keeper-400", "keeper", 400),
        ("other-3", "noop", 3),
        ("other-8", "noop", 8),
    ] {
        insert_task(&db, id, "complete", days, days, "").await;
        db.execute(
            "UPDATE tasks SET function_name = $2 WHERE id = $1",
            &[&id, &function],
        )
        .await
        .unwrap();
    }
    let all = ["brief-1", "brief-3", "keeper-400", "other-3", "other-8"];
    let kept = ["brief-1", "keeper-400", "other-3"];
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while remaining_tasks(&db, &all).await.len() > kept.len()
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(remaining_tasks(&db, &all).await, kept);
    app.stop().await;
}
