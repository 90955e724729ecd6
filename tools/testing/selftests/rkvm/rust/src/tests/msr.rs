// SPDX-License-Identifier: GPL-2.0

//! MSRs through kvm-ioctls: the index list, KVM_SET_MSRS/KVM_GET_MSRS
//! round trips, the feature MSRs of the system fd, and the machine-check
//! set-up (kvm-ioctls has no wrapper for it: raw ioctls on its fds).

use kvm_bindings::{KVM_CAP_GET_MSR_FEATURES, KVM_CAP_MCE, KVMIO, Msrs, kvm_msr_entry};
use kvm_ioctls::VcpuFd;
use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ref};
use vmm_sys_util::{ioctl_ior_nr, ioctl_iow_nr};

use crate::harness::{Ctx, TestResult};
use crate::util::{ename, errno, get, new_vm};

ioctl_ior_nr!(KVM_X86_GET_MCE_CAP_SUPPORTED, KVMIO, 0x9d, u64);
ioctl_iow_nr!(KVM_X86_SETUP_MCE, KVMIO, 0x9c, u64);

const MSR_UCODE_REV: u32 = 0x8b;
const MSR_ARCH_CAPABILITIES: u32 = 0x10a;
const MSR_MCG_CAP: u32 = 0x179;
const MSR_MCG_CTL: u32 = 0x17b;
const MSR_MC0_CTL: u32 = 0x400;
const MCG_CTL_P: u64 = 1 << 8;
const MCG_SER_P: u64 = 1 << 24;
const ARCH_CAP_PSCHANGE_MC_NO: u64 = 1 << 6;

pub(crate) const MSR_TSC: u32 = 0x10;
pub(crate) const MSR_SYSENTER_CS: u32 = 0x174;
pub(crate) const MSR_SYSENTER_ESP: u32 = 0x175;
pub(crate) const MSR_SYSENTER_EIP: u32 = 0x176;
pub(crate) const MSR_MISC_ENABLE: u32 = 0x1a0;
pub(crate) const MSR_PAT: u32 = 0x277;
pub(crate) const MSR_EFER: u32 = 0xc000_0080;
pub(crate) const MSR_STAR: u32 = 0xc000_0081;
pub(crate) const MSR_LSTAR: u32 = 0xc000_0082;
pub(crate) const MSR_CSTAR: u32 = 0xc000_0083;
pub(crate) const MSR_SFMASK: u32 = 0xc000_0084;
pub(crate) const MSR_FS_BASE: u32 = 0xc000_0100;
pub(crate) const MSR_GS_BASE: u32 = 0xc000_0101;
pub(crate) const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// `Msrs` with one zeroed entry per index, for a read.
fn msrs_to_read(indices: &[u32]) -> Result<Msrs, String> {
    let entries: Vec<kvm_msr_entry> = indices
        .iter()
        .map(|&index| kvm_msr_entry {
            index,
            ..Default::default()
        })
        .collect();
    Msrs::from_entries(&entries).map_err(|e| format!("Msrs: {e:?}"))
}

pub(crate) fn get_msr_values(vcpu: &VcpuFd, indices: &[u32]) -> Result<Vec<u64>, String> {
    let mut msrs = msrs_to_read(indices)?;
    let n = get("get_msrs", vcpu.get_msrs(&mut msrs))?;
    if n != indices.len() {
        return Err(format!(
            "get_msrs({indices:x?}) did {n}, want {}",
            indices.len()
        ));
    }
    Ok(msrs.as_slice().iter().map(|e| e.data).collect())
}

pub(crate) fn set_msr_values(vcpu: &VcpuFd, vals: &[(u32, u64)]) -> TestResult {
    let entries: Vec<kvm_msr_entry> = vals
        .iter()
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    let msrs = Msrs::from_entries(&entries).map_err(|e| format!("Msrs: {e:?}"))?;
    let n = get("set_msrs", vcpu.set_msrs(&msrs))?;
    if n != vals.len() {
        return Err(format!("set_msrs({vals:x?}) did {n}, want {}", vals.len()));
    }
    Ok(())
}

pub(crate) fn msrs_index_list_and_round_trip(ctx: &Ctx) -> TestResult {
    // Stock KVM leaves EFER, FS_BASE and GS_BASE out of its list (the VMM
    // has them in the sregs) but still takes them in KVM_GET_MSRS and
    // KVM_SET_MSRS; rkvm lists them too.
    const SREGS_MSRS: [u32; 3] = [MSR_EFER, MSR_FS_BASE, MSR_GS_BASE];
    const LISTED: [(u32, &str); 14] = [
        (MSR_EFER, "EFER"),
        (MSR_STAR, "STAR"),
        (MSR_LSTAR, "LSTAR"),
        (MSR_CSTAR, "CSTAR"),
        (MSR_SFMASK, "SFMASK"),
        (MSR_KERNEL_GS_BASE, "KERNEL_GS_BASE"),
        (MSR_FS_BASE, "FS_BASE"),
        (MSR_GS_BASE, "GS_BASE"),
        (MSR_SYSENTER_CS, "SYSENTER_CS"),
        (MSR_SYSENTER_ESP, "SYSENTER_ESP"),
        (MSR_SYSENTER_EIP, "SYSENTER_EIP"),
        (MSR_TSC, "TSC"),
        (MSR_PAT, "PAT"),
        (MSR_MISC_ENABLE, "MISC_ENABLE"),
    ];
    let kvm = ctx.open()?;
    let list = get("get_msr_index_list", kvm.get_msr_index_list())?;
    let missing: Vec<&str> = LISTED
        .iter()
        .filter(|(i, _)| !list.as_slice().contains(i))
        .filter(|(i, _)| ctx.rkvm || !SREGS_MSRS.contains(i))
        .map(|(_, name)| *name)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "get_msr_index_list ({} MSRs) lacks {}",
            list.as_slice().len(),
            missing.join(", ")
        ));
    }
    let vm = new_vm(&kvm)?;
    let vcpu = get("create_vcpu(0)", vm.create_vcpu(0))?;
    let all: Vec<u32> = LISTED.iter().map(|(i, _)| *i).collect();
    get_msr_values(&vcpu, &all)?;
    // Every entry a valid memory type (2 and 3 are reserved): WC in
    // entry 0, then the reset value.
    const PATS: [u64; 2] = [0x0007_0406_0007_0401, 0x0007_0406_0007_0406];
    for i in 0..ctx.iters(8) {
        let k = i as u64;
        let vals = [
            (MSR_STAR, 0x0023_0010_0000_0000 + (k << 32)),
            (MSR_LSTAR, 0xffff_ffff_8100_0000 + (k << 12)),
            (MSR_SFMASK, 0x4_7700 | (k & 1)),
            (MSR_PAT, PATS[i % 2]),
            (MSR_SYSENTER_CS, 0x10 + 8 * k),
        ];
        set_msr_values(&vcpu, &vals).map_err(|e| format!("iteration {i}: {e}"))?;
        let want: Vec<u64> = vals.iter().map(|(_, v)| *v).collect();
        let idx: Vec<u32> = vals.iter().map(|(i, _)| *i).collect();
        let got = get_msr_values(&vcpu, &idx).map_err(|e| format!("iteration {i}: {e}"))?;
        if got != want {
            return Err(format!(
                "iteration {i}: get_msrs {got:x?} after set_msrs {want:x?}"
            ));
        }
    }
    Ok(())
}

/// The feature MSRs through `Kvm::get_msr_feature_index_list` and
/// `Kvm::get_msrs`, and a vCPU's machine-check registers after
/// `KVM_X86_SETUP_MCE`, read and refused through `VcpuFd::get_msrs`/
/// `set_msrs`.
pub(crate) fn msr_features_and_mce(ctx: &Ctx) -> TestResult {
    let kvm = ctx.open()?;
    if kvm.check_extension_raw(KVM_CAP_GET_MSR_FEATURES.into()) != 1 {
        return Err("KVM_CAP_GET_MSR_FEATURES is not 1".into());
    }
    let list = get("get_msr_feature_index_list", kvm.get_msr_feature_index_list())?;
    let list = list.as_slice();
    for want in [MSR_UCODE_REV, MSR_ARCH_CAPABILITIES] {
        if !list.contains(&want) {
            return Err(format!("feature list {list:x?} lacks {want:#x}"));
        }
    }
    let mut msrs = msrs_to_read(list)?;
    let n = get("Kvm::get_msrs", kvm.get_msrs(&mut msrs))?;
    if n != list.len() {
        return Err(format!("Kvm::get_msrs read {n} of {} feature MSRs", list.len()));
    }
    let arch_cap = msrs
        .as_slice()
        .iter()
        .find(|e| e.index == MSR_ARCH_CAPABILITIES)
        .map_or(0, |e| e.data);
    if arch_cap & ARCH_CAP_PSCHANGE_MC_NO == 0 {
        return Err(format!("ARCH_CAPABILITIES {arch_cap:#x} lacks PSCHANGE_MC_NO"));
    }

    if kvm.check_extension_raw(KVM_CAP_MCE.into()) != 32 {
        return Err("KVM_CAP_MCE is not 32".into());
    }
    let mut supported = 0u64;
    // SAFETY: the ioctl writes one u64 into `supported`.
    if unsafe { ioctl_with_mut_ref(&kvm, KVM_X86_GET_MCE_CAP_SUPPORTED(), &mut supported) } != 0 {
        return Err(format!("KVM_X86_GET_MCE_CAP_SUPPORTED: {}", ename(errno())));
    }
    if supported & (MCG_CTL_P | MCG_SER_P) != MCG_CTL_P | MCG_SER_P {
        return Err(format!("MCE capabilities {supported:#x} lack MCG_CTL_P or MCG_SER_P"));
    }
    let vm = new_vm(&kvm)?;
    let vcpu = get("create_vcpu(0)", vm.create_vcpu(0))?;
    let setup = |cap: u64| {
        // SAFETY: the ioctl reads one u64 from `cap`.
        if unsafe { ioctl_with_ref(&vcpu, KVM_X86_SETUP_MCE(), &cap) } == 0 { 0 } else { errno() }
    };
    if setup(0) != libc::EINVAL || setup(33) != libc::EINVAL {
        return Err("KVM_X86_SETUP_MCE took 0 or 33 banks".into());
    }
    if setup(3 | MCG_CTL_P) != 0 {
        return Err(format!("KVM_X86_SETUP_MCE(3 banks, MCG_CTL_P): {}", ename(errno())));
    }
    let got = get_msr_values(&vcpu, &[MSR_MCG_CAP, MSR_MCG_CTL, MSR_MC0_CTL + 8])?;
    if got != [3 | MCG_CTL_P, !0, !0] {
        return Err(format!("MCG_CAP, MCG_CTL, MC2_CTL after setup: {got:x?}"));
    }
    // MCi_CTL takes 0 or all-ones only; bank 3 does not exist.
    for (index, data) in [(MSR_MC0_CTL, 0xff), (MSR_MC0_CTL + 12, 0)] {
        let msrs = Msrs::from_entries(&[kvm_msr_entry {
            index,
            data,
            ..Default::default()
        }])
        .map_err(|e| format!("Msrs: {e:?}"))?;
        if get("set_msrs", vcpu.set_msrs(&msrs))? != 0 {
            return Err(format!("set_msrs took {data:#x} for MSR {index:#x}"));
        }
    }
    set_msr_values(&vcpu, &[(MSR_MC0_CTL, 0)])?;
    Ok(())
}
