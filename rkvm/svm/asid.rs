// SPDX-License-Identifier: GPL-2.0

//! Address-space IDs, allocated per CPU with generations.
//!
//! The TLB tags guest translations with the VMCB's ASID, so two vCPUs (or a
//! vCPU and stale entries of a vCPU that ran here before) must never share
//! an ASID on one CPU unless the TLB was flushed in between. Each CPU hands
//! out ASIDs `1..nr_asids` in order; when they run out, the CPU starts a new
//! generation at 1 and the first VMRUN of that generation flushes every
//! ASID's entries. A vCPU keeps its ASID while it stays on the same CPU in
//! the same generation; moving to another CPU or falling behind a
//! generation gives it a fresh one, which can hold no stale entry.
//!
//! Pure logic (only `core`), tested on the host.

/// One CPU's allocator state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AsidCpu {
    /// The next ASID to hand out.
    pub(crate) next: u32,
    /// The current generation; starts at 1 so 0 means "never allocated".
    pub(crate) generation: u64,
}

/// A vCPU's ASID and where it is valid.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct VcpuAsid {
    pub(crate) asid: u32,
    pub(crate) generation: u64,
    pub(crate) cpu: u32,
}

/// What a VMRUN must do about ASIDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AsidDecision {
    pub(crate) asid: VcpuAsid,
    /// The ASID changed: the VMCB's ASID field is dirty.
    pub(crate) changed: bool,
    /// A new generation started: flush every ASID on this CPU.
    pub(crate) flush_all: bool,
}

impl AsidCpu {
    /// A CPU that has handed out nothing yet.
    pub(crate) const fn new() -> Self {
        Self {
            next: 1,
            generation: 1,
        }
    }

    /// Decides the ASID for a VMRUN on `cpu` by a vCPU that last held
    /// `cur`, with `nr_asids` ASIDs on this CPU (ASID 0 is the host's).
    /// `force_new` asks for a fresh ASID even if `cur` is still valid: the
    /// way to flush one vCPU's translations without FlushByAsid.
    pub(crate) fn select(
        &mut self,
        cpu: u32,
        cur: VcpuAsid,
        nr_asids: u32,
        force_new: bool,
    ) -> AsidDecision {
        if !force_new && cur.cpu == cpu && cur.generation == self.generation && cur.asid != 0 {
            return AsidDecision {
                asid: cur,
                changed: false,
                flush_all: false,
            };
        }
        let mut flush_all = false;
        if self.next >= nr_asids.max(2) {
            self.generation = self.generation.wrapping_add(1);
            self.next = 1;
            flush_all = true;
        }
        let asid = VcpuAsid {
            asid: self.next,
            generation: self.generation,
            cpu,
        };
        self.next += 1;
        AsidDecision {
            asid,
            changed: true,
            flush_all,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_asid_on_same_cpu_and_generation() {
        let mut c = AsidCpu::new();
        let d = c.select(0, VcpuAsid::default(), 16, false);
        assert_eq!((d.asid.asid, d.changed, d.flush_all), (1, true, false));
        let again = c.select(0, d.asid, 16, false);
        assert_eq!((again.asid, again.changed), (d.asid, false));
    }

    #[test]
    fn migration_gives_a_fresh_asid() {
        let mut c0 = AsidCpu::new();
        let mut c1 = AsidCpu::new();
        let a = c0.select(0, VcpuAsid::default(), 16, false).asid;
        let b = c1.select(1, a, 16, false);
        assert!(b.changed);
        assert_eq!(b.asid.cpu, 1);
        // Back on CPU 0: its old ASID may since have been given to another
        // vCPU there only in a later generation, but rkvm does not rely on
        // that: the vCPU's record says CPU 1, so it gets a fresh one.
        let back = c0.select(0, b.asid, 16, false);
        assert!(back.changed);
        assert_eq!(back.asid.asid, 2);
    }

    #[test]
    fn wrap_around_starts_a_generation_and_flushes() {
        let mut c = AsidCpu::new();
        let nr = 4;
        let mut held = [VcpuAsid::default(); 5];
        for (i, h) in held.iter_mut().enumerate() {
            let d = c.select(0, VcpuAsid::default(), nr, false);
            *h = d.asid;
            // ASIDs 1..3 in generation 1, then wrap: 1 in generation 2.
            assert_eq!(d.flush_all, i == 3, "vCPU {i}");
        }
        assert_eq!(held[3].asid, 1);
        assert_eq!(held[3].generation, 2);
        // A vCPU of the old generation is not allowed to keep its ASID.
        let d = c.select(0, held[0], nr, false);
        assert!(d.changed);
        assert_ne!(d.asid.asid, held[3].asid);
    }

    #[test]
    fn no_two_live_vcpus_share_an_asid() {
        let mut c = AsidCpu::new();
        let nr = 5;
        let mut vcpus = [VcpuAsid::default(); 7];
        for round in 0..50 {
            let i = (round * 3) % vcpus.len();
            let d = c.select(0, vcpus[i], nr, round % 7 == 0);
            vcpus[i] = d.asid;
            // Among vCPUs valid in the current generation, ASIDs are unique.
            let live: [Option<u32>; 7] = core::array::from_fn(|j| {
                (vcpus[j].generation == c.generation).then_some(vcpus[j].asid)
            });
            for a in 0..live.len() {
                for b in a + 1..live.len() {
                    if let (Some(x), Some(y)) = (live[a], live[b]) {
                        assert_ne!(x, y, "round {round}");
                    }
                }
            }
            assert!(d.asid.asid >= 1 && d.asid.asid < nr);
        }
    }

    #[test]
    fn force_new_changes_asid() {
        let mut c = AsidCpu::new();
        let a = c.select(0, VcpuAsid::default(), 16, false).asid;
        let b = c.select(0, a, 16, true);
        assert!(b.changed);
        assert_ne!(a.asid, b.asid.asid);
    }
}
