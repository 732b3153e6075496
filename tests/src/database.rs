//! PostgreSQL for tests: a database of its own per test on the shared server, dropped with it.

/// Server of the PostgreSQL instance tests use, without a database name.
pub fn postgres_server_url() -> String {
    std::env::var("TASKS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// A connection to `url`, driven in the background; panics when the server does not answer.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|error| panic!("connect to {url}: {error}"));
    tokio::spawn(connection);
    client
}

/// A database of its own for one test, dropped (with its connections) when the value is.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    server: String,
}

impl TestDatabase {
    /// Names a fresh database; the scheduler creates it on start, as it would in production.
    pub fn new() -> TestDatabase {
        Self::on(&postgres_server_url())
    }

    /// A fresh database on another server (`postgres://user@host:port`).
    pub fn on(server: &str) -> TestDatabase {
        let name = format!("tasks_test_{}", common::id::ObjectId::generate());
        TestDatabase {
            url: format!("{server}/{name}"),
            name,
            server: server.to_owned(),
        }
    }

    pub fn config(&self) -> common::config::DatabaseConfig {
        common::config::DatabaseConfig {
            url: self.url.clone(),
            pool_size: 8,
            ..Default::default()
        }
    }

    /// A direct connection, for assertions on what is stored.
    pub async fn connect(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }
}

impl TestDatabase {
    /// Terminates every other connection to this database, as a Postgres restart would.
    pub async fn terminate_connections(&self) -> u64 {
        connect(&format!("{}/postgres", self.server))
            .await
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&self.name],
            )
            .await
            .expect("terminate backends")
            .len() as u64
    }
}

impl TestDatabase {
    /// Transactions committed or rolled back in this database so far, as PostgreSQL counts
    /// them (a statement outside a transaction block is one). Read from another database, so
    /// the reading is not counted; a backend's counts reach the view within about a second
    /// of its last transaction.
    pub async fn transactions(&self) -> i64 {
        connect(&format!("{}/postgres", self.server))
            .await
            .query_one(
                "SELECT (xact_commit + xact_rollback)::int8 FROM pg_stat_database WHERE datname = $1",
                &[&self.name],
            )
            .await
            .expect("read the database's statistics")
            .get(0)
    }
}

impl Default for TestDatabase {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let server = self.server.clone();
        // Drop runs inside the test's runtime, which cannot block on async work: use a thread
        // with a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let url = format!("{server}/postgres");
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await;
                }
            });
        });
        let _ = dropped.join();
    }
}
