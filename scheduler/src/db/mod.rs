//! The tables only the scheduler uses: schedules and triggers, which the API keeps and the
//! background loops fire, and the outbox of platform events, which the background relay
//! publishes (tasks' `task_failed` events are written to it by `common::db::lifecycle`, in
//! the transaction that fails the task); and the deletion of what has aged out (`retention`),
//! which only the scheduler runs. The pool and the migrations are `common::db`'s.

pub mod outbox;
pub mod retention;
pub mod schedules;
pub mod triggers;

pub use outbox::Outbox;
pub use retention::Retention;
pub use schedules::Schedules;
pub use triggers::Triggers;
