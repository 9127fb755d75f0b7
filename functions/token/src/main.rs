//! `token`: the Lambda function behind `GET` and `POST /service/token` (Docker token
//! authentication and the OAuth2 password and refresh-token grants) and `/api/v2.0/...` (users,
//! projects, members, robot accounts). It alone may decrypt the token signing key.

use std::process::ExitCode;

use berth_runtime::lambda;

#[tokio::main]
async fn main() -> ExitCode {
    lambda::init_logging();
    // Once per cold start: configuration, AWS clients, the signing key, router.
    let router = match lambda::start_token().await {
        Ok(router) => router,
        Err(error) => return lambda::refuse_to_start(&error),
    };
    match lambda_http::run(router).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => lambda::runtime_failed(&*error),
    }
}
