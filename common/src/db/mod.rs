//! PostgreSQL: the connection pool and the migrations (of every table); a repository per table
//! both binaries use, its queries beside it; `lifecycle`, the one owner of a task's status
//! changes; and what repositories share: paged listing (`list`), the log tables (`log_lines`)
//! and text PostgreSQL cannot store (`text`); `patience`, retrying through an outage. The scheduler keeps the repositories of the
//! tables only it uses (schedules, triggers, the outbox it relays) and its dispatcher's queries.

pub mod api_requests;
pub mod functions;
pub mod lifecycle;
pub mod list;
mod log_lines;
pub mod patience;
pub mod task_logs;
pub mod tasks;
pub mod text;

use std::str::FromStr;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use crate::config::DatabaseConfig;

pub use api_requests::ApiRequests;
pub use functions::Functions;
pub use lifecycle::Lifecycle;
pub use list::{ListRequest, Page};
pub use patience::patiently;
pub use task_logs::TaskLogs;
pub use tasks::Tasks;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// An SQL expression that makes the commit of the statement evaluating it (alone in its
/// implicit transaction) return without waiting for its WAL flush: `set_config` with
/// `is_local` lasts until the end of that transaction, and the setting is read at commit.
/// For writes whose loss in a crash is harmless, or that a later durable commit flushes
/// before anything depends on them; one round trip instead of `BEGIN; SET LOCAL …; COMMIT`.
pub const SKIP_FLUSH: &str = "set_config('synchronous_commit', 'off', true)";

/// Any advisory lock key works as long as every scheduler uses the same one.
const MIGRATION_LOCK_KEY: i64 = 0x7461_736b_735f_6462; // "tasks_db"

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database connection pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("database migrations: {0}")]
    Migration(#[from] refinery::Error),
    #[error("database configuration: {0}")]
    Config(String),
    #[error("unexpected data in the database: {0}")]
    Corrupt(String),
    /// A sealed environment variable value that does not open: copied from another function
    /// or variable, damaged, or sealed with a key this process does not have.
    #[error("{0}")]
    Secret(String),
    #[error("the task writer stopped")]
    WriterStopped,
}

impl StoreError {
    /// Postgres cancelled the statement (`database.statement_timeout_ms`).
    pub fn is_timeout(&self) -> bool {
        self.sql_state() == Some(&SqlState::QUERY_CANCELED)
    }

    /// The value could not be stored (class 22, "data exception": out-of-range numbers or
    /// timestamps, characters Postgres cannot hold): the caller's input, not the service.
    pub fn is_data_exception(&self) -> bool {
        self.sql_state()
            .is_some_and(|state| state.code().starts_with("22"))
    }

    pub fn is_unique_violation(&self) -> bool {
        self.sql_state() == Some(&SqlState::UNIQUE_VIOLATION)
    }

    /// Whether the same statement may succeed later: the database was unreachable or
    /// restarting (no SQL state, or classes 08 and 57), or the transaction lost a conflict
    /// (class 40).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Pool(_) | StoreError::Postgres(_) => self.sql_state().is_none_or(|state| {
                ["08", "57", "40"]
                    .iter()
                    .any(|c| state.code().starts_with(c))
            }),
            StoreError::Migration(_)
            | StoreError::Config(_)
            | StoreError::Corrupt(_)
            | StoreError::Secret(_)
            | StoreError::WriterStopped => false,
        }
    }

    fn sql_state(&self) -> Option<&SqlState> {
        match self {
            StoreError::Postgres(e) => e.code(),
            StoreError::Pool(deadpool_postgres::PoolError::Backend(e)) => e.code(),
            _ => None,
        }
    }
}

/// Whether the database answers a query now (for readiness).
pub async fn is_reachable(pool: &Pool) -> bool {
    match pool.get().await {
        Ok(client) => client.simple_query("SELECT 1").await.is_ok(),
        Err(_) => false,
    }
}

/// The one row of an aggregate `sql` without parameters, in one round trip and one
/// transaction (a statement prepared first costs two of each): for queries that loops
/// repeat for ever, where the count of an idle service's statements matters.
pub async fn aggregate_row(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<tokio_postgres::Row, StoreError> {
    client
        .query_typed(sql, &[])
        .await?
        .pop()
        .ok_or_else(|| StoreError::Corrupt(format!("no row from `{sql}`")))
}

/// The first column of `row`, seconds from now to a time (`min(…) - now()`), as a wait:
/// `None` when there is no such time (the minimum of no rows), zero when it has passed.
pub fn time_until(row: &tokio_postgres::Row) -> Result<Option<std::time::Duration>, StoreError> {
    let seconds: Option<f64> = row.try_get(0)?;
    Ok(seconds.map(|s| {
        std::time::Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(std::time::Duration::MAX)
    }))
}

/// A pool of connections to the configured database.
pub fn pool(config: &DatabaseConfig) -> Result<Pool, StoreError> {
    pool_with(config, &[])
}

/// A pool for a process whose every query reaches its rows by key (a worker). Statements
/// are planned once per connection and the plan kept (`force_generic_plan`: the default
/// re-plans each call of a statement whose first custom plans looked cheaper, and planning
/// cost a quarter of a claim's time), and sequential scans are ruled out: a plan made while
/// the tasks table was still empty would otherwise keep scanning it whole after it has
/// grown, until the next analyze.
pub fn key_lookup_pool(config: &DatabaseConfig) -> Result<Pool, StoreError> {
    pool_with(
        config,
        &[
            "-c enable_seqscan=off",
            "-c plan_cache_mode=force_generic_plan",
        ],
    )
}

/// A pool for the dispatcher, whose queries read the head of an index over new tasks in
/// its order, never the whole backlog. The planner estimates from statistics that lag far
/// behind a queue that fills in seconds; believing the backlog small, it would fetch every
/// matching task and sort or aggregate them, on every pass, which slows the dispatcher
/// exactly when the backlog grows. So plans that scan the table whole, sort, or go through
/// a bitmap (which loses the index order) are ruled out.
pub fn queue_pool(config: &DatabaseConfig) -> Result<Pool, StoreError> {
    pool_with(
        config,
        &[
            "-c enable_seqscan=off",
            "-c enable_sort=off",
            "-c enable_bitmapscan=off",
            "-c plan_cache_mode=force_generic_plan",
        ],
    )
}

fn pool_with(config: &DatabaseConfig, settings: &[&str]) -> Result<Pool, StoreError> {
    let mut pg_config = tokio_postgres::Config::from_str(&config.url)
        .map_err(|e| StoreError::Config(format!("database.url: {e}")))?;
    let timeout = format!("-c statement_timeout={}", config.statement_timeout_ms);
    let options: Vec<&str> = pg_config
        .get_options()
        .into_iter()
        .chain([timeout.as_str()])
        .chain(settings.iter().copied())
        .collect();
    let options = options.join(" ");
    pg_config.options(options);
    let manager = Manager::from_config(
        pg_config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(config.pool_size.max(1))
        .build()
        .map_err(|e| StoreError::Config(e.to_string()))
}

/// Creates the database if it does not exist yet, then applies pending migrations. Several
/// schedulers may start at once: creation tolerates a concurrent create, and migrations run
/// under an advisory lock, so the schema is migrated exactly once.
pub async fn prepare(config: &DatabaseConfig) -> Result<(), StoreError> {
    let pg_config = tokio_postgres::Config::from_str(&config.url)
        .map_err(|e| StoreError::Config(format!("database.url: {e}")))?;
    let mut client = match connect(&pg_config).await {
        Err(StoreError::Postgres(e)) if e.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {
            create_database(&pg_config).await?;
            connect(&pg_config).await?
        }
        other => other?,
    };
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    let outcome = embedded::migrations::runner().run_async(&mut client).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    let report = outcome?;
    for migration in report.applied_migrations() {
        tracing::info!(migration = %migration, "applied database migration");
    }
    Ok(())
}

async fn connect(config: &tokio_postgres::Config) -> Result<tokio_postgres::Client, StoreError> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "migration connection closed");
        }
    });
    Ok(client)
}

async fn create_database(config: &tokio_postgres::Config) -> Result<(), StoreError> {
    let name = config
        .get_dbname()
        .ok_or_else(|| StoreError::Config("database.url names no database".into()))?
        .to_owned();
    let mut maintenance = config.clone();
    maintenance.dbname("postgres");
    let client = connect(&maintenance).await?;
    // Identifiers cannot be bound as parameters; quoting doubles any `"` so the name stays one
    // identifier whatever it contains.
    let statement = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
    match client.batch_execute(&statement).await {
        Ok(()) => {
            tracing::info!(database = %name, "created database");
            Ok(())
        }
        Err(e) if e.code() == Some(&SqlState::DUPLICATE_DATABASE) => Ok(()),
        // Two concurrent CREATE DATABASE can also collide on the catalog's unique index.
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
