// SPDX-License-Identifier: GPL-2.0

//! The kernel side of one vCPU's local APIC: the part other threads reach
//! ([`ApicShared`]: mailbox, the halted vCPU's wait, the host timer) and
//! the part its vCPU thread owns ([`VcpuApic`]: the registers, the timer's
//! handle, the MP state).
//!
//! The APIC timer is a host hrtimer in [`ApicShared`]. Its callback (hard
//! IRQ context) only posts the expiry to the mailbox and gets the vCPU to
//! look, as KVM's `apic_timer_expired`; the vCPU thread delivers the LVT
//! entry. A periodic timer re-arms itself in the callback.

use core::sync::atomic::{AtomicU64, Ordering};

use kernel::{
    impl_has_hr_timer,
    prelude::*,
    sync::{Arc, ArcBorrow},
    time::{
        hrtimer::{
            ArcHrTimerHandle, HrTimer, HrTimerCallback, HrTimerCallbackContext,
            HrTimerPointer, HrTimerRestart, RelativeMode,
        },
        Delta, Instant, Monotonic,
    },
};

use super::{mailbox::Mailbox, Lapic, TimerCmd};
use crate::shim::wait::{self, VcpuWait};

/// What of a vCPU's APIC other threads and the timer callback reach.
#[pin_data]
pub(crate) struct ApicShared {
    pub(crate) mailbox: Mailbox,
    pub(crate) wait: VcpuWait,
    #[pin]
    timer: HrTimer<Self>,
    /// The period a running periodic timer re-arms with (ns), 0 if the
    /// timer is one-shot or stopped.
    period_ns: AtomicU64,
}

impl ApicShared {
    pub(crate) fn new() -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self {
                mailbox: Mailbox::new(),
                wait: VcpuWait::new(),
                timer <- HrTimer::new(),
                period_ns: AtomicU64::new(0),
            }),
            GFP_KERNEL,
        )
    }

    /// After something was posted to the mailbox: gets the vCPU to look,
    /// out of guest mode or out of its halt. Any context.
    pub(crate) fn notify(&self) {
        if let Some(cpu) = self.mailbox.ring() {
            wait::kick_cpu(cpu);
        }
        self.wait.wake();
    }
}

impl HrTimerCallback for ApicShared {
    type Pointer<'a> = Arc<Self>;

    fn run(this: ArcBorrow<'_, Self>, mut ctx: HrTimerCallbackContext<'_, Self>) -> HrTimerRestart {
        this.mailbox.post_timer();
        this.notify();
        match this.period_ns.load(Ordering::Relaxed) {
            0 => HrTimerRestart::NoRestart,
            period => {
                ctx.forward_now(Delta::from_nanos(period as i64));
                HrTimerRestart::Restart
            }
        }
    }
}

impl_has_hr_timer! {
    impl HasHrTimer<Self> for ApicShared {
        mode: RelativeMode<Monotonic>, field: self.timer
    }
}

impl MpState {
    /// As KVM creates vCPUs with an in-kernel APIC: the BSP runs, the APs
    /// wait for INIT.
    pub(crate) fn at_reset(is_bsp: bool) -> Self {
        if is_bsp {
            Self::Runnable
        } else {
            Self::Uninitialized
        }
    }
}

/// `KVM_MP_STATE_*` as the in-kernel APIC keeps them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum MpState {
    Runnable,
    /// An AP waiting for INIT (set by the VMM).
    Uninitialized,
    /// An AP after INIT, waiting for a SIPI.
    InitReceived,
    /// After HLT, until an interrupt it can take arrives.
    Halted,
}

/// A vCPU's local APIC as its thread owns it.
pub(crate) struct VcpuApic {
    pub(crate) regs: Lapic,
    pub(crate) shared: Arc<ApicShared>,
    /// The host timer while armed (dropping it cancels the timer).
    timer: Option<ArcHrTimerHandle<ApicShared>>,
    pub(crate) mp_state: MpState,
    pub(crate) is_bsp: bool,
    /// The vector of the last SIPI (`KVM_SET_MP_STATE`'s "SIPI received"
    /// delivers it again).
    pub(crate) sipi_vector: u8,
    /// The host time the APIC's clock counts from ([`Self::now_ns`]).
    epoch: Instant<Monotonic>,
    /// The guest-physical address of the VMM's TPR-patching word
    /// (`KVM_SET_VAPIC_ADDR`), kept in step with the TPR around entries.
    pub(crate) vapic_addr: Option<u64>,
}

impl VcpuApic {
    pub(crate) fn new(shared: Arc<ApicShared>, vcpu_id: u32, is_bsp: bool) -> Self {
        let regs = Lapic::new(vcpu_id, is_bsp);
        shared.mailbox.set_identity(&regs.identity());
        Self {
            regs,
            shared,
            timer: None,
            mp_state: MpState::at_reset(is_bsp),
            is_bsp,
            sipi_vector: 0,
            epoch: Instant::now(),
            vapic_addr: None,
        }
    }

    /// Host time in nanoseconds, for the timer's counts (only differences
    /// matter).
    pub(crate) fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos().max(0) as u64
    }

    pub(crate) fn mailbox(&self) -> &Mailbox {
        &self.shared.mailbox
    }

    /// Reprograms the host timer. Stopping waits for a running callback;
    /// expiries it posted for the old setting are dropped, so the guest
    /// never sees an interrupt of a timer it has reprogrammed.
    pub(crate) fn program_timer(&mut self, cmd: TimerCmd) {
        self.shared.period_ns.store(0, Ordering::Relaxed);
        // Dropping the handle cancels the timer and waits for its callback.
        self.timer = None;
        self.shared.mailbox.take_timer();
        if let TimerCmd::Arm { delay_ns, period_ns } = cmd {
            self.shared.period_ns.store(period_ns, Ordering::Relaxed);
            let delay = Delta::from_nanos(delay_ns.min(i64::MAX as u64) as i64);
            self.timer = Some(self.shared.clone().start(delay));
        }
    }

    /// Publishes the identity after a change of ID, LDR, DFR, SVR or base.
    pub(crate) fn publish_identity(&self) {
        self.shared.mailbox.set_identity(&self.regs.identity());
    }

    /// RESET (`init == false`) or INIT of the APIC.
    pub(crate) fn reset(&mut self, init: bool) {
        self.program_timer(TimerCmd::Stop);
        self.regs.reset(init, self.is_bsp);
        self.shared.mailbox.clear();
        self.publish_identity();
    }
}
