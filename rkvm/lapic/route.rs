// SPDX-License-Identifier: GPL-2.0

//! Where an interrupt goes: the interrupt command register, MSI messages,
//! and which local APICs a destination names.
//!
//! Pure logic (only `core`), tested on the host.

/// Delivery modes (ICR, LVT and MSI data bits 10:8).
pub(crate) mod mode {
    pub(crate) const FIXED: u8 = 0;
    pub(crate) const LOWEST: u8 = 1;
    pub(crate) const NMI: u8 = 4;
    pub(crate) const INIT: u8 = 5;
    pub(crate) const STARTUP: u8 = 6;
    pub(crate) const EXTINT: u8 = 7;
}

/// The ICR's destination shorthand (bits 19:18).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Shorthand {
    None,
    Myself,
    AllIncludingSelf,
    AllExcludingSelf,
}

/// One interrupt on its way to local APICs: an IPI, an MSI, or a local
/// source.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Irq {
    pub(crate) vector: u8,
    pub(crate) mode: u8,
    pub(crate) logical: bool,
    /// Level-triggered (sets the TMR bit on acceptance).
    pub(crate) level_triggered: bool,
    /// The level of an INIT: a level-triggered de-assert is no INIT.
    pub(crate) assert: bool,
    pub(crate) shorthand: Shorthand,
    pub(crate) dest: u32,
    /// An 8-bit destination of 0xff reaches x2APIC-mode APICs as well
    /// (everyone): for IPIs, and for devices unless the VMM turned KVM's
    /// broadcast quirk off (`KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK`).
    pub(crate) xapic_broadcast: bool,
}

/// How MSIs are read, as the VMM chose with `KVM_CAP_X2APIC_API`.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(crate) struct MsiFormat {
    /// Address bits 63:40 are the destination's bits 31:8
    /// (`KVM_X2APIC_API_USE_32BIT_IDS`).
    pub(crate) ext_dest_id: bool,
    /// A destination of 0xff is no broadcast to x2APIC-mode APICs
    /// (`KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK`).
    pub(crate) no_broadcast_quirk: bool,
}

impl Irq {
    /// Decodes an ICR (low and high halves); `x2apic` says how wide the
    /// destination is (32 bits, or 8 in bits 31:24 of the high half).
    pub(crate) fn from_icr(low: u32, high: u32, x2apic: bool) -> Self {
        Self {
            vector: low as u8,
            mode: ((low >> 8) & 7) as u8,
            logical: low & (1 << 11) != 0,
            level_triggered: low & (1 << 15) != 0,
            assert: low & (1 << 14) != 0,
            shorthand: match (low >> 18) & 3 {
                0 => Shorthand::None,
                1 => Shorthand::Myself,
                2 => Shorthand::AllIncludingSelf,
                _ => Shorthand::AllExcludingSelf,
            },
            dest: if x2apic { high } else { high >> 24 },
            xapic_broadcast: true,
        }
    }

    /// Decodes an MSI (address and data), in the xAPIC format: an 8-bit
    /// destination in address bits 19:12, redirection hint (bit 3) asking
    /// for lowest priority; with `format.ext_dest_id`, bits 63:40 give the
    /// destination's bits 31:8, as KVM. As KVM, the address's other bits
    /// are not checked.
    pub(crate) fn from_msi(address: u64, data: u32, format: MsiFormat) -> Self {
        let mut mode = ((data >> 8) & 7) as u8;
        // As KVM: the redirection hint turns a fixed MSI into lowest
        // priority among the destinations.
        if address & (1 << 3) != 0 && mode == mode::FIXED {
            mode = mode::LOWEST;
        }
        Self {
            vector: data as u8,
            mode,
            logical: address & (1 << 2) != 0,
            level_triggered: data & (1 << 15) != 0,
            assert: true,
            shorthand: Shorthand::None,
            dest: ((address >> 12) & 0xff) as u32
                | if format.ext_dest_id {
                    (address >> 32) as u32 & 0xffff_ff00
                } else {
                    0
                },
            xapic_broadcast: !format.no_broadcast_quirk,
        }
    }

    /// An INIT that only deasserts the level (an old MP-spec sequence): no
    /// INIT is delivered.
    pub(crate) fn is_init_deassert(&self) -> bool {
        self.mode == mode::INIT && self.level_triggered && !self.assert
    }
}

/// What a destination is matched against: one local APIC as the
/// destination logic sees it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) struct ApicIdentity {
    /// The APIC ID: 8 bits in xAPIC mode, 32 in x2APIC mode.
    pub(crate) id: u32,
    /// The logical destination register.
    pub(crate) ldr: u32,
    /// The destination format register's model (bits 31:28: 0xf flat,
    /// 0x0 cluster).
    pub(crate) dfr: u32,
    pub(crate) x2apic: bool,
    /// Hardware-enabled (APIC base MSR): a disabled APIC accepts nothing.
    pub(crate) enabled: bool,
    /// Software-enabled (SVR): a disabled APIC drops fixed and
    /// lowest-priority interrupts, but takes NMI, INIT and SIPI.
    pub(crate) sw_enabled: bool,
}

impl ApicIdentity {
    /// Packs the identity into two words, so that a sender can read it
    /// from other threads' atomics.
    pub(crate) fn pack(&self) -> (u32, u32) {
        let flags = (self.dfr >> 28)
            | (self.x2apic as u32) << 4
            | (self.enabled as u32) << 5
            | (self.sw_enabled as u32) << 6;
        (self.id, flags)
    }

    pub(crate) fn unpack(id: u32, flags: u32, ldr: u32) -> Self {
        Self {
            id,
            ldr,
            dfr: ((flags & 0xf) << 28) | 0x0fff_ffff,
            x2apic: flags & (1 << 4) != 0,
            enabled: flags & (1 << 5) != 0,
            sw_enabled: flags & (1 << 6) != 0,
        }
    }

    /// Whether a destination with no shorthand names this APIC. `wide`
    /// says the destination came in the x2APIC format (32 bits);
    /// `xapic_broadcast` as [`Irq::xapic_broadcast`].
    pub(crate) fn matches(&self, dest: u32, logical: bool, wide: bool, xapic_broadcast: bool) -> bool {
        if !self.enabled {
            return false;
        }
        // A destination from an xAPIC-format source (or an MSI) is 8 bits;
        // its broadcast 0xff is everyone's, in x2APIC mode too unless the
        // quirk is off.
        let broadcast = if wide {
            dest == u32::MAX
        } else {
            dest == 0xff && (xapic_broadcast || !self.x2apic)
        };
        if broadcast {
            return true;
        }
        if !logical {
            return if self.x2apic || wide {
                dest == self.id
            } else {
                dest == self.id & 0xff
            };
        }
        if self.x2apic {
            // Cluster in bits 31:16, one bit per member in 15:0.
            return dest >> 16 == self.ldr >> 16 && dest & self.ldr & 0xffff != 0;
        }
        let ldr = self.ldr >> 24;
        let dest = dest & 0xff;
        if self.dfr >> 28 == 0xf {
            ldr & dest != 0
        } else {
            dest >> 4 == ldr >> 4 && (dest & ldr & 0xf) != 0
        }
    }
}

/// The logical destination register x2APIC mode derives from an APIC ID
/// (read-only in that mode): cluster `id / 16`, bit `id % 16`.
pub(crate) fn x2apic_ldr(id: u32) -> u32 {
    ((id >> 4) << 16) | (1 << (id & 0xf))
}

/// Whether APIC `target` (index `idx`, identity `who`) receives `irq` sent
/// by APIC `source` (an index, `None` for an MSI or a device).
pub(crate) fn targets(irq: &Irq, source: Option<usize>, idx: usize, who: &ApicIdentity, wide: bool) -> bool {
    match irq.shorthand {
        Shorthand::Myself => source == Some(idx),
        Shorthand::AllIncludingSelf => who.enabled,
        Shorthand::AllExcludingSelf => who.enabled && source != Some(idx),
        Shorthand::None => who.matches(irq.dest, irq.logical, wide, irq.xapic_broadcast),
    }
}

/// Which of `count` destinations of a lowest-priority interrupt gets it:
/// KVM's vector hashing (`vector % count`), so the choice is the same on
/// rkvm and KVM and spreads vectors over the destinations.
pub(crate) fn lowest_priority_pick(vector: u8, count: usize) -> usize {
    if count == 0 {
        0
    } else {
        vector as usize % count
    }
}

/// `KVM_SET_GSI_ROUTING`'s limits and entry types.
pub(crate) mod routing {
    /// KVM's `KVM_MAX_IRQ_ROUTES`: most entries, and GSIs below it.
    pub(crate) const MAX_ROUTES: usize = 4096;
    /// Size of `struct kvm_irq_routing_entry`.
    pub(crate) const ENTRY_SIZE: usize = 48;
    /// Size of `struct kvm_irq_routing`'s header.
    pub(crate) const HEADER_SIZE: usize = 8;
    pub(crate) const TYPE_MSI: u32 = 2;
}

/// One GSI routing entry rkvm serves: a GSI that raises an MSI.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct MsiRoute {
    pub(crate) gsi: u32,
    pub(crate) address: u64,
    pub(crate) data: u32,
}

impl MsiRoute {
    /// Decodes a `struct kvm_irq_routing_entry`. With a split irqchip there
    /// are no in-kernel PIC or IOAPIC pins, so only MSI entries are valid;
    /// flags (KVM's device IDs, which x86 does not use) are refused too.
    pub(crate) fn from_entry(b: &[u8; routing::ENTRY_SIZE]) -> Option<Self> {
        let word = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let (gsi, kind, flags) = (word(0), word(4), word(8));
        if gsi as usize >= routing::MAX_ROUTES || kind != routing::TYPE_MSI || flags != 0 {
            return None;
        }
        Some(Self {
            gsi,
            address: word(16) as u64 | (word(20) as u64) << 32,
            data: word(24),
        })
    }

    /// The route's MSI, read in `format`.
    pub(crate) fn irq(&self, format: MsiFormat) -> Irq {
        Irq::from_msi(self.address, self.data, format)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xapic(id: u32, ldr: u32, flat: bool) -> ApicIdentity {
        ApicIdentity {
            id,
            ldr: ldr << 24,
            dfr: if flat { 0xffff_ffff } else { 0x0fff_ffff },
            x2apic: false,
            enabled: true,
            sw_enabled: true,
        }
    }

    #[test]
    fn icr_fields() {
        // Fixed, physical, vector 0x40 to APIC 3.
        let irq = Irq::from_icr(0x0000_4040, 3 << 24, false);
        assert_eq!(irq.vector, 0x40);
        assert_eq!(irq.mode, mode::FIXED);
        assert!(!irq.logical);
        assert_eq!(irq.dest, 3);
        assert_eq!(irq.shorthand, Shorthand::None);
        // INIT level de-assert, then all-excluding-self SIPI.
        assert!(Irq::from_icr(0x0000_8500, 0, false).is_init_deassert());
        assert!(!Irq::from_icr(0x0000_c500, 0, false).is_init_deassert());
        let sipi = Irq::from_icr(0x000c_0608, 0, false);
        assert_eq!(sipi.mode, mode::STARTUP);
        assert_eq!(sipi.shorthand, Shorthand::AllExcludingSelf);
        // x2APIC: 32-bit destination.
        assert_eq!(Irq::from_icr(0x30, 0x1234_5678, true).dest, 0x1234_5678);
    }

    #[test]
    fn msi_fields() {
        let irq = Irq::from_msi(0xfee0_3000, 0x8041, MsiFormat::default());
        assert_eq!((irq.dest, irq.vector, irq.level_triggered), (3, 0x41, true));
        assert_eq!(Irq::from_msi(0xfee0_0008, 0x41, MsiFormat::default()).mode, mode::LOWEST);
        assert_eq!(Irq::from_msi(0xfee0_0004, 0x441, MsiFormat::default()).mode, mode::NMI);
        assert!(Irq::from_msi(0xfee0_0004, 0x441, MsiFormat::default()).logical);
    }

    #[test]
    fn x2apic_api_msis() {
        let ext = 0x0000_0100_fee0_5000;
        let legacy = MsiFormat::default();
        let wide = MsiFormat { ext_dest_id: true, ..legacy };
        let no_quirk = MsiFormat { no_broadcast_quirk: true, ..legacy };
        // Without KVM_X2APIC_API the high half is ignored, as KVM.
        assert_eq!(Irq::from_msi(ext, 0x41, legacy).dest, 5);
        assert_eq!(Irq::from_msi(ext, 0x41, wide).dest, 0x105);
        let x2 = ApicIdentity { id: 0x105, ldr: x2apic_ldr(0x105), x2apic: true, enabled: true, sw_enabled: true, dfr: 0 };
        let to = |dest: u64, format: MsiFormat| {
            let irq = Irq::from_msi(0xfee0_0000 | dest << 12, 0x41, format);
            targets(&irq, None, 0, &x2, false)
        };
        assert!(to(0xff, legacy), "KVM's broadcast quirk");
        assert!(!to(0xff, no_quirk));
        let xapic = xapic(2, 0, true);
        let irq = Irq::from_msi(0xfee0_0000 | 0xff << 12, 0x41, no_quirk);
        assert!(targets(&irq, None, 0, &xapic, false), "xAPIC mode: 0xff is still everyone");
    }

    #[test]
    fn physical_destinations() {
        let a = xapic(2, 0, true);
        assert!(a.matches(2, false, false, true));
        assert!(!a.matches(3, false, false, true));
        assert!(a.matches(0xff, false, false, true));
        let x2 = ApicIdentity { id: 0x105, ldr: x2apic_ldr(0x105), x2apic: true, enabled: true, sw_enabled: true, dfr: 0 };
        assert!(x2.matches(0x105, false, true, true));
        assert!(x2.matches(0xff, false, false, true), "xAPIC-format broadcast");
        assert!(x2.matches(u32::MAX, false, true, true));
        let off = ApicIdentity { enabled: false, ..a };
        assert!(!off.matches(0xff, false, false, true));
    }

    #[test]
    fn logical_destinations() {
        // Flat: one bit per APIC.
        let a = xapic(0, 0b0100, true);
        assert!(a.matches(0b0110, true, false, true));
        assert!(!a.matches(0b0011, true, false, true));
        // Cluster: cluster 2, member bit 1.
        let c = xapic(0, 0x22, false);
        assert!(c.matches(0x23, true, false, true));
        assert!(!c.matches(0x13, true, false, true));
        assert!(!c.matches(0x21, true, false, true));
        // x2APIC cluster mode from the ID.
        assert_eq!(x2apic_ldr(0x23), 0x0002_0008);
        let x2 = ApicIdentity { id: 0x23, ldr: x2apic_ldr(0x23), x2apic: true, enabled: true, sw_enabled: true, dfr: 0 };
        assert!(x2.matches(0x0002_0018, true, true, true));
        assert!(!x2.matches(0x0001_0008, true, true, true));
    }

    #[test]
    fn shorthands() {
        let a = xapic(1, 0, true);
        let irq = |s| Irq { shorthand: s, ..Irq::from_icr(0x30, 0, false) };
        assert!(targets(&irq(Shorthand::Myself), Some(1), 1, &a, false));
        assert!(!targets(&irq(Shorthand::Myself), Some(0), 1, &a, false));
        assert!(targets(&irq(Shorthand::AllIncludingSelf), Some(1), 1, &a, false));
        assert!(!targets(&irq(Shorthand::AllExcludingSelf), Some(1), 1, &a, false));
        assert!(targets(&irq(Shorthand::AllExcludingSelf), Some(0), 1, &a, false));
    }

    #[test]
    fn routing_entries() {
        let mut b = [0u8; routing::ENTRY_SIZE];
        b[0..4].copy_from_slice(&5u32.to_le_bytes());
        b[4..8].copy_from_slice(&routing::TYPE_MSI.to_le_bytes());
        b[16..20].copy_from_slice(&0xfee0_1000u32.to_le_bytes());
        b[24..28].copy_from_slice(&0x8033u32.to_le_bytes());
        let r = MsiRoute::from_entry(&b).unwrap();
        assert_eq!((r.gsi, r.address, r.data), (5, 0xfee0_1000, 0x8033));
        assert_eq!(r.irq(MsiFormat::default()).dest, 1);
        let mut bad = b;
        bad[8] = 1;
        assert!(MsiRoute::from_entry(&bad).is_none(), "flags");
        let mut bad = b;
        bad[4] = 1; // KVM_IRQ_ROUTING_IRQCHIP
        assert!(MsiRoute::from_entry(&bad).is_none(), "no in-kernel pins");
        let mut bad = b;
        bad[0..4].copy_from_slice(&4096u32.to_le_bytes());
        assert!(MsiRoute::from_entry(&bad).is_none(), "GSI range");
    }

    #[test]
    fn packing_round_trips() {
        for who in [xapic(7, 0x40, true), xapic(3, 0x21, false)] {
            let (id, flags) = who.pack();
            assert_eq!(ApicIdentity::unpack(id, flags, who.ldr), who);
        }
        assert_eq!(lowest_priority_pick(0x41, 3), 2);
    }
}
