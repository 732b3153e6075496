//! Everything the scheduler and the worker share: domain types, configuration, the database
//! (pool, migrations, repositories), the broker (connection, topology) and the messages that
//! travel through it, function code archives, secrets, metrics and telemetry. No HTTP server
//! code and no execution code lives here; the list query language is the `rql` crate.

pub mod broker;
pub mod code_archive;
pub mod config;
pub mod db;
pub mod domain;
pub mod id;
pub mod messages;
pub mod metrics;
pub mod reconnect;
pub mod secrets;
pub mod shutdown;
pub mod telemetry;
pub mod time;
