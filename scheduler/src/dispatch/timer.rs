//! A timer that wakes its waiter within tens of microseconds of the deadline. Tokio's timers
//! round every deadline up to the next millisecond (and the runtime parks for whole
//! milliseconds), which adds up to a millisecond to the start of every task the dispatcher
//! publishes on its clock. One thread sleeps on a condition variable for the one deadline
//! the dispatcher waits for.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

#[derive(Default)]
struct Alarm {
    /// The deadline waited for and who to tell; replaced by each `sleep`.
    next: Option<(Instant, oneshot::Sender<()>)>,
    stopped: bool,
}

#[derive(Default)]
struct Shared {
    alarm: Mutex<Alarm>,
    changed: Condvar,
}

impl Shared {
    fn alarm(&self) -> MutexGuard<'_, Alarm> {
        self.alarm
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Serves one waiter at a time: a `sleep` replaces the deadline of the one before. Its thread
/// ends when the timer is dropped.
pub struct PreciseTimer {
    shared: Arc<Shared>,
}

impl PreciseTimer {
    pub fn start() -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let ringer = shared.clone();
        std::thread::Builder::new()
            .name("dispatch-timer".into())
            .spawn(move || ring(&ringer))?;
        Ok(PreciseTimer { shared })
    }

    /// Waits `duration`; a waiter that stops waiting (a `select!` that took another branch)
    /// costs nothing more.
    pub async fn sleep(&self, duration: Duration) {
        let (sender, woken) = oneshot::channel();
        self.shared.alarm().next = Some((Instant::now() + duration, sender));
        self.shared.changed.notify_one();
        let _ = woken.await;
    }
}

impl Drop for PreciseTimer {
    fn drop(&mut self) {
        self.shared.alarm().stopped = true;
        self.shared.changed.notify_one();
    }
}

fn ring(shared: &Shared) {
    let mut alarm = shared.alarm();
    while !alarm.stopped {
        match alarm.next.as_ref().map(|(deadline, _)| *deadline) {
            None => {
                alarm = shared
                    .changed
                    .wait(alarm)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    if let Some((_, waiter)) = alarm.next.take() {
                        let _ = waiter.send(());
                    }
                } else {
                    alarm = shared
                        .changed
                        .wait_timeout(alarm, deadline - now)
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakes_after_the_duration_and_a_new_sleep_replaces_the_old_one() {
        let timer = PreciseTimer::start().unwrap();
        let began = Instant::now();
        timer.sleep(Duration::from_micros(1500)).await;
        assert!(began.elapsed() >= Duration::from_micros(1500));

        // A sleep abandoned for a longer one does not wake the longer one early.
        let abandoned = tokio::time::timeout(
            Duration::from_millis(1),
            timer.sleep(Duration::from_millis(5)),
        )
        .await;
        assert!(abandoned.is_err());
        let began = Instant::now();
        timer.sleep(Duration::from_millis(20)).await;
        assert!(began.elapsed() >= Duration::from_millis(20));
    }
}
