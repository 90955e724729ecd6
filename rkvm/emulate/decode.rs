// SPDX-License-Identifier: GPL-2.0

//! Decoding of the memory-operand instructions rkvm emulates on MMIO:
//! prefixes, opcode, ModRM, SIB, displacement and immediate (SDM Vol. 2A
//! chapter 2, APM Vol. 3 chapter 1).
//!
//! The fault already gives the guest-physical address, so the effective
//! address is not computed: ModRM, SIB and displacement are parsed only to
//! find the instruction's length and its register operand.

use super::exec::sign_extend;
use super::Mode;

/// Longest legal instruction, prefixes included (SDM Vol. 2A 2.3.11).
pub(crate) const MAX_INSN_LEN: usize = 15;

/// Why [`decode`] refused a byte string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The instruction continues past the bytes given: fetch more (up to
    /// [`MAX_INSN_LEN`]) and decode again.
    Truncated,
    /// Not an instruction rkvm emulates on MMIO: a register-only form, a
    /// string operation, SSE, or an opcode the decoder does not know at
    /// all (some of which are undefined: unknown opcodes are not sorted
    /// into valid and #UD). The caller reports an emulation failure.
    Unsupported,
    /// The CPU would raise #UD (LOCK on an instruction that cannot be
    /// locked, an undefined ModRM.reg extension, 82h in 64-bit mode) or
    /// #GP (longer than [`MAX_INSN_LEN`] bytes).
    Invalid,
}

/// A segment-override prefix. 64-bit mode ignores all but FS and GS
/// (SDM Vol. 1 3.3.7.1); the prefix is recorded as written either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seg {
    /// 26h.
    Es,
    /// 2Eh.
    Cs,
    /// 36h.
    Ss,
    /// 3Eh.
    Ds,
    /// 64h.
    Fs,
    /// 65h.
    Gs,
}

/// The eight classic ALU operations, in the order of their opcode rows
/// (00h, 08h, ... 38h) and of the ModRM.reg extension of 80h/81h/83h.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AluOp {
    Add,
    Or,
    Adc,
    Sbb,
    And,
    Sub,
    Xor,
    Cmp,
}

impl AluOp {
    fn from_index(i: u8) -> Self {
        match i & 7 {
            0 => AluOp::Add,
            1 => AluOp::Or,
            2 => AluOp::Adc,
            3 => AluOp::Sbb,
            4 => AluOp::And,
            5 => AluOp::Sub,
            6 => AluOp::Xor,
            _ => AluOp::Cmp,
        }
    }
}

/// One-operand read-modify-write operations (FEh/FFh /0 /1, F6h/F7h /2 /3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum UnaryOp {
    Inc,
    Dec,
    Not,
    Neg,
}

/// The non-memory source operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Src {
    /// The register named by ModRM.reg ([`MmioInsn::reg`]).
    Reg,
    /// An immediate, already sign-extended to 64 bits.
    Imm(u64),
}

/// What the instruction does with its memory operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// `MOV mem, src`: one write.
    Store(Src),
    /// `MOV reg, mem`, `MOVZX`, `MOVSX`, `MOVSXD`: one read of `size`
    /// bytes into a register of `opsize` bytes, sign- or zero-extended.
    Load { sign: bool },
    /// `op mem, src`: a read, then a write unless `op` is CMP.
    AluMem(AluOp, Src),
    /// `op reg, mem`: a read; the register takes the result unless CMP.
    AluReg(AluOp),
    /// `TEST mem, src`: a read; flags only.
    Test(Src),
    /// `XCHG mem, reg`: a read, then a write of the register's old value.
    Xchg,
    /// `INC`/`DEC`/`NOT`/`NEG mem`: a read, then a write.
    Unary(UnaryOp),
}

/// A decoded memory-accessing instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MmioInsn {
    pub(super) kind: Kind,
    /// Total length in bytes, prefixes included; at most [`MAX_INSN_LEN`].
    pub(super) len: u8,
    /// Memory operand width: 1, 2, 4 or 8.
    pub(super) size: u8,
    /// Register operand width: equal to `size` except for the widening
    /// loads (MOVZX, MOVSX, MOVSXD).
    pub(super) opsize: u8,
    /// ModRM.reg extended by REX.R (0..=15); 0 (AL/rAX) for the moffs
    /// forms.
    pub(super) reg: u8,
    /// A REX prefix is in effect: byte registers 4..=7 are SPL, BPL, SIL,
    /// DIL instead of AH, CH, DH, BH.
    pub(super) rex: bool,
    /// A LOCK prefix (only accepted where the CPU accepts it).
    pub(super) lock: bool,
    /// The segment-override prefix, if any (the last one wins).
    pub(super) seg: Option<Seg>,
    /// Address size in bytes: 2, 4 or 8.
    pub(super) addr_size: u8,
}

impl MmioInsn {
    /// Total length in bytes, prefixes included: how far RIP advances.
    pub(crate) fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Width of the memory access in bytes: 1, 2, 4 or 8.
    pub(crate) fn size(&self) -> usize {
        usize::from(self.size)
    }

    /// Whether a LOCK prefix was given. MMIO accesses are not atomic with
    /// respect to the device model whatever the prefix says (as in KVM);
    /// this is for callers that want to log or refuse it.
    // Part of the decoded form; the exit handler does not need it yet.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn is_locked(&self) -> bool {
        self.lock
    }

    /// The segment-override prefix, if any.
    // Part of the decoded form; the exit handler does not need it yet.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn segment_override(&self) -> Option<Seg> {
        self.seg
    }

    /// Address size in bytes (2, 4 or 8) after any 67h prefix.
    // Part of the decoded form; the exit handler does not need it yet.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn addr_size(&self) -> usize {
        usize::from(self.addr_size)
    }
}

/// Reads instruction bytes, enforcing the 15-byte limit.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn next(&mut self) -> Result<u8, DecodeError> {
        // A 16th byte makes any instruction illegal (#GP), so the limit
        // comes before the end of the bytes given: a caller that already
        // fetched 15 bytes must hear Invalid, not "fetch more".
        if self.pos >= MAX_INSN_LEN {
            return Err(DecodeError::Invalid);
        }
        let b = *self.bytes.get(self.pos).ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn skip(&mut self, n: usize) -> Result<(), DecodeError> {
        for _ in 0..n {
            self.next()?;
        }
        Ok(())
    }

    /// A little-endian immediate of `n` (1, 2 or 4) bytes, sign-extended to
    /// 64 bits as every immediate of the supported instructions is (an
    /// imm32 with a 64-bit operand size is sign-extended, SDM Vol. 2A
    /// 2.2.1.5).
    fn imm(&mut self, n: usize) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for i in 0..n {
            v |= u64::from(self.next()?) << (8 * i);
        }
        Ok(sign_extend(v, n as u8))
    }

    /// Skips the SIB byte and displacement that follow `modrm` (memory form
    /// only) for the given address size (SDM Vol. 2A 2.1.5, Tables 2-1 and
    /// 2-2; 2.2.1.6 for RIP-relative).
    fn skip_address(&mut self, modrm: u8, addr_size: u8) -> Result<(), DecodeError> {
        let md = modrm >> 6;
        let rm = modrm & 7;
        if addr_size == 2 {
            // 16-bit forms: no SIB; mod 00 r/m 110 is a bare disp16.
            match (md, rm) {
                (0, 6) | (2, _) => self.skip(2),
                (1, _) => self.skip(1),
                _ => Ok(()),
            }
        } else {
            // REX.B does not take part here: r/m 100 always means a SIB and
            // mod 00 with r/m or SIB base 101 always means disp32 without a
            // base (RIP-relative with r/m 101 in 64-bit mode).
            let base = if rm == 4 { self.next()? & 7 } else { rm };
            match (md, base) {
                (0, 5) | (2, _) => self.skip(4),
                (1, _) => self.skip(1),
                _ => Ok(()),
            }
        }
    }
}

/// How wide an immediate follows the ModRM bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Imm {
    None,
    /// ib.
    Byte,
    /// iw or id: 2 bytes for 16-bit operands, else 4.
    Full,
}

/// Where the memory operand comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Operand {
    ModRm,
    /// A0h-A3h: an address-size-wide offset, no ModRM.
    Moffs,
}

/// The decoding plan for an opcode once prefixes are known.
struct Plan {
    kind: Kind,
    operand: Operand,
    imm: Imm,
    /// Byte-sized operation (the opcode's w bit is 0).
    byte: bool,
    /// Memory width when it differs from the operand size (MOVZX etc.).
    mem_size: Option<u8>,
    lockable: bool,
}

impl Plan {
    fn new(kind: Kind, byte: bool) -> Self {
        Plan {
            kind,
            operand: Operand::ModRm,
            imm: Imm::None,
            byte,
            mem_size: None,
            lockable: false,
        }
    }
}

/// Legacy and REX prefixes (SDM Vol. 2A 2.1.1, 2.2.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Prefixes {
    pub(crate) lock: bool,
    /// F2h or F3h (REP/REPNE; what they mean depends on the opcode).
    pub(crate) rep: bool,
    pub(crate) opsize: bool,
    pub(crate) addrsize: bool,
    pub(crate) seg: Option<Seg>,
    /// Only a REX immediately before the opcode counts; a legacy prefix
    /// after it cancels it (SDM Vol. 2A 2.2.1).
    pub(crate) rex: Option<u8>,
    /// Bytes of prefixes: the opcode starts here.
    pub(crate) len: usize,
}

impl Prefixes {
    /// The address size in bytes these prefixes give in `mode` (SDM Vol. 1
    /// 3.6, Table 3-4).
    pub(crate) fn addr_size(&self, mode: Mode) -> u8 {
        match (mode, self.addrsize) {
            (Mode::Long64, false) => 8,
            (Mode::Long64, true) => 4,
            (Mode::Prot32, false) => 4,
            (_, false) => 2,
            (Mode::Prot32, true) => 2,
            (_, true) => 4,
        }
    }
}

/// Reads the prefixes at the start of `bytes` as `mode` does; `Invalid`
/// past 15 bytes, `Truncated` if the opcode is not in `bytes`.
pub(crate) fn decode_prefixes(bytes: &[u8], mode: Mode) -> Result<Prefixes, DecodeError> {
    let mut c = Cursor { bytes, pos: 0 };
    let mut p = Prefixes::default();
    loop {
        let b = c.next()?;
        match b {
            0xf0 => p.lock = true,
            0xf2 | 0xf3 => p.rep = true,
            0x26 => p.seg = Some(Seg::Es),
            0x2e => p.seg = Some(Seg::Cs),
            0x36 => p.seg = Some(Seg::Ss),
            0x3e => p.seg = Some(Seg::Ds),
            0x64 => p.seg = Some(Seg::Fs),
            0x65 => p.seg = Some(Seg::Gs),
            0x66 => p.opsize = true,
            0x67 => p.addrsize = true,
            0x40..=0x4f if mode == Mode::Long64 => {
                p.rex = Some(b);
                continue;
            }
            _ => {
                p.len = c.pos - 1;
                return Ok(p);
            }
        }
        p.rex = None;
    }
}

/// `MOV CRn, reg` (0F 22 /r, SDM Vol. 2B): the control register, the
/// source register (x86 order) and the instruction's length. The operand
/// is always a register (ModRM.mod is ignored, as the CPU does); a LOCK
/// prefix selects CR8 on AMD CPUs in legacy modes and is not supported.
pub(crate) fn decode_mov_to_cr(bytes: &[u8], mode: Mode) -> Result<(u8, u8, usize), DecodeError> {
    let p = decode_prefixes(bytes, mode)?;
    if p.lock {
        return Err(DecodeError::Unsupported);
    }
    let mut c = Cursor { bytes, pos: p.len };
    if c.next()? != 0x0f || c.next()? != 0x22 {
        return Err(DecodeError::Unsupported);
    }
    let modrm = c.next()?;
    let rex = p.rex.unwrap_or(0);
    let cr = ((modrm >> 3) & 7) | ((rex >> 2) & 1) << 3;
    let gpr = (modrm & 7) | (rex & 1) << 3;
    Ok((cr, gpr, c.pos))
}

/// Decodes `MOV DRn, reg` (0F 23, a write) or `MOV reg, DRn` (0F 21): the
/// debug register (REX.R adds 8, which the caller refuses), the GPR
/// (always the register operand, whatever ModRM.mod says), whether it is
/// a write, and the length.
pub(crate) fn decode_mov_dr(bytes: &[u8], mode: Mode) -> Result<(u8, u8, bool, usize), DecodeError> {
    let p = decode_prefixes(bytes, mode)?;
    if p.lock {
        return Err(DecodeError::Unsupported);
    }
    let mut c = Cursor { bytes, pos: p.len };
    if c.next()? != 0x0f {
        return Err(DecodeError::Unsupported);
    }
    let write = match c.next()? {
        0x21 => false,
        0x23 => true,
        _ => return Err(DecodeError::Unsupported),
    };
    let modrm = c.next()?;
    let rex = p.rex.unwrap_or(0);
    let dr = ((modrm >> 3) & 7) | ((rex >> 2) & 1) << 3;
    let gpr = (modrm & 7) | (rex & 1) << 3;
    Ok((dr, gpr, write, c.pos))
}

/// Decodes the instruction at the start of `bytes` (any trailing bytes are
/// ignored) as executed in `mode`.
///
/// Supported, memory forms only: MOV 88h-8Bh, C6h /0, C7h /0, A0h-A3h;
/// MOVZX 0F B6/B7; MOVSX 0F BE/BF; MOVSXD 63h (64-bit mode); ADD, OR, ADC,
/// SBB, AND, SUB, XOR, CMP as `op r/m, reg`, `op reg, r/m` and 80h-83h
/// `op r/m, imm`; TEST 84h, 85h, F6h/F7h /0 (and the /1 alias); XCHG 86h,
/// 87h; INC, DEC FEh/FFh /0 /1; NOT, NEG F6h/F7h /2 /3. Prefixes: 66h,
/// 67h, segment overrides, LOCK (on the lockable forms), REP/REPNE
/// (ignored: they mean nothing to these instructions, and
/// XACQUIRE/XRELEASE are hints), REX in 64-bit mode.
pub(crate) fn decode(bytes: &[u8], mode: Mode) -> Result<MmioInsn, DecodeError> {
    let p = decode_prefixes(bytes, mode)?;
    let mut c = Cursor { bytes, pos: p.len };
    let opcode = c.next()?;

    let rex = p.rex.unwrap_or(0);
    let rex_w = rex & 0x8 != 0;
    let rex_r = (rex >> 2) & 1;
    let long = mode == Mode::Long64;
    let wide16 = matches!(mode, Mode::Real | Mode::Prot16);

    // SDM Vol. 1 3.6, Table 3-4 (64-bit: Vol. 2A 2.2.1.2): REX.W beats 66h.
    let opsize: u8 = if rex_w {
        8
    } else if wide16 != p.opsize {
        2
    } else {
        4
    };
    let addr_size = p.addr_size(mode);

    let plan = match opcode {
        // The ALU rows: 00h-03h, 08h-0Bh, ... 38h-3Bh. Columns 4 and 5 are
        // the AL/rAX, imm forms (no memory), 6 and 7 prefixes or other
        // instructions.
        0x00..=0x3f if opcode & 7 < 4 => {
            let op = AluOp::from_index(opcode >> 3);
            let to_reg = opcode & 2 != 0;
            let kind = if to_reg {
                Kind::AluReg(op)
            } else {
                Kind::AluMem(op, Src::Reg)
            };
            let mut plan = Plan::new(kind, opcode & 1 == 0);
            plan.lockable = !to_reg && op != AluOp::Cmp;
            plan
        }
        // MOVSXD; outside 64-bit mode 63h is ARPL.
        0x63 if long => {
            let mut plan = Plan::new(Kind::Load { sign: true }, false);
            plan.mem_size = Some(opsize.min(4));
            plan
        }
        0x80..=0x83 => {
            // 82h is 80h's alias outside 64-bit mode and #UD in it.
            if opcode == 0x82 && long {
                return Err(DecodeError::Invalid);
            }
            // The operation is in ModRM.reg, known only after the ModRM
            // byte: patched below.
            // 80h and 82h are byte operations; 83h takes a sign-extended ib.
            let mut plan = Plan::new(Kind::AluMem(AluOp::Add, Src::Imm(0)), opcode & 1 == 0);
            plan.imm = if opcode == 0x81 { Imm::Full } else { Imm::Byte };
            plan
        }
        0x84 | 0x85 => Plan::new(Kind::Test(Src::Reg), opcode == 0x84),
        0x86 | 0x87 => {
            let mut plan = Plan::new(Kind::Xchg, opcode == 0x86);
            plan.lockable = true;
            plan
        }
        0x88 | 0x89 => Plan::new(Kind::Store(Src::Reg), opcode == 0x88),
        0x8a | 0x8b => Plan::new(Kind::Load { sign: false }, opcode == 0x8a),
        0xa0..=0xa3 => {
            let kind = if opcode & 2 == 0 {
                Kind::Load { sign: false }
            } else {
                Kind::Store(Src::Reg)
            };
            let mut plan = Plan::new(kind, opcode & 1 == 0);
            plan.operand = Operand::Moffs;
            plan
        }
        0xc6 | 0xc7 => {
            let mut plan = Plan::new(Kind::Store(Src::Imm(0)), opcode == 0xc6);
            plan.imm = if opcode == 0xc6 { Imm::Byte } else { Imm::Full };
            plan
        }
        // Group 3 and groups 4/5: operation in ModRM.reg, patched below.
        0xf6 | 0xf7 | 0xfe | 0xff => Plan::new(Kind::Unary(UnaryOp::Inc), opcode & 1 == 0),
        0x0f => {
            let op2 = c.next()?;
            let sign = match op2 {
                0xb6 | 0xb7 => false,
                0xbe | 0xbf => true,
                _ => return Err(DecodeError::Unsupported),
            };
            let mut plan = Plan::new(Kind::Load { sign }, false);
            // Bit 0 of the second byte picks a byte or word source.
            plan.mem_size = Some(if op2 & 1 == 0 { 1 } else { 2 });
            plan
        }
        _ => return Err(DecodeError::Unsupported),
    };
    finish(c, plan, opcode, p, rex_r, opsize, addr_size)
}

/// Parses what follows the opcode and builds the instruction.
#[allow(clippy::too_many_arguments)]
fn finish(
    mut c: Cursor<'_>,
    mut plan: Plan,
    opcode: u8,
    p: Prefixes,
    rex_r: u8,
    opsize: u8,
    addr_size: u8,
) -> Result<MmioInsn, DecodeError> {
    let mut reg = 0;
    match plan.operand {
        Operand::Moffs => c.skip(usize::from(addr_size))?,
        Operand::ModRm => {
            let modrm = c.next()?;
            let ext = (modrm >> 3) & 7;
            let mem = modrm >> 6 != 3;
            reg = ext | (rex_r << 3);
            // The groups whose ModRM.reg selects the operation.
            match opcode {
                0x80..=0x83 => plan.kind = Kind::AluMem(AluOp::from_index(ext), Src::Imm(0)),
                0xc6 | 0xc7 if ext != 0 => {
                    // C6 F8 / C7 F8 are XABORT / XBEGIN; the other
                    // extensions are undefined.
                    return Err(if ext == 7 && !mem {
                        DecodeError::Unsupported
                    } else {
                        DecodeError::Invalid
                    });
                }
                0xf6 | 0xf7 => match ext {
                    // /1 is an undocumented alias of TEST that Intel and
                    // AMD CPUs execute as /0.
                    0 | 1 => {
                        plan.kind = Kind::Test(Src::Imm(0));
                        plan.imm = if opcode == 0xf6 { Imm::Byte } else { Imm::Full };
                    }
                    2 => plan.kind = Kind::Unary(UnaryOp::Not),
                    3 => plan.kind = Kind::Unary(UnaryOp::Neg),
                    // MUL, IMUL, DIV, IDIV.
                    _ => return Err(DecodeError::Unsupported),
                },
                0xfe | 0xff => match ext {
                    0 => plan.kind = Kind::Unary(UnaryOp::Inc),
                    1 => plan.kind = Kind::Unary(UnaryOp::Dec),
                    // FF /2../6: CALL, JMP, PUSH.
                    2..=6 if opcode == 0xff => return Err(DecodeError::Unsupported),
                    _ => return Err(DecodeError::Invalid),
                },
                _ => {}
            }
            plan.lockable |= match plan.kind {
                Kind::AluMem(op, _) => op != AluOp::Cmp,
                Kind::Unary(_) => true,
                _ => false,
            };
            if !mem {
                // LOCK with a register destination is #UD (SDM Vol. 2A
                // LOCK); any other register form does not touch memory,
                // so it cannot have faulted on MMIO.
                return Err(if p.lock {
                    DecodeError::Invalid
                } else {
                    DecodeError::Unsupported
                });
            }
            c.skip_address(modrm, addr_size)?;
        }
    }
    if p.lock && !plan.lockable {
        return Err(DecodeError::Invalid);
    }
    let imm = match plan.imm {
        Imm::None => 0,
        Imm::Byte => c.imm(1)?,
        Imm::Full => c.imm(if opsize == 2 { 2 } else { 4 })?,
    };
    plan.kind = match plan.kind {
        Kind::Store(Src::Imm(_)) => Kind::Store(Src::Imm(imm)),
        Kind::AluMem(op, Src::Imm(_)) => Kind::AluMem(op, Src::Imm(imm)),
        Kind::Test(Src::Imm(_)) => Kind::Test(Src::Imm(imm)),
        k => k,
    };
    let opsize = if plan.byte { 1 } else { opsize };
    Ok(MmioInsn {
        kind: plan.kind,
        // `pos` never exceeds MAX_INSN_LEN.
        len: c.pos as u8,
        size: plan.mem_size.unwrap_or(opsize),
        opsize,
        reg,
        rex: p.rex.is_some(),
        lock: p.lock,
        seg: p.seg,
        addr_size,
    })
}
