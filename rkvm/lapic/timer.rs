// SPDX-License-Identifier: GPL-2.0

//! The APIC timer's arithmetic: divide configuration, periods, the current
//! count, and TSC deadlines in host time.
//!
//! The APIC bus runs at 1 GHz, as KVM's default (`APIC_BUS_CYCLE_NS` 1), so
//! one timer tick is `divisor` nanoseconds.
//!
//! Pure logic (only `core`), tested on the host.

/// Nanoseconds per APIC bus cycle.
pub(crate) const BUS_CYCLE_NS: u64 = 1;

/// The shortest period a periodic timer may have, as KVM's
/// `min_timer_period_us` (200 µs): a guest cannot make the host take
/// timer interrupts faster than that.
pub(crate) const MIN_PERIOD_NS: u64 = 200_000;

/// LVT timer modes (bits 18:17).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum TimerMode {
    OneShot,
    Periodic,
    TscDeadline,
}

impl TimerMode {
    /// The mode an LVT timer entry selects (the reserved encoding 3 counts
    /// as one-shot, as KVM).
    pub(crate) fn from_lvt(lvt: u32) -> Self {
        match (lvt >> 17) & 3 {
            1 => Self::Periodic,
            2 => Self::TscDeadline,
            _ => Self::OneShot,
        }
    }
}

/// The divisor a divide configuration register selects: bits 3, 1:0
/// encode 2, 4, ..., 128, and 0b111 divides by 1.
pub(crate) fn divisor(dcr: u32) -> u64 {
    let v = ((dcr & 8) >> 1) | (dcr & 3);
    if v == 7 {
        1
    } else {
        2 << v
    }
}

/// How long `count` ticks take with divide configuration `dcr`.
pub(crate) fn count_to_ns(count: u32, dcr: u32) -> u64 {
    count as u64 * divisor(dcr) * BUS_CYCLE_NS
}

/// The current-count register `remaining_ns` before expiry.
pub(crate) fn ns_to_count(remaining_ns: u64, dcr: u32) -> u32 {
    (remaining_ns / (divisor(dcr) * BUS_CYCLE_NS)).min(u32::MAX as u64) as u32
}

/// The period a periodic timer runs with: at least [`MIN_PERIOD_NS`].
pub(crate) fn periodic_ns(period_ns: u64) -> u64 {
    period_ns.max(MIN_PERIOD_NS)
}

/// Nanoseconds from guest TSC `now` until guest TSC `deadline` at
/// `tsc_khz` (0 if it has passed).
pub(crate) fn tsc_delta_ns(deadline: u64, now: u64, tsc_khz: u32) -> u64 {
    if deadline <= now || tsc_khz == 0 {
        return 0;
    }
    // No 128-bit division in the kernel: whole milliseconds, then the rest.
    let (ticks, khz) = (deadline - now, tsc_khz as u64);
    (ticks / khz)
        .saturating_mul(1_000_000)
        .saturating_add(ticks % khz * 1_000_000 / khz)
}

/// A running one-shot or periodic timer, as the current-count register
/// sees it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Countdown {
    /// Host time (ns) the current period started.
    pub(crate) start_ns: u64,
    /// Length of the current period.
    pub(crate) period_ns: u64,
    /// The period after it (periodic), or 0 (one-shot).
    pub(crate) reload_ns: u64,
}

impl Countdown {
    /// The current count at host time `now_ns`: what is left of the
    /// current period, the periods that passed taken off (periodic), or 0
    /// once a one-shot expired.
    pub(crate) fn current_count(&self, now_ns: u64, dcr: u32) -> u32 {
        let elapsed = now_ns.saturating_sub(self.start_ns);
        let left = if elapsed < self.period_ns {
            self.period_ns - elapsed
        } else if self.reload_ns == 0 {
            0
        } else {
            let over = (elapsed - self.period_ns) % self.reload_ns;
            self.reload_ns - over
        };
        ns_to_count(left, dcr)
    }

    /// The countdown after the divide configuration changed from `old` to
    /// `new` at `now_ns`: the ticks left are kept, each now `new`'s length.
    pub(crate) fn rescaled(&self, now_ns: u64, old: u32, new: u32) -> Self {
        let ticks = self.current_count(now_ns, old);
        let reload_ticks = self.reload_ns / divisor(old);
        Self {
            start_ns: now_ns,
            period_ns: count_to_ns(ticks, new),
            reload_ns: if self.reload_ns == 0 {
                0
            } else {
                periodic_ns(reload_ticks * divisor(new))
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divisors() {
        let want = [(0b0000, 2), (0b0001, 4), (0b0010, 8), (0b0011, 16), (0b1000, 32), (0b1001, 64), (0b1010, 128), (0b1011, 1)];
        for (dcr, d) in want {
            assert_eq!(divisor(dcr), d, "dcr {dcr:#b}");
        }
        // Bit 2 is reserved and ignored.
        assert_eq!(divisor(0b0100), 2);
        assert_eq!(count_to_ns(1000, 0b1011), 1000);
        assert_eq!(count_to_ns(u32::MAX, 0b1010), u32::MAX as u64 * 128);
    }

    #[test]
    fn modes() {
        assert_eq!(TimerMode::from_lvt(0), TimerMode::OneShot);
        assert_eq!(TimerMode::from_lvt(1 << 17), TimerMode::Periodic);
        assert_eq!(TimerMode::from_lvt(2 << 17), TimerMode::TscDeadline);
        assert_eq!(TimerMode::from_lvt(3 << 17), TimerMode::OneShot);
    }

    #[test]
    fn current_count() {
        let one = Countdown { start_ns: 1000, period_ns: 800, reload_ns: 0 };
        assert_eq!(one.current_count(1000, 0b1011), 800);
        assert_eq!(one.current_count(1600, 0b0000), 100);
        assert_eq!(one.current_count(5000, 0b1011), 0);
        let per = Countdown { start_ns: 0, period_ns: 1000, reload_ns: 1000 };
        assert_eq!(per.current_count(2300, 0b1011), 700);
        // Before the start (clock skew): the full period.
        assert_eq!(per.current_count(0, 0b1011), 1000);
    }

    #[test]
    fn rescale_keeps_ticks() {
        let c = Countdown { start_ns: 0, period_ns: 2000, reload_ns: 0 };
        // 2000 ns at /2 is 1000 ticks; 500 ns in, 750 left; at /4, 3000 ns.
        let r = c.rescaled(500, 0b0000, 0b0001);
        assert_eq!((r.start_ns, r.period_ns, r.reload_ns), (500, 3000, 0));
    }

    #[test]
    fn tsc_deadlines() {
        assert_eq!(tsc_delta_ns(100, 200, 1_000_000), 0);
        // 2 GHz: 2000 ticks are 1 µs.
        assert_eq!(tsc_delta_ns(3000, 1000, 2_000_000), 1000);
        assert_eq!(tsc_delta_ns(u64::MAX, 0, 1), u64::MAX);
        assert_eq!(periodic_ns(10), MIN_PERIOD_NS);
    }
}
