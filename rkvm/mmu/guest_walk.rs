// SPDX-License-Identifier: GPL-2.0

//! The guest page-table walker: translates a guest linear address to a
//! guest-physical address as the guest's CPU would, with its permission
//! checks, its page-fault error codes and its Accessed/Dirty updates.
//!
//! The emulator needs it wherever it touches guest memory by linear
//! address (instruction fetch at RIP, string I/O), because with nested
//! paging the hardware only ever translates for the guest itself. A failed
//! translation must reach the guest as the very #PF the CPU would have
//! raised, so the checks follow SDM Vol. 3A chapter 4 (and APM Vol. 2
//! chapter 5) closely.
//!
//! Paging modes: none (`CR0.PG` = 0), 32-bit (4 KiB pages, 4 MiB pages
//! with `CR4.PSE`, PSE-36), PAE, 4-level and 5-level (`CR4.LA57`), with
//! 2 MiB and 1 GiB pages.
//!
//! Not modelled, and why that is acceptable for the emulator's accesses:
//! - SMAP: it depends on `RFLAGS.AC` and on whether the access is
//!   implicit, which [`AccessKind`] does not carry. SMEP is modelled.
//! - Protection keys (`CR4.PKE`/`PKS`), shadow stacks (`CR4.CET`), HLAT,
//!   and the PAT/PCD/PWT memory types (nothing to check).
//! - PDPTE caching: in PAE mode the CPU loads the four PDPTEs when CR3 is
//!   written (and raises #GP there for reserved bits); rkvm reads them from
//!   guest memory at each walk. Only a guest that changes its PDPT without
//!   reloading CR3 can tell: the CPU would keep using the old PDPTEs, rkvm
//!   uses the new ones. A reserved bit found here becomes a #PF with RSVD
//!   set (there is no CR3 load to fault).
//! - 1 GiB pages are assumed to be enumerated (CPUID
//!   80000001h:EDX.Page1GB), as the CPU models rkvm is tested with do; a
//!   guest CPUID without it would expect a RSVD fault for PS in a PDPTE.
//! - AMD's reserved G bit (bit 8) in non-leaf PML4Es and PDPTEs: like the
//!   Intel rules, it is ignored here.
//!
//! Pure logic (only `core`), tested on the host.

/// Control registers and `EFER` as the guest last set them, plus the
/// guest's physical-address width.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct WalkRegs {
    /// CR0: PG turns paging on, WP applies R/W to supervisor writes.
    pub(crate) cr0: u64,
    /// CR3: the root table (PDPT in PAE mode).
    pub(crate) cr3: u64,
    /// CR4: PSE, PAE, LA57 and SMEP are used.
    pub(crate) cr4: u64,
    /// EFER: LMA selects 4/5-level paging, NXE enables execute-disable.
    pub(crate) efer: u64,
    /// MAXPHYADDR the guest sees (CPUID 80000008h:EAX[7:0]); physical
    /// address bits at or above it are reserved in paging entries. Values
    /// outside 32..=52 are clamped to that range.
    pub(crate) maxphyaddr: u8,
}

/// What the translated access is for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct AccessKind {
    /// A data write.
    pub(crate) write: bool,
    /// A user-mode access (CPL 3 and not an implicit supervisor access
    /// such as a descriptor-table read; SDM Vol. 3A 4.6).
    pub(crate) user: bool,
    /// An instruction fetch (`write` is then false).
    pub(crate) fetch: bool,
}

/// Why [`translate`] produced no address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WalkError {
    /// The guest must see #PF with this error code (SDM Vol. 3A 4.7: P,
    /// W/R, U/S, RSVD and I/D bits) and CR2 set to the linear address.
    PageFault { error_code: u32 },
    /// A guest paging-structure entry lives at guest-physical `gpa`, which
    /// the caller could not read (no memslot). KVM reports an emulation
    /// failure to userspace for this.
    NoMemory { gpa: u64 },
    /// In 4- or 5-level paging, the address is not canonical. The CPU
    /// raises #GP (#SS for stack accesses) before any paging, so this is
    /// the caller's to inject; no walk was done.
    NonCanonical,
    /// Other writers kept changing the entries between our read and our
    /// Accessed/Dirty update, [`MAX_ATTEMPTS`] times in a row. The caller
    /// resumes the guest without emulating: the instruction runs again and
    /// faults again, by which time the writer has usually finished (KVM's
    /// `RET_PF_RETRY`).
    Retry,
}

/// Access to guest-physical memory for the walker.
pub(crate) trait GuestMemory {
    /// Reads the 8-byte (or 4-byte when `size == 4`) guest paging-structure
    /// entry at `gpa`; `None` if no memslot backs it.
    fn read_pte(&mut self, gpa: u64, size: usize) -> Option<u64>;

    /// Atomically replaces `old` with `new` at `gpa` (setting Accessed and
    /// Dirty); false if the entry no longer holds `old`, and the walker
    /// then restarts. Memory that cannot be written (a read-only slot)
    /// should answer true without writing: a CPU's A/D write to ROM is
    /// dropped just the same.
    fn cmpxchg_pte(&mut self, gpa: u64, size: usize, old: u64, new: u64) -> bool;
}

/// Walks started before giving up with [`WalkError::Retry`]. A restart
/// needs another CPU to change an entry inside our read-to-cmpxchg window;
/// eight in a row means the guest is hammering its page tables, and
/// re-entering it is better than spinning with the vCPU held.
pub(crate) const MAX_ATTEMPTS: u32 = 8;

// Page-fault error code bits (SDM Vol. 3A 4.7, Figure 4-12).
/// P: the fault was a protection or reserved-bit violation, not a
/// not-present entry.
pub(crate) const PFERR_PRESENT: u32 = 1 << 0;
/// W/R: the access was a write.
pub(crate) const PFERR_WRITE: u32 = 1 << 1;
/// U/S: the access was a user-mode access.
pub(crate) const PFERR_USER: u32 = 1 << 2;
/// RSVD: a reserved bit was set in a paging-structure entry.
pub(crate) const PFERR_RSVD: u32 = 1 << 3;
/// I/D: the access was an instruction fetch (reported only with SMEP or
/// with PAE-format entries and `EFER.NXE`).
pub(crate) const PFERR_FETCH: u32 = 1 << 4;

/// Paging-structure entry bits (SDM Vol. 3A 4.3-4.5, Tables 4-4 to 4-20).
const PTE_P: u64 = 1 << 0;
const PTE_RW: u64 = 1 << 1;
const PTE_US: u64 = 1 << 2;
const PTE_A: u64 = 1 << 5;
const PTE_D: u64 = 1 << 6;
const PTE_PS: u64 = 1 << 7;
const PTE_XD: u64 = 1 << 63;

use crate::arch::{cr0, cr4, efer};

/// Bits `lo..=hi` set; empty when `lo > hi` or `hi > 63`.
const fn bits(lo: u32, hi: u32) -> u64 {
    if lo > hi || hi > 63 {
        return 0;
    }
    (u64::MAX >> (63 - hi)) & (u64::MAX << lo)
}

/// The paging mode, from CR0.PG, CR4.PAE, EFER.LMA and CR4.LA57
/// (SDM Vol. 3A 4.1.1, Table 4-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Paging {
    Bit32,
    Pae,
    Level4,
    Level5,
}

impl Paging {
    fn of(regs: &WalkRegs) -> Self {
        if regs.efer & efer::LMA != 0 {
            if regs.cr4 & cr4::LA57 != 0 {
                Paging::Level5
            } else {
                Paging::Level4
            }
        } else if regs.cr4 & cr4::PAE != 0 {
            Paging::Pae
        } else {
            Paging::Bit32
        }
    }

    /// Bytes per entry.
    fn entry_size(self) -> usize {
        if self == Paging::Bit32 {
            4
        } else {
            8
        }
    }

    /// Linear-address bits each level translates.
    fn index_bits(self) -> u32 {
        if self == Paging::Bit32 {
            10
        } else {
            9
        }
    }
}

/// Everything a walk needs that does not change during it.
struct Walker {
    paging: Paging,
    /// Physical-address bits of an entry: 12..MAXPHYADDR.
    addr_mask: u64,
    maxphyaddr: u32,
    nxe: bool,
    /// The error code bits that describe the access itself.
    access_bits: u32,
}

/// The outcome of one walk attempt.
enum Attempt {
    Done(u64),
    Raced,
}

/// Translates guest linear address `gva` for `access` under the guest's
/// paging registers `regs`, reading and updating the guest's paging
/// structures through `mem`.
///
/// Outside 4/5-level paging only the low 32 bits of `gva` are used: linear
/// addresses are 32 bits wide there (the caller's segment arithmetic is
/// expected to have wrapped already). Without paging the result is the
/// linear address itself; `EFER.LMA` cannot be set then.
///
/// On success, Accessed is set in every entry used and Dirty in the final
/// entry for a write, as the CPU does. As in KVM, nothing is set when the
/// access faults.
pub(crate) fn translate(
    gva: u64,
    regs: &WalkRegs,
    access: AccessKind,
    mem: &mut impl GuestMemory,
) -> Result<u64, WalkError> {
    if regs.cr0 & cr0::PG == 0 {
        return Ok(gva & 0xffff_ffff);
    }
    let paging = Paging::of(regs);
    let gva = match paging {
        Paging::Bit32 | Paging::Pae => gva & 0xffff_ffff,
        // Bits 63:47 (63:56 with LA57) must all equal bit 47 (56)
        // (SDM Vol. 1 3.3.7.1).
        Paging::Level4 if ((gva as i64) << 16 >> 16) as u64 != gva => {
            return Err(WalkError::NonCanonical)
        }
        Paging::Level5 if ((gva as i64) << 7 >> 7) as u64 != gva => {
            return Err(WalkError::NonCanonical)
        }
        _ => gva,
    };
    let maxphyaddr = u32::from(regs.maxphyaddr).clamp(32, 52);
    let nxe = paging != Paging::Bit32 && regs.efer & efer::NXE != 0;
    let smep = regs.cr4 & cr4::SMEP != 0;
    let mut access_bits = 0;
    if access.write {
        access_bits |= PFERR_WRITE;
    }
    if access.user {
        access_bits |= PFERR_USER;
    }
    // I/D is reported only where execute protection exists: with SMEP, or
    // with PAE-format entries and EFER.NXE (SDM Vol. 3A 4.7).
    if access.fetch && (smep || nxe) {
        access_bits |= PFERR_FETCH;
    }
    let walker = Walker {
        paging,
        addr_mask: bits(12, maxphyaddr - 1),
        maxphyaddr,
        nxe,
        access_bits,
    };
    for _ in 0..MAX_ATTEMPTS {
        if let Attempt::Done(gpa) = walker.walk(gva, regs, access, mem)? {
            return Ok(gpa);
        }
    }
    Err(WalkError::Retry)
}

impl Walker {
    fn fault(&self, extra: u32) -> WalkError {
        WalkError::PageFault {
            error_code: self.access_bits | extra,
        }
    }

    fn read(&self, mem: &mut impl GuestMemory, gpa: u64) -> Result<u64, WalkError> {
        let size = self.paging.entry_size();
        let v = mem.read_pte(gpa, size).ok_or(WalkError::NoMemory { gpa })?;
        Ok(if size == 4 { v & 0xffff_ffff } else { v })
    }

    /// Bits that must be 0 in a present entry at `level` (1 = PTE, which
    /// translates linear-address bits from `shift` up), given whether it
    /// maps a page (`large` at levels above 1). SDM Vol. 3A Tables 4-4 to
    /// 4-6 (32-bit), 4-10 to 4-11 (PAE), 4-15 to 4-20 (4-level); 4.5.1 for
    /// 5-level.
    fn reserved(&self, level: u32, shift: u32, large: bool) -> u64 {
        let m = self.maxphyaddr;
        match self.paging {
            Paging::Bit32 => {
                if !large {
                    return 0;
                }
                // 4 MiB page: bit 21 is reserved; bits 20:13 carry
                // physical-address bits 39:32 (PSE-36), those at or above
                // MAXPHYADDR (at most 40 here) being reserved.
                let pse36 = m.min(40);
                bits(21, 21) | if pse36 < 40 { bits(pse36 - 19, 20) } else { 0 }
            }
            Paging::Pae | Paging::Level4 | Paging::Level5 => {
                // PAE entries reserve bits 62:M; 4/5-level ones only 51:M
                // (62:52 are ignored or protection keys).
                let top = if self.paging == Paging::Pae { 62 } else { 51 };
                let mut rsvd = bits(m, top);
                if !self.nxe {
                    rsvd |= PTE_XD;
                }
                if self.paging != Paging::Pae && level >= 4 {
                    // PML4Es and PML5Es cannot map pages.
                    rsvd |= PTE_PS;
                }
                if large {
                    // Address bits below the page size, except bit 12
                    // (PAT).
                    rsvd |= bits(13, shift.wrapping_sub(1));
                }
                rsvd
            }
        }
    }

    /// Whether `entry` at `level` maps a page rather than a table.
    fn is_large(&self, level: u32, entry: u64, cr4: u64) -> bool {
        if level == 1 || entry & PTE_PS == 0 {
            return false;
        }
        match self.paging {
            // PS is ignored without CR4.PSE.
            Paging::Bit32 => level == 2 && cr4 & cr4::PSE != 0,
            Paging::Pae => level == 2,
            // PS in a PML4E or PML5E is a reserved-bit fault, found by
            // `reserved()`; treat the entry as a table pointer until then.
            Paging::Level4 | Paging::Level5 => level <= 3,
        }
    }

    /// One walk; `Raced` if an Accessed/Dirty update lost a race.
    fn walk(
        &self,
        gva: u64,
        regs: &WalkRegs,
        access: AccessKind,
        mem: &mut impl GuestMemory,
    ) -> Result<Attempt, WalkError> {
        // (gpa, value) of each entry used, to set Accessed afterwards.
        let mut used = [(0u64, 0u64); 5];
        let mut nused = 0;
        let (mut table, mut level): (u64, u32) = match self.paging {
            Paging::Bit32 => (regs.cr3 & bits(12, 31), 2),
            Paging::Pae => {
                // The PDPT is 32-byte aligned below 4 GiB (SDM Vol. 3A
                // 4.4.1); its entries have no A bit and no permissions.
                let gpa = (regs.cr3 & bits(5, 31)) | (((gva >> 30) & 3) << 3);
                let pdpte = self.read(mem, gpa)?;
                if pdpte & PTE_P == 0 {
                    return Err(self.fault(0));
                }
                if pdpte & (bits(self.maxphyaddr, 63) | bits(5, 8) | bits(1, 2)) != 0 {
                    return Err(self.fault(PFERR_PRESENT | PFERR_RSVD));
                }
                (pdpte & self.addr_mask, 2)
            }
            Paging::Level4 => (regs.cr3 & self.addr_mask, 4),
            Paging::Level5 => (regs.cr3 & self.addr_mask, 5),
        };
        let index_bits = self.paging.index_bits();
        let index_mask = (1u64 << index_bits) - 1;
        let esize = self.paging.entry_size() as u64;
        // Permissions combine over levels: writable and user only if every
        // level allows it, executable only if no level forbids it (SDM
        // Vol. 3A 4.6).
        let (mut writable, mut user, mut no_exec) = (true, true, false);
        // `level` stays in 1..=5, so the wrapping operations below never
        // wrap; they only keep panicking overflow checks out of the code.
        let gpa = loop {
            let shift = index_bits
                .wrapping_mul(level.wrapping_sub(1))
                .wrapping_add(12)
                & 63;
            let index = (gva >> shift) & index_mask;
            let pte_gpa = table | index.wrapping_mul(esize);
            let pte = self.read(mem, pte_gpa)?;
            if pte & PTE_P == 0 {
                return Err(self.fault(0));
            }
            let large = self.is_large(level, pte, regs.cr4);
            if pte & self.reserved(level, shift, large) != 0 {
                return Err(self.fault(PFERR_PRESENT | PFERR_RSVD));
            }
            writable &= pte & PTE_RW != 0;
            user &= pte & PTE_US != 0;
            no_exec |= self.nxe && pte & PTE_XD != 0;
            if let Some(slot) = used.get_mut(nused) {
                *slot = (pte_gpa, pte);
                nused += 1;
            }
            if level <= 1 {
                break (pte & self.addr_mask) | (gva & 0xfff);
            }
            if large {
                let offset_mask = bits(0, shift.wrapping_sub(1));
                let base = if self.paging == Paging::Bit32 {
                    // Bits 31:22, and PSE-36's bits 20:13 as 39:32.
                    (pte & bits(22, 31)) | (((pte >> 13) & 0xff) << 32)
                } else {
                    pte & self.addr_mask & !offset_mask
                };
                break base | (gva & offset_mask);
            }
            table = if self.paging == Paging::Bit32 {
                pte & bits(12, 31)
            } else {
                pte & self.addr_mask
            };
            level = level.wrapping_sub(1);
        };

        let wp = regs.cr0 & cr0::WP != 0;
        let denied = if access.user {
            !user || (access.write && !writable)
        } else {
            // Supervisor writes honour R/W only with CR0.WP; supervisor
            // fetches from user pages are refused by SMEP.
            (access.write && !writable && wp) || (access.fetch && user && regs.cr4 & cr4::SMEP != 0)
        };
        if denied || (access.fetch && no_exec) {
            return Err(self.fault(PFERR_PRESENT));
        }

        // Accessed on every entry used, Dirty on the last for a write
        // (SDM Vol. 3A 4.8). A lost cmpxchg means the entry changed under
        // us, so everything derived from it may be stale: walk again.
        let size = self.paging.entry_size();
        for (i, &(pte_gpa, pte)) in used.iter().take(nused).enumerate() {
            let mut new = pte | PTE_A;
            if access.write && i + 1 == nused {
                new |= PTE_D;
            }
            if new != pte && !mem.cmpxchg_pte(pte_gpa, size, pte, new) {
                return Ok(Attempt::Raced);
            }
        }
        Ok(Attempt::Done(gpa))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    const MEM_SIZE: usize = 1 << 20;

    /// 1 MiB of guest memory at guest-physical 0, with hooks to lose a
    /// cmpxchg race.
    struct Mem {
        bytes: Vec<u8>,
        /// Every cmpxchg fails.
        fail_all: bool,
        /// The next cmpxchg at this gpa first stores the given value there
        /// (as another vCPU would), and so fails.
        race: Option<(u64, u64)>,
        cmpxchgs: usize,
    }

    impl Mem {
        fn new() -> Self {
            Mem {
                bytes: std::vec![0; MEM_SIZE],
                fail_all: false,
                race: None,
                cmpxchgs: 0,
            }
        }

        fn range(&self, gpa: u64, size: usize) -> Option<core::ops::Range<usize>> {
            let start = usize::try_from(gpa).ok()?;
            let end = start.checked_add(size)?;
            (end <= self.bytes.len()).then_some(start..end)
        }

        fn get(&self, gpa: u64, size: usize) -> u64 {
            let r = self.range(gpa, size).unwrap();
            self.bytes[r]
                .iter()
                .rev()
                .fold(0, |v, &b| (v << 8) | u64::from(b))
        }

        fn set(&mut self, gpa: u64, size: usize, v: u64) {
            let r = self.range(gpa, size).unwrap();
            for (i, b) in self.bytes[r].iter_mut().enumerate() {
                *b = (v >> (8 * i)) as u8;
            }
        }
    }

    impl GuestMemory for Mem {
        fn read_pte(&mut self, gpa: u64, size: usize) -> Option<u64> {
            self.range(gpa, size)?;
            Some(self.get(gpa, size))
        }

        fn cmpxchg_pte(&mut self, gpa: u64, size: usize, old: u64, new: u64) -> bool {
            self.cmpxchgs += 1;
            if self.fail_all {
                return false;
            }
            if let Some((at, v)) = self.race {
                if at == gpa {
                    self.race = None;
                    self.set(gpa, size, v);
                }
            }
            if self.range(gpa, size).is_none() || self.get(gpa, size) != old {
                return false;
            }
            self.set(gpa, size, new);
            true
        }
    }

    const P: u64 = PTE_P;
    const RW: u64 = PTE_RW;
    const US: u64 = PTE_US;
    const A: u64 = PTE_A;
    const D: u64 = PTE_D;
    const PS: u64 = PTE_PS;
    const XD: u64 = PTE_XD;
    const ALL: u64 = P | RW | US;

    const READ: AccessKind = AccessKind {
        write: false,
        user: false,
        fetch: false,
    };
    const WRITE: AccessKind = AccessKind {
        write: true,
        ..READ
    };
    const FETCH: AccessKind = AccessKind {
        fetch: true,
        ..READ
    };
    const UREAD: AccessKind = AccessKind { user: true, ..READ };
    const UWRITE: AccessKind = AccessKind {
        user: true,
        ..WRITE
    };
    const UFETCH: AccessKind = AccessKind {
        user: true,
        ..FETCH
    };

    const PG: u64 = cr0::PG | 1;

    fn pf(error_code: u32) -> Result<u64, WalkError> {
        Err(WalkError::PageFault { error_code })
    }

    fn regs32(cr4: u64) -> WalkRegs {
        WalkRegs {
            cr0: PG,
            cr3: 0x1000,
            cr4,
            efer: 0,
            maxphyaddr: 36,
        }
    }

    #[test]
    fn paging_off() {
        let mut mem = Mem::new();
        let regs = WalkRegs {
            cr0: 1,
            maxphyaddr: 36,
            ..WalkRegs::default()
        };
        assert_eq!(
            translate(0x1_2345_6789, &regs, WRITE, &mut mem),
            Ok(0x2345_6789)
        );
        assert_eq!(mem.cmpxchgs, 0);
    }

    #[test]
    fn bit32_4k() {
        let mut mem = Mem::new();
        let regs = regs32(0);
        // PDE 1 -> PT at 0x2000; PTE 3 -> frame 0x5000.
        mem.set(0x1000 + 4, 4, 0x2000 | ALL);
        mem.set(0x2000 + 3 * 4, 4, 0x5000 | ALL);
        let gva = (1 << 22) | (3 << 12) | 0x123;
        assert_eq!(translate(gva, &regs, READ, &mut mem), Ok(0x5123));
        assert_eq!(mem.get(0x1004, 4), 0x2000 | ALL | A);
        assert_eq!(mem.get(0x200c, 4), 0x5000 | ALL | A);
        // Bits 63:32 of the linear address do not exist here.
        assert_eq!(
            translate(gva | 0xffff_0000_0000_0000, &regs, WRITE, &mut mem),
            Ok(0x5123)
        );
        assert_eq!(mem.get(0x1004, 4), 0x2000 | ALL | A);
        assert_eq!(mem.get(0x200c, 4), 0x5000 | ALL | A | D);
        // Not present, at either level.
        assert_eq!(translate(gva + 0x1000, &regs, READ, &mut mem), pf(0));
        assert_eq!(
            translate(2 << 22, &regs, UWRITE, &mut mem),
            pf(PFERR_WRITE | PFERR_USER)
        );
        // No I/D bit without SMEP or PAE+NXE.
        assert_eq!(translate(gva + 0x1000, &regs, FETCH, &mut mem), pf(0));
    }

    #[test]
    fn bit32_permissions() {
        let mut mem = Mem::new();
        // PDE 0: user, read-only; PTE 0 user, PTE 1 supervisor.
        mem.set(0x1000, 4, 0x2000 | P | US);
        mem.set(0x2000, 4, 0x5000 | P | RW | US);
        mem.set(0x2004, 4, 0x6000 | P | RW);
        let wp = WalkRegs {
            cr0: PG | cr0::WP,
            ..regs32(0)
        };
        let nowp = regs32(0);
        // Supervisor writes to read-only pages only fault with CR0.WP.
        assert_eq!(translate(0x10, &nowp, WRITE, &mut mem), Ok(0x5010));
        assert_eq!(
            translate(0x10, &wp, WRITE, &mut mem),
            pf(PFERR_PRESENT | PFERR_WRITE)
        );
        // User writes always do.
        assert_eq!(
            translate(0x10, &nowp, UWRITE, &mut mem),
            pf(PFERR_PRESENT | PFERR_WRITE | PFERR_USER)
        );
        assert_eq!(translate(0x10, &nowp, UREAD, &mut mem), Ok(0x5010));
        // Supervisor pages refuse user accesses of any kind.
        assert_eq!(
            translate(0x1010, &nowp, UREAD, &mut mem),
            pf(PFERR_PRESENT | PFERR_USER)
        );
        assert_eq!(translate(0x1010, &nowp, READ, &mut mem), Ok(0x6010));
        // A faulting access sets no Accessed bit.
        let mut mem = Mem::new();
        mem.set(0x1000, 4, 0x2000 | P);
        mem.set(0x2000, 4, 0x5000 | P);
        assert_eq!(
            translate(0x10, &nowp, UREAD, &mut mem),
            pf(PFERR_PRESENT | PFERR_USER)
        );
        assert_eq!(mem.get(0x1000, 4), 0x2000 | P);
        assert_eq!(mem.get(0x2000, 4), 0x5000 | P);
        assert_eq!(mem.cmpxchgs, 0);
    }

    #[test]
    fn bit32_4m_and_pse36() {
        let mut mem = Mem::new();
        let pse = regs32(cr4::PSE);
        // PDE 2: a 4 MiB page at 0x3_0040_0000 (PSE-36 bits 20:13 = 3).
        mem.set(0x1008, 4, 0x0040_0000 | (3 << 13) | ALL | PS);
        let gva = (2 << 22) | 0x12345;
        assert_eq!(translate(gva, &pse, WRITE, &mut mem), Ok(0x3_0041_2345));
        assert_eq!(
            mem.get(0x1008, 4),
            0x0040_0000 | (3 << 13) | ALL | PS | A | D
        );
        // With MAXPHYADDR 32 (the clamped minimum) bits 20:13 are all
        // reserved.
        let narrow = WalkRegs {
            maxphyaddr: 32,
            ..pse
        };
        assert_eq!(
            translate(gva, &narrow, READ, &mut mem),
            pf(PFERR_PRESENT | PFERR_RSVD)
        );
        // MAXPHYADDR 34: bit 13 (-> 32) and 14 (-> 33) are fine, 15 is not.
        let m34 = WalkRegs {
            maxphyaddr: 34,
            ..pse
        };
        assert_eq!(translate(gva, &m34, READ, &mut mem), Ok(0x3_0041_2345));
        mem.set(0x1008, 4, 0x0040_0000 | (4 << 13) | ALL | PS);
        assert_eq!(
            translate(gva, &m34, UREAD, &mut mem),
            pf(PFERR_PRESENT | PFERR_RSVD | PFERR_USER)
        );
        // Bit 21 is always reserved.
        mem.set(0x1008, 4, 0x0060_0000 | ALL | PS);
        assert_eq!(
            translate(gva, &pse, READ, &mut mem),
            pf(PFERR_PRESENT | PFERR_RSVD)
        );
        // Without CR4.PSE, PS is ignored: the PDE points to a page table.
        mem.set(0x1008, 4, 0x3000 | ALL | PS);
        mem.set(0x3000 + 0x12 * 4, 4, 0x7000 | ALL);
        assert_eq!(translate(gva, &regs32(0), READ, &mut mem), Ok(0x7345));
    }

    fn regs_pae(efer: u64) -> WalkRegs {
        WalkRegs {
            cr0: PG | cr0::WP,
            cr3: 0x1020,
            cr4: cr4::PAE,
            efer,
            maxphyaddr: 40,
        }
    }

    /// PDPTE 1 -> PD 0x2000; PDE 0 -> PT 0x3000, PDE 1 a 2 MiB page at
    /// 0x20_0000 (PAT bit 12 set); PTE 5 -> frame 0x9000.
    fn pae_tables(mem: &mut Mem) {
        mem.set(0x1028, 8, 0x2000 | P);
        mem.set(0x2000, 8, 0x3000 | ALL);
        mem.set(0x2008, 8, 0x20_0000 | (1 << 12) | ALL | PS);
        mem.set(0x3000 + 5 * 8, 8, 0x9000 | ALL);
    }

    #[test]
    fn pae() {
        let mut mem = Mem::new();
        pae_tables(&mut mem);
        let regs = regs_pae(0);
        let base = 1 << 30;
        assert_eq!(translate(base | 0x5abc, &regs, WRITE, &mut mem), Ok(0x9abc));
        // No Accessed bit in a PAE PDPTE.
        assert_eq!(mem.get(0x1028, 8), 0x2000 | P);
        assert_eq!(mem.get(0x2000, 8), 0x3000 | ALL | A);
        assert_eq!(mem.get(0x3028, 8), 0x9000 | ALL | A | D);
        // 2 MiB page.
        assert_eq!(
            translate(base | 0x2f_fff0, &regs, UREAD, &mut mem),
            Ok(0x2f_fff0)
        );
        assert_eq!(mem.get(0x2008, 8), 0x20_0000 | (1 << 12) | ALL | PS | A);
        // PDPTE 0 is not present.
        assert_eq!(translate(0x5000, &regs, READ, &mut mem), pf(0));
        // Reserved bits in the PDPTE (R/W is reserved there).
        mem.set(0x1028, 8, 0x2000 | P | RW);
        assert_eq!(
            translate(base, &regs, READ, &mut mem),
            pf(PFERR_PRESENT | PFERR_RSVD)
        );
        mem.set(0x1028, 8, 0x2000 | P | XD);
        assert_eq!(
            translate(base, &regs_pae(efer::NXE), READ, &mut mem),
            pf(PFERR_PRESENT | PFERR_RSVD)
        );
        mem.set(0x1028, 8, 0x2000 | P);
        // Bits 62:52 are reserved in PAE entries (ignored in 4-level).
        mem.set(0x3028, 8, 0x9000 | ALL | (1 << 52));
        assert_eq!(
            translate(base | 0x5000, &regs, READ, &mut mem),
            pf(PFERR_PRESENT | PFERR_RSVD)
        );
        // Above MAXPHYADDR.
        mem.set(0x3028, 8, 0x9000 | ALL | (1 << 40));
        assert_eq!(
            translate(base | 0x5000, &regs, READ, &mut mem),
            pf(PFERR_PRESENT | PFERR_RSVD)
        );
        // A 2 MiB page with bit 13 set.
        mem.set(0x2008, 8, 0x20_0000 | (1 << 13) | ALL | PS);
        assert_eq!(
            translate(base | 0x20_0000, &regs, READ, &mut mem),
            pf(PFERR_PRESENT | PFERR_RSVD)
        );
    }

    #[test]
    fn pae_nx() {
        let mut mem = Mem::new();
        pae_tables(&mut mem);
        let base = 1 << 30;
        mem.set(0x3028, 8, 0x9000 | ALL | XD);
        // XD is reserved without EFER.NXE...
        assert_eq!(
            translate(base | 0x5000, &regs_pae(0), READ, &mut mem),
            pf(PFERR_PRESENT | PFERR_RSVD)
        );
        // ... and with it forbids fetches only, reported with I/D.
        let nxe = regs_pae(efer::NXE);
        assert_eq!(translate(base | 0x5000, &nxe, READ, &mut mem), Ok(0x9000));
        assert_eq!(
            translate(base | 0x5000, &nxe, FETCH, &mut mem),
            pf(PFERR_PRESENT | PFERR_FETCH)
        );
        // XD at a higher level counts too.
        mem.set(0x3028, 8, 0x9000 | ALL);
        mem.set(0x2000, 8, 0x3000 | ALL | XD);
        assert_eq!(
            translate(base | 0x5000, &nxe, UFETCH, &mut mem),
            pf(PFERR_PRESENT | PFERR_FETCH | PFERR_USER)
        );
        // Not present with NXE: I/D is set for a fetch.
        assert_eq!(
            translate(base | 0x6000, &nxe, FETCH, &mut mem),
            pf(PFERR_FETCH)
        );
    }

    fn regs64(cr4: u64, efer: u64) -> WalkRegs {
        WalkRegs {
            cr0: PG | cr0::WP,
            cr3: 0x1000,
            cr4: cr4::PAE | cr4,
            efer: efer::LMA | (1 << 8) | efer,
            maxphyaddr: 40,
        }
    }

    /// The kernel half at 0xffff_8000_0000_0000: PML4E 256 -> PDPT 0x2000;
    /// PDPTE 0 -> PD 0x3000, PDPTE 1 a 1 GiB page at 0x4000_0000;
    /// PDE 0 -> PT 0x4000, PDE 1 a 2 MiB page at 0x60_0000;
    /// PTE 7 -> frame 0xb000.
    const KBASE: u64 = 0xffff_8000_0000_0000;

    fn tables64(mem: &mut Mem) {
        mem.set(0x1000 + 256 * 8, 8, 0x2000 | ALL);
        mem.set(0x2000, 8, 0x3000 | ALL);
        mem.set(0x2008, 8, 0x4000_0000 | ALL | PS);
        mem.set(0x3000, 8, 0x4000 | ALL);
        mem.set(0x3008, 8, 0x60_0000 | ALL | PS);
        mem.set(0x4000 + 7 * 8, 8, 0xb000 | ALL);
    }

    #[test]
    fn four_level() {
        let mut mem = Mem::new();
        tables64(&mut mem);
        let regs = regs64(0, 0);
        assert_eq!(
            translate(KBASE | 0x7123, &regs, WRITE, &mut mem),
            Ok(0xb123)
        );
        assert_eq!(mem.get(0x1800, 8), 0x2000 | ALL | A);
        assert_eq!(mem.get(0x2000, 8), 0x3000 | ALL | A);
        assert_eq!(mem.get(0x3000, 8), 0x4000 | ALL | A);
        assert_eq!(mem.get(0x4038, 8), 0xb000 | ALL | A | D);
        // 2 MiB and 1 GiB pages; D only on the leaf.
        assert_eq!(
            translate(KBASE | 0x2a_bcde, &regs, WRITE, &mut mem),
            Ok(0x6a_bcde)
        );
        assert_eq!(mem.get(0x3008, 8), 0x60_0000 | ALL | PS | A | D);
        assert_eq!(
            translate(KBASE | 0x7fff_ffff, &regs, READ, &mut mem),
            Ok(0x7fff_ffff)
        );
        assert_eq!(mem.get(0x2008, 8), 0x4000_0000 | ALL | PS | A);
        assert_eq!(mem.get(0x2000, 8), 0x3000 | ALL | A);
        // Unmapped at each level.
        assert_eq!(translate(0x1000, &regs, READ, &mut mem), pf(0));
        assert_eq!(
            translate(KBASE | 0x8000_0000, &regs, UREAD, &mut mem),
            pf(PFERR_USER)
        );
        assert_eq!(
            translate(KBASE | 0x40_0000, &regs, WRITE, &mut mem),
            pf(PFERR_WRITE)
        );
        assert_eq!(translate(KBASE | 0x8000, &regs, FETCH, &mut mem), pf(0));
        // Bits 62:52 are ignored (and not part of the address).
        mem.set(0x4038, 8, 0xb000 | ALL | (0x7ff << 52));
        assert_eq!(translate(KBASE | 0x7123, &regs, READ, &mut mem), Ok(0xb123));
    }

    #[test]
    fn four_level_noncanonical() {
        let mut mem = Mem::new();
        tables64(&mut mem);
        let regs = regs64(0, 0);
        assert_eq!(
            translate(0x0000_8000_0000_0000, &regs, READ, &mut mem),
            Err(WalkError::NonCanonical)
        );
        assert_eq!(
            translate(0xfff7_8000_0000_0000, &regs, READ, &mut mem),
            Err(WalkError::NonCanonical)
        );
        assert_eq!(
            translate(0x0000_7fff_ffff_f000, &regs, READ, &mut mem),
            pf(0)
        );
    }

    #[test]
    fn four_level_reserved() {
        let regs = regs64(0, 0);
        let rsvd = pf(PFERR_PRESENT | PFERR_RSVD);
        let cases: &[(u64, u64, u64)] = &[
            // PS in a PML4E.
            (0x1800, 0x2000 | ALL | PS, KBASE),
            // Above MAXPHYADDR (40) at every level.
            (0x1800, 0x2000 | ALL | (1 << 40), KBASE),
            (0x2000, 0x3000 | ALL | (1 << 51), KBASE),
            (0x3000, 0x4000 | ALL | (1 << 45), KBASE | 0x7000),
            (0x4038, 0xb000 | ALL | (1 << 40), KBASE | 0x7000),
            // XD without EFER.NXE.
            (0x4038, 0xb000 | ALL | XD, KBASE | 0x7000),
            // Large-page address bits below the page size.
            (0x3008, 0x60_0000 | ALL | PS | (1 << 20), KBASE | 0x20_0000),
            (
                0x2008,
                0x4000_0000 | ALL | PS | (1 << 13),
                KBASE | 0x4000_0000,
            ),
            (
                0x2008,
                0x4000_0000 | ALL | PS | (1 << 29),
                KBASE | 0x4000_0000,
            ),
        ];
        for &(gpa, entry, gva) in cases {
            let mut mem = Mem::new();
            tables64(&mut mem);
            mem.set(gpa, 8, entry);
            assert_eq!(
                translate(gva, &regs, READ, &mut mem),
                rsvd,
                "{gpa:#x} = {entry:#x}"
            );
            assert_eq!(mem.cmpxchgs, 0);
        }
        // PAT (bit 12) in a 1 GiB page is an attribute, not an address bit.
        let mut mem = Mem::new();
        tables64(&mut mem);
        mem.set(0x2008, 8, 0x4000_0000 | ALL | PS | (1 << 12));
        assert_eq!(
            translate(KBASE | 0x4000_0010, &regs, READ, &mut mem),
            Ok(0x4000_0010)
        );
        // A wider MAXPHYADDR makes bit 45 an address bit.
        let wide = WalkRegs {
            maxphyaddr: 46,
            ..regs
        };
        mem.set(0x4038, 8, 0xb000 | ALL | (1 << 45));
        assert_eq!(
            translate(KBASE | 0x7004, &wide, READ, &mut mem),
            Ok((1 << 45) | 0xb004)
        );
    }

    #[test]
    fn four_level_nx_and_smep() {
        let mut mem = Mem::new();
        tables64(&mut mem);
        let nxe = regs64(0, efer::NXE);
        mem.set(0x4038, 8, 0xb000 | ALL | XD);
        assert_eq!(translate(KBASE | 0x7000, &nxe, READ, &mut mem), Ok(0xb000));
        assert_eq!(
            translate(KBASE | 0x7000, &nxe, FETCH, &mut mem),
            pf(PFERR_PRESENT | PFERR_FETCH)
        );
        mem.set(0x4038, 8, 0xb000 | ALL);
        // SMEP: supervisor fetch from a user page, with I/D even without
        // NXE.
        let smep = regs64(cr4::SMEP, 0);
        assert_eq!(
            translate(KBASE | 0x7000, &smep, FETCH, &mut mem),
            pf(PFERR_PRESENT | PFERR_FETCH)
        );
        assert_eq!(
            translate(KBASE | 0x7000, &smep, UFETCH, &mut mem),
            Ok(0xb000)
        );
        assert_eq!(
            translate(KBASE | 0x7000, &regs64(0, 0), FETCH, &mut mem),
            Ok(0xb000)
        );
        // One supervisor level makes the page a supervisor page.
        mem.set(0x3000, 8, 0x4000 | P | RW);
        assert_eq!(
            translate(KBASE | 0x7000, &smep, FETCH, &mut mem),
            Ok(0xb000)
        );
        assert_eq!(
            translate(KBASE | 0x7000, &smep, UFETCH, &mut mem),
            pf(PFERR_PRESENT | PFERR_FETCH | PFERR_USER)
        );
    }

    #[test]
    fn five_level() {
        let mut mem = Mem::new();
        let regs = regs64(cr4::LA57, 0);
        // PML5E 511 -> PML4 0x5000; PML4E 0 -> the 4-level tables' PDPT.
        tables64(&mut mem);
        mem.set(0x1000 + 511 * 8, 8, 0x5000 | ALL);
        mem.set(0x5000, 8, 0x2000 | ALL);
        let gva = 0xffff_0000_0000_7123u64;
        assert_eq!(translate(gva, &regs, READ, &mut mem), Ok(0xb123));
        assert_eq!(mem.get(0x1ff8, 8), 0x5000 | ALL | A);
        // Canonical at 57 bits, not 48.
        assert_eq!(
            translate(0x0100_0000_0000_0000, &regs, READ, &mut mem),
            Err(WalkError::NonCanonical)
        );
        assert_eq!(
            translate(0x0000_8000_0000_0000, &regs, READ, &mut mem),
            pf(0)
        );
        // PS in a PML5E is reserved; in the PML4E below it too.
        mem.set(0x1ff8, 8, 0x5000 | ALL | PS);
        assert_eq!(
            translate(gva, &regs, READ, &mut mem),
            pf(PFERR_PRESENT | PFERR_RSVD)
        );
        mem.set(0x1ff8, 8, 0x5000 | ALL);
        mem.set(0x5000, 8, 0x2000 | ALL | PS);
        assert_eq!(
            translate(gva, &regs, READ, &mut mem),
            pf(PFERR_PRESENT | PFERR_RSVD)
        );
    }

    #[test]
    fn unbacked_tables() {
        let mut mem = Mem::new();
        let mut regs = regs64(0, 0);
        regs.cr3 = 0x8000_0000;
        assert_eq!(
            translate(KBASE, &regs, READ, &mut mem),
            Err(WalkError::NoMemory {
                gpa: 0x8000_0000 + 256 * 8
            })
        );
        tables64(&mut mem);
        mem.set(0x4038, 8, 0xb000 | ALL);
        mem.set(0x3000, 8, 0x7000_0000 | ALL);
        let regs = regs64(0, 0);
        assert_eq!(
            translate(KBASE | 0x7000, &regs, READ, &mut mem),
            Err(WalkError::NoMemory {
                gpa: 0x7000_0000 + 7 * 8
            })
        );
    }

    #[test]
    fn lost_race_restarts_the_walk() {
        let mut mem = Mem::new();
        tables64(&mut mem);
        // While we set A in the PTE, another vCPU remaps it.
        mem.race = Some((0x4038, 0xc000 | ALL));
        let regs = regs64(0, 0);
        assert_eq!(
            translate(KBASE | 0x7010, &regs, WRITE, &mut mem),
            Ok(0xc010)
        );
        assert_eq!(mem.get(0x4038, 8), 0xc000 | ALL | A | D);
        // Four levels set on the first walk, the PTE's cmpxchg failing,
        // then only the PTE on the second.
        assert_eq!(mem.cmpxchgs, 5);
        // The other vCPU unmaps it instead: the fault is the new state's.
        let mut mem = Mem::new();
        tables64(&mut mem);
        mem.race = Some((0x4038, 0));
        assert_eq!(
            translate(KBASE | 0x7010, &regs, WRITE, &mut mem),
            pf(PFERR_WRITE)
        );
    }

    #[test]
    fn endless_races_give_up() {
        let mut mem = Mem::new();
        tables64(&mut mem);
        mem.fail_all = true;
        let regs = regs64(0, 0);
        assert_eq!(
            translate(KBASE | 0x7000, &regs, READ, &mut mem),
            Err(WalkError::Retry)
        );
        assert_eq!(mem.cmpxchgs, MAX_ATTEMPTS as usize);
        // With A and D already set no cmpxchg is needed at all.
        let mut mem = Mem::new();
        tables64(&mut mem);
        for gpa in [0x1800, 0x2000, 0x3000, 0x4038] {
            let v = mem.get(gpa, 8);
            mem.set(gpa, 8, v | A | D);
        }
        mem.fail_all = true;
        assert_eq!(
            translate(KBASE | 0x7000, &regs, WRITE, &mut mem),
            Ok(0xb000)
        );
        assert_eq!(mem.cmpxchgs, 0);
    }

    /// Random tables and registers: the walker never panics, and a success
    /// lands below MAXPHYADDR.
    #[test]
    fn fuzz() {
        let mut s = 0x1234_5678_9abc_def1u64;
        let mut rnd = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let mut mem = Mem::new();
        for _ in 0..20_000 {
            // Entries pointing mostly into the first 64 KiB.
            // Change 64 random entries in the first 64 KiB: mostly
            // pointers back into it, with random flags.
            for _ in 0..64 {
                let r = rnd();
                let v = if r & 3 == 0 {
                    rnd()
                } else {
                    (r & 0xf000) | (rnd() & 0x8000_0000_0000_0fff)
                };
                mem.set((rnd() % 0x2000) * 8, 8, v);
            }
            let regs = WalkRegs {
                cr0: rnd(),
                cr3: rnd() & 0xf000,
                cr4: rnd(),
                efer: rnd(),
                maxphyaddr: rnd() as u8,
            };
            let access = AccessKind {
                write: rnd() & 1 != 0,
                user: rnd() & 1 != 0,
                fetch: rnd() & 1 != 0,
            };
            mem.fail_all = rnd() & 7 == 0;
            if let Ok(gpa) = translate(rnd(), &regs, access, &mut mem) {
                let m = u32::from(regs.maxphyaddr).clamp(32, 52);
                assert!(gpa < 1 << m, "{gpa:#x} {regs:x?}");
            }
        }
    }
}
