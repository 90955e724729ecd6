// SPDX-License-Identifier: GPL-2.0

//! Loom models of the TDP MMU, running the kernel's own code: the files
//! `rkvm/mmu/{types,spte,tdp_iter,tdp_mmu,tlb,dirty,dirty_ring}.rs` are included by path
//! below, compiled against loom's atomics (module `mmu::atomic`, loom's
//! version of `rkvm/mmu/atomic.rs`). What is modelled here is only what
//! the kernel glue does around them: the vCPU's hardware walk and TLB, the
//! IPI, the release of a page, `mmu_lock`.
//!
//! Run them with
//! `RUSTFLAGS="--cfg loom" cargo test --release --test loom_tdp loom_tdp`
//! (`tools/rkvm/host-test.sh` does); a plain `cargo test` compiles this
//! file to nothing.
//!
//! # Model 1: zap vs. a vCPU's TLB
//!
//! The claim: when a zap releases a page, no vCPU can still use a
//! translation to it. Either the vCPU read the new TLB generation when it
//! entered the guest (and so flushed), or the zap saw it in guest mode,
//! kicked it, and waited for it to leave guest mode.
//!
//! - The tables: a 2-level tree (the iterator takes the root level as a
//!   parameter), the root's entry 0 pointing to a last-level table whose
//!   entry 0 maps the one guest frame, built with the kernel's `Npt`.
//! - The zap is `tdp_mmu::zap_range` of that frame, then, if it asks for
//!   one, `TlbTracker::flush_remote`, then the release of the pages its
//!   change handler handed over, as `Tdp::zap_gfn_range` does.
//! - The vCPU does [`ENTRIES`] guest entries: `TlbTracker::enter_guest`,
//!   the flush decision of `SvmVcpu::enter` (a new generation empties its
//!   TLB), one guest access, `TlbTracker::exit_guest`, then IRQs on (a
//!   pending kick is served). After its last entry it idles with IRQs on
//!   until the zap is over.
//! - The page: a loom `UnsafeCell`. The guest reads it through whatever
//!   translation it has; the release writes it (the host reuses the page).
//!   Loom reports any read not ordered with that write by happens-before
//!   ("Causality violation"), and the guest asserts it never reads a page
//!   that was reused before it.
//! - The TLB is a one-entry cache in the vCPU thread: the guest uses the
//!   cached translation if it has one, else it walks the tables (Relaxed
//!   loads, weaker than the hardware walker) and caches a present leaf. A
//!   non-present entry is a nested page fault; the fault itself is model 2.
//! - The IPI (`on_each_cpu_mask(.., wait = true)`): a flag the zapper sets
//!   and spins on (`yield_now`) until the vCPU clears it. The vCPU serves
//!   it only with IRQs on, i.e. after `exit_guest`, so the ack means it
//!   left guest mode at least once after the kick was sent.
//!
//! Loom and `SeqCst`: loom treats `SeqCst` loads and stores as `AcqRel`
//! (loom README, "Unsupported features"; tokio-rs/loom#180), so the
//! store-buffering pattern of the handshake fails under loom even with
//! every access `SeqCst`, though the C11 model forbids the outcome. Loom
//! does implement `fence(SeqCst)`: loom's `atomic` module below spells the
//! two barrier helpers of `rkvm/mmu/atomic.rs` (`store_mb`, an `xchg` on
//! x86-64; `mb_after_atomic` after a `lock`ed RMW) with that fence, which
//! is what those instructions are. The negative controls leave a barrier
//! out, or a step of the protocol, and must fail.
//!
//! # Model 2: a fault vs. the zap of its table
//!
//! A fault (`tdp_mmu::map`, `mmu_lock` held for read) never installs a
//! leaf into a table the zap detached and freed, because the zap holds
//! the lock for write: one root entry names one last-level table, the
//! fault maps frame 0, the zap (`tdp_mmu::zap_range` over the whole table)
//! detaches the table, freezes its entries and frees it. Reading a freed
//! table's entry is a loom causality violation (the table page is a loom
//! `UnsafeCell` the free writes); a page reference the fault installed
//! must end up either still mapped or released by the zap. The negative
//! control takes no lock in the fault and must fail.

//! # Model 3: a fault vs. an MMU-notifier invalidation
//!
//! Guest pages are not pinned: a fault looks the host page up, maps it
//! under `mmu_lock` (read) and keeps no reference. The claim: once an
//! invalidation of the page's host address has ended, no SPTE maps the
//! page the host unmapped. The kernel's `InvalidateState` runs as is; the
//! host page table is one atomic (the pfn at the address, changed by the
//! host between the invalidation's begin and end), the SPTE another (the
//! MMU code's part is model 2). The fault reads `fault_seq`, looks the pfn
//! up, and maps it unless `must_retry`; the invalidation takes the lock
//! for write, `begin`s and zaps, releases it, changes the host mapping,
//! and `end`s under the lock. Negative controls read the sequence after
//! the lookup, or zap without `begin`, and must fail.
//!
//! # Model 4: the fast page fault vs. a dirty-log collection
//!
//! The claim is live migration's: a VMM that copies every page a
//! `KVM_GET_DIRTY_LOG` reports, then stops the vCPUs and copies what one
//! last collection reports, ends with a copy equal to guest memory. Frame
//! 0 starts write-protected by an earlier collection (read-only, host- and
//! MMU-writable) and copied. The vCPU writes it: its write lands if the
//! leaf is writable, else it exits and takes the kernel's fast path
//! (`tdp_mmu::fast_fault` without `mmu_lock`, then `dirty::mark`), and
//! writes again. A collection (`dirty::take` and `tdp_mmu::write_protect`
//! under `mmu_lock` held for write, as `Tdp::write_protect_masked`) runs
//! concurrently and copies the page if reported; the last one runs after
//! the vCPU stopped. With manual protection the collection is a snapshot
//! (`dirty::read`, no lock) followed by `KVM_CLEAR_DIRTY_LOG` of what it
//! reported (`dirty::take_masked` and the write protection under the
//! lock), and the copy of the snapshot's pages, as QEMU does. The TLB flush is model 1's business: here the guest's
//! check of W and its write happen in guest mode (a mutex), and the flush
//! waits for the vCPU to be out of it. The negative control marks the
//! bitmap before the leaf is writable and must fail.
//!
//! # Model 5: the fast page fault vs. an invalidation's zap
//!
//! The claim: once an invalidation's zap returns, no writable SPTE maps
//! the page the host is about to take back, and a write the fast path
//! allowed before is not lost (the zap hands the page over dirty). Frame 0
//! starts write-protected (host- and MMU-writable); the vCPU's fast path
//! (`tdp_mmu::fast_fault`, no lock) races the zap (`tdp_mmu::zap_range`
//! under `mmu_lock` held for write). The negative control widens the leaf
//! with a load and a store instead of the compare-and-exchange, and must
//! fail.
//!
//! # Model 6: a dirty ring's producer, its VMM and its reset
//!
//! The claim: the VMM reads every entry as it was pushed, the reset takes
//! only entries the VMM harvested, and every entry pushed is reset once
//! harvested. The vCPU pushes two pages (`DirtyRing::push`), a VMM thread
//! harvests in order what it sees (`RingEntry::harvest`, `mark_harvested`)
//! while `KVM_RESET_DIRTY_RINGS` (`DirtyRing::reset`) runs; then, with
//! everyone stopped, the VMM harvests the rest and resets again. The
//! negative control publishes the flag relaxed and must fail.

#![cfg(loom)]

use std::cell::Cell;

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, AtomicU8};
use loom::sync::{Arc, Mutex, RwLock};
use loom::thread;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

/// The kernel's MMU files, compiled against loom's atomics. Only part of
/// them is used here.
#[allow(dead_code)]
#[path = "../../../../rkvm/mmu"]
mod mmu {
    /// Loom's version of `rkvm/mmu/atomic.rs`: the same names, loom's
    /// atomics, the barriers as the x86-64 instructions give them (see the
    /// file comment). A negative control can leave a barrier out.
    pub(crate) mod atomic {
        use loom::sync::atomic::fence;
        pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

        use super::super::BARRIERS;

        pub(crate) fn store_mb(a: &AtomicU8, v: u8) {
            a.store(v, Ordering::SeqCst);
            if BARRIERS.with(|b| b.get().vcpu) {
                fence(Ordering::SeqCst);
            }
        }

        pub(crate) fn mb_after_atomic() {
            if BARRIERS.with(|b| b.get().flush) {
                fence(Ordering::SeqCst);
            }
        }
    }
    #[path = "dirty.rs"]
    pub(crate) mod dirty;
    #[path = "dirty_ring.rs"]
    pub(crate) mod dirty_ring;
    #[path = "invalidate.rs"]
    pub(crate) mod invalidate;
    #[path = "spte.rs"]
    pub(crate) mod spte;
    #[path = "tdp_iter.rs"]
    pub(crate) mod tdp_iter;
    #[path = "tdp_mmu.rs"]
    pub(crate) mod tdp_mmu;
    #[path = "tlb.rs"]
    pub(crate) mod tlb;
    #[path = "types.rs"]
    pub(crate) mod types;
}

/// The local APIC's mailbox (model 7), on the same loom atomics.
#[allow(dead_code)]
#[path = "../../../../rkvm/lapic"]
mod lapic {
    #[path = "mailbox.rs"]
    pub(crate) mod mailbox;
    #[path = "route.rs"]
    pub(crate) mod route;
}

use mmu::{
    atomic::AtomicU64,
    spte::{Npt, Spte, SpteFormat},
    tdp_iter::TableStore,
    tdp_mmu::{self, ChangeOps, MapOutcome, TableSource, ZapOps},
    tlb::{Kick, TlbTracker},
    types::{Gfn, Hpa, Pfn},
};

/// Which barriers of `atomic.rs` are in place.
#[derive(Clone, Copy)]
struct Barriers {
    /// `store_mb`'s barrier (the vCPU's `in_guest` store).
    vcpu: bool,
    /// `mb_after_atomic` (after the flusher's `tlb_gen` bump).
    flush: bool,
}

thread_local! {
    // Loom runs a model's threads as coroutines on the test's own thread,
    // so this is per test, and seen by every thread of its model.
    static BARRIERS: Cell<Barriers> = const { Cell::new(Barriers { vcpu: true, flush: true }) };
}

/// The root level of the models' trees: a root and last-level tables.
const ROOT_LEVEL: u32 = 2;
const ROOT: Hpa = Hpa(0x1000);
/// The last-level table under root entry 0.
const CHILD: Hpa = Hpa(0x2000);
/// A table a fault may link if it finds root entry 0 empty.
const SPARE: Hpa = Hpa(0x3000);

/// Three tables. The root and the spare table back only the entries the
/// models reach (0 and 1, where the walks stop); the child is whole, as
/// the zap of model 2 walks and freezes all of it.
struct Tables {
    root: [AtomicU64; 2],
    child: Vec<AtomicU64>,
    spare: [AtomicU64; 2],
    /// The child's page: set when it is freed.
    child_freed: UnsafeCell<bool>,
}

impl Tables {
    fn new(child_entries: usize) -> Self {
        Self {
            root: [AtomicU64::new(Npt::table(CHILD).0), AtomicU64::new(0)],
            child: (0..child_entries).map(|_| AtomicU64::new(0)).collect(),
            spare: [AtomicU64::new(0), AtomicU64::new(0)],
            child_freed: UnsafeCell::new(false),
        }
    }

    /// The leaf of frame 0, as the CPU's walker finds it.
    fn walk(&self) -> Option<Pfn> {
        let root = Spte(self.root[0].load(Relaxed));
        if !Npt::is_hw_present(root) {
            return None;
        }
        let leaf = Spte(self.entry(root.child(2).unwrap(), 0).load(Relaxed));
        Npt::is_hw_present(leaf).then(|| leaf.pfn())
    }
}

impl TableStore for Tables {
    fn entry(&self, table: Hpa, idx: usize) -> &AtomicU64 {
        match table {
            ROOT => &self.root[idx],
            CHILD => {
                // SAFETY (model): loom checks this read against the free.
                let freed = self.child_freed.with(|p| unsafe { *p });
                assert!(!freed, "a walk reached into a freed table");
                &self.child[idx]
            }
            SPARE => &self.spare[idx],
            _ => panic!("no table at {table:?}"),
        }
    }
}

/// The kernel's `Reaper` and `Zapper`: pages wait for the flush; the
/// child table's page is freed at once (RCU's grace period cannot end
/// before the zap drops `mmu_lock`, which the models do not need).
struct ModelOps<'a> {
    t: &'a Tables,
    pending: Vec<Pfn>,
    /// Negative control: release at once, not after the flush.
    release_now: Option<&'a Shared>,
    /// Whether a page was released dirty (written through its leaf).
    released_dirty: bool,
}

impl ChangeOps for ModelOps<'_> {
    fn release_page(&mut self, pfn: Pfn, dirty: bool) {
        self.released_dirty |= dirty;
        match self.release_now {
            Some(s) => s.release(pfn),
            None => self.pending.push(pfn),
        }
    }
    fn free_table(&mut self, table: Hpa) {
        assert_eq!(table, CHILD);
        assert!(self
            .t
            .child
            .iter()
            .all(|e| Spte(e.load(Relaxed)).is_frozen()));
        // SAFETY (model): loom checks this write against the walks' reads.
        self.t.child_freed.with_mut(|p| unsafe { *p = true });
    }
    fn mark_dirty(&mut self, _pfn: Pfn) {
        // The host page's dirty flag is not modelled.
    }
}

impl ZapOps for ModelOps<'_> {
    fn should_yield(&mut self) -> bool {
        false
    }
    fn yield_lock(&mut self, _flush: bool) {
        unreachable!()
    }
}

// ---- Model 1 ----

/// Guest entries the vCPU makes.
const ENTRIES: usize = 2;
/// The page the guest frame is mapped to.
const PFN: Pfn = Pfn(0x1234);
/// What the page holds while the guest owns it.
const GUEST_DATA: u64 = 0x6057;
/// What it holds once the host reused it.
const REUSED: u64 = 0xdead;

/// The steps of the protocol a negative control may leave out.
#[derive(Clone, Copy)]
struct Steps {
    barriers: Barriers,
    /// The zapper waits for kicked vCPUs to acknowledge.
    wait_for_ack: bool,
    /// The vCPU flushes its TLB when the generation moved.
    flush: bool,
    /// Pages are released only after the flush.
    release_after_flush: bool,
}

/// What the kernel does.
const KERNEL: Steps = Steps {
    barriers: Barriers {
        vcpu: true,
        flush: true,
    },
    wait_for_ack: true,
    flush: true,
    release_after_flush: true,
};

/// State shared by the vCPU and the zapper.
struct Shared {
    tables: Tables,
    tlb: TlbTracker<1>,
    /// A kick sent and not yet served.
    kick: AtomicU8,
    /// The zap is over (only ends the vCPU's idle loop).
    zap_done: AtomicBool,
    /// The contents of page `PFN`.
    page: UnsafeCell<u64>,
}

impl Shared {
    /// The host reuses a released page.
    fn release(&self, pfn: Pfn) {
        assert_eq!(pfn, PFN);
        // SAFETY (model): loom checks this write against the guest's reads.
        self.page.with_mut(|p| unsafe { *p = REUSED });
    }
}

/// The vCPU's IRQ-on window: serves a pending kick (`rkvm_kick_ack`).
fn serve_kick(s: &Shared) {
    if s.kick.load(Acquire) != 0 {
        s.kick.store(0, Release);
    }
}

/// `rkvm_kick_cpus_wait`.
struct ModelKick<'a>(&'a Shared, bool);

impl Kick for ModelKick<'_> {
    fn kick_and_wait(&mut self, cpus: &[u32]) {
        assert_eq!(cpus, [0]);
        self.0.kick.store(1, Release);
        while self.1 && self.0.kick.load(Acquire) != 0 {
            thread::yield_now();
        }
    }
}

fn vcpu(s: &Shared, o: Steps) {
    // The one-entry TLB and `SvmVcpu::flushed_tlb_gen`.
    let mut tlb: Option<Pfn> = None;
    let mut flushed_tlb_gen = 0;
    for _ in 0..ENTRIES {
        // IRQs off.
        let tlb_gen = s.tlb.enter_guest(0, 0);
        // `SvmVcpu::enter`: a stale generation flushes before VMRUN.
        if tlb_gen != flushed_tlb_gen && o.flush {
            tlb = None;
        }
        flushed_tlb_gen = tlb_gen;

        // VMRUN: the guest touches the frame once; a miss walks the tables
        // (none present: a nested page fault, nothing accessed).
        if tlb.is_none() {
            tlb = s.tables.walk();
        }
        if let Some(pfn) = tlb {
            assert_eq!(pfn, PFN);
            // SAFETY (model): loom checks this read against the release.
            let v = s.page.with(|p| unsafe { *p });
            assert_eq!(v, GUEST_DATA, "the guest used a released page");
        }

        // #VMEXIT.
        s.tlb.exit_guest(0);
        // IRQs on: a kick sent meanwhile is served now.
        serve_kick(s);
    }
    // The vCPU thread goes on with IRQs on (back in the host).
    while !s.zap_done.load(Acquire) {
        serve_kick(s);
        thread::yield_now();
    }
}

/// `Tdp::zap_gfn_range` of frame 0, `mmu_lock` held for write throughout
/// (no fault runs in this model, so the lock itself is left out).
fn zapper(s: &Shared, o: Steps) {
    let mut ops = ModelOps {
        t: &s.tables,
        pending: Vec::new(),
        release_now: (!o.release_after_flush).then_some(s),
        released_dirty: false,
    };
    let flush = tdp_mmu::zap_range::<Npt, _>(&s.tables, ROOT, ROOT_LEVEL, Gfn(0), Gfn(1), &mut ops);
    // The leaf was present: its zap needs a flush.
    assert!(flush);
    if flush {
        s.tlb.flush_remote(&mut ModelKick(s, o.wait_for_ack));
    }
    for pfn in ops.pending.drain(..) {
        s.release(pfn);
    }
    s.zap_done.store(true, Release);
}

/// Explores every interleaving of one vCPU and one zap under `o`.
fn check(o: Steps) {
    loom::model(move || {
        BARRIERS.with(|b| b.set(o.barriers));
        let tables = Tables::new(2);
        tables.child[0].store(Npt::leaf(PFN, true).0, Relaxed);
        let s = Arc::new(Shared {
            tables,
            tlb: TlbTracker::new(),
            kick: AtomicU8::new(0),
            zap_done: AtomicBool::new(false),
            page: UnsafeCell::new(GUEST_DATA),
        });
        let v = {
            let s = s.clone();
            thread::spawn(move || vcpu(&s, o))
        };
        zapper(&s, o);
        v.join().unwrap();
    });
}

/// The kernel's protocol holds.
#[test]
fn loom_tdp_zap_flush_handshake() {
    check(KERNEL);
}

/// Negative control: no barrier after the vCPU's guest-mode mark (a plain
/// store, not `xchg`): the vCPU can read the old generation while the zap
/// reads it out of guest mode.
#[test]
#[should_panic(expected = "Causality violation")]
fn loom_tdp_no_vcpu_barrier_is_caught() {
    check(Steps {
        barriers: Barriers {
            vcpu: false,
            flush: true,
        },
        ..KERNEL
    });
}

/// Negative control: no barrier between the flusher's bump and its reads.
#[test]
#[should_panic(expected = "Causality violation")]
fn loom_tdp_no_flush_barrier_is_caught() {
    check(Steps {
        barriers: Barriers {
            vcpu: true,
            flush: false,
        },
        ..KERNEL
    });
}

/// Negative control: the kick is sent but not waited for, so the guest can
/// still be using its cached translation when the page is released.
#[test]
#[should_panic(expected = "Causality violation")]
fn loom_tdp_kick_without_wait_is_caught() {
    check(Steps {
        wait_for_ack: false,
        ..KERNEL
    });
}

/// Negative control: the vCPU does not flush on a new generation, so its
/// cached translation outlives the zap.
#[test]
#[should_panic(expected = "Causality violation")]
fn loom_tdp_no_flush_is_caught() {
    check(Steps {
        flush: false,
        ..KERNEL
    });
}

/// Negative control: the page is released when the handler hands it
/// over, before the flush.
#[test]
#[should_panic(expected = "Causality violation")]
fn loom_tdp_release_before_flush_is_caught() {
    check(Steps {
        release_after_flush: false,
        ..KERNEL
    });
}

// ---- Model 2 ----

/// Runs `f` (a `loom::model`) and checks it failed with one of `expected`:
/// a negative control must fail for the reason it is about.
fn expect_violation(expected: &[&str], f: impl FnOnce() + std::panic::UnwindSafe) {
    let err = match std::panic::catch_unwind(f) {
        Ok(()) => panic!("loom found no violation"),
        Err(e) => e,
    };
    let msg = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("");
    assert!(
        expected.iter().any(|x| msg.contains(x)),
        "loom failed for another reason: {msg}"
    );
}

/// The page the fault maps.
const FAULT_PFN: Pfn = Pfn(0x4321);
/// A leak: the fault's leaf is neither mapped nor released.
const LEAKED: &str = "a page reference the fault installed was lost";

/// `PtCache` with one table page, the spare.
struct OneTable(Option<Hpa>);

impl TableSource for OneTable {
    fn take(&mut self) -> Option<Hpa> {
        self.0.take()
    }
    fn put_back(&mut self, table: Hpa) {
        self.0 = Some(table);
    }
}

/// A fault racing the zap of its table.
fn check_fault(locked: bool) {
    let mut builder = loom::model::Builder::new();
    // The zap walks and freezes a whole table: 512 entries, each a step.
    builder.max_branches = 20_000;
    builder.check(move || {
        let t = Arc::new(Tables::new(mmu::spte::ENTRIES));
        let mmu_lock = Arc::new(RwLock::new(()));
        let released = Arc::new(Mutex::new(Vec::new()));
        let f = {
            let (t, mmu_lock) = (t.clone(), mmu_lock.clone());
            thread::spawn(move || {
                let _guard = locked.then(|| mmu_lock.read().unwrap());
                let mut cache = OneTable(Some(SPARE));
                tdp_mmu::map::<Npt, _>(&*t, ROOT, ROOT_LEVEL, Gfn(0), FAULT_PFN, true, &mut cache)
            })
        };
        {
            let _guard = mmu_lock.write().unwrap();
            let mut ops = ModelOps {
                t: &t,
                pending: Vec::new(),
                release_now: None,
                released_dirty: false,
            };
            tdp_mmu::zap_range::<Npt, _>(&*t, ROOT, ROOT_LEVEL, Gfn(0), Gfn(512), &mut ops);
            // (The flush: model 1.)
            released.lock().unwrap().extend(ops.pending);
        }
        let outcome = f.join().unwrap();
        // Both done: the fault's page is mapped, or the zap released it.
        if outcome == MapOutcome::Installed {
            let mapped = Spte(t.spare[0].load(Relaxed)).pfn() == FAULT_PFN
                && Spte(t.root[0].load(Relaxed)).child(2) == Some(SPARE);
            let gone = released.lock().unwrap().contains(&FAULT_PFN);
            assert!(mapped != gone, "{LEAKED}");
        }
    })
}

/// A fault never installs into a table the zap detached.
#[test]
fn loom_tdp_fault_vs_zap() {
    check_fault(true);
}

/// Negative control: a fault without `mmu_lock`.
#[test]
fn loom_tdp_fault_without_lock_is_caught() {
    expect_violation(
        &["Causality violation", "freed table", LEAKED, "is_frozen"],
        || check_fault(false),
    );
}

// ---- Model 3 ----

const HVA: u64 = 0x7000_0000;
const OLD_PFN: u64 = 1;
const NEW_PFN: u64 = 2;
const STALE: &str = "an SPTE maps a page after the invalidation that unmapped it ended";

/// How the model departs from the kernel's protocol (negative controls).
#[derive(Clone, Copy, PartialEq)]
enum Invalidation {
    AsKernel,
    SeqAfterLookup,
    ZapWithoutBegin,
}

fn check_invalidation(how: Invalidation) {
    use mmu::invalidate::InvalidateState;
    loom::model(move || {
        let state = Arc::new(InvalidateState::new());
        let mmu_lock = Arc::new(RwLock::new(()));
        let host_pte = Arc::new(AtomicU64::new(OLD_PFN));
        let spte = Arc::new(AtomicU64::new(0));
        let fault = {
            let (state, mmu_lock, host_pte, spte) =
                (state.clone(), mmu_lock.clone(), host_pte.clone(), spte.clone());
            thread::spawn(move || {
                let mut seq = state.fault_seq();
                // get_user_pages: the host's mapping at the address.
                let pfn = host_pte.load(Acquire);
                if how == Invalidation::SeqAfterLookup {
                    seq = state.fault_seq();
                }
                let _held = mmu_lock.read().unwrap();
                if !state.must_retry(seq, HVA) {
                    spte.store(pfn, Relaxed);
                }
            })
        };
        {
            let _held = mmu_lock.write().unwrap();
            if how != Invalidation::ZapWithoutBegin {
                state.begin(HVA, HVA + 0x1000);
            }
            spte.store(0, Relaxed);
        }
        // The host changes its page table: the old page may be reused.
        host_pte.store(NEW_PFN, Release);
        {
            let _held = mmu_lock.write().unwrap();
            state.end();
        }
        fault.join().unwrap();
        assert_ne!(spte.load(Relaxed), OLD_PFN, "{STALE}");
    })
}

/// No stale mapping survives an invalidation.
#[test]
fn loom_tdp_fault_vs_invalidation() {
    check_invalidation(Invalidation::AsKernel);
}

/// Negative control: the fault reads the sequence after its lookup.
#[test]
fn loom_tdp_seq_after_lookup_is_caught() {
    expect_violation(&[STALE], || check_invalidation(Invalidation::SeqAfterLookup));
}

/// Negative control: the invalidation zaps without announcing itself.
#[test]
fn loom_tdp_zap_without_begin_is_caught() {
    expect_violation(&[STALE], || check_invalidation(Invalidation::ZapWithoutBegin));
}

// ---- Model 4 ----

const STALE_COPY: &str = "the migrated copy misses a guest write";

fn check_fast_fault_vs_collection(mark_first: bool, manual: bool) {
    use mmu::dirty;
    loom::model(move || {
        let t = Arc::new(Tables::new(2));
        let protected = Spte(Npt::leaf(PFN, true).0 & !<Npt as SpteFormat>::WRITABLE);
        t.child[0].store(protected.0, Relaxed);
        let bits = Arc::new(vec![AtomicU64::new(0)]);
        let mmu_lock = Arc::new(RwLock::new(()));
        let guest_mode = Arc::new(Mutex::new(()));
        // The page: the version the guest wrote, and the VMM's copy of it.
        let page = Arc::new(AtomicU64::new(0));
        let copy = Arc::new(AtomicU64::new(0));
        let collect = {
            let (t, bits, mmu_lock, guest_mode, page, copy) = (
                t.clone(),
                bits.clone(),
                mmu_lock.clone(),
                guest_mode.clone(),
                page.clone(),
                copy.clone(),
            );
            move || {
                // Manual protection: `KVM_GET_DIRTY_LOG` only reads.
                let snapshot = manual.then(|| dirty::read(&bits, 0));
                let (mask, flush) = {
                    let _held = mmu_lock.write().unwrap();
                    let taken = match snapshot {
                        Some(snap) => dirty::take_masked(&bits, 0, snap),
                        None => dirty::take(&bits, 0),
                    };
                    let mask = snapshot.unwrap_or(taken);
                    let mut ops = ModelOps {
                        t: &t,
                        pending: Vec::new(),
                        release_now: None,
                        released_dirty: false,
                    };
                    let flush = taken != 0
                        && tdp_mmu::write_protect::<Npt, _>(
                            &*t,
                            ROOT,
                            ROOT_LEVEL,
                            Gfn(0),
                            Gfn(1),
                            |_| true,
                            &mut OneTable(None),
                            &mut ops,
                        );
                    (mask, flush)
                };
                if flush {
                    // The flush: the vCPU is out of guest mode after it.
                    drop(guest_mode.lock().unwrap());
                }
                if mask != 0 {
                    copy.store(page.load(Acquire), Release);
                }
            }
        };
        let vcpu = {
            let (t, bits, guest_mode, page) =
                (t.clone(), bits.clone(), guest_mode.clone(), page.clone());
            thread::spawn(move || {
                // The concurrent collection write-protects at most once
                // more: the third try lands.
                for _ in 0..3 {
                    {
                        let _in_guest = guest_mode.lock().unwrap();
                        let leaf = Spte(t.child[0].load(Acquire));
                        if Npt::is_writable(leaf) {
                            page.store(1, Release);
                            return;
                        }
                    }
                    // The write faulted: the fast path, as `Vm::fast_page_fault`.
                    if mark_first {
                        dirty::mark(&bits, 0);
                    }
                    let fixed = tdp_mmu::fast_fault::<Npt, _>(&*t, ROOT, ROOT_LEVEL, Gfn(0), true);
                    assert!(fixed.is_some(), "the leaf is only write-protected");
                    if fixed == Some(true) && !mark_first {
                        dirty::mark(&bits, 0);
                    }
                }
                panic!("the write never landed");
            })
        };
        let collector = thread::spawn(collect.clone());
        collector.join().unwrap();
        vcpu.join().unwrap();
        // The vCPUs are stopped: the last collection.
        collect();
        assert_eq!(copy.load(Acquire), page.load(Acquire), "{STALE_COPY}");
    })
}

/// Every guest write reaches the copy of a live migration.
#[test]
fn loom_tdp_fast_fault_vs_dirty_log() {
    check_fast_fault_vs_collection(false, false);
}

/// The same with manual protection (`KVM_CLEAR_DIRTY_LOG`).
#[test]
fn loom_tdp_fast_fault_vs_clear_dirty_log() {
    check_fast_fault_vs_collection(false, true);
}

/// Negative control: the page logged before its leaf is writable.
#[test]
fn loom_tdp_mark_before_writable_is_caught() {
    expect_violation(&[STALE_COPY], || check_fast_fault_vs_collection(true, false));
}

// ---- Model 5 ----

const RESURRECTED: &str = "a writable SPTE maps the page after the zap";
const LOST_DIRTY: &str = "a write the fast path allowed was not handed over dirty";

fn check_fast_fault_vs_zap(cmpxchg: bool) {
    loom::model(move || {
        let t = Arc::new(Tables::new(2));
        let protected = Spte(Npt::leaf(PFN, true).0 & !<Npt as SpteFormat>::WRITABLE);
        t.child[0].store(protected.0, Relaxed);
        let mmu_lock = Arc::new(RwLock::new(()));
        let vcpu = {
            let t = t.clone();
            thread::spawn(move || {
                if cmpxchg {
                    tdp_mmu::fast_fault::<Npt, _>(&*t, ROOT, ROOT_LEVEL, Gfn(0), true)
                } else {
                    // Broken: a blind store of what was read, widened.
                    let old = Spte(t.child[0].load(Acquire));
                    if !old.is_shadow_present() {
                        return None;
                    }
                    let w = <Npt as SpteFormat>::WRITABLE | <Npt as SpteFormat>::DIRTY;
                    t.child[0].store(old.0 | w, Release);
                    Some(true)
                }
            })
        };
        let released_dirty = {
            let _held = mmu_lock.write().unwrap();
            let mut ops = ModelOps {
                t: &t,
                pending: Vec::new(),
                release_now: None,
                released_dirty: false,
            };
            tdp_mmu::zap_range::<Npt, _>(&*t, ROOT, ROOT_LEVEL, Gfn(0), Gfn(1), &mut ops);
            ops.released_dirty
        };
        // The zap returned: the host may take the page back now.
        let leaf = Spte(t.child[0].load(Acquire));
        assert!(!(leaf.is_shadow_present() && Npt::is_writable(leaf)), "{RESURRECTED}");
        let fixed = vcpu.join().unwrap();
        let leaf = Spte(t.child[0].load(Acquire));
        assert!(!(leaf.is_shadow_present() && Npt::is_writable(leaf)), "{RESURRECTED}");
        // Made writable before the zap: the zap saw W and D.
        if fixed == Some(true) && leaf == Spte::EMPTY {
            assert!(released_dirty, "{LOST_DIRTY}");
        }
    })
}

/// The fast path never leaves a writable SPTE behind a zap.
#[test]
fn loom_tdp_fast_fault_vs_zap() {
    check_fast_fault_vs_zap(true);
}

/// Negative control: widening the leaf without compare-and-exchange.
#[test]
fn loom_tdp_fast_fault_blind_store_is_caught() {
    expect_violation(&[RESURRECTED, LOST_DIRTY], || check_fast_fault_vs_zap(false));
}

// ---- Model 6 ----

const TORN: &str = "the VMM read an entry other than the one pushed";
const UNMARKED: &str = "the reset took an entry the VMM had not harvested";
const LOST_ENTRY: &str = "an entry pushed was never reset";

/// The pages model 6 pushes, in slot 1.
const RING_PAGES: [u64; 2] = [10, 11];

fn check_dirty_ring(publish: std::sync::atomic::Ordering) {
    use mmu::dirty_ring::{DirtyRing, RingEntry};
    loom::model(move || {
        let ring: Arc<DirtyRing<Vec<RingEntry>>> = Arc::new(
            DirtyRing::new((0..128).map(|_| RingEntry::new()).collect()).unwrap(),
        );
        // Pages the VMM harvested, set before it marks their entry.
        let harvested = Arc::new(AtomicU64::new(0));
        let producer = {
            let ring = ring.clone();
            thread::spawn(move || {
                for page in RING_PAGES {
                    assert!(ring.push_publishing_with(1, page, publish));
                }
            })
        };
        let vmm = {
            let (ring, harvested) = (ring.clone(), harvested.clone());
            thread::spawn(move || {
                // One look at each entry, in order, as a VMM's harvest pass.
                for (i, page) in RING_PAGES.into_iter().enumerate() {
                    let e = &ring.entries()[i];
                    let Some(got) = e.harvest() else { return };
                    assert_eq!(got, (1, page), "{TORN}");
                    harvested.fetch_or(1 << page, Relaxed);
                    e.mark_harvested();
                }
            })
        };
        let reset = |taken: &mut u64| {
            for b in ring.reset() {
                assert_eq!(b.slot, 1, "{UNMARKED}");
                let pages = b.mask << b.offset;
                // The mark's release orders the VMM's note before it.
                assert_eq!(pages & !harvested.load(Relaxed), 0, "{UNMARKED}");
                *taken |= pages;
            }
        };
        let mut taken = 0;
        reset(&mut taken);
        producer.join().unwrap();
        vmm.join().unwrap();
        // Everyone stopped: the VMM harvests what it has not, then resets.
        for (i, page) in RING_PAGES.into_iter().enumerate() {
            let e = &ring.entries()[i];
            if harvested.load(Relaxed) & 1 << page == 0 {
                assert_eq!(e.harvest(), Some((1, page)), "{TORN}");
                harvested.fetch_or(1 << page, Relaxed);
                e.mark_harvested();
            }
        }
        reset(&mut taken);
        let all = RING_PAGES.iter().fold(0, |m, p| m | 1 << p);
        assert_eq!(taken, all, "{LOST_ENTRY}");
        assert_eq!(ring.used(), 0, "{LOST_ENTRY}");
    })
}

/// The ring's producer, its VMM and its reset agree on every entry.
#[test]
fn loom_tdp_dirty_ring() {
    check_dirty_ring(Release);
}

/// Negative control: the flag published before the slot and offset.
#[test]
fn loom_tdp_dirty_ring_relaxed_publish_is_caught() {
    expect_violation(&[TORN], || check_dirty_ring(Relaxed));
}

// # Model 7: the APIC doorbell (`rkvm/lapic/mailbox.rs`)
//
// The claim: an interrupt posted to a vCPU's mailbox is never left
// waiting while the vCPU runs the guest. A sender posts a vector and rings;
// the vCPU takes its requests, looks at its IRR, and enters the guest
// unless the doorbell stops it. If it entered without having seen the
// vector, the sender must have seen it in guest mode (and kicked it).

const MISSED_KICK: &str = "the vCPU entered the guest blind to a posted interrupt, unkicked";

fn check_doorbell(barriers: Barriers) {
    loom::model(move || {
        BARRIERS.with(|b| b.set(barriers));
        let mb = Arc::new(lapic::mailbox::Mailbox::new());
        let kicked = Arc::new(AtomicBool::new(false));
        let sender = {
            let (mb, kicked) = (mb.clone(), kicked.clone());
            thread::spawn(move || {
                BARRIERS.with(|b| b.set(barriers));
                mb.post_vector(0x40, false);
                if mb.ring().is_some() {
                    kicked.store(true, Relaxed);
                }
            })
        };
        // The vCPU: one pass of its run loop. Once in the guest it stays
        // there (in guest mode) until something kicks it out.
        mb.take_requests();
        let seen = mb.highest_irr().is_some();
        let entered_blind = !seen && mb.enter(0);
        sender.join().unwrap();
        assert!(!entered_blind || kicked.load(Relaxed), "{MISSED_KICK}");
    })
}

/// A posted interrupt is seen before the entry, or kicks the vCPU out.
#[test]
fn loom_tdp_apic_doorbell() {
    check_doorbell(Barriers { vcpu: true, flush: true });
}

/// Negative control: no barrier between the vCPU's "in guest mode" store
/// and its look at the requests.
#[test]
fn loom_tdp_apic_doorbell_without_vcpu_barrier_is_caught() {
    expect_violation(&[MISSED_KICK], || check_doorbell(Barriers { vcpu: false, flush: true }));
}

/// Negative control: no barrier between the sender's request and its look
/// at the vCPU's mode.
#[test]
fn loom_tdp_apic_doorbell_without_sender_barrier_is_caught() {
    expect_violation(&[MISSED_KICK], || check_doorbell(Barriers { vcpu: true, flush: false }));
}
