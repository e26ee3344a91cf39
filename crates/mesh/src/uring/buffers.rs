//! Provided buffers: a ring of fixed-size receive buffers registered with a
//! worker's io_uring (`IORING_REGISTER_PBUF_RING`).
//!
//! A receive names the buffer group, not a buffer: the kernel takes a buffer
//! from the ring only when bytes arrive, so a connection waiting for data
//! holds none (what keeps an idle connection at about 0.5 KiB). The worker
//! owns the buffer from that completion until the send of its bytes
//! completes, then gives it back to the ring. The buffers' memory is one allocation made once per worker; its
//! pages become resident only once a receive has written to them.

use std::alloc::{self, Layout};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::Submitter;

/// Alignment the kernel asks of a buffer ring (a page).
const RING_ALIGN: usize = 4096;

/// A registered ring of `count` buffers of `size` bytes each.
pub(crate) struct ProvidedBuffers {
    /// The ring entries the kernel reads (page aligned).
    ring: NonNull<BufRingEntry>,
    ring_layout: Layout,
    /// The buffers themselves, `size` bytes each, in buffer id order.
    data: NonNull<u8>,
    data_layout: Layout,
    size: usize,
    count: u16,
    /// Our copy of the ring's tail: the next entry to fill.
    tail: u16,
    group: u16,
}

impl ProvidedBuffers {
    /// Allocates `count` buffers of `size` bytes (`count` a power of two up
    /// to 32768), registers them as buffer group `group` and hands all of
    /// them to the kernel.
    pub(crate) fn register(
        submitter: &Submitter<'_>,
        group: u16,
        count: u16,
        size: usize,
    ) -> io::Result<Self> {
        if !count.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer ring size must be a power of two",
            ));
        }
        let invalid = |_| io::Error::from(io::ErrorKind::InvalidInput);
        let ring_layout = Layout::from_size_align(
            usize::from(count) * std::mem::size_of::<BufRingEntry>(),
            RING_ALIGN,
        )
        .map_err(invalid)?;
        let data_layout =
            Layout::from_size_align(usize::from(count) * size, RING_ALIGN).map_err(invalid)?;
        // SAFETY: both layouts have a non-zero size (count >= 1, size of an
        // entry 16); the results are checked for null.
        let (ring, data) = unsafe { (alloc::alloc_zeroed(ring_layout), alloc::alloc(data_layout)) };
        let (Some(ring), Some(data)) = (NonNull::new(ring.cast()), NonNull::new(data)) else {
            // SAFETY: whichever allocation succeeded is freed with its layout.
            unsafe {
                if !ring.is_null() {
                    alloc::dealloc(ring, ring_layout);
                }
                if !data.is_null() {
                    alloc::dealloc(data, data_layout);
                }
            }
            return Err(io::ErrorKind::OutOfMemory.into());
        };
        let mut buffers = Self {
            ring,
            ring_layout,
            data,
            data_layout,
            size,
            count,
            tail: 0,
            group,
        };
        // SAFETY: the ring is page aligned, `count` entries long, and lives
        // until `Drop`, which runs only after the worker has unregistered it
        // or dropped its ring (see `Worker`'s field order).
        unsafe { submitter.register_buf_ring_with_flags(ring.as_ptr() as u64, count, group, 0)? };
        for id in 0..count {
            buffers.recycle(id);
        }
        Ok(buffers)
    }

    /// The buffer group receives name.
    pub(crate) fn group(&self) -> u16 {
        self.group
    }

    /// The first `len` bytes of buffer `id`, which the kernel filled.
    pub(crate) fn bytes(&self, id: u16, len: usize) -> &[u8] {
        assert!(id < self.count && len <= self.size);
        // SAFETY: buffer `id` lies inside the data allocation, and the worker
        // owns it (a completion handed it over and it is not yet recycled),
        // so the kernel does not write to it.
        unsafe {
            std::slice::from_raw_parts(self.data.as_ptr().add(usize::from(id) * self.size), len)
        }
    }

    /// Gives buffer `id` back to the kernel.
    pub(crate) fn recycle(&mut self, id: u16) {
        assert!(id < self.count);
        let mask = self.count - 1;
        let index = usize::from(self.tail & mask);
        // SAFETY: `index` is inside the ring; the entry at the tail is not
        // one the kernel reads until the tail moves past it below.
        let entry = unsafe { &mut *self.ring.as_ptr().add(index) };
        // SAFETY: as in `bytes`.
        let addr = unsafe { self.data.as_ptr().add(usize::from(id) * self.size) };
        entry.set_addr(addr as u64);
        entry.set_len(self.size as u32);
        entry.set_bid(id);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail is a u16 inside the ring's first entry, aligned
        // for atomic access; the kernel reads it with acquire ordering.
        let tail =
            unsafe { AtomicU16::from_ptr(BufRingEntry::tail(self.ring.as_ptr()).cast_mut()) };
        tail.store(self.tail, Ordering::Release);
    }
}

impl Drop for ProvidedBuffers {
    fn drop(&mut self) {
        // SAFETY: both were allocated in `register` with these layouts, and
        // the kernel no longer uses them (see `register`).
        unsafe {
            alloc::dealloc(self.ring.as_ptr().cast(), self.ring_layout);
            alloc::dealloc(self.data.as_ptr(), self.data_layout);
        }
    }
}
