// SPDX-License-Identifier: GPL-2.0

//! `struct kvm_vcpu_events` (`KVM_GET_VCPU_EVENTS`, `KVM_SET_VCPU_EVENTS`):
//! the events on their way into the guest, the interrupt shadow and the
//! NMI state, in KVM's layout, and the checks `KVM_SET_VCPU_EVENTS` makes.
//!
//! Pure logic (only `core`), tested on the host.

/// Size of `struct kvm_vcpu_events`.
pub(crate) const SIZE: usize = 64;

/// `KVM_VCPUEVENT_VALID_*`: which optional parts of the structure count.
pub(crate) mod valid {
    pub(crate) const NMI_PENDING: u32 = 1 << 0;
    pub(crate) const SIPI_VECTOR: u32 = 1 << 1;
    pub(crate) const SHADOW: u32 = 1 << 2;
    pub(crate) const SMM: u32 = 1 << 3;
    pub(crate) const PAYLOAD: u32 = 1 << 4;
    pub(crate) const TRIPLE_FAULT: u32 = 1 << 5;
    /// What `KVM_GET_VCPU_EVENTS` reports (no exception payloads or
    /// triple-fault events: their capabilities are not enabled).
    pub(crate) const REPORTED: u32 = NMI_PENDING | SHADOW | SMM;
    pub(crate) const ALL: u32 = NMI_PENDING | SIPI_VECTOR | SHADOW | SMM | PAYLOAD | TRIPLE_FAULT;
}

/// `KVM_X86_SHADOW_INT_*`.
pub(crate) mod shadow {
    pub(crate) const MOV_SS: u8 = 1 << 0;
    pub(crate) const STI: u8 = 1 << 1;
}

/// The events of a vCPU, as the structure has them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct VcpuEvents {
    /// An exception on its way in: vector and error code.
    pub(crate) exception: Option<(u8, Option<u32>)>,
    /// An external interrupt on its way in (`soft`: INT n).
    pub(crate) interrupt: Option<(u8, bool)>,
    /// `KVM_X86_SHADOW_INT_*`.
    pub(crate) shadow: u8,
    pub(crate) nmi_injected: bool,
    /// NMIs waiting to go in.
    pub(crate) nmi_pending: u8,
    pub(crate) nmi_masked: bool,
    pub(crate) flags: u32,
    /// The SMM state (`smi.smm`, `smi.pending`, `smi.smm_inside_nmi`).
    pub(crate) smm: [bool; 3],
}

/// Why `KVM_SET_VCPU_EVENTS` refuses a structure (`EINVAL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Invalid {
    /// A flag KVM does not know, or one whose capability is off
    /// (exception payloads, triple-fault events).
    Flags,
    /// An exception vector past 31, or the NMI's.
    ExceptionVector,
    /// SMM state on a hypervisor without SMM.
    Smm,
}

impl VcpuEvents {
    /// The structure `KVM_SET_VCPU_EVENTS` gives.
    pub(crate) fn from_bytes(b: &[u8; SIZE]) -> Self {
        let u32_at = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        // exception.pending counts only with exception payloads (then
        // refused): without, KVM ignores it, so only injected is read.
        let exception = (b[0] != 0).then(|| (b[1], (b[2] != 0).then(|| u32_at(4))));
        Self {
            exception,
            interrupt: (b[8] != 0).then_some((b[9], b[10] != 0)),
            shadow: b[11],
            nmi_injected: b[12] != 0,
            nmi_pending: b[13],
            nmi_masked: b[14] != 0,
            flags: u32_at(20),
            smm: [b[24] != 0, b[25] != 0, b[26] != 0],
        }
    }

    /// The structure `KVM_GET_VCPU_EVENTS` returns.
    pub(crate) fn to_bytes(&self) -> [u8; SIZE] {
        let mut b = [0u8; SIZE];
        if let Some((vector, error_code)) = self.exception {
            b[0] = 1;
            b[1] = vector;
            if let Some(e) = error_code {
                b[2] = 1;
                b[4..8].copy_from_slice(&e.to_ne_bytes());
            }
        }
        if let Some((vector, soft)) = self.interrupt {
            b[8] = 1;
            b[9] = vector;
            b[10] = soft as u8;
        }
        b[11] = self.shadow;
        b[12] = self.nmi_injected as u8;
        b[13] = self.nmi_pending;
        b[14] = self.nmi_masked as u8;
        b[20..24].copy_from_slice(&self.flags.to_ne_bytes());
        for (i, &s) in self.smm.iter().enumerate() {
            b[24 + i] = s as u8;
        }
        b
    }

    /// KVM's checks, on a hypervisor without SMM, exception payloads or
    /// triple-fault events.
    pub(crate) fn check(&self) -> Result<(), Invalid> {
        if self.flags & !valid::ALL != 0
            || self.flags & (valid::PAYLOAD | valid::TRIPLE_FAULT) != 0
        {
            return Err(Invalid::Flags);
        }
        if let Some((vector, _)) = self.exception {
            if vector > 31 || vector == crate::arch::vector::NMI {
                return Err(Invalid::ExceptionVector);
            }
        }
        if self.flags & valid::SMM != 0 && self.smm.iter().any(|&s| s) {
            return Err(Invalid::Smm);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_round_trip() {
        let e = VcpuEvents {
            exception: Some((13, Some(0x1234))),
            interrupt: Some((0x30, false)),
            shadow: shadow::STI,
            nmi_injected: true,
            nmi_pending: 2,
            nmi_masked: true,
            flags: valid::REPORTED,
            smm: [false; 3],
        };
        let b = e.to_bytes();
        assert_eq!(&b[0..8], &[1, 13, 1, 0, 0x34, 0x12, 0, 0]);
        assert_eq!(&b[8..16], &[1, 0x30, 0, 2, 1, 2, 1, 0]);
        assert_eq!(u32::from_ne_bytes([b[20], b[21], b[22], b[23]]), 0xd);
        assert_eq!(VcpuEvents::from_bytes(&b), e);
        assert_eq!(e.check(), Ok(()));
        assert_eq!(VcpuEvents::default().to_bytes(), [0; SIZE]);
    }

    #[test]
    fn checks_as_kvm_without_smm() {
        let ok = VcpuEvents {
            flags: valid::ALL & !(valid::PAYLOAD | valid::TRIPLE_FAULT),
            ..Default::default()
        };
        assert_eq!(ok.check(), Ok(()));
        for flags in [1 << 6, valid::PAYLOAD, valid::TRIPLE_FAULT] {
            assert_eq!(VcpuEvents { flags, ..ok }.check(), Err(Invalid::Flags));
        }
        for vector in [2, 32, 255] {
            let e = VcpuEvents {
                exception: Some((vector, None)),
                ..ok
            };
            assert_eq!(e.check(), Err(Invalid::ExceptionVector));
        }
        let smm = VcpuEvents {
            smm: [true, false, false],
            ..ok
        };
        assert_eq!(smm.check(), Err(Invalid::Smm));
        // Without the SMM flag the SMM fields do not count.
        assert_eq!(VcpuEvents { flags: 0, ..smm }.check(), Ok(()));
    }
}
