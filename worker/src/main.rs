use worker::config::WorkerConfig;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    if std::env::args().nth(1).as_deref() == Some("remove-leftovers") {
        // What killed workers of this host left behind; a starting worker does the same.
        worker::runtime::sandbox::remove_what_dead_workers_left();
        return std::process::ExitCode::SUCCESS;
    }
    let config: WorkerConfig = match common::config::load() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("worker: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    common::telemetry::init(&config.log);
    match worker::startup::run(config, common::shutdown::signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("worker failed: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
