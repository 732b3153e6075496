//! RabbitMQ and PostgreSQL restarts while tasks flow, on instances the test starts itself:
//! every task completes and both binaries report ready again.

use std::time::Duration;

use harness::private::{PrivatePostgres, PrivateRabbit};
use harness::{TestDatabase, TestScheduler, TestWorker, wait_for_readiness};

#[tokio::test]
async fn a_rabbitmq_restart_loses_no_task() {
    let mut rabbit = PrivateRabbit::start();
    let url = rabbit.url();
    let app = TestScheduler::start_with(|config| config.amqp.url = url.clone()).await;
    let url = rabbit.url();
    let worker = TestWorker::start(&app, |config| {
        config.amqp.url = url;
        config.worker.concurrency = 2;
    })
    .await;
    app.create_noop_function("noop").await;
    let before = app.create_tasks("noop", 10).await;
    app.assert_all_complete(&before).await;

    rabbit.stop();
    wait_for_readiness(&app.http, &worker.base_url, 503).await;
    let during = app.create_tasks("noop", 10).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    rabbit.resume();
    let after = app.create_tasks("noop", 10).await;
    app.assert_all_complete(&during).await;
    app.assert_all_complete(&after).await;
    wait_for_readiness(&app.http, &app.base_url, 200).await;
    wait_for_readiness(&app.http, &worker.base_url, 200).await;
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_postgres_restart_loses_no_task() {
    let mut postgres = PrivatePostgres::start();
    let app = TestScheduler::start_on(TestDatabase::on(&postgres.server_url()), |_| {}).await;
    let worker = app.start_worker(2).await;
    app.create_noop_function("noop").await;
    let before = app.create_tasks("noop", 10).await;

    postgres.stop();
    wait_for_readiness(&app.http, &app.base_url, 503).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    postgres.resume();
    let after = app.create_tasks("noop", 10).await;
    app.assert_all_complete(&before).await;
    app.assert_all_complete(&after).await;
    wait_for_readiness(&app.http, &app.base_url, 200).await;
    wait_for_readiness(&app.http, &worker.base_url, 200).await;
    worker.stop().await;
    app.stop().await;
}
