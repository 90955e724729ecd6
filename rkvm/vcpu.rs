// SPDX-License-Identifier: GPL-2.0

//! A vCPU: what a vCPU fd refers to.
//!
//! The fd maps two pages: the `kvm_run` page at offset 0 and the PIO data
//! page at offset 1 (`KVM_GET_VCPU_MMAP_SIZE`); with dirty rings, the
//! vCPU's ring at page offset 64. Register state lives in
//! the backend, in its own format (VMCB or VMCS fields), which is what
//! KVM reports it through; the extended state in a guest fpstate
//! (`shim/guest_fpu.rs`). Running and exits are `exits.rs`.

use core::sync::atomic::{AtomicU64, Ordering};

use kernel::{
    alloc::flags::__GFP_ZERO,
    fs::File,
    mm::virt::{flags as vm_flags, VmaNew},
    new_mutex,
    page::{Page, PAGE_SIZE},
    prelude::*,
    str::CStr,
    sync::{Arc, ArcBorrow, Mutex},
    types::ScopeGuard,
};

use crate::{
    abi::{self, VCPU_MMAP_PAGES},
    anon_fd::{self, AnonFile},
    arch::xcr0,
    cpuid::{self, CpuidEntry},
    debugreg::DebugRegs,
    dirty_ring_pages::{self, VcpuRing},
    exits::{self, CpuCore, GuestCpu},
    lapic::apic::{ApicShared, VcpuApic},
    fpu::{Fpu, FXSAVE_SIZE},
    guest_debug,
    hw,
    mce::McError,
    msr_ioctl,
    regs::Regs,
    run_page::{RunPage, SharedPage},
    shim::{
        cpu::SigmaskGuard,
        guest_fpu::{GuestFpu, XSAVE_UABI_SIZE},
    },
    sregs::Sregs,
    stats::{self, Desc},
    stats_file::{StatsFile, StatsSource},
    tsc, uarg,
    vcpu_events::VcpuEvents,
    x86,
    vm::Vm,
};

/// A vCPU's statistics (`stats::vcpu`): counted by the thread in
/// `KVM_RUN`, read by statistics fds at any time, so outside `State`.
pub(crate) struct VcpuStats([AtomicU64; stats::vcpu::COUNT]);

impl VcpuStats {
    fn new() -> Self {
        Self(core::array::from_fn(|_| AtomicU64::new(0)))
    }

    /// One more event `idx` (a `stats::vcpu` index).
    pub(crate) fn count(&self, idx: usize) {
        if let Some(c) = self.0.get(idx) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts the return to userspace that `KVM_RUN` ended with.
    fn count_return(&self, result: &Result, exit_reason: u32) {
        let idx = match (result, exit_reason) {
            (Ok(()), abi::run::exit::IO) => stats::vcpu::IO_EXITS,
            (Ok(()), abi::run::exit::MMIO) => stats::vcpu::MMIO_EXITS,
            (Ok(()), abi::run::exit::HLT) => stats::vcpu::HALT_EXITS,
            (Err(e), abi::run::exit::INTR) if *e == EINTR => stats::vcpu::SIGNAL_EXITS,
            _ => return,
        };
        self.count(idx);
    }
}

/// A vCPU's state behind its mutex.
struct State {
    cpu: GuestCpu,
    /// `KVM_SET_SIGNAL_MASK`: the signals blocked while in `KVM_RUN`.
    sigmask: Option<u64>,
}

/// Offset of `xstate_bv` in the XSAVE header of `struct kvm_xsave`.
const XSTATE_BV: usize = FXSAVE_SIZE;

impl State {
    fn core(&self) -> &CpuCore {
        &self.cpu.core
    }

    fn core_mut(&mut self) -> &mut CpuCore {
        &mut self.cpu.core
    }

    /// A vCPU after RESET.
    fn reset(&mut self, is_bsp: bool) -> Result {
        self.core_mut().reset(is_bsp);
        let mut buf = KBox::new([0u8; XSAVE_UABI_SIZE], GFP_KERNEL)?;
        buf[..FXSAVE_SIZE].copy_from_slice(&Fpu::reset_fxsave());
        buf[XSTATE_BV..XSTATE_BV + 8].copy_from_slice(&(xcr0::X87 | xcr0::SSE).to_ne_bytes());
        self.cpu.fpu.set(&buf, exits::supported_xcr0() | xcr0::X87 | xcr0::SSE)
    }

    /// `KVM_RUN`.
    fn run(
        &mut self,
        vm: &Vm,
        pages: &[Page; VCPU_MMAP_PAGES],
        is_bsp: bool,
        stats: &VcpuStats,
    ) -> Result<isize> {
        let run = RunPage(SharedPage::new(&pages[0]));
        let pio = SharedPage::new(&pages[1]);
        // Without an in-kernel local APIC, the TPR comes from kvm_run.cr8.
        if !self.core().has_apic() {
            let cr8 = run.cr8();
            if cr8 & !0xf != 0 {
                return Err(EINVAL);
            }
            self.core_mut().backend.set_cr8(cr8);
        }
        let sigmask = SigmaskGuard::activate(self.sigmask);
        let ret = self.cpu.run(vm, &run, &pio, stats);
        drop(sigmask);
        stats.count_return(&ret, run.exit_reason());
        let backend = &self.core().backend;
        let (if_flag, _) = backend.interrupt_status();
        let ready = self.core().ready_for_interrupt();
        let cr8 = backend.cr8();
        if self.core().shut_down {
            // The state is undefined after a shutdown; KVM resets the vCPU.
            self.reset(is_bsp)?;
        }
        run.set_status(if_flag, ready, cr8, self.core().apic_base());
        ret.map(|()| 0)
    }

    /// `KVM_GET_MSRS` (`set == false`) and `KVM_SET_MSRS`: the number of
    /// entries done, stopping at the first MSR rkvm does not implement or
    /// value it refuses, as KVM.
    fn msrs(&mut self, vm: &Vm, arg: usize, set: bool) -> Result<isize> {
        let core = self.core_mut();
        msr_ioctl::msr_io(arg, !set, |index, data| {
            if set {
                core.set_msr(vm, index, *data, true).is_ok()
            } else {
                core.get_msr(vm, index, true).map(|v| *data = v).is_some()
            }
        })
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
        self.core_mut().set_cpuid(table);
        Ok(())
    }

    /// `KVM_GET_CPUID2`: `E2BIG` (and the needed count) if too small.
    fn get_cpuid(&self, arg: usize) -> Result {
        let n = u32::from_ne_bytes(abi::field(&uarg::read::<8>(arg)?, 0)) as usize;
        let table = &self.core().cpuid;
        let have = table.len();
        uarg::write(arg, &(have as u32).to_ne_bytes())?;
        if n < have {
            return Err(E2BIG);
        }
        for (i, e) in table.iter().enumerate() {
            uarg::write(
                arg + cpuid::HEADER_SIZE + i * cpuid::ENTRY_SIZE,
                &e.to_bytes(),
            )?;
        }
        Ok(())
    }

    fn get_sregs(&self) -> Sregs {
        Sregs {
            apic_base: self.core().apic_base(),
            // KVM's injected interrupt: queued, or on its way in.
            pending_irq: self.core().events().interrupt.map(|(vector, _)| vector),
            ..self.core().backend.sregs()
        }
    }

    fn set_sregs(&mut self, vm: &Vm, new: &Sregs) -> Result {
        if !new.is_valid(&self.core().features, self.core().apic_base()) {
            return Err(EINVAL);
        }
        // As in KVM, an empty interrupt bitmap leaves a queued interrupt be.
        if let Some(vector) = new.pending_irq {
            self.core_mut().queued_irq = Some(vector);
        }
        let core = self.core_mut();
        core.backend.set_sregs(new);
        core.set_sregs_apic(vm, new.apic_base, new.cr8);
        // As KVM, an unreadable or invalid PDPTE does not fail the ioctl.
        core.load_pdptrs(vm, new.cr0, new.cr4, new.efer);
        Ok(())
    }

    /// The extended state in the `KVM_GET_XSAVE` format.
    fn xsave(&mut self) -> Result<KBox<[u8; XSAVE_UABI_SIZE]>> {
        let mut buf = KBox::new([0u8; XSAVE_UABI_SIZE], GFP_KERNEL)?;
        self.cpu.fpu.get(&mut buf, exits::supported_xcr0() | xcr0::X87 | xcr0::SSE);
        Ok(buf)
    }

    fn set_xsave(&mut self, buf: &[u8; XSAVE_UABI_SIZE]) -> Result {
        self.cpu
            .fpu
            .set(buf, exits::supported_xcr0() | xcr0::X87 | xcr0::SSE)
    }

    /// `KVM_GET_FPU`: the x87/SSE part of the extended state.
    fn get_fpu(&mut self) -> Result<Fpu> {
        let buf = self.xsave()?;
        let mut fx = [0u8; FXSAVE_SIZE];
        fx.copy_from_slice(&buf[..FXSAVE_SIZE]);
        Ok(Fpu::from_fxsave(&fx))
    }

    /// `KVM_SET_FPU`: replaces the x87/SSE part, keeping MXCSR (which
    /// `struct kvm_fpu` does not carry, as KVM ignores it) and the rest.
    fn set_fpu(&mut self, fpu: &Fpu) -> Result {
        let mut buf = self.xsave()?;
        let mut fx = [0u8; FXSAVE_SIZE];
        fx.copy_from_slice(&buf[..FXSAVE_SIZE]);
        fpu.store_fxsave(&mut fx);
        buf[..FXSAVE_SIZE].copy_from_slice(&fx);
        let bv = u64::from_ne_bytes(abi::field(&buf[..], XSTATE_BV)) | xcr0::X87 | xcr0::SSE;
        buf[XSTATE_BV..XSTATE_BV + 8].copy_from_slice(&bv.to_ne_bytes());
        self.set_xsave(&buf)
    }

    /// `KVM_GET_XCRS`: XCR0, where the host has XSAVE.
    fn get_xcrs(&self) -> [u8; abi::vcpu::XCRS_SIZE] {
        let mut b = [0u8; abi::vcpu::XCRS_SIZE];
        if crate::shim::cpu::host_xcr0() != 0 {
            b[0..4].copy_from_slice(&1u32.to_ne_bytes());
            // xcrs[0]: xcr 0, reserved, value.
            b[16..24].copy_from_slice(&self.core().xcr0.to_ne_bytes());
        }
        b
    }

    /// `KVM_SET_XCRS`: as KVM, only XCR0 is looked at, with the checks of
    /// a guest XSETBV; `EINVAL` for a bad count, flags or value.
    fn set_xcrs(&mut self, b: &[u8; abi::vcpu::XCRS_SIZE]) -> Result {
        if crate::shim::cpu::host_xcr0() == 0 {
            return Err(EINVAL);
        }
        let n = u32::from_ne_bytes(abi::field(b, 0)) as usize;
        let flags = u32::from_ne_bytes(abi::field(b, 4));
        if n > abi::vcpu::MAX_XCRS || flags != 0 {
            return Err(EINVAL);
        }
        for i in 0..n {
            let off = 8 + i * 16;
            if u32::from_ne_bytes(abi::field(b, off)) == crate::xsave::XCR0_INDEX {
                let value = u64::from_ne_bytes(abi::field(b, off + 8));
                return self.core_mut().set_xcr0(value);
            }
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

/// A virtual CPU.
///
/// # Invariants
///
/// `pages` are the zeroed pages the fd maps: `kvm_run`, then PIO data.
#[pin_data(PinnedDrop)]
pub(crate) struct Vcpu {
    vm: Arc<Vm>,
    id: u32,
    /// Creation index within the VM.
    idx: usize,
    pages: [Page; VCPU_MMAP_PAGES],
    /// The vCPU's dirty ring, if the VM has rings (pushed to by `state`'s
    /// run loop, mapped by the VMM).
    dirty_ring: Option<Arc<VcpuRing>>,
    /// Serialises the vCPU's ioctls, like KVM's `vcpu->mutex`.
    #[pin]
    state: Mutex<State>,
    stats: VcpuStats,
}

impl Vcpu {
    /// Creates vCPU `id` of `vm` and returns its fd.
    pub(crate) fn create_fd(
        vm: Arc<Vm>,
        id: u32,
        idx: usize,
        dirty_ring: Option<Arc<VcpuRing>>,
        apic: Option<Arc<ApicShared>>,
    ) -> Result<u32> {
        let page = || Page::alloc_page(GFP_KERNEL | __GFP_ZERO);
        let pages = [page()?, page()?];
        // vCPU 0 is the bootstrap processor, as in KVM by default.
        let is_bsp = id == 0;
        let mut backend = hw::new_vcpu(vm.tdp().root_phys(), is_bsp)?;
        // Counted in the VM's clock from here; until the vCPU exists, a
        // failure counts it out again (then its `PinnedDrop` does).
        let (tsc_offset, tsc_generation) = vm.clock().add_vcpu();
        let counted = ScopeGuard::new_with_data(vm.clone(), move |vm: Arc<Vm>| {
            vm.clock().remove_vcpu(tsc_generation)
        });
        backend.set_tsc_offset(tsc_offset);
        let mut state = State {
            cpu: GuestCpu {
                fpu: GuestFpu::new()?,
                core: CpuCore::new(
                    backend,
                    idx,
                    dirty_ring.clone(),
                    apic.map(|shared| KBox::new(VcpuApic::new(shared, id, is_bsp), GFP_KERNEL))
                        .transpose()?,
                    tsc_generation,
                )?,
            },
            sigmask: None,
        };
        state.reset(is_bsp)?;
        // INVARIANT: both pages were allocated zeroed.
        let vcpu = Arc::pin_init(
            try_pin_init!(Self {
                vm,
                id,
                idx,
                pages,
                dirty_ring,
                state <- new_mutex!(state, "Vcpu::state"),
                stats: VcpuStats::new(),
            }),
            GFP_KERNEL,
        )?;
        counted.dismiss();
        anon_fd::install(vcpu)
    }
}

#[pinned_drop]
impl PinnedDrop for Vcpu {
    fn drop(self: Pin<&mut Self>) {
        self.state.lock().core().leave_vm_clock(&self.vm);
    }
}

impl Vcpu {
    /// Maps `npages` pages of the dirty ring from its page `first`: shared
    /// (the VMM's harvest marks must reach the kernel's copy) and not
    /// executable, as KVM requires; `EINVAL` otherwise or past the ring.
    fn mmap_dirty_ring(&self, vma: &VmaNew, first: usize, npages: usize) -> Result {
        let ring = self.dirty_ring.as_deref().ok_or(EINVAL)?;
        let flags = vma.flags();
        if flags & vm_flags::SHARED == 0 || flags & vm_flags::EXEC != 0 {
            return Err(EINVAL);
        }
        let last = first.checked_add(npages).ok_or(EINVAL)?;
        if npages == 0 || dirty_ring_pages::ring_page(ring, last - 1).is_none() {
            return Err(EINVAL);
        }
        let vma = vma.set_mixedmap();
        for i in 0..npages {
            let page = dirty_ring_pages::ring_page(ring, first + i).ok_or(EINVAL)?;
            vma.vm_insert_page(vma.start() + i * PAGE_SIZE, &page)?;
        }
        Ok(())
    }
}

impl StatsSource for Vcpu {
    const DESCS: &'static [Desc] = &stats::vcpu::DESCS;

    fn values(&self, out: &mut [u64]) {
        for (v, c) in out.iter_mut().zip(&self.stats.0) {
            *v = c.load(Ordering::Relaxed);
        }
    }
}

impl AnonFile for Vcpu {
    const NAME: &'static CStr = c"rkvm-vcpu";

    fn ioctl(this: ArcBorrow<'_, Self>, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        if !this.vm.owned_by_current() {
            return Err(EIO);
        }
        if cmd == abi::GET_STATS_FD {
            // Needs no vCPU state: not serialised with KVM_RUN.
            let id = fmt!("kvm-{}/vcpu-{}", this.vm.stats_pid(), this.id);
            return StatsFile::create_fd(this.into(), id);
        }
        let mut state = this.state.lock();
        match cmd {
            // KVM refuses an argument to KVM_RUN.
            abi::vcpu::RUN if arg != 0 => return Err(EINVAL),
            abi::vcpu::RUN => return state.run(&this.vm, &this.pages, this.id == 0, &this.stats),
            abi::vcpu::GET_REGS => uarg::write(arg, &state.core().regs().to_bytes())?,
            abi::vcpu::SET_REGS => {
                let regs = Regs::from_bytes(&uarg::read(arg)?).sanitized();
                state.core_mut().backend.set_regs(&regs);
            }
            abi::vcpu::GET_SREGS => uarg::write(arg, &state.get_sregs().to_bytes())?,
            abi::vcpu::SET_SREGS => {
                state.set_sregs(&this.vm, &Sregs::from_bytes(&uarg::read(arg)?))?
            }
            abi::vcpu::GET_FPU => uarg::write(arg, &state.get_fpu()?.to_bytes())?,
            abi::vcpu::SET_FPU => state.set_fpu(&Fpu::from_bytes(&uarg::read(arg)?))?,
            abi::vcpu::GET_XSAVE | abi::vcpu::GET_XSAVE2 => uarg::write(arg, &*state.xsave()?)?,
            abi::vcpu::SET_XSAVE => {
                let mut buf = KBox::new([0u8; XSAVE_UABI_SIZE], GFP_KERNEL)?;
                uarg::read_into(arg, &mut buf[..])?;
                state.set_xsave(&buf)?;
            }
            abi::vcpu::GET_XCRS => uarg::write(arg, &state.get_xcrs())?,
            abi::vcpu::SET_XCRS => state.set_xcrs(&uarg::read(arg)?)?,
            abi::vcpu::GET_MSRS => return state.msrs(&this.vm, arg, false),
            abi::vcpu::SET_MSRS => return state.msrs(&this.vm, arg, true),
            abi::vcpu::SET_CPUID2 => state.set_cpuid(arg)?,
            abi::vcpu::GET_CPUID2 => state.get_cpuid(arg)?,
            abi::vcpu::SET_SIGNAL_MASK => state.sigmask = sigmask_arg(arg)?,
            abi::vcpu::GET_MP_STATE => uarg::write(arg, &state.core_mut().mp_state().to_ne_bytes())?,
            abi::vcpu::SET_MP_STATE => state.core_mut().set_mp_state(u32::from_ne_bytes(uarg::read(arg)?))?,
            abi::vcpu::GET_LAPIC => {
                let mut image = KBox::new([0u8; abi::vcpu::LAPIC_STATE_SIZE], GFP_KERNEL)?;
                state.core().get_lapic(&this.vm, &mut image)?;
                uarg::write(arg, &*image)?;
            }
            abi::vcpu::SET_LAPIC => {
                let mut image = KBox::new([0u8; abi::vcpu::LAPIC_STATE_SIZE], GFP_KERNEL)?;
                uarg::read_into(arg, &mut image[..])?;
                state.core_mut().set_lapic(&this.vm, &image)?;
            }
            // rkvm cannot scale the TSC: the guest's runs at the host's
            // rate, and only that rate (or 0: the default) can be set.
            abi::vcpu::GET_TSC_KHZ => return Ok(x86::tsc_khz() as isize),
            abi::vcpu::SET_TSC_KHZ => {
                tsc::check_khz(arg as u32, x86::tsc_khz()).map_err(|_| EINVAL)?
            }
            abi::vcpu::NMI => state.core_mut().queue_nmi(),
            abi::vcpu::GET_DEBUGREGS => uarg::write(arg, &state.core().debugregs().to_bytes())?,
            abi::vcpu::SET_DEBUGREGS => {
                let r = DebugRegs::from_bytes(&uarg::read(arg)?).ok_or(EINVAL)?;
                state.core_mut().set_debugregs(&r);
            }
            abi::vcpu::SET_VAPIC_ADDR => {
                let gpa = u64::from_ne_bytes(uarg::read(arg)?);
                state.core_mut().set_vapic_addr(&this.vm, gpa)?;
            }
            abi::vcpu::SET_GUEST_DEBUG => {
                let request = guest_debug::Request::from_bytes(&uarg::read(arg)?);
                state.core_mut().set_guest_debug(&request)?;
            }
            abi::vcpu::GET_VCPU_EVENTS => uarg::write(arg, &state.core().events().to_bytes())?,
            abi::vcpu::SET_VCPU_EVENTS => {
                let e = VcpuEvents::from_bytes(&uarg::read(arg)?);
                e.check().map_err(|_| EINVAL)?;
                state.core_mut().set_events(&e)?;
            }
            abi::vcpu::X86_SETUP_MCE => {
                state.core_mut().setup_mce(u64::from_ne_bytes(uarg::read(arg)?))?
            }
            abi::vcpu::X86_SET_MCE => {
                state.core_mut().set_mce(&McError::from_bytes(&uarg::read(arg)?))?
            }
            abi::vcpu::INTERRUPT => {
                // As KVM: queued for the next entry (without an in-kernel
                // APIC a second call replaces the first; with one, it is
                // the PIC's and waits for LINT0).
                let irq = u32::from_ne_bytes(uarg::read(arg)?);
                state.core_mut().queue_pic_interrupt(u8::try_from(irq).map_err(|_| EINVAL)?)?;
            }
            // KVM answers unknown vCPU ioctls with EINVAL.
            _ => return Err(EINVAL),
        }
        Ok(0)
    }

    fn mmap(this: ArcBorrow<'_, Self>, _file: &File, vma: &VmaNew) -> Result {
        let pgoff = anon_fd::mmap_pgoff(vma);
        let npages = (vma.end() - vma.start()) / PAGE_SIZE;
        if let Some(ring_pgoff) = pgoff.checked_sub(abi::DIRTY_RING_PAGE_OFFSET) {
            return this.mmap_dirty_ring(vma, ring_pgoff, npages);
        }
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
