//! The scheduler's background loops, one file each. Each runs until the scheduler stops and
//! survives its database or broker going away: it logs, waits and tries again.

pub mod gauges;
pub mod listener;
pub mod orphans;
pub mod outbox_relay;
pub mod retention;
pub mod schedules;
pub mod sweeper;
pub mod triggers;

/// How long to wait before repeating a periodic check that scans a backlog: its interval, or
/// longer when the check itself took long, so it never takes more than a twentieth of a
/// core however large the backlog grows (that is when the core is needed elsewhere).
pub fn paced(interval: std::time::Duration, took: std::time::Duration) -> std::time::Duration {
    interval.max(took * 20)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn a_slow_check_waits_twenty_times_its_own_duration() {
        let second = Duration::from_secs(1);
        assert_eq!(super::paced(second, Duration::from_millis(3)), second);
        assert_eq!(
            super::paced(second, Duration::from_millis(500)),
            Duration::from_secs(10)
        );
    }
}
