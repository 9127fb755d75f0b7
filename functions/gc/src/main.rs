//! `gc`: the Lambda function with no route that carries out garbage collection. A minute's
//! schedule and each change to a run's record (the table's stream) invoke it; each
//! invocation starts the scheduled run if it is due and works the run that is going for a
//! bounded number of steps, its progress in the table.

use std::process::ExitCode;

use berth_runtime::lambda;

#[tokio::main]
async fn main() -> ExitCode {
    lambda::init_logging();
    // Once per cold start: configuration, AWS clients, the collector.
    let handler = match lambda::start_gc().await {
        Ok(handler) => handler,
        Err(error) => return lambda::refuse_to_start(&error),
    };
    let service = lambda_runtime::service_fn(|event| handler.call(event));
    match lambda_runtime::run(service).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => lambda::runtime_failed(&*error),
    }
}
