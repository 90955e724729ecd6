// SPDX-License-Identifier: GPL-2.0

//! The guest's TSC rate (`KVM_GET_TSC_KHZ`, `KVM_SET_TSC_KHZ`).
//!
//! rkvm cannot scale the TSC: a guest's counts at the host's rate, offset
//! so that all the VM's vCPUs count from 0 at its creation. A VMM may still
//! set the rate it reads (QEMU does, with or without scaling): a rate
//! within KVM's tolerance of the host's needs no scaling, and 0 means the
//! host's; anything else is refused (KVM would scale, or emulate a faster
//! TSC by catching up, which rkvm does not).
//!
//! Pure logic (only `core`), tested on the host.

/// KVM's `tsc_tolerance_ppm` default: a rate this close to the host's is
/// the host's.
pub(crate) const TOLERANCE_PPM: u64 = 250;

/// Whether a VMM may set the guest's TSC rate to `khz` on a host whose TSC
/// runs at `host_khz`.
pub(crate) fn check_khz(khz: u32, host_khz: u32) -> Result<(), ()> {
    if khz == 0 {
        return Ok(());
    }
    let diff = u64::from(khz.abs_diff(host_khz));
    if diff * 1_000_000 <= TOLERANCE_PPM * u64::from(host_khz) {
        Ok(())
    } else {
        Err(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_rate_and_its_tolerance() {
        let host = 2_000_000;
        assert_eq!(check_khz(0, host), Ok(()));
        assert_eq!(check_khz(host, host), Ok(()));
        // 250 ppm of 2 GHz is 500 kHz.
        assert_eq!(check_khz(host + 500, host), Ok(()));
        assert_eq!(check_khz(host - 500, host), Ok(()));
        assert_eq!(check_khz(host + 501, host), Err(()));
        assert_eq!(check_khz(host - 501, host), Err(()));
        assert_eq!(check_khz(1, host), Err(()));
        assert_eq!(check_khz(u32::MAX, host), Err(()));
    }
}
