// SPDX-License-Identifier: GPL-2.0

//! The VMCS region and the VMX instructions that use it (VMCLEAR, VMPTRLD,
//! VMREAD, VMWRITE, VMLAUNCH/VMRESUME, INVEPT, INVVPID), behind safe types:
//! the `unsafe` of the VMX backend's VMCS handling stays in this file,
//! except the one world switch, whose contract is the host state.
//!
//! VMREAD and VMWRITE act on whichever VMCS is current on the CPU that
//! executes them. [`CurrentVmcs`] is the proof that it is the caller's: it
//! is made by VMPTRLD of a [`VmcsRegion`] the caller borrows mutably, with
//! IRQs off on this CPU for as long as it lives (so the task cannot move to
//! another CPU and nothing else on this CPU can load another VMCS), and it
//! VMCLEARs the region when it goes. A region is thus current on no CPU
//! outside a `CurrentVmcs`, and freeing one never needs a VMCLEAR on
//! another CPU.

use core::fmt;

use core::ptr::NonNull;

use kernel::{page::Page, prelude::*};

use crate::{
    shim::{cpu::IrqsOff, ffi, x86},
    vmx::{
        features::VmxFeatures,
        vmcs::{exit32, Field16, Field32, Field64, FieldNat, InsnError, Outcome},
    },
};

/// How a VMX instruction failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// It faulted: the CPU is not in VMX operation.
    Fault,
    /// VMfailInvalid.
    Invalid,
    /// VMfailValid, with the VM-instruction error number.
    Valid(InsnError),
}

/// A VMX instruction that failed, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VmxInsnFailure {
    pub(crate) insn: &'static str,
    /// The field's encoding, for VMREAD and VMWRITE.
    pub(crate) field: Option<u32>,
    pub(crate) how: Failure,
}

impl fmt::Display for VmxInsnFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.insn)?;
        if let Some(field) = self.field {
            write!(f, " of field {field:#06x}")?;
        }
        match self.how {
            Failure::Fault => f.write_str(" faulted (VMX is off on this CPU)"),
            Failure::Invalid => f.write_str(" failed: VMfailInvalid"),
            Failure::Valid(e) => write!(f, " failed: {e}"),
        }
    }
}

type VmxResult<T = ()> = core::result::Result<T, VmxInsnFailure>;

/// Turns a helper's return value (a negative errno for a fault, else the
/// flags the instruction left) into a result; `field` is the encoding a
/// VMREAD or VMWRITE was given.
fn check(insn: &'static str, field: Option<u32>, ret: i32) -> VmxResult {
    let how = if ret < 0 {
        Failure::Fault
    } else {
        match Outcome::from_rflags(ret as u64) {
            Outcome::Succeed => return Ok(()),
            Outcome::FailInvalid => Failure::Invalid,
            Outcome::FailValid => {
                // VMfailValid means there is a current VMCS: its error field
                // says why. Reading it changes nothing.
                let mut err = 0u64;
                // SAFETY: `err` is a valid place for the value; a fault is
                // caught by the helper.
                unsafe { ffi::rkvm_vmread(exit32::VM_INSTRUCTION_ERROR.0 as u64, &mut err) };
                Failure::Valid(InsnError(err as u32))
            }
        }
    };
    Err(VmxInsnFailure { insn, field, how })
}

/// A VMCS region: one zeroed page that starts with the VMCS revision
/// identifier (SDM 25.2), and where it is current.
///
/// Outside a run (`begin_run` .. `end_run`) the region is current on no
/// CPU except while a [`CurrentVmcs`] borrows it, which VMCLEARs it when it
/// goes. During a run it stays current on the CPU its task runs on, so
/// that entries after the first VMRESUME it without reloading: a preempt
/// notifier VMCLEARs it when the task is scheduled out (to move to another
/// CPU, or because its CPU goes offline), and `end_run` does at the end.
///
/// # Invariants
///
/// `pin` is a live `struct rkvm_vmcs_pin` owned here, naming `phys`; its
/// CPU is where the region is current (or none), which is the CPU the
/// owning task runs on: set only with IRQs off by the task itself, cleared
/// on sched-out while `registered`, and before IRQs come back on otherwise.
/// If a VMCLEAR failed (`stuck`), the page may still be current somewhere
/// and is never freed.
pub(crate) struct VmcsRegion {
    page: Option<Page>,
    phys: u64,
    stuck: bool,
    pin: NonNull<ffi::VmcsPin>,
    registered: bool,
}

// SAFETY: the pin is only touched by the owning task (through `&mut self`)
// and by that task's own sched-out notifier, never by another thread.
unsafe impl Send for VmcsRegion {}
// SAFETY: `&VmcsRegion` gives no access to anything.
unsafe impl Sync for VmcsRegion {}

impl VmcsRegion {
    /// Allocates a region for a CPU whose VMX features are `f`.
    pub(crate) fn new(f: &VmxFeatures) -> Result<Self> {
        let page = Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?;
        // Bit 31 of the identifier stays 0: an ordinary VMCS, not a shadow
        // one. The VMXON region has the same header.
        super::init_vmxon_region(&page, f)?;
        let phys = x86::page_phys(&page);
        // SAFETY: allocation only; the pin names `phys`, current nowhere.
        let pin = NonNull::new(unsafe { ffi::rkvm_vmcs_pin_alloc(phys) }).ok_or(ENOMEM)?;
        // INVARIANT: no VMX instruction has seen the page yet.
        Ok(Self {
            page: Some(page),
            phys,
            stuck: false,
            pin,
            registered: false,
        })
    }

    /// Starts a run of the calling task: from now on the region may stay
    /// current on its CPU between entries.
    pub(crate) fn begin_run(&mut self) {
        if !self.registered {
            // SAFETY: the pin is live (invariant); the notifier is removed
            // in `end_run` or `drop`, before the pin is freed.
            unsafe { ffi::rkvm_vmcs_pin_register(self.pin.as_ptr()) };
            self.registered = true;
        }
    }

    /// Ends the run: the region is current nowhere afterwards.
    pub(crate) fn end_run(&mut self) {
        if !self.registered {
            return;
        }
        let irqs = IrqsOff::new();
        self.put(&irqs);
        drop(irqs);
        // SAFETY: registered in `begin_run` by this same task.
        unsafe { ffi::rkvm_vmcs_pin_unregister(self.pin.as_ptr()) };
        self.registered = false;
    }

    fn put(&mut self, _irqs: &IrqsOff) {
        // SAFETY: IRQs are off, so the pin's CPU is this one or none; the
        // VMCLEAR writes the region back to its own page.
        let ret = unsafe { ffi::rkvm_vmcs_pin_put(self.pin.as_ptr()) };
        if let Err(e) = check("VMCLEAR", None, ret) {
            pr_err!("{}\n", format_args!("{e}"));
            // INVARIANT: it may still be current: never freed.
            self.stuck = true;
        }
    }

    /// Makes the region the current VMCS of this CPU (VMPTRLD, unless it
    /// already is) for as long as the returned guard lives; `irqs` keeps
    /// this CPU's IRQs off.
    pub(crate) fn load<'a>(&'a mut self, irqs: &'a IrqsOff) -> VmxResult<CurrentVmcs<'a>> {
        // SAFETY: IRQs are off; the pin's page holds the revision
        // identifier and stays allocated; it is current here or nowhere
        // (invariant), so VMPTRLD never takes it from another CPU. A fault
        // (VMX off) is caught by the helper.
        let ret = unsafe { ffi::rkvm_vmcs_pin_load(self.pin.as_ptr()) };
        check("VMPTRLD", None, ret)?;
        // INVARIANT: the region is current on this CPU and IRQs are off.
        Ok(CurrentVmcs {
            region: self,
            irqs,
        })
    }
}

impl Drop for VmcsRegion {
    fn drop(&mut self) {
        self.end_run();
        if self.stuck {
            // The CPU may still write the VMCS back into the page.
            pr_err!(
                "leaking VMCS region {:#x} that VMCLEAR failed on\n",
                self.phys
            );
            core::mem::forget(self.page.take());
        }
        // SAFETY: the notifier is unregistered (`end_run`) and the pin's
        // region is current nowhere, so nothing uses the pin any more.
        unsafe { ffi::rkvm_vmcs_pin_free(self.pin.as_ptr()) };
    }
}

/// The current VMCS of this CPU, a [`VmcsRegion`] borrowed for `'a`.
/// VMREAD and VMWRITE go through it, so they act on this region only.
///
/// # Invariants
///
/// `region` is the current VMCS of this CPU and IRQs are off on it for
/// `'a` (`irqs`, which is not `Sync`, so `CurrentVmcs` is not `Send`).
/// Outside a run, `drop` VMCLEARs the region.
pub(crate) struct CurrentVmcs<'a> {
    region: &'a mut VmcsRegion,
    irqs: &'a IrqsOff,
}

impl CurrentVmcs<'_> {
    fn read(&self, field: u32) -> VmxResult<u64> {
        let mut value = 0u64;
        // SAFETY: the region is the current VMCS (type invariant); `value`
        // is a valid place for the result. A fault is caught by the helper.
        let ret = unsafe { ffi::rkvm_vmread(field as u64, &mut value) };
        check("VMREAD", Some(field), ret)?;
        Ok(value)
    }

    fn write(&mut self, field: u32, value: u64) -> VmxResult {
        // SAFETY: the region is the current VMCS (type invariant), so the
        // write lands in it; what the value means to a later VM entry is the
        // caller's business, and a wrong one fails the entry, not the host.
        let ret = unsafe { ffi::rkvm_vmwrite(field as u64, value) };
        check("VMWRITE", Some(field), ret)
    }

    /// Reads the fields `fields` (raw encodings, any width; values are
    /// zero-extended) in one call.
    pub(crate) fn read_many<const N: usize>(&self, fields: &[u32; N]) -> VmxResult<[u64; N]> {
        let mut values = [0u64; N];
        let mut failed = 0u32;
        // SAFETY: the region is the current VMCS (type invariant); both
        // arrays hold `N` elements; a fault is caught by the helper.
        let ret = unsafe {
            ffi::rkvm_vmreads(fields.as_ptr(), values.as_mut_ptr(), N as u32, &mut failed)
        };
        check("VMREAD", fields.get(failed as usize).copied(), ret)?;
        Ok(values)
    }

    /// Writes `values` to the fields `fields` (raw encodings) in one call.
    pub(crate) fn write_many(&mut self, fields: &[u32], values: &[u64]) -> VmxResult {
        let n = fields.len().min(values.len());
        let mut failed = 0u32;
        // SAFETY: the region is the current VMCS (type invariant), so the
        // writes land in it; both slices hold at least `n` elements.
        let ret = unsafe {
            ffi::rkvm_vmwrites(fields.as_ptr(), values.as_ptr(), n as u32, &mut failed)
        };
        check("VMWRITE", fields.get(failed as usize).copied(), ret)
    }

    pub(crate) fn read16(&self, f: Field16) -> VmxResult<u16> {
        self.read(f.0).map(|v| v as u16)
    }

    pub(crate) fn read32(&self, f: Field32) -> VmxResult<u32> {
        self.read(f.0).map(|v| v as u32)
    }

    pub(crate) fn read64(&self, f: Field64) -> VmxResult<u64> {
        self.read(f.0)
    }

    pub(crate) fn read_nat(&self, f: FieldNat) -> VmxResult<u64> {
        self.read(f.0)
    }

    pub(crate) fn write16(&mut self, f: Field16, v: u16) -> VmxResult {
        self.write(f.0, v.into())
    }

    pub(crate) fn write32(&mut self, f: Field32, v: u32) -> VmxResult {
        self.write(f.0, v.into())
    }

    pub(crate) fn write64(&mut self, f: Field64, v: u64) -> VmxResult {
        self.write(f.0, v)
    }

    pub(crate) fn write_nat(&mut self, f: FieldNat, v: u64) -> VmxResult {
        self.write(f.0, v)
    }

    /// Enters the guest with the general-purpose registers `gprs` (x86
    /// order; RSP comes from the VMCS) and CR2 `cr2`, and stores them back
    /// after the exit: VMRESUME if the region was launched on this CPU,
    /// else VMLAUNCH. Returns after the VM exit, or with how the
    /// instruction failed (the guest did not run).
    ///
    /// # Safety
    ///
    /// The VMCS's host-state area must describe this CPU and this task as
    /// they are now (`HOST_RIP` the exit label, `HOST_RSP` is written
    /// here), and every address the VMCS names (EPT root, MSR bitmap and
    /// MSR areas, virtual-APIC page) must stay valid while the guest runs:
    /// a VM exit loads that state as the host's.
    pub(crate) unsafe fn enter(
        &mut self,
        gprs: &mut [u64; 16],
        cr2: &mut u64,
    ) -> VmxResult {
        let launched = self.launched();
        // SAFETY: the region is current on this CPU with IRQs off (type
        // invariant); the caller vouches for the host state and the
        // addresses; `gprs` and `cr2` are valid for the helper's accesses.
        let ret = unsafe { ffi::rkvm_vmx_run(gprs.as_mut_ptr(), cr2, launched) };
        check(if launched { "VMRESUME" } else { "VMLAUNCH" }, None, ret)
    }

    /// Gives an NMI that caused the last exit to the host's NMI handler, as
    /// if the CPU had delivered it.
    pub(crate) fn forward_nmi(&self) {
        // SAFETY: IRQs are off and the last exit was an NMI (the caller's
        // decoding), which the CPU did not deliver to the host.
        unsafe { ffi::rkvm_vmx_forward_nmi() };
    }

    /// Whether the region was entered on this CPU since it was loaded
    /// (VMRESUME then, else VMLAUNCH).
    pub(crate) fn launched(&self) -> bool {
        // SAFETY: the pin is live (invariant of `VmcsRegion`).
        unsafe { ffi::rkvm_vmcs_pin_launched(self.region.pin.as_ptr()) }
    }

    /// Records a VM exit from the region (a completed entry).
    pub(crate) fn set_launched(&mut self) {
        // SAFETY: as above; IRQs are off, so no notifier races with this.
        unsafe { ffi::rkvm_vmcs_pin_set_launched(self.region.pin.as_ptr()) };
    }

    /// VMCLEARs the region (its data is written back to memory and it is
    /// current nowhere), reporting a failure that dropping would only log.
    pub(crate) fn clear(self) -> VmxResult {
        let mut this = core::mem::ManuallyDrop::new(self);
        // SAFETY: as in `VmcsRegion::put`.
        let ret = unsafe { ffi::rkvm_vmcs_pin_put(this.region.pin.as_ptr()) };
        let r = check("VMCLEAR", None, ret);
        // INVARIANT: if VMCLEAR failed (it cannot, with a valid page in VMX
        // operation) the region may still be current: it is never freed.
        this.region.stuck |= r.is_err();
        r
    }
}

/// INVEPT types (SDM vol. 3C, 31.3).
#[derive(Clone, Copy)]
pub(crate) enum InveptType {
    SingleContext = 1,
    AllContext = 2,
}

/// INVVPID types.
#[derive(Clone, Copy)]
pub(crate) enum InvvpidType {
    SingleContext = 1,
    AllContext = 2,
}

/// Invalidates this CPU's EPT-derived translations for `eptp` (or all).
pub(crate) fn invept(kind: InveptType, eptp: u64, _irqs: &IrqsOff) -> VmxResult {
    // SAFETY: INVEPT only drops cached translations; a fault (VMX off) is
    // caught by the helper.
    let ret = unsafe { ffi::rkvm_invept(kind as u64, eptp, 0) };
    check("INVEPT", None, ret)
}

/// Invalidates this CPU's guest-linear translations tagged with `vpid`
/// (or all VPIDs but the host's).
pub(crate) fn invvpid(kind: InvvpidType, vpid: u16, _irqs: &IrqsOff) -> VmxResult {
    // SAFETY: as for INVEPT.
    let ret = unsafe { ffi::rkvm_invvpid(kind as u64, vpid.into(), 0) };
    check("INVVPID", None, ret)
}

/// The host state of this CPU that a VM exit loads.
pub(crate) fn host_percpu(_irqs: &IrqsOff) -> ffi::VmxHostPerCpu {
    let mut h = ffi::VmxHostPerCpu::default();
    // SAFETY: IRQs are off, so the values are this CPU's; `h` is valid.
    unsafe { ffi::rkvm_vmx_host_percpu(&mut h) };
    h
}

/// The task's FS base and the user GS base (`KERNEL_GS_BASE` in the
/// kernel), which a VM exit would lose.
pub(crate) fn host_pertask(_irqs: &IrqsOff) -> (u64, u64) {
    let (mut fs, mut kgs) = (0, 0);
    // SAFETY: reads two MSRs into valid places.
    unsafe { ffi::rkvm_vmx_host_pertask(&mut fs, &mut kgs) };
    (fs, kgs)
}

/// Makes the next entry on this CPU flush L1D (when the flush is
/// conditional): the host ran code since the last entry that may have
/// brought another context's data into it.
pub(crate) fn request_l1d_flush() {
    // SAFETY: sets a per-CPU flag; any CPU is fine, a wrong one only
    // costs a flush.
    unsafe { ffi::rkvm_l1d_flush_request() };
}

/// The address VM exits jump to: `HOST_RIP`.
pub(crate) fn vmexit_rip() -> u64 {
    (&raw const ffi::rkvm_vmx_vmexit) as u64
}

impl Drop for CurrentVmcs<'_> {
    fn drop(&mut self) {
        if !self.region.registered {
            self.region.put(self.irqs);
        }
    }
}
