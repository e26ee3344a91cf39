//! The convergence display after `create`, `scale`, `update` and `rollback`,
//! as Docker draws it: `overall progress: N out of M tasks` (`rolling back
//! update: ...` during a rollback), a bar per slot (per node for global
//! services), then a stability check for the service's update monitoring
//! period (5s by default) before `verify: Service X converged`. Jobs show
//! Docker's job display instead: `job progress: N out of M complete`, the
//! `active tasks` line for a replicated job, a bar per slot or node, and
//! `job complete` once every task of the current iteration completed.
//!
//! On a terminal each poll redraws the display in place; elsewhere (a pipe,
//! a file) each poll appends what Docker prints there, so a crash loop is
//! not silent (see `plain`).
//!
//! # Layout
//! - `snapshot`: [`evaluate`], a pure function of one poll (service, tasks,
//!   nodes) into the lines to draw;
//! - `plain`: [`PlainLog`], what each poll appends where stdout is not a
//!   terminal;
//! - `tracker`: [`Tracker`], the service's update status across polls, and
//!   the monitoring period;
//! - this file: [`wait`], which polls every 200 ms and draws.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use shoal_api::pb;

use crate::client::{Control, DaemonExt};

mod plain;
mod snapshot;
mod tracker;

use plain::PlainLog;
use snapshot::evaluate;
pub use tracker::Kind;
use tracker::{monitor_period, Tracker};

#[cfg(test)]
mod tests;

/// How long to wait for convergence before giving up (for updates and
/// rollbacks: how long without any progress).
pub const BOUND: Duration = Duration::from_secs(120);
/// Poll interval (Docker's).
const POLL: Duration = Duration::from_millis(200);

/// Where the progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// Redrawn in place on a terminal.
    Terminal,
    /// Appended poll by poll, as Docker prints where stdout is a pipe or file.
    Plain,
    /// Nothing (`-q`): wait silently.
    Quiet,
}

// === impl Display ===

impl Display {
    /// Quiet with `-q`, else redrawn on a terminal, else plain.
    pub fn pick(quiet: bool) -> Display {
        if quiet {
            Display::Quiet
        } else if std::io::stdout().is_terminal() {
            Display::Terminal
        } else {
            Display::Plain
        }
    }

    /// Shows one poll: a terminal redraws `screen_lines`, other output
    /// appends `plain_lines`.
    fn show(
        self,
        screen: &mut Screen,
        screen_lines: &[String],
        plain_lines: &[String],
    ) -> std::io::Result<()> {
        match self {
            Display::Terminal => screen.draw(screen_lines),
            Display::Plain => {
                let mut out = std::io::stdout().lock();
                for l in plain_lines {
                    writeln!(out, "{l}")?;
                }
                out.flush()
            }
            Display::Quiet => Ok(()),
        }
    }
}

/// Polls until the service converges and stays converged for its monitoring
/// period, drawing as `display` says. Fails after [`BOUND`] (for updates and
/// rollbacks, [`BOUND`] without progress), when the update pauses, or when an
/// update was rolled back.
pub async fn wait(
    c: &mut Control,
    service_id: &str,
    name: &str,
    kind: Kind,
    display: Display,
) -> anyhow::Result<()> {
    let mut started = Instant::now();
    let mut tracker = Tracker::new(kind, shoal_api::now_ms());
    let mut screen = Screen::default();
    let mut plain_log = PlainLog::default();
    let mut stable_since: Option<Instant> = None;
    let mut failure_seen = false;
    let mut last_progress = None;
    loop {
        let service = c
            .get_service(pb::GetServiceRequest {
                service: service_id.to_string(),
            })
            .await
            .daemon()?
            .service
            .context("the daemon returned no service")?;
        let tasks = c
            .list_tasks(pb::ListTasksRequest {
                services: vec![service.id.clone()],
                nodes: Vec::new(),
                desired_states: Vec::new(),
            })
            .await
            .daemon()?
            .tasks;
        let nodes = c.list_nodes(pb::ListNodesRequest {}).await.daemon()?.nodes;
        let settled = tracker.observe(service.update_status.as_ref());
        let snap = evaluate(&service, &tasks, &nodes, tracker.rolling_back());

        let mut lines: Vec<String> = tracker
            .rollback_line()
            .map(String::from)
            .into_iter()
            .collect();
        lines.extend(snap.lines.iter().cloned());
        let mut plain = plain_log.poll(tracker.rollback_line(), &snap);
        let settled = match settled {
            Ok(settled) => settled,
            Err(e) => {
                display.show(&mut screen, &lines, &plain)?;
                return Err(e);
            }
        };
        if kind != Kind::Deploy {
            let progress = (
                snap.running,
                service.update_status.as_ref().map(|s| s.state),
                tracker.rolling_back(),
            );
            if last_progress.as_ref() != Some(&progress) {
                last_progress = Some(progress);
                started = Instant::now();
            }
        }
        let monitor = monitor_period(service.spec.as_ref(), tracker.rolling_back());
        // A job that finished stays finished: no stability check (Docker).
        if snap.converged() && service.job_status.is_some() {
            lines.push("job complete".into());
            plain.push("job complete".into());
            display.show(&mut screen, &lines, &plain)?;
            return Ok(());
        }
        if snap.converged() && settled {
            let since = *stable_since.get_or_insert_with(Instant::now);
            let elapsed = since.elapsed();
            if elapsed >= monitor {
                let converged = format!("verify: Service {name} converged");
                lines.push(converged.clone());
                plain.push(converged);
                display.show(&mut screen, &lines, &plain)?;
                return tracker.finish();
            }
            let left = (monitor - elapsed).as_secs_f64().ceil() as u64;
            let waiting =
                format!("verify: Waiting {left} seconds to verify that tasks are stable...");
            lines.push(waiting.clone());
            plain.push(waiting);
        } else {
            let failure = "verify: Detected task failure";
            if stable_since.take().is_some() {
                // The terminal keeps showing it; a pipe gets it once.
                failure_seen = true;
                plain.push(failure.into());
            }
            if failure_seen {
                lines.push(failure.into());
            }
        }
        display.show(&mut screen, &lines, &plain)?;
        if started.elapsed() >= BOUND {
            let bound = humantime::format_duration(BOUND);
            let what = if kind == Kind::Deploy {
                format!("did not converge within {bound}")
            } else {
                format!("made no progress for {bound}")
            };
            match snap.last_error {
                Some(e) => bail!("service {name} {what}: {e}"),
                None => bail!("service {name} {what}: {}", snap.lines[0]),
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Lines drawn on a terminal, redrawn in place.
#[derive(Debug, Default)]
struct Screen {
    /// How many lines the previous draw left above the cursor.
    drawn: usize,
}

// === impl Screen ===

impl Screen {
    fn draw(&mut self, lines: &[String]) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        if self.drawn > 0 {
            write!(out, "\x1b[{}A", self.drawn)?;
        }
        for l in lines {
            writeln!(out, "\x1b[2K{l}")?;
        }
        if self.drawn > lines.len() {
            let extra = self.drawn - lines.len();
            for _ in 0..extra {
                writeln!(out, "\x1b[2K")?;
            }
            write!(out, "\x1b[{extra}A")?;
        }
        self.drawn = lines.len();
        out.flush()
    }
}
