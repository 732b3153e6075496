//! What a function process cannot do: read the worker's secrets, outlive its task, escape its
//! limits, or take another function's invocations. The suite runs as root, so workers isolate
//! functions with a uid per process; each test gives its worker a uid range of its own, so the
//! processes of one test's uids are that test's alone.

use std::time::Duration;

use harness::{TestScheduler, TestWorker, base64, zip_files};
use serde_json::{Value, json};
use worker::runtime::sandbox::config::Isolation;

const UIDS_PER_WORKER: u32 = 8;

/// An in-process worker running two tasks at once, isolating with uids from `uid_base`.
async fn sandboxed_worker(app: &TestScheduler, uid_base: u32, isolation: Isolation) -> TestWorker {
    TestWorker::start(app, |config| {
        config.worker.concurrency = 2;
        config.worker.sandbox.isolation = isolation;
        config.worker.sandbox.uid_base = uid_base;
        config.worker.sandbox.uid_count = UIDS_PER_WORKER;
    })
    .await
}

/// Creates a python function whose `handler.py` is `source`.
async fn create_python(app: &TestScheduler, name: &str, source: &str, extra: Value) {
    let mut body = json!({
        "name": name,
        "code": base64(&zip_files(&[("handler.py", source)])),
        "entryPoint": "handler.handle",
        "runtime": "python3.11",
    });
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    let (status, created) = app.post("/tasks/v1/functions", &body).await;
    assert_eq!(status, 200, "{created}");
}

async fn start_task(app: &TestScheduler, function: &str, data: Value) -> String {
    let (status, task) = app
        .post(
            "/tasks/v1",
            &json!({"functionName": function, "data": data}),
        )
        .await;
    assert_eq!(status, 200, "{task}");
    task["id"].as_str().expect("task id").to_owned()
}

async fn run_task(app: &TestScheduler, function: &str, data: Value) -> Value {
    let id = start_task(app, function, data).await;
    app.wait_until_finished(&id).await
}

async fn logs_of(app: &TestScheduler, task: &Value) -> Vec<String> {
    let (status, logs) = app
        .get(&format!("/tasks/v1/{}/logs", task["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, 200, "{logs}");
    logs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap().to_owned())
        .collect()
}

/// The number after `prefix` in the first log line that starts with it.
fn logged_number(lines: &[String], prefix: &str) -> u32 {
    lines
        .iter()
        .find_map(|line| line.strip_prefix(prefix)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{prefix}` line in the logs: {lines:?}"))
}

/// Processes (not yet reaped zombies aside) running as `uid`.
fn live_processes_of(uid: u32) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .unwrap_or_default()
                .to_owned()
        };
        let uids: Vec<u32> = field("Uid:")
            .split_whitespace()
            .filter_map(|u| u.parse().ok())
            .collect();
        if uids.contains(&uid) && !field("State:").trim_start().starts_with('Z') {
            found.push(format!(
                "{} {}",
                entry.file_name().to_string_lossy(),
                field("Name:").trim()
            ));
        }
    }
    found
}

/// Waits (a few seconds at most: SIGKILL is delivered asynchronously) until no process of
/// `uid` is left; returns those that are.
async fn survivors_of(uid: u32) -> Vec<String> {
    until_none_left(|| live_processes_of(uid)).await
}

/// Looks again every 100 ms, five seconds at most, until `look` finds nothing; returns what it
/// still finds.
async fn until_none_left(look: impl Fn() -> Vec<String>) -> Vec<String> {
    let mut left = look();
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        left = look();
    }
    left
}

const READ_SECRETS: &str = r#"
import os

def attempt(path):
    try:
        with open(path, "rb") as f:
            return "read: " + f.read(4096).decode("latin-1")
    except PermissionError:
        return "denied"
    except (FileNotFoundError, ProcessLookupError):
        return "missing"
    except OSError as e:
        return "error %d" % e.errno

def name_of(pid):
    try:
        with open("/proc/%s/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return ""

def handle(event, context):
    workers = [p for p in os.listdir("/proc") if p.isdigit() and name_of(p) == "worker"]
    paths = ["/proc/%d/environ" % os.getppid(), "/proc/1/environ", event["data"]["configFile"]]
    for pid in workers:
        paths += ["/proc/%s/environ" % pid, "/proc/%s/fd/7" % pid, "/proc/%s/root%s" % (pid, event["data"]["configFile"])]
    descriptors = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink("/proc/self/fd/%s" % fd)
            contents = os.pread(int(fd), 4096, 0).decode("latin-1")
        except OSError:
            contents = None
        descriptors[fd] = {"target": target, "contents": contents}
    found = {
        "uid": os.getuid(),
        "parent": str(os.getppid()),
        "workers": workers,
        "attempts": {path: attempt(path) for path in paths},
        "descriptors": descriptors,
    }
    print(found)
    return found
"#;

#[tokio::test]
async fn a_function_cannot_read_the_workers_environment_or_configuration() {
    let app = TestScheduler::start().await;
    let id = common::id::ObjectId::generate();
    let environment_secret = format!("env-secret-{id}");
    let file_secret = format!("file-secret-{id}");
    // The database password lives only in a configuration file that only root may read.
    let (scheme, rest) = app.database.url.split_once("://").unwrap();
    let (user, server) = rest.split_once('@').unwrap();
    let user = user.split(':').next().unwrap();
    let directory = std::env::temp_dir().join(format!("sandbox-config-{id}"));
    std::fs::create_dir_all(&directory).unwrap();
    let config_file = directory.join("worker.toml");
    std::fs::write(
        &config_file,
        format!("[database]\nurl = \"{scheme}://{user}:{file_secret}@{server}\"\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&config_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The worker also inherits an open descriptor of that file, as a careless parent could
    // leave it one.
    let leaked = std::fs::File::open(&config_file).unwrap();
    let leaked_fd = std::os::fd::AsRawFd::as_raw_fd(&leaked);

    let config_path = config_file.to_str().unwrap().to_owned();
    let mut command = harness::worker_binary_command(
        &app,
        &[
            ("TASKS_CONFIG", &config_path),
            ("DEPLOY_TOKEN", &environment_secret),
            ("TASKS__WORKER__CONCURRENCY", "1"),
            ("TASKS__WORKER__SANDBOX__ISOLATION", "users"),
            ("TASKS__WORKER__SANDBOX__UID_BASE", "210000"),
        ],
    );
    command.env_remove("TASKS__DATABASE__URL");
    // SAFETY: dup2 is async-signal-safe; the copy it makes is not close-on-exec.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(leaked_fd, 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut worker = command.spawn().unwrap();
    drop(leaked);
    create_python(&app, "snoop", READ_SECRETS, json!({})).await;
    let task = run_task(&app, "snoop", json!({"configFile": config_path})).await;
    assert_eq!(task["status"], "complete", "{task}");
    let result = &task["result"];

    let workers: Vec<&str> = result["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let worker_pid = worker.id().unwrap().to_string();
    assert!(
        workers.contains(&worker_pid.as_str()),
        "the function found the worker: {result}"
    );
    assert_eq!(
        result["parent"], worker_pid,
        "the worker is the function's parent"
    );
    let uid = result["uid"].as_u64().unwrap();
    assert!(
        (210_000..210_000 + 64).contains(&uid),
        "a sandbox uid: {result}"
    );
    for (path, outcome) in result["attempts"].as_object().unwrap() {
        assert!(
            outcome == "denied" || outcome == "missing",
            "{path} was readable: {outcome}"
        );
    }
    for (fd, descriptor) in result["descriptors"].as_object().unwrap() {
        assert_ne!(
            descriptor["target"], config_path,
            "descriptor {fd} is the configuration file"
        );
    }
    let logs = logs_of(&app, &task).await.join("\n");
    for secret in [&environment_secret, &file_secret] {
        assert!(
            !result.to_string().contains(secret.as_str()),
            "the function read {secret}: {result}"
        );
        assert!(!logs.contains(secret.as_str()), "the logs show {secret}");
    }
    worker.start_kill().unwrap();
    let _ = worker.wait().await;
    let _ = std::fs::remove_dir_all(&directory);
    app.stop().await;
}

const WHO_AM_I: &str = r#"
import os, resource, stat

def can_write(path):
    try:
        with open(path, "a") as f:
            f.write("x")
        return True
    except OSError:
        return False

def status_field(pid, name):
    with open("/proc/%s/status" % pid) as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split()[1]

def handle(event, context):
    home = os.environ["HOME"]
    code = os.environ["LAMBDA_TASK_ROOT"]
    descriptors = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            descriptors[fd] = os.readlink("/proc/self/fd/%s" % fd)
        except OSError:
            pass
    limits = {}
    for name in ["RLIMIT_NPROC", "RLIMIT_NOFILE", "RLIMIT_CORE", "RLIMIT_FSIZE", "RLIMIT_DATA"]:
        limits[name] = resource.getrlimit(getattr(resource, name))[0]
    return {
        "uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
        "workerUid": int(status_field(os.getppid(), "Uid")),
        "noNewPrivs": status_field("self", "NoNewPrivs"),
        "home": home, "tmpdir": os.environ.get("TMPDIR"),
        "homeMode": stat.S_IMODE(os.stat(home).st_mode), "homeOwner": os.stat(home).st_uid,
        "writesHome": can_write(os.path.join(home, "scratch")),
        "cwd": os.getcwd(), "code": code,
        "changesCode": can_write(os.path.join(code, "handler.py")),
        "addsCode": can_write(os.path.join(code, "added.py")),
        "descriptors": descriptors,
        "limits": limits,
        "byteCode": os.path.isfile(__cached__),
        "compiledAs": handle.__code__.co_filename,
    }
"#;

#[tokio::test]
async fn each_process_runs_as_its_own_user_with_a_private_home_and_read_only_code() {
    let app = TestScheduler::start().await;
    let base = 220_000;
    let worker = sandboxed_worker(&app, base, Isolation::Users).await;
    // Code never unpacked before on this machine, so its byte code is this worker's doing.
    let fresh_code = format!("{WHO_AM_I}\n# {}\n", common::id::ObjectId::generate());
    create_python(&app, "who-a", &fresh_code, json!({"memoryLimit": 256})).await;
    create_python(&app, "who-b", WHO_AM_I, json!({})).await;
    let a = run_task(&app, "who-a", json!({})).await;
    let b = run_task(&app, "who-b", json!({})).await;
    assert_eq!(a["status"], "complete", "{a}");
    assert_eq!(b["status"], "complete", "{b}");
    let (a, b) = (&a["result"], &b["result"]);

    let uid = a["uid"].as_u64().unwrap() as u32;
    assert!((base..base + UIDS_PER_WORKER).contains(&uid), "{a}");
    assert_ne!(a["uid"], a["workerUid"], "not the worker's uid: {a}");
    assert_ne!(a["uid"], b["uid"], "two processes, two uids");
    assert_eq!(a["gid"], a["uid"]);
    assert_eq!(a["groups"], json!([]), "no supplementary groups: {a}");
    assert_eq!(a["noNewPrivs"], "1");

    assert_eq!(a["tmpdir"], a["home"]);
    assert_ne!(a["home"], b["home"]);
    assert_eq!(a["homeMode"], 0o700, "{a}");
    assert_eq!(a["homeOwner"], a["uid"]);
    assert_eq!(a["writesHome"], true);
    assert_eq!(a["cwd"], a["code"]);
    assert_eq!(a["changesCode"], false, "the code is read-only: {a}");
    assert_eq!(a["addsCode"], false, "the code directory is read-only: {a}");
    // Compiled once when the code was unpacked, under the path the processes see.
    assert_eq!(a["byteCode"], true, "{a}");
    assert_eq!(
        a["compiledAs"].as_str().unwrap(),
        format!("{}/handler.py", a["code"].as_str().unwrap()),
        "{a}"
    );

    assert_eq!(a["limits"]["RLIMIT_NPROC"], 64);
    assert_eq!(a["limits"]["RLIMIT_NOFILE"], 1024);
    assert_eq!(a["limits"]["RLIMIT_CORE"], 0);
    assert_eq!(a["limits"]["RLIMIT_FSIZE"], 512 * 1024 * 1024);
    assert_eq!(a["limits"]["RLIMIT_DATA"], 256 * 1024 * 1024);
    // Beyond stdin, stdout and stderr: the runtime's own connection and pipes, and the
    // directory the function was listing.
    for (fd, target) in a["descriptors"].as_object().unwrap() {
        let target = target.as_str().unwrap();
        let own = ["socket:", "pipe:", "anon_inode:", "/dev/null"]
            .iter()
            .any(|p| target.starts_with(p))
            || target.starts_with("/proc/") && target.ends_with("/fd");
        assert!(own, "descriptor {fd} → {target} was inherited: {a}");
    }
    worker.stop().await;
    app.stop().await;
}

const FORK_BOMB: &str = r#"
import os, time

def handle(event, context):
    print("uid=%d" % os.getuid(), flush=True)
    while True:
        try:
            if os.fork() == 0:
                os.setsid()
        except OSError:
            time.sleep(0.01)
"#;

#[tokio::test]
async fn a_fork_bomb_fails_and_leaves_no_process_behind() {
    let app = TestScheduler::start().await;
    let worker = sandboxed_worker(&app, 230_000, Isolation::Users).await;
    create_python(&app, "bomb", FORK_BOMB, json!({"timeLimit": 3})).await;
    app.create_noop_function("after").await;

    let task = run_task(&app, "bomb", json!({})).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error"]["name"], "TimeLimitExceeded", "{task}");
    let uid = logged_number(&logs_of(&app, &task).await, "uid=");
    let left = survivors_of(uid).await;
    assert!(
        left.is_empty(),
        "processes of uid {uid} outlived the task: {left:?}"
    );

    let after = run_task(&app, "after", json!({})).await;
    assert_eq!(
        after["status"], "complete",
        "the worker still runs tasks: {after}"
    );
    worker.stop().await;
    app.stop().await;
}

const SYSTEM_V_SEGMENT: &str = r#"
import ctypes, os, time

def handle(event, context):
    libc = ctypes.CDLL(None, use_errno=True)
    # IPC_PRIVATE, IPC_CREAT | 0600: a segment that outlives the process unless removed.
    segment = libc.shmget(0, 4096, 0o1600)
    print("uid=%d" % os.getuid(), flush=True)
    print("segment=%d" % segment, flush=True)
    time.sleep(30)
"#;

/// The ids of the System V shared memory segments `uid` owns.
fn segments_of(uid: u32) -> Vec<String> {
    let listing = std::fs::read_to_string("/proc/sysvipc/shm").unwrap_or_default();
    listing
        .lines()
        .skip(1)
        .filter_map(|line| {
            let columns: Vec<&str> = line.split_whitespace().collect();
            (columns.get(7) == Some(&uid.to_string().as_str())).then(|| columns[1].to_owned())
        })
        .collect()
}

#[tokio::test]
async fn shared_memory_a_function_leaves_is_removed_with_its_process() {
    let app = TestScheduler::start().await;
    let worker = sandboxed_worker(&app, 280_000, Isolation::Users).await;
    create_python(&app, "segment", SYSTEM_V_SEGMENT, json!({"timeLimit": 3})).await;
    let task = run_task(&app, "segment", json!({})).await;
    assert_eq!(task["error"]["name"], "TimeLimitExceeded", "{task}");
    let logs = logs_of(&app, &task).await;
    let uid = logged_number(&logs, "uid=");
    let segment = logged_number(&logs, "segment=");
    let left = until_none_left(|| segments_of(uid)).await;
    assert!(
        left.is_empty(),
        "segment {segment} of uid {uid} outlived its process: {left:?}"
    );
    worker.stop().await;
    app.stop().await;
}

const HOARDING_CHILDREN: &str = r#"
import os

def handle(event, context):
    limit_mb = int(os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"])
    children = []
    for _ in range(event["data"]["children"]):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                hoard = [bytearray(16 * 1024 * 1024) for _ in range(3 * limit_mb // 16)]
            except MemoryError:
                code = 42
            os._exit(code)
        children.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    # A child that ran out of its own limit exits 42; one the function's control group ran out
    # for was killed (a negative code).
    stopped = sum(1 for code in codes if code != 0)
    if stopped:
        raise MemoryError("%d of %d children ran out of memory" % (stopped, len(codes)))
    return codes
"#;

#[tokio::test]
async fn children_that_allocate_are_held_to_the_memory_limit() {
    let app = TestScheduler::start().await;
    let worker = sandboxed_worker(&app, 240_000, Isolation::Users).await;
    create_python(
        &app,
        "hoarders",
        HOARDING_CHILDREN,
        json!({"memoryLimit": 128}),
    )
    .await;
    let task = run_task(&app, "hoarders", json!({"children": 8})).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error"]["name"], "MemoryLimitExceeded", "{task}");
    let message = task["error"]["message"].as_str().unwrap();
    assert!(message.contains("128 MB"), "{task}");
    assert!(
        message.contains("8 of 8 children"),
        "every child was stopped: {task}"
    );
    worker.stop().await;
    app.stop().await;
}

const SHARED_MAPPING: &str = r#"
import mmap

def handle(event, context):
    size = event["data"]["mb"] * 1024 * 1024
    # Shared anonymous memory: no per-process limit counts it, only the function's control group.
    shared = mmap.mmap(-1, size, flags=mmap.MAP_SHARED)
    for offset in range(0, size, 4096):
        shared[offset] = 1
    return "touched %d MB" % event["data"]["mb"]
"#;

#[tokio::test]
async fn shared_memory_counts_against_the_memory_limit() {
    let app = TestScheduler::start().await;
    let worker = sandboxed_worker(&app, 241_000, Isolation::Users).await;
    create_python(&app, "sharer", SHARED_MAPPING, json!({"memoryLimit": 128})).await;
    let task = run_task(&app, "sharer", json!({"mb": 1024})).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error"]["name"], "MemoryLimitExceeded", "{task}");
    assert!(
        task["error"]["message"]
            .as_str()
            .unwrap()
            .contains("128 MB"),
        "{task}"
    );
    // Within the limit, the same function completes.
    let task = run_task(&app, "sharer", json!({"mb": 32})).await;
    assert_eq!(task["status"], "complete", "{task}");
    worker.stop().await;
    app.stop().await;
}

const ESCAPING_GRANDCHILD: &str = r#"
import os, time

# Each line in one write: the grandchild and its grandparent share the output pipe, and
# unbuffered print() writes a line's text and its newline separately.
def say(line):
    os.write(1, (line + "\n").encode())

def handle(event, context):
    child = os.fork()
    if child == 0:
        os.setsid()
        if os.fork() == 0:
            say("grandchild=%d" % os.getpid())
            time.sleep(600)
        os._exit(0)
    os.waitpid(child, 0)
    say("uid=%d" % os.getuid())
    time.sleep(event["data"]["seconds"])
"#;

#[tokio::test]
async fn a_grandchild_that_left_the_process_group_ends_with_its_timed_out_task() {
    let app = TestScheduler::start().await;
    let worker = sandboxed_worker(&app, 250_000, Isolation::Users).await;
    create_python(&app, "escape", ESCAPING_GRANDCHILD, json!({"timeLimit": 3})).await;
    let task = run_task(&app, "escape", json!({"seconds": 60})).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error"]["name"], "TimeLimitExceeded", "{task}");
    let logs = logs_of(&app, &task).await;
    let grandchild = logged_number(&logs, "grandchild=");
    let uid = logged_number(&logs, "uid=");
    let left = survivors_of(uid).await;
    assert!(
        left.is_empty(),
        "processes of uid {uid} outlived the task: {left:?}"
    );
    assert!(
        !live_processes_of(uid)
            .iter()
            .any(|p| p.starts_with(&format!("{grandchild} "))),
        "the grandchild {grandchild} still runs"
    );
    worker.stop().await;
    app.stop().await;
}

const VICTIM: &str = r#"
import os

def handle(event, context):
    return os.environ["AWS_LAMBDA_RUNTIME_API"]
"#;

const THIEF: &str = r#"
import os, socket

def listening_ports_of(uid):
    ports = set()
    for table in ["/proc/net/tcp", "/proc/net/tcp6"]:
        try:
            rows = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[7]) == uid:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports

def handle(event, context):
    host, port = event["data"]["address"].rsplit(":", 1)
    with open("/proc/%d/status" % os.getppid()) as f:
        worker_uid = int([l for l in f if l.startswith("Uid:")][0].split()[1])
    listed = int(port) in listening_ports_of(worker_uid)
    connection = socket.create_connection((host, int(port)), timeout=event["data"]["wait"])
    try:
        connection.sendall(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n")
        received = connection.recv(65536)
        outcome = "answered" if received else "closed"
    except (ConnectionResetError, BrokenPipeError):
        received, outcome = b"", "closed"
    except socket.timeout:
        received, outcome = b"", "no answer"
    return {"listed": listed, "outcome": outcome, "received": received.decode("latin-1")}
"#;

#[tokio::test]
async fn a_function_cannot_take_another_functions_invocations() {
    let app = TestScheduler::start().await;
    let worker = sandboxed_worker(&app, 260_000, Isolation::Users).await;
    create_python(&app, "victim", VICTIM, json!({"timeLimit": 5})).await;
    create_python(&app, "thief", THIEF, json!({"timeLimit": 30})).await;
    // The victim's warm process now long-polls its Runtime API for the next invocation.
    let first = run_task(&app, "victim", json!({})).await;
    assert_eq!(first["status"], "complete", "{first}");
    let address = first["result"].as_str().unwrap().to_owned();

    let thief = start_task(&app, "thief", json!({"address": address, "wait": 8})).await;
    let running = app
        .wait_for_task(&thief, Duration::from_secs(30), |t| t["status"] != "new")
        .await;
    assert_eq!(running["status"], "inProgress", "{running}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Had the thief's request been served, it would be next in line after the victim's own
    // poll and take the second of these invocations.
    for _ in 0..2 {
        let task = run_task(&app, "victim", json!({})).await;
        assert_eq!(
            task["status"], "complete",
            "the victim kept its invocations: {task}"
        );
        assert_eq!(
            task["result"],
            json!(address),
            "served by the same warm process"
        );
    }
    let thief = app.wait_until_finished(&thief).await;
    assert_eq!(thief["status"], "complete", "{thief}");
    let result = &thief["result"];
    assert_eq!(result["listed"], true, "the thief found the port: {result}");
    assert_eq!(
        result["outcome"], "closed",
        "the connection was refused: {result}"
    );
    assert!(
        !result["received"]
            .as_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("lambda-runtime-aws-request-id"),
        "{result}"
    );
    worker.stop().await;
    app.stop().await;
}

const LOOK_AROUND: &str = r#"
import os

def name_of(pid):
    try:
        with open("/proc/%s/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return ""

def handle(event, context):
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    code = os.environ["LAMBDA_TASK_ROOT"]
    with open("/tmp/private", "w") as f:
        f.write("mine")
    return {
        "pids": pids,
        "names": [name_of(pid) for pid in pids],
        "self": os.getpid(),
        "uid": os.getuid(),
        "cachedCode": os.listdir(os.path.dirname(code)),
        "home": os.listdir(os.environ["HOME"]),
    }
"#;

#[tokio::test]
async fn under_bubblewrap_a_function_sees_only_its_own_processes() {
    assert!(
        std::path::Path::new("/usr/bin/bwrap").exists(),
        "bubblewrap is not installed (tests/run installs it)"
    );
    let app = TestScheduler::start().await;
    let worker = sandboxed_worker(&app, 270_000, Isolation::Bubblewrap).await;
    create_python(&app, "other", VICTIM, json!({})).await;
    create_python(&app, "look", LOOK_AROUND, json!({})).await;
    // Another function's code is in the worker's cache too.
    assert_eq!(
        run_task(&app, "other", json!({})).await["status"],
        "complete"
    );
    let task = run_task(&app, "look", json!({})).await;
    assert_eq!(task["status"], "complete", "{task}");
    let result = &task["result"];
    let pids: Vec<u64> = result["pids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert!(
        pids.len() <= 3,
        "only the sandbox's own processes: {result}"
    );
    assert!(
        !pids.contains(&u64::from(std::process::id())),
        "the worker is invisible: {result}"
    );
    assert!(
        result["names"]
            .as_array()
            .unwrap()
            .contains(&json!("python3")),
        "{result}"
    );
    assert!(
        (270_000..270_000 + u64::from(UIDS_PER_WORKER)).contains(&result["uid"].as_u64().unwrap())
    );
    assert_eq!(
        result["cachedCode"].as_array().unwrap().len(),
        1,
        "only its own code: {result}"
    );
    assert_eq!(
        result["home"],
        json!([]),
        "/tmp is private, not the home: {result}"
    );

    // The other runtimes work under bubblewrap too.
    app.create_function(
        "node-noop",
        "node-noop",
        "nodejs20.x",
        "index.handler",
        json!({}),
    )
    .await;
    app.create_function(
        "echo",
        "echo-provided",
        "provided.al2023",
        "unused",
        json!({}),
    )
    .await;
    let node = run_task(&app, "node-noop", json!({})).await;
    assert_eq!(
        node["result"],
        json!({"ok": true, "runtime": "node"}),
        "{node}"
    );
    let echo = run_task(&app, "echo", json!({"hello": "world"})).await;
    assert_eq!(echo["result"]["echo"], json!({"hello": "world"}), "{echo}");
    worker.stop().await;
    app.stop().await;
}

/// Writes 400 MB files into each directory of `dirs` (three at most, stopping at the first
/// error), then tries to read the project's checkout.
const FILL_THE_DISK: &str = r#"
import os

def fill(directory):
    written = 0
    for n in range(3):
        try:
            with open(os.path.join(directory, "big-%d" % n), "wb") as f:
                for _ in range(400):
                    f.write(b"x" * (1024 * 1024))
                    written += 1
        except OSError as e:
            return {"mb": written, "error": e.errno}
    return {"mb": written, "error": None}

def peek(path):
    try:
        return os.listdir(path) and "listed"
    except OSError as e:
        return e.errno

def handle(event, context):
    data = event["data"]
    dirs = {name: os.environ.get(name, name) for name in data["dirs"]}
    return {
        "written": {name: fill(path) for name, path in dirs.items()},
        "project": peek(data["project"]),
    }
"#;

#[tokio::test]
async fn a_function_writes_only_to_its_bounded_home_and_never_reads_the_project() {
    let app = TestScheduler::start().await;
    let worker = sandboxed_worker(&app, 242_000, Isolation::Users).await;
    create_python(
        &app,
        "fill",
        FILL_THE_DISK,
        json!({"memoryLimit": 2048, "timeLimit": 60}),
    )
    .await;
    let project = harness::repository_root();
    let data = json!({"dirs": ["HOME", "/tmp", "/var/tmp"], "project": project});
    let task = run_task(&app, "fill", data).await;
    assert_eq!(task["status"], "complete", "{task}");
    let result = &task["result"];
    const NO_SPACE: i64 = 28;
    const DENIED: i64 = 13;
    let home = &result["written"]["HOME"];
    assert_eq!(home["error"], NO_SPACE, "the home is bounded: {result}");
    assert!(home["mb"].as_i64().unwrap() <= 512, "{result}");
    for shared in ["/tmp", "/var/tmp"] {
        assert_eq!(
            result["written"][shared],
            json!({"mb": 0, "error": DENIED}),
            "{result}"
        );
    }
    assert_eq!(result["project"], DENIED, "{result}");

    // The home's files live in memory: they count against the function's memory limit.
    create_python(
        &app,
        "small",
        FILL_THE_DISK,
        json!({"memoryLimit": 256, "timeLimit": 60}),
    )
    .await;
    let task = run_task(&app, "small", json!({"dirs": ["HOME"], "project": "/"})).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["error"]["name"], "MemoryLimitExceeded", "{task}");
    worker.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn under_bubblewrap_writable_space_is_bounded_and_the_project_invisible() {
    let app = TestScheduler::start().await;
    let worker = sandboxed_worker(&app, 271_000, Isolation::Bubblewrap).await;
    create_python(
        &app,
        "fill",
        FILL_THE_DISK,
        json!({"memoryLimit": 2048, "timeLimit": 60}),
    )
    .await;
    let project = harness::repository_root();
    let data = json!({"dirs": ["HOME", "/tmp"], "project": project});
    let task = run_task(&app, "fill", data).await;
    assert_eq!(task["status"], "complete", "{task}");
    let result = &task["result"];
    for place in ["HOME", "/tmp"] {
        let written = &result["written"][place];
        assert_eq!(written["error"], 28, "{place} is bounded: {result}");
        assert!(written["mb"].as_i64().unwrap() <= 512, "{result}");
    }
    const NOT_FOUND: i64 = 2;
    assert_eq!(result["project"], NOT_FOUND, "{result}");
    worker.stop().await;
    app.stop().await;
}
