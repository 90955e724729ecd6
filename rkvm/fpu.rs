// SPDX-License-Identifier: GPL-2.0

//! The guest's x87/SSE state as `KVM_GET_FPU`/`KVM_SET_FPU` see it:
//! `struct kvm_fpu`, a view of the FXSAVE image.
//!
//! KVM copies the x87 registers, control/status/tag words, last opcode and
//! pointers and the XMM registers, but not MXCSR: `KVM_GET_FPU` always
//! reports `mxcsr` (and the padding) as 0 and `KVM_SET_FPU` ignores it.
//! rkvm does the same, so a VMM sees identical answers.
//!
//! Pure logic (only `core`), tested on the host.

use crate::abi::field as le;

/// Size of `struct kvm_fpu`.
pub(crate) const FPU_SIZE: usize = 416;

const FPR: usize = 0;
const FCW: usize = 128;
const FSW: usize = 130;
const FTWX: usize = 132;
const LAST_OPCODE: usize = 134;
const LAST_IP: usize = 136;
const LAST_DP: usize = 144;
const XMM: usize = 152;

/// x87 control word after FNINIT (and after RESET, as KVM reports it).
const FCW_INIT: u16 = 0x37f;

/// The FXSAVE fields `struct kvm_fpu` carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fpu {
    /// ST0..ST7 (80 bits each, in 16-byte slots).
    pub(crate) fpr: [u8; 128],
    pub(crate) fcw: u16,
    pub(crate) fsw: u16,
    /// Abridged tag word (one bit per register, 0 = empty).
    pub(crate) ftwx: u8,
    pub(crate) last_opcode: u16,
    pub(crate) last_ip: u64,
    pub(crate) last_dp: u64,
    /// XMM0..XMM15.
    pub(crate) xmm: [u8; 256],
}

impl Fpu {
    /// The state of a new vCPU: empty registers, FNINIT's control word.
    pub(crate) const fn reset() -> Self {
        Self {
            fpr: [0; 128],
            fcw: FCW_INIT,
            fsw: 0,
            ftwx: 0,
            last_opcode: 0,
            last_ip: 0,
            last_dp: 0,
            xmm: [0; 256],
        }
    }

    /// Decodes `struct kvm_fpu`; MXCSR and padding are ignored, as by KVM.
    pub(crate) fn from_bytes(b: &[u8; FPU_SIZE]) -> Self {
        Self {
            fpr: le(b, FPR),
            fcw: u16::from_ne_bytes(le(b, FCW)),
            fsw: u16::from_ne_bytes(le(b, FSW)),
            ftwx: b[FTWX],
            last_opcode: u16::from_ne_bytes(le(b, LAST_OPCODE)),
            last_ip: u64::from_ne_bytes(le(b, LAST_IP)),
            last_dp: u64::from_ne_bytes(le(b, LAST_DP)),
            xmm: le(b, XMM),
        }
    }

    /// Encodes `struct kvm_fpu`, with MXCSR and padding 0.
    pub(crate) fn to_bytes(&self) -> [u8; FPU_SIZE] {
        let mut b = [0u8; FPU_SIZE];
        b[FPR..FPR + 128].copy_from_slice(&self.fpr);
        b[FCW..FCW + 2].copy_from_slice(&self.fcw.to_ne_bytes());
        b[FSW..FSW + 2].copy_from_slice(&self.fsw.to_ne_bytes());
        b[FTWX] = self.ftwx;
        b[LAST_OPCODE..LAST_OPCODE + 2].copy_from_slice(&self.last_opcode.to_ne_bytes());
        b[LAST_IP..LAST_IP + 8].copy_from_slice(&self.last_ip.to_ne_bytes());
        b[LAST_DP..LAST_DP + 8].copy_from_slice(&self.last_dp.to_ne_bytes());
        b[XMM..XMM + 256].copy_from_slice(&self.xmm);
        b
    }
}

/// Size of an FXSAVE image.
pub(crate) const FXSAVE_SIZE: usize = 512;
/// Offsets in the FXSAVE image (Intel SDM vol. 1, 10.5.1, 64-bit format).
mod fx {
    pub(super) const FCW: usize = 0;
    pub(super) const FSW: usize = 2;
    pub(super) const FTW: usize = 4;
    pub(super) const FOP: usize = 6;
    pub(super) const FIP: usize = 8;
    pub(super) const FDP: usize = 16;
    pub(super) const MXCSR: usize = 24;
    pub(super) const ST: usize = 32;
    pub(super) const XMM: usize = 160;
}
/// MXCSR after RESET: all exceptions masked, round to nearest.
pub(crate) const MXCSR_DEFAULT: u32 = 0x1f80;

impl Fpu {
    /// Writes this state into an FXSAVE image, keeping the image's MXCSR
    /// (which `struct kvm_fpu` does not carry).
    pub(crate) fn store_fxsave(&self, img: &mut [u8; FXSAVE_SIZE]) {
        img[fx::FCW..fx::FCW + 2].copy_from_slice(&self.fcw.to_ne_bytes());
        img[fx::FSW..fx::FSW + 2].copy_from_slice(&self.fsw.to_ne_bytes());
        img[fx::FTW] = self.ftwx;
        img[fx::FOP..fx::FOP + 2].copy_from_slice(&self.last_opcode.to_ne_bytes());
        img[fx::FIP..fx::FIP + 8].copy_from_slice(&self.last_ip.to_ne_bytes());
        img[fx::FDP..fx::FDP + 8].copy_from_slice(&self.last_dp.to_ne_bytes());
        img[fx::ST..fx::ST + 128].copy_from_slice(&self.fpr);
        img[fx::XMM..fx::XMM + 256].copy_from_slice(&self.xmm);
    }

    /// Reads the state out of an FXSAVE image.
    pub(crate) fn from_fxsave(img: &[u8; FXSAVE_SIZE]) -> Self {
        Self {
            fpr: le(img, fx::ST),
            fcw: u16::from_ne_bytes(le(img, fx::FCW)),
            fsw: u16::from_ne_bytes(le(img, fx::FSW)),
            ftwx: img[fx::FTW],
            last_opcode: u16::from_ne_bytes(le(img, fx::FOP)),
            last_ip: u64::from_ne_bytes(le(img, fx::FIP)),
            last_dp: u64::from_ne_bytes(le(img, fx::FDP)),
            xmm: le(img, fx::XMM),
        }
    }

    /// An FXSAVE image of the RESET state.
    pub(crate) fn reset_fxsave() -> [u8; FXSAVE_SIZE] {
        let mut img = [0u8; FXSAVE_SIZE];
        Self::reset().store_fxsave(&mut img);
        img[fx::MXCSR..fx::MXCSR + 4].copy_from_slice(&MXCSR_DEFAULT.to_ne_bytes());
        img
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fxsave_round_trip_keeps_mxcsr() {
        let mut img = Fpu::reset_fxsave();
        let mut f = Fpu::reset();
        f.xmm[17] = 0x5a;
        f.fpr[3] = 7;
        f.last_ip = 0x1234_5678_9abc;
        f.store_fxsave(&mut img);
        assert_eq!(Fpu::from_fxsave(&img), f);
        assert_eq!(u32::from_ne_bytes(le(&img, fx::MXCSR)), MXCSR_DEFAULT);
    }

    use super::*;

    #[test]
    fn reset_is_kvms() {
        // A fresh vCPU on stock KVM: FCW 0x37f, every other byte 0.
        let b = Fpu::reset().to_bytes();
        assert_eq!(u16::from_ne_bytes([b[FCW], b[FCW + 1]]), 0x37f);
        assert_eq!(b.iter().filter(|&&x| x != 0).count(), 2);
    }

    #[test]
    fn round_trip_drops_mxcsr_and_padding() {
        let mut b = [0u8; FPU_SIZE];
        for (i, x) in b.iter_mut().enumerate() {
            *x = (i % 251) as u8 + 1;
        }
        let f = Fpu::from_bytes(&b);
        let out = f.to_bytes();
        // Everything but pad1 (133), mxcsr and pad2 (408..416) survives.
        for i in 0..FPU_SIZE {
            let kept = i != 133 && i < 408;
            assert_eq!(out[i], if kept { b[i] } else { 0 }, "byte {i}");
        }
        assert_eq!(Fpu::from_bytes(&out), f);
    }
}
