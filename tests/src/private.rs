//! PostgreSQL and RabbitMQ instances of a test's own, on free ports, that it may stop and
//! restart without touching the shared services other tests use.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn wait_for_port(port: u16, up: bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let open = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        if open == up {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "port {port} did not become {}",
        if up { "open" } else { "closed" }
    );
}

fn run(command: &mut Command) {
    let status = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("command runs");
    assert!(status.success(), "{command:?} failed");
}

fn scratch_directory(kind: &str, owner: &str) -> PathBuf {
    let directory =
        std::env::temp_dir().join(format!("{kind}-{}", common::id::ObjectId::generate()));
    std::fs::create_dir_all(&directory).expect("scratch directory");
    run(Command::new("chown").arg("-R").arg(owner).arg(&directory));
    directory
}

/// A RabbitMQ node of its own (about ten seconds to boot).
pub struct PrivateRabbit {
    directory: PathBuf,
    node: String,
    port: u16,
    distribution_port: u16,
    server: Option<Child>,
}

impl PrivateRabbit {
    pub fn start() -> PrivateRabbit {
        let directory = scratch_directory("rabbitmq", "rabbitmq");
        let port = free_port();
        let mut rabbit = PrivateRabbit {
            node: format!("test-{port}@localhost"),
            port,
            distribution_port: free_port(),
            server: None,
            directory,
        };
        std::fs::write(rabbit.directory.join("enabled_plugins"), "[].").expect("plugins file");
        std::fs::write(
            rabbit.directory.join("rabbitmq.conf"),
            format!("listeners.tcp.default = 127.0.0.1:{port}\n"),
        )
        .expect("config file");
        run(Command::new("chown")
            .arg("-R")
            .arg("rabbitmq")
            .arg(&rabbit.directory));
        rabbit.resume();
        rabbit
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Starts the node (again), keeping its data.
    pub fn resume(&mut self) {
        let d = &self.directory;
        let server = Command::new("rabbitmq-server")
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.distribution_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_MNESIA_DIR", d.join("mnesia/node"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_FEATURE_FLAGS_FILE", d.join("feature_flags"))
            .env("RABBITMQ_PLUGINS_EXPAND_DIR", d.join("plugins-expand"))
            .env("RABBITMQ_PID_FILE", d.join("pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rabbitmq-server starts");
        self.server = Some(server);
        wait_for_port(self.port, true);
    }

    /// The URL of a virtual host of this node.
    pub fn vhost_url(&self, vhost: &str) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/{vhost}", self.port)
    }

    /// Creates a virtual host the `guest` user may use fully.
    pub fn add_vhost(&self, vhost: &str) {
        self.control(&["add_vhost", vhost]);
        self.control(&["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"]);
    }

    pub fn delete_vhost(&self, vhost: &str) {
        self.control(&["delete_vhost", vhost]);
    }

    /// Closes every client connection to a virtual host, as a network cut would.
    pub fn close_all_connections(&self, vhost: &str) {
        self.control(&[
            "close_all_connections",
            "--vhost",
            vhost,
            "--limit",
            "1000",
            "test: connections closed",
        ]);
    }

    fn control(&self, arguments: &[&str]) {
        run(Command::new("rabbitmqctl")
            .args(["-q", "-n", &self.node])
            .args(arguments));
    }

    /// Stops the node, as an operator or a crash would.
    pub fn stop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["-n", &self.node, "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
        wait_for_port(self.port, false);
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        if self.server.is_some() {
            self.stop();
        }
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

/// A PostgreSQL cluster of its own (about a second to create).
pub struct PrivatePostgres {
    directory: PathBuf,
    port: u16,
    running: bool,
}

fn postgres_binary(name: &str) -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql").expect("PostgreSQL is installed");
    let mut found: Vec<PathBuf> = versions
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("bin").join(name))
        .filter(|path| path.is_file())
        .collect();
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| panic!("no {name} under /usr/lib/postgresql"))
}

impl PrivatePostgres {
    pub fn start() -> PrivatePostgres {
        let directory = scratch_directory("postgres", "postgres");
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(postgres_binary("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(directory.join("data")));
        let mut postgres = PrivatePostgres {
            directory,
            port: free_port(),
            running: false,
        };
        postgres.resume();
        postgres
    }

    /// A server URL without a database name, like `TASKS_TEST_POSTGRES_URL`.
    pub fn server_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    fn pg_ctl(&self, arguments: &[&str]) {
        run(Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(postgres_binary("pg_ctl"))
            .arg("-D")
            .arg(self.directory.join("data"))
            .arg("-l")
            .arg(self.directory.join("log"))
            .args(arguments));
    }

    pub fn resume(&mut self) {
        // pg_stat_statements counts the statements a test's services run, exactly and at once
        // (the database statistics reach their view up to seconds late).
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 \
             -c shared_preload_libraries=pg_stat_statements \
             -c pg_stat_statements.track_utility=off",
            self.port,
            self.directory.display()
        );
        self.pg_ctl(&["-o", &options, "-w", "start"]);
        self.running = true;
        wait_for_port(self.port, true);
    }

    /// Statements run in `database` so far (not counting `BEGIN`, `COMMIT` and other
    /// utility statements), as pg_stat_statements counts them.
    pub async fn statements(&self, database: &str) -> i64 {
        let client = crate::database::connect(&format!("{}/postgres", self.server_url())).await;
        client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .await
            .expect("pg_stat_statements is available");
        client
            .query_one(
                "SELECT COALESCE(sum(calls), 0)::int8 FROM pg_stat_statements \
                 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = $1)",
                &[&database],
            )
            .await
            .expect("read pg_stat_statements")
            .get(0)
    }

    pub fn stop(&mut self) {
        self.pg_ctl(&["-m", "fast", "-w", "stop"]);
        self.running = false;
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.running {
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(postgres_binary("pg_ctl"))
                .arg("-D")
                .arg(self.directory.join("data"))
                .args(["-m", "immediate", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}
