//! The convergence display where stdout is not a terminal (a pipe, a file),
//! as Docker prints it there: each refresh appends its lines and nothing is
//! redrawn. Docker's `jsonmessage` drops every progress message with a bar
//! on such output, so what remains is the overall line of a service (until
//! it converges, and again once a task stops running), `active tasks`, the
//! waiting lines and the error of every task that failed, at each poll, so
//! a crash loop shows its errors as they come.

use super::snapshot::Snapshot;

/// Docker's non-terminal output across polls. Sans-IO: each poll returns
/// the lines to append.
#[derive(Debug, Default)]
pub struct PlainLog {
    /// The first overall line and the empty rows were printed.
    started: bool,
    /// The service converged: its overall line and task errors rest until
    /// it no longer is (Docker's `done`).
    resting: bool,
    /// The `rollback: ...` line was printed (Docker prints it once).
    rollback_shown: bool,
}

// === impl PlainLog ===

impl PlainLog {
    /// The lines one poll appends: the rollback line the first time there is
    /// one, then what Docker's progress updater writes that has no bar.
    pub fn poll(&mut self, rollback_line: Option<&str>, snap: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(line) = rollback_line.filter(|_| !self.rollback_shown) {
            out.push(line.to_string());
            self.rollback_shown = true;
        }
        let plain = &snap.plain;
        if let Some(waiting) = &plain.waiting {
            out.push(waiting.clone());
            return out;
        }
        if !self.started {
            self.started = true;
            out.extend(plain.first.iter().cloned());
            // Docker lays each row out with a one-space action.
            out.extend(plain.rows.iter().map(|id| format!("{id}:  ")));
        }
        if plain.job {
            out.extend(plain.errors.iter().cloned());
            out.extend(plain.active.iter().cloned());
            return out;
        }
        if self.resting && !snap.converged() {
            self.resting = false;
        }
        if !self.resting {
            out.extend(plain.errors.iter().cloned());
            out.extend(plain.overall.iter().cloned());
            self.resting = snap.converged();
        }
        out
    }
}
