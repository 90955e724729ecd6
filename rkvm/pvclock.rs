// SPDX-License-Identifier: GPL-2.0

//! kvmclock, KVM's paravirtual clock: the guest-memory structures
//! (`struct pvclock_vcpu_time_info`, `struct pvclock_wall_clock`), the
//! MSRs that place them, the CPUID leaves that announce them,
//! `struct kvm_clock_data` of `KVM_GET_CLOCK`/`KVM_SET_CLOCK`, and the
//! VM's clock that all of them read.
//!
//! The kvmclock of a VM counts nanoseconds: the host's boot-based raw
//! clock plus the VM's offset (0 at the VM's creation, moved by
//! `KVM_SET_CLOCK`). A guest reads it without an exit, from its TSC: each
//! vCPU's time structure pairs a guest TSC value with the kvmclock at that
//! instant and says how to scale TSC ticks to nanoseconds. Where the
//! host's clocksource is the TSC and every vCPU's TSC has the VM's offset,
//! all vCPUs get the same pair, taken once (KVM's master clock): their
//! clocks then agree exactly and the structure says so
//! (`PVCLOCK_TSC_STABLE_BIT`). Otherwise each vCPU gets a fresh pair when
//! it writes its structure.
//!
//! Pure logic (only `core`), tested on the host.

use crate::abi::field;

/// `MSR_KVM_WALL_CLOCK`, `MSR_KVM_SYSTEM_TIME`: the first kvmclock MSRs
/// (`KVM_FEATURE_CLOCKSOURCE`).
pub(crate) const MSR_WALL_CLOCK: u32 = 0x11;
pub(crate) const MSR_SYSTEM_TIME: u32 = 0x12;
/// `MSR_KVM_WALL_CLOCK_NEW`, `MSR_KVM_SYSTEM_TIME_NEW`
/// (`KVM_FEATURE_CLOCKSOURCE2`): the same structures at other numbers.
pub(crate) const MSR_WALL_CLOCK_NEW: u32 = 0x4b56_4d00;
pub(crate) const MSR_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;

/// Bit 0 of a system-time MSR: the structure is enabled.
pub(crate) const SYSTEM_TIME_ENABLE: u64 = 1;

/// `KVM_CPUID_SIGNATURE`: EAX the highest KVM leaf, EBX:ECX:EDX
/// "KVMKVMKVM\0\0\0".
pub(crate) const CPUID_SIGNATURE: u32 = 0x4000_0000;
/// `KVM_CPUID_FEATURES`: EAX the paravirtual features.
pub(crate) const CPUID_FEATURES: u32 = 0x4000_0001;
/// "KVMKVMKVM\0\0\0" as EBX, ECX, EDX.
pub(crate) const SIGNATURE: [u32; 3] = [
    u32::from_le_bytes(*b"KVMK"),
    u32::from_le_bytes(*b"VMKV"),
    u32::from_le_bytes(*b"M\0\0\0"),
];
/// `KVM_FEATURE_CLOCKSOURCE`, `KVM_FEATURE_CLOCKSOURCE2`,
/// `KVM_FEATURE_CLOCKSOURCE_STABLE_BIT`: both MSR pairs, and
/// `PVCLOCK_TSC_STABLE_BIT` means what it says. Nothing else: rkvm has
/// no other paravirtual feature.
pub(crate) const FEATURE_CLOCKSOURCE: u32 = 1 << 0;
pub(crate) const FEATURE_CLOCKSOURCE2: u32 = 1 << 3;
pub(crate) const FEATURE_CLOCKSOURCE_STABLE_BIT: u32 = 1 << 24;
pub(crate) const FEATURES: u32 =
    FEATURE_CLOCKSOURCE | FEATURE_CLOCKSOURCE2 | FEATURE_CLOCKSOURCE_STABLE_BIT;

/// `PVCLOCK_TSC_STABLE_BIT`: every vCPU's structure gives the same clock.
pub(crate) const TSC_STABLE_BIT: u8 = 1 << 0;
/// `PVCLOCK_GUEST_STOPPED`: the guest's to clear; a rewrite keeps it.
pub(crate) const GUEST_STOPPED: u8 = 1 << 1;

/// Size of `struct pvclock_vcpu_time_info`.
pub(crate) const TIME_INFO_SIZE: usize = 32;
/// Size of `struct pvclock_wall_clock`.
pub(crate) const WALL_CLOCK_SIZE: usize = 12;
/// Offset of `flags` in `struct pvclock_vcpu_time_info`.
pub(crate) const TIME_INFO_FLAGS: usize = 29;

/// `KVM_CLOCK_*`: the flags of `struct kvm_clock_data`.
pub(crate) mod flags {
    /// The clock is the same on every vCPU (KVM's master clock).
    pub(crate) const TSC_STABLE: u32 = 2;
    /// `realtime` is `CLOCK_REALTIME` at `host_tsc`; given to
    /// `KVM_SET_CLOCK`, the time since then is added to `clock`.
    pub(crate) const REALTIME: u32 = 1 << 2;
    /// `host_tsc` is the host TSC value `clock` was read at.
    pub(crate) const HOST_TSC: u32 = 1 << 3;
    /// What `KVM_CHECK_EXTENSION(KVM_CAP_ADJUST_CLOCK)` answers, and the
    /// flags `KVM_SET_CLOCK` takes (it uses only `REALTIME`, but accepts
    /// what `KVM_GET_CLOCK` gave).
    pub(crate) const VALID: u32 = TSC_STABLE | REALTIME | HOST_TSC;
}

/// Size of `struct kvm_clock_data`.
pub(crate) const CLOCK_DATA_SIZE: usize = 48;

/// `struct kvm_clock_data`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ClockData {
    pub(crate) clock: u64,
    pub(crate) flags: u32,
    pub(crate) realtime: u64,
    pub(crate) host_tsc: u64,
}

impl ClockData {
    pub(crate) fn from_bytes(b: &[u8; CLOCK_DATA_SIZE]) -> Self {
        Self {
            clock: u64::from_ne_bytes(field(b, 0)),
            flags: u32::from_ne_bytes(field(b, 8)),
            realtime: u64::from_ne_bytes(field(b, 16)),
            host_tsc: u64::from_ne_bytes(field(b, 24)),
        }
    }

    /// The structure with its padding zeroed, as KVM writes it.
    pub(crate) fn to_bytes(&self) -> [u8; CLOCK_DATA_SIZE] {
        let mut b = [0u8; CLOCK_DATA_SIZE];
        b[0..8].copy_from_slice(&self.clock.to_ne_bytes());
        b[8..12].copy_from_slice(&self.flags.to_ne_bytes());
        b[16..24].copy_from_slice(&self.realtime.to_ne_bytes());
        b[24..32].copy_from_slice(&self.host_tsc.to_ne_bytes());
        b
    }
}

/// How a guest turns TSC ticks into nanoseconds: shift the tick count
/// left by `shift` (right if negative), multiply by `mul` and keep bits
/// 95:32 of the product.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Scale {
    pub(crate) shift: i8,
    pub(crate) mul: u32,
}

const NSEC_PER_SEC: u64 = 1_000_000_000;

impl Scale {
    /// The scale of a TSC running at `khz` kHz (not 0): the largest
    /// multiplier below 2^32 (so with 32 significant bits) for which
    /// `mul * 2^shift / 2^32` is the nanoseconds per tick, rounded down.
    pub(crate) fn for_khz(khz: u32) -> Self {
        // Nanoseconds per tick = num / den, kept with den in (num, 2 num]
        // so that num * 2^32 / den lies in [2^31, 2^32). Doubling den is a
        // shift one further left, halving it (or doubling num) one right.
        let mut num = NSEC_PER_SEC;
        let mut den = u64::from(khz.max(1)) * 1000;
        let mut shift: i8 = 0;
        while den > 2 * num {
            if num < 1 << 31 {
                num <<= 1;
            } else {
                den >>= 1;
            }
            shift -= 1;
        }
        while den <= num {
            den <<= 1;
            shift += 1;
        }
        Self {
            shift,
            mul: ((num << 32) / den) as u32,
        }
    }

    /// `ticks` in nanoseconds (the guest's `pvclock_scale_delta`).
    pub(crate) fn apply(&self, ticks: u64) -> u64 {
        let t = if self.shift < 0 {
            ticks >> -self.shift
        } else {
            ticks << self.shift
        };
        let mul = u64::from(self.mul);
        // Bits 95:32 of the 96-bit product, from its two 32-bit halves.
        (t >> 32) * mul + (((t & 0xffff_ffff) * mul) >> 32)
    }
}

/// `struct pvclock_vcpu_time_info`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TimeInfo {
    pub(crate) version: u32,
    /// The guest TSC at which the kvmclock was `system_time`.
    pub(crate) tsc_timestamp: u64,
    pub(crate) system_time: u64,
    pub(crate) scale: Scale,
    pub(crate) flags: u8,
}

impl TimeInfo {
    pub(crate) fn to_bytes(&self) -> [u8; TIME_INFO_SIZE] {
        let mut b = [0u8; TIME_INFO_SIZE];
        b[0..4].copy_from_slice(&self.version.to_le_bytes());
        b[8..16].copy_from_slice(&self.tsc_timestamp.to_le_bytes());
        b[16..24].copy_from_slice(&self.system_time.to_le_bytes());
        b[24..28].copy_from_slice(&self.scale.mul.to_le_bytes());
        b[28] = self.scale.shift as u8;
        b[TIME_INFO_FLAGS] = self.flags;
        b
    }

    /// The kvmclock a guest reads from this structure at guest TSC `tsc`.
    #[cfg(test)]
    pub(crate) fn read(&self, tsc: u64) -> u64 {
        self.system_time
            .wrapping_add(self.scale.apply(tsc.wrapping_sub(self.tsc_timestamp)))
    }
}

/// The version a structure is rewritten under, odd (readers retry), given
/// the one the guest memory holds; the rewrite ends with it plus one. A
/// version the guest left odd (never written: junk) is stepped past.
pub(crate) fn update_version(old: u32) -> u32 {
    old.wrapping_add(1) | 1
}

/// `struct pvclock_wall_clock` of version `version` for a guest whose
/// kvmclock was 0 at `epoch_ns` nanoseconds of `CLOCK_REALTIME` (seconds
/// in 32 bits, as the structure has them).
pub(crate) fn wall_clock_bytes(version: u32, epoch_ns: u64) -> [u8; WALL_CLOCK_SIZE] {
    let mut b = [0u8; WALL_CLOCK_SIZE];
    b[0..4].copy_from_slice(&version.to_le_bytes());
    b[4..8].copy_from_slice(&((epoch_ns / NSEC_PER_SEC) as u32).to_le_bytes());
    b[8..12].copy_from_slice(&((epoch_ns % NSEC_PER_SEC) as u32).to_le_bytes());
    b
}

/// One reading of the host's clocks, as `rkvm_host_time` (helpers.c)
/// fills it: `struct rkvm_host_time`'s layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct HostTime {
    /// The host TSC.
    pub(crate) tsc: u64,
    /// The kvmclock's base: `CLOCK_MONOTONIC_RAW` plus the time the host
    /// spent suspended (KVM's `get_kvmclock_base_ns`).
    pub(crate) base_ns: u64,
    /// `CLOCK_REALTIME`.
    pub(crate) real_ns: u64,
    /// The host's clocksource is the TSC, and the clocks above were
    /// computed from exactly `tsc`.
    pub(crate) tsc_based: bool,
    /// The CPU whose TSC `tsc` is.
    pub(crate) cpu: u32,
}

/// The pair all vCPUs' structures share while the clock is stable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Master {
    tsc: u64,
    base_ns: u64,
}

/// vCPUs whose TSCs the VMM set together (KVM's TSC generation).
#[derive(Debug, Clone, Copy)]
struct TscGeneration {
    id: u64,
    /// Their TSC offset.
    offset: u64,
    /// How many vCPUs have it.
    vcpus: u32,
}

/// The generation a vCPU belongs to no longer: its TSC was set alone.
pub(crate) const NO_TSC_GENERATION: u64 = u64::MAX;

/// A VM's kvmclock (what KVM keeps in `struct kvm_arch`).
#[derive(Debug)]
pub(crate) struct VmClock {
    /// kvmclock minus the base clock (wrapping: a signed difference).
    offset: u64,
    /// The shared pair, while the clock is stable.
    master: Option<Master>,
    /// TSC ticks to nanoseconds at the host's rate (the guest's TSC runs
    /// at the host's: `tsc.rs`).
    scale: Scale,
    /// The TSC offset vCPUs share (KVM's TSC generation): while some
    /// vCPU's differs, vCPUs' clocks could disagree.
    tsc: TscGeneration,
    /// vCPUs of the VM.
    vcpus: u32,
    /// The VMM's last `IA32_TSC` write: the value and the host TSC then
    /// (KVM's `last_tsc_write`, `last_tsc_nsec`, `user_set_tsc`).
    last_tsc_write: Option<(u64, u64)>,
    /// The TSC's rate, for the one second of slack in synchronizing.
    khz: u32,
    /// vCPU 0 enabled its structure through `MSR_KVM_SYSTEM_TIME`: KVM
    /// never calls such a guest's clock stable (the first kvmclock
    /// guests mishandled it).
    boot_vcpu_old_msr: bool,
    /// `MSR_KVM_WALL_CLOCK(_NEW)`, as last written.
    pub(crate) wall_clock: u64,
    /// Bumped whenever what the vCPUs' structures say changes, so that
    /// each rewrites its own before it enters the guest again.
    generation: u64,
}

impl VmClock {
    /// A VM's clock, 0 at `now`, ticking with a TSC of `khz` kHz; its
    /// vCPUs' TSCs count from 0 at `now` too.
    pub(crate) fn new(now: &HostTime, khz: u32) -> Self {
        let mut c = Self {
            offset: 0u64.wrapping_sub(now.base_ns),
            master: None,
            scale: Scale::for_khz(khz),
            tsc: TscGeneration {
                id: 0,
                offset: 0u64.wrapping_sub(now.tsc),
                vcpus: 0,
            },
            vcpus: 0,
            last_tsc_write: None,
            khz,
            boot_vcpu_old_msr: false,
            wall_clock: 0,
            generation: 0,
        };
        c.update_master(now);
        c
    }

    /// What the vCPUs compare with the generation they wrote.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether every vCPU's structure gives the same clock.
    pub(crate) fn stable(&self) -> bool {
        self.master.is_some()
    }

    /// Decides anew whether the clock is stable, and if so takes the
    /// shared pair from `now` (KVM's `pvclock_update_vm_gtod_copy`); every
    /// vCPU rewrites its structure.
    pub(crate) fn update_master(&mut self, now: &HostTime) {
        let stable = self.can_be_stable(now);
        self.master = stable.then_some(Master {
            tsc: now.tsc,
            base_ns: now.base_ns,
        });
        self.generation = self.generation.wrapping_add(1);
    }

    /// Whether the clock can be stable with the host as `now` found it:
    /// the host's clocksource is the TSC (so the host keeps it in step
    /// across CPUs), and every vCPU's TSC has the VM's offset.
    fn can_be_stable(&self, now: &HostTime) -> bool {
        now.tsc_based && self.tsc.vcpus == self.vcpus && !self.boot_vcpu_old_msr
    }

    /// Whether the host's clocksource changed (to or from the TSC) in a
    /// way that changes whether the clock is stable.
    pub(crate) fn host_changed(&self, now: &HostTime) -> bool {
        self.can_be_stable(now) != self.master.is_some()
    }

    /// `KVM_GET_CLOCK` at `now`.
    pub(crate) fn get(&self, now: &HostTime) -> ClockData {
        match self.master {
            Some(m) => {
                let mut d = ClockData {
                    clock: m
                        .base_ns
                        .wrapping_add(self.offset)
                        .wrapping_add(self.scale.apply(now.tsc.wrapping_sub(m.tsc))),
                    flags: flags::TSC_STABLE,
                    host_tsc: now.tsc,
                    realtime: 0,
                };
                if now.tsc_based {
                    d.realtime = now.real_ns;
                    d.flags |= flags::REALTIME | flags::HOST_TSC;
                }
                d
            }
            None => ClockData {
                clock: now.base_ns.wrapping_add(self.offset),
                ..Default::default()
            },
        }
    }

    /// `KVM_SET_CLOCK` at `now`; `Err` for unknown flags (`EINVAL`). With
    /// `KVM_CLOCK_REALTIME`, the real time since `realtime` (if any) is
    /// added, so that a clock saved on one host and restored on another
    /// does not lose the time in between.
    pub(crate) fn set(&mut self, data: &ClockData, now: &HostTime) -> Result<(), ()> {
        if data.flags & !flags::VALID != 0 {
            return Err(());
        }
        let mut clock = data.clock;
        if data.flags & flags::REALTIME != 0 && now.real_ns > data.realtime {
            clock = clock.wrapping_add(now.real_ns - data.realtime);
        }
        // The pair is taken from `now` too: the clock is `clock` at
        // `now.base_ns` either way.
        self.update_master(now);
        self.offset = clock.wrapping_sub(now.base_ns);
        Ok(())
    }

    /// The structure of a vCPU whose TSC is the host's plus `tsc_offset`,
    /// at `now` (KVM's `kvm_guest_time_update`), version left 0.
    pub(crate) fn time_info(&self, now: &HostTime, tsc_offset: u64) -> TimeInfo {
        let (tsc, base_ns, flags) = match self.master {
            Some(m) => (m.tsc, m.base_ns, TSC_STABLE_BIT),
            None => (now.tsc, now.base_ns, 0),
        };
        TimeInfo {
            version: 0,
            tsc_timestamp: tsc.wrapping_add(tsc_offset),
            system_time: base_ns.wrapping_add(self.offset),
            scale: self.scale,
            flags,
        }
    }

    /// `CLOCK_REALTIME` in nanoseconds when the kvmclock was 0: what the
    /// wall-clock structure tells the guest.
    pub(crate) fn epoch_ns(&self, now: &HostTime) -> u64 {
        now.real_ns.wrapping_sub(self.get(now).clock)
    }

    /// A new vCPU: it joins the current TSC generation, as KVM
    /// synchronizes a vCPU it creates. Returns its TSC offset and
    /// generation.
    pub(crate) fn vcpu_added(&mut self, now: &HostTime) -> (u64, u64) {
        self.vcpus += 1;
        self.tsc.vcpus += 1;
        self.update_master(now);
        (self.tsc.offset, self.tsc.id)
    }

    /// A vCPU of TSC generation `generation` is gone.
    pub(crate) fn vcpu_removed(&mut self, generation: u64, now: &HostTime) {
        self.vcpus -= 1;
        self.leave_generation(generation);
        self.update_master(now);
    }

    fn leave_generation(&mut self, generation: u64) {
        if generation == self.tsc.id {
            self.tsc.vcpus -= 1;
        }
    }

    /// The VMM writes `value` to a vCPU's `IA32_TSC` at host TSC
    /// `host_tsc`; the vCPU is in TSC generation `generation`. Returns
    /// its new offset and generation.
    ///
    /// KVM's `kvm_synchronize_tsc`: a write of 0, or once the VMM has
    /// written the TSC, a value within a second of where its last write
    /// has got to since, is the VMM setting its vCPUs' TSCs together (one
    /// at a time, as the API goes): the vCPU gets the current
    /// generation's offset. Any other value starts a new generation.
    pub(crate) fn vmm_tsc_write(
        &mut self,
        value: u64,
        host_tsc: u64,
        generation: u64,
        now: &HostTime,
    ) -> (u64, u64) {
        let slack = u64::from(self.khz) * 1000;
        let synchronizing = value == 0
            || self.last_tsc_write.is_some_and(|(last, at)| {
                // The guest's TSC runs at the host's rate.
                let expected = last.wrapping_add(host_tsc.wrapping_sub(at));
                value.wrapping_sub(expected).wrapping_add(slack) < 2 * slack
            });
        if synchronizing {
            if generation != self.tsc.id {
                self.tsc.vcpus += 1;
            }
        } else {
            self.tsc = TscGeneration {
                id: self.tsc.id.wrapping_add(1) % NO_TSC_GENERATION,
                offset: value.wrapping_sub(host_tsc),
                vcpus: 1,
            };
        }
        self.last_tsc_write = Some((value, host_tsc));
        self.update_master(now);
        (self.tsc.offset, self.tsc.id)
    }

    /// The guest wrote its own `IA32_TSC` (KVM adjusts that vCPU's offset
    /// alone): the vCPU leaves its generation.
    pub(crate) fn guest_tsc_write(&mut self, generation: u64, now: &HostTime) -> u64 {
        self.leave_generation(generation);
        self.update_master(now);
        NO_TSC_GENERATION
    }

    /// vCPU 0 (the guest, not the VMM) enabled its structure through the
    /// old MSR (`old`) or the new one.
    pub(crate) fn boot_vcpu_msr(&mut self, old: bool, now: &HostTime) {
        if self.boot_vcpu_old_msr != old {
            self.boot_vcpu_old_msr = old;
            self.update_master(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(tsc: u64, base_ns: u64, real_ns: u64, tsc_based: bool) -> HostTime {
        HostTime {
            tsc,
            base_ns,
            real_ns,
            tsc_based,
            cpu: 0,
        }
    }

    #[test]
    fn scale_of_common_rates() {
        for khz in [1u32, 1_000, 100_000, 999_965, 1_000_000, 2_100_000, 3_000_000, 4_294_967] {
            let s = Scale::for_khz(khz);
            assert!(s.mul >= 1 << 31, "{khz} kHz: {s:?}");
            // One second of ticks is a second, to a part in 10^8 or so.
            let ticks = u64::from(khz) * 1000;
            let ns = s.apply(ticks);
            assert!(ns <= NSEC_PER_SEC && NSEC_PER_SEC - ns < 20, "{khz} kHz: {ns} ns");
            // And an hour an hour.
            let ns = s.apply(ticks * 3600);
            assert!(ns <= 3600 * NSEC_PER_SEC && 3600 * NSEC_PER_SEC - ns < 100_000, "{khz} kHz: {ns}");
        }
        // 1 GHz: a tick is a nanosecond, exactly.
        assert_eq!(Scale::for_khz(1_000_000), Scale { shift: 1, mul: 1 << 31 });
        assert_eq!(Scale::for_khz(1_000_000).apply(123_456_789_012), 123_456_789_012);
        // 100 MHz: 10 ns a tick.
        let s = Scale::for_khz(100_000);
        assert_eq!(s.apply(1_000_000), 10_000_000);
        // Large deltas do not overflow the product.
        let s = Scale::for_khz(3_000_000);
        assert!(s.shift < 0);
        let secs = s.apply(u64::MAX) / NSEC_PER_SEC;
        assert!(u64::MAX / 3_000_000_000 - secs < 3, "{secs}");
    }

    #[test]
    fn layouts() {
        let t = TimeInfo {
            version: 3,
            tsc_timestamp: 0x1122_3344_5566_7788,
            system_time: 0x99aa_bbcc_ddee_ff00,
            scale: Scale { shift: -2, mul: 0xdead_beef },
            flags: TSC_STABLE_BIT,
        };
        let b = t.to_bytes();
        assert_eq!(&b[0..8], &[3, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(u64::from_le_bytes(field(&b, 8)), t.tsc_timestamp);
        assert_eq!(u64::from_le_bytes(field(&b, 16)), t.system_time);
        assert_eq!(u32::from_le_bytes(field(&b, 24)), 0xdead_beef);
        assert_eq!(b[28], 0xfe);
        assert_eq!(b[TIME_INFO_FLAGS], 1);
        assert_eq!(&b[30..], &[0, 0]);
        let w = wall_clock_bytes(5, 1_700_000_000 * NSEC_PER_SEC + 123);
        assert_eq!(u32::from_le_bytes(field(&w, 0)), 5);
        assert_eq!(u32::from_le_bytes(field(&w, 4)), 1_700_000_000);
        assert_eq!(u32::from_le_bytes(field(&w, 8)), 123);
        let d = ClockData {
            clock: 1,
            flags: flags::REALTIME,
            realtime: 2,
            host_tsc: 3,
        };
        let b = d.to_bytes();
        assert_eq!(&b[12..16], &[0; 4]);
        assert_eq!(&b[32..], &[0; 16]);
        assert_eq!(ClockData::from_bytes(&b), d);
        assert_eq!(SIGNATURE, [0x4b4d_564b, 0x564b_4d56, 0x4d]);
        // struct rkvm_host_time: three u64, a bool and a u32 after it.
        assert_eq!(core::mem::size_of::<HostTime>(), 32);
        assert_eq!(core::mem::offset_of!(HostTime, cpu), 28);
    }

    #[test]
    fn versions() {
        assert_eq!(update_version(0), 1);
        assert_eq!(update_version(2), 3);
        // Junk left odd is stepped past, never reused.
        assert_eq!(update_version(7), 9);
        assert_eq!(update_version(u32::MAX), 1);
    }

    #[test]
    fn stable_clock_counts_from_creation() {
        let khz = 1_000_000;
        let c = VmClock::new(&at(5_000, 70_000, 1_000_000, true), khz);
        assert!(c.stable());
        // 1000 ticks later: 1000 ns, with realtime and the host TSC.
        let d = c.get(&at(6_000, 71_000, 1_001_000, true));
        assert_eq!(d.clock, 1000);
        assert_eq!(d.flags, flags::VALID);
        assert_eq!((d.realtime, d.host_tsc), (1_001_000, 6_000));
        // A vCPU whose TSC is the host's minus 5000 reads the same.
        let t = c.time_info(&at(9_999, 0, 0, true), 0u64.wrapping_sub(5_000));
        assert_eq!(t.flags, TSC_STABLE_BIT);
        assert_eq!(t.tsc_timestamp, 0);
        assert_eq!(t.read(1_000), 1_000);
        assert_eq!(c.epoch_ns(&at(6_000, 71_000, 1_001_000, true)), 1_000_000);
    }

    #[test]
    fn unstable_clock_follows_the_base() {
        let mut c = VmClock::new(&at(5_000, 70_000, 0, false), 1_000_000);
        assert!(!c.stable());
        let d = c.get(&at(0, 75_000, 0, false));
        assert_eq!(d, ClockData { clock: 5_000, ..Default::default() });
        // Each structure pairs the TSC and base clock of its own reading.
        let t = c.time_info(&at(8_000, 76_000, 0, false), 100);
        assert_eq!((t.tsc_timestamp, t.system_time, t.flags), (8_100, 6_000, 0));
        // The host moved to the TSC: decided again, now stable.
        let now = at(9_000, 77_000, 0, true);
        assert!(c.host_changed(&now));
        let g = c.generation();
        c.update_master(&now);
        assert!(c.stable());
        assert_ne!(g, c.generation());
        assert!(!c.host_changed(&now));
    }

    #[test]
    fn set_clock() {
        let mut c = VmClock::new(&at(0, 1_000, 50_000, true), 1_000_000);
        let g = c.generation();
        let now = at(10_000, 11_000, 60_000, true);
        assert_eq!(c.set(&ClockData { flags: 1, ..Default::default() }, &now), Err(()));
        assert_eq!(c.set(&ClockData { flags: 1 << 4, ..Default::default() }, &now), Err(()));
        assert_eq!(c.generation(), g, "a refused set changes nothing");
        c.set(&ClockData { clock: 1 << 40, ..Default::default() }, &now).unwrap();
        assert_ne!(c.generation(), g);
        assert_eq!(c.get(&now).clock, 1 << 40);
        assert_eq!(c.get(&at(10_500, 0, 0, true)).clock, (1 << 40) + 500);
        // What KVM_GET_CLOCK gave goes back in; with REALTIME, the real
        // time since it was taken is added (never taken away).
        let d = c.get(&now);
        let later = at(20_000, 21_000, 70_000, true);
        c.set(&d, &later).unwrap();
        assert_eq!(c.get(&later).clock, (1 << 40) + 10_000);
        c.set(&ClockData { realtime: 90_000, ..d }, &later).unwrap();
        assert_eq!(c.get(&later).clock, 1 << 40);
        c.set(&ClockData { flags: 0, ..d }, &later).unwrap();
        assert_eq!(c.get(&later).clock, 1 << 40);
        // Backwards works too (the offset is signed).
        c.set(&ClockData { clock: 5, ..Default::default() }, &later).unwrap();
        assert_eq!(c.get(&at(20_007, 0, 0, true)).clock, 12);
    }

    #[test]
    fn tsc_writes_and_old_msr_end_stability() {
        let now = at(0, 0, 0, true);
        let mut c = VmClock::new(&now, 1_000_000);
        let (_, g0) = c.vcpu_added(&now);
        let (_, g1) = c.vcpu_added(&now);
        assert!(c.stable());
        // The guest sets its own TSC: that vCPU alone.
        let g0 = c.guest_tsc_write(g0, &now);
        assert!(!c.stable());
        assert_eq!(c.get(&now).flags, 0);
        // The VMM's write of 0 brings it back to the others' offset.
        let (_, g0) = c.vmm_tsc_write(0, 5_000, g0, &now);
        assert_eq!(g0, g1);
        assert!(c.stable());
        c.boot_vcpu_msr(true, &now);
        assert!(!c.stable());
        assert_eq!(c.time_info(&now, 0).flags, 0);
        c.boot_vcpu_msr(false, &now);
        assert!(c.stable());
        c.vcpu_removed(g0, &now);
        c.vcpu_removed(g1, &now);
        assert!(c.stable());
    }

    #[test]
    fn vmm_tsc_writes_synchronize_as_kvm() {
        let khz = 1_000_000;
        let now = at(1_000, 0, 0, true);
        let mut c = VmClock::new(&now, khz);
        let (creation, g0) = c.vcpu_added(&now);
        assert_eq!(creation, 0u64.wrapping_sub(1_000), "0 at creation");
        let (o1, g1) = c.vcpu_added(&now);
        assert_eq!((o1, g1), (creation, g0));
        // QEMU's reset: 0 to each vCPU, some time apart: one offset.
        let (o0, g0) = c.vmm_tsc_write(0, 50_000, g0, &now);
        let (o1, g1) = c.vmm_tsc_write(0, 90_000, g1, &now);
        assert_eq!((o0, o1), (creation, creation));
        assert!(c.stable());
        // A restore: a new value starts a generation; the same value a
        // little later joins it, as where the first write got to.
        let value = 1u64 << 40;
        let (o0, g0) = c.vmm_tsc_write(value, 100_000, g0, &now);
        assert_eq!(o0, value - 100_000);
        assert_ne!(g0, g1);
        assert!(!c.stable(), "vCPU 1 is still on the old offset");
        let (o1, g1) = c.vmm_tsc_write(value, 100_000 + 3 * u64::from(khz) * 100, g1, &now);
        assert_eq!((o1, g1), (o0, g0));
        assert!(c.stable());
        // More than a second off where the last write got to: a TSC of
        // its own.
        let later = 200_000 + 2 * u64::from(khz) * 1000;
        let (o1, g1) = c.vmm_tsc_write(value, later, g1, &now);
        assert_ne!((o1, g1), (o0, g0));
        assert!(!c.stable());
        // And a value behind by more than a second, likewise.
        let (o0, g0) = c.vmm_tsc_write(1, later + 10, g0, &now);
        assert_ne!((o0, g0), (o1, g1));
        assert!(!c.stable());
        // A new vCPU joins the current generation.
        let (o2, g2) = c.vcpu_added(&now);
        assert_eq!((o2, g2), (o0, g0));
    }
}
