// SPDX-License-Identifier: GPL-2.0

//! NMI blocking on SVM without vNMI (APM 15.21.4): the CPU blocks NMIs
//! while the handler of an injected NMI runs, until its IRET, but tells
//! the hypervisor nothing. So the backend tracks it: an injected NMI
//! blocks, the guest's IRET is intercepted, and NMIs are unblocked once
//! the guest is seen past that IRET (at any later exit), as KVM does.
//!
//! To deliver a waiting NMI as soon as the IRET completes (or whatever
//! else held it back: an interrupt shadow, another event going in), the
//! backend single-steps the guest over it: the trap (`#DB`, intercepted
//! for the one step) is the NMI window.
//!
//! Pure logic (only `core`), tested on the host.

/// The guest's NMI blocking, as far as the backend knows it.
///
/// # Invariants
///
/// `iret_at` is set only while `masked`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct NmiBlocking {
    /// An injected NMI's handler has not returned yet.
    masked: bool,
    /// The handler's IRET was intercepted at this RIP and let run; NMIs
    /// unblock once the guest is past it.
    iret_at: Option<u64>,
}

impl NmiBlocking {
    /// An NMI goes in with the next entry: NMIs are blocked until its
    /// handler's IRET.
    pub(crate) fn injected(&mut self) {
        // INVARIANT: masked, and no IRET of this handler seen yet.
        self.masked = true;
        self.iret_at = None;
    }

    /// The guest's IRET at `rip` exited (intercepted) and will run next.
    pub(crate) fn iret_intercepted(&mut self, rip: u64) {
        // INVARIANT: only while masked.
        if self.masked {
            self.iret_at = Some(rip);
        }
    }

    /// After any exit, with the guest's RIP: past the intercepted IRET,
    /// NMIs are unblocked. (An exit in the middle of the IRET, e.g. a
    /// nested page fault on its stack, leaves RIP on it.)
    pub(crate) fn after_exit(&mut self, rip: u64) {
        if self.iret_at.is_some_and(|at| at != rip) {
            self.masked = false;
            self.iret_at = None;
        }
    }

    /// Whether NMIs are blocked.
    pub(crate) fn masked(&self) -> bool {
        self.masked
    }

    /// `KVM_SET_VCPU_EVENTS`: blocked or not, with no IRET seen yet.
    pub(crate) fn set_masked(&mut self, masked: bool) {
        // INVARIANT: no IRET seen.
        self.masked = masked;
        self.iret_at = None;
    }

    /// Whether the guest's IRET must exit: blocked, and not seen yet.
    pub(crate) fn intercept_iret(&self) -> bool {
        self.masked && self.iret_at.is_none()
    }

    /// Whether the next entry should single-step the guest so that a
    /// waiting NMI goes in as soon as it can: over the IRET that will
    /// unblock NMIs, or over whatever else holds it back (an interrupt
    /// shadow, another event going in), as KVM does. Blocked with the
    /// IRET not seen yet, the IRET's exit comes first.
    pub(crate) fn step_for_window(&self) -> bool {
        !self.intercept_iret()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_nmi_handler_blocks_until_past_its_iret() {
        let mut b = NmiBlocking::default();
        assert!(!b.masked() && !b.intercept_iret());
        b.injected();
        assert!(b.masked() && b.intercept_iret());
        // Exits in the handler change nothing.
        b.after_exit(0x1000);
        assert!(b.masked());
        // The IRET exits at 0x1100; it has not run yet.
        b.iret_intercepted(0x1100);
        assert!(b.masked() && !b.intercept_iret());
        b.after_exit(0x1100);
        assert!(b.masked(), "a fault in the IRET leaves RIP on it");
        // Past it: unblocked.
        b.after_exit(0x2000);
        assert!(!b.masked() && !b.intercept_iret());
    }

    #[test]
    fn stepping_serves_a_waiting_nmi() {
        let mut b = NmiBlocking::default();
        assert!(b.step_for_window(), "a shadow or an event: step over it");
        b.injected();
        assert!(!b.step_for_window(), "the IRET's exit comes first");
        b.iret_intercepted(0x1100);
        assert!(b.step_for_window(), "step over the IRET");
        b.after_exit(0x1101);
        assert!(!b.masked() && b.step_for_window());
    }

    #[test]
    fn an_iret_while_unblocked_is_not_tracked() {
        let mut b = NmiBlocking::default();
        b.iret_intercepted(0x1100);
        assert_eq!(b, NmiBlocking::default());
        b.after_exit(0x1200);
        assert!(!b.masked());
    }
}
