//! Builds and runs the scheduler: migrate, connect, serve. Tests call [`Application::build`]
//! directly to start a real scheduler in-process.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;
use tower::Layer;

use std::sync::Arc;

use common::broker::Publisher;
use common::db::{DispatchQueries, Functions, Lifecycle, Outbox};
use common::secrets::SecretBox;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::api::{self, AppState};
use crate::auth::{AuthMode, Authenticator};
use crate::config::SchedulerConfig;
use crate::dispatch::{Dispatcher, FastLane, Outlet};
use crate::events::EventConsumer;
use crate::function_cache::FunctionCache;
use crate::listener::{self, Wakeups};
use crate::requester::Requester;
use crate::timer::PreciseTimer;
use crate::{gauges, recurring, relay, server, sweeper};
use common::metrics::Metrics;

pub struct Application {
    listener: TcpListener,
    wakeups: Wakeups,
    state: AppState,
    config: SchedulerConfig,
    pool: deadpool_postgres::Pool,
    /// How the dispatcher and the API's fast lane publish due tasks; its publisher is the
    /// outbox relay's too.
    outlet: Outlet,
}

impl Application {
    /// Prepares the database (created if missing, migrated) and binds the HTTP listener.
    pub async fn build(config: SchedulerConfig) -> anyhow::Result<Application> {
        common::db::prepare(&config.database)
            .await
            .context("preparing the database")?;
        let auth = Authenticator::from_config(&config.auth)?;
        if config.auth.mode == AuthMode::None {
            tracing::warn!(
                "auth.mode = \"none\": EVERY CALLER MAY DO EVERYTHING. For local development only; \
                 set TASKS__AUTH__MODE to `jwt` or `headers` anywhere else"
            );
        }
        let secrets = secret_box(&config)?;
        let pool = common::db::pool(&config.database)?;
        let listener = TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("binding http.listen = {}", config.http.listen))?;
        let wakeups = Wakeups {
            tasks: Arc::default(),
            outbox: Arc::default(),
            function_cache: FunctionCache::new(Functions::new(pool.clone(), secrets)),
        };
        let publisher = Arc::new(Publisher::new(config.amqp.url.clone()));
        let metrics = Arc::new(Metrics::new().with_cluster_gauges());
        let outlet = Outlet::new(
            publisher,
            DispatchQueries::new(common::db::queue_pool(&config.database)?),
            wakeups.tasks.clone(),
            metrics.clone(),
        );
        let fast_lane = Arc::new(FastLane::new(outlet.clone()));
        Ok(Application {
            listener,
            state: AppState::new(
                pool.clone(),
                Arc::new(Requester::new(config.amqp.url.clone())),
                metrics,
                auth,
                wakeups.function_cache.clone(),
                wakeups.tasks.clone(),
                fast_lane,
            ),
            outlet,
            wakeups,
            config,
            pool,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Runs the API and the background loops until `shutdown` completes, then finishes the
    /// requests in flight and stops the loops.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop, stopped) = watch::channel(false);
        let wakeups = self.wakeups.clone();
        let publisher = self.outlet.publisher.clone();
        let metrics = self.state.metrics.clone();
        let mut loops = JoinSet::new();
        loops.spawn(gauges::run(
            self.pool.clone(),
            metrics.clone(),
            stopped.clone(),
        ));
        loops.spawn(listener::run(
            self.config.database.url.clone(),
            wakeups.clone(),
        ));
        loops.spawn(
            Dispatcher {
                outlet: self.outlet.clone(),
                config: self.config.dispatch.clone(),
                fast_lane: self.state.fast_lane.clone(),
                timer: PreciseTimer::start()?,
            }
            .run(stopped.clone()),
        );
        loops.spawn(sweeper::run(
            Lifecycle::new(self.pool.clone()),
            metrics.clone(),
            self.config.dispatch.sweep_interval(),
            stopped.clone(),
        ));
        loops.spawn(
            EventConsumer {
                amqp_url: self.config.amqp.url.clone(),
                triggers: common::db::Triggers::new(self.pool.clone()),
                metrics: metrics.clone(),
                dispatch: wakeups.tasks.clone(),
            }
            .run(stopped.clone()),
        );
        loops.spawn(recurring::run(
            common::db::Schedules::new(self.pool.clone()),
            metrics.clone(),
            wakeups.tasks.clone(),
            stopped.clone(),
        ));
        loops.spawn(relay::run(
            Outbox::new(self.pool.clone()),
            publisher,
            wakeups.outbox.clone(),
            stopped,
        ));

        let app = (
            axum::middleware::map_request(api::check_request_size),
            axum::middleware::map_request(api::trim_trailing_slash),
        )
            .layer(api::router(self.state));
        let limits = server::Limits::from_config(&self.config.http);
        server::serve(self.listener, app, limits, shutdown).await;
        let _ = stop.send(true);
        loops.abort_all();
        while loops.join_next().await.is_some() {}
        Ok(())
    }
}

/// The sealer of function environment variables. Values are stored in clear only where every
/// caller may do everything anyway (`auth.mode = "none"`).
fn secret_box(config: &SchedulerConfig) -> anyhow::Result<Arc<SecretBox>> {
    let secrets = SecretBox::from_config(&config.secrets)?;
    if !secrets.has_key() {
        if config.auth.mode != AuthMode::None {
            anyhow::bail!(
                "configuration: secrets.key (TASKS__SECRETS__KEY) is required to store function \
                 environment variables encrypted; generate one with \
                 `echo \"k1:$(head -c 32 /dev/urandom | base64)\"`"
            );
        }
        tracing::warn!(
            "secrets.key is not set: function environment variables are stored unencrypted"
        );
    }
    Ok(Arc::new(secrets))
}

/// `scheduler reseal-secrets`: after a key rotation, reseals every stored environment
/// variable value with the current key, so the previous key can be removed.
pub async fn reseal_secrets(config: &SchedulerConfig) -> anyhow::Result<u64> {
    let secrets = secret_box(config)?;
    let pool = common::db::pool(&config.database)?;
    Ok(common::db::Functions::new(pool, secrets)
        .reseal_environment()
        .await?)
}

/// Runs the scheduler until SIGTERM or Ctrl-C.
pub async fn run(config: SchedulerConfig) -> anyhow::Result<()> {
    let application = Application::build(config).await?;
    tracing::info!(
        "scheduler ready: API at http://{}/tasks/v1 (OpenAPI document at /tasks/v1/openapi.json)",
        application.local_addr()
    );
    application.run_until(common::shutdown::signal()).await?;
    tracing::info!("scheduler stopped");
    Ok(())
}
