//! The scheduler: the control plane of the task service. A task travels through it in three
//! stages, one folder each:
//!
//! - [`api`]: the REST API under `/tasks/v1`. The HTTP server ([`api::server`]) hands each
//!   request to [`api::authorize`], which asks [`api::auth`] who is calling and what they may
//!   do, then to the route of its resource (one file each). A task created there is handed
//!   to the dispatcher, which stores it; direct executions and API calls go to a worker and
//!   wait for its answer ([`api::requester`]).
//! - [`dispatch`]: chooses the due tasks, highest priority first, and publishes them to the
//!   broker's `tasks` queue, where workers claim them.
//! - [`background`]: the loops that keep the rest going: platform events become tasks
//!   through triggers, schedules fire, the sweeper fails the tasks of dead workers, tasks of
//!   deleted functions fail, the outbox relay publishes `task_failed` events, gauges count
//!   the backlog, and database notifications wake the loops that wait for them.
//!
//! [`db`] holds the tables only the scheduler uses (schedules, triggers, the outbox); those
//! the worker uses too, and every status change of a task, are `common::db`'s. Where an
//! outcome is stored is the worker's business. [`startup`] wires the stages together, and
//! [`config`] is what an operator can set.

pub mod api;
pub mod background;
pub mod config;
pub mod db;
pub mod dispatch;
pub mod startup;
