// SPDX-License-Identifier: GPL-2.0

//! The fd `KVM_GET_STATS_FD` returns: a read-only file of a VM's or a
//! vCPU's binary statistics (layout in `stats.rs`), read live.

use kernel::{
    fmt,
    fs::File,
    prelude::*,
    str::{CStr, CString},
    sync::{Arc, ArcBorrow},
};

use crate::{
    anon_fd::{self, AnonFile},
    stats::{self, Desc},
    uarg,
};

/// Most statistics one object has.
pub(crate) const MAX_STATS: usize = 8;

/// Something with statistics: a VM or a vCPU.
pub(crate) trait StatsSource: Send + Sync + 'static {
    /// Its statistics, at most `MAX_STATS`.
    const DESCS: &'static [Desc];
    /// Their current values, in the order of `DESCS`.
    fn values(&self, out: &mut [u64]);
}

/// An open statistics fd: holds its VM or vCPU.
///
/// # Invariants
///
/// `T::DESCS.len() <= MAX_STATS`.
pub(crate) struct StatsFile<T: StatsSource> {
    source: Arc<T>,
    /// `kvm-<pid>` or `kvm-<pid>/vcpu-<id>`, as KVM names them.
    id: CString,
}

impl<T: StatsSource> StatsFile<T> {
    /// Opens a statistics fd of `source`, named `id`, and returns its number.
    pub(crate) fn create_fd(source: Arc<T>, id: fmt::Arguments<'_>) -> Result<isize> {
        if T::DESCS.len() > MAX_STATS {
            return Err(EINVAL);
        }
        let id = CString::try_from_fmt(id)?;
        // INVARIANT: checked above.
        let file = Arc::new(Self { source, id }, GFP_KERNEL)?;
        Ok(anon_fd::install(file)? as isize)
    }
}

impl<T: StatsSource> AnonFile for StatsFile<T> {
    const NAME: &'static CStr = c"rkvm-stats";
    const READ_ONLY_FILE: bool = true;

    fn ioctl(_this: ArcBorrow<'_, Self>, _file: &File, _cmd: u32, _arg: usize) -> Result<isize> {
        Err(ENOTTY)
    }

    fn read(this: ArcBorrow<'_, Self>, buf: usize, len: usize, pos: &mut i64) -> Result<usize> {
        let n = T::DESCS.len();
        let mut values = [0u64; MAX_STATS];
        this.source.values(&mut values[..n]);
        let total = stats::file_len(n);
        let mut file = KVec::from_elem(0u8, total, GFP_KERNEL)?;
        // `render` truncates the id to its field.
        stats::render(this.id.to_bytes(), T::DESCS, &values[..n], &mut file);
        let window = stats::window(total, *pos, len);
        let out = file.get(window.clone()).ok_or(EINVAL)?;
        uarg::write(buf, out)?;
        *pos += out.len() as i64;
        Ok(out.len())
    }
}
