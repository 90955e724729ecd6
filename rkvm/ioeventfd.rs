// SPDX-License-Identifier: GPL-2.0

//! `KVM_IOEVENTFD`'s rules: which guest writes (port I/O or MMIO, an
//! address, a length or any, a value or any) signal an eventfd instead of
//! exiting to the VMM, and which assignments KVM refuses.
//!
//! Pure logic (only `core`), tested on the host; the kernel side is
//! `Vm`'s list of assignments (`vm.rs`) and the eventfds
//! (`shim/eventfd.rs`).

use crate::abi::field;

/// Size of `struct kvm_ioeventfd`.
pub(crate) const IOEVENTFD_SIZE: usize = 64;

/// `KVM_IOEVENTFD_FLAG_*`.
pub(crate) mod flags {
    pub(crate) const DATAMATCH: u32 = 1 << 0;
    pub(crate) const PIO: u32 = 1 << 1;
    pub(crate) const DEASSIGN: u32 = 1 << 2;
    /// s390's virtio-ccw notifications: a space x86 guests never write.
    pub(crate) const VIRTIO_CCW_NOTIFY: u32 = 1 << 3;
    /// Inside KVM's mask of valid flags (`kvm_ioeventfd_flag_nr_fast_mmio`)
    /// and without effect: taken and ignored, as KVM.
    pub(crate) const FAST_MMIO: u32 = 1 << 4;
    pub(crate) const VALID: u32 = DATAMATCH | PIO | DEASSIGN | VIRTIO_CCW_NOTIFY | FAST_MMIO;
}

/// Most assignments a VM may have (KVM's per-bus device limit).
pub(crate) const MAX_IOEVENTFDS: usize = 1000;

/// The address space of an assignment.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Space {
    Mmio,
    Pio,
    /// s390's virtio-ccw notifications, which KVM takes on x86 too.
    Ccw,
}

/// Which writes an assignment catches.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct IoEventSpec {
    pub(crate) space: Space,
    pub(crate) addr: u64,
    /// 1, 2, 4 or 8 bytes, or 0 for writes of any length.
    pub(crate) len: u32,
    /// Only writes of this value, or any (`None`).
    pub(crate) datamatch: Option<u64>,
}

/// A decoded `struct kvm_ioeventfd`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct IoEventRequest {
    pub(crate) spec: IoEventSpec,
    pub(crate) fd: i32,
    pub(crate) deassign: bool,
}

impl IoEventRequest {
    /// Decodes and checks the request as KVM: `Err` (`EINVAL`) for a
    /// length other than 0, 1, 2, 4, 8, an address range that wraps,
    /// unknown flags, and any length with a data match.
    pub(crate) fn from_bytes(b: &[u8; IOEVENTFD_SIZE]) -> Result<Self, ()> {
        let u64_at = |o: usize| u64::from_ne_bytes(field(b, o));
        let u32_at = |o: usize| u32::from_ne_bytes(field(b, o));
        let (datamatch, addr, len, fd, f) = (u64_at(0), u64_at(8), u32_at(16), u32_at(20) as i32, u32_at(24));
        if !matches!(len, 0 | 1 | 2 | 4 | 8) || addr.checked_add(len as u64).is_none() {
            return Err(());
        }
        if f & !flags::VALID != 0 {
            return Err(());
        }
        if len == 0 && f & flags::DATAMATCH != 0 {
            return Err(());
        }
        Ok(Self {
            spec: IoEventSpec {
                space: if f & flags::PIO != 0 {
                    Space::Pio
                } else if f & flags::VIRTIO_CCW_NOTIFY != 0 {
                    Space::Ccw
                } else {
                    Space::Mmio
                },
                addr,
                len,
                datamatch: (f & flags::DATAMATCH != 0).then_some(datamatch),
            },
            fd,
            deassign: f & flags::DEASSIGN != 0,
        })
    }
}

impl IoEventSpec {
    /// Whether a guest write of `len` bytes of `value` at `addr` (port I/O
    /// or MMIO) signals this assignment.
    pub(crate) fn matches(&self, pio: bool, addr: u64, len: u32, value: u64) -> bool {
        let space = if pio { Space::Pio } else { Space::Mmio };
        if space != self.space || addr != self.addr {
            return false;
        }
        if self.len == 0 {
            return true;
        }
        if len != self.len {
            return false;
        }
        let v = if len >= 8 { value } else { value & ((1 << (8 * len)) - 1) };
        self.datamatch.is_none_or(|d| d == v)
    }

    /// Whether `other` could catch a write this one catches, which KVM
    /// refuses (`EEXIST`): the same space and address, and either of any
    /// length, or the same length with either matching any value or both
    /// the same one.
    pub(crate) fn collides(&self, other: &Self) -> bool {
        self.space == other.space
            && self.addr == other.addr
            && (self.len == 0
                || other.len == 0
                || (self.len == other.len
                    && (self.datamatch.is_none() || other.datamatch.is_none() || self.datamatch == other.datamatch)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(datamatch: u64, addr: u64, len: u32, f: u32) -> Result<IoEventRequest, ()> {
        let mut b = [0u8; IOEVENTFD_SIZE];
        b[0..8].copy_from_slice(&datamatch.to_le_bytes());
        b[8..16].copy_from_slice(&addr.to_le_bytes());
        b[16..20].copy_from_slice(&len.to_le_bytes());
        b[20..24].copy_from_slice(&7i32.to_le_bytes());
        b[24..28].copy_from_slice(&f.to_le_bytes());
        IoEventRequest::from_bytes(&b)
    }

    #[test]
    fn requests() {
        let r = req(0x55, 0x3f8, 1, flags::PIO | flags::DATAMATCH).unwrap();
        assert_eq!(r.fd, 7);
        assert_eq!(r.spec, IoEventSpec { space: Space::Pio, addr: 0x3f8, len: 1, datamatch: Some(0x55) });
        assert!(!r.deassign);
        assert!(req(0, 0x1000, 3, 0).is_err(), "length");
        assert!(req(0, 0x1000, 16, 0).is_err(), "length");
        assert!(req(0, u64::MAX - 2, 4, 0).is_err(), "wraps");
        assert!(req(0, 0x1000, 4, 1 << 5).is_err(), "unknown flag");
        assert_eq!(req(0, 0x1000, 4, flags::FAST_MMIO).unwrap().spec.space, Space::Mmio);
        let ccw = req(0, 0x1000, 4, flags::VIRTIO_CCW_NOTIFY).unwrap().spec;
        assert!(!ccw.matches(false, 0x1000, 4, 0), "never written on x86");
        assert!(req(1, 0x1000, 0, flags::DATAMATCH).is_err(), "any length and a value");
        assert!(req(0, 0x1000, 0, flags::DEASSIGN).unwrap().deassign);
    }

    #[test]
    fn matching() {
        let any = IoEventSpec { space: Space::Mmio, addr: 0x1000, len: 0, datamatch: None };
        assert!(any.matches(false, 0x1000, 2, 9));
        assert!(!any.matches(true, 0x1000, 2, 9), "port I/O is another space");
        assert!(!any.matches(false, 0x1001, 1, 9));
        let four = IoEventSpec { len: 4, ..any };
        assert!(four.matches(false, 0x1000, 4, 1));
        assert!(!four.matches(false, 0x1000, 2, 1));
        let value = IoEventSpec { datamatch: Some(0xab), len: 1, ..any };
        assert!(value.matches(false, 0x1000, 1, 0x12ab), "only the written byte counts");
        assert!(!value.matches(false, 0x1000, 1, 0xac));
        // A data match wider than the access never matches, as in KVM.
        let wide = IoEventSpec { datamatch: Some(0x1ff), len: 1, ..any };
        assert!(!wide.matches(false, 0x1000, 1, 0x1ff));
    }

    #[test]
    fn collisions() {
        let a = IoEventSpec { space: Space::Pio, addr: 0x60, len: 1, datamatch: Some(1) };
        assert!(a.collides(&a));
        assert!(!a.collides(&IoEventSpec { datamatch: Some(2), ..a }));
        assert!(a.collides(&IoEventSpec { datamatch: None, ..a }));
        assert!(!a.collides(&IoEventSpec { len: 2, ..a }));
        assert!(a.collides(&IoEventSpec { len: 0, datamatch: None, ..a }));
        assert!(!a.collides(&IoEventSpec { space: Space::Mmio, ..a }));
        assert!(!a.collides(&IoEventSpec { addr: 0x61, ..a }));
    }
}
