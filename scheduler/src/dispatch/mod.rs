//! The dispatcher: publishes each task to the `tasks` queue when it is due, highest priority
//! first. Postgres is the queue; the broker only holds a bounded window of due tasks no worker
//! has taken yet (the queue's ready messages), refilled in priority order as workers take
//! them, because the broker cannot order 2^53 priorities itself. While no due task waits in
//! Postgres, the dispatcher lends the window's free room to the API (`fast_lane`).
//!
//! [`Dispatcher::run`] makes one pass after another: it fills the window, then sleeps until
//! a task falls due ([`timer`]), workers take messages from a full window, or a
//! [`DispatchHandle`] wakes it.
//! The `outlet` publishes what a pass or the fast lane marked dispatched.

mod fast_lane;
mod handle;
mod outlet;
mod queries;
pub mod timer;

use std::sync::Arc;
use std::time::Duration;

use common::broker::Publisher;
use common::db::Tasks;
use common::metrics::Metrics;
use tokio::sync::watch;

use crate::config::DispatchConfig;
use fast_lane::FastLane;
pub use handle::DispatchHandle;
use outlet::Outlet;
pub use queries::DispatchQueries;
use timer::PreciseTimer;

/// How often a full window is re-checked while workers take messages from it: they free room
/// without telling the scheduler (a NOTIFY per claim would serialize every commit).
const IN_FLIGHT_POLL: Duration = Duration::from_millis(10);
/// The slowest re-check, reached by doubling while nobody takes the waiting messages (no
/// worker is up, say).
const UNTAKEN_POLL: Duration = Duration::from_millis(320);

pub struct Dispatcher {
    outlet: Outlet,
    config: DispatchConfig,
    fast_lane: Arc<FastLane>,
    /// Wakes the dispatcher when the next task falls due, to the tens of microseconds.
    timer: PreciseTimer,
}

impl Dispatcher {
    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let redispatch_after = self.config.redispatch_after();
        // Unclaimed tasks are taken again once `redispatch_after` passed (their message was
        // lost), so the dispatcher never sleeps longer than that.
        let longest_sleep = self.config.max_sleep().min(redispatch_after);
        let mut poll = IN_FLIGHT_POLL;
        let mut left_waiting = None;
        let mut lent = 0;
        loop {
            // At most the messages the last pass left in the broker, plus those the API's
            // fast lane published since, still wait there: workers only take them away.
            let at_most_waiting = left_waiting.unwrap_or(0) + lent - self.fast_lane.take_back();
            let pass = self.pass(redispatch_after, at_most_waiting).await;
            lent = pass.as_ref().map_or(0, |pass| pass.free_room);
            self.fast_lane.lend(lent);
            let wait = match pass {
                Ok(pass) => {
                    let wait = match pass.waiting {
                        // Room matters only while due tasks wait in Postgres for it. With none
                        // left, the next task due or submitted wakes the dispatcher: an idle
                        // scheduler sleeps, however many messages still wait in the broker.
                        Some(Waiting { left, .. }) if !pass.full => {
                            left_waiting = Some(left);
                            longest_sleep
                        }
                        Some(Waiting { found, left }) => {
                            // Not asked, the broker had room enough: no reason to back off.
                            let taken = found.is_none_or(|found| {
                                left_waiting.is_none_or(|before| found < before)
                            });
                            poll = if taken {
                                IN_FLIGHT_POLL
                            } else {
                                (poll * 2).min(UNTAKEN_POLL)
                            };
                            left_waiting = Some(left);
                            poll
                        }
                        None => {
                            left_waiting = None;
                            longest_sleep
                        }
                    };
                    pass.next_start.map_or(wait, |next| next.min(wait))
                }
                Err(error) => {
                    tracing::warn!(%error, "dispatch pass failed, retrying");
                    Duration::from_millis(500)
                }
            };
            tokio::select! {
                _ = self.outlet.woken() => {}
                _ = self.timer.sleep(wait) => {}
                _ = common::shutdown::stopped(&mut stop) => break,
            }
        }
    }

    /// Fills the window, then says what it leaves behind. The broker is asked how many
    /// messages wait in it only when `at_most_waiting` (a bound the caller knows) would leave
    /// less than half the window free: the round trip would delay the task falling due now,
    /// and only another scheduler or a direct execution can have added messages unseen,
    /// which stretches the window by a few at most.
    async fn pass(&self, redispatch_after: Duration, at_most_waiting: i64) -> anyhow::Result<Pass> {
        let found = if at_most_waiting < self.config.window / 2 {
            None
        } else {
            Some(self.outlet.waiting_tasks().await?)
        };
        let began = std::time::Instant::now();
        let mut full = false;
        let mut waiting = found.unwrap_or(at_most_waiting);
        loop {
            let room = self.config.window - waiting;
            if room <= 0 {
                full = true;
                break;
            }
            let limit = room.min(self.config.batch);
            let tasks = self
                .outlet
                .queries
                .take_due(limit, redispatch_after)
                .await?;
            if tasks.is_empty() {
                break;
            }
            let count = tasks.len() as i64;
            // All the room was taken, so more tasks are likely due than the window holds:
            // several to a message. Otherwise one each, which any free worker can take.
            let per_message = if count == limit {
                self.config.tasks_per_message()
            } else {
                1
            };
            // Marked dispatched before they are published, so a worker's claim never waits
            // for this pass.
            let ids = tasks.into_iter().map(|task| task.id).collect();
            self.outlet.publish_marked(ids, per_message).await?;
            tracing::debug!(tasks = count, "dispatched");
            waiting += count;
            if count < limit {
                break;
            }
        }
        Ok(Pass {
            full,
            // Room is left only when the window did not fill up, so every due task went out.
            free_room: (self.config.window - waiting).max(0),
            waiting: (waiting > 0).then_some(Waiting {
                found,
                left: waiting,
            }),
            // With room left, a task that fell due while this pass ran goes out at once; with
            // the window full, nothing could go out before workers take messages anyway.
            next_start: self
                .outlet
                .queries
                .next_start(if full {
                    Duration::ZERO
                } else {
                    began.elapsed()
                })
                .await?,
        })
    }

    /// A dispatcher, to [`run`](Self::run), and the handle the rest of the scheduler reaches
    /// it by. `tasks` stores what is submitted through the handle; `queries` is on a
    /// [`common::db::queue_pool`].
    pub fn new(
        config: DispatchConfig,
        publisher: Arc<Publisher>,
        queries: DispatchQueries,
        tasks: Tasks,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Dispatcher, DispatchHandle)> {
        let outlet = Outlet::new(publisher, queries, metrics);
        let fast_lane = Arc::new(FastLane::new(outlet.clone()));
        let handle = DispatchHandle {
            tasks,
            fast_lane: fast_lane.clone(),
            outlet: outlet.clone(),
        };
        let dispatcher = Dispatcher {
            outlet,
            config,
            fast_lane,
            timer: PreciseTimer::start()?,
        };
        Ok((dispatcher, handle))
    }
}

/// What one dispatch pass leaves behind.
struct Pass {
    /// The window filled up: due tasks may still wait in Postgres for room.
    full: bool,
    /// Room left in the window with no due task left in Postgres (zero when one is left).
    free_room: i64,
    /// Messages waiting in the broker, if any: workers taking them will free room.
    waiting: Option<Waiting>,
    /// When the next task falls due, if one waits for its start.
    next_start: Option<Duration>,
}

/// The ready messages when a pass began (if the broker was asked), and when it ended.
struct Waiting {
    found: Option<i64>,
    left: i64,
}
