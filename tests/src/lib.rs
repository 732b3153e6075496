//! Test harness of the integration suite (`tests/tests/suite`) and the fault suite
//! (`tests/tests/faults.rs`), by concern: a database and a vhost of its own per test, the
//! services started in-process or as binaries, tokens, function archives, private PostgreSQL
//! and RabbitMQ instances a test may restart, third-party hosts in network namespaces, and the
//! fault suite's cluster. Everything a test file needs is re-exported here.

pub mod auth;
pub mod broker;
pub mod database;
pub mod faults;
pub mod functions;
pub mod private;
pub mod services;
pub mod test_host;

pub use auth::*;
pub use broker::*;
pub use database::*;
pub use functions::*;
pub use services::*;
pub use test_host::third_party_stub;
