//! A real Prometheus server scrapes both binaries; the work-in-system series is queryable.

use std::time::Duration;

use harness::TestScheduler;
use serde_json::{Value, json};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn prometheus_scrapes_both_binaries() {
    let app = TestScheduler::start().await;
    let worker = app.start_worker(1).await;
    app.create_noop_function("noop").await;
    let (_, task) = app
        .post("/tasks/v1", &json!({"functionName": "noop"}))
        .await;
    app.wait_until_finished(task["id"].as_str().unwrap()).await;

    let directory =
        std::env::temp_dir().join(format!("prometheus-{}", common::id::ObjectId::generate()));
    std::fs::create_dir_all(&directory).unwrap();
    let target = |url: &str| url.trim_start_matches("http://").to_owned();
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: scheduler\n    static_configs:\n      - targets: [\"{}\"]\n  - job_name: worker\n    static_configs:\n      - targets: [\"{}\"]\n",
        target(&app.base_url),
        target(&worker.base_url)
    );
    std::fs::write(directory.join("prometheus.yml"), config).unwrap();
    let port = free_port();
    let mut prometheus = tokio::process::Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            directory.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            directory.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus is installed (tests/run installs it)");

    let query = |expression: &'static str| {
        let http = app.http.clone();
        async move {
            let response = http
                .get(format!("http://127.0.0.1:{port}/api/v1/query"))
                .query(&[("query", expression)])
                .send()
                .await
                .ok()?;
            let body: Value = response.json().await.ok()?;
            let results = body["data"]["result"].as_array()?.clone();
            (!results.is_empty()).then_some(results)
        }
    };
    let mut work_in_system = None;
    let mut workers_up = None;
    for _ in 0..150 {
        work_in_system = query("tasks_work_in_system").await;
        workers_up = query("up{job=\"worker\"} == 1").await;
        if work_in_system.is_some() && workers_up.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = prometheus.kill().await;
    let _ = std::fs::remove_dir_all(&directory);
    let series = work_in_system.expect("the work-in-system series is scraped");
    assert_eq!(series[0]["metric"]["job"], "scheduler");
    assert!(workers_up.is_some(), "the worker is scraped");
    worker.stop().await;
    app.stop().await;
}
