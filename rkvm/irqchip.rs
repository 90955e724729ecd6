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

use core::sync::atomic::{AtomicUsize, Ordering};

use kernel::{
    new_srcu,
    prelude::*,
    sync::{Arc, SetOnce},
};

use crate::{
    abi::MAX_VCPUS,
    lapic::{
        apic::ApicShared,
        route::{self, mode, routing, ApicIdentity, Irq, MsiRoute},
    },
    shim::{srcu_box::SrcuBox, uarg},
};

/// The GSI routing table.
struct Routes(KVec<MsiRoute>);

/// A VM's split irqchip.
#[pin_data]
pub(crate) struct Irqchip {
    /// Set once by `KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)`: the number of
    /// GSIs reserved for the VMM's IOAPIC pins.
    ioapic_pins: SetOnce<u32>,
    /// Every vCPU's APIC by creation index; the first `count` are set.
    apics: [SetOnce<Arc<ApicShared>>; MAX_VCPUS],
    count: AtomicUsize,
    #[pin]
    routes: SrcuBox<Routes>,
}

impl Irqchip {
    pub(crate) fn new() -> Result<impl PinInit<Self, Error>> {
        let empty = KBox::new(Routes(KVec::new()), GFP_KERNEL)?;
        Ok(try_pin_init!(Self {
            ioapic_pins: SetOnce::new(),
            apics: core::array::from_fn(|_| SetOnce::new()),
            count: AtomicUsize::new(0),
            routes <- SrcuBox::new(empty, new_srcu!("Irqchip::routes")),
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

    /// `KVM_SIGNAL_MSI` (`struct kvm_msi`): `EINVAL` for flags (device IDs
    /// are not used on x86), else the delivery's result.
    pub(crate) fn signal_msi(&self, b: &[u8; 32]) -> Result<isize> {
        let word = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        if !self.enabled() || word(12) != 0 {
            return Err(EINVAL);
        }
        let irq = Irq::from_msi(word(0) as u64 | (word(4) as u64) << 32, word(8));
        Ok(self.deliver(&irq, None, false) as isize)
    }

    /// `KVM_IRQ_LINE` on GSI `gsi`: raising it delivers every MSI routed
    /// there; lowering an edge MSI does nothing. Returns KVM's status (the
    /// APICs reached, or -1).
    pub(crate) fn set_irq_line(&self, gsi: u32, level: bool) -> Result<i32> {
        if !self.enabled() {
            return Err(ENXIO);
        }
        let routes = self.routes.read();
        let mut status = -1;
        for r in routes.0.iter().filter(|r| r.gsi == gsi) {
            // KVM's MSI route: a lowered line is -1, a raised one counts.
            if level {
                status = status.max(0) + self.deliver(&r.irq(), None, false);
            }
        }
        Ok(status)
    }

    /// `KVM_SET_GSI_ROUTING` from the user's `struct kvm_irq_routing` at
    /// `arg`: the whole table is checked before it replaces the old one.
    pub(crate) fn set_routing(&self, arg: usize) -> Result {
        if !self.enabled() {
            return Err(EINVAL);
        }
        let head: [u8; routing::HEADER_SIZE] = uarg::read(arg)?;
        let nr = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let flags = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
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
            let irq = r.irq();
            r.gsi < pins && irq.level_triggered && irq.vector == vector && who.matches(irq.dest, irq.logical, false)
        })
    }
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
