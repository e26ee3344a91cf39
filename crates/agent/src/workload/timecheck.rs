//! `shoal/timecheck`: prints `App version: <tag>; time check: HH:MM.SS` every 5 s.

use std::io::Write;
use std::time::Duration;

use super::WorkloadError;

const PERIOD: Duration = Duration::from_secs(5);

/// The line printed at `unix_secs` (UTC).
pub fn line(tag: &str, unix_secs: u64) -> String {
    let day = unix_secs % 86_400;
    format!(
        "App version: {tag}; time check: {:02}:{:02}.{:02}",
        day / 3600,
        day % 3600 / 60,
        day % 60
    )
}

pub(crate) async fn run() -> Result<(), WorkloadError> {
    let stop = super::termination()?;
    let tag = super::env_or("SHOAL_IMAGE_TAG", "latest");
    let mut tick = tokio::time::interval(PERIOD);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let mut out = std::io::stdout().lock();
                writeln!(out, "{}", line(&tag, now))
                    .and_then(|_| out.flush())
                    .map_err(|source| WorkloadError::Io { what: "write stdout", source })?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn line_format() {
        // 1970-01-02 03:04:05 UTC
        let secs = 86_400 + 3 * 3600 + 4 * 60 + 5;
        assert_eq!(
            super::line("1.0", secs),
            "App version: 1.0; time check: 03:04.05"
        );
    }
}
