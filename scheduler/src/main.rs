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
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    if arguments.first().map(String::as_str) == Some("token") {
        return match scheduler::api::auth::token::command(&config.auth, &arguments[1..]) {
            Ok(token) => {
                println!("{token}");
                std::process::ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("scheduler token: {error}");
                std::process::ExitCode::from(2)
            }
        };
    }
    common::telemetry::init(&config.log);
    if arguments.first().map(String::as_str) == Some("reseal-secrets") {
        return match scheduler::startup::reseal_secrets(&config).await {
            Ok(count) => {
                println!("resealed the environment variables of {count} functions");
                std::process::ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("scheduler reseal-secrets: {error:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    match scheduler::startup::run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("scheduler failed: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
