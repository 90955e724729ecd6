// SPDX-License-Identifier: GPL-2.0

//! A VM's in-kernel interrupt controller: KVM's split irqchip, where the
//! local APICs are in the kernel and the PIC and IOAPIC in the VMM.
//!
//! It holds every vCPU's [`ApicShared`] (what a sender posts to), the GSI
//! routing table (`KVM_SET_GSI_ROUTING`), and delivers interrupts to local
//! APICs: IPIs from a vCPU's ICR, `KVM_SIGNAL_MSI`, `KVM_IRQ_LINE` on a
//! routed GSI. Delivery takes no lock: the APICs are found in an
//! append-only table, destinations are matched against each APIC's
//! published identity, and the interrupt is posted to its mailbox.
//!
//! # Locking
//!
//! The routing table is read under its SRCU (`routes.read()`), replaced by
//! `KVM_SET_GSI_ROUTING` (which waits for readers before freeing the old
//! one). Enabling the irqchip happens under `Vm::vcpus`, so it is decided
//! before the first vCPU and never changes after.

use core::{
    ffi::c_void,
    sync::atomic::{AtomicU32, AtomicUsize, Ordering},
};

use kernel::{
    new_mutex, new_srcu,
    prelude::*,
    sync::{Arc, Mutex, SetOnce},
};

use crate::{
    abi::{self, x2apic_api, MAX_VCPUS},
    lapic::{
        apic::ApicShared,
        route::{self, mode, routing, ApicIdentity, Irq, MsiFormat, MsiRoute},
    },
    shim::{
        eventfd::{EventFd, IrqFdHook},
        srcu_box::SrcuBox,
        uarg,
    },
};

/// `struct kvm_irqfd`'s size and flags.
pub(crate) const IRQFD_SIZE: usize = 32;
const IRQFD_DEASSIGN: u32 = 1 << 0;
/// Level-triggered irqfds with a resample eventfd: they need an in-kernel
/// IOAPIC, which the split irqchip has not (`EINVAL`, as KVM).
const IRQFD_RESAMPLE: u32 = 1 << 1;

/// The GSI routing table.
struct Routes(KVec<MsiRoute>);

/// A VM's split irqchip.
#[pin_data]
pub(crate) struct Irqchip {
    /// `KVM_IRQFD` assignments. First: they go first when the irqchip
    /// does, and their calls into the rest stop with them.
    #[pin]
    irqfds: Mutex<KVec<IrqFdHook>>,
    /// Set once by `KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)`: the number of
    /// GSIs reserved for the VMM's IOAPIC pins.
    ioapic_pins: SetOnce<u32>,
    /// Every vCPU's APIC by creation index; the first `count` are set.
    apics: [SetOnce<Arc<ApicShared>>; MAX_VCPUS],
    count: AtomicUsize,
    #[pin]
    routes: SrcuBox<Routes>,
    /// `KVM_ENABLE_CAP(KVM_CAP_X2APIC_API)`'s flags, accumulated
    /// (`abi::x2apic_api`).
    x2apic_api: AtomicU32,
}

impl Irqchip {
    pub(crate) fn new() -> Result<impl PinInit<Self, Error>> {
        let empty = KBox::new(Routes(KVec::new()), GFP_KERNEL)?;
        Ok(try_pin_init!(Self {
            irqfds <- new_mutex!(KVec::new(), "Irqchip::irqfds"),
            ioapic_pins: SetOnce::new(),
            apics: core::array::from_fn(|_| SetOnce::new()),
            count: AtomicUsize::new(0),
            routes <- SrcuBox::new(empty, new_srcu!("Irqchip::routes")),
            x2apic_api: AtomicU32::new(0),
        }))
    }

    /// Whether the VM has the in-kernel local APICs.
    pub(crate) fn enabled(&self) -> bool {
        self.ioapic_pins.as_ref().is_some()
    }

    /// `KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)`, called under `Vm::vcpus`
    /// with `has_vcpus` from it: as KVM, `EINVAL` for more pins than
    /// there can be routes, `EEXIST` once enabled or once vCPUs exist.
    pub(crate) fn enable_split(&self, pins: u64, has_vcpus: bool) -> Result {
        if pins > routing::MAX_ROUTES as u64 {
            return Err(EINVAL);
        }
        if self.enabled() || has_vcpus {
            return Err(EEXIST);
        }
        self.ioapic_pins.populate(pins as u32);
        Ok(())
    }

    /// Records vCPU `idx`'s APIC (in creation order, under `Vm::vcpus`).
    pub(crate) fn add_apic(&self, idx: usize, apic: Arc<ApicShared>) {
        if let Some(slot) = self.apics.get(idx) {
            if slot.populate(apic) {
                self.count.store(idx + 1, Ordering::Release);
            }
        }
    }

    fn apics(&self) -> impl Iterator<Item = (usize, &ApicShared)> {
        let n = self.count.load(Ordering::Acquire);
        self.apics[..n]
            .iter()
            .enumerate()
            .filter_map(|(i, a)| a.as_ref().map(|a| (i, &**a)))
    }

    /// Delivers `irq` from APIC `source` (`None`: a device or the VMM);
    /// `wide` says its destination is in the x2APIC format. Returns, as
    /// KVM, how many APICs accepted it (0 if it named none).
    pub(crate) fn deliver(&self, irq: &Irq, source: Option<usize>, wide: bool) -> i32 {
        if irq.is_init_deassert() {
            return 0;
        }
        let is_target = |i: usize, a: &ApicShared| route::targets(irq, source, i, &a.mailbox.identity(), wide);
        if irq.mode == mode::LOWEST && irq.shorthand == route::Shorthand::None {
            // One destination: KVM's vector hashing over those named.
            let n = self.apics().filter(|&(i, a)| is_target(i, a)).count();
            let pick = route::lowest_priority_pick(irq.vector, n);
            return self
                .apics()
                .filter(|&(i, a)| is_target(i, a))
                .nth(pick)
                .map_or(0, |(_, a)| accept(a, irq) as i32);
        }
        self.apics()
            .filter(|&(i, a)| is_target(i, a))
            .map(|(_, a)| accept(a, irq) as i32)
            .sum()
    }

    /// `KVM_ENABLE_CAP(KVM_CAP_X2APIC_API)`: `EINVAL` for flags rkvm does
    /// not implement; as KVM, flags once set stay set.
    pub(crate) fn enable_x2apic_api(&self, flags: u64) -> Result {
        if flags & !u64::from(x2apic_api::VALID) != 0 {
            return Err(EINVAL);
        }
        self.x2apic_api.fetch_or(flags as u32, Ordering::Relaxed);
        Ok(())
    }

    /// The `KVM_CAP_X2APIC_API` flags in force.
    pub(crate) fn x2apic_api(&self) -> u32 {
        self.x2apic_api.load(Ordering::Relaxed)
    }

    /// How MSIs are read under those flags.
    fn msi_format(&self) -> MsiFormat {
        let flags = self.x2apic_api();
        MsiFormat {
            ext_dest_id: flags & x2apic_api::USE_32BIT_IDS != 0,
            no_broadcast_quirk: flags & x2apic_api::DISABLE_BROADCAST_QUIRK != 0,
        }
    }

    /// `KVM_SIGNAL_MSI` (`struct kvm_msi`): `EINVAL` for flags (device IDs
    /// are not used on x86), else the delivery's result.
    pub(crate) fn signal_msi(&self, b: &[u8; abi::vm::MSI_SIZE]) -> Result<isize> {
        let word = |o: usize| u32::from_ne_bytes(abi::field(b, o));
        if !self.enabled() || word(12) != 0 {
            return Err(EINVAL);
        }
        let irq = Irq::from_msi(word(0) as u64 | (word(4) as u64) << 32, word(8), self.msi_format());
        Ok(self.deliver(&irq, None, false) as isize)
    }

    /// `KVM_IRQ_LINE` on GSI `gsi`: raising it delivers every MSI routed
    /// there; lowering an edge MSI does nothing. Returns KVM's status (the
    /// APICs reached, or -1).
    pub(crate) fn set_irq_line(&self, gsi: u32, level: bool) -> Result<i32> {
        if !self.enabled() {
            return Err(ENXIO);
        }
        // KVM's MSI route: a lowered line is -1, a raised one counts.
        Ok(if level { self.raise_gsi(gsi) } else { -1 })
    }

    /// Raises GSI `gsi`: every MSI routed there is delivered. Any
    /// context (an irqfd's signal comes with IRQs off).
    fn raise_gsi(&self, gsi: u32) -> i32 {
        let routes = self.routes.read();
        let mut status = -1;
        for r in routes.0.iter().filter(|r| r.gsi == gsi) {
            status = status.max(0) + self.deliver(&r.irq(self.msi_format()), None, false);
        }
        status
    }

    /// `KVM_IRQFD` (`struct kvm_irqfd`): a signal of the eventfd raises the
    /// GSI, without a VMM thread. As KVM: `EINVAL` for unknown flags,
    /// without the irqchip, or for a resample eventfd; `EBADF`/`EINVAL`
    /// for a bad fd; `EBUSY` if another irqfd listens to that eventfd.
    /// Deassigning removes the eventfd's assignments to that GSI (none is
    /// no error).
    pub(crate) fn irqfd(&self, b: &[u8; IRQFD_SIZE]) -> Result {
        let word = |o: usize| u32::from_ne_bytes(abi::field(b, o));
        let (fd, gsi, flags) = (word(0) as i32, word(4), word(8));
        if flags & !(IRQFD_DEASSIGN | IRQFD_RESAMPLE) != 0 {
            return Err(EINVAL);
        }
        if flags & IRQFD_DEASSIGN != 0 {
            let eventfd = EventFd::from_fd(fd)?;
            self.irqfds
                .lock()
                .retain(|h| h.eventfd() != eventfd.id() || h.gsi() != gsi);
            return Ok(());
        }
        if !self.enabled() || flags & IRQFD_RESAMPLE != 0 {
            return Err(EINVAL);
        }
        let owner: *const c_void = (self as *const Self).cast();
        // SAFETY: the hook lives in `self.irqfds`, which goes before the
        // rest of `self` (field order), and `self` is pinned in its VM:
        // `owner` is a valid `Irqchip` for `fire_irqfd` while it lives.
        let mut hook = unsafe { IrqFdHook::new(fd, gsi, fire_irqfd, owner) }?;
        let mut irqfds = self.irqfds.lock();
        irqfds.reserve(1, GFP_KERNEL)?;
        hook.arm()?;
        irqfds.push_within_capacity(hook).map_err(|_| ENOMEM)
    }

    /// `KVM_SET_GSI_ROUTING` from the user's `struct kvm_irq_routing` at
    /// `arg`: the whole table is checked before it replaces the old one.
    pub(crate) fn set_routing(&self, arg: usize) -> Result {
        if !self.enabled() {
            return Err(EINVAL);
        }
        let head: [u8; routing::HEADER_SIZE] = uarg::read(arg)?;
        let nr = u32::from_ne_bytes(abi::field(&head, 0)) as usize;
        let flags = u32::from_ne_bytes(abi::field(&head, 4));
        if nr > routing::MAX_ROUTES || flags != 0 {
            return Err(EINVAL);
        }
        let mut table = KVec::with_capacity(nr, GFP_KERNEL)?;
        for i in 0..nr {
            let e: [u8; routing::ENTRY_SIZE] = uarg::read(arg + routing::HEADER_SIZE + i * routing::ENTRY_SIZE)?;
            let route = MsiRoute::from_entry(&e).ok_or(EINVAL)?;
            table.push(route, GFP_KERNEL)?;
        }
        self.routes.replace(KBox::new(Routes(table), GFP_KERNEL)?);
        Ok(())
    }

    /// Whether the EOI of `vector` by APIC `who` goes to the VMM's IOAPIC
    /// (`KVM_EXIT_IOAPIC_EOI`): a level-triggered MSI route of one of the
    /// IOAPIC's GSIs targets that APIC with that vector (KVM's scan of the
    /// IOAPIC routes).
    pub(crate) fn ioapic_handles_eoi(&self, vector: u8, who: &ApicIdentity) -> bool {
        let Some(&pins) = self.ioapic_pins.as_ref() else {
            return false;
        };
        let routes = self.routes.read();
        routes.0.iter().any(|r| {
            let irq = r.irq(self.msi_format());
            r.gsi < pins
                && irq.level_triggered
                && irq.vector == vector
                && who.matches(irq.dest, irq.logical, false, irq.xapic_broadcast)
        })
    }
}

/// An irqfd's eventfd was signalled (its wait-queue lock held, IRQs off).
///
/// # Safety
///
/// `owner` is the `Irqchip` the hook was made for, still alive.
unsafe extern "C" fn fire_irqfd(owner: *const c_void, gsi: u32) {
    // SAFETY: the caller's promise (`Irqchip::irqfd` made the hook so).
    let chip = unsafe { &*owner.cast::<Irqchip>() };
    chip.raise_gsi(gsi);
}

/// APIC `a` accepts `irq` (one of its destinations) as KVM's
/// `__apic_accept_irq`: fixed and lowest-priority interrupts only while
/// software-enabled, NMI, INIT and SIPI always; SMI and ExtINT are not
/// delivered through APICs here. Returns whether it was accepted.
fn accept(a: &ApicShared, irq: &Irq) -> bool {
    let mb = &a.mailbox;
    match irq.mode {
        mode::FIXED | mode::LOWEST => {
            if !mb.identity().sw_enabled {
                return false;
            }
            mb.post_vector(irq.vector, irq.level_triggered);
        }
        mode::NMI => mb.post_nmi(),
        mode::INIT => mb.post_init(),
        mode::STARTUP => mb.post_sipi(irq.vector),
        _ => return false,
    }
    a.notify();
    true
}
