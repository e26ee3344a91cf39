//! Polling with a deadline, in place of sleeps.

use std::time::{Duration, Instant};

/// Calls `probe` every 100 ms until it returns `Ok`, or panics after
/// `within` with the last error, naming `what`.
pub fn assert_eventually<T>(
    what: &str,
    within: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    match eventually(within, &mut probe) {
        Ok(v) => v,
        Err(last) => panic!("{what}: not true within {within:?}; last: {last}"),
    }
}

/// Like [`assert_eventually`] but returns the last error instead of panicking.
pub fn eventually<T>(
    within: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + within;
    loop {
        match probe() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_success() {
        let mut n = 0;
        let v = assert_eventually("counter", Duration::from_secs(5), || {
            n += 1;
            if n >= 3 {
                Ok(n)
            } else {
                Err(format!("n={n}"))
            }
        });
        assert_eq!(v, 3);
    }

    #[test]
    fn reports_the_last_error() {
        let r: Result<(), String> = eventually(Duration::from_millis(250), || Err("nope".into()));
        assert_eq!(r, Err("nope".into()));
    }
}
