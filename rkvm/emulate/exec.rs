// SPDX-License-Identifier: GPL-2.0

//! Executing a decoded MMIO instruction: which access comes first, and
//! what the read data does to registers and arithmetic flags.
//!
//! Flags follow each instruction's "Flags Affected" section in SDM Vol. 2
//! (and APM Vol. 3 Appendix C). Where the SDM leaves a flag undefined (AF
//! after AND, OR, XOR, TEST) it is cleared, which is what Intel and AMD
//! CPUs, QEMU and KVM's emulator (which runs the host instruction) all
//! produce; the host-CPU comparison test below checks it.

use super::decode::{AluOp, Kind, MmioInsn, Src, UnaryOp};
use super::Gprs;

/// RFLAGS bits (SDM Vol. 1 3.4.3.1).
const CF: u64 = 1 << 0;
const PF: u64 = 1 << 2;
const AF: u64 = 1 << 4;
const ZF: u64 = 1 << 6;
const SF: u64 = 1 << 7;
const OF: u64 = 1 << 11;
/// The status flags these instructions may change; every other RFLAGS
/// bit is left as it was.
pub(super) const ARITH_FLAGS: u64 = CF | PF | AF | ZF | SF | OF;

/// The first memory access an instruction makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Read [`MmioInsn::size`] bytes, then call [`MmioInsn::complete_read`].
    Read,
    /// Write the low [`MmioInsn::size`] bytes of this value; the
    /// instruction is then complete.
    Write(u64),
}

/// All-ones in the low `size` bytes.
fn mask(size: u8) -> u64 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

/// The sign bit of a `size`-byte value.
fn sign_bit(size: u8) -> u64 {
    match size {
        1 => 1 << 7,
        2 => 1 << 15,
        4 => 1 << 31,
        _ => 1 << 63,
    }
}

/// Sign-extends the low `size` bytes of `v` to 64 bits.
pub(super) fn sign_extend(v: u64, size: u8) -> u64 {
    match size {
        1 => i64::from(v as u8 as i8) as u64,
        2 => i64::from(v as u16 as i16) as u64,
        4 => i64::from(v as u32 as i32) as u64,
        _ => v,
    }
}

/// Where a byte register lives: without REX, encodings 4..=7 are AH, CH,
/// DH, BH, bits 8..15 of registers 0..=3 (SDM Vol. 2A 2.2.1.2, Table 3-1).
fn byte_reg(reg: u8, rex: bool) -> (usize, u32) {
    let reg = usize::from(reg & 15);
    if !rex && (4..8).contains(&reg) {
        (reg & 3, 8)
    } else {
        (reg, 0)
    }
}

/// Reads the low `size` bytes of general-purpose register `reg`.
pub(super) fn read_reg(gprs: &Gprs, reg: u8, size: u8, rex: bool) -> u64 {
    if size == 1 {
        let (i, shift) = byte_reg(reg, rex);
        return gprs.get(i).map_or(0, |v| (v >> shift) & 0xff);
    }
    gprs.get(usize::from(reg & 15))
        .map_or(0, |v| v & mask(size))
}

/// Writes `value` to register `reg` as a `size`-byte destination: 8- and
/// 16-bit writes keep the other bits, a 32-bit write zeroes bits 63:32
/// (SDM Vol. 1 3.4.1.1).
pub(super) fn write_reg(gprs: &mut Gprs, reg: u8, size: u8, rex: bool, value: u64) {
    let (i, shift, m) = match size {
        1 => {
            let (i, shift) = byte_reg(reg, rex);
            (i, shift, 0xffu64 << shift)
        }
        4 => (usize::from(reg & 15), 0, u64::MAX),
        _ => (usize::from(reg & 15), 0, mask(size)),
    };
    let value = if size == 4 { value & mask(4) } else { value };
    if let Some(r) = gprs.get_mut(i) {
        *r = (*r & !m) | ((value << shift) & m);
    }
}

/// ZF, SF and PF of a result. PF is the even parity of the low byte only,
/// whatever the operand size.
fn zsp(res: u64, size: u8) -> u64 {
    let mut f = 0;
    if res & mask(size) == 0 {
        f |= ZF;
    }
    if res & sign_bit(size) != 0 {
        f |= SF;
    }
    if (res as u8).count_ones() & 1 == 0 {
        f |= PF;
    }
    f
}

/// Flags of `res = a + b + carry_in`: carry out of the top bit, signed
/// overflow (operands of one sign, result of the other), and the carry out
/// of bit 3 into bit 4 for AF.
fn add_flags(a: u64, b: u64, res: u64, size: u8) -> u64 {
    let sb = sign_bit(size);
    let mut f = zsp(res, size);
    if ((a & b) | ((a ^ b) & !res)) & sb != 0 {
        f |= CF;
    }
    if (a ^ res) & (b ^ res) & sb != 0 {
        f |= OF;
    }
    f | ((a ^ b ^ res) & AF)
}

/// Flags of `res = a - b - borrow_in`: CF is the borrow into the top bit,
/// OF a signed overflow (operands of different signs, result's sign not
/// the minuend's), AF the borrow from bit 4.
fn sub_flags(a: u64, b: u64, res: u64, size: u8) -> u64 {
    let sb = sign_bit(size);
    let mut f = zsp(res, size);
    if ((!a & b) | (!(a ^ b) & res)) & sb != 0 {
        f |= CF;
    }
    if (a ^ b) & (a ^ res) & sb != 0 {
        f |= OF;
    }
    f | ((a ^ b ^ res) & AF)
}

/// `dst op src` on `size`-byte operands: the result (in the low `size`
/// bytes) and the new RFLAGS.
pub(super) fn alu(op: AluOp, size: u8, dst: u64, src: u64, rflags: u64) -> (u64, u64) {
    let m = mask(size);
    let (a, b) = (dst & m, src & m);
    let carry = rflags & CF;
    let (res, flags) = match op {
        AluOp::Add | AluOp::Adc => {
            let c = if op == AluOp::Adc { carry } else { 0 };
            let res = a.wrapping_add(b).wrapping_add(c) & m;
            (res, add_flags(a, b, res, size))
        }
        AluOp::Sub | AluOp::Sbb | AluOp::Cmp => {
            let c = if op == AluOp::Sbb { carry } else { 0 };
            let res = a.wrapping_sub(b).wrapping_sub(c) & m;
            (res, sub_flags(a, b, res, size))
        }
        // CF and OF cleared, AF undefined (cleared, see the file comment).
        AluOp::And => (a & b, zsp(a & b, size)),
        AluOp::Or => (a | b, zsp(a | b, size)),
        AluOp::Xor => (a ^ b, zsp(a ^ b, size)),
    };
    (res, (rflags & !ARITH_FLAGS) | flags)
}

/// A one-operand operation on a `size`-byte value: the result and the new
/// RFLAGS. INC and DEC keep CF; NOT changes no flag; NEG sets CF unless
/// the operand is 0 (it is `0 - x`).
pub(super) fn unary(op: UnaryOp, size: u8, v: u64, rflags: u64) -> (u64, u64) {
    let m = mask(size);
    let a = v & m;
    match op {
        UnaryOp::Inc => {
            let res = a.wrapping_add(1) & m;
            let f = add_flags(a, 1, res, size) & !CF;
            (res, (rflags & !ARITH_FLAGS) | (rflags & CF) | f)
        }
        UnaryOp::Dec => {
            let res = a.wrapping_sub(1) & m;
            let f = sub_flags(a, 1, res, size) & !CF;
            (res, (rflags & !ARITH_FLAGS) | (rflags & CF) | f)
        }
        UnaryOp::Not => (!a & m, rflags),
        UnaryOp::Neg => {
            let res = 0u64.wrapping_sub(a) & m;
            (res, (rflags & !ARITH_FLAGS) | sub_flags(0, a, res, size))
        }
    }
}

impl MmioInsn {
    /// The value of a non-memory source operand, truncated to `size`.
    fn source(&self, src: Src, gprs: &Gprs) -> u64 {
        match src {
            Src::Reg => read_reg(gprs, self.reg, self.size, self.rex),
            Src::Imm(v) => v & mask(self.size),
        }
    }

    /// The instruction's first memory access: `Write(value)` for the
    /// stores (MOV to memory, value in the low [`size`](Self::size)
    /// bytes), `Read` for everything else.
    pub(crate) fn first_access(&self, gprs: &Gprs) -> Access {
        match self.kind {
            Kind::Store(src) => Access::Write(self.source(src, gprs)),
            _ => Access::Read,
        }
    }

    /// Completes an instruction whose [`first_access`](Self::first_access)
    /// was a read that returned `value` (only the low
    /// [`size`](Self::size) bytes are used).
    ///
    /// Updates `gprs` and the arithmetic flags in `rflags` (CF, PF, AF,
    /// ZF, SF, OF; no other bit) as the instruction would. Returns
    /// `Some(v)` when the instruction must now write `v` (low `size` bytes)
    /// to the same address: the read-modify-write forms other than CMP and
    /// TEST. Returns `None` when the instruction is complete, and for
    /// stores, which never read (nothing is changed then).
    pub(crate) fn complete_read(
        &self,
        value: u64,
        gprs: &mut Gprs,
        rflags: &mut u64,
    ) -> Option<u64> {
        let v = value & mask(self.size);
        match self.kind {
            Kind::Store(_) => None,
            Kind::Load { sign } => {
                let x = if sign { sign_extend(v, self.size) } else { v };
                write_reg(gprs, self.reg, self.opsize, self.rex, x);
                None
            }
            Kind::AluMem(op, src) => {
                let (res, f) = alu(op, self.size, v, self.source(src, gprs), *rflags);
                *rflags = f;
                (op != AluOp::Cmp).then_some(res)
            }
            Kind::AluReg(op) => {
                let dst = read_reg(gprs, self.reg, self.size, self.rex);
                let (res, f) = alu(op, self.size, dst, v, *rflags);
                *rflags = f;
                if op != AluOp::Cmp {
                    write_reg(gprs, self.reg, self.size, self.rex, res);
                }
                None
            }
            Kind::Test(src) => {
                let (_, f) = alu(AluOp::And, self.size, v, self.source(src, gprs), *rflags);
                *rflags = f;
                None
            }
            Kind::Xchg => {
                let old = read_reg(gprs, self.reg, self.size, self.rex);
                write_reg(gprs, self.reg, self.size, self.rex, v);
                Some(old)
            }
            Kind::Unary(op) => {
                let (res, f) = unary(op, self.size, v, *rflags);
                *rflags = f;
                Some(res)
            }
        }
    }
}

/// The flags are checked against the host CPU itself: each operation runs
/// as the real instruction on the same operands and incoming flags.
#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use core::arch::asm;

    /// xorshift64 (Marsaglia), biased towards the edge values where flags
    /// change: 0, 1, all-ones, and around the sign bit and bit 4.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn operand(&mut self, size: u8) -> u64 {
            let r = self.next();
            let v = match r % 8 {
                0 => 0,
                1 => 1,
                2 => u64::MAX,
                3 => sign_bit(size),
                4 => sign_bit(size).wrapping_sub(1),
                5 => 0xf ^ (self.next() & 0x30),
                _ => self.next(),
            };
            v & mask(size)
        }
    }

    /// Runs `$ins a, b` at `$size` bytes on the host with incoming flags
    /// `$f`; returns the destination and the flags after.
    macro_rules! host_binary {
        ($ins:literal, $size:expr, $a:expr, $b:expr, $f:expr) => {{
            let (mut a, b, mut f): (u64, u64, u64) = ($a, $b, $f);
            // No `nostack`: the compiler keeps nothing below the stack
            // pointer, and the flags popped have TF/DF/IF/AC as set.
            // SAFETY: register-only arithmetic; push/pop pairs balance.
            unsafe {
                match $size {
                    1 => asm!("push {f}", "popfq", concat!($ins, " {a:l}, {b:l}"), "pushfq", "pop {f}",
                              a = inout(reg) a, b = in(reg) b, f = inout(reg) f),
                    2 => asm!("push {f}", "popfq", concat!($ins, " {a:x}, {b:x}"), "pushfq", "pop {f}",
                              a = inout(reg) a, b = in(reg) b, f = inout(reg) f),
                    4 => asm!("push {f}", "popfq", concat!($ins, " {a:e}, {b:e}"), "pushfq", "pop {f}",
                              a = inout(reg) a, b = in(reg) b, f = inout(reg) f),
                    _ => asm!("push {f}", "popfq", concat!($ins, " {a:r}, {b:r}"), "pushfq", "pop {f}",
                              a = inout(reg) a, b = in(reg) b, f = inout(reg) f),
                }
            }
            (a & mask($size), f)
        }};
    }

    /// Runs `$ins a` like [`host_binary`].
    macro_rules! host_unary {
        ($ins:literal, $size:expr, $a:expr, $f:expr) => {{
            let (mut a, mut f): (u64, u64) = ($a, $f);
            // SAFETY: as in `host_binary`.
            unsafe {
                match $size {
                    1 => asm!("push {f}", "popfq", concat!($ins, " {a:l}"), "pushfq", "pop {f}",
                              a = inout(reg) a, f = inout(reg) f),
                    2 => asm!("push {f}", "popfq", concat!($ins, " {a:x}"), "pushfq", "pop {f}",
                              a = inout(reg) a, f = inout(reg) f),
                    4 => asm!("push {f}", "popfq", concat!($ins, " {a:e}"), "pushfq", "pop {f}",
                              a = inout(reg) a, f = inout(reg) f),
                    _ => asm!("push {f}", "popfq", concat!($ins, " {a:r}"), "pushfq", "pop {f}",
                              a = inout(reg) a, f = inout(reg) f),
                }
            }
            (a & mask($size), f)
        }};
    }

    fn host_alu(op: AluOp, size: u8, a: u64, b: u64, f: u64) -> (u64, u64) {
        match op {
            AluOp::Add => host_binary!("add", size, a, b, f),
            AluOp::Or => host_binary!("or", size, a, b, f),
            AluOp::Adc => host_binary!("adc", size, a, b, f),
            AluOp::Sbb => host_binary!("sbb", size, a, b, f),
            AluOp::And => host_binary!("and", size, a, b, f),
            AluOp::Sub => host_binary!("sub", size, a, b, f),
            AluOp::Xor => host_binary!("xor", size, a, b, f),
            AluOp::Cmp => host_binary!("cmp", size, a, b, f),
        }
    }

    fn host_unary(op: UnaryOp, size: u8, a: u64, f: u64) -> (u64, u64) {
        match op {
            UnaryOp::Inc => host_unary!("inc", size, a, f),
            UnaryOp::Dec => host_unary!("dec", size, a, f),
            UnaryOp::Not => host_unary!("not", size, a, f),
            UnaryOp::Neg => host_unary!("neg", size, a, f),
        }
    }

    /// Incoming flags: random status flags, the reserved bit 1 and IF (which
    /// POPF at CPL 3 leaves alone anyway); TF, DF and AC clear.
    fn flags_in(rng: &mut Rng) -> u64 {
        0x202 | (rng.next() & ARITH_FLAGS)
    }

    const SIZES: [u8; 4] = [1, 2, 4, 8];
    const ALU_OPS: [AluOp; 8] = [
        AluOp::Add,
        AluOp::Or,
        AluOp::Adc,
        AluOp::Sbb,
        AluOp::And,
        AluOp::Sub,
        AluOp::Xor,
        AluOp::Cmp,
    ];
    const UNARY_OPS: [UnaryOp; 4] = [UnaryOp::Inc, UnaryOp::Dec, UnaryOp::Not, UnaryOp::Neg];

    #[test]
    fn alu_matches_host_cpu() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for op in ALU_OPS {
            for size in SIZES {
                for _ in 0..20_000 {
                    let (a, b, f) = (rng.operand(size), rng.operand(size), flags_in(&mut rng));
                    let (hres, hf) = host_alu(op, size, a, b, f);
                    let (res, rf) = alu(op, size, a, b, f);
                    if op != AluOp::Cmp {
                        assert_eq!(res, hres, "{op:?} size {size} {a:#x}, {b:#x} flags {f:#x}");
                    }
                    assert_eq!(
                        rf,
                        hf & !0x10000,
                        "{op:?} size {size} {a:#x}, {b:#x} flags {f:#x}"
                    );
                }
            }
        }
    }

    #[test]
    fn unary_matches_host_cpu() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for op in UNARY_OPS {
            for size in SIZES {
                for _ in 0..20_000 {
                    let (a, f) = (rng.operand(size), flags_in(&mut rng));
                    let (hres, hf) = host_unary(op, size, a, f);
                    let (res, rf) = unary(op, size, a, f);
                    assert_eq!(res, hres, "{op:?} size {size} {a:#x} flags {f:#x}");
                    assert_eq!(rf, hf & !0x10000, "{op:?} size {size} {a:#x} flags {f:#x}");
                }
            }
        }
    }

    #[test]
    fn register_writes() {
        let mut g: Gprs = [0x1122_3344_5566_7788; 16];
        write_reg(&mut g, 0, 4, false, 0xffff_ffff_aabb_ccdd);
        assert_eq!(g[0], 0xaabb_ccdd);
        write_reg(&mut g, 1, 2, false, 0xffff_ffff_ffff_1234);
        assert_eq!(g[1], 0x1122_3344_5566_1234);
        write_reg(&mut g, 2, 1, false, 0x1ab);
        assert_eq!(g[2], 0x1122_3344_5566_77ab);
        // AH..BH without REX, SPL..DIL with it.
        write_reg(&mut g, 7, 1, false, 0xcd);
        assert_eq!(g[3], 0x1122_3344_5566_cd88);
        write_reg(&mut g, 7, 1, true, 0xcd);
        assert_eq!(g[7], 0x1122_3344_5566_77cd);
        assert_eq!(read_reg(&g, 4, 1, false), 0xcc);
        assert_eq!(read_reg(&g, 4, 1, true), 0x88);
        assert_eq!(read_reg(&g, 15, 8, true), 0x1122_3344_5566_7788);
        write_reg(&mut g, 12, 1, true, 0x01);
        assert_eq!(g[12], 0x1122_3344_5566_7701);
    }
}
