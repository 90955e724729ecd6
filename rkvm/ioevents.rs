// SPDX-License-Identifier: GPL-2.0

//! A VM's `KVM_IOEVENTFD` assignments: guest writes that signal an eventfd
//! in the kernel instead of exiting to the VMM (a device's doorbell). The
//! rules are `ioeventfd.rs`.
//!
//! # Locking
//!
//! vCPUs look the list up on port-I/O and MMIO write exits under its SRCU;
//! `KVM_IOEVENTFD` builds a new list under `writer` and publishes it,
//! freeing the old one after the grace period (the eventfds live on in
//! the new one: entries are shared).

use kernel::{
    new_mutex, new_srcu,
    prelude::*,
    sync::{Arc, Mutex},
};

use crate::{
    ioeventfd::{IoEventRequest, IoEventSpec, IOEVENTFD_SIZE, MAX_IOEVENTFDS},
    shim::{eventfd::EventFd, srcu_box::SrcuBox},
};

/// One assignment.
struct IoEventFd {
    spec: IoEventSpec,
    eventfd: EventFd,
}

type List = KVec<Arc<IoEventFd>>;

#[pin_data]
pub(crate) struct IoEvents {
    #[pin]
    writer: Mutex<()>,
    #[pin]
    list: SrcuBox<List>,
}

impl IoEvents {
    pub(crate) fn new() -> Result<impl PinInit<Self, Error>> {
        let empty = KBox::new(KVec::new(), GFP_KERNEL)?;
        Ok(try_pin_init!(Self {
            writer <- new_mutex!((), "IoEvents::writer"),
            list <- SrcuBox::new(empty, new_srcu!("IoEvents::list")),
        }))
    }

    /// A guest write of `len` bytes of `value` at `addr` (port I/O or
    /// MMIO): signals the eventfd of the assignment that catches it, if
    /// any, and says whether one did (the write is then done).
    pub(crate) fn signal(&self, pio: bool, addr: u64, len: u32, value: u64) -> bool {
        let list = self.list.read();
        match list.iter().find(|e| e.spec.matches(pio, addr, len, value)) {
            Some(e) => {
                e.eventfd.signal();
                true
            }
            None => false,
        }
    }

    /// `KVM_IOEVENTFD`: assigns, with KVM's checks (`EINVAL` from the
    /// request's rules, `EBADF`/`EINVAL` for the fd, `EEXIST` for an
    /// assignment that could catch the same write, `ENOSPC` past the
    /// limit), or deassigns the one with the same eventfd, space, address,
    /// length and data match (`ENOENT` if none).
    pub(crate) fn ioctl(&self, b: &[u8; IOEVENTFD_SIZE]) -> Result {
        let req = IoEventRequest::from_bytes(b).map_err(|_| EINVAL)?;
        let eventfd = EventFd::from_fd(req.fd)?;
        let _writer = self.writer.lock();
        let old = self.list.read();
        let mut next = KVec::with_capacity(old.len() + 1, GFP_KERNEL)?;
        if req.deassign {
            let mut found = false;
            for e in old.iter() {
                if !found && e.spec == req.spec && e.eventfd.id() == eventfd.id() {
                    found = true;
                } else {
                    next.push(e.clone(), GFP_KERNEL)?;
                }
            }
            if !found {
                return Err(ENOENT);
            }
        } else {
            if old.iter().any(|e| e.spec.collides(&req.spec)) {
                return Err(EEXIST);
            }
            if old.len() >= MAX_IOEVENTFDS {
                return Err(ENOSPC);
            }
            for e in old.iter() {
                next.push(e.clone(), GFP_KERNEL)?;
            }
            let new = Arc::new(IoEventFd { spec: req.spec, eventfd }, GFP_KERNEL)?;
            next.push(new, GFP_KERNEL)?;
        }
        drop(old);
        self.list.replace(KBox::new(next, GFP_KERNEL)?);
        Ok(())
    }
}
