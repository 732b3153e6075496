//! How the rest of the scheduler reaches the dispatcher: the API submits the tasks its
//! requests create, and whatever creates tasks by other means wakes it.

use std::sync::Arc;

use common::db::tasks::NewTask;
use common::db::{StoreError, Tasks};
use common::domain::Task;

use super::fast_lane::FastLane;
use super::outlet::Outlet;

#[derive(Clone)]
pub struct DispatchHandle {
    pub(super) tasks: Tasks,
    pub(super) fast_lane: Arc<FastLane>,
    pub(super) outlet: Outlet,
}

impl DispatchHandle {
    /// Stores a task a request created and sees that it is published: by this call itself
    /// when the task is due now and the fast lane has room, else by the next dispatch pass,
    /// which it wakes. `None` when the task's function does not exist.
    pub async fn submit(&self, task: NewTask) -> Result<Option<Task>, StoreError> {
        let slot = if task.start_timestamp <= common::time::now() {
            self.fast_lane.take()
        } else {
            None
        };
        let created = self.tasks.insert(task, slot.is_some()).await;
        if let Some(slot) = slot
            && !matches!(&created, Ok(Some(created)) if created.dispatched)
        {
            self.fast_lane.give_back(slot);
        }
        let Some(created) = created? else {
            return Ok(None);
        };
        if created.dispatched {
            self.fast_lane.publish(created.task.id.to_string());
        } else {
            self.wake();
        }
        Ok(Some(created.task))
    }

    /// Tasks were stored by other means (a platform event, a schedule, another process):
    /// the dispatcher makes a pass at once rather than at its next timer.
    pub fn wake(&self) {
        self.outlet.wake_dispatcher();
    }
}
