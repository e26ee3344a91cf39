//! The W4 client: many idle connections, and the file-descriptor limit they need.

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::Context;

/// The fd limit the harness and its children run with.
pub const NOFILE: u64 = 200_000;

/// Raises the RLIMIT_NOFILE soft limit to `n`, or to the hard limit when that is
/// lower and cannot be raised (no CAP_SYS_RESOURCE, as in some containers).
/// Returns the soft limit in force afterwards.
pub fn raise_nofile(n: u64) -> anyhow::Result<u64> {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `cur` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    let n: libc::rlim_t = n;
    if cur.rlim_cur >= n {
        return Ok(cur.rlim_cur);
    }
    for want in [
        libc::rlimit {
            rlim_cur: n,
            rlim_max: cur.rlim_max.max(n),
        },
        libc::rlimit {
            rlim_cur: cur.rlim_max.min(n),
            rlim_max: cur.rlim_max,
        },
    ] {
        // SAFETY: `want` is a valid rlimit; setrlimit only reads it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            return Ok(want.rlim_cur);
        }
    }
    Err(std::io::Error::last_os_error()).context("setrlimit(RLIMIT_NOFILE)")
}

/// Idle connections to hold in W4 under an fd limit of `nofile`: 10 000 when a
/// single-process proxy can hold both legs of each, else as many as fit.
pub fn idle_count(nofile: u64) -> usize {
    let fit = nofile.saturating_sub(1_000) / 2 / 500 * 500;
    fit.min(10_000) as usize
}

/// Opens `n` connections to `addr` and leaves them idle.
pub fn open(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<TcpStream>> {
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let c = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("idle connection {i} to {addr}"))?;
        conns.push(c);
    }
    Ok(conns)
}

/// How many of `conns` the far side has closed (EOF or error instead of "would block").
pub fn closed(conns: &[TcpStream]) -> usize {
    let mut buf = [0u8; 1];
    conns
        .iter()
        .filter(|c| {
            if c.set_nonblocking(true).is_err() {
                return true;
            }
            !matches!((&**c).read(&mut buf), Err(e) if e.kind() == ErrorKind::WouldBlock)
        })
        .count()
}

#[cfg(test)]
mod tests {
    #[test]
    fn idle_count_fits_both_legs_under_the_fd_limit() {
        assert_eq!(super::idle_count(1_048_576), 10_000);
        assert_eq!(super::idle_count(20_000), 9_500);
        assert_eq!(super::idle_count(1_024), 0);
    }
}
