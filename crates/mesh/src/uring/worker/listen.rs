//! A worker's listening sockets: a multishot accept per published port,
//! cancelled to unlisten, and a backoff timeout after failed accepts.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use io_uring::{cqueue, opcode, types};
use tracing::debug;

use super::op::{user_data, Op, Side, NO_CONN};
use super::state::ListenSocket;
use super::{slots, Worker};
use crate::accept_errors::ACCEPT_BACKOFF_STEPS;

impl Worker {
    pub(super) fn arm_accept(&mut self, slot: usize) {
        let Some(l) = self.listeners.get_mut(slot) else {
            return;
        };
        if l.closing {
            self.close_listener(slot);
            return;
        }
        let entry = opcode::AcceptMulti::new(types::Fd(l.socket.as_raw_fd()))
            .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
            .build()
            .user_data(user_data(Op::Accept, Side::Up, slot));
        // SAFETY: a multishot accept points at nothing but the socket, which
        // is closed only after its last completion.
        unsafe { self.push(&[entry]) };
    }

    /// Stops the accepts of the listeners `which` picks; each is closed at
    /// its accept's last completion.
    pub(super) fn unlisten(&mut self, which: impl Fn(&ListenSocket) -> bool) {
        for slot in slots(&self.listeners) {
            let l = self.listeners.get_mut(slot).expect("a listed slot");
            if l.closing || !which(l) {
                continue;
            }
            l.closing = true;
            let entry = opcode::AsyncCancel::new(user_data(Op::Accept, Side::Up, slot))
                .build()
                .user_data(user_data(Op::Cancel, Side::Up, NO_CONN));
            // SAFETY: a cancel points at no memory.
            unsafe { self.push(&[entry]) };
        }
    }

    pub(super) fn close_listener(&mut self, slot: usize) {
        if let Some(l) = self.listeners.try_remove(slot) {
            debug!(port = l.port, "listener closed");
        }
    }

    pub(super) fn accept_completed(&mut self, slot: usize, res: i32, flags: u32) {
        let Some(l) = self.listeners.get_mut(slot) else {
            return;
        };
        let port = l.port;
        let more = cqueue::more(flags);
        if res >= 0 {
            l.failures = 0;
            self.shared.accept_errors.succeeded();
            // SAFETY: the kernel made this fd for us.
            let client = unsafe { OwnedFd::from_raw_fd(res) };
            self.accepted(client, port);
        }
        if more {
            return;
        }
        let closing = self.listeners.get_mut(slot).is_some_and(|l| l.closing);
        if closing || res == -libc::ECANCELED {
            self.close_listener(slot);
        } else if res < 0 {
            // Typically EMFILE: the connection stays queued and the next
            // accept fails the same way until descriptors free.
            self.shared
                .accept_errors
                .failed(port, &io::Error::from_raw_os_error(-res));
            let l = self.listeners.get_mut(slot).expect("checked above");
            l.failures = l.failures.saturating_add(1);
            let step = (l.failures as usize).min(ACCEPT_BACKOFF_STEPS) - 1;
            let entry = opcode::Timeout::new(&self.accept_backoffs[step])
                .build()
                .user_data(user_data(Op::AcceptRetry, Side::Up, slot));
            // SAFETY: the timespec is read when the entry is submitted; it
            // lives in the worker, which outlives its ring's submissions.
            unsafe { self.push(&[entry]) };
        } else {
            self.arm_accept(slot);
        }
    }
}
