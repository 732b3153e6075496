//! The way past the dispatcher for a task that is due when it is created: its request stores
//! it as dispatched and publishes it, a dispatch pass (a transaction and a wake-up) sooner.
//! Only while the last pass left no due task waiting in Postgres, so a task never overtakes
//! one of higher priority, and only as many as the window had room for then: each pass lends
//! the window's free room to the fast lane, and takes back what was not used.

use std::sync::atomic::{AtomicU64, Ordering};

use super::outlet::Outlet;

pub(super) struct FastLane {
    outlet: Outlet,
    room: LentRoom,
}

impl FastLane {
    pub(super) fn new(outlet: Outlet) -> Self {
        FastLane {
            outlet,
            room: LentRoom::default(),
        }
    }

    /// Takes room in the window for a task about to be created due now, if any is lent.
    pub(super) fn take(&self) -> Option<Slot> {
        self.room.take()
    }

    /// Gives back room taken for a task that was not stored as dispatched after all (its
    /// function is unknown or disabled, or the insert failed), so it is not lost until the
    /// next dispatch pass.
    pub(super) fn give_back(&self, slot: Slot) {
        self.room.give_back(slot);
    }

    /// Publishes a task stored as dispatched, in the background. If the broker does not take
    /// it, the dispatcher is woken, so the task goes out with the next pass.
    pub(super) fn publish(&self, task_id: String) {
        let outlet = self.outlet.clone();
        tokio::spawn(async move {
            if outlet.publish_marked(vec![task_id], 1).await.is_err() {
                outlet.wake_dispatcher();
            }
        });
    }

    /// Lends `room` until the next [`Self::take_back`].
    pub(super) fn lend(&self, room: i64) {
        self.room.lend(room);
    }

    /// Takes back the room lent and not used; returns how much was left.
    pub(super) fn take_back(&self) -> i64 {
        self.room.take_back()
    }
}

/// The free room of the window that the last dispatch pass lent the fast lane, with that
/// pass's number. Each pass first takes back what is left, counting all room not given back
/// by then as taken by a published message, then lends anew; so room goes back only to the
/// pass that lent it.
#[derive(Default)]
struct LentRoom(AtomicU64);

/// Room for one task in the window, taken from the fast lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Slot {
    /// The number of the pass that lent it.
    pass: u32,
}

/// The pass number (high half) and the room it has left (low half).
fn pack(pass: u32, room: u32) -> u64 {
    (u64::from(pass) << 32) | u64::from(room)
}

fn unpack(lent: u64) -> (u32, u32) {
    ((lent >> 32) as u32, lent as u32)
}

impl LentRoom {
    fn take(&self) -> Option<Slot> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                let (pass, room) = unpack(current);
                (room > 0).then(|| pack(pass, room - 1))
            })
            .ok()
            .map(|taken| Slot {
                pass: unpack(taken).0,
            })
    }

    fn give_back(&self, slot: Slot) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                let (pass, room) = unpack(current);
                (pass == slot.pass).then(|| pack(pass, room + 1))
            });
    }

    /// Lends `room` for the current pass, which `take_back` left with none.
    fn lend(&self, room: i64) {
        let room = room.clamp(0, i64::from(u32::MAX - 1)) as u32;
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                Some(pack(unpack(current).0, room))
            });
    }

    /// Ends the current pass's loan, so no room can be taken from it or given back to it any
    /// more, and starts the next pass's with none; returns the room the ended one had left.
    fn take_back(&self) -> i64 {
        let ended = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                Some(pack(unpack(current).0.wrapping_add(1), 0))
            })
            .unwrap_or_else(|current| current);
        i64::from(unpack(ended).1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_goes_back_only_to_the_pass_that_lent_it() {
        let lent = LentRoom::default();
        assert_eq!(lent.take(), None, "nothing lent before the first pass");
        lent.lend(1);
        let slot = lent.take().expect("room for one lent");
        assert_eq!(lent.take(), None);
        lent.give_back(slot);
        let slot = lent.take().expect("the room given back");
        lent.give_back(slot);
        assert_eq!(lent.take_back(), 1);

        let slot = {
            lent.lend(1);
            lent.take().expect("room for one lent")
        };
        assert_eq!(lent.take_back(), 0);
        lent.give_back(slot);
        assert_eq!(
            lent.take(),
            None,
            "room given back after the pass took back its loan stays taken"
        );
        lent.lend(0);
        lent.give_back(slot);
        assert_eq!(lent.take(), None, "nor does it go to the next pass");
        assert_eq!(lent.take_back(), 0);
    }
}
