// SPDX-License-Identifier: GPL-2.0

//! Host tests of the local APIC's register model.

use super::*;

fn enabled(id: u32) -> (Lapic, Mailbox) {
    let mut a = Lapic::new(id, id == 0);
    assert_eq!(a.write(reg::SVR, 0x1ff, 0), Ok(Action::Identity));
    (a, Mailbox::new())
}

#[test]
fn reset_values() {
    let a = Lapic::new(3, false);
    let mb = Mailbox::new();
    assert_eq!(a.read(reg::ID, &mb, 0), Some(3 << 24));
    assert_eq!(a.read(reg::VERSION, &mb, 0), Some(0x50014));
    assert_eq!(a.read(reg::SVR, &mb, 0), Some(0xff));
    assert_eq!(a.read(reg::DFR, &mb, 0), Some(0xffff_ffff));
    assert_eq!(a.read(reg::LVT_LINT0, &mb, 0), Some(LVT_MASKED));
    assert_eq!(a.base_msr(), 0xfee0_0800);
    assert!(!a.accepts_pic_interrupt());
    // The BSP: BSP flag, and LINT0 open for the PIC.
    let bsp = Lapic::new(0, true);
    assert_eq!(bsp.base_msr(), 0xfee0_0900);
    assert_eq!(bsp.read(reg::LVT_LINT0, &mb, 0), Some(0x700));
    assert!(bsp.accepts_pic_interrupt());
    // EOI is write-only.
    assert_eq!(a.read(reg::EOI, &mb, 0), None);
}

#[test]
fn priorities() {
    let (mut a, mb) = enabled(0);
    mb.post_vector(0x45, false);
    assert_eq!(a.deliverable(&mb), Some(0x45));
    a.set_tpr(0x50);
    assert_eq!(a.deliverable(&mb), None);
    assert_eq!(a.tpr_threshold(&mb), Some(4));
    a.set_tpr(0x40);
    // Same class as the TPR: still blocked.
    assert_eq!(a.deliverable(&mb), None);
    a.set_tpr(0x3f);
    assert_eq!(a.deliverable(&mb), Some(0x45));
    a.acknowledge(0x45, &mb);
    assert_eq!(a.ppr(), 0x40);
    assert_eq!(a.read(reg::ISR + 0x20, &mb, 0), Some(1 << 5));
    // A lower class waits for the EOI; a higher one preempts.
    mb.post_vector(0x41, false);
    assert_eq!(a.deliverable(&mb), None);
    mb.post_vector(0x61, false);
    assert_eq!(a.deliverable(&mb), Some(0x61));
    assert_eq!(a.write(reg::EOI, 0, 0), Ok(Action::Eoi(Some(0x45))));
    assert_eq!(a.write(reg::EOI, 0, 0), Ok(Action::Eoi(None)));
}

#[test]
fn vapic_word() {
    let (mut a, mb) = enabled(0);
    assert_eq!(a.vapic_word(&mb), 0);
    a.set_tpr(0x21);
    mb.post_vector(0x45, false);
    a.acknowledge(0x45, &mb);
    mb.post_vector(0x93, false);
    // TPR, the in-service class, the highest request.
    assert_eq!(a.vapic_word(&mb), 0x93_00_40_21);
}

#[test]
fn icr_sends() {
    let (mut a, mb) = enabled(0);
    assert_eq!(a.write(reg::ICR2, 0x0312_3456, 0), Ok(Action::None));
    assert_eq!(a.read(reg::ICR2, &mb, 0), Some(0x0300_0000));
    let Ok(Action::Send(irq)) = a.write(reg::ICR, 0x4040 | ICR_BUSY, 0) else {
        panic!("an ICR write sends");
    };
    assert_eq!((irq.vector, irq.dest), (0x40, 3));
    assert_eq!(a.read(reg::ICR, &mb, 0), Some(0x4040), "never busy");
}

#[test]
fn software_disable_masks_lvts() {
    let (mut a, mb) = enabled(1);
    a.write(reg::LVT_LINT1, 0x400, 0).unwrap();
    assert_eq!(a.read(reg::LVT_LINT1, &mb, 0), Some(0x400));
    a.write(reg::SVR, 0xff, 0).unwrap();
    assert_eq!(a.read(reg::LVT_LINT1, &mb, 0), Some(0x400 | LVT_MASKED));
    // While disabled, LVT writes stay masked.
    a.write(reg::LVT_ERROR, 0xfe, 0).unwrap();
    assert_eq!(a.read(reg::LVT_ERROR, &mb, 0), Some(0xfe | LVT_MASKED));
}

#[test]
fn timer_modes() {
    let (mut a, mb) = enabled(0);
    a.write(reg::TIMER_DIVIDE, 0b1011, 0).unwrap();
    a.write(reg::LVT_TIMER, 0x20, 0).unwrap();
    assert_eq!(
        a.write(reg::TIMER_INITIAL, 1_000_000, 100),
        Ok(Action::Timer(TimerCmd::Arm { delay_ns: 1_000_000, period_ns: 0 }))
    );
    assert_eq!(a.read(reg::TIMER_CURRENT, &mb, 400_100), Some(600_000));
    assert_eq!(a.timer_expired(), Some(0x20));
    assert_eq!(a.read(reg::TIMER_CURRENT, &mb, 2_000_000), Some(0));
    // Periodic: at least 200 µs, whatever the count.
    a.write(reg::LVT_TIMER, 0x20 | 1 << 17, 0).unwrap();
    assert_eq!(
        a.write(reg::TIMER_INITIAL, 10, 0),
        Ok(Action::Timer(TimerCmd::Arm { delay_ns: 200_000, period_ns: 200_000 }))
    );
    assert_eq!(a.write(reg::TIMER_INITIAL, 0, 0), Ok(Action::Timer(TimerCmd::Stop)));
    // TSC-deadline mode only with the CPUID bit; switching stops.
    a.write(reg::LVT_TIMER, 0x20 | 2 << 17, 0).unwrap();
    assert_eq!(a.timer_mode(), TimerMode::OneShot);
    a.set_features(ApicFeatures { tsc_deadline: true, ..Default::default() });
    a.write(reg::TIMER_INITIAL, 5000, 0).unwrap();
    assert_eq!(a.write(reg::LVT_TIMER, 0x20 | 2 << 17, 0), Ok(Action::Timer(TimerCmd::Stop)));
    assert_eq!(a.read(reg::TIMER_INITIAL, &mb, 0), Some(0));
    assert_eq!(a.write(reg::TIMER_INITIAL, 5000, 0), Ok(Action::None), "ignored");
    assert_eq!(
        a.set_tsc_deadline(3000, 1000, 1_000_000),
        Action::Timer(TimerCmd::Arm { delay_ns: 2000, period_ns: 0 })
    );
    assert_eq!(a.tsc_deadline(), 3000);
    // Masked: the expiry delivers nothing, but ends the deadline.
    a.write(reg::LVT_TIMER, 0x20 | 2 << 17 | LVT_MASKED, 0).unwrap();
    assert_eq!(a.timer_expired(), None);
    assert_eq!(a.tsc_deadline(), 0);
}

#[test]
fn x2apic_api_state_format() {
    let mut a = Lapic::new(0x105, false);
    a.set_features(ApicFeatures { x2apic: true, tsc_deadline: false, maxphyaddr: 40 });
    assert!(a.set_base(0xfee0_0c00, true).is_ok());
    let mb = Mailbox::new();
    let mut img = [0u8; STATE_SIZE];
    let id = |img: &[u8; STATE_SIZE]| u32::from_le_bytes(img[0x20..0x24].try_into().unwrap());
    // KVM's legacy format: the ID shifted as in xAPIC mode (bits lost).
    a.state(&mb, 0, false, &mut img);
    assert_eq!(id(&img), 0x0500_0000);
    assert!(a.accepts_state(&img, false), "ignored without the API");
    // KVM_X2APIC_API_USE_32BIT_IDS: in full, and only the APIC's own.
    a.state(&mb, 0, true, &mut img);
    assert_eq!(id(&img), 0x105);
    assert!(a.accepts_state(&img, true));
    img[0x21] = 0;
    assert!(!a.accepts_state(&img, true), "ID 5");
}

#[test]
fn base_msr_transitions() {
    let mut a = Lapic::new(5, false);
    a.set_features(ApicFeatures { x2apic: true, tsc_deadline: false, maxphyaddr: 40 });
    // Reserved bits, EXTD without ENABLE.
    assert!(a.set_base(0xfee0_0801, false).is_err());
    assert!(a.set_base(1 << 45 | 0xfee0_0800, false).is_err());
    assert!(a.set_base(0xfee0_0400, false).is_err());
    // xAPIC -> x2APIC: the ID and LDR come from the vCPU.
    assert!(a.set_base(0xfee0_0c00, false).is_ok());
    assert_eq!(a.mode(), ApicMode::X2Apic);
    let mb = Mailbox::new();
    assert_eq!(a.read_x2apic_msr(0x802, &mb, 0), Ok(5));
    assert_eq!(a.read_x2apic_msr(0x80d, &mb, 0), Ok(0x20));
    // x2APIC -> xAPIC is refused to the guest, allowed to the VMM.
    assert!(a.set_base(0xfee0_0800, false).is_err());
    assert!(a.set_base(0, false).is_ok());
    assert!(a.set_base(0xfee0_0c00, false).is_err(), "disabled -> x2APIC");
    assert!(a.set_base(0xfee0_0800, false).is_ok());
    assert_eq!(a.identity().id, 5);
    // Without x2APIC in CPUID, EXTD is reserved.
    a.set_features(ApicFeatures::default());
    assert!(a.set_base(0xfee0_0c00, true).is_err());
}

#[test]
fn x2apic_msrs() {
    let mut a = Lapic::new(2, false);
    a.set_features(ApicFeatures { x2apic: true, ..Default::default() });
    let mb = Mailbox::new();
    assert!(a.read_x2apic_msr(0x802, &mb, 0).is_err(), "xAPIC mode");
    a.set_base(0xfee0_0c00, false).unwrap();
    a.write_x2apic_msr(0x80f, 0x1ff, 0).unwrap();
    // Read-only, absent in x2APIC mode, and 64-bit values.
    assert!(a.write_x2apic_msr(0x802, 0, 0).is_err());
    assert!(a.read_x2apic_msr(0x80e, &mb, 0).is_err(), "no DFR");
    assert!(a.write_x2apic_msr(0x831, 0, 0).is_err(), "no ICR2");
    assert!(a.write_x2apic_msr(0x808, 1 << 32, 0).is_err());
    assert!(a.write_x2apic_msr(0x828, 1, 0).is_err(), "ESR takes only 0");
    let Ok(Action::Send(irq)) = a.write_x2apic_msr(0x830, 7 << 32 | 0x4031, 0) else {
        panic!("an ICR write sends");
    };
    assert_eq!((irq.vector, irq.dest), (0x31, 7));
    assert_eq!(a.read_x2apic_msr(0x830, &mb, 0), Ok(7 << 32 | 0x4031));
    assert!(a.write_x2apic_msr(0x830, 1 << 20, 0).is_err(), "reserved ICR bit");
    let Ok(Action::Send(irq)) = a.write_x2apic_msr(0x83f, 0x55, 0) else {
        panic!("self IPI");
    };
    assert_eq!((irq.vector, irq.shorthand), (0x55, route::Shorthand::Myself));
    // MMIO reads all-ones in x2APIC mode, writes nothing.
    assert_eq!(a.mmio_read(reg::TPR, 4, &mb, 0), 0xffff_ffff);
    assert_eq!(a.mmio_write(reg::TPR, 4, 0x20, 0), Action::None);
    assert_eq!(a.tpr(), 0);
}

#[test]
fn mmio_access_rules() {
    let (mut a, mb) = enabled(4);
    a.write(reg::TPR, 0x3c, 0).unwrap();
    assert_eq!(a.mmio_read(reg::TPR, 4, &mb, 0), 0x3c);
    assert_eq!(a.mmio_read(reg::ID + 3, 1, &mb, 0), 4);
    assert_eq!(a.mmio_read(reg::ID + 2, 4, &mb, 0), 0, "crosses the register");
    // Unaligned or narrow writes are dropped.
    assert_eq!(a.mmio_write(reg::TPR, 2, 0x10, 0), Action::None);
    assert_eq!(a.mmio_write(reg::TPR + 4, 4, 0x10, 0), Action::None);
    assert_eq!(a.tpr(), 0x3c);
    // Writes to read-only registers are dropped too.
    a.mmio_write(reg::VERSION, 4, 0, 0);
    assert_eq!(a.read(reg::VERSION, &mb, 0), Some(0x50014));
}

#[test]
fn state_round_trip() {
    let (mut a, mb) = enabled(1);
    a.write(reg::TPR, 0x20, 0).unwrap();
    a.write(reg::LVT_TIMER, 0x30 | 1 << 17, 0).unwrap();
    a.write(reg::TIMER_DIVIDE, 0b1011, 0).unwrap();
    a.write(reg::TIMER_INITIAL, 1_000_000, 0).unwrap();
    mb.post_vector(0x80, true);
    let mut img = [0u8; STATE_SIZE];
    a.state(&mb, 250_000, false, &mut img);
    let word = |img: &[u8; STATE_SIZE], off: usize| u32::from_le_bytes(img[off..off + 4].try_into().unwrap());
    assert_eq!(word(&img, reg::TIMER_CURRENT as usize), 750_000);
    assert_eq!(word(&img, (reg::IRR + 0x40) as usize), 1);
    assert_eq!(word(&img, (reg::TMR + 0x40) as usize), 1);
    let mut b = Lapic::new(1, false);
    let (irr, tmr, cmd) = b.set_state(&img, 0);
    assert_eq!(irr[4], 1);
    assert_eq!(tmr[4], 1);
    // Restarted from the current count, then the full period.
    assert_eq!(cmd, TimerCmd::Arm { delay_ns: 750_000, period_ns: 1_000_000 });
    let mut img2 = [0u8; STATE_SIZE];
    b.state(&mb, 0, false, &mut img2);
    assert_eq!(img[..], img2[..]);
    // Any bytes at all are taken without a panic.
    let junk: [u8; STATE_SIZE] = core::array::from_fn(|i| (i * 7 + 3) as u8);
    let mut c = Lapic::new(2, false);
    c.set_state(&junk, 0);
    c.state(&mb, 1, false, &mut img2);
    let _ = c.timer_expired();
}
