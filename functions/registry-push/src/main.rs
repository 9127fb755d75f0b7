//! `registry-push`: the Lambda function behind `POST`, `PUT`, `PATCH` and `DELETE`
//! `/v2/{proxy+}`. Any other endpoint answers OCI `UNSUPPORTED`.

use std::process::ExitCode;

use berth_runtime::Role;
use berth_runtime::lambda;

#[tokio::main]
async fn main() -> ExitCode {
    lambda::init_logging();
    // Once per cold start: configuration, AWS clients, router. A wrong environment stops the
    // function here, logged, so that Lambda reports an initialisation error.
    let router = match lambda::start(Role::Push).await {
        Ok(router) => router,
        Err(error) => return lambda::refuse_to_start(&error),
    };
    match lambda_http::run(router).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => lambda::runtime_failed(&*error),
    }
}
