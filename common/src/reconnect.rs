//! Reconnection of long-lived connections (broker consumers, the notification listener):
//! exponential backoff, and one log line per transition — lost once, restored once — instead
//! of one per attempt.

use std::fmt::Display;
use std::time::Duration;

const FIRST_WAIT: Duration = Duration::from_millis(100);
const LONGEST_WAIT: Duration = Duration::from_secs(5);

pub struct Reconnect {
    what: &'static str,
    wait: Duration,
    down: bool,
}

impl Reconnect {
    /// `what` names the connection in the log, e.g. "broker (task consumer)".
    pub fn new(what: &'static str) -> Self {
        Reconnect {
            what,
            wait: FIRST_WAIT,
            down: false,
        }
    }

    /// Records a failed or lost connection; returns how long to wait before the next attempt.
    pub fn failed(&mut self, error: &dyn Display) -> Duration {
        if self.down {
            tracing::debug!(connection = self.what, %error, "still unavailable");
        } else {
            tracing::warn!(connection = self.what, %error, "connection lost, reconnecting");
            self.down = true;
        }
        let wait = self.wait;
        self.wait = (self.wait * 2).min(LONGEST_WAIT);
        wait
    }

    /// Records a working connection.
    pub fn connected(&mut self) {
        if self.down {
            tracing::info!(connection = self.what, "connection restored");
            self.down = false;
        }
        self.wait = FIRST_WAIT;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_exponentially_and_resets_when_connected() {
        let mut reconnect = Reconnect::new("test");
        let waits: Vec<Duration> = (0..8).map(|_| reconnect.failed(&"down")).collect();
        assert_eq!(waits[0], FIRST_WAIT);
        assert_eq!(waits[1], FIRST_WAIT * 2);
        assert_eq!(*waits.last().unwrap(), LONGEST_WAIT);
        reconnect.connected();
        assert_eq!(reconnect.failed(&"down again"), FIRST_WAIT);
    }
}
