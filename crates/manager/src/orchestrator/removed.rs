//! Tasks whose service is gone are marked for removal; the reaper deletes
//! them once their agent has stopped them.

use shoal_api::pb::TaskState;

use super::tasks::{set_desired, Changes};
use crate::state::ClusterView;

pub fn reconcile(view: &mut ClusterView, changes: &mut Changes) {
    let orphans: Vec<String> = view
        .tasks
        .values()
        .filter(|t| !view.services.contains_key(&t.service_id))
        .filter(|t| t.desired_state < TaskState::Remove as i32)
        .map(|t| t.id.clone())
        .collect();
    for id in orphans {
        set_desired(view, changes, &id, TaskState::Remove);
    }
}
