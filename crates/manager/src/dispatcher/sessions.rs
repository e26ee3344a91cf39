//! The session table: which nodes hold a live session with this manager,
//! when each last heartbeat, and the Raft term it opened in. It lives in
//! memory on the leader only (soft state): after a fail-over the new leader
//! starts empty and every agent opens a new session with it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tonic::Status;

/// One connected node.
struct Session {
    id: String,
    last_heartbeat: Instant,
    /// The Raft term this manager led in when the session opened; a
    /// session is only valid in that term.
    term: u64,
}

/// node id → live session.
#[derive(Default)]
pub struct Sessions {
    by_node: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Opens (or replaces) `node_id`'s session in `term`; returns its id.
    pub fn open(&self, node_id: &str, term: u64) -> String {
        let id = shoal_api::id::new_id();
        self.lock().insert(
            node_id.to_string(),
            Session {
                id: id.clone(),
                last_heartbeat: Instant::now(),
                term,
            },
        );
        id
    }

    /// Ends `node_id`'s session, if it has one.
    pub fn close(&self, node_id: &str) {
        self.lock().remove(node_id);
    }

    /// A heartbeat or a status report of `session_id`: valid only if it is
    /// `node_id`'s current session, opened in `term`.
    pub fn heartbeat(&self, node_id: &str, session_id: &str, term: u64) -> Result<(), Status> {
        match self.lock().get_mut(node_id) {
            Some(s) if s.id == session_id && s.term == term => {
                s.last_heartbeat = Instant::now();
                Ok(())
            }
            _ => Err(Status::not_found("session expired; open a new session")),
        }
    }

    /// Drops the sessions opened in other terms than `term`.
    pub fn keep_term(&self, term: u64) {
        self.lock().retain(|_, s| s.term == term);
    }

    /// Ends and returns the sessions without a heartbeat for `limit`.
    pub fn expire(&self, limit: Duration) -> Vec<String> {
        let mut sessions = self.lock();
        let gone: Vec<String> = sessions
            .iter()
            .filter(|(_, s)| s.last_heartbeat.elapsed() > limit)
            .map(|(n, _)| n.clone())
            .collect();
        for n in &gone {
            sessions.remove(n);
        }
        gone
    }

    /// Nodes with a live session.
    pub fn connected(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.by_node.lock().expect("sessions lock")
    }
}
