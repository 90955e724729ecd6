// SPDX-License-Identifier: GPL-2.0

//! The binary statistics fds (`KVM_GET_STATS_FD`, `KVM_CAP_BINARY_STATS_FD`)
//! of a VM and a vCPU, read as a client that looks statistics up by name
//! does: the header, the id, the descriptors, then values that follow what
//! the guest does.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::guest::Guest;
use crate::harness::{Ctx, TestResult};
use crate::util::{check_ext, ename, errno, raw_ioctl};

/// `KVM_GET_STATS_FD`: `_IO(KVMIO, 0xce)`.
const KVM_GET_STATS_FD: libc::c_ulong = 0xaece;
/// `KVM_CAP_BINARY_STATS_FD`.
const KVM_CAP_BINARY_STATS_FD: libc::c_ulong = 203;
/// `sizeof(struct kvm_stats_desc)` before its name.
const DESC_FIXED: usize = 16;

/// An open statistics fd with its header and descriptors read.
struct Stats {
    fd: OwnedFd,
    id: String,
    data_offset: u64,
    /// Name and offset in the data block of each statistic.
    descs: Vec<(String, u64)>,
}

fn pread(fd: &OwnedFd, len: usize, at: u64) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; len];
    // SAFETY: `buf` is `len` writable bytes.
    let n = unsafe { libc::pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), len, at as i64) };
    if n < 0 {
        return Err(format!("pread at {at}: {}", ename(errno())));
    }
    buf.truncate(n as usize);
    Ok(buf)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The NUL-terminated string at the start of `b`.
fn c_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

impl Stats {
    fn open(what: &str, fd: &impl AsRawFd) -> Result<Self, String> {
        let raw = raw_ioctl(fd, KVM_GET_STATS_FD, 0)
            .map_err(|e| format!("{what}: KVM_GET_STATS_FD: {}", ename(e)))?;
        // SAFETY: the ioctl returned a new fd, which nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let h = pread(&fd, 24, 0)?;
        if h.len() != 24 {
            return Err(format!("{what}: short header ({} bytes)", h.len()));
        }
        let (name_size, num_desc) = (u32_at(&h, 4) as usize, u32_at(&h, 8) as usize);
        let (id_offset, desc_offset) = (u32_at(&h, 12) as u64, u32_at(&h, 16) as u64);
        let data_offset = u32_at(&h, 20) as u64;
        let id = c_str(&pread(&fd, name_size, id_offset)?);
        let size = DESC_FIXED + name_size;
        let raw = pread(&fd, num_desc * size, desc_offset)?;
        if raw.len() != num_desc * size {
            return Err(format!("{what}: short descriptors"));
        }
        let descs = raw
            .chunks(size)
            .map(|d| (c_str(&d[DESC_FIXED..]), u32_at(d, 8) as u64))
            .collect();
        Ok(Self {
            fd,
            id,
            data_offset,
            descs,
        })
    }

    fn get(&self, name: &str) -> Result<u64, String> {
        let &(_, off) = self
            .descs
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| format!("no statistic {name} in {}", self.id))?;
        let v = pread(&self.fd, 8, self.data_offset + off)?;
        let v: [u8; 8] = v.try_into().map_err(|_| format!("{name}: short read"))?;
        Ok(u64::from_ne_bytes(v))
    }
}

/// A guest doing `OUT` in a loop: the vCPU's `io_exits` counts each one,
/// `exits` at least as many, and the VM's leaf counts show its memory
/// mapped.
pub(crate) fn stats_fds_follow_the_guest(ctx: &Ctx) -> TestResult {
    #[rustfmt::skip]
    const CODE: &[u8] = &[
        0xe7, 0x30, // out 0x30, eax
        0xeb, 0xfc, // jmp back to the out
    ];
    let mut g = Guest::new(ctx)?;
    if check_ext("binary stats", &g.vm, KVM_CAP_BINARY_STATS_FD)? != 1 {
        return Err("KVM_CAP_BINARY_STATS_FD is not 1".into());
    }
    g.enter_long_mode(CODE)?;
    let vm = Stats::open("VM", &g.vm)?;
    let vcpu = Stats::open("vCPU", &g.vcpu)?;
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    if vm.id != format!("kvm-{pid}") || vcpu.id != format!("kvm-{pid}/vcpu-0") {
        return Err(format!("ids {:?} and {:?}", vm.id, vcpu.id));
    }
    g.expect_out("the first out", 0x30, &[0; 4])?;
    let (io0, exits0) = (vcpu.get("io_exits")?, vcpu.get("exits")?);
    let n = ctx.iters(32) as u64;
    for i in 0..n {
        g.expect_out(&format!("out {i}"), 0x30, &[0; 4])?;
    }
    let (io, exits) = (vcpu.get("io_exits")?, vcpu.get("exits")?);
    if io - io0 != n || exits - exits0 < n {
        return Err(format!(
            "after {n} OUTs: io_exits {io0} -> {io}, exits {exits0} -> {exits}"
        ));
    }
    let leaves = vm.get("pages_4k")? + vm.get("pages_2m")? + vm.get("pages_1g")?;
    if leaves == 0 {
        return Err("the running guest has no TDP leaves".into());
    }
    Ok(())
}
