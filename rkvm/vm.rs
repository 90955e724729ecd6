// SPDX-License-Identifier: GPL-2.0

//! The VM: what a VM fd refers to.
//!
//! # Locking
//!
//! `slots_lock` serialises memslot writers. Memslot readers (later: the
//! page-fault path) use `memslots.read()`, an SRCU read section, and never
//! take `slots_lock`. Writers build a new set while holding `slots_lock`,
//! leave their own read section, then publish it (`SrcuBox::replace` waits
//! for an SRCU grace period before freeing the old set).
//!
//! A deleted or moved slot's mappings are zapped after the grace period,
//! before the ioctl returns. A fault records the set's generation under
//! SRCU and re-checks it under `mmu_lock`: one that raced with a change
//! (the generation moved on) retries instead of mapping a frame of the old
//! set. One that did not race finished its SRCU section before the grace
//! period ended, so the zap that follows removes anything it mapped.
//!
//! Lock order: `slots_lock` -> `vcpus` -> SRCU -> `mmu_lock` (see
//! `mmu/tdp.rs` and locking.rst).

use core::sync::atomic::{AtomicU64, Ordering};

use kernel::{
    fs::File,
    mm::Mm,
    new_mutex, new_srcu,
    page::PAGE_SIZE,
    prelude::*,
    str::CStr,
    sync::{aref::ARef, Arc, ArcBorrow, Mutex},
    transmute::AsBytes,
};

use crate::{
    abi,
    anon_fd::AnonFile,
    caps,
    dirty_ring_pages::{self, VcpuRing},
    hw,
    ioeventfd::IOEVENTFD_SIZE,
    ioevents::IoEvents,
    irqchip::{Irqchip, IRQFD_SIZE},
    kvmclock,
    lapic::apic::ApicShared,
    memslot::{
        self, HostLimits, HvaEntry, Memslot, RegionRequest, SlotError, MEM_READONLY, NR_MEMSLOTS,
    },
    mmu::{
        dirty,
        dirty_ring::{self, SizeError},
        tdp::{PtCache, Tdp},
        tdp_mmu::{self, MapOutcome},
        Gfn, GuestPage,
    },
    shim::mmu_notifier::{MmuNotifier, NotifierOps},
    stats::{self, Desc},
    stats_file::{StatsFile, StatsSource},
    srcu_box::SrcuBox,
    tsc, uarg,
    vcpu::Vcpu,
    x86,
};

/// The dirty bitmap of a slot that logs dirty pages (see `mmu/dirty.rs`).
/// It follows the slot across moves and flag changes, as KVM's does.
struct DirtyLog {
    bits: KVVec<AtomicU64>,
}

impl DirtyLog {
    /// A log of `npages` pages, clear or (`all_set`) with every page set.
    fn new(npages: u64, all_set: bool) -> Result<Arc<Self>> {
        let n = dirty::words(npages);
        let mut bits = KVVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            bits.push(AtomicU64::new(0), GFP_KERNEL)?;
        }
        if all_set {
            dirty::set_all(&bits, npages);
        }
        Ok(Arc::new(Self { bits }, GFP_KERNEL)?)
    }
}

/// How a slot that starts logging dirty pages logs them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NewLogs {
    /// In a bitmap, clear.
    Clear,
    /// In a bitmap with every page set (`KVM_DIRTY_LOG_INITIALLY_SET`).
    AllSet,
    /// In the vCPUs' dirty rings: no bitmap.
    Ring,
}

/// Where a write to a page of a logging slot is recorded.
#[derive(Clone, Copy)]
enum DirtyTarget<'a> {
    /// The slot's bitmap.
    Bitmap(&'a DirtyLog),
    /// The dirty ring of the vCPU that let the guest write; the slot id
    /// as entries name it (address space 0).
    Ring(&'a VcpuRing, u32),
}

impl DirtyTarget<'_> {
    /// Records page `rel` (relative to the slot's first frame).
    fn mark(self, rel: u64) {
        match self {
            Self::Bitmap(log) => dirty::mark(&log.bits, rel),
            Self::Ring(ring, slot) => {
                // Room was checked by the fault path; the kernel's own
                // writes for one exit (at most a few pages) fit in the
                // reserve the vCPU stops with (see `dirty_ring.rs`).
                let _ = ring.push(slot, rel);
            }
        }
    }

    /// Whether a page can be recorded now: a full ring cannot take it (and
    /// its vCPU stops before it enters the guest again).
    fn has_room(self) -> bool {
        match self {
            Self::Bitmap(_) => true,
            Self::Ring(ring, _) => ring.has_room(),
        }
    }
}

/// One published set of memslots.
struct Memslots {
    /// Sorted by gfn, disjoint (built only by `memslot::Change::build`).
    slots: KVec<Memslot>,
    /// The dirty bitmap of each slot of `slots` that logs dirty pages.
    dirty: KVec<Option<Arc<DirtyLog>>>,
    /// The slots by host address, for MMU-notifier ranges.
    hva_index: KVec<HvaEntry>,
    /// Bumped by every change, so a reader can tell two sets apart.
    generation: u64,
}

impl Memslots {
    /// The set of `slots`; a slot that logs dirty pages keeps its bitmap
    /// from `prev` (same id, logging there too), or gets a new one as
    /// `new_logs` says.
    fn new(
        slots: KVec<Memslot>,
        generation: u64,
        prev: Option<&Memslots>,
        new_logs: NewLogs,
    ) -> Result<KBox<Self>> {
        let mut hva_index = KVec::with_capacity(slots.len(), GFP_KERNEL)?;
        let mut dirty = KVec::with_capacity(slots.len(), GFP_KERNEL)?;
        for s in slots.iter() {
            hva_index.push(HvaEntry::default(), GFP_KERNEL)?;
            let log = if !s.logs_dirty() {
                None
            } else if let Some(log) = prev.and_then(|p| p.dirty_log(s.id)) {
                Some(log)
            } else if new_logs == NewLogs::Ring {
                None
            } else {
                Some(DirtyLog::new(s.npages, new_logs == NewLogs::AllSet)?)
            };
            dirty.push(log, GFP_KERNEL)?;
        }
        memslot::build_hva_index(&slots, &mut hva_index);
        Ok(KBox::new(
            Self {
                slots,
                dirty,
                hva_index,
                generation,
            },
            GFP_KERNEL,
        )?)
    }

    /// The dirty bitmap of slot `id`, if it logs dirty pages.
    fn dirty_log(&self, id: u16) -> Option<Arc<DirtyLog>> {
        let i = self.slots.iter().position(|s| s.id == id)?;
        self.dirty_log_at(i).cloned()
    }

    /// The dirty bitmap of `slots[idx]`, if it logs dirty pages.
    fn dirty_log_at(&self, idx: usize) -> Option<&Arc<DirtyLog>> {
        self.dirty.get(idx)?.as_ref()
    }

    /// The slot backing guest-physical address `gpa`: its index, itself,
    /// and the host address of `gpa`.
    fn backing(&self, gpa: u64) -> Option<(usize, &Memslot, u64)> {
        let gfn = gpa >> memslot::PAGE_SHIFT;
        let idx = memslot::lookup_index(&self.slots, gfn)?;
        let slot = &self.slots[idx];
        Some((idx, slot, slot.gfn_to_hva(gfn) + (gpa & 0xfff)))
    }

    /// Logs the kernel's write at `gpa`, in `slots[idx]`, for the vCPU
    /// whose dirty ring is `ring`, as a guest write would be logged.
    fn log_write(&self, idx: usize, gpa: u64, ring: Option<&VcpuRing>) {
        if let Some(log) = self.dirty_target(idx, ring) {
            log.mark((gpa >> memslot::PAGE_SHIFT) - self.slots[idx].base_gfn);
        }
    }

    /// Where writes to `slots[idx]` are recorded, if it logs dirty pages:
    /// the ring of the vCPU that writes, if the VM has rings (then every
    /// vCPU has one), else the slot's bitmap.
    fn dirty_target<'a>(&'a self, idx: usize, ring: Option<&'a VcpuRing>) -> Option<DirtyTarget<'a>> {
        let slot = self.slots.get(idx).filter(|s| s.logs_dirty())?;
        match ring {
            Some(ring) => Some(DirtyTarget::Ring(ring, slot.id.into())),
            None => self.dirty_log_at(idx).map(|log| DirtyTarget::Bitmap(log)),
        }
    }
}

/// The VM's vCPUs, as far as the VM needs them.
struct VcpuList {
    /// Ids of the vCPUs created so far. A vCPU lives as long as the VM (its
    /// fd may close earlier), so an id is never reused, as in KVM.
    ids: KVec<u32>,
    /// Entries of each vCPU's dirty ring; 0 without rings. Set only while
    /// there are no vCPUs.
    ring_entries: u32,
    /// The vCPUs' dirty rings, for `KVM_RESET_DIRTY_RINGS`.
    rings: KVec<Arc<VcpuRing>>,
}

/// What the MMU notifier needs of a VM: the memslots and the TDP MMU.
#[pin_data]
pub(crate) struct VmMmu {
    #[pin]
    memslots: SrcuBox<Memslots>,
    /// The generation of the newest memslot set, written before it is
    /// published (see the module comment).
    slots_generation: AtomicU64,
    #[pin]
    tdp: Tdp,
}

/// The guest frames host addresses `[start, end)` back in `slots`.
fn gfns_for_hva(slots: &Memslots, start: u64, end: u64) -> impl Iterator<Item = (Gfn, Gfn)> + '_ {
    memslot::hva_overlaps(&slots.hva_index, start, end).filter_map(move |e| {
        let (first, last) = slots.slots.get(e.slot)?.gfns_for_hva(start, end);
        Some((Gfn(first), Gfn(last)))
    })
}

impl VmMmu {
    /// Zaps what host addresses `[start, end)` back and keeps faults on
    /// them from mapping until `end_invalidate`.
    fn begin_invalidate(&self, start: u64, end: u64, may_block: bool) {
        let slots = self.memslots.read();
        self.tdp
            .invalidate_begin(start, end, gfns_for_hva(&slots, start, end), may_block);
    }
}

impl NotifierOps for VmMmu {
    fn invalidate_range_start(&self, start: u64, end: u64, blockable: bool) -> bool {
        // Zapping only drops mappings; it neither sleeps nor allocates
        // unless it may yield, so the OOM reaper's ranges are served too.
        self.begin_invalidate(start, end, blockable);
        true
    }

    fn invalidate_range_end(&self, _start: u64, _end: u64) {
        self.tdp.invalidate_end();
    }

    fn age(&self, start: u64, end: u64, clear: bool, flush: bool) -> bool {
        let slots = self.memslots.read();
        self.tdp.age(gfns_for_hva(&slots, start, end), clear, flush)
    }

    fn release(&self) {
        // The address space is gone: nothing stays mapped, and faults,
        // which GUP in that address space, cannot map anything again.
        self.begin_invalidate(0, u64::MAX, true);
        self.tdp.invalidate_end();
    }
}

/// A virtual machine.
///
/// # Invariants
///
/// `mm` is the address space of the process that created the VM; guest
/// memory will be that process's memory, so the VM is only driven from it.
/// `notifier` is registered on `mm` for `mmu`, and goes first when the VM
/// is dropped (fields drop in declaration order), so no callback runs once
/// the rest goes.
#[pin_data]
pub(crate) struct Vm {
    notifier: MmuNotifier<VmMmu>,
    mm: ARef<Mm>,
    #[pin]
    slots_lock: Mutex<()>,
    mmu: Arc<VmMmu>,
    /// Taken after `slots_lock` where both are.
    #[pin]
    vcpus: Mutex<VcpuList>,
    /// The creator's pid, which names the VM's statistics (`kvm-<pid>`).
    pid: i32,
    /// `KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2` options (`abi::dirty_log`), set
    /// by `KVM_ENABLE_CAP`.
    dirty_log_options: AtomicU64,
    /// The split irqchip (in-kernel local APICs), once enabled.
    #[pin]
    irqchip: Irqchip,
    /// `KVM_IOEVENTFD` assignments.
    #[pin]
    ioevents: IoEvents,
    /// kvmclock (`kvmclock.rs`).
    #[pin]
    clock: kvmclock::Clock,
}

impl Vm {
    /// Creates a VM of type `vm_type` owned by the current process.
    pub(crate) fn create(vm_type: usize) -> Result<Arc<Self>> {
        if vm_type != abi::vm_type::X86_DEFAULT {
            return Err(EINVAL);
        }
        let task = kernel::current!();
        let mm: &Mm = task.mm().ok_or(EINVAL)?;
        let empty = Memslots::new(KVec::new(), 0, None, NewLogs::Clear)?;
        let mmu = Arc::pin_init(
            try_pin_init!(VmMmu {
                memslots <- SrcuBox::new(empty, new_srcu!("Vm::memslots")),
                slots_generation: AtomicU64::new(0),
                tdp <- Tdp::new(hw::tdp_format(), hw::tdp_max_level(), hw::tdp_hw_accessed())?,
            }),
            GFP_KERNEL,
        )?;
        let notifier = MmuNotifier::register(mm, mmu.clone())?;
        // INVARIANT: `mm` is the creating process's address space, and the
        // notifier is registered on it for `mmu`.
        Arc::pin_init(
            try_pin_init!(Self {
                notifier,
                mm: ARef::from(mm),
                slots_lock <- new_mutex!((), "Vm::slots_lock"),
                mmu,
                vcpus <- new_mutex!(
                    VcpuList {
                        ids: KVec::new(),
                        ring_entries: 0,
                        rings: KVec::new(),
                    },
                    "Vm::vcpus"
                ),
                pid: task.pid(),
                dirty_log_options: AtomicU64::new(0),
                irqchip <- Irqchip::new()?,
                ioevents <- IoEvents::new()?,
                clock <- kvmclock::Clock::new(),
            }),
            GFP_KERNEL,
        )
    }

    /// The VM's interrupt controller (split irqchip).
    pub(crate) fn irqchip(&self) -> &Irqchip {
        &self.irqchip
    }

    /// The VM's `KVM_IOEVENTFD` assignments.
    pub(crate) fn ioevents(&self) -> &IoEvents {
        &self.ioevents
    }

    /// The VM's kvmclock.
    pub(crate) fn clock(&self) -> &kvmclock::Clock {
        &self.clock
    }

    /// The name of the VM's statistics, which its vCPUs' extend.
    pub(crate) fn stats_pid(&self) -> i32 {
        self.pid
    }

    /// Whether the caller runs in the VM's address space. KVM refuses (with
    /// `EIO`) to drive a VM from anywhere else, e.g. a forked child that
    /// inherited the fd: its memory would not be the guest's.
    pub(crate) fn owned_by_current(&self) -> bool {
        kernel::current!()
            .mm()
            .is_some_and(|mm| core::ptr::eq(mm.as_raw(), self.mm.as_raw()))
    }

    /// `KVM_SET_USER_MEMORY_REGION(2)`.
    fn set_memory_region(&self, req: &RegionRequest) -> Result {
        let _writer = self.slots_lock.lock();
        let mmu = &self.mmu;
        // Before the SRCU read section (lock order: see the file comment).
        let new_logs = self.new_logs();
        let (next, generation, change) = {
            let cur = mmu.memslots.read();
            let host = HostLimits {
                max_gfn: x86::max_gfn(),
                user_range_ok: x86::user_range_ok,
            };
            let change = match memslot::plan(&cur.slots, req, &host) {
                Ok(Some(change)) => change,
                Ok(None) => return Ok(()),
                Err(SlotError::Invalid) => return Err(EINVAL),
                Err(SlotError::Overlap) => return Err(EEXIST),
            };
            let mut next = KVec::with_capacity(change.new_len(cur.slots.len()), GFP_KERNEL)?;
            change.build(&cur.slots, |s| next.push(s, GFP_KERNEL))?;
            let new = Memslots::new(next, cur.generation + 1, Some(&cur), new_logs)?;
            (new, cur.generation + 1, change)
            // The read section ends here: `replace` below waits for readers.
        };
        mmu.slots_generation.store(generation, Ordering::Release);
        mmu.memslots.replace(next);
        // Faults that saw the old set retry (the generation check), so the
        // tables are fixed up after the new set is out.
        let range = |s: &Memslot| (Gfn(s.base_gfn), Gfn(s.end_gfn()));
        if let Some((start, end)) = change.unmapped().map(range) {
            mmu.tdp.zap_gfn_range(start, end);
        }
        if let Some((start, end)) = change.starts_logging().map(range) {
            // Split either way; a log that starts all set reports every
            // page anyway, and its pages are write-protected as
            // `KVM_CLEAR_DIRTY_LOG` clears them (as KVM).
            mmu.tdp.write_protect_range(start, end, !self.logs_start_all_set());
        }
        if let Some((start, end)) = change.stops_logging().map(range) {
            // Its 4 KiB leaves go, so faults map it as large as the host
            // does again (KVM zaps only the leaves that could be larger).
            mmu.tdp.zap_gfn_range(start, end);
        }
        Ok(())
    }
}

impl Vm {
    /// `KVM_GET_DIRTY_LOG` of slot `slot` (address space in the high 16
    /// bits) into the user bitmap at `bitmap`: the pages written since the
    /// last call, now write-protected again. `EINVAL` for a bad slot
    /// number, `ENOENT` for a slot that does not exist or does not log,
    /// `EFAULT` (with nothing taken) if the bitmap cannot be written.
    fn get_dirty_log(&self, slot: u32, bitmap: u64) -> Result {
        // As KVM: serialised with memslot changes.
        let _writer = self.slots_lock.lock();
        if self.uses_ring() {
            return Err(ENXIO);
        }
        let (s, log) = self.logging_slot(slot)?;
        let n = dirty::words(s.npages);
        let manual = self.dirty_log_options.load(Ordering::Relaxed)
            & abi::dirty_log::MANUAL_PROTECT_ENABLE
            != 0;
        if !manual && (0..n).all(|i| dirty::read(&log.bits, i) == 0) {
            // Nothing to take or protect: as if the collection had come
            // before the bits being set now.
            return uarg::write_zeroes(bitmap as usize, n * 8);
        }
        let mut words = KVVec::from_elem(0u64, n, GFP_KERNEL)?;
        if manual {
            // Manual protection: a snapshot; `KVM_CLEAR_DIRTY_LOG` takes.
            for (i, w) in words.iter_mut().enumerate() {
                *w = dirty::read(&log.bits, i);
            }
        } else {
            let base = Gfn(s.base_gfn);
            self.mmu.tdp.write_protect_masked(words.iter_mut().enumerate().map(|(i, w)| {
                *w = dirty::take(&log.bits, i);
                (base.add(i as u64 * 64), *w)
            }));
        }
        if uarg::write(bitmap as usize, <[u64] as AsBytes>::as_bytes(&words)).is_err() {
            // Nothing is lost to a bitmap the VMM cannot write: what was
            // taken is reported next time (its pages stay protected,
            // which costs a fault each, not a write).
            if !manual {
                for (i, w) in words.iter().enumerate() {
                    dirty::put_back(&log.bits, i, *w);
                }
            }
            return Err(EFAULT);
        }
        Ok(())
    }

    /// The slot `slot` (address space in bits 31:16) names and its dirty
    /// log: `EINVAL` for a bad number, `ENOENT` if it does not exist or does
    /// not log. The caller holds `slots_lock`, so the slot stays as it is.
    fn logging_slot(&self, slot: u32) -> Result<(Memslot, Arc<DirtyLog>)> {
        let (as_id, id) = (slot >> 16, slot as u16);
        if as_id != 0 || id >= NR_MEMSLOTS {
            return Err(EINVAL);
        }
        let slots = self.mmu.memslots.read();
        let s = *memslot::by_id(&slots.slots, id).ok_or(ENOENT)?;
        Ok((s, slots.dirty_log(id).ok_or(ENOENT)?))
    }

    /// `KVM_CLEAR_DIRTY_LOG`: takes the pages the user bitmap at `bitmap`
    /// names from slot `slot`'s log, `num_pages` from `first_page`, and
    /// write-protects those that were set, so their next write is logged.
    /// `first_page` must be a multiple of 64 and the range in the slot;
    /// `num_pages` a multiple of 64 unless it reaches the slot's end.
    /// `EFAULT` (nothing taken) if the bitmap cannot be read.
    fn clear_dirty_log(&self, slot: u32, first_page: u64, num_pages: u64, bitmap: u64) -> Result {
        let _writer = self.slots_lock.lock();
        if self.uses_ring() {
            return Err(ENXIO);
        }
        // Before the slot is looked up (`ENOENT`), as KVM.
        if first_page % 64 != 0 {
            return Err(EINVAL);
        }
        let (s, log) = self.logging_slot(slot)?;
        let rest = s.npages.checked_sub(first_page).ok_or(EINVAL)?;
        if num_pages > rest || (num_pages < rest && num_pages % 64 != 0) {
            return Err(EINVAL);
        }
        let n = dirty::words(num_pages);
        let mut words = KVVec::from_elem(0u64, n, GFP_KERNEL)?;
        uarg::read_into(bitmap as usize, <[u64] as AsBytes>::as_bytes_mut(&mut words))?;
        let first_word = (first_page / 64) as usize;
        let first = Gfn(s.base_gfn + first_page);
        self.mmu.tdp.write_protect_masked(words.iter().enumerate().map(|(i, &w)| {
            let taken = dirty::take_masked(&log.bits, first_word + i, w);
            (first.add(i as u64 * 64), taken)
        }));
        Ok(())
    }

    /// `KVM_ENABLE_CAP` on the VM: manual dirty-log protection, with
    /// KVM's checks (no flags; `INITIALLY_SET` only with
    /// `MANUAL_PROTECT_ENABLE`), and the dirty ring; `EINVAL` for anything
    /// else, as KVM.
    fn enable_cap(&self, cap: usize, flags: u32, arg0: u64) -> Result {
        use abi::dirty_log::{MANUAL_CAPS, MANUAL_PROTECT_ENABLE};
        match cap {
            // KVM does not look at the flags of these.
            abi::cap::DIRTY_LOG_RING | abi::cap::DIRTY_LOG_RING_ACQ_REL => {
                let entries = match dirty_ring::entries_for(arg0, PAGE_SIZE as u64) {
                    Ok(n) => n,
                    Err(SizeError::Invalid) => return Err(EINVAL),
                    Err(SizeError::TooBig) => return Err(E2BIG),
                };
                // Slots created from now on get no bitmap.
                let _writer = self.slots_lock.lock();
                let mut vcpus = self.vcpus.lock();
                // Once, and before any vCPU: each gets its ring at creation.
                if vcpus.ring_entries != 0 || !vcpus.ids.is_empty() {
                    return Err(EINVAL);
                }
                vcpus.ring_entries = entries;
                Ok(())
            }
            abi::cap::SPLIT_IRQCHIP => {
                if flags != 0 {
                    return Err(EINVAL);
                }
                let vcpus = self.vcpus.lock();
                self.irqchip.enable_split(arg0, !vcpus.ids.is_empty())
            }
            abi::cap::X2APIC_API => {
                if flags != 0 {
                    return Err(EINVAL);
                }
                self.irqchip.enable_x2apic_api(arg0)
            }
            abi::cap::MANUAL_DIRTY_LOG_PROTECT2 => {
                let allowed = if arg0 & MANUAL_PROTECT_ENABLE != 0 {
                    MANUAL_CAPS
                } else {
                    MANUAL_PROTECT_ENABLE
                };
                if flags != 0 || arg0 & !allowed != 0 {
                    return Err(EINVAL);
                }
                self.dirty_log_options.store(arg0, Ordering::Relaxed);
                Ok(())
            }
            _ => Err(EINVAL),
        }
    }

    /// Whether a new dirty log starts with every page set.
    fn logs_start_all_set(&self) -> bool {
        let o = self.dirty_log_options.load(Ordering::Relaxed);
        o == abi::dirty_log::MANUAL_CAPS
    }

    /// Whether the VM logs dirty pages in rings (not bitmaps).
    fn uses_ring(&self) -> bool {
        self.vcpus.lock().ring_entries != 0
    }

    /// How slots that start logging log.
    fn new_logs(&self) -> NewLogs {
        if self.uses_ring() {
            NewLogs::Ring
        } else if self.logs_start_all_set() {
            NewLogs::AllSet
        } else {
            NewLogs::Clear
        }
    }

    /// `KVM_RESET_DIRTY_RINGS`: takes the entries the VMM harvested from
    /// every vCPU's ring and write-protects their pages, so that the next
    /// write to each is pushed again. Returns the number of entries taken;
    /// `EINVAL` without rings.
    fn reset_dirty_rings(&self) -> Result<isize> {
        // Serialises resets (each ring's single consumer) and keeps the
        // slots as they are, as KVM's `slots_lock`.
        let _writer = self.slots_lock.lock();
        // Held throughout: only vCPU creation waits (lock order `slots_lock`
        // -> `vcpus` -> SRCU -> `mmu_lock`).
        let vcpus = self.vcpus.lock();
        if vcpus.ring_entries == 0 {
            return Err(EINVAL);
        }
        let slots = self.mmu.memslots.read();
        let mut taken: isize = 0;
        for ring in vcpus.rings.iter() {
            // One `mmu_lock` section and flush per ring.
            let mut reset = ring.reset();
            self.mmu.tdp.write_protect_masked(reset.by_ref().filter_map(|b| {
                // The VMM wrote the entries: only pages of logging slots,
                // as KVM checks them.
                let (as_id, id) = (b.slot >> 16, b.slot as u16);
                let s = memslot::by_id(&slots.slots, id).filter(|s| as_id == 0 && s.logs_dirty())?;
                let last = b.offset.checked_add(63 - b.mask.leading_zeros() as u64)?;
                (last < s.npages).then(|| (Gfn(s.base_gfn + b.offset), b.mask))
            }));
            taken += reset.entries() as isize;
        }
        Ok(taken)
    }
}

/// What a nested page fault turned out to be.
pub(crate) enum NpfOutcome {
    /// The frame is mapped now (or the fault raced and the guest retries).
    Mapped,
    /// The fast page fault fixed the leaf.
    FastFixed,
    /// No memslot backs the frame, or it is a write to a read-only slot:
    /// the access is MMIO, for userspace.
    Mmio,
}

impl Vm {
    pub(crate) fn tdp(&self) -> &Tdp {
        &self.mmu.tdp
    }

    /// Reads guest-physical memory at `gpa` (within one page); `None` if no
    /// memslot backs it or the host mapping is gone.
    pub(crate) fn read_guest_phys(&self, gpa: u64, out: &mut [u8]) -> Option<()> {
        let slots = self.mmu.memslots.read();
        let (_, _, hva) = slots.backing(gpa)?;
        uarg::read_into(hva as usize, out).ok()
    }

    /// Writes guest-physical memory at `gpa` (within one page) for the
    /// vCPU whose dirty ring is `ring`, logging the page as a guest write
    /// would be; `None` if no writable memslot backs it or the host mapping
    /// is gone.
    pub(crate) fn write_guest_phys(&self, gpa: u64, data: &[u8], ring: Option<&VcpuRing>) -> Option<()> {
        let slots = self.mmu.memslots.read();
        let (idx, slot, hva) = slots.backing(gpa)?;
        if slot.flags & MEM_READONLY != 0 {
            return None;
        }
        uarg::write(hva as usize, data).ok()?;
        slots.log_write(idx, gpa, ring);
        Some(())
    }

    /// Atomically replaces `old` by `new` (4 or 8 bytes) at `gpa`, for the
    /// guest page-table walker's Accessed/Dirty updates. `Some(true)` if
    /// swapped or the memory is read-only (the update is dropped, as a
    /// CPU's write to ROM), `Some(false)` if the value changed, `None` if
    /// nothing backs `gpa`. A swap is logged as `write_guest_phys`'s.
    pub(crate) fn cmpxchg_guest_phys(
        &self,
        gpa: u64,
        size: u32,
        old: u64,
        new: u64,
        ring: Option<&VcpuRing>,
    ) -> Option<bool> {
        let slots = self.mmu.memslots.read();
        let (idx, slot, hva) = slots.backing(gpa)?;
        if slot.flags & MEM_READONLY != 0 {
            return Some(true);
        }
        // The VM's memory is the current process's (the VM's owner).
        let swapped = uarg::cmpxchg(hva, size, old, new).ok()?;
        if swapped {
            slots.log_write(idx, gpa, ring);
        }
        Some(swapped)
    }

    /// Resolves a nested page fault on `gfn` (a `write` or not; `present`:
    /// the hardware found a leaf). With `try_fast`, first the fast page
    /// fault: without `mmu_lock` or a host page lookup if the leaf is there
    /// and only protected for tracking (see `Tdp::fast_fault`). May sleep
    /// (GUP).
    pub(crate) fn handle_npf(
        &self,
        gfn: Gfn,
        write: bool,
        present: bool,
        try_fast: bool,
        cache: &mut PtCache,
        ring: Option<&VcpuRing>,
    ) -> Result<NpfOutcome> {
        let slots = self.mmu.memslots.read();
        let Some(idx) = memslot::lookup_index(&slots.slots, gfn.0) else {
            return Ok(NpfOutcome::Mmio);
        };
        let slot = &slots.slots[idx];
        let slot_writable = slot.flags & MEM_READONLY == 0;
        if write && !slot_writable {
            return Ok(NpfOutcome::Mmio);
        }
        let log = slots.dirty_target(idx, ring);
        if log.is_some_and(|l| !l.has_room()) {
            // The vCPU's ring is full: nothing is made writable, and the
            // vCPU stops (`KVM_EXIT_DIRTY_RING_FULL`) before it would
            // fault again.
            return Ok(NpfOutcome::Mapped);
        }
        if try_fast {
            if let Some(made_writable) = self.mmu.tdp.fast_fault(gfn, write, present) {
                if let (true, Some(log)) = (made_writable, log) {
                    // After the leaf became writable, without `mmu_lock`: a
                    // collection that takes the word first leaves the leaf
                    // writable (its bit was not taken), and the bit set now
                    // is reported by the next one (see locking.rst).
                    log.mark(gfn.0 - slot.base_gfn);
                }
                return Ok(NpfOutcome::FastFixed);
            }
        }
        // A slot that logs dirty pages is mapped writable only by a write,
        // which is logged.
        let map_writable = slot_writable && (write || log.is_none());
        let hva = slot.gfn_to_hva(gfn.0);
        let tdp = &self.mmu.tdp;
        // Before the lookup: an invalidation that changes the host mapping
        // after it is seen under `mmu_lock` below.
        let seq = tdp.fault_seq();
        let page = GuestPage::get(hva, write, map_writable)?;
        cache.top_up()?;
        let held = tdp.read_lock();
        if self.mmu.slots_generation.load(Ordering::Acquire) != slots.generation
            || held.must_retry(seq, hva)
        {
            // A memslot change or an invalidation raced with this fault:
            // the guest faults again.
            return Ok(NpfOutcome::Mapped);
        }
        // As large as the host maps it, where the slot allows (KVM's
        // host-mapping-level check).
        let level = match slot.max_mapping_level(gfn.0).min(held.max_level()) {
            1 => 1,
            max => held.host_mapping_level(hva).min(max),
        };
        // The leaf takes no reference: the notifier zaps it before the
        // host unmaps the page.
        let outcome = held.map(gfn, page.pfn(), page.writable(), level, cache);
        if let Some(log) = log {
            if page.writable() && outcome != MapOutcome::Retry {
                // Under `mmu_lock`, as the leaf became writable: a
                // collection either saw the leaf read-only before, or
                // takes this bit after (see `mmu/dirty.rs`).
                log.mark(gfn.0 - slot.base_gfn);
            }
        }
        // Released (marked dirty and accessed) under `mmu_lock`, as KVM
        // does: an invalidation, which would zap the leaf and let the host
        // clean the page, cannot come in between.
        drop(page);
        drop(held);
        if outcome == MapOutcome::TableInTheWay {
            // Small pages mapped this block before the host collapsed it:
            // their table goes (under the write lock, with a TLB flush),
            // and the guest faults again, onto the large leaf.
            let frames = tdp_mmu::pages_at_level(level);
            let start = Gfn(gfn.0 & !(frames - 1));
            tdp.zap_gfn_range(start, start.add(frames));
        }
        Ok(NpfOutcome::Mapped)
    }
}

impl StatsSource for Vm {
    const DESCS: &'static [Desc] = &stats::vm::DESCS;

    fn values(&self, out: &mut [u64]) {
        let tdp = &self.mmu.tdp;
        out[stats::vm::REMOTE_TLB_FLUSH] = tdp.remote_tlb_flushes();
        for level in 1..=3 {
            out[stats::vm::PAGES_4K + level as usize - 1] = tdp.leaves(level);
        }
    }
}

/// Highest `KVM_SET_TSS_ADDR`: the three-page TSS must fit below 4 GiB.
const TSS_ADDR_MAX: usize = 0xffff_d000;

/// `KVM_CREATE_VCPU`: `EINVAL` for an id out of range or one vCPU too many,
/// `EEXIST` for an id in use.
fn create_vcpu(vm: ArcBorrow<'_, Vm>, id: usize) -> Result<isize> {
    let id = u32::try_from(id)
        .ok()
        .filter(|&id| (id as usize) < abi::MAX_VCPU_IDS)
        .ok_or(EINVAL)?;
    let mut vcpus = vm.vcpus.lock();
    if vcpus.ids.len() >= abi::MAX_VCPUS {
        return Err(EINVAL);
    }
    if vcpus.ids.contains(&id) {
        return Err(EEXIST);
    }
    let ring = match vcpus.ring_entries {
        0 => None,
        n => Some(dirty_ring_pages::new_ring(n)?),
    };
    let apic = if vm.irqchip.enabled() {
        Some(ApicShared::new()?)
    } else {
        None
    };
    // Make room first: once the fd is installed, recording it must not fail.
    vcpus.ids.reserve(1, GFP_KERNEL)?;
    vcpus.rings.reserve(1, GFP_KERNEL)?;
    let idx = vcpus.ids.len();
    let fd = Vcpu::create_fd(vm.into(), id, idx, ring.clone(), apic.clone())?;
    if let Some(apic) = apic {
        vm.irqchip.add_apic(idx, apic);
    }
    vcpus.ids.push_within_capacity(id).map_err(|_| ENOMEM)?;
    if let Some(ring) = ring {
        vcpus.rings.push_within_capacity(ring).map_err(|_| ENOMEM)?;
    }
    Ok(fd as isize)
}

impl AnonFile for Vm {
    const NAME: &'static CStr = c"rkvm-vm";

    fn ioctl(this: ArcBorrow<'_, Self>, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        if !this.owned_by_current() {
            return Err(EIO);
        }
        match cmd {
            abi::system::CHECK_EXTENSION => Ok(caps::check_extension(
                arg,
                x86::online_cpus(),
            )),
            abi::vm::CREATE_VCPU => create_vcpu(this, arg),
            // The rate new vCPUs get: the host's (see `tsc.rs`); settable
            // to that, and only before the first vCPU, as KVM.
            abi::vcpu::GET_TSC_KHZ => Ok(x86::tsc_khz() as isize),
            abi::vcpu::SET_TSC_KHZ => {
                tsc::check_khz(arg as u32, x86::tsc_khz()).map_err(|_| EINVAL)?;
                if !this.vcpus.lock().ids.is_empty() {
                    return Err(EINVAL);
                }
                Ok(0)
            }
            // Both only matter to VMX without unrestricted guest (a real-mode
            // TSS and identity page table for vm86 emulation), which rkvm
            // never uses; they are accepted with KVM's checks and no effect,
            // as kvm_amd and kvm_intel with unrestricted guest do.
            abi::vm::SET_TSS_ADDR if arg > TSS_ADDR_MAX => Err(EINVAL),
            abi::vm::SET_TSS_ADDR => Ok(0),
            abi::vm::SET_IDENTITY_MAP_ADDR => {
                // KVM refuses once vCPUs exist, before reading the argument.
                if !this.vcpus.lock().ids.is_empty() {
                    return Err(EINVAL);
                }
                let _addr: [u8; 8] = uarg::read(arg)?;
                Ok(0)
            }
            abi::vm::SET_USER_MEMORY_REGION => {
                let req = RegionRequest::from_v1(&uarg::read(arg)?);
                if !req.v1_flags_ok() {
                    return Err(EINVAL);
                }
                this.set_memory_region(&req).map(|()| 0)
            }
            abi::vm::SET_USER_MEMORY_REGION2 => {
                let req = RegionRequest::from_v2(&uarg::read(arg)?);
                this.set_memory_region(&req).map(|()| 0)
            }
            abi::GET_STATS_FD => StatsFile::create_fd(this.into(), fmt!("kvm-{}", this.pid)),
            abi::vm::ENABLE_CAP => {
                let req: [u8; abi::vm::ENABLE_CAP_SIZE] = uarg::read(arg)?;
                let cap = u32::from_ne_bytes(abi::field(&req, 0));
                let flags = u32::from_ne_bytes(abi::field(&req, 4));
                let arg0 = u64::from_ne_bytes(abi::field(&req, 8));
                this.enable_cap(cap as usize, flags, arg0).map(|()| 0)
            }
            abi::vm::CLEAR_DIRTY_LOG => {
                let req: [u8; abi::vm::CLEAR_DIRTY_LOG_SIZE] = uarg::read(arg)?;
                this.clear_dirty_log(
                    u32::from_ne_bytes(abi::field(&req, 0)),
                    u64::from_ne_bytes(abi::field(&req, 8)),
                    u32::from_ne_bytes(abi::field(&req, 4)) as u64,
                    u64::from_ne_bytes(abi::field(&req, 16)),
                )
                .map(|()| 0)
            }
            abi::vm::RESET_DIRTY_RINGS => this.reset_dirty_rings(),
            abi::vm::IRQFD => {
                let req: [u8; IRQFD_SIZE] = uarg::read(arg)?;
                this.irqchip.irqfd(&req).map(|()| 0)
            }
            abi::vm::IOEVENTFD => {
                let req: [u8; IOEVENTFD_SIZE] = uarg::read(arg)?;
                this.ioevents.ioctl(&req).map(|()| 0)
            }
            abi::vm::SIGNAL_MSI => this.irqchip.signal_msi(&uarg::read(arg)?),
            abi::vm::SET_GSI_ROUTING => this.irqchip.set_routing(arg).map(|()| 0),
            abi::vm::IRQ_LINE | abi::vm::IRQ_LINE_STATUS => {
                let req: [u8; 8] = uarg::read(arg)?;
                let gsi = u32::from_ne_bytes(abi::field(&req, 0));
                let level = u32::from_ne_bytes(abi::field(&req, 4)) != 0;
                let status = this.irqchip.set_irq_line(gsi, level)?;
                if cmd == abi::vm::IRQ_LINE_STATUS {
                    uarg::write(arg, &status.to_ne_bytes())?;
                }
                Ok(0)
            }
            abi::vm::GET_CLOCK => this.clock.get_ioctl(arg).map(|()| 0),
            abi::vm::SET_CLOCK => this.clock.set_ioctl(arg).map(|()| 0),
            abi::vm::GET_DIRTY_LOG => {
                let req: [u8; abi::vm::DIRTY_LOG_SIZE] = uarg::read(arg)?;
                let slot = u32::from_ne_bytes(abi::field(&req, 0));
                let bitmap = u64::from_ne_bytes(abi::field(&req, 8));
                this.get_dirty_log(slot, bitmap).map(|()| 0)
            }
            // KVM answers unknown VM ioctls with ENOTTY.
            _ => Err(ENOTTY),
        }
    }
}
