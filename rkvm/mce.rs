// SPDX-License-Identifier: GPL-2.0

//! Machine-check architecture of a vCPU: MCG_CAP/STATUS/CTL, the error
//! banks (MCi_CTL/STATUS/ADDR/MISC), `KVM_X86_SETUP_MCE` and the error
//! injection of `KVM_X86_SET_MCE`, with KVM's rules.
//!
//! rkvm offers MCG_CTL_P and MCG_SER_P, not CMCI or LMCE (no in-kernel
//! local APIC to signal them through), so the MCi_CTL2 registers exist
//! only for the VMM, as zeros.
//!
//! Pure logic (only `core`), tested on the host.

/// Most banks a vCPU can have: `KVM_CAP_MCE`.
pub(crate) const MAX_BANKS: usize = crate::abi::MAX_MCE_BANKS;

pub(crate) const P5_MC_ADDR: u32 = 0x0;
pub(crate) const P5_MC_TYPE: u32 = 0x1;
pub(crate) const MCG_CAP: u32 = 0x179;
pub(crate) const MCG_STATUS: u32 = 0x17a;
pub(crate) const MCG_CTL: u32 = 0x17b;
/// MCi_CTL2 of bank 0; bank i at `MC0_CTL2 + i`.
pub(crate) const MC0_CTL2: u32 = 0x280;
/// MCi_CTL of bank 0; bank i's CTL, STATUS, ADDR, MISC at `MC0_CTL + 4 * i`.
pub(crate) const MC0_CTL: u32 = 0x400;

/// MCG_CAP: MCG_CTL is present.
pub(crate) const MCG_CTL_P: u64 = 1 << 8;
/// MCG_CAP: software error recovery.
pub(crate) const MCG_SER_P: u64 = 1 << 24;
/// MCG_CAP: the bank count.
const MCG_BANKCNT: u64 = 0xff;
/// MCG_CAP bits 23:16, the extended register count: accepted and kept,
/// as KVM does, though there are no extended registers.
const MCG_EXT_CNT: u64 = 0xff_0000;

/// What `KVM_X86_GET_MCE_CAP_SUPPORTED` reports.
pub(crate) const SUPPORTED_CAP: u64 = MCG_CTL_P | MCG_SER_P;

/// MCG_STATUS: a machine check is in progress.
pub(crate) const MCG_STATUS_MCIP: u64 = 1 << 2;

/// MCi_STATUS bits.
pub(crate) const MCI_STATUS_VAL: u64 = 1 << 63;
pub(crate) const MCI_STATUS_OVER: u64 = 1 << 62;
pub(crate) const MCI_STATUS_UC: u64 = 1 << 61;
pub(crate) const MCI_STATUS_PCC: u64 = 1 << 57;
pub(crate) const MCI_STATUS_S: u64 = 1 << 56;
pub(crate) const MCI_STATUS_AR: u64 = 1 << 55;

/// Size of `struct kvm_x86_mce`.
pub(crate) const X86_MCE_SIZE: usize = crate::abi::vcpu::X86_MCE_SIZE;

/// `struct kvm_x86_mce`: one error for `KVM_X86_SET_MCE`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct McError {
    pub(crate) status: u64,
    pub(crate) addr: u64,
    pub(crate) misc: u64,
    pub(crate) mcg_status: u64,
    pub(crate) bank: u8,
}

impl McError {
    pub(crate) fn from_bytes(b: &[u8; X86_MCE_SIZE]) -> Self {
        let q = |i: usize| u64::from_ne_bytes(crate::abi::field(b, i * 8));
        Self {
            status: q(0),
            addr: q(1),
            misc: q(2),
            mcg_status: q(3),
            bank: b[32],
        }
    }

    /// An uncorrected error that needs no action and signals no #MC
    /// (UCNA): only recorded, as a corrected one.
    fn is_ucna(&self) -> bool {
        self.mcg_status == 0
            && self.status & (MCI_STATUS_PCC | MCI_STATUS_S | MCI_STATUS_AR) == 0
            && self.status & MCI_STATUS_VAL != 0
            && self.status & MCI_STATUS_UC != 0
    }
}

/// What an injected error asks of the vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum McAction {
    /// Recorded in its bank (or dropped, as the CTL registers say).
    None,
    /// Deliver #MC (vector 18) to the guest.
    Exception,
    /// A machine check while one is in progress, or with CR4.MCE clear:
    /// the processor shuts down (triple fault).
    Shutdown,
}

/// Who writes an MSR, and what the guest's CPU model allows.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Writer {
    /// The VMM (`KVM_SET_MSRS`), not the guest.
    pub(crate) host: bool,
    /// An AMD guest whose HWCR.McStatusWrEn is set may write non-zero
    /// MCi_STATUS values.
    pub(crate) mci_status_writable: bool,
}

/// A vCPU's machine-check registers.
#[derive(Clone, Debug)]
pub(crate) struct Mce {
    cap: u64,
    status: u64,
    ctl: u64,
    /// CTL, STATUS, ADDR, MISC of each bank.
    banks: [[u64; 4]; MAX_BANKS],
}

impl Default for Mce {
    fn default() -> Self {
        Self::new()
    }
}

impl Mce {
    /// A new vCPU's: all banks present (KVM's default MCG_CAP), all zero.
    pub(crate) const fn new() -> Self {
        Self {
            cap: MAX_BANKS as u64,
            status: 0,
            ctl: 0,
            banks: [[0; 4]; MAX_BANKS],
        }
    }

    fn bank_count(&self) -> usize {
        (self.cap & MCG_BANKCNT) as usize
    }

    /// `KVM_X86_SETUP_MCE`: 1 to 32 banks and only supported bits, else
    /// `Err` (`EINVAL`). MCG_CTL and every MCi_CTL become all-ones
    /// (all errors reported). `vendor_mask` is what the backend keeps of
    /// MCG_CAP (SVM: bits 8:0, as the AMD manual reserves the rest).
    pub(crate) fn setup(&mut self, cap: u64, vendor_mask: u64) -> Result<(), ()> {
        let banks = (cap & MCG_BANKCNT) as usize;
        if banks == 0 || banks > MAX_BANKS {
            return Err(());
        }
        if cap & !(SUPPORTED_CAP | MCG_BANKCNT | MCG_EXT_CNT) != 0 {
            return Err(());
        }
        self.cap = cap & vendor_mask;
        if cap & MCG_CTL_P != 0 {
            self.ctl = !0;
        }
        for bank in &mut self.banks[..banks] {
            bank[0] = !0;
        }
        Ok(())
    }

    /// `KVM_X86_SET_MCE`: records `e` in its bank and says what the vCPU
    /// must do. `Err` (`EINVAL`) for a bank that does not exist or a
    /// status without VAL. `cr4_mce` is the guest's CR4.MCE.
    pub(crate) fn inject(&mut self, e: &McError, cr4_mce: bool) -> Result<McAction, ()> {
        let idx = e.bank as usize;
        if idx >= self.bank_count() || e.status & MCI_STATUS_VAL == 0 {
            return Err(());
        }
        let cap = self.cap;
        let bank = &mut self.banks[idx];
        if e.is_ucna() {
            // Without CMCI, nothing signals it: the guest finds it by
            // polling.
            bank[1] = e.status;
            bank[2] = e.addr;
            bank[3] = e.misc;
            self.status = e.mcg_status;
            return Ok(McAction::None);
        }
        let mut status = e.status;
        if status & MCI_STATUS_UC != 0 {
            // Uncorrected-error reporting switched off, globally or for
            // the bank: dropped.
            if (cap & MCG_CTL_P != 0 && self.ctl != !0) || bank[0] != !0 {
                return Ok(McAction::None);
            }
            if self.status & MCG_STATUS_MCIP != 0 || !cr4_mce {
                return Ok(McAction::Shutdown);
            }
            if bank[1] & MCI_STATUS_VAL != 0 {
                status |= MCI_STATUS_OVER;
            }
            bank[1] = status;
            bank[2] = e.addr;
            bank[3] = e.misc;
            self.status = e.mcg_status;
            return Ok(McAction::Exception);
        }
        // A corrected error: recorded unless it would hide an uncorrected
        // one, which only learns that it was overwritten.
        if bank[1] & MCI_STATUS_VAL != 0 && bank[1] & MCI_STATUS_UC != 0 {
            bank[1] |= MCI_STATUS_OVER;
            return Ok(McAction::None);
        }
        if bank[1] & MCI_STATUS_VAL != 0 {
            status |= MCI_STATUS_OVER;
        }
        bank[1] = status;
        bank[2] = e.addr;
        bank[3] = e.misc;
        Ok(McAction::None)
    }

    /// The register a bank MSR names, if this vCPU has that bank.
    fn bank_reg(&self, index: u32) -> Option<(usize, usize)> {
        let off = index.checked_sub(MC0_CTL)? as usize;
        (off < 4 * self.bank_count()).then_some((off / 4, off % 4))
    }

    /// Whether `index` is one of the MSRs this file answers for (whether
    /// or not this vCPU has it).
    pub(crate) fn owns(index: u32) -> bool {
        matches!(index, P5_MC_ADDR | P5_MC_TYPE | MCG_CAP | MCG_STATUS | MCG_CTL)
            || (MC0_CTL..MC0_CTL + 4 * MAX_BANKS as u32).contains(&index)
            || (MC0_CTL2..MC0_CTL2 + MAX_BANKS as u32).contains(&index)
    }

    /// Reads an MSR `owns` accepts; `Err` is `#GP` for the guest and a
    /// failed entry for the VMM.
    pub(crate) fn get(&self, index: u32, host: bool) -> Result<u64, ()> {
        match index {
            P5_MC_ADDR | P5_MC_TYPE => Ok(0),
            MCG_CAP => Ok(self.cap),
            MCG_STATUS => Ok(self.status),
            MCG_CTL if self.cap & MCG_CTL_P != 0 || host => Ok(self.ctl),
            // Without CMCI, MCi_CTL2 is zero, and only the VMM sees it.
            i if (MC0_CTL2..MC0_CTL2 + self.bank_count() as u32).contains(&i) && host => Ok(0),
            i => self.bank_reg(i).map(|(b, r)| self.banks[b][r]).ok_or(()),
        }
    }

    /// Writes an MSR `owns` accepts, with KVM's rules; `Err` as `get`.
    pub(crate) fn set(&mut self, index: u32, val: u64, w: Writer) -> Result<(), ()> {
        match index {
            MCG_STATUS => self.status = val,
            MCG_CTL => {
                if self.cap & MCG_CTL_P == 0 && (val != 0 || !w.host) {
                    return Err(());
                }
                if val != 0 && val != !0 {
                    return Err(());
                }
                self.ctl = val;
            }
            // Zero is what a VMM restoring state without CMCI writes.
            i if (MC0_CTL2..MC0_CTL2 + self.bank_count() as u32).contains(&i) => {
                if val != 0 || !w.host {
                    return Err(());
                }
            }
            i => {
                let (b, r) = self.bank_reg(i).ok_or(())?;
                // MCi_CTL takes 0 or all-ones; bit 10 (Linux's K8 GART
                // workaround) and bit 0 (UnixWare) may be clear.
                if r == 0 && val != 0 && val | 1 << 10 | 1 != !0 {
                    return Err(());
                }
                // The guest may clear MCi_STATUS; only AMD's McStatusWrEn
                // lets it write anything else.
                if r == 1 && val != 0 && !w.host && !w.mci_status_writable {
                    return Err(());
                }
                self.banks[b][r] = val;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MCG_CAP: corrected machine-check interrupts, local machine checks
    /// (neither offered).
    const MCG_CMCI_P: u64 = 1 << 10;
    const MCG_LMCE_P: u64 = 1 << 27;

    const GUEST: Writer = Writer {
        host: false,
        mci_status_writable: false,
    };
    const HOST: Writer = Writer {
        host: true,
        mci_status_writable: false,
    };

    fn err(status: u64, bank: u8) -> McError {
        McError {
            status,
            addr: 0x1234_5000,
            misc: 0x86,
            mcg_status: 0x5,
            bank,
        }
    }

    #[test]
    fn setup_checks() {
        let mut m = Mce::new();
        assert_eq!(m.get(MCG_CAP, false), Ok(32));
        assert!(m.setup(0, !0).is_err());
        assert!(m.setup(33, !0).is_err());
        assert!(m.setup(10 | MCG_CMCI_P, !0).is_err());
        assert!(m.setup(10 | MCG_LMCE_P, !0).is_err());
        assert!(m.setup(10 | 1 << 9, !0).is_err());
        assert_eq!(m.setup(10 | MCG_CTL_P | MCG_SER_P | 0x20000, !0), Ok(()));
        assert_eq!(m.get(MCG_CAP, false), Ok(10 | MCG_CTL_P | MCG_SER_P | 0x20000));
        assert_eq!(m.get(MCG_CTL, false), Ok(!0));
        assert_eq!(m.get(MC0_CTL + 4 * 9, false), Ok(!0));
        assert!(m.get(MC0_CTL + 4 * 10, false).is_err());
        // SVM keeps bits 8:0 only.
        assert_eq!(m.setup(4 | MCG_CTL_P | MCG_SER_P, 0x1ff), Ok(()));
        assert_eq!(m.get(MCG_CAP, false), Ok(4 | MCG_CTL_P));
        assert!(m.get(MC0_CTL + 4 * 4, false).is_err());
    }

    #[test]
    fn uncorrected_error_raises_mc() {
        let mut m = Mce::new();
        m.setup(2 | MCG_CTL_P, !0).unwrap();
        let uc = MCI_STATUS_VAL | MCI_STATUS_UC | MCI_STATUS_PCC | 0x17;
        assert_eq!(m.inject(&err(uc, 1), true), Ok(McAction::Exception));
        assert_eq!(m.get(MC0_CTL + 5, false), Ok(uc));
        assert_eq!(m.get(MC0_CTL + 6, false), Ok(0x1234_5000));
        assert_eq!(m.get(MC0_CTL + 7, false), Ok(0x86));
        assert_eq!(m.get(MCG_STATUS, false), Ok(0x5));
        // MCIP is set: a second one shuts the CPU down.
        assert_eq!(m.inject(&err(uc, 0), true), Ok(McAction::Shutdown));
        // The handler clears MCIP; a new error over a valid one overflows.
        m.set(MCG_STATUS, 0, GUEST).unwrap();
        assert_eq!(m.inject(&err(uc, 1), true), Ok(McAction::Exception));
        assert_eq!(m.get(MC0_CTL + 5, false), Ok(uc | MCI_STATUS_OVER));
        // CR4.MCE clear: shutdown.
        m.set(MCG_STATUS, 0, GUEST).unwrap();
        assert_eq!(m.inject(&err(uc, 0), false), Ok(McAction::Shutdown));
    }

    #[test]
    fn disabled_reporting_drops_uncorrected() {
        let mut m = Mce::new();
        m.setup(2 | MCG_CTL_P, !0).unwrap();
        let uc = MCI_STATUS_VAL | MCI_STATUS_UC | MCI_STATUS_S;
        m.set(MCG_CTL, 0, GUEST).unwrap();
        assert_eq!(m.inject(&err(uc, 0), true), Ok(McAction::None));
        assert_eq!(m.get(MC0_CTL + 1, false), Ok(0));
        m.set(MCG_CTL, !0, GUEST).unwrap();
        m.set(MC0_CTL, 0, GUEST).unwrap();
        assert_eq!(m.inject(&err(uc, 0), true), Ok(McAction::None));
        assert_eq!(m.inject(&err(uc, 1), true), Ok(McAction::Exception));
    }

    #[test]
    fn corrected_error_is_only_recorded() {
        let mut m = Mce::new();
        m.setup(1, !0).unwrap();
        let ce = MCI_STATUS_VAL | 0x42;
        assert_eq!(m.inject(&err(ce, 0), true), Ok(McAction::None));
        assert_eq!(m.get(MC0_CTL + 1, false), Ok(ce));
        // MCG_STATUS is not touched by a corrected error.
        assert_eq!(m.get(MCG_STATUS, false), Ok(0));
        assert_eq!(m.inject(&err(ce | 1, 0), true), Ok(McAction::None));
        assert_eq!(m.get(MC0_CTL + 1, false), Ok(ce | 1 | MCI_STATUS_OVER));
        // Over an uncorrected error: only OVER is set.
        m.set(MCG_STATUS, 0, GUEST).unwrap();
        let uc = MCI_STATUS_VAL | MCI_STATUS_UC | MCI_STATUS_PCC;
        m.set(MC0_CTL + 1, 0, GUEST).unwrap();
        assert_eq!(m.inject(&err(uc, 0), true), Ok(McAction::Exception));
        assert_eq!(m.inject(&err(ce, 0), true), Ok(McAction::None));
        assert_eq!(m.get(MC0_CTL + 1, false), Ok(uc | MCI_STATUS_OVER));
        assert_eq!(m.get(MC0_CTL + 2, false), Ok(0x1234_5000));
    }

    #[test]
    fn ucna_is_recorded_with_mcg_status() {
        let mut m = Mce::new();
        m.setup(1 | MCG_CTL_P, !0).unwrap();
        m.set(MCG_CTL, 0, GUEST).unwrap();
        let mut e = err(MCI_STATUS_VAL | MCI_STATUS_UC, 0);
        e.mcg_status = 0;
        m.set(MCG_STATUS, 0x3, GUEST).unwrap();
        assert_eq!(m.inject(&e, false), Ok(McAction::None));
        assert_eq!(m.get(MC0_CTL + 1, false), Ok(MCI_STATUS_VAL | MCI_STATUS_UC));
        assert_eq!(m.get(MCG_STATUS, false), Ok(0));
    }

    #[test]
    fn bad_injections() {
        let mut m = Mce::new();
        m.setup(3, !0).unwrap();
        assert!(m.inject(&err(MCI_STATUS_VAL, 3), true).is_err());
        assert!(m.inject(&err(MCI_STATUS_UC, 0), true).is_err());
    }

    #[test]
    fn msr_write_rules() {
        let mut m = Mce::new();
        m.setup(2, !0).unwrap();
        // No MCG_CTL_P: the guest may not touch MCG_CTL, the VMM may write 0.
        assert!(m.get(MCG_CTL, false).is_err());
        assert_eq!(m.get(MCG_CTL, true), Ok(0));
        assert!(m.set(MCG_CTL, 0, GUEST).is_err());
        assert!(m.set(MCG_CTL, !0, HOST).is_err());
        assert_eq!(m.set(MCG_CTL, 0, HOST), Ok(()));
        m.setup(2 | MCG_CTL_P, !0).unwrap();
        assert!(m.set(MCG_CTL, 1, GUEST).is_err());
        assert_eq!(m.set(MCG_CTL, 0, GUEST), Ok(()));
        // MCi_CTL: 0 or all-ones, with bits 10 and 0 optional.
        assert!(m.set(MC0_CTL, 0xff, GUEST).is_err());
        assert_eq!(m.set(MC0_CTL, !0 & !(1 << 10) & !1, GUEST), Ok(()));
        assert_eq!(m.set(MC0_CTL + 4, 0, GUEST), Ok(()));
        // MCi_STATUS: the guest may only clear it, unless McStatusWrEn.
        assert!(m.set(MC0_CTL + 1, 5, GUEST).is_err());
        assert_eq!(m.set(MC0_CTL + 1, 0, GUEST), Ok(()));
        let amd = Writer {
            host: false,
            mci_status_writable: true,
        };
        assert_eq!(m.set(MC0_CTL + 1, 5, amd), Ok(()));
        assert_eq!(m.set(MC0_CTL + 5, 7, HOST), Ok(()));
        assert_eq!(m.get(MC0_CTL + 5, false), Ok(7));
        // ADDR and MISC take anything.
        assert_eq!(m.set(MC0_CTL + 2, 0xdead, GUEST), Ok(()));
        assert_eq!(m.set(MC0_CTL + 3, 0xbeef, GUEST), Ok(()));
        // Banks past the count, MCG_CAP, and CTL2 without CMCI.
        assert!(m.set(MC0_CTL + 8, 0, HOST).is_err());
        assert!(m.set(MCG_CAP, 2, HOST).is_err());
        assert!(m.get(MC0_CTL2, false).is_err());
        assert_eq!(m.get(MC0_CTL2 + 1, true), Ok(0));
        assert!(m.get(MC0_CTL2 + 2, true).is_err());
        assert_eq!(m.set(MC0_CTL2, 0, HOST), Ok(()));
        assert!(m.set(MC0_CTL2, 1, HOST).is_err());
        assert!(m.set(MC0_CTL2, 0, GUEST).is_err());
        assert!(m.set(P5_MC_ADDR, 0, HOST).is_err());
        assert_eq!(m.get(P5_MC_TYPE, false), Ok(0));
    }
}
