//! The open-file limit of `--mode idle`: raised to the hard limit before the relay child starts
//! (which inherits it), and checked against what N connections need.

use anyhow::{Result, bail};

/// Descriptors a process needs besides one per connection: stdio, the runtime's epoll and
/// wakers, the relay's listener and SQLite files, connections being opened and closed.
const SPARE: u64 = 256;

/// Raises this process's soft RLIMIT_NOFILE to its hard limit and returns the new soft limit.
/// Fails if `connections` idle connections cannot fit.
///
/// The limit is per process: this process holds the client end of every connection and the
/// relay child the server end, and each has the whole (inherited) limit to itself, so each
/// needs `connections + SPARE`. Only the system-wide table counts both ends.
pub fn raise_for(connections: usize) -> Result<u64> {
    let need = connections as u64 + SPARE;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        bail!(
            "cannot read the open-file limit: {}",
            std::io::Error::last_os_error()
        );
    }
    // An unlimited hard limit still stops at the kernel's per-process ceiling.
    let ceiling = if lim.rlim_max == libc::RLIM_INFINITY {
        read_proc_u64("/proc/sys/fs/nr_open").unwrap_or(1 << 20)
    } else {
        lim.rlim_max
    };
    if ceiling < need {
        bail!(
            "--clients {connections} needs {need} open files in this process and as many in the \
             relay (one per connection plus {SPARE} spare), but the hard limit is {ceiling} \
             (`ulimit -Hn`); raise the hard limit (as root, or in /etc/security/limits.conf) \
             or use at most {} clients",
            ceiling.saturating_sub(SPARE)
        );
    }
    if let Some(max) = read_proc_u64("/proc/sys/fs/file-max")
        && max < 2 * need
    {
        bail!(
            "--clients {connections} needs about {} open files system-wide (both ends of every \
             connection), but fs.file-max is {max}; raise it with sysctl or use fewer clients",
            2 * need
        );
    }
    if lim.rlim_cur < ceiling {
        lim.rlim_cur = ceiling;
        // SAFETY: setrlimit only reads the struct we pass, which lives for the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            bail!(
                "cannot raise the open-file limit to {ceiling}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(lim.rlim_cur)
}

fn read_proc_u64(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}
