//! One logging set-up for every binary: `berth` (text or JSON lines on standard error) and the
//! Lambda functions (JSON lines on standard output), filtered by `BERTH_LOG` (`tracing`
//! `EnvFilter` syntax, default `info`) under caps that no filter can lift.
//!
//! The caps are upper bounds on libraries that log secrets at their most detailed levels:
//! the AWS SDK's signing and HTTP layers (access key ids, signatures, session tokens in
//! `Authorization` headers), hyper, and the Lambda runtime (raw events, with passwords and
//! tokens). `BERTH_LOG=trace` raises everything else; those stay at their cap, and below it
//! they follow `BERTH_LOG` like any other target.

use tracing::Level;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::{EnvFilter, FilterExt, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// The variable holding the log filter.
pub const LOG_VARIABLE: &str = "BERTH_LOG";

/// The most detailed level of each library that would log secrets below it.
const CAPS: [(&str, Level); 7] = [
    ("lambda_runtime", Level::INFO),
    ("lambda_http", Level::INFO),
    ("aws_smithy_runtime", Level::DEBUG),
    ("aws_smithy_runtime_api", Level::DEBUG),
    ("aws_smithy_http", Level::DEBUG),
    ("aws_sigv4", Level::DEBUG),
    ("hyper", Level::INFO),
];

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOutput {
    /// Human-readable lines on standard error, coloured on a terminal.
    Text,
    /// One JSON object per line on standard error.
    Json,
    /// One JSON object per line on standard output, as Lambda collects them; a request's
    /// lines carry the Lambda request id in their `span`.
    LambdaJson,
}

/// The filter of `text` (a `BERTH_LOG` value) under the caps, and the reason `text` was not
/// usable, if it was not (then `info` applies).
fn filter(
    text: Option<&str>,
) -> (
    impl tracing_subscriber::layer::Filter<Registry> + use<>,
    Option<String>,
) {
    let (requested, unusable) = match text {
        Some(text) => match EnvFilter::try_new(text) {
            Ok(filter) => (filter, None),
            Err(error) => (EnvFilter::new("info"), Some(format!("{text:?}: {error}"))),
        },
        None => (EnvFilter::new("info"), None),
    };
    let caps = CAPS.iter().fold(
        Targets::new().with_default(LevelFilter::TRACE),
        |caps, (target, level)| caps.with_target(*target, *level),
    );
    (requested.and(caps), unusable)
}

/// Installs the process's logger, filtered by `BERTH_LOG` under the caps. A second call does
/// nothing.
pub fn init_logging(output: LogOutput) {
    let text = std::env::var(LOG_VARIABLE).ok();
    let (filter, unusable) = filter(text.as_deref());
    let fmt = tracing_subscriber::fmt::layer();
    let layer = match output {
        LogOutput::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogOutput::Json => fmt
            .json()
            .flatten_event(true)
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogOutput::LambdaJson => fmt
            .json()
            .flatten_event(true)
            .with_span_list(false)
            .with_ansi(false)
            .with_writer(std::io::stdout)
            .with_filter(filter)
            .boxed(),
    };
    if tracing_subscriber::registry()
        .with(layer)
        .try_init()
        .is_ok()
        && let Some(reason) = unusable
    {
        tracing::warn!(
            reason,
            "{LOG_VARIABLE} is not a log filter; logging at info"
        );
    }
}

#[cfg(test)]
mod tests {
    use tracing::subscriber::with_default;

    use super::*;

    /// Which of `probes` (target, level) the filter of `text` lets through.
    fn enabled(text: &str) -> Vec<bool> {
        let (filter, _) = filter(Some(text));
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::sink)
                .with_filter(filter),
        );
        with_default(subscriber, || {
            vec![
                tracing::enabled!(target: "aws_sigv4", Level::TRACE),
                tracing::enabled!(target: "aws_smithy_runtime::client", Level::TRACE),
                tracing::enabled!(target: "aws_smithy_runtime::client", Level::DEBUG),
                tracing::enabled!(target: "lambda_runtime", Level::DEBUG),
                tracing::enabled!(target: "berth::access", Level::TRACE),
                tracing::enabled!(target: "berth::access", Level::INFO),
            ]
        })
    }

    #[test]
    fn caps_hold_whatever_the_filter_asks() {
        assert_eq!(
            enabled("trace"),
            [false, false, true, false, true, true],
            "trace raises all but the capped libraries"
        );
        assert_eq!(
            enabled("info,aws_sigv4=trace,aws_smithy_runtime=trace,lambda_runtime=trace"),
            [false, false, true, false, false, true],
            "naming a capped library does not lift its cap"
        );
    }

    #[test]
    fn below_a_cap_the_filter_rules() {
        assert_eq!(
            enabled("info"),
            [false, false, false, false, false, true],
            "at info no library logs debug lines"
        );
        assert!(!enabled("warn")[5], "info lines are off at warn");
    }

    #[test]
    fn an_unusable_filter_is_reported_and_info_applies() {
        let (_, unusable) = filter(Some("berth=loud"));
        assert!(unusable.is_some_and(|reason| reason.contains("berth=loud")));
        assert_eq!(filter(None).1, None);
    }
}
