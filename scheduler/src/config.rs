//! The scheduler's configuration (see `common::config` for how it is loaded).

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use common::config::{AmqpConfig, DatabaseConfig, LogConfig};
use common::secrets::SecretsConfig;

use crate::api::auth::AuthConfig;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SchedulerConfig {
    pub database: DatabaseConfig,
    pub amqp: AmqpConfig,
    pub http: HttpConfig,
    pub dispatch: DispatchConfig,
    pub log: LogConfig,
    pub auth: AuthConfig,
    pub secrets: SecretsConfig,
    pub retention: RetentionConfig,
}

/// What the scheduler deletes as it ages (see docs/operations.md, Retention).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Finished tasks (with their logs) and API requests (with theirs) older than this many
    /// days are deleted; 0 keeps everything.
    pub days: u32,
    /// How often the scheduler looks for what has aged out.
    pub interval_ms: u64,
    /// Most tasks, or API requests, one deleting transaction removes.
    pub batch: i64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            days: 30,
            interval_ms: 600_000,
            batch: 1_000,
        }
    }
}

impl RetentionConfig {
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.max(1))
    }

    /// At least one row per transaction, and few enough to hold no lock for long.
    pub fn batch(&self) -> i64 {
        self.batch.clamp(1, 10_000)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the API, `/metrics`, `/healthz` and `/readyz`.
    pub listen: SocketAddr,
    /// Most connections served at once (at most half the process's open-files limit);
    /// beyond it, connections are closed at once, health probes excepted.
    pub max_connections: usize,
    /// Longest a client may take to send a request head, and to send the next one on a
    /// keep-alive connection, before the connection is closed.
    pub header_read_timeout_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_connections: 4096,
            header_read_timeout_ms: 10_000,
        }
    }
}

impl HttpConfig {
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms.max(1))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchConfig {
    /// Most due tasks published to the broker but not yet claimed. Small keeps the priority
    /// order strict under a backlog; large keeps many workers busy.
    pub window: i64,
    /// Most tasks taken from Postgres in one statement.
    pub batch: i64,
    /// Most tasks named by one message, when more tasks are due than the window has room
    /// for: the broker's work is per message, whatever it holds. 1 to 100.
    pub tasks_per_message: usize,
    /// A published task still unclaimed after this long is published again (lost message).
    pub redispatch_after_ms: u64,
    /// Longest the dispatcher sleeps without a notification (a safety net, not the trigger).
    pub max_sleep_ms: u64,
    /// How often the sweeper looks for tasks whose lease expired.
    pub sweep_interval_ms: u64,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            window: 64,
            batch: 256,
            tasks_per_message: 8,
            redispatch_after_ms: 30_000,
            max_sleep_ms: 15_000,
            sweep_interval_ms: 5_000,
        }
    }
}

impl DispatchConfig {
    pub fn redispatch_after(&self) -> Duration {
        Duration::from_millis(self.redispatch_after_ms)
    }

    pub fn max_sleep(&self) -> Duration {
        Duration::from_millis(self.max_sleep_ms.max(1))
    }

    /// Keeps a message of 24-character ids within what a worker accepts.
    pub fn tasks_per_message(&self) -> usize {
        self.tasks_per_message.clamp(1, 100)
    }

    pub fn sweep_interval(&self) -> Duration {
        Duration::from_millis(self.sweep_interval_ms.max(1))
    }
}
