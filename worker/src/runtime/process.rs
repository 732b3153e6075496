//! One function process: spawned in its sandbox (see `sandbox`) with a clean environment in its
//! own process group, talking to its own Runtime API server; invoked one event at a time.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use common::domain::LogLine;
use common::domain::{Runtime, TaskError, TaskErrorType};
use tokio::sync::{oneshot, watch};

use super::api::{Invocation, Reply, RuntimeApi};
use super::output::OutputCapture;
use super::sandbox::{Cell, Sandbox};

/// What the worker knows about the function a process runs.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    pub name: String,
    pub version: i64,
    pub runtime: Runtime,
    pub runtime_identifier: String,
    pub entry_point: String,
    pub time_limit: Duration,
    pub memory_limit_mb: u64,
    pub environment: BTreeMap<String, String>,
}

/// Where the project's own bootstraps live on disk.
#[derive(Debug, Clone)]
pub struct Bootstraps {
    /// The directory holding them, readable by every function process.
    pub directory: PathBuf,
    pub python: PathBuf,
    pub node: PathBuf,
}

/// The result of one invocation.
#[derive(Debug)]
pub struct InvocationResult {
    pub outcome: Result<Bytes, TaskError>,
    pub logs: Vec<LogLine>,
    /// False when the process is gone or must not be reused.
    pub reusable: bool,
}

pub struct FunctionProcess {
    pgid: i32,
    api: RuntimeApi,
    exited: watch::Receiver<Option<String>>,
    output: OutputCapture,
    memory_limit_mb: u64,
    /// Kills for lack of memory in the process's control group already blamed on an
    /// invocation.
    memory_kills_seen: u64,
    /// Dropped last: retiring it kills whatever is left under the process's uid.
    cell: Cell,
}

impl FunctionProcess {
    /// Starts the function's runtime in `cell`, which the process keeps until it ends.
    pub async fn spawn(
        spec: &FunctionSpec,
        code_dir: &Path,
        bootstraps: &Bootstraps,
        sandbox: &Sandbox,
        cell: Cell,
    ) -> Result<FunctionProcess, TaskError> {
        let api = RuntimeApi::start(&spec.name, cell.uid(), sandbox.runtime_api_mark())
            .await
            .map_err(|e| {
                TaskError::invocation(
                    "Runtime.StartFailed",
                    format!("could not start the runtime API: {e}"),
                )
            })?;
        let (program, args) = launch(spec, code_dir, bootstraps)?;
        let mut sandboxed = sandbox
            .command(
                &cell,
                &program,
                &args,
                code_dir,
                &bootstraps.directory,
                spec.memory_limit_mb,
            )
            .map_err(|e| {
                TaskError::invocation(
                    "Runtime.Unavailable",
                    format!("could not prepare the sandbox: {e}"),
                )
            })?;
        sandboxed
            .command
            .env_clear()
            .envs(&spec.environment)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .env("TZ", ":UTC")
            .env("HOME", cell.home())
            .env("TMPDIR", cell.home())
            .env("AWS_LAMBDA_RUNTIME_API", api.address.to_string())
            .env("_HANDLER", &spec.entry_point)
            .env("LAMBDA_TASK_ROOT", code_dir)
            .env(
                "AWS_EXECUTION_ENV",
                format!("AWS_Lambda_{}", spec.runtime_identifier),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", &spec.name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", spec.version.to_string())
            .env(
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                spec.memory_limit_mb.to_string(),
            )
            .env(
                "AWS_LAMBDA_FUNCTION_TIMEOUT",
                spec.time_limit.as_secs().to_string(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = sandboxed.command.spawn().map_err(|e| {
            TaskError::invocation(
                "Runtime.InvalidEntrypoint",
                format!(
                    "could not start the `{}` runtime: {e}",
                    spec.runtime_identifier
                ),
            )
        })?;
        let pgid = child.id().map_or(0, |id| id as i32);

        let mut output = OutputCapture::default();
        if let Some(stdout) = child.stdout.take() {
            output.attach(stdout);
        }
        if let Some(stderr) = child.stderr.take() {
            output.attach(stderr);
        }
        let (exit_sender, exited) = watch::channel(None);
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(status) => describe_exit(status),
                Err(e) => format!("could not be waited for: {e}"),
            };
            let _ = exit_sender.send(Some(status));
        });
        Ok(FunctionProcess {
            pgid,
            api,
            exited,
            output,
            memory_limit_mb: spec.memory_limit_mb,
            memory_kills_seen: 0,
            cell,
        })
    }

    pub fn is_alive(&self) -> bool {
        self.exited.borrow().is_none()
    }

    /// Runs one invocation. On a time-out, a crash or an init error the process is killed
    /// and reported as not reusable.
    pub async fn invoke(
        &mut self,
        request_id: String,
        event: Bytes,
        time_limit: Duration,
    ) -> InvocationResult {
        let deadline = chrono::Utc::now() + time_limit;
        let (reply, answer) = oneshot::channel();
        let picked_up = Arc::new(AtomicBool::new(false));
        let invocation = Invocation {
            request_id,
            event,
            deadline_epoch_ms: deadline.timestamp_millis(),
            reply,
            picked_up: picked_up.clone(),
        };
        if self.api.invocations.send(invocation).await.is_err() {
            let error = TaskError::invocation("Runtime.ExitError", "the runtime API closed");
            return self.finish(Err(error)).await;
        }
        let mut exited = self.exited.clone();
        let outcome = tokio::select! {
            answer = answer => match answer {
                Ok(Reply::Response(body)) => Ok(body),
                Ok(Reply::Error { error_type, message }) => Err(self.classify_handler_error(error_type, message)),
                Err(_) => Err(TaskError::runtime("Runtime.ExitError", "the invocation was dropped")),
            },
            init = &mut self.api.init_error => {
                let error = init.map(|e| TaskError {
                    kind: TaskErrorType::Invocation,
                    name: e.error_type,
                    message: e.message,
                });
                Err(error.unwrap_or_else(|_| TaskError::runtime("Runtime.ExitError", "the function process stopped")))
            },
            status = exited.wait_for(Option::is_some) => {
                let status = status.ok().and_then(|s| s.clone()).unwrap_or_default();
                Err(self.classify_exit(&status, picked_up.load(Ordering::Acquire)))
            },
            _ = tokio::time::sleep(time_limit) => Err(TaskError::runtime(
                "TimeLimitExceeded",
                format!("The function did not finish within its time limit of {} s and was stopped", time_limit.as_secs()),
            )),
        };
        self.finish(outcome).await
    }

    async fn finish(&mut self, outcome: Result<Bytes, TaskError>) -> InvocationResult {
        let outcome = self.blame_memory(outcome);
        // A handler error leaves the process healthy; anything else ends it.
        let reusable = match &outcome {
            Ok(_) => self.is_alive(),
            Err(error) => {
                error.kind == TaskErrorType::Runtime
                    && !matches!(
                        error.name.as_str(),
                        "TimeLimitExceeded" | "MemoryLimitExceeded" | "Runtime.ExitError"
                    )
                    && self.is_alive()
            }
        };
        if !reusable {
            self.kill();
        }
        let logs = self.output.collect().await;
        InvocationResult {
            outcome,
            logs,
            reusable,
        }
    }

    /// A failure during which the kernel killed a process of the function's control group
    /// for lack of memory is that, whatever the runtime said.
    fn blame_memory(&mut self, outcome: Result<Bytes, TaskError>) -> Result<Bytes, TaskError> {
        let Err(error) = outcome else {
            return outcome;
        };
        let kills = self.cell.memory_kills();
        if kills <= self.memory_kills_seen || error.name == "MemoryLimitExceeded" {
            return Err(error);
        }
        self.memory_kills_seen = kills;
        Err(self.memory_exceeded("the kernel stopped a process of the function that needed more"))
    }

    fn classify_handler_error(&self, error_type: String, message: String) -> TaskError {
        if error_type == "MemoryError"
            || error_type == "RangeError" && message.contains("Array buffer allocation failed")
        {
            return self.memory_exceeded(&message);
        }
        TaskError {
            kind: TaskErrorType::Runtime,
            name: error_type,
            message,
        }
    }

    /// Names the failure of a process that exited during an invocation. Exiting before
    /// taking the invocation means the handler never ran: an invocation error.
    fn classify_exit(&self, status: &str, picked_up: bool) -> TaskError {
        let recent = self
            .output
            .buffer
            .lock()
            .map(|b| b.tail_text(20))
            .unwrap_or_default();
        let memory_signs = [
            "heap out of memory",
            "bad_alloc",
            "MemoryError",
            "Cannot allocate memory",
            "allocation failed",
        ];
        if memory_signs.iter().any(|sign| recent.contains(sign)) {
            return self.memory_exceeded(status);
        }
        let message = format!("The function process exited unexpectedly: {status}");
        if picked_up {
            TaskError::runtime("Runtime.ExitError", message)
        } else {
            TaskError::invocation("Runtime.ExitError", message)
        }
    }

    fn memory_exceeded(&self, detail: &str) -> TaskError {
        TaskError::runtime(
            "MemoryLimitExceeded",
            format!(
                "The function exceeded its memory limit of {} MB ({})",
                self.memory_limit_mb,
                detail.chars().take(300).collect::<String>()
            ),
        )
    }

    /// Kills the process group, and with uid isolation every process of the uid, since a
    /// child may have left the group with `setsid()`.
    pub fn kill(&self) {
        self.kill_group();
        self.cell.kill_all();
    }

    fn kill_group(&self) {
        if self.pgid > 0 {
            // SAFETY: plain syscall on a process group this worker created.
            unsafe {
                libc::killpg(self.pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        // The cell, dropped after this, kills the rest of the uid and removes the home.
        self.kill_group();
    }
}

/// The program and arguments that start the function's runtime.
fn launch(
    spec: &FunctionSpec,
    code_dir: &Path,
    bootstraps: &Bootstraps,
) -> Result<(PathBuf, Vec<OsString>), TaskError> {
    Ok(match spec.runtime {
        Runtime::Python => (
            PathBuf::from("python3"),
            vec!["-u".into(), bootstraps.python.clone().into()],
        ),
        Runtime::Node => (
            PathBuf::from("node"),
            vec![
                // Lets V8 fail with a clear heap error before the rlimit hits.
                format!("--max-old-space-size={}", spec.memory_limit_mb).into(),
                bootstraps.node.clone().into(),
            ],
        ),
        Runtime::Provided => {
            let bootstrap = code_dir.join("bootstrap");
            if !bootstrap.is_file() {
                return Err(TaskError::invocation(
                    "Runtime.InvalidEntrypoint",
                    "the code archive of a `provided` function must contain an executable `bootstrap`",
                ));
            }
            // Relative to the process's working directory, the code: a path naming the code's
            // directory would show in the world-readable /proc/<pid>/cmdline and lead other
            // users' functions to this function's code.
            (PathBuf::from("./bootstrap"), Vec::new())
        }
    })
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => "unknown exit status".to_owned(),
    }
}
