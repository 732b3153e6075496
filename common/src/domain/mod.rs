//! The resources of the API as the rest of the code sees them, with their invariants.

pub mod function;
pub mod log_line;
pub mod priority;
pub mod schedule;
pub mod task;
pub mod trigger;

pub use function::{
    EnvironmentVariable, ExecutionOptions, FunctionDefinition, FunctionName, PermissionMode,
    RetryPolicy, Runtime,
};
pub use log_line::LogLine;
pub use priority::Priority;
pub use schedule::{Recurrence, Schedule};
pub use task::{Task, TaskError, TaskErrorType, TaskSource, TaskStatus};
pub use trigger::Trigger;
