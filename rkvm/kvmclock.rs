// SPDX-License-Identifier: GPL-2.0

//! kvmclock in the kernel: the VM's clock behind its lock
//! (`KVM_GET_CLOCK`, `KVM_SET_CLOCK`), the wall-clock structure, and each
//! vCPU's time structure in guest memory. The logic is `pvclock.rs`.
//!
//! A vCPU rewrites its structure before it enters the guest whenever what
//! the structure says changed (KVM's `KVM_REQ_CLOCK_UPDATE`): the guest
//! enabled it, the VM's clock changed (`KVM_SET_CLOCK`, stability won or
//! lost), the vCPU's TSC offset changed, or, while the clock is not
//! stable, the vCPU moved to another host CPU (its structure pairs the
//! TSC of the CPU it was written on) or a second passed. Every second
//! (of TSC, checked at entries) a vCPU with kvmclock also looks whether
//! the host's clocksource changed to or from the TSC, which decides
//! stability anew (KVM learns it from a timekeeping notifier).
//!
//! Guest memory is written through `Vm::write_guest_phys` with the
//! vCPU's dirty ring, so a VMM that logs dirty pages sees the writes.
//!
//! # Locking
//!
//! `Clock::state` is a spinlock, innermost: taken for a host clock
//! reading and a few computations, never around guest-memory accesses.
//! A vCPU's own state is under its vCPU mutex (it is part of `CpuCore`).

use core::sync::atomic::{AtomicU64, Ordering};

use kernel::{new_spinlock, prelude::*, sync::SpinLock};

use crate::{
    dirty_ring_pages::VcpuRing,
    pvclock::{self, ClockData, HostTime, TimeInfo, VmClock},
    uarg,
    vm::Vm,
    x86,
};

/// Page size of guest memory, for writes that must not cross a page.
const PAGE: u64 = 4096;

/// A VM's kvmclock.
#[pin_data]
pub(crate) struct Clock {
    #[pin]
    state: SpinLock<VmClock>,
    /// `state`'s generation, for the check before each entry, which
    /// takes no lock.
    generation: AtomicU64,
}

impl Clock {
    /// The clock of a VM created now: 0 now.
    pub(crate) fn new() -> impl PinInit<Self> {
        let clock = VmClock::new(&x86::host_time(), x86::tsc_khz());
        let generation = AtomicU64::new(clock.generation());
        pin_init!(Self {
            state <- new_spinlock!(clock, "Vm::clock"),
            generation,
        })
    }

    /// Counts a new vCPU in: its TSC offset and generation.
    pub(crate) fn add_vcpu(&self) -> (u64, u64) {
        self.with(|c, now| c.vcpu_added(now))
    }

    /// Counts out a vCPU of TSC generation `generation` whose creation
    /// failed.
    pub(crate) fn remove_vcpu(&self, generation: u64) {
        self.with(|c, now| c.vcpu_removed(generation, now));
    }

    /// Runs `f` on the clock and a reading of the host's clocks taken
    /// under the lock, then publishes the generation.
    fn with<R>(&self, f: impl FnOnce(&mut VmClock, &HostTime) -> R) -> R {
        let mut clock = self.state.lock();
        let now = x86::host_time();
        let r = f(&mut clock, &now);
        self.generation.store(clock.generation(), Ordering::Release);
        r
    }

    /// `KVM_GET_CLOCK`.
    pub(crate) fn get_ioctl(&self, arg: usize) -> Result {
        let data = self.with(|c, now| c.get(now));
        uarg::write(arg, &data.to_bytes())
    }

    /// `KVM_SET_CLOCK`: `EINVAL` for unknown flags, changing nothing.
    pub(crate) fn set_ioctl(&self, arg: usize) -> Result {
        let data = ClockData::from_bytes(&uarg::read(arg)?);
        self.with(|c, now| c.set(&data, now)).map_err(|()| EINVAL)
    }

    /// `MSR_KVM_WALL_CLOCK(_NEW)` as last written.
    pub(crate) fn wall_clock_msr(&self) -> u64 {
        self.state.lock().wall_clock
    }
}

/// Reads guest memory at `gpa`, across a page boundary if need be.
fn read_guest(vm: &Vm, gpa: u64, out: &mut [u8]) -> Option<()> {
    let first = out.len().min((PAGE - gpa % PAGE) as usize);
    let (a, b) = out.split_at_mut(first);
    vm.read_guest_phys(gpa, a)?;
    if !b.is_empty() {
        vm.read_guest_phys(gpa.wrapping_add(first as u64), b)?;
    }
    Some(())
}

/// Writes guest memory at `gpa` for the vCPU whose dirty ring is `ring`,
/// across a page boundary if need be.
fn write_guest(vm: &Vm, gpa: u64, data: &[u8], ring: Option<&VcpuRing>) -> Option<()> {
    let first = data.len().min((PAGE - gpa % PAGE) as usize);
    let (a, b) = data.split_at(first);
    vm.write_guest_phys(gpa, a, ring)?;
    if !b.is_empty() {
        vm.write_guest_phys(gpa.wrapping_add(first as u64), b, ring)?;
    }
    Some(())
}

/// A write of `MSR_KVM_WALL_CLOCK(_NEW)`: records `gpa` and writes there
/// the real time at which the VM's kvmclock was 0, under the version
/// protocol (odd while it changes). Nothing is written at 0 or where no
/// writable memory is, as KVM.
pub(crate) fn write_wall_clock(vm: &Vm, gpa: u64, ring: Option<&VcpuRing>) {
    let epoch = vm.clock().with(|c, now| {
        c.wall_clock = gpa;
        c.epoch_ns(now)
    });
    if gpa == 0 {
        return;
    }
    let mut old = [0u8; 4];
    if read_guest(vm, gpa, &mut old).is_none() {
        return;
    }
    let version = pvclock::update_version(u32::from_le_bytes(old));
    let _ = (|| {
        write_guest(vm, gpa, &version.to_le_bytes(), ring)?;
        write_guest(vm, gpa, &pvclock::wall_clock_bytes(version, epoch), ring)?;
        write_guest(vm, gpa, &version.wrapping_add(1).to_le_bytes(), ring)
    })();
}

/// What a vCPU's structure was last written from.
#[derive(Clone, Copy)]
struct Written {
    generation: u64,
    tsc_offset: u64,
    /// While the clock is not stable: the CPU whose TSC it pairs.
    cpu: Option<u32>,
}

/// A vCPU's kvmclock.
pub(crate) struct VcpuClock {
    /// `MSR_KVM_SYSTEM_TIME(_NEW)`: the structure's address, bit 0 set
    /// when enabled.
    msr: u64,
    /// The vCPU is the VM's vCPU 0, whose choice of MSR KVM watches.
    boot: bool,
    /// The vCPU's TSC generation (`VmClock::vcpu_added`).
    tsc_generation: u64,
    /// `None`: to be written before the next entry.
    written: Option<Written>,
    /// Host TSC after which the next entry looks at the host's clocks.
    next_poll: u64,
}

impl VcpuClock {
    /// The clock of a vCPU in TSC generation `tsc_generation`.
    pub(crate) fn new(tsc_generation: u64) -> Self {
        Self {
            msr: 0,
            boot: false,
            tsc_generation,
            written: None,
            next_poll: 0,
        }
    }

    /// At RESET (creation, and after a shutdown) kvmclock is off, as
    /// KVM's `kvmclock_reset`; the TSC is not reset.
    pub(crate) fn reset(&mut self, is_bsp: bool) {
        self.msr = 0;
        self.boot = is_bsp;
        self.written = None;
    }

    /// `MSR_KVM_SYSTEM_TIME(_NEW)` as last written.
    pub(crate) fn system_time_msr(&self) -> u64 {
        self.msr
    }

    /// A write of `MSR_KVM_SYSTEM_TIME` (`old`) or `_NEW`, by the guest or
    /// (`host`) `KVM_SET_MSRS`. Any value is taken, as KVM; the structure
    /// is written before the next entry.
    pub(crate) fn set_system_time(&mut self, vm: &Vm, val: u64, old: bool, host: bool) {
        if self.boot && !host {
            vm.clock().with(|c, now| c.boot_vcpu_msr(old, now));
        }
        self.msr = val;
        self.written = None;
    }

    /// A write of `IA32_TSC` of `value` at host TSC `host_tsc`, by the
    /// guest or (`host`) `KVM_SET_MSRS`: the vCPU's new TSC offset.
    pub(crate) fn tsc_written(&mut self, vm: &Vm, value: u64, host_tsc: u64, host: bool) -> u64 {
        let generation = self.tsc_generation;
        let (offset, generation) = vm.clock().with(|c, now| {
            if host {
                c.vmm_tsc_write(value, host_tsc, generation, now)
            } else {
                (value.wrapping_sub(host_tsc), c.guest_tsc_write(generation, now))
            }
        });
        self.tsc_generation = generation;
        offset
    }

    /// The vCPU goes: it no longer counts for the VM's TSC generation.
    pub(crate) fn vcpu_gone(&self, vm: &Vm) {
        vm.clock().remove_vcpu(self.tsc_generation);
    }

    /// Before an entry: writes the structure if it is enabled and out of
    /// date. `tsc_offset` is the vCPU's; `ring` its dirty ring.
    pub(crate) fn refresh(&mut self, vm: &Vm, tsc_offset: u64, ring: Option<&VcpuRing>) {
        if self.msr & pvclock::SYSTEM_TIME_ENABLE == 0 {
            return;
        }
        let clock = vm.clock();
        let tsc = x86::rdtsc();
        if tsc >= self.next_poll {
            self.next_poll = tsc.saturating_add(u64::from(x86::tsc_khz()) * 1000);
            clock.with(|c, now| {
                if c.host_changed(now) {
                    c.update_master(now);
                }
            });
            if self.written.is_some_and(|w| w.cpu.is_some()) {
                // An unstable clock drifts from the host's: renewed.
                self.written = None;
            }
        }
        let generation = clock.generation.load(Ordering::Acquire);
        if self
            .written
            .is_some_and(|w| w.generation == generation && w.tsc_offset == tsc_offset)
        {
            return;
        }
        let (info, generation, cpu) = clock.with(|c, now| {
            let cpu = (!c.stable()).then_some(now.cpu);
            (c.time_info(now, tsc_offset), c.generation(), cpu)
        });
        write_time_info(vm, self.msr & !pvclock::SYSTEM_TIME_ENABLE, info, ring);
        self.written = Some(Written {
            generation,
            tsc_offset,
            cpu,
        });
    }

    /// With IRQs off, about to enter on `cpu`: whether the structure pairs
    /// another CPU's TSC (it is then rewritten, and the entry retried).
    pub(crate) fn moved_from(&mut self, cpu: u32) -> bool {
        let moved = self
            .written
            .is_some_and(|w| w.cpu.is_some_and(|c| c != cpu));
        if moved {
            self.written = None;
        }
        moved
    }
}

/// Writes `info` as the structure at `gpa` under the version protocol: the
/// version goes odd, the rest is written, the version goes even, so a
/// reader (on any vCPU) that sees the same even version before and after
/// its read has a consistent copy. `PVCLOCK_GUEST_STOPPED` stays as the
/// guest left it. A structure that crosses a page, or lies where no
/// writable memory is, is not written, as KVM's cache of it cannot map it.
fn write_time_info(vm: &Vm, gpa: u64, info: TimeInfo, ring: Option<&VcpuRing>) {
    if gpa % PAGE + pvclock::TIME_INFO_SIZE as u64 > PAGE {
        return;
    }
    let mut old = [0u8; pvclock::TIME_INFO_SIZE];
    if vm.read_guest_phys(gpa, &mut old).is_none() {
        return;
    }
    let version = pvclock::update_version(u32::from_le_bytes(crate::abi::field(&old, 0)));
    let info = TimeInfo {
        version,
        flags: info.flags | old[pvclock::TIME_INFO_FLAGS] & pvclock::GUEST_STOPPED,
        ..info
    };
    // One page: logged once, by the last write, after the others.
    let _ = (|| {
        vm.write_guest_phys(gpa, &version.to_le_bytes(), None)?;
        vm.write_guest_phys(gpa, &info.to_bytes(), None)?;
        vm.write_guest_phys(gpa, &version.wrapping_add(1).to_le_bytes(), ring)
    })();
}
