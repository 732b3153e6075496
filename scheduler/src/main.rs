use scheduler::config::SchedulerConfig;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config: SchedulerConfig = match common::config::load() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("scheduler: {error}");
            return std::process::ExitCode::from(2);
        }
    };
    common::telemetry::init(&config.log);
    match scheduler::startup::run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("scheduler failed: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
