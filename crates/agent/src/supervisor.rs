//! The sans-IO task supervisor: the node's assignment set in, actions out.
//!
//! It knows which tasks this agent runs a process for and decides, for every
//! assignment set the dispatcher sends, what to start, stop, report or forget.
//! It does no IO and reads no clock; the agent loop performs the actions.

use std::collections::HashMap;

use shoal_api::pb::{Task, TaskState, TaskStatus};
use shoal_api::state::is_terminal;

/// Error text for a task that was running when shoald went away.
pub const ERR_RESTARTED: &str = "task: shoald restarted while the task was running";

/// What the agent must do after a reconcile step.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Run the task's lifecycle (accept, prepare, start, supervise).
    Start(Box<Task>),
    /// Stop the task's process (SIGTERM, then SIGKILL after the grace period).
    Stop { task_id: String },
    /// Report a status without running anything.
    Report { task_id: String, status: TaskStatus },
    /// Drop every trace of the task's runner (it has finished).
    Forget { task_id: String },
}

/// Where this agent is with one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalState {
    /// A runner is driving the task.
    Active,
    /// The runner has been told to stop and has not finished yet.
    Stopping,
    /// The runner finished, or a terminal status was reported without one.
    Finished,
}

#[derive(Debug, Clone, Copy)]
struct Local {
    state: LocalState,
    /// Still in the latest assignment set; a task that is not is forgotten
    /// once its runner finishes.
    assigned: bool,
}

/// Tracks the tasks of this node across assignment sets.
#[derive(Debug, Default)]
pub struct TaskSupervisor {
    tasks: HashMap<String, Local>,
}

// === impl TaskSupervisor ===

impl TaskSupervisor {
    pub fn new() -> Self {
        Self::default()
    }

    /// The local state of a task, if this agent tracks it.
    pub fn state(&self, task_id: &str) -> Option<LocalState> {
        self.tasks.get(task_id).map(|l| l.state)
    }

    /// Number of tasks with a live runner (active or stopping).
    pub fn live(&self) -> usize {
        self.tasks
            .values()
            .filter(|l| l.state != LocalState::Finished)
            .count()
    }

    /// Applies a full assignment set.
    pub fn reconcile(&mut self, assignments: &[Task]) -> Vec<Action> {
        let mut actions = Vec::new();
        for l in self.tasks.values_mut() {
            l.assigned = false;
        }
        for task in assignments {
            let desired = task.desired_state();
            let status = task
                .status
                .as_ref()
                .map(|s| s.state())
                .unwrap_or(TaskState::New);
            let wants_stop = desired as i32 >= TaskState::Shutdown as i32;
            if let Some(local) = self.tasks.get_mut(&task.id) {
                local.assigned = true;
                if wants_stop && local.state == LocalState::Active {
                    local.state = LocalState::Stopping;
                    actions.push(Action::Stop {
                        task_id: task.id.clone(),
                    });
                }
                continue;
            }
            if is_terminal(status) {
                continue;
            }
            let started_elsewhere = status as i32 >= TaskState::Accepted as i32
                && status as i32 <= TaskState::Running as i32;
            let report = if wants_stop && (status as i32) < TaskState::Running as i32 {
                Some(TaskStatus {
                    state: TaskState::Shutdown as i32,
                    message: "shutdown".into(),
                    ..Default::default()
                })
            } else if started_elsewhere {
                Some(TaskStatus {
                    state: TaskState::Failed as i32,
                    message: "failed".into(),
                    err: ERR_RESTARTED.into(),
                    ..Default::default()
                })
            } else {
                None
            };
            if let Some(status) = report {
                self.tasks.insert(
                    task.id.clone(),
                    Local {
                        state: LocalState::Finished,
                        assigned: true,
                    },
                );
                actions.push(Action::Report {
                    task_id: task.id.clone(),
                    status,
                });
                continue;
            }
            // A job's task is wanted COMPLETE: it runs just the same.
            let wants_run = matches!(desired, TaskState::Running | TaskState::Complete);
            if wants_run && status == TaskState::Assigned {
                self.tasks.insert(
                    task.id.clone(),
                    Local {
                        state: LocalState::Active,
                        assigned: true,
                    },
                );
                actions.push(Action::Start(Box::new(task.clone())));
            }
        }
        // Tasks gone from the set: stop the live ones, forget finished ones.
        let mut gone: Vec<_> = self
            .tasks
            .iter_mut()
            .filter(|(_, l)| !l.assigned)
            .map(|(id, l)| (id.clone(), l))
            .collect();
        gone.sort_by(|a, b| a.0.cmp(&b.0));
        let mut forget = Vec::new();
        for (id, local) in gone {
            match local.state {
                LocalState::Active => {
                    local.state = LocalState::Stopping;
                    actions.push(Action::Stop { task_id: id });
                }
                LocalState::Stopping => {}
                LocalState::Finished => forget.push(id),
            }
        }
        for id in forget {
            self.tasks.remove(&id);
            actions.push(Action::Forget { task_id: id });
        }
        actions
    }

    /// A runner finished (its terminal status is reported).
    pub fn runner_finished(&mut self, task_id: &str) -> Vec<Action> {
        match self.tasks.get_mut(task_id) {
            Some(local) if local.assigned => {
                local.state = LocalState::Finished;
                Vec::new()
            }
            Some(_) => {
                self.tasks.remove(task_id);
                vec![Action::Forget {
                    task_id: task_id.to_string(),
                }]
            }
            None => Vec::new(),
        }
    }

    /// Every task with a live runner, to stop at shutdown.
    pub fn stop_all(&mut self) -> Vec<Action> {
        let mut ids: Vec<_> = self
            .tasks
            .iter_mut()
            .filter(|(_, l)| l.state == LocalState::Active)
            .map(|(id, l)| {
                l.state = LocalState::Stopping;
                id.clone()
            })
            .collect();
        ids.sort();
        ids.into_iter()
            .map(|task_id| Action::Stop { task_id })
            .collect()
    }
}

#[cfg(test)]
mod tests;
