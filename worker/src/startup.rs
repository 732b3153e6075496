//! Builds and runs a worker: consume due tasks, run them, serve health endpoints.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use common::secrets::SecretBox;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::routing::get;
use axum::{Json, Router};
use common::db::{ApiRequests, Functions, Lifecycle};
use deadpool_postgres::Pool;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::completions::Completions;
use crate::config::WorkerConfig;
use crate::consumer::{self, Consumer};
use crate::metrics::Metrics;
use crate::runner::{Runner, RunningAttempts};
use crate::runtime::code_cache::{CodeCache, ReleasedCode, code_root};
use crate::runtime::sandbox::Sandbox;
use crate::runtime::{RuntimeMetrics, RuntimePool};

pub struct Worker {
    listener: TcpListener,
    pool: Pool,
    config: WorkerConfig,
    functions: Functions,
    runtimes: RuntimePool,
    metrics: Arc<Metrics>,
}

impl Worker {
    pub async fn build(config: WorkerConfig) -> anyhow::Result<Worker> {
        if config.worker.concurrency == 0 {
            anyhow::bail!("configuration: worker.concurrency must be at least 1");
        }
        let pool = common::db::key_lookup_pool(&config.database)?;
        let secrets = Arc::new(SecretBox::from_config(&config.secrets)?);
        let functions = Functions::new(pool.clone(), secrets);
        let code_root = code_root(&config.worker.cache_dir, &config.database.url);
        let code = CodeCache::new(code_root.clone(), functions.clone());
        let metrics = Arc::new(Metrics::new());
        // One sandbox per process the worker may keep: the busy ones and the warm ones.
        let sandbox = Sandbox::prepare(
            &config.worker.sandbox,
            &config.worker.cache_dir,
            &code_root,
            config.worker.concurrency + config.worker.max_idle_processes,
            &service_addresses(&config).await,
        )?;
        let runtimes = RuntimePool::new(
            &config.worker.cache_dir,
            code,
            config.worker.max_idle_processes,
            RuntimeMetrics::new(metrics.shared.registry()),
            sandbox,
        )
        .with_context(|| {
            format!(
                "preparing worker.cache_dir = {}",
                config.worker.cache_dir.display()
            )
        })?;
        let listener = TcpListener::bind(config.metrics.listen)
            .await
            .with_context(|| format!("binding metrics.listen = {}", config.metrics.listen))?;
        Ok(Worker {
            listener,
            pool,
            functions,
            config,
            runtimes,
            metrics,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Runs until `shutdown` completes: stops taking tasks, lets running ones finish, exits.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop, stopped) = watch::channel(false);
        // Lease renewal outlives consuming: running tasks keep their leases while draining.
        let (stop_loops, loops_stopped) = watch::channel(false);
        let lifecycle = Lifecycle::new(self.pool.clone());
        let running = RunningAttempts::default();
        let lease = self.config.worker.lease();
        let idle_time = std::time::Duration::from_millis(self.config.worker.idle_process_ms);
        let runner = Arc::new(Runner {
            functions: self.functions,
            definitions: Default::default(),
            api_requests: ApiRequests::new(self.pool.clone()),
            lifecycle: lifecycle.clone(),
            completions: Completions::start(lifecycle.clone()),
            runtimes: self.runtimes,
            running: running.clone(),
            metrics: self.metrics.clone(),
        });
        let mut loops = JoinSet::new();
        loops.spawn(consumer::renew_leases(
            lifecycle.clone(),
            running,
            lease,
            loops_stopped.clone(),
        ));
        let reaper = runner.clone();
        let mut reaper_stop = loops_stopped.clone();
        loops.spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(idle_time.min(std::time::Duration::from_secs(10))) => reaper.runtimes.reap(idle_time),
                    _ = common::shutdown::stopped(&mut reaper_stop) => return,
                }
            }
        });
        loops.spawn(delete_released_code(
            runner.clone(),
            self.config.worker.released_code_grace(),
            loops_stopped.clone(),
        ));
        let consuming = Arc::new(AtomicUsize::new(0));
        let consumer = tokio::spawn(
            Consumer {
                amqp_url: self.config.amqp.url.clone(),
                concurrency: self.config.worker.concurrency,
                lease,
                drain_grace: std::time::Duration::from_millis(self.config.worker.drain_grace_ms),
                lifecycle,
                runner,
                connected: consuming.clone(),
            }
            .run(stopped.clone()),
        );

        let app = Router::new()
            .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
            .route("/readyz", get(ready))
            .route("/metrics", get(metrics))
            .with_state(Health {
                pool: self.pool,
                metrics: self.metrics,
                consuming,
            });
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                let _ = stop.send(true);
            })
            .await
            .context("serving health endpoints");
        let _ = consumer.await;
        let _ = stop_loops.send(true);
        loops.abort_all();
        while loops.join_next().await.is_some() {}
        served
    }
}

#[derive(Clone)]
struct Health {
    pool: Pool,
    metrics: Arc<Metrics>,
    consuming: Arc<AtomicUsize>,
}

async fn metrics(
    State(health): State<Health>,
) -> ([(header::HeaderName, &'static str); 1], String) {
    health.metrics.shared.observe_pool(&health.pool);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        health.metrics.shared.render(),
    )
}

/// Postgres answers and the worker is consuming from RabbitMQ.
async fn ready(State(health): State<Health>) -> (StatusCode, Json<Value>) {
    let database = common::db::is_reachable(&health.pool).await;
    let broker = health.consuming.load(Ordering::Relaxed) == crate::consumer::QUEUES.len();
    let status = if database && broker {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"database": database, "broker": broker})),
    )
}

pub async fn run(
    config: WorkerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let worker = Worker::build(config).await?;
    tracing::info!(
        "worker ready: health at http://{}/healthz",
        worker.local_addr()
    );
    worker.run_until(shutdown).await?;
    tracing::info!("worker stopped");
    Ok(())
}

/// Longest time between two looks for unpacked code no function uses any more.
const RELEASED_CODE_CHECK: std::time::Duration = std::time::Duration::from_secs(60);

/// Deletes the unpacked code no function uses any more, `grace` after it was released, until
/// `stop`.
async fn delete_released_code(
    runner: Arc<Runner>,
    grace: std::time::Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut released = ReleasedCode::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep((grace / 2).min(RELEASED_CODE_CHECK)) => {}
            _ = common::shutdown::stopped(&mut stop) => return,
        }
        match runner
            .runtimes
            .delete_released_code(&mut released, grace)
            .await
        {
            Ok(0) => {}
            Ok(deleted) => {
                tracing::info!(
                    directories = deleted,
                    "deleted function code no function uses any more"
                )
            }
            Err(error) => tracing::warn!(%error, "could not clean up the function code cache"),
        }
    }
}

/// The addresses of the worker's database and broker, which function processes must not reach.
/// A host that does not resolve now is left out: the worker cannot reach it either, and says so
/// when it connects.
async fn service_addresses(config: &WorkerConfig) -> Vec<std::net::IpAddr> {
    let mut endpoints: Vec<(String, u16)> = Vec::new();
    if let Ok(database) = config.database.url.parse::<tokio_postgres::Config>() {
        let ports = database.get_ports();
        for (index, host) in database.get_hosts().iter().enumerate() {
            if let tokio_postgres::config::Host::Tcp(host) = host {
                let port = ports.get(index).or(ports.first()).copied().unwrap_or(5432);
                endpoints.push((host.clone(), port));
            }
        }
    }
    if let Ok(broker) = config.amqp.url.parse::<lapin::uri::AMQPUri>() {
        endpoints.push((broker.authority.host, broker.authority.port));
    }
    let mut addresses = Vec::new();
    for (host, port) in endpoints {
        match tokio::net::lookup_host((host.as_str(), port)).await {
            Ok(found) => addresses.extend(found.map(|address| address.ip())),
            Err(error) => {
                tracing::warn!(%host, %error, "could not resolve a service host to keep functions off it")
            }
        }
    }
    addresses
}
