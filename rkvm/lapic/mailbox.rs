// SPDX-License-Identifier: GPL-2.0

//! The part of a local APIC other threads write: what they deliver to it
//! (IRR and TMR bits, NMIs, INIT and SIPI, timer expiries), the identity
//! they match destinations against, and the doorbell that gets the vCPU
//! to look.
//!
//! Everything else of the APIC belongs to the vCPU thread (under the vCPU
//! mutex); this is shared, lock-free, because senders run anywhere: other
//! vCPU threads holding their own mutex, VMM threads in `KVM_SIGNAL_MSI`,
//! the timer's hardirq callback.
//!
//! # The doorbell
//!
//! A sender publishes its event, then [`Mailbox::ring`]s: it sets a
//! request bit and, after a full barrier, reads whether the vCPU is in
//! guest mode; if so it must interrupt that CPU (an IPI makes the guest
//! exit). The vCPU, with IRQs off just before entering, stores "in guest
//! mode", a full barrier, then reads the request bit ([`Mailbox::enter`]):
//! if set, it does not enter but looks at its mailbox again. Each side
//! stores, fences, then loads what the other stored, so at least one sees
//! the other: the vCPU sees the request, or the sender sees the vCPU in
//! guest mode and kicks it. `tools/rkvm/logic/tests/loom_tdp.rs` (model 7)
//! checks this.
//!
//! Pure logic (only `core` and the atomics of `mmu/atomic.rs`).

use crate::mmu::atomic::{mb_after_atomic, store_mb, AtomicU32, AtomicU8, Ordering};

use super::route::ApicIdentity;

/// `mode` values.
const OUTSIDE_GUEST: u8 = 0;
const IN_GUEST: u8 = 1;

/// `init_sipi` bits: INIT, SIPI and the SIPI's vector in bits 15:8.
const INIT: u32 = 1 << 0;
const SIPI: u32 = 1 << 1;

/// The most NMIs that can wait (more merge), as `KVM_NMI`'s limit.
const MAX_NMIS: u32 = 2;

/// INIT and SIPI taken from the mailbox.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) struct InitSipi {
    pub(crate) init: bool,
    /// A SIPI's vector.
    pub(crate) sipi: Option<u8>,
}

/// What other threads deliver to one local APIC.
pub(crate) struct Mailbox {
    irr: [AtomicU32; 8],
    tmr: [AtomicU32; 8],
    nmis: AtomicU32,
    init_sipi: AtomicU32,
    timer_expired: AtomicU32,
    /// The identity destinations are matched against (`ApicIdentity`
    /// packed), written only by the vCPU thread.
    id: AtomicU32,
    flags: AtomicU32,
    ldr: AtomicU32,
    /// Something was delivered since the vCPU last looked.
    requests: AtomicU32,
    /// Whether the vCPU is in guest mode (or about to be), on `cpu`.
    mode: AtomicU8,
    cpu: AtomicU32,
}

impl Default for Mailbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Mailbox {
    pub(crate) fn new() -> Self {
        Self {
            irr: core::array::from_fn(|_| AtomicU32::new(0)),
            tmr: core::array::from_fn(|_| AtomicU32::new(0)),
            nmis: AtomicU32::new(0),
            init_sipi: AtomicU32::new(0),
            timer_expired: AtomicU32::new(0),
            id: AtomicU32::new(0),
            flags: AtomicU32::new(0),
            ldr: AtomicU32::new(0),
            requests: AtomicU32::new(0),
            mode: AtomicU8::new(OUTSIDE_GUEST),
            cpu: AtomicU32::new(0),
        }
    }

    // ---- senders ----

    /// A fixed or lowest-priority interrupt accepted: its TMR bit says
    /// how it was triggered, its IRR bit that it waits. Ring afterwards.
    pub(crate) fn post_vector(&self, vector: u8, level_triggered: bool) {
        let (word, bit) = ((vector >> 5) as usize, 1u32 << (vector & 31));
        if level_triggered {
            self.tmr[word].fetch_or(bit, Ordering::SeqCst);
        } else {
            self.tmr[word].fetch_and(!bit, Ordering::SeqCst);
        }
        self.irr[word].fetch_or(bit, Ordering::SeqCst);
    }

    pub(crate) fn post_nmi(&self) {
        let _ = self
            .nmis
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| Some((n + 1).min(MAX_NMIS)));
    }

    /// An INIT replaces whatever INIT or SIPI waited, as KVM.
    pub(crate) fn post_init(&self) {
        self.init_sipi.store(INIT, Ordering::SeqCst);
    }

    pub(crate) fn post_sipi(&self, vector: u8) {
        let _ = self.init_sipi.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
            Some((v & INIT) | SIPI | (vector as u32) << 8)
        });
    }

    /// The timer expired (its callback); the vCPU delivers the LVT entry.
    pub(crate) fn post_timer(&self) {
        self.timer_expired.fetch_add(1, Ordering::SeqCst);
    }

    /// After posting: the CPU to interrupt if the vCPU is in guest mode
    /// there, or `None` if it will see the post before it enters.
    pub(crate) fn ring(&self) -> Option<u32> {
        self.requests.fetch_or(1, Ordering::SeqCst);
        mb_after_atomic();
        if self.mode.load(Ordering::SeqCst) == IN_GUEST {
            Some(self.cpu.load(Ordering::Relaxed))
        } else {
            None
        }
    }

    /// The identity a sender matches its destination against.
    pub(crate) fn identity(&self) -> ApicIdentity {
        ApicIdentity::unpack(
            self.id.load(Ordering::Acquire),
            self.flags.load(Ordering::Acquire),
            self.ldr.load(Ordering::Acquire),
        )
    }

    // ---- the vCPU thread ----

    /// Publishes the APIC's identity after a change.
    pub(crate) fn set_identity(&self, who: &ApicIdentity) {
        let (id, flags) = who.pack();
        self.id.store(id, Ordering::Release);
        self.ldr.store(who.ldr, Ordering::Release);
        self.flags.store(flags, Ordering::Release);
    }

    /// Clears the request bit before the vCPU looks at its mailbox: what is
    /// posted from here on rings again.
    pub(crate) fn take_requests(&self) -> bool {
        self.requests.swap(0, Ordering::SeqCst) != 0
    }

    /// Whether something was posted since [`Self::take_requests`] (what a
    /// halted vCPU waits for).
    pub(crate) fn has_requests(&self) -> bool {
        self.requests.load(Ordering::SeqCst) != 0
    }

    /// With IRQs off, just before entering the guest on `cpu`: whether to
    /// go on (nothing was posted since [`Self::take_requests`]). On
    /// `false` the vCPU stays outside guest mode.
    pub(crate) fn enter(&self, cpu: u32) -> bool {
        self.cpu.store(cpu, Ordering::Relaxed);
        store_mb(&self.mode, IN_GUEST);
        if self.requests.load(Ordering::SeqCst) != 0 {
            self.mode.store(OUTSIDE_GUEST, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Back from the guest: senders need not interrupt the CPU any more.
    pub(crate) fn exit(&self) {
        self.mode.store(OUTSIDE_GUEST, Ordering::SeqCst);
    }

    /// The highest vector waiting in the IRR.
    pub(crate) fn highest_irr(&self) -> Option<u8> {
        (0..8).rev().find_map(|w| {
            let v = self.irr[w].load(Ordering::SeqCst);
            (v != 0).then(|| (w as u32 * 32 + 31 - v.leading_zeros()) as u8)
        })
    }

    /// Takes `vector` out of the IRR (the vCPU delivers it).
    pub(crate) fn clear_irr(&self, vector: u8) {
        self.irr[(vector >> 5) as usize].fetch_and(!(1 << (vector & 31)), Ordering::SeqCst);
    }

    pub(crate) fn irr(&self) -> [u32; 8] {
        core::array::from_fn(|i| self.irr[i].load(Ordering::SeqCst))
    }

    pub(crate) fn tmr(&self) -> [u32; 8] {
        core::array::from_fn(|i| self.tmr[i].load(Ordering::SeqCst))
    }

    /// Replaces IRR and TMR (`KVM_SET_LAPIC`, reset).
    pub(crate) fn set_irr_tmr(&self, irr: &[u32; 8], tmr: &[u32; 8]) {
        for i in 0..8 {
            self.irr[i].store(irr[i], Ordering::SeqCst);
            self.tmr[i].store(tmr[i], Ordering::SeqCst);
        }
    }

    pub(crate) fn take_nmis(&self) -> u32 {
        self.nmis.swap(0, Ordering::SeqCst)
    }

    pub(crate) fn take_init_sipi(&self) -> InitSipi {
        let v = self.init_sipi.swap(0, Ordering::SeqCst);
        InitSipi {
            init: v & INIT != 0,
            sipi: (v & SIPI != 0).then_some((v >> 8) as u8),
        }
    }

    /// Whether the timer expired since the last call.
    pub(crate) fn take_timer(&self) -> bool {
        self.timer_expired.swap(0, Ordering::SeqCst) != 0
    }

    /// Drops the IRR, TMR and timer expiries, as the APIC's RESET and INIT
    /// clear them; NMIs, INIT and SIPI stay for the vCPU to take.
    pub(crate) fn clear(&self) {
        self.set_irr_tmr(&[0; 8], &[0; 8]);
        self.timer_expired.store(0, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn irr_order() {
        let m = Mailbox::new();
        assert_eq!(m.highest_irr(), None);
        m.post_vector(0x31, false);
        m.post_vector(0xe0, true);
        m.post_vector(0x40, false);
        assert_eq!(m.highest_irr(), Some(0xe0));
        assert_eq!(m.tmr()[7], 1);
        m.clear_irr(0xe0);
        assert_eq!(m.highest_irr(), Some(0x40));
        // An edge-triggered repost clears the TMR bit.
        m.post_vector(0xe0, false);
        assert_eq!(m.tmr()[7], 0);
    }

    #[test]
    fn init_and_sipi() {
        let m = Mailbox::new();
        m.post_sipi(0x12);
        m.post_init();
        // INIT drops the SIPI before it.
        assert_eq!(m.take_init_sipi(), InitSipi { init: true, sipi: None });
        m.post_init();
        m.post_sipi(0x9a);
        assert_eq!(m.take_init_sipi(), InitSipi { init: true, sipi: Some(0x9a) });
        assert_eq!(m.take_init_sipi(), InitSipi::default());
        for _ in 0..5 {
            m.post_nmi();
        }
        assert_eq!(m.take_nmis(), 2);
    }

    #[test]
    fn doorbell() {
        let m = Mailbox::new();
        assert_eq!(m.ring(), None, "outside guest mode: no kick");
        assert!(!m.enter(3), "a post since the last look keeps the vCPU out");
        assert!(m.take_requests());
        assert!(m.enter(3));
        assert_eq!(m.ring(), Some(3));
        m.exit();
        assert_eq!(m.ring(), None);
    }
}
