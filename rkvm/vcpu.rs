// SPDX-License-Identifier: GPL-2.0

//! A vCPU: what a vCPU fd refers to.
//!
//! The fd maps two pages: the `kvm_run` page at offset 0 and the PIO data
//! page at offset 1 (`KVM_GET_VCPU_MMAP_SIZE`). Register state lives here;
//! segments are kept in the backend's own format (VMCB or VMCS fields),
//! which is what KVM reports them through.

use kernel::{
    alloc::flags::__GFP_ZERO,
    fs::File,
    mm::virt::VmaNew,
    new_mutex,
    page::{Page, PAGE_SIZE},
    prelude::*,
    str::CStr,
    sync::{Arc, ArcBorrow, Mutex},
};

use crate::{
    abi::{self, VCPU_MMAP_PAGES},
    anon_fd::{self, AnonFile},
    cpuid::{self, CpuidEntry},
    fpu::Fpu,
    hw::{self, Backend},
    regs::Regs,
    run_page::{RunPage, SharedPage},
    sregs::{self, GuestFeatures, SegReg, Sregs},
    svm::{seg::SvmSegs, vcpu::SvmVcpu},
    uarg,
    vm::Vm,
    vmx::seg::VmxSegs,
};

/// Segment registers in the backend's format.
enum Segs {
    Svm(SvmSegs),
    Vmx(VmxSegs),
}

impl Segs {
    fn reset(backend: Backend) -> Self {
        match backend {
            Backend::Svm => Self::Svm(SvmSegs::reset()),
            Backend::Vmx => Self::Vmx(VmxSegs::reset()),
        }
    }

    fn get(&self, reg: SegReg) -> sregs::Segment {
        match self {
            Self::Svm(s) => s.get(reg),
            Self::Vmx(s) => s.get(reg),
        }
    }

    fn set(&mut self, reg: SegReg, var: &sregs::Segment) {
        match self {
            Self::Svm(s) => s.set(reg, var),
            Self::Vmx(s) => s.set(reg, var),
        }
    }
}

/// Register state as `KVM_GET_REGS`/`KVM_GET_SREGS` report it.
struct State {
    regs: Regs,
    /// Control registers, descriptor tables and the pending interrupt; its
    /// `segs` are unused, `segs` below holds them.
    sregs: Sregs,
    segs: Segs,
    fpu: Fpu,
    /// What the guest CPUID offers, as far as register checks care.
    features: GuestFeatures,
    /// The guest's CPUID table (`KVM_SET_CPUID2`).
    cpuid: KVec<CpuidEntry>,
    /// The SVM backend's vCPU (`None` on VMX until its backend runs guests).
    svm: Option<KBox<SvmVcpu>>,
    /// The fields above changed through an ioctl since the backend last
    /// loaded them.
    dirty: bool,
    /// The backend ran the guest since the fields above were last stored
    /// back: they are out of date until `pull`. Never set with `dirty`.
    stale: bool,
    /// `KVM_SET_SIGNAL_MASK`: the signals blocked while in `KVM_RUN`.
    sigmask: Option<u64>,
}

mod ffi {
    extern "C" {
        pub(super) fn rkvm_sigset_activate(mask: u64);
        pub(super) fn rkvm_sigset_deactivate();
    }
}

/// The blocked-signal mask of `KVM_SET_SIGNAL_MASK`, in force while this
/// lives.
struct SigmaskGuard;

impl SigmaskGuard {
    fn activate(mask: Option<u64>) -> Option<Self> {
        // SAFETY: replaces the current task's blocked mask, saving the old
        // one in `real_blocked`; `drop` restores it before KVM_RUN returns.
        mask.map(|m| {
            unsafe { ffi::rkvm_sigset_activate(m) };
            Self
        })
    }
}

impl Drop for SigmaskGuard {
    fn drop(&mut self) {
        // SAFETY: paired with `rkvm_sigset_activate` in `activate`.
        unsafe { ffi::rkvm_sigset_deactivate() };
    }
}

/// Most entries `KVM_GET_MSRS`/`KVM_SET_MSRS` take at once (KVM's
/// `MAX_IO_MSRS`).
const MAX_IO_MSRS: usize = 256;
/// Size of `struct kvm_msr_entry`.
const MSR_ENTRY_SIZE: usize = 16;

impl State {
    /// A vCPU after RESET.
    fn reset(&mut self, is_bsp: bool) {
        self.regs = Regs::reset();
        self.sregs = sregs::reset(is_bsp);
        self.segs = Segs::reset(hw::backend());
        self.fpu = Fpu::reset();
        self.dirty = true;
    }

    /// Loads what the ioctls changed into the backend. The register state
    /// moves between here and the backend only when an ioctl needs it, so
    /// a `KVM_RUN` after an exit to userspace copies nothing.
    fn push(&mut self) {
        if let (true, Some(svm), Segs::Svm(segs)) = (self.dirty, self.svm.as_mut(), &self.segs) {
            svm.load(&self.regs, &self.sregs, segs, &self.fpu);
            self.dirty = false;
        }
    }

    /// Stores the backend's state for the ioctls to see, if the guest ran
    /// since the last time.
    fn pull(&mut self) {
        if let (true, Some(svm), Segs::Svm(segs)) = (self.stale, self.svm.as_ref(), &mut self.segs)
        {
            svm.store(&mut self.regs, &mut self.sregs, segs, &mut self.fpu);
        }
        self.stale = false;
    }

    /// `KVM_RUN`.
    fn run(&mut self, vm: &Vm, pages: &[Page; VCPU_MMAP_PAGES], is_bsp: bool) -> Result<isize> {
        let run = RunPage(SharedPage::new(&pages[0]));
        let pio = SharedPage::new(&pages[1]);
        // Without an in-kernel local APIC, the TPR comes from kvm_run.cr8.
        let cr8 = run.cr8();
        if cr8 & !0xf != 0 {
            return Err(EINVAL);
        }
        if self.svm.is_none() {
            return Err(EINVAL);
        }
        self.push();
        let svm = self.svm.as_mut().ok_or(EINVAL)?;
        svm.set_cr8(cr8);
        self.stale = true;
        let sigmask = SigmaskGuard::activate(self.sigmask);
        let ret = svm.run(vm, &run, &pio, &self.cpuid);
        drop(sigmask);
        let shut_down = svm.shut_down();
        let (if_flag, ready) = svm.interrupt_status();
        let cr8 = svm.cr8();
        if shut_down {
            // The VMCB is undefined after a shutdown; KVM resets the vCPU.
            self.stale = false;
            self.reset(is_bsp);
        }
        run.set_status(if_flag, ready, cr8, self.sregs.apic_base);
        ret.map(|()| 0)
    }

    /// `KVM_GET_MSRS` (`set == false`) and `KVM_SET_MSRS`: the number of
    /// entries done, stopping at the first MSR rkvm does not implement or
    /// value it refuses, as KVM.
    fn msrs(&mut self, arg: usize, set: bool) -> Result<isize> {
        let n = u32::from_ne_bytes(abi::field(&uarg::read::<8>(arg)?, 0)) as usize;
        if n >= MAX_IO_MSRS {
            return Err(E2BIG);
        }
        self.push();
        let svm = self.svm.as_mut().ok_or(EINVAL)?;
        // The MSRs live in the backend: what the ioctls see of the rest
        // (EFER in the sregs) is refreshed by the next `pull`.
        self.stale = true;
        let mut done = 0;
        for i in 0..n {
            let addr = arg + 8 + i * MSR_ENTRY_SIZE;
            let e: [u8; MSR_ENTRY_SIZE] = uarg::read(addr)?;
            let index = u32::from_ne_bytes(abi::field(&e, 0));
            if set {
                let data = u64::from_ne_bytes(abi::field(&e, 8));
                if svm.set_msr(index, data, true).is_err() {
                    break;
                }
            } else {
                let Some(data) = svm.get_msr(index) else {
                    break;
                };
                uarg::write(addr + 8, &data.to_ne_bytes())?;
            }
            done += 1;
        }
        Ok(done)
    }

    /// `KVM_SET_CPUID2`.
    fn set_cpuid(&mut self, arg: usize) -> Result {
        let n = u32::from_ne_bytes(abi::field(&uarg::read::<8>(arg)?, 0)) as usize;
        if n > cpuid::MAX_ENTRIES {
            return Err(E2BIG);
        }
        let mut table = KVec::with_capacity(n, GFP_KERNEL)?;
        for i in 0..n {
            let b: [u8; cpuid::ENTRY_SIZE] =
                uarg::read(arg + cpuid::HEADER_SIZE + i * cpuid::ENTRY_SIZE)?;
            table.push(CpuidEntry::from_bytes(&b), GFP_KERNEL)?;
        }
        self.features = guest_features(&table);
        self.cpuid = table;
        Ok(())
    }

    /// `KVM_GET_CPUID2`: `E2BIG` (and the needed count) if too small.
    fn get_cpuid(&self, arg: usize) -> Result {
        let n = u32::from_ne_bytes(abi::field(&uarg::read::<8>(arg)?, 0)) as usize;
        let have = self.cpuid.len();
        if n < have {
            uarg::write(arg, &(have as u32).to_ne_bytes())?;
            return Err(E2BIG);
        }
        uarg::write(arg, &(have as u32).to_ne_bytes())?;
        for (i, e) in self.cpuid.iter().enumerate() {
            uarg::write(
                arg + cpuid::HEADER_SIZE + i * cpuid::ENTRY_SIZE,
                &e.to_bytes(),
            )?;
        }
        Ok(())
    }

    fn get_sregs(&self) -> Sregs {
        let mut out = self.sregs;
        for reg in SegReg::ALL {
            out.segs[reg as usize] = self.segs.get(reg);
        }
        out
    }

    fn set_sregs(&mut self, new: &Sregs) -> Result {
        if !new.is_valid(&self.features, self.sregs.apic_base) {
            return Err(EINVAL);
        }
        // As in KVM, an empty interrupt bitmap leaves a queued interrupt be.
        let pending_irq = new.pending_irq.or(self.sregs.pending_irq);
        self.sregs = Sregs {
            pending_irq,
            ..*new
        };
        for reg in SegReg::ALL {
            self.segs.set(reg, &new.segs[reg as usize]);
        }
        Ok(())
    }
}

/// Decodes `KVM_SET_SIGNAL_MASK`'s argument: none (NULL) clears the mask;
/// otherwise `len` must be the kernel's `sigset_t` size, as in KVM.
fn sigmask_arg(arg: usize) -> Result<Option<u64>> {
    if arg == 0 {
        return Ok(None);
    }
    let len = u32::from_ne_bytes(uarg::read::<4>(arg)?);
    if len != 8 {
        return Err(EINVAL);
    }
    Ok(Some(u64::from_ne_bytes(uarg::read::<8>(arg + 4)?)))
}

/// What the register checks need from a CPUID table: long mode, NX (leaf
/// 0x8000_0001 EDX bits 29 and 20), x2APIC (leaf 1 ECX bit 21) and the
/// physical address width (leaf 0x8000_0008 EAX).
fn guest_features(table: &[CpuidEntry]) -> GuestFeatures {
    let ext = cpuid::lookup(table, 0x8000_0001, 0);
    let leaf1 = cpuid::lookup(table, 1, 0);
    let bits = cpuid::lookup(table, 0x8000_0008, 0)[0] & 0xff;
    GuestFeatures {
        lm: ext[3] & (1 << 29) != 0,
        nx: ext[3] & (1 << 20) != 0,
        x2apic: leaf1[2] & (1 << 21) != 0,
        phys_bits: if bits != 0 {
            bits
        } else {
            GuestFeatures::default().phys_bits
        },
    }
}

/// A virtual CPU.
///
/// # Invariants
///
/// `pages` are the zeroed pages the fd maps: `kvm_run`, then PIO data.
#[pin_data]
pub(crate) struct Vcpu {
    vm: Arc<Vm>,
    id: u32,
    /// Creation index within the VM.
    idx: usize,
    pages: [Page; VCPU_MMAP_PAGES],
    /// Serialises the vCPU's ioctls, like KVM's `vcpu->mutex`.
    #[pin]
    state: Mutex<State>,
}

impl Vcpu {
    /// Creates vCPU `id` of `vm` and returns its fd.
    pub(crate) fn create_fd(vm: Arc<Vm>, id: u32, idx: usize) -> Result<u32> {
        let page = || Page::alloc_page(GFP_KERNEL | __GFP_ZERO);
        let pages = [page()?, page()?];
        // vCPU 0 is the bootstrap processor, as in KVM by default.
        let state = State {
            regs: Regs::reset(),
            sregs: sregs::reset(id == 0),
            segs: Segs::reset(hw::backend()),
            fpu: Fpu::reset(),
            features: GuestFeatures::default(),
            cpuid: KVec::new(),
            svm: match hw::backend() {
                Backend::Svm => Some(SvmVcpu::new(idx, vm.tdp().root_phys())?),
                Backend::Vmx => None,
            },
            dirty: true,
            stale: false,
            sigmask: None,
        };
        // INVARIANT: both pages were allocated zeroed.
        let vcpu = Arc::pin_init(
            try_pin_init!(Self { vm, id, idx, pages, state <- new_mutex!(state, "Vcpu::state") }),
            GFP_KERNEL,
        )?;
        anon_fd::install(vcpu)
    }
}

impl AnonFile for Vcpu {
    const NAME: &'static CStr = c"rkvm-vcpu";

    fn ioctl(this: ArcBorrow<'_, Self>, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        if !this.vm.owned_by_current() {
            return Err(EIO);
        }
        let mut state = this.state.lock();
        // Every register ioctl sees (and changes) the state as the guest
        // left it.
        if cmd != abi::vcpu::RUN {
            state.pull();
        }
        match cmd {
            // KVM refuses an argument to KVM_RUN.
            abi::vcpu::RUN if arg != 0 => return Err(EINVAL),
            abi::vcpu::RUN => return state.run(&this.vm, &this.pages, this.id == 0),
            abi::vcpu::GET_REGS => uarg::write(arg, &state.regs.to_bytes())?,
            abi::vcpu::SET_REGS => {
                state.regs = Regs::from_bytes(&uarg::read(arg)?).sanitized();
                state.dirty = true;
            }
            abi::vcpu::GET_SREGS => uarg::write(arg, &state.get_sregs().to_bytes())?,
            abi::vcpu::SET_SREGS => {
                state.set_sregs(&Sregs::from_bytes(&uarg::read(arg)?))?;
                state.dirty = true;
            }
            abi::vcpu::GET_FPU => uarg::write(arg, &state.fpu.to_bytes())?,
            abi::vcpu::SET_FPU => {
                state.fpu = Fpu::from_bytes(&uarg::read(arg)?);
                state.dirty = true;
            }
            abi::vcpu::GET_MSRS => return state.msrs(arg, false),
            abi::vcpu::SET_MSRS => return state.msrs(arg, true),
            abi::vcpu::SET_CPUID2 => state.set_cpuid(arg)?,
            abi::vcpu::GET_CPUID2 => state.get_cpuid(arg)?,
            abi::vcpu::SET_SIGNAL_MASK => state.sigmask = sigmask_arg(arg)?,
            // KVM answers unknown vCPU ioctls with EINVAL.
            _ => return Err(EINVAL),
        }
        Ok(0)
    }

    fn mmap(this: ArcBorrow<'_, Self>, _file: &File, vma: &VmaNew) -> Result {
        // SAFETY: `vma` is a valid VMA being set up by `mmap`; reading its
        // offset has no side effects.
        let pgoff = unsafe { (*vma.as_ptr()).vm_pgoff };
        let npages = (vma.end() - vma.start()) / PAGE_SIZE;
        let pages = this
            .pages
            .get(pgoff..)
            .and_then(|p| p.get(..npages))
            .ok_or(EINVAL)?;
        let vma = vma.set_mixedmap();
        for (i, page) in pages.iter().enumerate() {
            vma.vm_insert_page(vma.start() + i * PAGE_SIZE, page)?;
        }
        pr_debug!(
            "vCPU {} mapped {} pages at offset {}\n",
            this.id,
            npages,
            pgoff
        );
        Ok(())
    }
}
