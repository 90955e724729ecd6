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
    fpu::Fpu,
    hw::{self, Backend},
    regs::Regs,
    sregs::{self, GuestFeatures, SegReg, Sregs},
    svm::seg::SvmSegs,
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
    /// What the guest CPUID offers (nothing until `KVM_SET_CPUID2` exists).
    features: GuestFeatures,
}

impl State {
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

/// A virtual CPU.
///
/// # Invariants
///
/// `pages` are the zeroed pages the fd maps: `kvm_run`, then PIO data.
#[pin_data]
pub(crate) struct Vcpu {
    vm: Arc<Vm>,
    id: u32,
    pages: [Page; VCPU_MMAP_PAGES],
    /// Serialises the vCPU's ioctls, like KVM's `vcpu->mutex`.
    #[pin]
    state: Mutex<State>,
}

impl Vcpu {
    /// Creates vCPU `id` of `vm` and returns its fd.
    pub(crate) fn create_fd(vm: Arc<Vm>, id: u32) -> Result<u32> {
        let page = || Page::alloc_page(GFP_KERNEL | __GFP_ZERO);
        let pages = [page()?, page()?];
        // vCPU 0 is the bootstrap processor, as in KVM by default.
        let state = State {
            regs: Regs::reset(),
            sregs: sregs::reset(id == 0),
            segs: Segs::reset(hw::backend()),
            fpu: Fpu::reset(),
            features: GuestFeatures::default(),
        };
        // INVARIANT: both pages were allocated zeroed.
        let vcpu = Arc::pin_init(
            try_pin_init!(Self { vm, id, pages, state <- new_mutex!(state, "Vcpu::state") }),
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
        match cmd {
            abi::vcpu::GET_REGS => uarg::write(arg, &state.regs.to_bytes())?,
            abi::vcpu::SET_REGS => state.regs = Regs::from_bytes(&uarg::read(arg)?).sanitized(),
            abi::vcpu::GET_SREGS => uarg::write(arg, &state.get_sregs().to_bytes())?,
            abi::vcpu::SET_SREGS => state.set_sregs(&Sregs::from_bytes(&uarg::read(arg)?))?,
            abi::vcpu::GET_FPU => uarg::write(arg, &state.fpu.to_bytes())?,
            abi::vcpu::SET_FPU => state.fpu = Fpu::from_bytes(&uarg::read(arg)?),
            // KVM answers unknown vCPU ioctls with EINVAL; so does rkvm for
            // those it does not implement yet (KVM_RUN first of all).
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
