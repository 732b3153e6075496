//! The fault-injection suite: the real binaries on a PostgreSQL and a RabbitMQ of the suite's
//! own, under load, while workers and schedulers are killed, the broker and the database are
//! restarted, poison is injected and workers are rolled. Each scenario prints one figure line
//! and must lose no task and complete none twice (see docs/reliability.md).
//!
//! `FAULTS_SOAK=1` runs thousands of tasks with longer fault windows; `FAULTS_ONLY=a,b` runs
//! only the named scenarios.

use std::time::{Duration, Instant};

use harness::faults::{
    Api, Cluster, Environment, Expectations, Figure, LoadPlan, Process, Recorder, Recovery, ZOMBIE,
    all_ready, audit, drive_load, mix, report, soak,
};
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use serde_json::json;

/// Sizes of a run: small enough for CI, or a soak.
struct Scale {
    tasks: usize,
    /// Faults injected per scenario (kills, restarts, drains).
    faults: usize,
    /// Time between two faults.
    fault_every: Duration,
    /// How long RabbitMQ stays down.
    broker_down: Duration,
    /// How long PostgreSQL stays down.
    database_down: Duration,
    /// Poison messages of each kind injected.
    poison_rounds: usize,
}

fn scale() -> Scale {
    if soak() {
        Scale {
            tasks: 3000,
            faults: 12,
            fault_every: Duration::from_secs(5),
            broker_down: Duration::from_secs(10),
            database_down: Duration::from_secs(10),
            poison_rounds: 100,
        }
    } else {
        Scale {
            tasks: 300,
            faults: 4,
            fault_every: Duration::from_secs(3),
            broker_down: Duration::from_secs(10),
            database_down: Duration::from_secs(3),
            poison_rounds: 5,
        }
    }
}

impl Scale {
    /// Load spread over the scenario's fault window, a third of it starting later.
    fn plan(&self, window: Duration) -> LoadPlan {
        LoadPlan {
            tasks: self.tasks,
            over: window,
            later: window / 2,
            max_sleep_ms: 300,
            functions: vec!["effect".to_owned(), "effect-retry".to_owned()],
        }
    }
}

/// Generous: tasks cut off by a fault settle within a lease, a sweep and three retries.
const SETTLE: Duration = Duration::from_secs(240);

/// The processes of one scenario, its API client and its recorder of side effects.
struct Stage {
    environment: Environment,
    schedulers: Vec<Process>,
    workers: Vec<Process>,
    api: Api,
    recorder: Recorder,
    recovery: Recovery,
}

impl Stage {
    async fn start(cluster: &Cluster, scenario: &str, schedulers: usize, workers: usize) -> Stage {
        let environment = cluster.environment(scenario);
        let mut schedulers: Vec<Process> = (0..schedulers)
            .map(|i| environment.scheduler(&format!("scheduler-{i}")))
            .collect();
        let workers = (0..workers)
            .map(|i| environment.worker(&format!("worker-{i}"), 4))
            .collect();
        let api = Api::new(schedulers.iter().map(Process::base_url).collect());
        // One at a time: the first creates and migrates the database.
        for scheduler in &mut schedulers {
            scheduler.start();
            let bases = [scheduler.base_url()];
            let ready = all_ready(&api.http, &bases, Duration::from_secs(60)).await;
            assert!(ready, "{} became ready", scheduler.name);
        }
        let mut stage = Stage {
            environment,
            schedulers,
            workers,
            api,
            recorder: Recorder::start().await,
            recovery: Recovery::default(),
        };
        for worker in &mut stage.workers {
            worker.start();
        }
        let bases = stage.bases();
        let ready = all_ready(&stage.api.http, &bases, Duration::from_secs(60)).await;
        assert!(ready, "{scenario}: every process became ready");
        let recorder = stage.recorder.url.clone();
        stage
            .api
            .create_effect_function("effect", &recorder, false)
            .await;
        stage
            .api
            .create_effect_function("effect-retry", &recorder, true)
            .await;
        stage
    }

    /// Health addresses of every process.
    fn bases(&self) -> Vec<String> {
        self.schedulers
            .iter()
            .chain(&self.workers)
            .map(Process::base_url)
            .collect()
    }

    /// Waits until everything is ready again after a fault that ended now.
    async fn recover(&mut self, fault: &str) {
        let ended = Instant::now();
        let bases = self.bases();
        let (http, recorder) = (self.api.http.clone(), &self.recorder);
        self.recovery
            .measure(fault, ended, &http, &bases, recorder)
            .await;
    }

    fn load(&self, plan: LoadPlan) -> tokio::task::JoinHandle<Vec<String>> {
        tokio::spawn(drive_load(self.api.clone(), plan))
    }

    /// Audits, reports the figure line, stops everything; returns the violations.
    async fn finish(
        mut self,
        cluster: &Cluster,
        submitted: &[String],
        dead_lettered: u64,
        expected: Expectations,
    ) -> (Figure, Vec<String>) {
        let database = self.environment.database.connect().await;
        let scenario = self.environment.scenario.clone();
        let mut figure = audit(&scenario, &database, &self.recorder, submitted, SETTLE).await;
        figure.dead_lettered = dead_lettered;
        figure.dead_letters_expected = expected.dead_letters;
        figure.recovery = self.recovery.worst;
        figure.unrecovered = std::mem::take(&mut self.recovery.unrecovered);
        self.check_processes(&mut figure).await;
        report(&figure);
        let violations = figure.violations(&expected);
        for process in self.schedulers.iter_mut().chain(&mut self.workers) {
            process.kill();
        }
        cluster.release(self.environment);
        (figure, violations)
    }

    /// Every process must still run and be ready: none needed a hand to recover.
    async fn check_processes(&mut self, figure: &mut Figure) {
        for process in self.schedulers.iter_mut().chain(&mut self.workers) {
            if !process.is_running() {
                figure.unrecovered.push(format!("{} exited", process.name));
            }
        }
        let bases = self.bases();
        if !all_ready(&self.api.http, &bases, Duration::from_secs(60)).await {
            figure
                .unrecovered
                .push("the end of the scenario".to_owned());
        }
    }
}

/// Crash-cut tasks end `failed` with `zombieTaskCleaned`, or `retried` for the function whose
/// retry policy covers it.
fn crash_cut_allowed() -> Expectations {
    Expectations {
        allowed_errors: vec![ZOMBIE],
        dead_letters: 0,
    }
}

/// No task may fail at all.
fn nothing_fails() -> Expectations {
    Expectations {
        allowed_errors: vec![],
        dead_letters: 0,
    }
}

/// Scenario 1: a worker is SIGKILLed every few seconds and restarted, three workers running.
async fn worker_kill(cluster: &mut Cluster) -> Vec<String> {
    let scale = scale();
    let mut stage = Stage::start(cluster, "worker-kill", 1, 3).await;
    let load = stage.load(scale.plan(scale.fault_every * scale.faults as u32));
    for round in 0..scale.faults {
        tokio::time::sleep(scale.fault_every).await;
        let victim = (mix(round as u64) % stage.workers.len() as u64) as usize;
        stage.workers[victim].kill();
        tokio::time::sleep(Duration::from_millis(500)).await;
        stage.workers[victim].start();
        stage.recover("a worker kill").await;
    }
    let submitted = load.await.unwrap_or_default();
    stage
        .finish(cluster, &submitted, 0, crash_cut_allowed())
        .await
        .1
}

/// Scenario 2: one of two schedulers is SIGKILLed while it dispatches and fires schedules.
async fn scheduler_kill(cluster: &mut Cluster) -> Vec<String> {
    let scale = scale();
    let mut stage = Stage::start(cluster, "scheduler-kill", 2, 2).await;
    let schedules = create_schedules(&stage.api, 3).await;
    let load = stage.load(scale.plan(scale.fault_every * scale.faults as u32));
    for round in 0..scale.faults {
        tokio::time::sleep(scale.fault_every).await;
        let victim = round % stage.schedulers.len();
        stage.schedulers[victim].kill();
        tokio::time::sleep(Duration::from_secs(1)).await;
        stage.schedulers[victim].start();
        stage.recover("a scheduler kill").await;
    }
    let last_kill = chrono::Utc::now();
    let submitted = load.await.unwrap_or_default();
    // Let every schedule fire a few more slots after the last kill, then stop them.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in &schedules {
        assert!(
            stage.api.delete(&format!("/schedules/{id}")).await,
            "schedule {id} deleted"
        );
    }
    let database = stage.environment.database.connect().await;
    let mut violations = schedule_violations(&database, &schedules, last_kill).await;
    violations.extend(
        stage
            .finish(cluster, &submitted, 0, nothing_fails())
            .await
            .1,
    );
    violations
}

async fn create_schedules(api: &Api, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for index in 0..count {
        let body = json!({
            "interval": 1,
            "functionName": "effect",
            "data": {"sleepMs": 20, "schedule": index},
            "priority": index,
        });
        let schedule = api
            .post_until_ok("/schedules", &body, Duration::from_secs(30))
            .await;
        let id = schedule.as_ref().and_then(|s| s["id"].as_str());
        ids.push(id.expect("a schedule was created").to_owned());
    }
    ids
}

/// No slot got two tasks, and every schedule kept firing after the last kill.
async fn schedule_violations(
    database: &tokio_postgres::Client,
    schedules: &[String],
    last_kill: chrono::DateTime<chrono::Utc>,
) -> Vec<String> {
    let mut violations = Vec::new();
    let doubled: i64 = database
        .query_one(
            "SELECT count(*) FROM (SELECT 1 FROM tasks WHERE schedule_id IS NOT NULL \
             GROUP BY schedule_id, schedule_slot HAVING count(*) > 1) AS d",
            &[],
        )
        .await
        .expect("count doubled slots")
        .get(0);
    if doubled > 0 {
        violations.push(format!(
            "scheduler-kill: {doubled} schedule slots got two tasks"
        ));
    }
    for id in schedules {
        let fired: i64 = database
            .query_one(
                "SELECT count(*) FROM tasks WHERE schedule_id = $1 AND creation_timestamp > $2",
                &[id, &last_kill],
            )
            .await
            .expect("count the schedule's tasks")
            .get(0);
        if fired == 0 {
            violations.push(format!("scheduler-kill: schedule {id} stopped firing"));
        }
    }
    violations
}

/// Scenario 3: RabbitMQ is stopped and restarted, then its connections are closed, while
/// tasks flow.
async fn broker_restart(cluster: &mut Cluster) -> Vec<String> {
    let scale = scale();
    let mut stage = Stage::start(cluster, "broker-restart", 1, 2).await;
    let window = scale.broker_down * 2 + scale.fault_every * 3;
    let load = stage.load(scale.plan(window));
    tokio::time::sleep(scale.fault_every).await;
    tokio::task::block_in_place(|| cluster.rabbit.stop());
    tokio::time::sleep(scale.broker_down).await;
    tokio::task::block_in_place(|| cluster.rabbit.resume());
    stage.recover("a broker restart").await;
    for _ in 0..scale.faults / 2 {
        tokio::time::sleep(scale.fault_every).await;
        let vhost = stage.environment.vhost.clone();
        tokio::task::block_in_place(|| cluster.rabbit.close_all_connections(&vhost));
        stage.recover("closed broker connections").await;
    }
    let submitted = load.await.unwrap_or_default();
    stage
        .finish(cluster, &submitted, 0, nothing_fails())
        .await
        .1
}

/// Scenario 4: PostgreSQL is restarted while tasks flow. No task may fail: running attempts
/// wait for the database to store their outcome, and the sweeper gives their leases time to
/// be renewed.
async fn database_restart(cluster: &mut Cluster) -> Vec<String> {
    let scale = scale();
    let mut stage = Stage::start(cluster, "database-restart", 1, 2).await;
    let rounds = (scale.faults / 2).max(1);
    let window = (scale.database_down + scale.fault_every * 2) * rounds as u32;
    let load = stage.load(scale.plan(window));
    for _ in 0..rounds {
        tokio::time::sleep(scale.fault_every).await;
        tokio::task::block_in_place(|| cluster.postgres.stop());
        tokio::time::sleep(scale.database_down).await;
        tokio::task::block_in_place(|| cluster.postgres.resume());
        stage.recover("a database restart").await;
    }
    let submitted = load.await.unwrap_or_default();
    stage
        .finish(cluster, &submitted, 0, nothing_fails())
        .await
        .1
}

/// Scenario 5: poison and oversized messages in the task queue and the event exchange, duplicate
/// task messages and duplicate events, while tasks flow.
async fn poison(cluster: &mut Cluster) -> Vec<String> {
    let scale = scale();
    let mut stage = Stage::start(cluster, "poison", 1, 2).await;
    let trigger =
        json!({"eventType": "faults_event", "functionName": "effect", "data": {"sleepMs": 10}});
    let created = stage
        .api
        .post_until_ok("/triggers", &trigger, Duration::from_secs(30))
        .await;
    assert!(created.is_some(), "the trigger was created");
    let load = stage.load(scale.plan(scale.fault_every * 2));
    let channel = broker_channel(&stage.environment.amqp_url).await;
    let mut injected = 0;
    let events = scale.poison_rounds * 4;
    for round in 0..scale.poison_rounds {
        injected += inject_task_poison(&channel).await;
        injected += inject_event_poison(&channel).await;
        for event in round * 4..(round + 1) * 4 {
            publish_valid_event_twice(&channel, event).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let submitted = load.await.unwrap_or_default();
    inject_duplicates(&channel, &submitted).await;
    stage.recover("poison").await;
    let database = stage.environment.database.connect().await;
    let mut violations = event_violations(&database, events).await;
    // Dead letters are counted once everything settled: the audit's settle, then a drain of
    // the dead-letter queue.
    harness::faults::settle(&database, SETTLE).await;
    wait_for_dead_letters(&channel, injected).await;
    let (dead, unexplained) = dead_letters(&channel).await;
    if unexplained > 0 {
        violations.push(format!(
            "poison: {unexplained} dead letters without x-reason"
        ));
    }
    let expected = Expectations {
        allowed_errors: vec![],
        dead_letters: injected,
    };
    violations.extend(stage.finish(cluster, &submitted, dead, expected).await.1);
    violations
}

async fn broker_channel(url: &str) -> lapin::Channel {
    let connection = common::broker::connect(url)
        .await
        .expect("connect to the broker");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    common::broker::declare_topology(&channel)
        .await
        .expect("topology");
    // The connection closes when its last handle drops; keep it for the channel.
    std::mem::forget(connection);
    channel
}

async fn publish(channel: &lapin::Channel, exchange: &str, routing_key: &str, body: &[u8]) {
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            body,
            common::broker::persistent_json(),
        )
        .await
        .expect("publish");
    let confirmation = confirm.await.expect("broker confirm");
    assert!(!confirmation.is_nack(), "the broker took the message");
}

/// Unusable task messages: not JSON, another shape, a bad id (alone, or among several),
/// too large (twice). Returns how many, all of which must be dead-lettered.
async fn inject_task_poison(channel: &lapin::Channel) -> u64 {
    let long_id = json!({"taskId": "a".repeat(5000)}).to_string();
    let huge = vec![b'x'; 10 * 1024 * 1024];
    let one_bad_of_two = json!({
        "taskId": common::id::ObjectId::generate().to_string(),
        "moreTaskIds": ["not-an-id"],
    })
    .to_string();
    let poison: [&[u8]; 6] = [
        b"not json",
        br#"{"unexpected": true}"#,
        br#"{"taskId": "not-an-id"}"#,
        one_bad_of_two.as_bytes(),
        long_id.as_bytes(),
        &huge,
    ];
    for body in poison {
        publish(channel, "", common::broker::TASKS_QUEUE, body).await;
    }
    poison.len() as u64
}

/// Unusable events: not JSON, not an object, no id, no type, too large.
async fn inject_event_poison(channel: &lapin::Channel) -> u64 {
    let large = json!({"id": "big", "type": "faults_event", "content": "x".repeat(300 * 1024)});
    let poison = [
        b"not json".to_vec(),
        b"[1]".to_vec(),
        br#"{"type": "faults_event"}"#.to_vec(),
        br#"{"id": "no-type"}"#.to_vec(),
        large.to_string().into_bytes(),
    ];
    for body in &poison {
        publish(
            channel,
            common::broker::EVENTS_EXCHANGE,
            "faults_event",
            body,
        )
        .await;
    }
    poison.len() as u64
}

/// A valid event, delivered twice as a redelivery would: it must create one task.
async fn publish_valid_event_twice(channel: &lapin::Channel, index: usize) {
    let event = json!({
        "id": format!("faults-event-{index}"),
        "type": "faults_event",
        "content": {"index": index},
        "creation_timestamp": chrono::Utc::now().timestamp_millis(),
    })
    .to_string();
    for _ in 0..2 {
        publish(
            channel,
            common::broker::EVENTS_EXCHANGE,
            "faults_event",
            event.as_bytes(),
        )
        .await;
    }
}

/// Messages for tasks that already ran, and for a task that does not exist: dropped, never
/// run twice, never dead-lettered.
async fn inject_duplicates(channel: &lapin::Channel, submitted: &[String]) {
    let unknown = common::id::ObjectId::generate().to_string();
    for id in submitted.iter().step_by(10).chain([&unknown]) {
        let body = json!({"taskId": id}).to_string();
        publish(channel, "", common::broker::TASKS_QUEUE, body.as_bytes()).await;
    }
}

/// Exactly one task per distinct event.
async fn event_violations(database: &tokio_postgres::Client, events: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut created = 0;
    while Instant::now() < deadline {
        created = database
            .query_one(
                "SELECT count(*) FROM tasks WHERE trigger_id IS NOT NULL",
                &[],
            )
            .await
            .expect("count event tasks")
            .get::<_, i64>(0);
        if created >= events as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if created == events as i64 {
        Vec::new()
    } else {
        vec![format!("poison: {events} events created {created} tasks")]
    }
}

/// Waits until the dead-letter queue holds `expected` messages (or a minute passed), then a
/// little longer so that a surplus would show too.
async fn wait_for_dead_letters(channel: &lapin::Channel, expected: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let queue = channel
            .queue_declare(
                common::broker::DEAD_LETTER_QUEUE.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("inspect the dead-letter queue");
        if u64::from(queue.message_count()) >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Empties the dead-letter queue: (messages, messages without an `x-reason`).
async fn dead_letters(channel: &lapin::Channel) -> (u64, u64) {
    let (mut dead, mut unexplained) = (0, 0);
    while let Some(message) = channel
        .basic_get(
            common::broker::DEAD_LETTER_QUEUE.into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .expect("read the dead-letter queue")
    {
        dead += 1;
        let headers = message
            .delivery
            .properties
            .headers()
            .clone()
            .unwrap_or_default();
        if !headers.inner().contains_key("x-reason") {
            unexplained += 1;
        }
    }
    (dead, unexplained)
}

/// Scenario 6: workers are drained with SIGTERM and replaced one after the other, under load.
async fn rolling_restart(cluster: &mut Cluster) -> Vec<String> {
    let scale = scale();
    let mut stage = Stage::start(cluster, "rolling-restart", 1, 3).await;
    let load = stage.load(scale.plan(scale.fault_every * scale.faults as u32));
    let mut violations = Vec::new();
    for round in 0..scale.faults {
        tokio::time::sleep(scale.fault_every).await;
        let victim = round % stage.workers.len();
        let status = stage.workers[victim].terminate().await;
        if !status.is_some_and(|s| s.success()) {
            violations.push(format!(
                "rolling-restart: a drained worker exited with {status:?}"
            ));
        }
        stage.workers[victim].start();
        stage.recover("a drain").await;
    }
    let submitted = load.await.unwrap_or_default();
    violations.extend(
        stage
            .finish(cluster, &submitted, 0, nothing_fails())
            .await
            .1,
    );
    violations
}

fn selected(scenario: &str) -> bool {
    match std::env::var("FAULTS_ONLY") {
        Ok(only) if !only.is_empty() => only.split(',').any(|s| s.trim() == scenario),
        _ => true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fault_injection_loses_nothing_and_completes_nothing_twice() {
    let started = Instant::now();
    let mut cluster = tokio::task::block_in_place(Cluster::start);
    let mut violations = Vec::new();
    if selected("worker-kill") {
        violations.extend(worker_kill(&mut cluster).await);
    }
    if selected("scheduler-kill") {
        violations.extend(scheduler_kill(&mut cluster).await);
    }
    if selected("broker-restart") {
        violations.extend(broker_restart(&mut cluster).await);
    }
    if selected("database-restart") {
        violations.extend(database_restart(&mut cluster).await);
    }
    if selected("poison") {
        violations.extend(poison(&mut cluster).await);
    }
    if selected("rolling-restart") {
        violations.extend(rolling_restart(&mut cluster).await);
    }
    println!("faults: done in {}s", started.elapsed().as_secs());
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}
