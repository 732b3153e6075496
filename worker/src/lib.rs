//! The worker: the data plane of the task service. A message from the broker goes to
//! `consumer`, which takes it from the `tasks` or `tasks.sync` queue and claims its tasks;
//! `runner` loads each task's function (kept in `definition_cache`), has `runtime` run it in
//! a warm function process (speaking the Lambda Runtime API, inside its `runtime::sandbox`),
//! and stores the logs and the outcome (a completed attempt's through `completions`, in
//! batches). `startup` builds a worker from its `config` and serves its `metrics`.

pub mod completions;
pub mod config;
pub mod consumer;
mod definition_cache;
pub mod metrics;
pub mod runner;
pub mod runtime;
pub mod startup;
