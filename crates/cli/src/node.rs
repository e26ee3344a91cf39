//! `shoal node ls|inspect`.

use std::collections::HashMap;
use std::io::Write;

use anyhow::bail;
use shoal_api::pb;

use crate::client::{self, Control, DaemonExt, Host};
use crate::format::{natural_cmp, title, Table};
use crate::inspect::{self, availability_name, node_state_name};

/// `shoal node ...`.
#[derive(Debug, clap::Subcommand)]
pub enum NodeCommand {
    /// List nodes in the swarm.
    #[command(alias = "list")]
    Ls {
        /// Only display IDs.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Display detailed information on one or more nodes.
    Inspect {
        /// Print the information in a human friendly format.
        #[arg(long)]
        pretty: bool,
        /// Format output using a Go-template path.
        #[arg(short, long)]
        format: Option<String>,
        /// Node IDs, prefixes or hostnames ("self" for this node).
        #[arg(required = true)]
        nodes: Vec<String>,
    },
}

/// Runs a `node` subcommand.
pub async fn run(host: &Host, cmd: NodeCommand) -> anyhow::Result<()> {
    let mut c = client::connect(host).await?;
    match cmd {
        NodeCommand::Ls { quiet } => ls(&mut c, quiet).await,
        NodeCommand::Inspect {
            pretty,
            format,
            nodes,
        } => {
            let mut found = Vec::new();
            for name in &nodes {
                let name = if name == "self" {
                    c.info(pb::InfoRequest {}).await.daemon()?.node_id
                } else {
                    name.clone()
                };
                match c
                    .get_node(pb::GetNodeRequest { node: name.clone() })
                    .await
                    .daemon()?
                    .node
                {
                    Some(n) => found.push(n),
                    None => bail!("Error: No such node: {name}"),
                }
            }
            if pretty {
                let mut out = std::io::stdout().lock();
                for (i, n) in found.iter().enumerate() {
                    if i > 0 {
                        writeln!(out)?;
                    }
                    write!(out, "{}", inspect::node_pretty(n))?;
                }
                Ok(())
            } else {
                let values: Vec<_> = found
                    .iter()
                    .map(|n| inspect::Object::Node(inspect::node_json(n)))
                    .collect();
                inspect::print_values(&values, format.as_deref())
            }
        }
    }
}

async fn ls(c: &mut Control, quiet: bool) -> anyhow::Result<()> {
    let self_id = c.info(pb::InfoRequest {}).await.daemon()?.node_id;
    let mut nodes = c.list_nodes(pb::ListNodesRequest {}).await.daemon()?.nodes;
    nodes.sort_by(|a, b| natural_cmp(hostname(a), hostname(b)).then(a.id.cmp(&b.id)));
    let mut out = std::io::stdout().lock();
    if quiet {
        for n in &nodes {
            writeln!(out, "{}", n.id)?;
        }
        return Ok(());
    }
    write!(out, "{}", node_table(&nodes, &self_id).render())?;
    Ok(())
}

fn hostname(n: &pb::Node) -> &str {
    n.description.as_ref().map_or("", |d| d.hostname.as_str())
}

/// The `node ls` table; `self_id` gets ` *` after its ID.
pub fn node_table(nodes: &[pb::Node], self_id: &str) -> Table {
    let mut t = Table::new(&[
        "ID",
        "HOSTNAME",
        "STATUS",
        "AVAILABILITY",
        "MANAGER STATUS",
        "ENGINE VERSION",
    ]);
    for n in nodes {
        let spec = n.spec.clone().unwrap_or_default();
        let manager = match &n.manager_status {
            Some(m) if m.leader => "Leader".to_string(),
            Some(m) if spec.role == pb::NodeRole::Manager as i32 || !m.reachability.is_empty() => {
                title(&m.reachability)
            }
            _ => String::new(),
        };
        t.row(vec![
            if n.id == self_id {
                format!("{} *", n.id)
            } else {
                n.id.clone()
            },
            hostname(n).to_string(),
            node_state_name(n.status.as_ref().map_or(0, |s| s.state)).to_string(),
            availability_name(spec.availability).to_string(),
            manager,
            n.description
                .as_ref()
                .map_or(String::new(), |d| d.engine_version.clone()),
        ]);
    }
    t
}

/// Node ID → hostname, for `service ps` and `service logs`.
pub async fn hostnames(c: &mut Control) -> anyhow::Result<HashMap<String, String>> {
    let nodes = c.list_nodes(pb::ListNodesRequest {}).await.daemon()?.nodes;
    Ok(nodes
        .into_iter()
        .map(|n| {
            let h = hostname(&n).to_string();
            (n.id, h)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, host: &str, leader: Option<bool>) -> pb::Node {
        pb::Node {
            id: id.into(),
            meta: None,
            spec: Some(pb::NodeSpec {
                role: if leader.is_some() { 1 } else { 0 },
                availability: 0,
                labels: Default::default(),
            }),
            description: Some(pb::NodeDescription {
                hostname: host.into(),
                engine_version: "0.1.0".into(),
                os: "linux".into(),
                arch: "x86_64".into(),
            }),
            status: Some(pb::NodeStatus {
                state: pb::NodeState::Ready as i32,
                message: String::new(),
                addr: String::new(),
            }),
            manager_status: leader.map(|l| pb::ManagerStatus {
                leader: l,
                reachability: "reachable".into(),
                addr: String::new(),
                raft_id: 1,
            }),
        }
    }

    #[test]
    fn node_ls_marks_self_and_leader() {
        let nodes = [
            node("4ekbnwh2ayfy2qo9alcarsy5q", "ip-1", None),
            node("f4ag8t9kczcn0sg0wzexfac3x", "ip-2", Some(true)),
            node("js2iuhm3i5r7qpnsrxs15ojc1", "ip-3", Some(false)),
        ];
        let out = node_table(&nodes, "f4ag8t9kczcn0sg0wzexfac3x").render();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "ID                            HOSTNAME   STATUS    AVAILABILITY   MANAGER STATUS   ENGINE VERSION"
        );
        assert_eq!(
            lines[1],
            "4ekbnwh2ayfy2qo9alcarsy5q     ip-1       Ready     Active                          0.1.0"
        );
        assert_eq!(
            lines[2],
            "f4ag8t9kczcn0sg0wzexfac3x *   ip-2       Ready     Active         Leader           0.1.0"
        );
        assert!(lines[3].contains("Reachable"));
    }
}
