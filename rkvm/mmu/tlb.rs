// SPDX-License-Identifier: GPL-2.0

//! The TLB-flush handshake between a VM's vCPUs and whoever changes its
//! SPTEs in a way that needs a flush (a zap): KVM's
//! `kvm_flush_remote_tlbs` with vCPU modes and requests, reduced to a
//! generation number.
//!
//! - A vCPU about to enter the guest (IRQs off) marks itself in guest mode
//!   with a full barrier after the store (`smp_store_mb`), then reads
//!   `tlb_gen`; if the generation moved since it last flushed, it flushes
//!   its ASID (or takes a new one) before VMRUN. On `#VMEXIT` it clears
//!   the mark.
//! - A flush bumps `tlb_gen` (a locked RMW, a full barrier), then reads the
//!   vCPUs' marks, and kicks (IPI) and waits for every vCPU in guest mode.
//!
//! Store buffering is what the barriers rule out: the vCPU stores its mark
//! then loads the generation; the flusher stores the generation then loads
//! the marks. With a full barrier between each store and load, at least
//! one of them sees the other's store: either the vCPU sees the new
//! generation and flushes, or the flusher sees the vCPU in guest mode and
//! its IPI forces a `#VMEXIT` that it waits for. The loom model
//! (`tools/rkvm/logic/tests/loom_tdp.rs`) runs this file.
//!
//! Only the kick itself (the IPI and the wait for it) is kernel glue, the
//! [`Kick`] the caller passes.
//!
//! Pure logic (only `core`), tested on the host.

use super::atomic::{mb_after_atomic, store_mb, AtomicU32, AtomicU64, AtomicU8, Ordering};

/// Sends an IPI to CPUs and waits until each has run it (it runs only
/// with IRQs on, so after a vCPU there left guest mode).
pub(crate) trait Kick {
    fn kick_and_wait(&mut self, cpus: &[u32]);
}

/// Whether a vCPU is in guest mode, and on which CPU.
struct VcpuMode {
    in_guest: AtomicU8,
    cpu: AtomicU32,
}

/// The TLB generation of a VM and the guest-mode marks of its (at most
/// `N`) vCPUs.
pub(crate) struct TlbTracker<const N: usize> {
    /// Bumped by every flush before it reads the marks; a vCPU that sees a
    /// value it has not flushed for flushes before entering the guest.
    tlb_gen: AtomicU64,
    vcpus: [VcpuMode; N],
}

impl<const N: usize> TlbTracker<N> {
    pub(crate) fn new() -> Self {
        Self {
            tlb_gen: AtomicU64::new(0),
            vcpus: core::array::from_fn(|_| VcpuMode {
                in_guest: AtomicU8::new(0),
                cpu: AtomicU32::new(0),
            }),
        }
    }

    /// vCPU `idx` is about to enter the guest on `cpu`, IRQs off. Returns
    /// the TLB generation to compare with the one it last flushed for.
    pub(crate) fn enter_guest(&self, idx: usize, cpu: u32) -> u64 {
        if let Some(m) = self.vcpus.get(idx) {
            m.cpu.store(cpu, Ordering::Relaxed);
            // The full barrier orders the mark before the load below.
            store_mb(&m.in_guest, 1);
        }
        self.tlb_gen.load(Ordering::SeqCst)
    }

    /// vCPU `idx` left the guest.
    pub(crate) fn exit_guest(&self, idx: usize) {
        if let Some(m) = self.vcpus.get(idx) {
            m.in_guest.store(0, Ordering::Release);
        }
    }

    /// Makes every vCPU drop its cached translations before it next runs
    /// guest code, and waits for those in guest mode to leave it. The
    /// caller serialises flushes (holds `mmu_lock` for write).
    pub(crate) fn flush_remote(&self, kick: &mut impl Kick) {
        self.tlb_gen.fetch_add(1, Ordering::SeqCst);
        // Orders the bump before the loads of the marks.
        mb_after_atomic();
        let mut cpus = [0u32; N];
        let mut n = 0;
        for m in &self.vcpus {
            if m.in_guest.load(Ordering::SeqCst) != 0 {
                cpus[n] = m.cpu.load(Ordering::Relaxed);
                n += 1;
            }
        }
        if n > 0 {
            kick.kick_and_wait(&cpus[..n]);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::vec::Vec;

    struct Recorder(Vec<u32>);
    impl Kick for Recorder {
        fn kick_and_wait(&mut self, cpus: &[u32]) {
            self.0.extend_from_slice(cpus);
        }
    }

    #[test]
    fn flush_kicks_vcpus_in_guest_mode_only() {
        let t = TlbTracker::<4>::new();
        assert_eq!(t.enter_guest(0, 3), 0);
        assert_eq!(t.enter_guest(2, 1), 0);
        t.exit_guest(0);
        let mut k = Recorder(Vec::new());
        t.flush_remote(&mut k);
        assert_eq!(k.0, [1]);
        assert_eq!(t.enter_guest(0, 3), 1);
        // An index out of range is ignored, not a panic.
        assert_eq!(t.enter_guest(9, 0), 1);
        t.exit_guest(9);
    }
}
