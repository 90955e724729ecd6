// SPDX-License-Identifier: GPL-2.0

//! One local APIC's registers.
//!
//! [`Lapic`] is one APIC's register file as its vCPU thread owns it: what
//! the guest reads and writes through the xAPIC MMIO page or the x2APIC
//! MSRs, `KVM_GET/SET_LAPIC`'s 1 KiB image, the APIC base MSR, priorities
//! (TPR, PPR, ISR) and the timer's configuration. A register write returns
//! the [`Action`] it asks of the caller (send an IPI, signal an EOI,
//! reprogram the host timer, republish the identity). What other threads
//! deliver (IRR, TMR, NMI, INIT, SIPI) is in the [`mailbox::Mailbox`],
//! which reads here take as an argument.
//!
//! Behaviour follows KVM's emulation (register masks, reset values, the
//! version register, x2APIC rules), so that a guest and a VMM see the same
//! APIC on rkvm as on KVM without APIC virtualization.
//!
//! Pure logic (only `core`), tested on the host; the kernel side is
//! `lapic/apic.rs`.

use super::{
    mailbox::Mailbox,
    route::{self, ApicIdentity, Irq},
    timer::{self, Countdown, TimerMode},
};

/// Register offsets in the APIC page (and `KVM_GET_LAPIC`'s image).
pub(crate) mod reg {
    pub(crate) const ID: u32 = 0x20;
    pub(crate) const VERSION: u32 = 0x30;
    pub(crate) const TPR: u32 = 0x80;
    pub(crate) const APR: u32 = 0x90;
    pub(crate) const PPR: u32 = 0xa0;
    pub(crate) const EOI: u32 = 0xb0;
    pub(crate) const LDR: u32 = 0xd0;
    pub(crate) const DFR: u32 = 0xe0;
    pub(crate) const SVR: u32 = 0xf0;
    pub(crate) const ISR: u32 = 0x100;
    pub(crate) const TMR: u32 = 0x180;
    pub(crate) const IRR: u32 = 0x200;
    pub(crate) const ESR: u32 = 0x280;
    pub(crate) const ICR: u32 = 0x300;
    pub(crate) const ICR2: u32 = 0x310;
    pub(crate) const LVT_TIMER: u32 = 0x320;
    pub(crate) const LVT_THERMAL: u32 = 0x330;
    pub(crate) const LVT_PMC: u32 = 0x340;
    pub(crate) const LVT_LINT0: u32 = 0x350;
    pub(crate) const LVT_LINT1: u32 = 0x360;
    pub(crate) const LVT_ERROR: u32 = 0x370;
    pub(crate) const TIMER_INITIAL: u32 = 0x380;
    pub(crate) const TIMER_CURRENT: u32 = 0x390;
    pub(crate) const TIMER_DIVIDE: u32 = 0x3e0;
    pub(crate) const SELF_IPI: u32 = 0x3f0;
}

/// The APIC base MSR (`IA32_APIC_BASE`, 0x1b).
pub(crate) mod base {
    pub(crate) const MSR: u32 = 0x1b;
    pub(crate) const BSP: u64 = 1 << 8;
    pub(crate) const EXTD: u64 = 1 << 10;
    pub(crate) const ENABLE: u64 = 1 << 11;
    pub(crate) const DEFAULT_ADDRESS: u64 = 0xfee0_0000;
    pub(crate) const ADDRESS_MASK: u64 = !0xfff;
}

/// The x2APIC MSRs: 0x800 + register offset / 16.
pub(crate) const X2APIC_MSR_FIRST: u32 = 0x800;
pub(crate) const X2APIC_MSR_LAST: u32 = 0x8ff;

/// `MSR_IA32_TSC_DEADLINE`.
pub(crate) const TSC_DEADLINE_MSR: u32 = 0x6e0;

/// Size of `struct kvm_lapic_state`.
pub(crate) const STATE_SIZE: usize = 1024;

/// An LVT entry's mask bit.
const LVT_MASKED: u32 = 1 << 16;
/// What every LVT keeps of a write: vector, delivery status, mask.
const LVT_BASIC: u32 = LVT_MASKED | (1 << 12) | 0xff;
/// LINT0/1 also keep delivery mode, polarity, remote IRR, trigger mode.
const LVT_LINT: u32 = LVT_BASIC | 0x700 | (1 << 13) | (1 << 14) | (1 << 15);
/// Thermal and performance-counter entries keep the delivery mode.
const LVT_WITH_MODE: u32 = LVT_BASIC | 0x700;
/// The six LVT entries KVM emulates without CMCI.
const LVTS: [u32; 6] = [
    reg::LVT_TIMER,
    reg::LVT_THERMAL,
    reg::LVT_PMC,
    reg::LVT_LINT0,
    reg::LVT_LINT1,
    reg::LVT_ERROR,
];

/// SVR: APIC software enable, and the EOI-broadcast suppression bit
/// (kept only when the version register offers directed EOI).
const SVR_ENABLE: u32 = 1 << 8;
const SVR_DIRECTED_EOI: u32 = 1 << 12;
/// The version register: version 0x14, LVT count - 1 in bits 23:16, and
/// directed EOI in bit 24 (with x2APIC and a userspace IOAPIC, as KVM).
const VERSION: u32 = 0x14 | ((LVTS.len() as u32 - 1) << 16);
const VERSION_DIRECTED_EOI: u32 = 1 << 24;
/// The ICR's delivery-status bit (always reads idle).
const ICR_BUSY: u32 = 1 << 12;
/// Bits of an x2APIC ICR write that must be 0 (KVM's reserved-bit check).
const X2APIC_ICR_RESERVED: u64 = 0xfff0_0000 | (3 << 16) | (1 << 13);

/// What a register write asks of the caller, besides the register itself.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Action {
    None,
    /// An EOI ended the service of this vector (`None`: nothing was in
    /// service).
    Eoi(Option<u8>),
    /// Deliver this interrupt (an ICR or self-IPI write).
    Send(Irq),
    /// Reprogram the host timer.
    Timer(TimerCmd),
    /// The ID, logical destination, destination format, software or
    /// hardware enable changed: republish the identity.
    Identity,
}

/// What the host timer is to do.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum TimerCmd {
    Stop,
    /// Fire in `delay_ns`, then every `period_ns` if that is not 0.
    Arm { delay_ns: u64, period_ns: u64 },
}

/// The APIC's mode, from the base MSR.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ApicMode {
    Disabled,
    XApic,
    X2Apic,
}

impl ApicMode {
    fn of(base: u64) -> Option<Self> {
        match (base & base::ENABLE != 0, base & base::EXTD != 0) {
            (false, false) => Some(Self::Disabled),
            (true, false) => Some(Self::XApic),
            (true, true) => Some(Self::X2Apic),
            (false, true) => None,
        }
    }
}

/// What of the guest's CPUID the APIC depends on.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) struct ApicFeatures {
    pub(crate) x2apic: bool,
    pub(crate) tsc_deadline: bool,
    /// Guest physical address bits: the base MSR's address must fit.
    pub(crate) maxphyaddr: u8,
}

/// One local APIC's registers and timer configuration.
///
/// # Invariants
///
/// `regs` is the whole 1 KiB image, `regs[off >> 2]` register `off` (the
/// bytes between registers are kept too, as KVM keeps what
/// `KVM_SET_LAPIC` gave); the IRR and TMR words are unused (the
/// [`Mailbox`] holds them). In x2APIC mode the ID is the vCPU's and the
/// LDR derives from it.
pub(crate) struct Lapic {
    regs: [u32; STATE_SIZE / 4],
    base: u64,
    vcpu_id: u32,
    features: ApicFeatures,
    /// The running one-shot or periodic countdown, if any.
    countdown: Option<Countdown>,
    /// The armed TSC deadline (guest TSC), 0 if none.
    tsc_deadline: u64,
}

fn idx(off: u32) -> usize {
    (off >> 2) as usize & (STATE_SIZE / 4 - 1)
}

/// Whether the base MSR may go from `old` to `value` (see
/// [`Lapic::set_base`]); also for a vCPU without an in-kernel APIC.
pub(crate) fn check_base(features: &ApicFeatures, old: u64, value: u64, host: bool) -> Result<(), ()> {
    let maxphyaddr = features.maxphyaddr.clamp(36, 52);
    let mut reserved = !((1u64 << maxphyaddr) - 1) | 0x2ff;
    if !features.x2apic {
        reserved |= base::EXTD;
    }
    if value & reserved != 0 {
        return Err(());
    }
    let old = ApicMode::of(old).unwrap_or(ApicMode::Disabled);
    let new = ApicMode::of(value).ok_or(())?;
    if !host
        && matches!(
            (old, new),
            (ApicMode::X2Apic, ApicMode::XApic) | (ApicMode::Disabled, ApicMode::X2Apic)
        )
    {
        return Err(());
    }
    Ok(())
}

impl Lapic {
    /// The APIC of vCPU `vcpu_id` after RESET.
    pub(crate) fn new(vcpu_id: u32, is_bsp: bool) -> Self {
        let mut a = Self {
            regs: [0; STATE_SIZE / 4],
            base: 0,
            vcpu_id,
            features: ApicFeatures::default(),
            countdown: None,
            tsc_deadline: 0,
        };
        a.reset(false, is_bsp);
        a
    }

    fn get(&self, off: u32) -> u32 {
        self.regs[idx(off)]
    }

    fn set(&mut self, off: u32, v: u32) {
        self.regs[idx(off)] = v;
    }

    /// RESET (`init == false`) or INIT: as KVM's `kvm_lapic_reset`. INIT
    /// keeps the base MSR and the ID. The caller stops the host timer and
    /// clears the mailbox.
    pub(crate) fn reset(&mut self, init: bool, is_bsp: bool) {
        if !init {
            self.base = base::DEFAULT_ADDRESS | base::ENABLE | if is_bsp { base::BSP } else { 0 };
            self.set(reg::ID, self.vcpu_id << 24);
        }
        self.update_version();
        for lvt in LVTS {
            self.set(lvt, LVT_MASKED);
        }
        // KVM's LINT0_REENABLED quirk: the BSP's LINT0 takes the PIC's
        // ExtINT from RESET on.
        if is_bsp && !init {
            self.set(reg::LVT_LINT0, (route::mode::EXTINT as u32) << 8);
        }
        self.set(reg::DFR, 0xffff_ffff);
        self.set(reg::SVR, 0xff);
        self.set(reg::TPR, 0);
        if self.mode() == ApicMode::X2Apic {
            self.set_x2apic_identity();
        } else {
            self.set(reg::LDR, 0);
        }
        for r in [reg::ESR, reg::ICR, reg::ICR2, reg::TIMER_DIVIDE, reg::TIMER_INITIAL] {
            self.set(r, 0);
        }
        for i in 0..8 {
            self.set(reg::ISR + 16 * i, 0);
        }
        self.countdown = None;
        self.tsc_deadline = 0;
    }

    /// The guest's CPUID changed (`KVM_SET_CPUID2`).
    pub(crate) fn set_features(&mut self, features: ApicFeatures) {
        self.features = features;
        self.update_version();
    }

    fn update_version(&mut self) {
        let directed = if self.features.x2apic { VERSION_DIRECTED_EOI } else { 0 };
        self.set(reg::VERSION, VERSION | directed);
    }

    pub(crate) fn mode(&self) -> ApicMode {
        ApicMode::of(self.base).unwrap_or(ApicMode::Disabled)
    }

    pub(crate) fn hw_enabled(&self) -> bool {
        self.base & base::ENABLE != 0
    }

    pub(crate) fn sw_enabled(&self) -> bool {
        self.get(reg::SVR) & SVR_ENABLE != 0
    }

    /// Where the xAPIC MMIO page is, if the APIC answers MMIO (enabled,
    /// xAPIC or x2APIC mode; in x2APIC mode it reads all-ones, as KVM).
    pub(crate) fn mmio_base(&self) -> Option<u64> {
        self.hw_enabled().then_some(self.base & base::ADDRESS_MASK & ((1 << 52) - 1))
    }

    pub(crate) fn base_msr(&self) -> u64 {
        self.base
    }

    /// The identity senders match destinations against.
    pub(crate) fn identity(&self) -> ApicIdentity {
        let x2apic = self.mode() == ApicMode::X2Apic;
        ApicIdentity {
            id: if x2apic { self.get(reg::ID) } else { self.get(reg::ID) >> 24 },
            ldr: self.get(reg::LDR),
            dfr: self.get(reg::DFR),
            x2apic,
            enabled: self.hw_enabled(),
            sw_enabled: self.sw_enabled(),
        }
    }

    fn set_x2apic_identity(&mut self) {
        self.set(reg::ID, self.vcpu_id);
        self.set(reg::LDR, route::x2apic_ldr(self.vcpu_id));
    }

    /// A write of the base MSR, with KVM's checks: reserved bits (the
    /// address past MAXPHYADDR, EXTD without x2APIC in CPUID), EXTD
    /// without ENABLE, and for the guest (`!host`) x2APIC to xAPIC or
    /// disabled to x2APIC directly, are refused.
    pub(crate) fn set_base(&mut self, value: u64, host: bool) -> Result<Action, ()> {
        check_base(&self.features, self.base, value, host)?;
        let old = self.mode();
        let new = ApicMode::of(value).ok_or(())?;
        self.base = value;
        if old != new {
            match new {
                ApicMode::X2Apic => self.set_x2apic_identity(),
                // Enabled again: the xAPIC ID is the vCPU's, as KVM.
                ApicMode::XApic if old == ApicMode::Disabled => {
                    self.set(reg::ID, self.vcpu_id << 24)
                }
                _ => {}
            }
        }
        Ok(Action::Identity)
    }

    /// The highest vector in service.
    fn highest_isr(&self) -> Option<u8> {
        (0..8u32).rev().find_map(|w| {
            let v = self.get(reg::ISR + 16 * w);
            (v != 0).then(|| (w * 32 + 31 - v.leading_zeros()) as u8)
        })
    }

    pub(crate) fn tpr(&self) -> u8 {
        self.get(reg::TPR) as u8
    }

    /// Sets the TPR (the guest's CR8 << 4, or a register write).
    pub(crate) fn set_tpr(&mut self, tpr: u8) {
        self.set(reg::TPR, tpr as u32);
    }

    /// The processor priority: the TPR, or the class of the vector in
    /// service if that is higher.
    pub(crate) fn ppr(&self) -> u8 {
        let tpr = self.tpr();
        let isrv = self.highest_isr().unwrap_or(0);
        if tpr & 0xf0 >= isrv & 0xf0 {
            tpr
        } else {
            isrv & 0xf0
        }
    }

    /// The vector the APIC would present to the CPU now: the highest in
    /// the IRR whose class is above the PPR's.
    pub(crate) fn deliverable(&self, mb: &Mailbox) -> Option<u8> {
        if !self.hw_enabled() {
            return None;
        }
        let v = mb.highest_irr()?;
        (v & 0xf0 > self.ppr() & 0xf0).then_some(v)
    }

    /// When the TPR holds back the highest IRR vector (its class is at or
    /// below the TPR's), that class: the guest must exit once it lowers
    /// its TPR under it. (Held back by the ISR instead, the EOI exits.)
    pub(crate) fn tpr_threshold(&self, mb: &Mailbox) -> Option<u8> {
        let class = mb.highest_irr()? >> 4;
        (self.hw_enabled() && class <= self.tpr() >> 4).then_some(class)
    }

    /// The word of the VMM's TPR-patching page (`KVM_SET_VAPIC_ADDR`,
    /// QEMU's kvmvapic): the TPR, the class of the highest vector in
    /// service, and the highest vector requested, bytes 0, 1 and 3.
    pub(crate) fn vapic_word(&self, mb: &Mailbox) -> u32 {
        let isr = self.highest_isr().unwrap_or(0) & 0xf0;
        let irr = mb.highest_irr().unwrap_or(0);
        self.tpr() as u32 | (isr as u32) << 8 | (irr as u32) << 24
    }

    /// The CPU acknowledges `vector` (it is being delivered): from the IRR
    /// into the ISR.
    pub(crate) fn acknowledge(&mut self, vector: u8, mb: &Mailbox) {
        mb.clear_irr(vector);
        let off = reg::ISR + 16 * (vector as u32 >> 5);
        self.set(off, self.get(off) | 1 << (vector & 31));
    }

    fn eoi(&mut self) -> Action {
        let Some(v) = self.highest_isr() else {
            return Action::Eoi(None);
        };
        let off = reg::ISR + 16 * (v as u32 >> 5);
        self.set(off, self.get(off) & !(1 << (v & 31)));
        Action::Eoi(Some(v))
    }

    /// Whether the PIC's interrupts (ExtINT, `KVM_INTERRUPT` with a split
    /// irqchip) get in: LINT0 unmasked in ExtINT mode, or the APIC
    /// hardware-disabled.
    pub(crate) fn accepts_pic_interrupt(&self) -> bool {
        let lint0 = self.get(reg::LVT_LINT0);
        !self.hw_enabled()
            || (lint0 & LVT_MASKED == 0 && (lint0 >> 8) & 7 == route::mode::EXTINT as u32)
    }

    /// The registers a read may see, as KVM's readable mask: `false` for
    /// write-only, reserved and absent ones, and in x2APIC mode for those
    /// it has not (DFR, ICR2, APR).
    fn readable(&self, off: u32) -> bool {
        let x2 = self.mode() == ApicMode::X2Apic;
        match off {
            reg::ID | reg::VERSION | reg::TPR | reg::PPR | reg::LDR | reg::SVR | reg::ESR
            | reg::ICR | reg::TIMER_INITIAL | reg::TIMER_CURRENT | reg::TIMER_DIVIDE => true,
            0x100..=0x270 => off & 0xf == 0,
            reg::LVT_TIMER..=reg::LVT_ERROR => off & 0xf == 0,
            reg::DFR | reg::ICR2 | reg::APR => !x2,
            _ => false,
        }
    }

    /// Reads register `off` (16-byte aligned); `None` if not readable.
    pub(crate) fn read(&self, off: u32, mb: &Mailbox, now_ns: u64) -> Option<u32> {
        if !self.readable(off) {
            return None;
        }
        Some(match off {
            reg::PPR => self.ppr() as u32,
            reg::TIMER_CURRENT => self.current_count(now_ns),
            0x180..=0x1f0 => mb.tmr()[((off - reg::TMR) >> 4) as usize],
            0x200..=0x270 => mb.irr()[((off - reg::IRR) >> 4) as usize],
            _ => self.get(off),
        })
    }

    fn current_count(&self, now_ns: u64) -> u32 {
        if self.timer_mode() == TimerMode::TscDeadline {
            return 0;
        }
        self.countdown
            .map_or(0, |c| c.current_count(now_ns, self.get(reg::TIMER_DIVIDE)))
    }

    pub(crate) fn timer_mode(&self) -> TimerMode {
        TimerMode::from_lvt(self.get(reg::LVT_TIMER) & self.timer_mode_mask())
    }

    fn timer_mode_mask(&self) -> u32 {
        if self.features.tsc_deadline {
            3 << 17
        } else {
            1 << 17
        }
    }

    /// Writes register `off` (16-byte aligned, 32 bits) at host time
    /// `now_ns`. `Err` for a register that cannot be written in this mode
    /// (x2APIC: the guest gets `#GP`; xAPIC MMIO: the write is dropped).
    pub(crate) fn write(&mut self, off: u32, val: u32, now_ns: u64) -> Result<Action, ()> {
        let x2 = self.mode() == ApicMode::X2Apic;
        Ok(match off {
            reg::ID if !x2 => {
                self.set(reg::ID, val & 0xff00_0000);
                Action::Identity
            }
            reg::TPR => {
                self.set_tpr(val as u8);
                Action::None
            }
            reg::EOI => self.eoi(),
            reg::LDR if !x2 => {
                self.set(reg::LDR, val & 0xff00_0000);
                Action::Identity
            }
            reg::DFR if !x2 => {
                self.set(reg::DFR, val | 0x0fff_ffff);
                Action::Identity
            }
            reg::SVR => {
                let mut mask = 0x3ff;
                if self.get(reg::VERSION) & VERSION_DIRECTED_EOI != 0 {
                    mask |= SVR_DIRECTED_EOI;
                }
                self.set(reg::SVR, val & mask);
                if val & SVR_ENABLE == 0 {
                    for lvt in LVTS {
                        self.set(lvt, self.get(lvt) | LVT_MASKED);
                    }
                }
                Action::Identity
            }
            reg::ICR if !x2 => {
                let low = val & !ICR_BUSY;
                self.set(reg::ICR, low);
                Action::Send(Irq::from_icr(low, self.get(reg::ICR2), false))
            }
            reg::ICR2 if !x2 => {
                self.set(reg::ICR2, val & 0xff00_0000);
                Action::None
            }
            reg::LVT_TIMER => {
                let mut v = val & (LVT_BASIC | self.timer_mode_mask());
                if !self.sw_enabled() {
                    v |= LVT_MASKED;
                }
                let old_mode = self.timer_mode();
                self.set(reg::LVT_TIMER, v);
                self.timer_mode_changed(old_mode, now_ns)
            }
            reg::LVT_THERMAL | reg::LVT_PMC | reg::LVT_LINT0 | reg::LVT_LINT1 | reg::LVT_ERROR => {
                let mask = match off {
                    reg::LVT_LINT0 | reg::LVT_LINT1 => LVT_LINT,
                    reg::LVT_ERROR => LVT_BASIC,
                    _ => LVT_WITH_MODE,
                };
                let mut v = val & mask;
                if !self.sw_enabled() {
                    v |= LVT_MASKED;
                }
                self.set(off, v);
                Action::None
            }
            reg::TIMER_INITIAL => {
                if self.timer_mode() == TimerMode::TscDeadline {
                    return Ok(Action::None);
                }
                self.set(reg::TIMER_INITIAL, val);
                self.start_countdown(now_ns)
            }
            reg::TIMER_DIVIDE => {
                let old = self.get(reg::TIMER_DIVIDE);
                let new = val & 0xb;
                self.set(reg::TIMER_DIVIDE, new);
                match self.countdown {
                    Some(c) if timer::divisor(old) != timer::divisor(new) => {
                        let r = c.rescaled(now_ns, old, new);
                        self.countdown = Some(r);
                        Action::Timer(TimerCmd::Arm { delay_ns: r.period_ns, period_ns: r.reload_ns })
                    }
                    _ => Action::None,
                }
            }
            reg::ESR if x2 && val != 0 => return Err(()),
            reg::ESR => Action::None,
            reg::SELF_IPI if x2 => Action::Send(Irq::from_icr(
                val & 0xff | (1 << 18), // shorthand: self
                0,
                true,
            )),
            _ => return Err(()),
        })
    }

    /// The timer mode changed: to or from TSC-deadline mode the timer
    /// stops and its counts clear; between one-shot and periodic it runs
    /// on, ending or repeating at its next expiry.
    fn timer_mode_changed(&mut self, old: TimerMode, now_ns: u64) -> Action {
        let new = self.timer_mode();
        if old == new {
            return Action::None;
        }
        if old == TimerMode::TscDeadline || new == TimerMode::TscDeadline {
            self.set(reg::TIMER_INITIAL, 0);
            self.countdown = None;
            self.tsc_deadline = 0;
            return Action::Timer(TimerCmd::Stop);
        }
        let Some(c) = self.countdown else {
            return Action::None;
        };
        let dcr = self.get(reg::TIMER_DIVIDE);
        let left = c.current_count(now_ns, dcr);
        if left == 0 {
            return Action::None;
        }
        let reload_ns = if new == TimerMode::Periodic {
            timer::periodic_ns(timer::count_to_ns(self.get(reg::TIMER_INITIAL), dcr))
        } else {
            0
        };
        let delay_ns = timer::count_to_ns(left, dcr);
        self.countdown = Some(Countdown { start_ns: now_ns, period_ns: delay_ns, reload_ns });
        Action::Timer(TimerCmd::Arm { delay_ns, period_ns: reload_ns })
    }

    /// Starts (or with a 0 count, stops) the countdown from the initial
    /// count.
    fn start_countdown(&mut self, now_ns: u64) -> Action {
        let count = self.get(reg::TIMER_INITIAL);
        if count == 0 {
            self.countdown = None;
            return Action::Timer(TimerCmd::Stop);
        }
        let mut period_ns = timer::count_to_ns(count, self.get(reg::TIMER_DIVIDE));
        let reload_ns = if self.timer_mode() == TimerMode::Periodic {
            period_ns = timer::periodic_ns(period_ns);
            period_ns
        } else {
            0
        };
        self.countdown = Some(Countdown { start_ns: now_ns, period_ns, reload_ns });
        Action::Timer(TimerCmd::Arm { delay_ns: period_ns, period_ns: reload_ns })
    }

    /// `MSR_IA32_TSC_DEADLINE` as the guest reads it: 0 outside TSC
    /// deadline mode or once expired.
    pub(crate) fn tsc_deadline(&self) -> u64 {
        if self.timer_mode() == TimerMode::TscDeadline {
            self.tsc_deadline
        } else {
            0
        }
    }

    /// A write of `MSR_IA32_TSC_DEADLINE` at guest TSC `now_tsc`: ignored
    /// outside TSC-deadline mode (as KVM); 0 disarms.
    pub(crate) fn set_tsc_deadline(&mut self, deadline: u64, now_tsc: u64, tsc_khz: u32) -> Action {
        if self.timer_mode() != TimerMode::TscDeadline {
            return Action::None;
        }
        self.tsc_deadline = deadline;
        if deadline == 0 {
            return Action::Timer(TimerCmd::Stop);
        }
        let delay_ns = timer::tsc_delta_ns(deadline, now_tsc, tsc_khz);
        Action::Timer(TimerCmd::Arm { delay_ns, period_ns: 0 })
    }

    /// The host timer fired: the interrupt the timer LVT entry asks for
    /// (none if masked). A one-shot countdown or a TSC deadline is over.
    pub(crate) fn timer_expired(&mut self) -> Option<u8> {
        if self.timer_mode() == TimerMode::TscDeadline {
            self.tsc_deadline = 0;
        }
        let lvt = self.get(reg::LVT_TIMER);
        (lvt & LVT_MASKED == 0).then_some(lvt as u8)
    }

    /// An x2APIC MSR read (`msr` in 0x800..=0x8ff); `Err` gives `#GP`.
    pub(crate) fn read_x2apic_msr(&self, msr: u32, mb: &Mailbox, now_ns: u64) -> Result<u64, ()> {
        if self.mode() != ApicMode::X2Apic {
            return Err(());
        }
        let off = (msr - X2APIC_MSR_FIRST) << 4;
        if off == reg::ICR {
            return Ok(self.get(reg::ICR) as u64 | (self.get(reg::ICR2) as u64) << 32);
        }
        self.read(off, mb, now_ns).map(u64::from).ok_or(())
    }

    /// An x2APIC MSR write; `Err` gives `#GP`. The ICR takes all 64 bits
    /// at once; the other registers have 32.
    pub(crate) fn write_x2apic_msr(&mut self, msr: u32, value: u64, now_ns: u64) -> Result<Action, ()> {
        if self.mode() != ApicMode::X2Apic {
            return Err(());
        }
        let off = (msr - X2APIC_MSR_FIRST) << 4;
        if off == reg::ICR {
            if value & X2APIC_ICR_RESERVED != 0 {
                return Err(());
            }
            let low = value as u32 & !ICR_BUSY;
            let high = (value >> 32) as u32;
            self.set(reg::ICR, low);
            self.set(reg::ICR2, high);
            return Ok(Action::Send(Irq::from_icr(low, high, true)));
        }
        if value >> 32 != 0 {
            return Err(());
        }
        self.write(off, value as u32, now_ns)
    }

    /// An xAPIC MMIO read of `len` bytes at page offset `off`: as KVM,
    /// all-ones in x2APIC mode, 0 for what is not readable, and only
    /// within one register's first four bytes.
    pub(crate) fn mmio_read(&self, off: u32, len: u32, mb: &Mailbox, now_ns: u64) -> u64 {
        if self.mode() == ApicMode::X2Apic {
            return u64::MAX >> (64 - 8 * len.clamp(1, 8));
        }
        let align = off & 0xf;
        if align + len > 4 {
            return 0;
        }
        let Some(v) = self.read(off & !0xf, mb, now_ns) else {
            return 0;
        };
        let v = (v >> (8 * align)) as u64;
        if len >= 4 {
            v
        } else {
            v & ((1 << (8 * len)) - 1)
        }
    }

    /// An xAPIC MMIO write: only aligned 32-bit writes count, and none in
    /// x2APIC mode (as KVM).
    pub(crate) fn mmio_write(&mut self, off: u32, len: u32, val: u32, now_ns: u64) -> Action {
        if self.mode() == ApicMode::X2Apic || len != 4 || off & 0xf != 0 {
            return Action::None;
        }
        self.write(off, val, now_ns).unwrap_or(Action::None)
    }

    /// `KVM_GET_LAPIC`'s image: the register page with the IRR and TMR,
    /// the current count, and in x2APIC mode the ID in the xAPIC position
    /// (KVM's format without `KVM_CAP_X2APIC_API`), or with
    /// `x2apic_format` (its `USE_32BIT_IDS`) in full.
    pub(crate) fn state(&self, mb: &Mailbox, now_ns: u64, x2apic_format: bool, out: &mut [u8; STATE_SIZE]) {
        let irr = mb.irr();
        let tmr = mb.tmr();
        for (i, r) in self.regs.iter().enumerate() {
            let off = (i as u32) << 2;
            let v = match off {
                0x180..=0x1f0 if off & 0xf == 0 => tmr[((off - reg::TMR) >> 4) as usize],
                0x200..=0x270 if off & 0xf == 0 => irr[((off - reg::IRR) >> 4) as usize],
                reg::TIMER_CURRENT => self.current_count(now_ns),
                reg::PPR => self.ppr() as u32,
                reg::ID if self.mode() == ApicMode::X2Apic && !x2apic_format => self.get(reg::ID) << 24,
                _ => *r,
            };
            out[off as usize..off as usize + 4].copy_from_slice(&v.to_le_bytes());
        }
    }

    /// Whether `KVM_SET_LAPIC` takes `image`: with `x2apic_format`, an
    /// APIC in x2APIC mode only with its own (read-only) ID, as KVM.
    pub(crate) fn accepts_state(&self, image: &[u8; STATE_SIZE], x2apic_format: bool) -> bool {
        let id = u32::from_le_bytes(crate::abi::field(image, reg::ID as usize));
        !(x2apic_format && self.mode() == ApicMode::X2Apic && id != self.vcpu_id)
    }

    /// `KVM_SET_LAPIC`: takes the image as it is, as KVM, then derives
    /// what follows from it: in x2APIC mode the ID and LDR (the image's
    /// are ignored, KVM's legacy format), the version, and the timer,
    /// restarted from the image's current count. Returns the IRR and TMR
    /// for the mailbox and what the host timer is to do. The base MSR is
    /// not part of the image.
    pub(crate) fn set_state(&mut self, image: &[u8; STATE_SIZE], now_ns: u64) -> ([u32; 8], [u32; 8], TimerCmd) {
        let word = |off: u32| u32::from_le_bytes(crate::abi::field(image, off as usize));
        let irr = core::array::from_fn(|i| word(reg::IRR + 16 * i as u32));
        let tmr = core::array::from_fn(|i| word(reg::TMR + 16 * i as u32));
        for i in 0..STATE_SIZE as u32 / 4 {
            self.regs[i as usize] = word(i << 2);
        }
        if self.mode() == ApicMode::X2Apic {
            self.set_x2apic_identity();
        }
        self.update_version();
        let current = word(reg::TIMER_CURRENT);
        self.set(reg::TIMER_CURRENT, 0);
        self.set(reg::PPR, 0);
        self.tsc_deadline = 0;
        self.countdown = None;
        let initial = self.get(reg::TIMER_INITIAL);
        let cmd = if self.timer_mode() == TimerMode::TscDeadline || initial == 0 {
            TimerCmd::Stop
        } else {
            let dcr = self.get(reg::TIMER_DIVIDE);
            let first = if current != 0 { current } else { initial };
            let delay_ns = timer::count_to_ns(first, dcr);
            let reload_ns = if self.timer_mode() == TimerMode::Periodic {
                timer::periodic_ns(timer::count_to_ns(initial, dcr))
            } else {
                0
            };
            self.countdown = Some(Countdown { start_ns: now_ns, period_ns: delay_ns, reload_ns });
            TimerCmd::Arm { delay_ns, period_ns: reload_ns }
        };
        (irr, tmr, cmd)
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
