//! Builds and runs the scheduler: migrate, connect, serve. Tests call [`Application::build`]
//! directly to start a real scheduler in-process.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use common::broker::Publisher;
use common::db::{Functions, Lifecycle, Tasks};
use common::metrics::Metrics;
use common::secrets::SecretBox;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::Layer;

use crate::api::auth::{AuthMode, Authenticator};
use crate::api::definition_cache::DefinitionCache;
use crate::api::requester::Requester;
use crate::api::{self, AppState, server};
use crate::background::listener::{self, Wakeups};
use crate::background::triggers::EventConsumer;
use crate::background::{gauges, orphans, outbox_relay, retention, schedules, sweeper};
use crate::config::SchedulerConfig;
use crate::db::{Outbox, Retention, Schedules, Triggers};
use crate::dispatch::{DispatchQueries, Dispatcher};

pub struct Application {
    listener: TcpListener,
    wakeups: Wakeups,
    state: AppState,
    config: SchedulerConfig,
    pool: deadpool_postgres::Pool,
    dispatcher: Dispatcher,
    /// The dispatcher's and the outbox relay's.
    publisher: Arc<Publisher>,
    /// For the check for tasks of deleted functions, on the dispatcher's pool.
    orphans: Lifecycle,
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
        let publisher = Arc::new(Publisher::new(config.amqp.url.clone()));
        let metrics = Arc::new(Metrics::new().with_cluster_gauges());
        let queue_pool = common::db::queue_pool(&config.database)?;
        let tasks = Tasks::new(pool.clone());
        let (dispatcher, dispatch) = Dispatcher::new(
            config.dispatch.clone(),
            publisher.clone(),
            DispatchQueries::new(queue_pool.clone()),
            tasks.clone(),
            metrics.clone(),
        )?;
        let wakeups = Wakeups {
            dispatch: dispatch.clone(),
            outbox: Arc::default(),
            schedules: Arc::default(),
            functions_changed: Arc::default(),
            definitions: DefinitionCache::new(Functions::new(pool.clone(), secrets)),
        };
        Ok(Application {
            listener,
            state: AppState::new(
                pool.clone(),
                tasks,
                dispatch,
                Arc::new(Requester::new(config.amqp.url.clone())),
                metrics,
                auth,
                wakeups.definitions.clone(),
            ),
            dispatcher,
            publisher,
            orphans: Lifecycle::new(queue_pool),
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
        loops.spawn(self.dispatcher.run(stopped.clone()));
        loops.spawn(orphans::run(
            self.orphans,
            wakeups.functions_changed.clone(),
            stopped.clone(),
        ));
        loops.spawn(sweeper::run(
            Lifecycle::new(self.pool.clone()),
            metrics.clone(),
            self.config.dispatch.sweep_interval(),
            stopped.clone(),
        ));
        loops.spawn(
            EventConsumer {
                amqp_url: self.config.amqp.url.clone(),
                triggers: Triggers::new(self.pool.clone()),
                metrics: metrics.clone(),
                dispatch: wakeups.dispatch.clone(),
            }
            .run(stopped.clone()),
        );
        loops.spawn(schedules::run(
            Schedules::new(self.pool.clone()),
            metrics.clone(),
            wakeups.dispatch.clone(),
            wakeups.schedules.clone(),
            stopped.clone(),
        ));
        loops.spawn(retention::run(
            Retention::new(self.pool.clone()),
            self.config.retention.clone(),
            stopped.clone(),
        ));
        loops.spawn(outbox_relay::run(
            Outbox::new(self.pool.clone()),
            self.publisher,
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
