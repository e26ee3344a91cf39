//! Moving a connection's bytes: per direction a receive (into a provided
//! buffer, or the direction's own when the ring ran out), then a send of
//! what it received; a bulk direction moves by splice(2) on readiness. Ends
//! pass on half-closes; the first error ends both directions.

use std::io;

use io_uring::{cqueue, opcode, squeue, types};
use tracing::debug;

use super::op::{user_data, Op, Side};
use super::state::{Buffer, Chunk};
use super::{Worker, BUF_SIZE};
use crate::pipe::Pipe;
use crate::table::EndpointEntry;

impl Worker {
    /// Arms the next read of a direction: a receive into a provided buffer
    /// (or the direction's own, when the ring ran out), or a readiness poll
    /// on its source for a bulk direction or one waiting for a buffer.
    pub(super) fn recv(&mut self, slot: usize, side: Side) {
        let group = self.buffers.group();
        let c = self.conn(slot);
        let (src, _) = c.fds(side);
        let dir = c.dir(side);
        let entry = if dir.splicing || dir.starved {
            let mask = (libc::POLLIN | libc::POLLRDHUP) as u32;
            opcode::PollAdd::new(types::Fd(src), mask)
                .build()
                .user_data(user_data(Op::PollIn, side, slot))
        } else if let Some(spare) = dir.spare.as_mut() {
            opcode::Recv::new(types::Fd(src), spare.as_mut_ptr(), BUF_SIZE as u32)
                .build()
                .user_data(user_data(Op::Recv, side, slot))
        } else {
            opcode::Recv::new(types::Fd(src), std::ptr::null_mut(), BUF_SIZE as u32)
                .buf_group(group)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT)
                .user_data(user_data(Op::Recv, side, slot))
        };
        c.inflight += 1;
        // SAFETY: a spare buffer is boxed in the boxed connection, which is
        // freed only with nothing in flight; provided buffers and polls point
        // at nothing of ours.
        unsafe { self.push(&[entry]) };
    }

    pub(super) fn recv_completed(&mut self, slot: usize, side: Side, res: i32, flags: u32) {
        let provided = cqueue::buffer_select(flags);
        let held = &self.shared.held;
        let c = self.conns.get_mut(slot).expect("a live connection");
        c.inflight -= 1;
        let dir = &mut c.dirs[side as usize];
        let chunk = match (res, provided) {
            (n, Some(id)) if n > 0 => {
                held.acquire();
                Some(Buffer::Provided(id))
            }
            (n, None) if n > 0 => dir.spare.take().map(Buffer::Own),
            _ => None,
        };
        if c.closing {
            if let Some(buf) = chunk {
                self.release(buf);
            }
            self.finish(slot);
            return;
        }
        if res == -libc::ENOBUFS {
            // Every provided buffer is in use (the kernel takes one before it
            // looks for bytes): wait for bytes without a buffer, then read
            // them into one of the direction's own.
            dir.starved = true;
            self.recv(slot, side);
            return;
        }
        if res < 0 {
            self.fail(slot, side, io::Error::from_raw_os_error(-res));
            return;
        }
        let Some(buf) = chunk else {
            if res > 0 {
                // Bytes with no buffer to hold them: not something the
                // kernel does; end the connection rather than lose them.
                let err = io::Error::other("receive completed without a buffer");
                self.fail(slot, side, err);
                return;
            }
            dir.eof = true;
            if side == Side::Down || c.connected {
                self.end(slot, side);
            }
            return;
        };
        let len = res as usize;
        if len == BUF_SIZE {
            dir.splicing = true;
        }
        dir.chunk = Some(Chunk { buf, len, sent: 0 });
        if c.connected {
            self.send(slot, side);
        }
    }

    pub(super) fn send(&mut self, slot: usize, side: Side) {
        let c = self.conns.get_mut(slot).expect("a live connection");
        let (_, dst) = c.fds(side);
        let chunk = c.dirs[side as usize]
            .chunk
            .as_ref()
            .expect("a chunk to send");
        let bytes = match &chunk.buf {
            Buffer::Provided(id) => self.buffers.bytes(*id, chunk.len),
            Buffer::Own(buf) => &buf[..chunk.len],
        };
        let rest = &bytes[chunk.sent..];
        let entry = opcode::Send::new(types::Fd(dst), rest.as_ptr(), rest.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(user_data(Op::Send, side, slot));
        c.inflight += 1;
        // SAFETY: the bytes are in a provided buffer this connection owns
        // until the send completes, or in its own boxed buffer.
        unsafe { self.push(&[entry]) };
    }

    pub(super) fn send_completed(&mut self, slot: usize, side: Side, res: i32) {
        let c = self.conn(slot);
        c.inflight -= 1;
        if c.closing {
            self.finish(slot);
            return;
        }
        if res < 0 {
            self.fail(slot, side, io::Error::from_raw_os_error(-res));
            return;
        }
        let sent = res as usize;
        if let Some((entry, _)) = &c.endpoint {
            counter(entry, side).inc_by(sent as u64);
        }
        let chunk = c.dir(side).chunk.as_mut().expect("a chunk in flight");
        chunk.sent += sent;
        if chunk.sent < chunk.len {
            self.send(slot, side);
            return;
        }
        let chunk = c.dir(side).chunk.take().expect("checked above");
        self.release(chunk.buf);
        self.recv(slot, side);
    }

    /// Moves a bulk direction's bytes with splice(2) until its source would
    /// block, its destination is full (then waits for it), or it ends.
    pub(super) fn splice_burst(&mut self, slot: usize, side: Side) {
        let held = &self.shared.held;
        let c = self.conns.get_mut(slot).expect("a live connection");
        let (src, dst) = c.fds(side);
        let bytes = c.endpoint.as_ref().map(|(e, _)| counter(e, side).clone());
        let dir = &mut c.dirs[side as usize];
        if dir.pipe.is_none() {
            match Pipe::take() {
                Ok(pipe) => {
                    held.acquire();
                    dir.pipe = Some(pipe);
                    dir.moved = 0;
                }
                Err(_) => {
                    // Out of fds, say: copy instead.
                    dir.splicing = false;
                    self.recv(slot, side);
                    return;
                }
            }
        }
        let pipe = dir.pipe.as_mut().expect("taken above");
        loop {
            if pipe.pending() > 0 {
                match pipe.drain_to(dst) {
                    Ok(n) => {
                        if let Some(b) = &bytes {
                            b.inc_by(n as u64);
                        }
                        held.spliced(n);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        let mask = libc::POLLOUT as u32;
                        let entry = opcode::PollAdd::new(types::Fd(dst), mask)
                            .build()
                            .user_data(user_data(Op::PollOut, side, slot));
                        c.inflight += 1;
                        // SAFETY: a poll points at no memory.
                        unsafe { self.push(&[entry]) };
                        return;
                    }
                    Err(e) => return self.fail(slot, side, e),
                }
            }
            match pipe.fill_from(src) {
                Ok(0) => {
                    drop(dir.pipe.take());
                    held.release();
                    self.end(slot, side);
                    return;
                }
                Ok(n) => dir.moved += n,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || (dir.moved == 0 && e.raw_os_error() == Some(libc::EINVAL)) =>
                {
                    // A burst smaller than one buffer (or splice refused):
                    // copy the next ones, as a pipe costs a syscall more.
                    if dir.moved < BUF_SIZE {
                        dir.splicing = false;
                    }
                    drop(dir.pipe.take());
                    held.release();
                    self.recv(slot, side);
                    return;
                }
                Err(e) => return self.fail(slot, side, e),
            }
        }
    }

    /// A direction read its end of stream with everything before it passed
    /// on: the half-close goes to the other side, and the connection closes
    /// once both directions have ended.
    pub(super) fn end(&mut self, slot: usize, side: Side) {
        let c = self.conn(slot);
        c.dir(side).done = true;
        if c.dir(side.other()).done {
            self.finish(slot);
            return;
        }
        let (_, dst) = c.fds(side);
        // The peer may be gone already.
        // SAFETY: shutdown(2) on a socket this connection owns.
        let _ = unsafe { libc::shutdown(dst, libc::SHUT_WR) };
    }

    /// The first I/O error ends both directions.
    pub(super) fn fail(&mut self, slot: usize, side: Side, err: io::Error) {
        let c = self.conn(slot);
        let direction = match side {
            Side::Up => "client -> backend",
            Side::Down => "backend -> client",
        };
        debug!(service = %c.service.name(), port = c.port, error = %err, "{direction}: connection ended with error");
        c.failed = true;
        self.finish(slot);
    }
}

/// The byte counter of a direction.
#[inline]
fn counter(entry: &EndpointEntry, side: Side) -> &prometheus::IntCounter {
    match side {
        Side::Up => &entry.metrics.bytes_from_client,
        Side::Down => &entry.metrics.bytes_to_client,
    }
}
