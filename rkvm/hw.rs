// SPDX-License-Identifier: GPL-2.0

//! Turning hardware virtualization on and off on every CPU.
//!
//! rkvm owns SVM or VMX on all online CPUs from module load to unload: it is
//! enabled through a dynamic CPU-hotplug state, so a CPU coming online gets
//! it before it can run a vCPU and a CPU going offline drops it.
//!
//! Ownership is decided by the hardware state itself. If `EFER.SVME` or
//! `CR4.VMXE` is already set on a CPU, another hypervisor (kvm_amd or
//! kvm_intel) owns it and rkvm refuses to load; conversely, while rkvm is
//! loaded, KVM's own enable path finds the bit set and fails with `-EBUSY`.
//! The check and the set happen on the CPU concerned with preemption off in
//! both modules, so the two cannot both win a CPU.
//!
//! # Lock order
//!
//! The hotplug callbacks run with the CPU-hotplug lock held. They take no
//! rkvm lock, so they nest under nothing of rkvm's.

use core::sync::atomic::{AtomicPtr, AtomicU8, Ordering};

use crate::shim::ffi;

use kernel::{alloc::flags::*, cpu, page::Page, prelude::*, str::CStr};

use crate::backend::VcpuBackend;
use crate::mmu::tdp::TdpFormat;
use crate::shim::cpu::PreemptNotifiers;
use crate::svm::{self, SvmCpu, SvmFeatures};
use crate::vmx::{self, controls::VmcsConfig, VmxFeatures};

/// Which virtualization extension rkvm drives, with its decoded features.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Vendor {
    /// AMD SVM with nested paging.
    Svm(SvmFeatures),
    /// Intel VMX with EPT.
    Vmx(VmxFeatures),
}

/// Which backend drives the vCPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    /// AMD SVM.
    Svm,
    /// Intel VMX.
    Vmx,
}

/// The backend in use: written once in `Hardware::enable`, before
/// `/dev/rkvm` exists, so every ioctl sees it set.
static BACKEND: AtomicU8 = AtomicU8::new(0);
const BACKEND_SVM: u8 = 1;
const BACKEND_VMX: u8 = 2;

/// The backend rkvm drives on this host.
pub(crate) fn backend() -> Backend {
    match BACKEND.load(Ordering::Acquire) {
        BACKEND_VMX => Backend::Vmx,
        _ => Backend::Svm,
    }
}

/// Per-CPU state shared with the hotplug callbacks.
///
/// # Invariants
///
/// `regions` has one zeroed page per possible CPU id, prepared for `vendor`
/// (for VMX, each starts with the VMCS revision identifier). A region is
/// handed to the hardware only while its CPU has virtualization enabled.
struct PerCpu {
    vendor: Vendor,
    regions: KVec<Page>,
    /// VMX only: the control words of every VMCS, computed at load.
    vmcs_config: Option<VmcsConfig>,
    /// SVM only: per CPU, the page VMSAVE/VMLOAD keep the host's state in
    /// across a VMRUN, and the ASID allocator.
    svm: KVec<SvmCpu>,
}

/// The `PerCpu` the hotplug callbacks work on. Set (release) before the
/// hotplug state is registered and cleared only after it is removed, so a
/// callback always finds it non-null and alive.
static PER_CPU: AtomicPtr<PerCpu> = AtomicPtr::new(core::ptr::null_mut());

const CPUHP_NAME: &CStr = c"rkvm:online";

/// Virtualization enabled on every online CPU, for as long as this lives.
///
/// # Invariants
///
/// `cpuhp_state` is a registered dynamic hotplug state whose callbacks use
/// `per_cpu`, which `PER_CPU` points to until `drop` removes the state.
pub(crate) struct Hardware {
    cpuhp_state: i32,
    per_cpu: *mut PerCpu,
    /// VMX keeps a vCPU's VMCS on its CPU between entries and clears it
    /// when the thread is scheduled out (see `vmx::vmcs_ops`).
    _notifiers: Option<PreemptNotifiers>,
    _l1d_flush: Option<vmx::L1dFlush>,
}

// SAFETY: `per_cpu` is only dereferenced by the hotplug callbacks and freed
// in `drop` after they are gone; `Hardware` itself holds no thread-bound data.
unsafe impl Send for Hardware {}
// SAFETY: `Hardware` has no methods taking `&self`.
unsafe impl Sync for Hardware {}

impl Hardware {
    /// Detects SVM or VMX on the current CPU, then enables it on every
    /// online CPU. Fails with `ENODEV` when there is neither and `EBUSY`
    /// when another hypervisor owns the hardware.
    pub(crate) fn enable() -> Result<Self> {
        let vendor = detect()?;
        match &vendor {
            Vendor::Svm(f) => {
                pr_info!(
                    "SVM with NPT: {} ASIDs, NRIP save {}, VMCB clean bits {}, flush by ASID {}, decode assists {}\n",
                    f.nr_asids,
                    yes_no(f.nrip_save),
                    yes_no(f.vmcb_clean),
                    yes_no(f.flush_by_asid),
                    yes_no(f.decode_assists)
                );
                if f.exit_after_injected_irq {
                    pr_info!("QEMU TCG's SVM: every injected interrupt is followed by an immediate exit (see Documentation/virt/rkvm/testing.rst)\n");
                }
            }
            Vendor::Vmx(f) => {
                pr_info!(
                    "VMX with EPT and unrestricted guest: VMCS revision {:#x} ({} bytes), VPID {}, EPT A/D {}, 2M pages {}, 1G pages {}\n",
                    f.vmcs_revision,
                    f.vmcs_size,
                    yes_no(f.vpid),
                    yes_no(f.ept_ad),
                    yes_no(f.ept_2m),
                    yes_no(f.ept_1g)
                );
            }
        }
        // Refuse to load on a CPU that lacks a control rkvm needs, rather
        // than fail every VM entry later.
        let vmcs_config = match vendor {
            Vendor::Svm(_) => None,
            Vendor::Vmx(_) => Some(vmx::check_vmcs_config()?),
        };

        let kind = match vendor {
            Vendor::Svm(_) => BACKEND_SVM,
            Vendor::Vmx(_) => BACKEND_VMX,
        };
        BACKEND.store(kind, Ordering::Release);

        let l1d_flush = match vendor {
            Vendor::Vmx(_) => Some(vmx::L1dFlush::setup()?),
            Vendor::Svm(_) => None,
        };

        let nr = cpu::nr_cpu_ids() as usize;
        let mut regions = KVec::with_capacity(nr, GFP_KERNEL)?;
        for _ in 0..nr {
            let page = Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?;
            if let Vendor::Vmx(f) = &vendor {
                vmx::init_vmxon_region(&page, f)?;
            }
            regions.push(page, GFP_KERNEL)?;
        }
        let mut svm = KVec::new();
        if let Vendor::Svm(_) = vendor {
            svm.reserve(nr, GFP_KERNEL)?;
            for _ in 0..nr {
                svm.push(SvmCpu::new()?, GFP_KERNEL)?;
            }
        }
        let per_cpu = KBox::into_raw(KBox::new(
            PerCpu {
                vendor,
                regions,
                vmcs_config,
                svm,
            },
            GFP_KERNEL,
        )?);
        PER_CPU.store(per_cpu, Ordering::Release);

        // SAFETY: `CPUHP_NAME` is a static NUL-terminated string; the
        // callbacks are valid for the module's lifetime and find `PER_CPU`
        // set. On failure, the hotplug core has already rolled back the CPUs
        // it enabled.
        let state = unsafe {
            ffi::rkvm_cpuhp_setup(CPUHP_NAME.as_char_ptr().cast(), cpu_online, cpu_offline)
        };
        if state < 0 {
            PER_CPU.store(core::ptr::null_mut(), Ordering::Release);
            // SAFETY: the pointer came from `KBox::into_raw` above and no
            // callback can use it any more.
            drop(unsafe { KBox::from_raw(per_cpu) });
            return Err(Error::from_errno(state));
        }
        pr_info!("virtualization enabled on all online CPUs\n");
        // INVARIANT: the state is registered and `PER_CPU` points to `per_cpu`.
        Ok(Self {
            cpuhp_state: state,
            per_cpu,
            _notifiers: matches!(vendor, Vendor::Vmx(_)).then(PreemptNotifiers::enable),
            _l1d_flush: l1d_flush,
        })
    }
}

impl Drop for Hardware {
    fn drop(&mut self) {
        // SAFETY: the state was registered in `enable` (type invariant);
        // removing it runs `cpu_offline` on every online CPU and waits.
        unsafe { ffi::rkvm_cpuhp_remove(self.cpuhp_state) };
        PER_CPU.store(core::ptr::null_mut(), Ordering::Release);
        // SAFETY: `per_cpu` came from `KBox::into_raw` and, with the state
        // removed, no callback can reach it.
        drop(unsafe { KBox::from_raw(self.per_cpu) });
        pr_info!("virtualization disabled on all CPUs\n");
    }
}

/// The loaded module's per-CPU state.
fn per_cpu() -> Option<&'static PerCpu> {
    let p = PER_CPU.load(Ordering::Acquire);
    // Every caller runs in an ioctl of a file of rkvm's, whose fops hold a
    // module reference, so the module (and `PER_CPU`) cannot go away.
    // SAFETY: `PER_CPU` is set before `/dev/rkvm` exists and cleared only
    // when the module is unloaded.
    unsafe { p.as_ref() }
}

/// A new vCPU of the backend in use, in its RESET state (`is_bsp`: the
/// bootstrap processor), for a VM whose TDP root is `tdp_root`.
pub(crate) fn new_vcpu(tdp_root: u64, is_bsp: bool) -> Result<KBox<dyn VcpuBackend>> {
    Ok(match backend() {
        Backend::Svm => svm::vcpu::SvmVcpu::new(tdp_root, is_bsp)? as KBox<dyn VcpuBackend>,
        Backend::Vmx => {
            let (f, cfg) = vmx_config().ok_or(EINVAL)?;
            vmx::vcpu::VmxVcpu::new(tdp_root, is_bsp, &f, &cfg)? as KBox<dyn VcpuBackend>
        }
    })
}

/// The largest TDP leaf rkvm installs: 1 GiB where the CPU has it (NPT
/// with the host's 1 GiB pages, EPT where it reports them), else 2 MiB
/// (NPT always; EPT where reported), else 4 KiB.
pub(crate) fn tdp_max_level() -> u32 {
    match per_cpu().map(|p| p.vendor) {
        Some(Vendor::Vmx(f)) if f.ept_1g => 3,
        Some(Vendor::Vmx(f)) if f.ept_2m => 2,
        Some(Vendor::Vmx(_)) => 1,
        Some(Vendor::Svm(f)) if f.npt_1g => 3,
        _ => 2,
    }
}

/// Whether the CPU sets accessed bits in TDP leaves: NPT always, EPT when
/// its A/D flags are enabled (rkvm enables them where the CPU has them).
pub(crate) fn tdp_hw_accessed() -> bool {
    match per_cpu().map(|p| p.vendor) {
        Some(Vendor::Vmx(f)) => f.ept_ad,
        _ => true,
    }
}

/// The SPTE format of the backend in use.
pub(crate) fn tdp_format() -> TdpFormat {
    match backend() {
        Backend::Svm => TdpFormat::Npt,
        Backend::Vmx => TdpFormat::Ept,
    }
}

/// Whether the backend can let guests run RDTSCP: SVM always (it only
/// stops intercepting it), VMX where the CPU allows `ENABLE_RDTSCP`.
pub(crate) fn guest_rdtscp() -> bool {
    match per_cpu().map(|p| p.vendor) {
        Some(Vendor::Svm(_)) => true,
        Some(Vendor::Vmx(_)) => vmx_config().is_some_and(|(_, cfg)| cfg.rdtscp),
        None => false,
    }
}

/// SVM's features, if SVM is the backend.
pub(crate) fn svm_features() -> Option<SvmFeatures> {
    match per_cpu()?.vendor {
        Vendor::Svm(f) => Some(f),
        Vendor::Vmx(_) => None,
    }
}

/// VMX's features and the VMCS control words, if VMX is the backend.
fn vmx_config() -> Option<(VmxFeatures, VmcsConfig)> {
    let p = per_cpu()?;
    match p.vendor {
        Vendor::Svm(_) => None,
        Vendor::Vmx(f) => Some((f, p.vmcs_config?)),
    }
}

/// CPU `cpu`'s SVM state, if SVM is the backend.
pub(crate) fn svm_cpu(cpu: u32) -> Option<&'static SvmCpu> {
    per_cpu()?.svm.get(cpu as usize)
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn detect() -> Result<Vendor> {
    let svm = svm::detect();
    let vmx = vmx::detect();
    match (svm, vmx) {
        (Ok(f), _) => Ok(Vendor::Svm(f)),
        (_, Ok(mut f)) => {
            // As kvm_intel's `eptad`: without A/D flags, page aging
            // access-tracks EPT leaves instead (see `SpteFormat::aged`).
            f.ept_ad &= crate::module_parameters::eptad.value();
            Ok(Vendor::Vmx(f))
        }
        (Err(s), Err(v)) => {
            pr_err!(
                "no usable hardware virtualization: SVM: {}; VMX: {}\n",
                s.reason(),
                v.reason()
            );
            Err(ENODEV)
        }
    }
}

fn with_per_cpu(cpu: u32, f: impl FnOnce(&Vendor, &Page) -> Result) -> i32 {
    let per_cpu = PER_CPU.load(Ordering::Acquire);
    // SAFETY: `PER_CPU` is non-null and alive while the hotplug state that
    // calls us is registered (see `Hardware`), and only read here.
    let Some(per_cpu) = (unsafe { per_cpu.as_ref() }) else {
        return EINVAL.to_errno();
    };
    let Some(region) = per_cpu.regions.get(cpu as usize) else {
        return EINVAL.to_errno();
    };
    match f(&per_cpu.vendor, region) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// Hotplug "online" callback: runs on `cpu` itself.
unsafe extern "C" fn cpu_online(cpu: u32) -> i32 {
    with_per_cpu(cpu, |vendor, region| match vendor {
        Vendor::Svm(_) => svm::enable_cpu(cpu, region),
        Vendor::Vmx(f) => vmx::enable_cpu(cpu, region, f),
    })
}

/// Hotplug "offline" callback: runs on `cpu` itself.
unsafe extern "C" fn cpu_offline(cpu: u32) -> i32 {
    with_per_cpu(cpu, |vendor, _| {
        match vendor {
            Vendor::Svm(_) => svm::disable_cpu(cpu),
            Vendor::Vmx(_) => vmx::disable_cpu(cpu),
        }
        Ok(())
    })
}
