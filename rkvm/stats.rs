// SPDX-License-Identifier: GPL-2.0

//! KVM's binary statistics (`KVM_GET_STATS_FD` on a VM or vCPU fd): the
//! layout of the file the fd reads, built from a list of descriptors and
//! the current values.
//!
//! The file is, in order: `struct kvm_stats_header`, the id string
//! (`NAME_SIZE` bytes, NUL-padded), one `struct kvm_stats_desc` per
//! statistic (its name NUL-padded to `NAME_SIZE`), then one `u64` per
//! statistic. Only the values change while the fd is open; readers seek
//! to `data_offset` to poll them. rkvm offers a subset of KVM's
//! statistics, under KVM's names and with KVM's meaning, so tools that
//! look statistics up by name (the KVM selftests' `vm_get_stat`, QEMU's
//! `query-stats`) read them unchanged.
//!
//! Pure logic (only `core`), tested on the host.

/// Size of the id string and of each descriptor's name, NUL included
/// (`KVM_STATS_NAME_SIZE`).
pub(crate) const NAME_SIZE: usize = 48;
/// `sizeof(struct kvm_stats_header)`.
pub(crate) const HEADER_SIZE: usize = 24;
/// `sizeof(struct kvm_stats_desc)` with its name.
pub(crate) const DESC_SIZE: usize = 16 + NAME_SIZE;

/// How a statistic's value behaves (`KVM_STATS_TYPE_*`; unit none, base
/// 10, exponent 0 for all of rkvm's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Only grows: a count of events.
    Cumulative = 0,
    /// The current value of something that goes up and down.
    Instant = 1,
}

/// One statistic.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Desc {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
}

const fn counter(name: &'static str) -> Desc {
    Desc {
        name,
        kind: Kind::Cumulative,
    }
}

const fn instant(name: &'static str) -> Desc {
    Desc {
        name,
        kind: Kind::Instant,
    }
}

/// A VM's statistics, in the order of their values.
pub(crate) mod vm {
    use super::{counter, instant, Desc};

    pub(crate) const REMOTE_TLB_FLUSH: usize = 0;
    pub(crate) const PAGES_4K: usize = 1;
    pub(crate) const COUNT: usize = 4;

    pub(crate) const DESCS: [Desc; COUNT] = [
        // TLB flushes of every vCPU (a flush request that found nothing
        // to flush is not counted).
        counter("remote_tlb_flush"),
        // TDP leaves by size: `PAGES_4K + level - 1`.
        instant("pages_4k"),
        instant("pages_2m"),
        instant("pages_1g"),
    ];
}

/// A vCPU's statistics, in the order of their values.
pub(crate) mod vcpu {
    use super::{counter, Desc};

    pub(crate) const EXITS: usize = 0;
    pub(crate) const IO_EXITS: usize = 1;
    pub(crate) const MMIO_EXITS: usize = 2;
    pub(crate) const HALT_EXITS: usize = 3;
    pub(crate) const SIGNAL_EXITS: usize = 4;
    pub(crate) const PF_FIXED: usize = 5;
    pub(crate) const PF_FAST: usize = 6;
    pub(crate) const COUNT: usize = 7;

    pub(crate) const DESCS: [Desc; COUNT] = [
        // Exits from the guest, handled in the kernel or not.
        counter("exits"),
        // Returns to userspace for port I/O, MMIO, HLT, and a signal.
        counter("io_exits"),
        counter("mmio_exits"),
        counter("halt_exits"),
        counter("signal_exits"),
        // TDP faults that mapped memory: on the locked path, and fixed by
        // the fast page fault.
        counter("pf_fixed"),
        counter("pf_fast"),
    ];
}

/// Size of the file for `ndesc` statistics.
pub(crate) const fn file_len(ndesc: usize) -> usize {
    HEADER_SIZE + NAME_SIZE + ndesc * (DESC_SIZE + 8)
}

/// Writes the file into `out` (at least `file_len(descs.len())` bytes):
/// the header, `id` (truncated to leave its NUL), the descriptors and
/// `values` (as many as `descs`).
pub(crate) fn render(id: &[u8], descs: &[Desc], values: &[u64], out: &mut [u8]) {
    debug_assert_eq!(descs.len(), values.len());
    let n = descs.len();
    let desc_offset = HEADER_SIZE + NAME_SIZE;
    let data_offset = desc_offset + n * DESC_SIZE;
    out[..file_len(n)].fill(0);
    // flags, name_size, num_desc, id_offset, desc_offset, data_offset
    let header = [0, NAME_SIZE, n, HEADER_SIZE, desc_offset, data_offset];
    for (i, v) in header.iter().enumerate() {
        put(out, i * 4, &(*v as u32).to_ne_bytes());
    }
    put_name(out, HEADER_SIZE, id);
    for (i, d) in descs.iter().enumerate() {
        let at = desc_offset + i * DESC_SIZE;
        put(out, at, &(d.kind as u32).to_ne_bytes());
        // exponent (s16) 0, then size: one u64.
        put(out, at + 6, &1u16.to_ne_bytes());
        // The value's offset in the data block; bucket_size stays 0.
        put(out, at + 8, &((i * 8) as u32).to_ne_bytes());
        put_name(out, at + 16, d.name.as_bytes());
    }
    for (i, v) in values.iter().enumerate() {
        put(out, data_offset + i * 8, &v.to_ne_bytes());
    }
}

fn put(out: &mut [u8], at: usize, bytes: &[u8]) {
    for (i, b) in bytes.iter().enumerate() {
        out[at + i] = *b;
    }
}

/// A name in its `NAME_SIZE` field, always NUL-terminated.
fn put_name(out: &mut [u8], at: usize, name: &[u8]) {
    let len = name.len().min(NAME_SIZE - 1);
    put(out, at, &name[..len]);
}

/// The part of a file of `len` bytes that a read of `want` bytes at
/// `pos` returns (KVM's `kvm_stats_read`: short at the end, empty past it).
pub(crate) fn window(len: usize, pos: i64, want: usize) -> core::ops::Range<usize> {
    let start = usize::try_from(pos).unwrap_or(usize::MAX).min(len);
    start..start + want.min(len - start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn name_at(b: &[u8], at: usize) -> &str {
        let field = &b[at..at + NAME_SIZE];
        let end = field.iter().position(|&c| c == 0).unwrap();
        core::str::from_utf8(&field[..end]).unwrap()
    }

    #[test]
    fn layout_is_kvms() {
        let mut out = vec![0xffu8; file_len(vm::COUNT)];
        render(b"kvm-42", &vm::DESCS, &[7, 100, 3, 0], &mut out);
        assert_eq!(u32_at(&out, 0), 0);
        assert_eq!(u32_at(&out, 4), 48);
        assert_eq!(u32_at(&out, 8), 4);
        assert_eq!(u32_at(&out, 12), 24);
        assert_eq!(u32_at(&out, 16), 72);
        assert_eq!(u32_at(&out, 20), 72 + 4 * 64);
        assert_eq!(name_at(&out, 24), "kvm-42");
        let d = 72 + 64 * (vm::PAGES_4K + 1); // pages_2m's descriptor
        assert_eq!(name_at(&out, d + 16), "pages_2m");
        assert_eq!(u32_at(&out, d), Kind::Instant as u32);
        assert_eq!(u32_at(&out, 72), Kind::Cumulative as u32);
        assert_eq!(out[72 + 6], 1, "one value per statistic");
        let data = u32_at(&out, 20) as usize;
        let off = u32_at(&out, d + 8) as usize;
        assert_eq!(out[data + off], 3, "pages_2m's value at its offset");
        assert_eq!(out[data], 7);
        assert_eq!(out.len(), data + 4 * 8);
    }

    #[test]
    fn long_names_keep_their_nul() {
        let mut out = vec![0u8; file_len(1)];
        let long = [b'x'; 60];
        render(&long, &[counter("exits")], &[1], &mut out);
        assert_eq!(name_at(&out, HEADER_SIZE).len(), NAME_SIZE - 1);
    }

    #[test]
    fn reads_are_windows_of_the_file() {
        assert_eq!(window(100, 0, 24), 0..24);
        assert_eq!(window(100, 90, 24), 90..100);
        assert_eq!(window(100, 100, 24), 100..100);
        assert_eq!(window(100, 200, 24), 100..100);
        assert_eq!(window(100, -1, 24), 100..100);
    }
}
