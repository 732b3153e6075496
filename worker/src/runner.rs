//! Runs what the consumer hands over, each in its slot: a claimed task (look up its function,
//! invoke it, store logs and the outcome) or an API-function call (invoke it, answer the
//! caller, store the request's logs).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use common::db::lifecycle::{Claimed, Completion, FailOutcome, Fence};
use common::db::{ApiRequests, Functions, Lifecycle, StoreError, text};
use common::domain::LogLine;
use common::domain::{FunctionDefinition, Runtime, Task, TaskError, TaskStatus};
use common::messages::{ApiInvocation, ApiOutcome};
use serde_json::Value;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use crate::completions::Completions;
use crate::definition_cache::DefinitionCache;
use crate::metrics::Metrics;
use crate::runtime::RuntimePool;
use crate::runtime::code_cache::CODE_RELEASED;
use crate::runtime::process::{FunctionSpec, InvocationResult};
use common::db::patiently;

/// Largest result a task may store.
pub const MAX_RESULT_BYTES: usize = 256 * 1024;

/// The attempts this worker is running, whose leases it renews.
#[derive(Clone, Default)]
pub struct RunningAttempts(Arc<Mutex<HashSet<(String, i32)>>>);

impl RunningAttempts {
    fn add(&self, id: &str, attempt: i32) {
        if let Ok(mut set) = self.0.lock() {
            set.insert((id.to_owned(), attempt));
        }
    }

    fn remove(&self, id: &str, attempt: i32) {
        if let Ok(mut set) = self.0.lock() {
            set.remove(&(id.to_owned(), attempt));
        }
    }

    pub fn snapshot(&self) -> Vec<(String, i32)> {
        self.0
            .lock()
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Where a synchronous caller waits for the outcome (direct execution).
pub struct ReplyTo {
    channel: lapin::Channel,
    queue: String,
    correlation_id: String,
}

impl ReplyTo {
    pub fn of(channel: &lapin::Channel, delivery: &lapin::message::Delivery) -> Option<ReplyTo> {
        let properties = &delivery.properties;
        Some(ReplyTo {
            channel: channel.clone(),
            queue: properties.reply_to().as_ref()?.to_string(),
            correlation_id: properties.correlation_id().as_ref()?.to_string(),
        })
    }

    /// Answers a direct execution's caller: with the task as stored when it completed, else
    /// with its id alone, and the caller reads what became of it.
    pub(crate) async fn send_task(self, task_id: &str, completed: Option<&Task>) {
        let answer = match completed {
            Some(task) => serde_json::json!({ "taskId": task_id, "task": task }),
            None => serde_json::json!({ "taskId": task_id }),
        };
        self.send(answer.to_string().as_bytes()).await;
    }

    async fn send(self, body: &[u8]) {
        let published = self
            .channel
            .basic_publish(
                "".into(),
                self.queue.as_str().into(),
                lapin::options::BasicPublishOptions::default(),
                body,
                lapin::BasicProperties::default()
                    .with_correlation_id(self.correlation_id.as_str().into()),
            )
            .await;
        if let Err(error) = published {
            tracing::warn!(%error, "could not answer a synchronous caller");
        }
    }
}

/// Runs claimed tasks and API-function calls for every slot of the consumer.
pub struct Runner {
    pub functions: Functions,
    pub(crate) definitions: DefinitionCache,
    pub api_requests: ApiRequests,
    pub lifecycle: Lifecycle,
    pub completions: Completions,
    pub runtimes: RuntimePool,
    pub running: RunningAttempts,
    pub metrics: Arc<Metrics>,
}

impl Runner {
    /// Runs a claimed task in its slot; every log line it produces carries the task id and
    /// function. The slot is given back as soon as the function has returned: storing the
    /// outcome needs no runtime process, and is batched with other attempts'.
    pub async fn run(&self, claimed: Claimed, reply: Option<ReplyTo>, slot: OwnedSemaphorePermit) {
        let span = tracing::info_span!(
            "task",
            task_id = %claimed.task.id,
            function = %claimed.task.function_name,
            attempt = claimed.attempt
        );
        self.run_claimed(claimed, reply, slot)
            .instrument(span)
            .await
    }

    async fn run_claimed(
        &self,
        claimed: Claimed,
        reply: Option<ReplyTo>,
        slot: OwnedSemaphorePermit,
    ) {
        let task_id = claimed.task.id.to_string();
        let attempt = claimed.attempt;
        let function_name = claimed.task.function_name.clone();
        self.running.add(&task_id, attempt);
        let started = std::time::Instant::now();
        let labels = [function_name.as_str()];
        self.metrics.tasks_started.with_label_values(&labels).inc();
        self.metrics.tasks_running.inc();
        let lag = (chrono::Utc::now() - claimed.task.start_timestamp)
            .num_microseconds()
            .unwrap_or(0);
        self.metrics
            .queue_lag
            .with_label_values(&labels)
            .observe(lag.max(0) as f64 / 1e6);
        let (outcome, logs) = self.invoke(&claimed).await;
        drop(slot);
        let finished_at = common::time::now();
        // A waiting caller gets the completed task with the answer, as it is stored, instead
        // of reading it back.
        let completed = match (&outcome, &reply) {
            (Ok(result), Some(_)) => Some(Task {
                status: TaskStatus::Complete,
                result: Some(result.clone()),
                status_changed_timestamp: finished_at,
                update_timestamp: finished_at,
                ..claimed.task
            }),
            _ => None,
        };
        let stored_complete = self
            .store_outcome(
                &task_id,
                attempt,
                &function_name,
                outcome,
                logs,
                finished_at,
            )
            .await;
        self.running.remove(&task_id, attempt);
        self.metrics.tasks_running.dec();
        self.metrics
            .execution_duration
            .with_label_values(&labels)
            .observe(started.elapsed().as_secs_f64());
        if let Some(reply) = reply {
            reply
                .send_task(&task_id, completed.filter(|_| stored_complete).as_ref())
                .await;
        }
    }

    /// Stores the outcome of an attempt, trying again while the database is unreachable.
    /// Giving up at the first error would throw away the result of a function that ran to
    /// the end: its lease would expire and the sweeper would fail the task as a zombie (and a
    /// retry policy would run the work a second time). The attempt stays in `running`
    /// meanwhile, so its lease keeps being renewed; the attempt fence makes a repeated write
    /// harmless.
    ///
    /// Says whether the task is now stored as complete.
    async fn store_outcome(
        &self,
        task_id: &str,
        attempt: i32,
        function_name: &str,
        outcome: Result<Value, TaskError>,
        logs: Vec<LogLine>,
        finished_at: DateTime<Utc>,
    ) -> bool {
        let stored = match outcome {
            Ok(result) => {
                let completion = Completion {
                    task_id: task_id.to_owned(),
                    attempt,
                    result,
                    logs,
                    finished_at,
                };
                self.completions.store(completion).await.inspect(|&stored| {
                    if stored {
                        self.finished(function_name, "complete");
                        tracing::info!(task_id = %task_id, function = %function_name, "task complete");
                    } else {
                        tracing::warn!(task_id = %task_id, "attempt was superseded; result discarded");
                    }
                })
            }
            Err(error) => patiently("store the outcome of a task", || {
                self.store_failure(task_id, attempt, function_name, &error, &logs)
            })
            .await
            .map(|()| false),
        };
        stored.unwrap_or_else(|error| {
            // The lease will expire and the sweeper will settle the task.
            tracing::error!(task_id = %task_id, %error, "could not store the outcome of a task");
            false
        })
    }

    async fn store_failure(
        &self,
        task_id: &str,
        attempt: i32,
        function_name: &str,
        error: &TaskError,
        logs: &[LogLine],
    ) -> Result<(), StoreError> {
        let fence = Fence {
            attempt,
            lease_expired: false,
        };
        match self.lifecycle.fail(task_id, fence, error, logs).await? {
            FailOutcome::Stale => {
                tracing::warn!(task_id = %task_id, "attempt was superseded; error discarded")
            }
            outcome => {
                if let FailOutcome::Retried(_) = outcome {
                    self.finished(function_name, "retried");
                    self.metrics.shared.retries.inc();
                    self.metrics
                        .shared
                        .tasks_created
                        .with_label_values(&["retry"])
                        .inc();
                } else {
                    self.finished(function_name, "failed");
                }
                tracing::info!(task_id = %task_id, function = %function_name, error = %error.name, ?outcome, "task failed")
            }
        }
        Ok(())
    }

    fn finished(&self, function: &str, status: &str) {
        self.metrics
            .tasks_finished
            .with_label_values(&[function, status])
            .inc();
    }

    /// Runs an API-function call: the event comes with the message, the function's raw return
    /// value goes back to the caller (which validates it), and the output lines are stored as
    /// the request's logs.
    pub async fn run_api(
        &self,
        invocation: ApiInvocation,
        reply: Option<ReplyTo>,
        slot: OwnedSemaphorePermit,
    ) {
        let outcome = match self.invoke_api(&invocation).await {
            Ok(value) => ApiOutcome::Returned(value),
            Err(error) => ApiOutcome::Failed(error),
        };
        drop(slot);
        match reply {
            Some(reply) => {
                reply
                    .send(&serde_json::to_vec(&outcome).unwrap_or_default())
                    .await
            }
            None => {
                tracing::warn!(api_request_id = %invocation.api_request_id, "API call without a reply address")
            }
        }
    }

    async fn invoke_api(&self, invocation: &ApiInvocation) -> Result<Value, TaskError> {
        let event = serde_json::to_vec(&invocation.event)
            .map(Bytes::from)
            .map_err(|e| TaskError::invocation("Runtime.InvalidEvent", e.to_string()))?;
        let result = self
            .invoke_function(
                &invocation.function_name,
                invocation.function_version,
                false,
                &invocation.api_request_id,
                event,
            )
            .await?;
        if let Err(error) = self
            .api_requests
            .append_logs(&invocation.api_request_id, &result.logs)
            .await
        {
            tracing::warn!(api_request_id = %invocation.api_request_id, %error, "could not store API request logs");
        }
        let body = result.outcome?;
        serde_json::from_slice(&body).map_err(|e| {
            TaskError::runtime(
                "Runtime.InvalidResponse",
                format!("The function's result is not valid JSON: {e}"),
            )
        })
    }

    /// Loads a function. A claimed task waits out a database outage (`patient`): the attempt
    /// owns the task and keeps its lease while it waits. An API call, whose caller is waiting,
    /// does not.
    async fn function(&self, name: &str, patient: bool) -> Result<FunctionDefinition, TaskError> {
        let loaded = if patient {
            patiently("load the function of a task", || self.functions.get(name)).await
        } else {
            self.functions.get(name).await
        };
        loaded
            .map_err(|e| match e {
                // Not an outage: the function cannot run until its variable is set again.
                StoreError::Secret(reason) => {
                    TaskError::invocation("EnvironmentVariableUnreadable", reason)
                }
                e => TaskError::invocation(
                    "Runtime.Unavailable",
                    format!("could not load the function: {e}"),
                ),
            })?
            .ok_or_else(|| {
                TaskError::invocation(
                    "FunctionNotFound",
                    format!("The function `{name}` does not exist"),
                )
            })
    }

    /// The function `name` at `version` (for a task, as it was when the task was claimed),
    /// from the definitions already loaded when it is among them.
    async fn function_at(
        &self,
        name: &str,
        version: Option<i64>,
        patient: bool,
    ) -> Result<FunctionDefinition, TaskError> {
        if let Some(known) = version.and_then(|version| self.definitions.get(name, version)) {
            return Ok(known);
        }
        let function = self.function(name, patient).await?;
        self.definitions.keep(&function);
        Ok(function)
    }

    /// Runs the function of a task; returns its outcome and output lines.
    async fn invoke(&self, claimed: &Claimed) -> (Result<Value, TaskError>, Vec<LogLine>) {
        let task = &claimed.task;
        let event = match serde_json::to_vec(task) {
            Ok(event) => Bytes::from(event),
            Err(error) => {
                let error = TaskError::invocation("Runtime.InvalidEvent", error.to_string());
                return (Err(error), Vec::new());
            }
        };
        let request_id = format!("{}-{}", task.id, claimed.attempt);
        let invoked = self
            .invoke_function(
                &task.function_name,
                claimed.function_version,
                true,
                &request_id,
                event,
            )
            .await;
        match invoked {
            Ok(result) => (
                result.outcome.and_then(|body| result_of(&body)),
                result.logs,
            ),
            Err(error) => (Err(error), Vec::new()),
        }
    }

    /// Invokes the function `name` (at `version` when this worker has that version loaded).
    /// When its code turns out to be deleted (the function's code was replaced between
    /// reading the definition and loading the code, and the old archive went as unused),
    /// invokes the current definition instead.
    async fn invoke_function(
        &self,
        name: &str,
        version: Option<i64>,
        patient: bool,
        request_id: &str,
        event: Bytes,
    ) -> Result<InvocationResult, TaskError> {
        let function = self.function_at(name, version, patient).await?;
        let result = self
            .invoke_definition(&function, request_id, event.clone())
            .await?;
        if !matches!(&result.outcome, Err(error) if error.name == CODE_RELEASED) {
            return Ok(result);
        }
        let current = self.function_at(name, None, patient).await?;
        self.invoke_definition(&current, request_id, event).await
    }

    async fn invoke_definition(
        &self,
        function: &FunctionDefinition,
        request_id: &str,
        event: Bytes,
    ) -> Result<InvocationResult, TaskError> {
        let spec = spec_of(function)?;
        Ok(self
            .runtimes
            .invoke(&spec, &function.code_sha256, request_id.to_owned(), event)
            .await)
    }
}

/// A task's result: the function's JSON answer, within [`MAX_RESULT_BYTES`], and one the
/// database can store (else the worker could never complete the task).
fn result_of(body: &[u8]) -> Result<Value, TaskError> {
    if body.len() > MAX_RESULT_BYTES {
        return Err(TaskError::runtime(
            "ResultTooLarge",
            format!(
                "The function returned {} bytes; a task result may have at most {MAX_RESULT_BYTES}",
                body.len()
            ),
        ));
    }
    let result: Value = serde_json::from_slice(body).map_err(|e| {
        TaskError::runtime(
            "Runtime.InvalidResponse",
            format!("The function's result is not valid JSON: {e}"),
        )
    })?;
    if !text::json_is_storable(&result) {
        return Err(TaskError::runtime(
            "Runtime.InvalidResponse",
            format!("The function's result {}", text::HOLDS_NUL),
        ));
    }
    Ok(result)
}

fn spec_of(function: &FunctionDefinition) -> Result<FunctionSpec, TaskError> {
    let runtime = Runtime::from_identifier(&function.runtime).ok_or_else(|| {
        TaskError::invocation(
            "Runtime.Unsupported",
            format!("runtime `{}` is not supported", function.runtime),
        )
    })?;
    Ok(FunctionSpec {
        name: function.name.to_string(),
        version: function.version,
        runtime,
        runtime_identifier: function.runtime.clone(),
        entry_point: function.entry_point.clone(),
        time_limit: Duration::from_secs(function.time_limit.max(1) as u64),
        memory_limit_mb: function.memory_limit.max(1) as u64,
        environment: function
            .environment_variables
            .iter()
            .map(|(name, variable)| (name.clone(), variable.value.clone()))
            .collect::<BTreeMap<_, _>>(),
    })
}
