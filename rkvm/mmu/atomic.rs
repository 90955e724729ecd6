// SPDX-License-Identifier: GPL-2.0

//! The atomics the MMU's pure code is written against.
//!
//! The pure files (`spte.rs`, `tdp_iter.rs`, `tdp_mmu.rs`, `tlb.rs`) take
//! their atomic types and barriers from here, never from `core` directly,
//! so that the loom model (`tools/rkvm/logic/tests/loom_tdp.rs`) can compile
//! the very same files against loom's atomics by providing a module of the
//! same shape.
//!
//! The two barrier helpers say what the code needs from x86-64, rkvm's
//! only target, in the kernel's terms:
//! - [`store_mb`] is `smp_store_mb()`: a store followed by a full barrier.
//!   An `xchg` (a `SeqCst` swap) is both on x86-64.
//! - [`mb_after_atomic`] is `smp_mb__after_atomic()`: after a locked
//!   read-modify-write, which is already a full barrier on x86-64, it only
//!   has to keep the compiler from moving accesses across it.
//!
//! Loom treats `SeqCst` accesses as `AcqRel` (tokio-rs/loom#180) but does
//! implement `fence(SeqCst)`; its version of this module spells both
//! helpers with that fence, which is what the instructions above give.
//!
//! Pure logic (only `core`).

pub(crate) use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

/// `smp_store_mb(*a, v)`: stores `v`, then a full barrier.
#[inline]
pub(crate) fn store_mb(a: &AtomicU8, v: u8) {
    // `xchg`: the store and a full barrier in one instruction.
    a.swap(v, Ordering::SeqCst);
}

/// `smp_mb__after_atomic()`: the `SeqCst` read-modify-write just before
/// was a locked instruction, a full barrier already.
#[inline]
pub(crate) fn mb_after_atomic() {
    core::sync::atomic::compiler_fence(Ordering::SeqCst);
}
