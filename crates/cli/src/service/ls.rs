//! `shoal service ls`.

use std::io::Write;

use shoal_api::pb;

use crate::client::{DaemonExt, Host};
use crate::format::{natural_cmp, service_ports, Table};

/// Lists services sorted by name.
pub async fn run(host: &Host, quiet: bool) -> anyhow::Result<()> {
    let mut c = super::connect(host).await?;
    let mut entries = c
        .list_services(pb::ListServicesRequest {})
        .await
        .daemon()?
        .services;
    entries.sort_by(|a, b| natural_cmp(name(a), name(b)));
    let mut out = std::io::stdout().lock();
    if quiet {
        for e in &entries {
            if let Some(s) = &e.service {
                writeln!(out, "{}", shoal_api::id::short(&s.id))?;
            }
        }
        return Ok(());
    }
    write!(out, "{}", table(&entries).render())?;
    Ok(())
}

fn name(e: &pb::ServiceListEntry) -> &str {
    e.service
        .as_ref()
        .and_then(|s| s.spec.as_ref())
        .map_or("", |s| s.name.as_str())
}

/// The MODE column: `replicated`, `global`, `replicated job`, `global job`.
pub fn mode_name(mode: i32) -> &'static str {
    match pb::ServiceMode::try_from(mode).unwrap_or_default() {
        pb::ServiceMode::Replicated => "replicated",
        pb::ServiceMode::Global => "global",
        pb::ServiceMode::ReplicatedJob => "replicated job",
        pb::ServiceMode::GlobalJob => "global job",
    }
}

/// The REPLICAS column: `running/desired`; jobs add their completions,
/// `0/2 (6/6 completed)` (for a global job the total is desired + completed).
fn replicas(e: &pb::ServiceListEntry, spec: &pb::ServiceSpec) -> String {
    let (running, desired, completed) = (e.running_tasks, e.desired_tasks, e.completed_tasks);
    match pb::ServiceMode::try_from(spec.mode).unwrap_or_default() {
        pb::ServiceMode::ReplicatedJob => format!(
            "{running}/{desired} ({completed}/{} completed)",
            spec.replicas
        ),
        pb::ServiceMode::GlobalJob => format!(
            "{running}/{desired} ({completed}/{} completed)",
            desired + completed
        ),
        _ => format!("{running}/{desired}"),
    }
}

/// ID NAME MODE REPLICAS IMAGE PORTS.
pub fn table(entries: &[pb::ServiceListEntry]) -> Table {
    let mut t = Table::new(&["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"]);
    for e in entries {
        let Some(s) = &e.service else { continue };
        let spec = s.spec.clone().unwrap_or_default();
        let ports = match s.endpoint.as_ref().filter(|ep| !ep.ports.is_empty()) {
            Some(ep) => service_ports(&ep.ports),
            None => service_ports(&spec.ports),
        };
        t.row(vec![
            shoal_api::id::short(&s.id).to_string(),
            spec.name.clone(),
            mode_name(spec.mode).to_string(),
            replicas(e, &spec),
            spec.image.clone(),
            ports,
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_ls_row() {
        let port = pb::PortConfig {
            name: String::new(),
            protocol: "tcp".into(),
            target_port: 8080,
            published_port: 8000,
            publish_mode: "ingress".into(),
        };
        let entry = pb::ServiceListEntry {
            service: Some(pb::Service {
                id: "vv9kgjywmqnjbvtk8luicfco9".into(),
                spec: Some(pb::ServiceSpec {
                    name: "echo".into(),
                    image: "registry:5000/example/echo:latest".into(),
                    replicas: 6,
                    ..Default::default()
                }),
                endpoint: Some(pb::ServiceEndpoint { ports: vec![port] }),
                ..Default::default()
            }),
            running_tasks: 6,
            desired_tasks: 6,
            completed_tasks: 0,
        };
        let out = table(&[entry]).render();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "ID             NAME      MODE         REPLICAS   IMAGE                               PORTS"
        );
        assert_eq!(
            lines[1],
            "vv9kgjywmqnj   echo      replicated   6/6        registry:5000/example/echo:latest   *:8000->8080/tcp"
        );
    }

    #[test]
    fn jobs_show_their_completions() {
        let entry =
            |mode: pb::ServiceMode, replicas, counts: (u64, u64, u64)| pb::ServiceListEntry {
                service: Some(pb::Service {
                    id: "vv9kgjywmqnjbvtk8luicfco9".into(),
                    spec: Some(pb::ServiceSpec {
                        name: "batch".into(),
                        image: "shoal/echo".into(),
                        mode: mode as i32,
                        replicas,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                running_tasks: counts.0,
                desired_tasks: counts.1,
                completed_tasks: counts.2,
            };
        let out = table(&[
            entry(pb::ServiceMode::ReplicatedJob, 6, (2, 2, 3)),
            entry(pb::ServiceMode::GlobalJob, 0, (1, 1, 2)),
        ])
        .render();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[1],
            "vv9kgjywmqnj   batch     replicated job   2/2 (3/6 completed)   shoal/echo   "
        );
        assert_eq!(
            lines[2],
            "vv9kgjywmqnj   batch     global job       1/1 (2/3 completed)   shoal/echo   "
        );
    }
}
