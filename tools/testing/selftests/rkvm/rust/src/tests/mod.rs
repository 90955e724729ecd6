// SPDX-License-Identifier: GPL-2.0

//! The tests, in the order they are numbered in the TAP output (keep it:
//! the numbers are what the logs of earlier runs refer to).

mod clock;
mod debug;
mod dirty;
mod eventfd;
mod events;
mod fd_lifetime;
mod lapic;
mod memslot;
pub(crate) mod msr;
mod run;
mod stats;
mod system;
mod vcpu;

use kvm_ioctls::Cap;

use crate::harness::Test;
use clock::*;
use debug::*;
use dirty::*;
use eventfd::*;
use events::*;
use fd_lifetime::*;
use lapic::*;
use memslot::*;
use msr::*;
use run::*;
use stats::*;
use system::*;
use vcpu::*;

#[rustfmt::skip]
pub(crate) const TESTS: &[Test] = &[
    Test { name: "api_version", func: api_version, rkvm_only: false, guest: false, needs: None },
    Test { name: "api_version_bad_arg", func: api_version_bad_arg, rkvm_only: false, guest: false, needs: None },
    Test { name: "vcpu_mmap_size", func: vcpu_mmap_size, rkvm_only: false, guest: false, needs: None },
    Test { name: "caps_none_unimplemented", func: caps_none_unimplemented, rkvm_only: true, guest: false, needs: None },
    Test { name: "create_vm", func: create_vm, rkvm_only: false, guest: false, needs: None },
    Test { name: "create_vm_bad_type", func: create_vm_bad_type, rkvm_only: false, guest: false, needs: None },
    Test { name: "vm_check_extension", func: vm_check_extension, rkvm_only: false, guest: false, needs: None },
    Test { name: "unknown_ioctl_system", func: unknown_ioctl_system, rkvm_only: false, guest: false, needs: None },
    Test { name: "unknown_ioctl_vm", func: unknown_ioctl_vm, rkvm_only: false, guest: false, needs: None },
    Test { name: "vm_fd_other_process", func: vm_fd_other_process, rkvm_only: false, guest: false, needs: None },
    Test { name: "create_close_loop", func: create_close_loop, rkvm_only: false, guest: false, needs: None },
    Test { name: "threads_open_close_race", func: threads_open_close_race, rkvm_only: false, guest: false, needs: None },
    Test { name: "vm_outlives_system_fd", func: vm_outlives_system_fd, rkvm_only: false, guest: false, needs: None },
    Test { name: "memory_regions", func: memory_regions, rkvm_only: false, guest: false, needs: None },
    Test { name: "vcpu_reset_state_and_round_trips", func: vcpu_reset_state_and_round_trips, rkvm_only: false, guest: false, needs: None },
    Test { name: "run_real_mode_pio", func: run_real_mode_pio, rkvm_only: false, guest: true, needs: None },
    Test { name: "run_long_mode_exits", func: run_long_mode_exits, rkvm_only: false, guest: true, needs: None },
    Test { name: "msrs_index_list_and_round_trip", func: msrs_index_list_and_round_trip, rkvm_only: false, guest: true, needs: None },
    Test { name: "run_immediate_exit", func: run_immediate_exit, rkvm_only: false, guest: true, needs: None },
    Test { name: "run_triple_fault_shutdown", func: run_triple_fault_shutdown, rkvm_only: false, guest: true, needs: None },
    Test { name: "run_memory_follows_host_mappings", func: run_memory_follows_host_mappings, rkvm_only: false, guest: true, needs: None },
    Test { name: "stats_fds_follow_the_guest", func: stats_fds_follow_the_guest, rkvm_only: false, guest: true, needs: None },
    Test { name: "dirty_log_reports_written_pages", func: dirty_log_reports_written_pages, rkvm_only: false, guest: true, needs: None },
    Test { name: "dirty_ring_reports_written_pages", func: dirty_ring_reports_written_pages, rkvm_only: false, guest: true, needs: None },
    Test { name: "vcpu_events_round_trip", func: vcpu_events_round_trip, rkvm_only: false, guest: true, needs: None },
    Test { name: "vcpu_state_round_trips", func: vcpu_state_round_trips, rkvm_only: false, guest: true, needs: None },
    Test { name: "split_irqchip_lapic_state", func: split_irqchip_lapic_state, rkvm_only: false, guest: true, needs: Some(Cap::SplitIrqchip) },
    Test { name: "split_irqchip_msi_wakes_halted_vcpu", func: split_irqchip_msi_wakes_halted_vcpu, rkvm_only: false, guest: true, needs: Some(Cap::SplitIrqchip) },
    Test { name: "msr_features_and_mce", func: msr_features_and_mce, rkvm_only: false, guest: false, needs: None },
    Test { name: "clock_get_set_round_trip", func: clock_get_set_round_trip, rkvm_only: false, guest: false, needs: None },
    Test { name: "ioeventfd_doorbells", func: ioeventfd_doorbells, rkvm_only: false, guest: true, needs: Some(Cap::Ioeventfd) },
    Test { name: "irqfd_injects_msi", func: irqfd_injects_msi, rkvm_only: false, guest: true, needs: Some(Cap::Irqfd) },
    Test { name: "xsave2_matches_xsave", func: xsave2_matches_xsave, rkvm_only: false, guest: true, needs: Some(Cap::Xsave2) },
    Test { name: "guest_debug_steps_and_breakpoint", func: guest_debug_steps_and_breakpoint, rkvm_only: false, guest: true, needs: Some(Cap::SetGuestDebug) },
];
