//! RabbitMQ for tests: a virtual host of its own per test, and publishing as the platform does.

/// A RabbitMQ virtual host of its own for one test, deleted when the value is dropped.
pub struct TestVhost {
    pub name: String,
    pub url: String,
}

impl TestVhost {
    pub fn new() -> TestVhost {
        let name = format!("tasks_test_{}", common::id::ObjectId::generate());
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        let server = std::env::var("TASKS_TEST_AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672".to_owned());
        TestVhost {
            url: format!("{server}/{name}"),
            name,
        }
    }

    /// A channel on this vhost, for publishing or consuming as another service would.
    pub async fn channel(&self) -> lapin::Channel {
        let connection = common::broker::connect(&self.url)
            .await
            .expect("connect to the test vhost");
        let channel = connection.create_channel().await.expect("channel");
        common::broker::declare_topology(&channel)
            .await
            .expect("topology");
        // The connection closes when the last handle drops; keep it alive with the channel.
        std::mem::forget(connection);
        channel
    }
}

impl TestVhost {
    /// Closes every client connection to this vhost, as a broker restart would.
    pub fn close_all_connections(&self) {
        rabbitmqctl(&[
            "close_all_connections",
            "--vhost",
            &self.name,
            "--limit",
            "1000",
            "test: connections closed",
        ]);
    }
}

impl Default for TestVhost {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        rabbitmqctl(&["delete_vhost", &self.name]);
    }
}

fn rabbitmqctl(arguments: &[&str]) {
    let status = std::process::Command::new("rabbitmqctl")
        .arg("-q")
        .args(arguments)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("rabbitmqctl runs");
    assert!(status.success(), "rabbitmqctl {arguments:?} failed");
}

/// Publishes a platform event as a platform service would: JSON, persistent, routing key =
/// event type, on the `platform.events` exchange.
pub async fn publish_event(channel: &lapin::Channel, event_type: &str, body: &[u8]) {
    let confirm = channel
        .basic_publish(
            common::broker::EVENTS_EXCHANGE.into(),
            event_type.into(),
            lapin::options::BasicPublishOptions::default(),
            body,
            common::broker::persistent_json(),
        )
        .await
        .expect("publish");
    confirm.await.expect("confirm");
}
