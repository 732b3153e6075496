//! The worker: the data plane of the task service. It consumes due tasks, runs their function
//! in a warm runtime process and stores logs, result and status.

pub mod completions;
pub mod config;
pub mod consumer;
mod definitions;
pub mod execute;
pub mod metrics;
mod patience;
pub mod runtime;
pub mod startup;
