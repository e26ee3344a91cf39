//! `shoal service ls`.

use std::io::Write;

use shoal_api::pb;

use crate::client::{DaemonExt, Host};
use crate::format::{natural_cmp, service_ports, Table};
use crate::list_filter::ListFilter;
use crate::names::{mode_flag_name, mode_name};
use crate::template::listing;

/// `shoal service ls`.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Only display IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Format output: 'table', 'table TEMPLATE', 'json' or a Go template
    /// ({{.ID}} {{.Name}} {{.Mode}} {{.Replicas}} {{.Image}} {{.Ports}}).
    #[arg(long)]
    pub format: Option<String>,
    /// Filter output (id=, name=, label=KEY[=VALUE], mode=).
    #[arg(short, long = "filter")]
    pub filter: Vec<String>,
}

/// The placeholders of a `service ls` row, in column order, with their titles.
const COLUMNS: [(&str, &str); 6] = [
    ("ID", "ID"),
    ("Name", "NAME"),
    ("Mode", "MODE"),
    ("Replicas", "REPLICAS"),
    ("Image", "IMAGE"),
    ("Ports", "PORTS"),
];

/// The filters `service ls` takes, as Docker's daemon.
const FILTERS: [&str; 4] = ["id", "name", "label", "mode"];

/// Parses and checks `service ls -f` values.
pub fn parse_filter(values: &[String]) -> anyhow::Result<ListFilter> {
    let f = ListFilter::parse(values, &FILTERS)?;
    f.check_values("mode", "mode", crate::names::parse_mode)?;
    Ok(f)
}

/// Whether a service passes the filter: ID and name prefixes, labels, mode.
pub fn matches(f: &ListFilter, s: &pb::Service) -> bool {
    let spec = s.spec.clone().unwrap_or_default();
    let mode = mode_flag_name(spec.mode);
    f.prefix("id", &s.id)
        && f.prefix("name", &spec.name)
        && f.labels("label", &spec.labels)
        && f.any("mode", |m| m.eq_ignore_ascii_case(mode))
}

/// Lists services sorted by name.
pub async fn run(host: &Host, args: &LsArgs) -> anyhow::Result<()> {
    let filter = parse_filter(&args.filter)?;
    let mut c = super::connect(host).await?;
    let mut entries = c
        .list_services(pb::ListServicesRequest {})
        .await
        .daemon()?
        .services;
    entries.retain(|e| e.service.as_ref().is_some_and(|s| matches(&filter, s)));
    entries.sort_by(|a, b| natural_cmp(name(a), name(b)));
    let mut out = std::io::stdout().lock();
    if !listing::is_default(args.format.as_deref()) {
        let format = args.format.as_deref().unwrap_or_default();
        write!(out, "{}", formatted(&entries, format)?)?;
        return Ok(());
    }
    if args.quiet {
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

/// One row's cells: ID NAME MODE REPLICAS IMAGE PORTS.
fn cells(e: &pb::ServiceListEntry) -> Option<Vec<String>> {
    let s = e.service.as_ref()?;
    let spec = s.spec.clone().unwrap_or_default();
    let ports = match s.endpoint.as_ref().filter(|ep| !ep.ports.is_empty()) {
        Some(ep) => service_ports(&ep.ports),
        None => service_ports(&spec.ports),
    };
    Some(vec![
        shoal_api::id::short(&s.id).to_string(),
        spec.name.clone(),
        mode_name(spec.mode),
        replicas(e, &spec),
        spec.image.clone(),
        ports,
    ])
}

/// ID NAME MODE REPLICAS IMAGE PORTS.
pub fn table(entries: &[pb::ServiceListEntry]) -> Table {
    let titles: Vec<&str> = COLUMNS.iter().map(|(_, title)| *title).collect();
    let mut t = Table::new(&titles);
    for row in entries.iter().filter_map(cells) {
        t.row(row);
    }
    t
}

/// The services through a user's `--format`.
pub fn formatted(entries: &[pb::ServiceListEntry], format: &str) -> anyhow::Result<String> {
    let rows: Vec<listing::Row> = entries
        .iter()
        .filter_map(cells)
        .map(|row| {
            COLUMNS
                .iter()
                .zip(row)
                .map(|((key, _), cell)| (*key, gtmpl::Value::from(cell)))
                .collect()
        })
        .collect();
    listing::render(format, &COLUMNS, &rows)
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
            proxy_protocol: String::new(),
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
    fn format_and_filter() {
        let entry = |id: &str, name: &str, mode: pb::ServiceMode, labels: &[(&str, &str)]| {
            pb::ServiceListEntry {
                service: Some(pb::Service {
                    id: id.into(),
                    spec: Some(pb::ServiceSpec {
                        name: name.into(),
                        image: "shoal/echo".into(),
                        mode: mode as i32,
                        replicas: 2,
                        labels: labels
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                running_tasks: 2,
                desired_tasks: 2,
                completed_tasks: 0,
            }
        };
        let web = entry(
            "aaaa1111bbbb2222",
            "web",
            pb::ServiceMode::Replicated,
            &[("tier", "front")],
        );
        let mon = entry("cccc3333dddd4444", "mon", pb::ServiceMode::Global, &[]);
        assert_eq!(
            formatted(std::slice::from_ref(&web), "json").unwrap(),
            "{\"ID\":\"aaaa1111bbbb\",\"Image\":\"shoal/echo\",\"Mode\":\"replicated\",\"Name\":\"web\",\"Ports\":\"\",\"Replicas\":\"2/2\"}\n"
        );
        assert_eq!(
            formatted(&[web.clone(), mon.clone()], "table {{.Name}}\\t{{.Mode}}").unwrap(),
            "NAME      MODE\nweb       replicated\nmon       global\n"
        );
        assert_eq!(
            formatted(std::slice::from_ref(&web), "{{.Name}} {{.Replicas}}").unwrap(),
            "web 2/2\n"
        );
        // Docker's default service table format gives the table `service ls` prints.
        assert_eq!(
            formatted(
                &[web.clone(), mon.clone()],
                "table {{.ID}}\\t{{.Name}}\\t{{.Mode}}\\t{{.Replicas}}\\t{{.Image}}\\t{{.Ports}}"
            )
            .unwrap(),
            table(&[web.clone(), mon.clone()]).render()
        );
        let pass = |values: &[&str], e: &pb::ServiceListEntry| {
            let values: Vec<String> = values.iter().map(|v| v.to_string()).collect();
            matches(&parse_filter(&values).unwrap(), e.service.as_ref().unwrap())
        };
        assert!(pass(&["name=we"], &web));
        assert!(!pass(&["name=we"], &mon));
        assert!(pass(&["id=cccc"], &mon));
        assert!(pass(&["label=tier"], &web));
        assert!(pass(&["label=tier=front"], &web));
        assert!(!pass(&["label=tier=back"], &web));
        assert!(!pass(&["label=tier"], &mon));
        assert!(pass(&["mode=global"], &mon));
        assert!(!pass(&["mode=global"], &web));
        assert!(pass(&["mode=global", "mode=replicated"], &web));
        assert!(parse_filter(&["mode=sometimes".to_string()]).is_err());
        assert!(parse_filter(&["x=1".to_string()]).is_err());
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
