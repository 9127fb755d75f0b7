//! `events`: the Lambda function with no route. It turns the metadata table's stream into
//! registry events for replication, runs the replication jobs queued on SQS, and starts the
//! scheduled replication policies on an EventBridge schedule.

use std::process::ExitCode;

use berth_runtime::lambda;

#[tokio::main]
async fn main() -> ExitCode {
    lambda::init_logging();
    // Once per cold start: configuration, AWS clients, the replicator.
    let handler = match lambda::start_events().await {
        Ok(handler) => handler,
        Err(error) => return lambda::refuse_to_start(&error),
    };
    let service = lambda_runtime::service_fn(|event| handler.call(event));
    match lambda_runtime::run(service).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => lambda::runtime_failed(&*error),
    }
}
