//! The integration and end-to-end suite, one test binary with a module per area: the real
//! scheduler and worker (in-process or as binaries) against the real PostgreSQL and RabbitMQ,
//! each test on a database and a virtual host of its own, so tests run in parallel. The fault
//! suite (`tests/tests/faults.rs`) is a binary of its own, run by `tests/faults`.
//!
//! `TEST_LOG=debug cargo test -p tests --test suite -- <filter> --nocapture` shows the services'
//! logs of the tests it runs.

// The REST API, call by call.
mod api_functions;
mod auth;
mod functions_api;
mod hostile_input;
mod openapi_fuzz;
mod rql_api;
mod schedules_api;
mod tasks_api;

// Tasks from their sources to their outcome.
mod direct_execution;
mod examples;
mod execution;
mod schedules_firing;
mod triggers;

// What a function may do, and may not.
mod isolation;
mod network;
mod sandbox;
mod secrets;

// Running the service: processes, metrics, outages.
mod drain;
mod idle;
mod local_run;
mod metrics;
mod prometheus;
mod reconnection;
mod restarts;
mod retention;
mod service;
