//! The CPU time this process spends, read at the start and end of a measured run, so that a
//! run can say whether it was held up by the processor (about as many cores busy as the
//! machine has) or by waiting (the disk's syncs, a single busy thread).

use std::time::Duration;

/// CPU time used so far by all of this process's threads, user and system.
pub fn used() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the struct we pass, which lives for the call.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } != 0 {
        // Linux always has this clock; a zero reading shows up as a zero in the report
        // rather than failing a run that measured everything else.
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
