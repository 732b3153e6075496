//! Everything the scheduler and the worker share: domain types, configuration, storage,
//! function code archives and telemetry. No HTTP server code and no execution code lives here.

pub mod broker;
pub mod code;
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
