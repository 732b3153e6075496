//! The scheduler: the control plane of the task service. It serves the REST API and, as the
//! service grows, dispatches due tasks, turns platform events into tasks and fires schedules.

pub mod api;
pub mod auth;
pub mod config;
pub mod dispatch;
pub mod events;
pub mod gauges;
pub mod listener;
pub mod recurring;
pub mod relay;
pub mod requester;
pub mod startup;
pub mod sweeper;
