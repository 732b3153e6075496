//! The dispatcher: publishes each task to the `tasks` queue when it is due, highest priority
//! first. Postgres is the queue; the broker only holds a bounded window of due tasks no worker
//! has taken yet (the queue's ready messages), refilled in priority order as workers take
//! them, because the broker cannot order 2^53 priorities itself. While no due task waits in
//! Postgres, the dispatcher lends the window's free room to the API ([`FastLane`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::broker::{AmqpError, Publisher, TASKS_QUEUE};
use common::db::DispatchQueries;
use common::messages::TaskMessage;
use tokio::sync::{Notify, RwLock, watch};

use crate::config::DispatchConfig;
use crate::timer::PreciseTimer;

use common::metrics::Metrics;

/// How often the window is re-checked while workers take messages from it: they free room
/// without telling the scheduler (a NOTIFY per claim would serialize every commit).
const IN_FLIGHT_POLL: Duration = Duration::from_millis(10);
/// The slowest re-check, reached by doubling while nobody takes the waiting messages (no
/// worker is up, say).
const UNTAKEN_POLL: Duration = Duration::from_millis(320);

pub struct Dispatcher {
    pub outlet: Outlet,
    pub config: DispatchConfig,
    pub fast_lane: Arc<FastLane>,
    /// Wakes the dispatcher when the next task falls due, to the tens of microseconds.
    pub timer: PreciseTimer,
}

/// The way past the dispatcher for a task that is due when it is created: its request
/// stores it as dispatched and publishes it, a dispatch pass (a transaction and a wake-up)
/// sooner. Only while the last pass left no due task waiting in Postgres, so a task never
/// overtakes one of higher priority, and only as many as the window had room for then.
pub struct FastLane {
    outlet: Outlet,
    places: Places,
}

/// What publishes tasks marked dispatched, for the dispatcher's passes and the fast lane.
#[derive(Clone)]
pub struct Outlet {
    /// Also the outbox relay's.
    pub publisher: Arc<Publisher>,
    queries: DispatchQueries,
    /// Wakes the dispatcher.
    wakeup: Arc<Notify>,
    metrics: Arc<Metrics>,
    /// Held shared by every batch of messages from its send until its confirm (or failure),
    /// so counting the queue can first wait for all of them.
    unconfirmed: Arc<RwLock<()>>,
    sent: Arc<SentMessages>,
}

/// How many tasks each of the newest messages sent names, newest last. The broker counts
/// messages and the window is in tasks; the ready messages of a queue consumed in order are
/// the newest ones.
#[derive(Default)]
struct SentMessages(std::sync::Mutex<VecDeque<usize>>);

/// More messages than a window ever holds (a window is bounded by the tasks it names).
const SENT_MESSAGES_KEPT: usize = 4096;

impl SentMessages {
    fn record(&self, sizes: impl IntoIterator<Item = usize>) {
        if let Ok(mut kept) = self.0.lock() {
            kept.extend(sizes);
            let excess = kept.len().saturating_sub(SENT_MESSAGES_KEPT);
            kept.drain(..excess);
        }
    }

    /// The tasks named by the newest `messages` messages; one each for those this outlet did
    /// not send (another scheduler's, a worker's hand-back, a synchronous request).
    fn tasks_in_newest(&self, messages: usize) -> i64 {
        let Ok(kept) = self.0.lock() else {
            return messages as i64;
        };
        let known = kept.len().min(messages);
        let tasks: usize = kept.iter().rev().take(known).sum();
        (tasks + (messages - known)) as i64
    }
}

impl FastLane {
    pub fn new(outlet: Outlet) -> Self {
        FastLane {
            outlet,
            places: Places::default(),
        }
    }

    /// Takes a place for a task about to be created due now, if there is one.
    pub fn take(&self) -> Option<Place> {
        self.places.take()
    }

    /// Gives back a place taken for a task that was not stored as dispatched after all (its
    /// function is unknown or disabled, or the insert failed), so it is not lost until the
    /// next dispatch pass.
    pub fn give_back(&self, place: Place) {
        self.places.give_back(place);
    }

    /// Publishes a task stored as dispatched, in the background. If the broker does not take
    /// it, the dispatcher is woken, so the task goes out with the next pass.
    pub fn publish(&self, task_id: String) {
        let outlet = self.outlet.clone();
        tokio::spawn(async move {
            if outlet.publish_marked(vec![task_id], 1).await.is_err() {
                outlet.wakeup.notify_one();
            }
        });
    }

    /// Lends `room` places until the next `close`.
    fn open(&self, room: i64) {
        self.places.open(room);
    }

    /// Takes back the places not used; returns how many were left.
    fn close(&self) -> i64 {
        self.places.close()
    }
}

/// The places the dispatcher lends the fast lane. Each pass closes the lending and opens a
/// new one; a place goes back only to the lending it came from, as the pass that closed a
/// lending counted every place not returned by then as a published message.
#[derive(Default)]
struct Places(AtomicU64);

/// A place taken from the fast lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    lending: u32,
}

/// The lending number (high half) and its room left (low half).
fn places(lending: u32, room: u32) -> u64 {
    (u64::from(lending) << 32) | u64::from(room)
}

fn lending_and_room(places: u64) -> (u32, u32) {
    ((places >> 32) as u32, places as u32)
}

impl Places {
    fn take(&self) -> Option<Place> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                let (lending, room) = lending_and_room(current);
                (room > 0).then(|| places(lending, room - 1))
            })
            .ok()
            .map(|taken| Place {
                lending: lending_and_room(taken).0,
            })
    }

    fn give_back(&self, place: Place) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                let (lending, room) = lending_and_room(current);
                (lending == place.lending).then(|| places(lending, room + 1))
            });
    }

    /// Lends `room` places in the current lending, which `close` left empty.
    fn open(&self, room: i64) {
        let room = room.clamp(0, i64::from(u32::MAX - 1)) as u32;
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                Some(places(lending_and_room(current).0, room))
            });
    }

    /// Ends the lending, so no place can be taken or given back to it any more, and starts
    /// an empty one; returns the room the ended one had left.
    fn close(&self) -> i64 {
        let ended = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                Some(places(lending_and_room(current).0.wrapping_add(1), 0))
            })
            .unwrap_or_else(|current| current);
        i64::from(lending_and_room(ended).1)
    }
}

impl Dispatcher {
    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let redispatch_after = self.config.redispatch_after();
        // Unclaimed tasks are taken again once `redispatch_after` passed (their message was
        // lost), so the dispatcher never sleeps longer than that.
        let longest_sleep = self.config.max_sleep().min(redispatch_after);
        // Tasks of deleted functions are failed on their own clock: that check reads every
        // due task, and would otherwise hold up the dispatch of tasks falling due meanwhile.
        let orphans = tokio::spawn(fail_orphans(self.outlet.queries.clone(), stop.clone()));
        let mut poll = IN_FLIGHT_POLL;
        let mut left_waiting = None;
        let mut lent = 0;
        loop {
            // At most the messages the last pass left in the broker, plus those the API's
            // fast lane published since, still wait there: workers only take them away.
            let at_most_waiting = left_waiting.unwrap_or(0) + lent - self.fast_lane.close();
            let pass = self.pass(redispatch_after, at_most_waiting).await;
            lent = pass.as_ref().map_or(0, |pass| pass.free_room);
            self.fast_lane.open(lent);
            let wait = match pass {
                Ok(pass) => {
                    let wait = match pass.waiting {
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
                _ = self.outlet.wakeup.notified() => {}
                _ = self.timer.sleep(wait) => {}
                _ = common::shutdown::stopped(&mut stop) => break,
            }
        }
        if let Err(error) = orphans.await {
            tracing::warn!(%error, "the check for tasks of deleted functions ended abnormally");
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
}

impl Outlet {
    pub fn new(
        publisher: Arc<Publisher>,
        queries: DispatchQueries,
        wakeup: Arc<Notify>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Outlet {
            publisher,
            queries,
            wakeup,
            metrics,
            unconfirmed: Arc::default(),
            sent: Arc::default(),
        }
    }

    /// How many tasks the messages waiting in the `tasks` queue name, counting every message
    /// this outlet sent before. A quorum queue counts a message once it is committed, which
    /// its confirm tells: a count taken before the confirms still due would miss those
    /// messages and let a pass overfill the window. (The client's own `wait_for_confirms` is
    /// no substitute: it waits for the newest message at the time of the call, and when
    /// another one is sent before that one's confirm arrives, it is never woken.)
    async fn waiting_tasks(&self) -> Result<i64, AmqpError> {
        drop(self.unconfirmed.write().await);
        let messages = self.publisher.ready_messages(TASKS_QUEUE).await?;
        Ok(self.sent.tasks_in_newest(messages as usize))
    }

    /// Publishes tasks already marked dispatched (by a pass or by the API's fast lane): hands
    /// their messages to the broker, in order, and returns; their confirms are awaited in the
    /// background, so the next pass does not wait for the broker's round trip and log flush
    /// (which its disk sometimes stretches to milliseconds). Tasks whose messages the broker
    /// does not take are marked undispatched again and the dispatcher woken, so the next pass
    /// publishes them rather than the redispatch timeout (a send that fails is the caller's to
    /// retry); a crash in between leaves them to that timeout.
    async fn publish_marked(
        &self,
        task_ids: Vec<String>,
        per_message: usize,
    ) -> Result<(), AmqpError> {
        // Each message with the number of tasks it names, so the two never disagree.
        let (sizes, messages): (Vec<usize>, Vec<_>) = task_ids
            .chunks(per_message.max(1))
            .filter_map(|chunk| Some((chunk.len(), due_message(chunk)?)))
            .unzip();
        let unconfirmed = self.unconfirmed.clone().read_owned().await;
        match self.publisher.send_all("", messages).await {
            Ok(sent) => {
                self.sent.record(sizes);
                let outlet = self.clone();
                tokio::spawn(async move {
                    let confirmed = outlet.publisher.confirmed(sent).await;
                    drop(unconfirmed);
                    match confirmed {
                        Ok(()) => outlet
                            .metrics
                            .tasks_dispatched
                            .inc_by(task_ids.len() as u64),
                        Err(error) => {
                            outlet.hand_back(&task_ids, &error).await;
                            outlet.wakeup.notify_one();
                        }
                    }
                });
                Ok(())
            }
            // The caller retries, with its own backoff while the broker is unreachable.
            Err(error) => {
                self.hand_back(&task_ids, &error).await;
                Err(error)
            }
        }
    }

    /// Marks tasks whose messages the broker did not take as undispatched again.
    async fn hand_back(&self, task_ids: &[String], error: &AmqpError) {
        tracing::warn!(tasks = task_ids.len(), %error, "the broker did not take due tasks; the next dispatch pass publishes them");
        if let Err(undispatch) = self.queries.undispatch(task_ids).await {
            tracing::warn!(tasks = task_ids.len(), error = %undispatch, "could not hand unpublished tasks back; they are republished after the redispatch timeout");
        }
    }
}

/// The message telling workers that tasks are due, for the default exchange.
fn due_message(task_ids: &[String]) -> Option<(String, Vec<u8>)> {
    let body = serde_json::to_vec(&TaskMessage::of(task_ids)?).ok()?;
    Some((TASKS_QUEUE.to_owned(), body))
}

/// Fails the due tasks whose function was deleted, every second (less often while a large
/// backlog makes the check slow), until `stop`.
async fn fail_orphans(queries: DispatchQueries, mut stop: watch::Receiver<bool>) {
    let mut wait = Duration::from_secs(1);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = common::shutdown::stopped(&mut stop) => return,
        }
        let started = std::time::Instant::now();
        match queries.fail_orphans().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(tasks = n, "failed tasks whose function was deleted"),
            Err(error) => tracing::warn!(%error, "checking for tasks of deleted functions failed"),
        }
        wait = crate::paced(Duration::from_secs(1), started.elapsed());
    }
}

/// What one dispatch pass leaves behind.
struct Pass {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_counts_the_tasks_of_the_newest_messages() {
        let sent = SentMessages::default();
        sent.record([1, 8, 8, 3]);
        assert_eq!(sent.tasks_in_newest(0), 0);
        assert_eq!(sent.tasks_in_newest(2), 11);
        assert_eq!(sent.tasks_in_newest(4), 20);
        assert_eq!(
            sent.tasks_in_newest(6),
            22,
            "one each for messages sent by others"
        );
        sent.record(std::iter::repeat_n(2, SENT_MESSAGES_KEPT));
        assert_eq!(sent.0.lock().unwrap().len(), SENT_MESSAGES_KEPT);
    }

    #[test]
    fn a_place_goes_back_only_to_the_lending_it_came_from() {
        let places = Places::default();
        assert_eq!(places.take(), None, "nothing lent before the first pass");
        places.open(1);
        let place = places.take().expect("one place lent");
        assert_eq!(places.take(), None);
        places.give_back(place);
        let place = places.take().expect("the place given back");
        places.give_back(place);
        assert_eq!(places.close(), 1);

        let place = {
            places.open(1);
            places.take().expect("one place lent")
        };
        assert_eq!(places.close(), 0);
        places.give_back(place);
        assert_eq!(
            places.take(),
            None,
            "a place given back after closing stays closed"
        );
        places.open(0);
        places.give_back(place);
        assert_eq!(places.take(), None, "nor does it go to the next lending");
        assert_eq!(places.close(), 0);
    }
}
