//! The check that a remote registry answers and accepts the configured credentials.

use http::{Method, StatusCode};
use reqwest::Url;

use super::RemoteRegistry;
use super::auth::{Challenge, challenge_in};
use super::error::{RemoteError, summary};
use super::request::Call;

/// What [`RemoteRegistry::ping`] found out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ping {
    /// The registry answers the version check (`/v2/`).
    pub reachable: bool,
    /// The credentials were accepted, or none are needed.
    pub authenticated: bool,
    /// What happened, for a person.
    pub message: String,
}

impl RemoteRegistry {
    /// Checks that the registry answers `/v2/` and that the credentials work (fetching a
    /// token without scopes when the registry uses token auth). Never fails: a registry
    /// that is down or refuses the credentials is what the answer reports.
    pub async fn ping(&self) -> Ping {
        let url = self.endpoint("/v2/");
        let mut call = Call::new(Method::GET, url.clone(), Vec::new());
        let first = match self.send_once(&mut call, None).await {
            Ok(response) => response,
            Err(error) => return unreachable_ping(error),
        };
        match first.status() {
            status if status.is_success() => self.ping_open(),
            StatusCode::UNAUTHORIZED => match challenge_in(first.headers()) {
                Some(challenge) => self.ping_with(challenge, url).await,
                None => Ping {
                    reachable: true,
                    authenticated: false,
                    message: format!(
                        "{} answered 401 to GET /v2/ without a usable WWW-Authenticate \
                         challenge",
                        self.url()
                    ),
                },
            },
            _ => Ping {
                reachable: false,
                authenticated: false,
                message: format!(
                    "{} does not answer as a registry: {}",
                    self.url(),
                    summary("GET /v2/", first).await
                ),
            },
        }
    }

    fn ping_open(&self) -> Ping {
        let message = match &self.inner.credential {
            Some(_) => format!(
                "{} answers and needs no credentials for the version check",
                self.url()
            ),
            None => format!("{} answers without credentials", self.url()),
        };
        Ping {
            reachable: true,
            authenticated: true,
            message,
        }
    }

    /// Answers a challenge to the version check and tries again.
    async fn ping_with(&self, challenge: Challenge, url: Url) -> Ping {
        let refused = |message: String| Ping {
            reachable: true,
            authenticated: false,
            message,
        };
        if challenge == Challenge::Basic && self.inner.credential.is_none() {
            return refused(format!(
                "{} requires credentials and none are configured",
                self.url()
            ));
        }
        if let Err(error) = self.learn(&challenge, &[], false).await {
            return refused(error.to_string());
        }
        let authorization = match self.authorization(&[]).await {
            Ok(authorization) => authorization,
            Err(error) => return refused(error.to_string()),
        };
        let mut call = Call::new(Method::GET, url, Vec::new());
        match self.send_once(&mut call, authorization).await {
            Ok(response) if response.status().is_success() => Ping {
                reachable: true,
                authenticated: true,
                message: match &self.inner.credential {
                    Some(c) => format!(
                        "{} accepted the credentials of user {:?}",
                        self.url(),
                        c.username
                    ),
                    None => format!("{} allows anonymous access", self.url()),
                },
            },
            Ok(response) => refused(self.failure("GET /v2/", response).await.to_string()),
            Err(error) => refused(error.to_string()),
        }
    }
}

fn unreachable_ping(error: RemoteError) -> Ping {
    Ping {
        reachable: false,
        authenticated: false,
        message: error.to_string(),
    }
}
