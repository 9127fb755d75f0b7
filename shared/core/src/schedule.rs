//! Cron schedules (of replication policies and garbage collection), as Harbor writes them:
//! six fields, seconds first (`0 0 * * * *` is hourly). Times are UTC.

use std::str::FromStr;

use crate::error::{ErrorCode, RegistryError, Result};
use chrono::{DateTime, Utc};
use cron::Schedule;

/// The shortest interval a schedule may fire at: a schedule firing every second would only
/// pile executions on each other.
pub const MIN_INTERVAL_SECONDS: i64 = 60;

/// Parses a cron expression and checks it fires at most once a minute.
pub fn parse(expression: &str) -> Result<Schedule> {
    let fields = expression.split_whitespace().count();
    if fields != 6 {
        return Err(invalid(format!(
            "cron {expression:?} has {fields} fields; Berth wants six, seconds first \
             (\"0 0 * * * *\" is every hour)"
        )));
    }
    let schedule = Schedule::from_str(expression)
        .map_err(|e| invalid(format!("cron {expression:?} is not valid: {e}")))?;
    let mut upcoming = schedule.upcoming(Utc);
    if let (Some(first), Some(second)) = (upcoming.next(), upcoming.next())
        && (second - first).num_seconds() < MIN_INTERVAL_SECONDS
    {
        return Err(invalid(format!(
            "cron {expression:?} fires more than once a minute"
        )));
    }
    Ok(schedule)
}

/// The latest time in `(after, now]` the schedule fires at, in unix seconds.
pub fn due(schedule: &Schedule, after: i64, now: i64) -> Option<i64> {
    let start = DateTime::<Utc>::from_timestamp(after, 0)?;
    schedule
        .after(&start)
        .take_while(|time| time.timestamp() <= now)
        .last()
        .map(|time| time.timestamp())
}

fn invalid(message: String) -> RegistryError {
    RegistryError::new(ErrorCode::BadRequest, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_field_crons_fire_when_due() {
        let hourly = parse("0 0 * * * *").expect("valid");
        // 2026-01-01T00:00:00Z
        let midnight = 1_767_225_600;
        assert_eq!(due(&hourly, midnight - 10, midnight + 10), Some(midnight));
        assert_eq!(due(&hourly, midnight, midnight + 3599), None, "not again");
        assert_eq!(
            due(&hourly, midnight, midnight + 3 * 3600),
            Some(midnight + 3 * 3600),
            "missed fires collapse into the latest"
        );
        let every_minute = parse("0 * * * * *").expect("valid");
        assert_eq!(
            due(&every_minute, midnight + 1, midnight + 61),
            Some(midnight + 60)
        );
    }

    #[test]
    fn bad_crons_say_why() {
        let five = parse("0 * * * *").expect_err("five fields");
        assert!(five.message().contains("six"), "{}", five.message());
        assert!(parse("* * * * * *").is_err(), "every second");
        assert!(parse("0 0 25 * * *").is_err(), "hour 25");
    }
}
