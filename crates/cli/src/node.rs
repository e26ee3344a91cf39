//! `shoal node ls|inspect|update|promote|demote|rm|ps`.

use std::io::Write;

use anyhow::bail;
use shoal_api::pb;

use crate::client::{self, Control, DaemonExt, Host};
use crate::format::{natural_cmp, title, Table};
use crate::inspect::{self, availability_name, node_state_name};
use crate::list_filter::ListFilter;
use crate::opts;
use crate::task_table::{self, hostname, RowOptions};
use crate::template::listing;

/// `service logs` maps node IDs to hostnames with the task table's lookup.
pub use crate::task_table::hostnames;

/// `shoal node ...`.
#[derive(Debug, clap::Subcommand)]
pub enum NodeCommand {
    /// List nodes in the swarm.
    #[command(alias = "list")]
    Ls(LsArgs),
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
    /// Update a node.
    Update(UpdateArgs),
    /// Promote one or more nodes to manager in the swarm.
    Promote {
        /// Node IDs, prefixes or hostnames.
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Demote one or more nodes from manager in the swarm.
    Demote {
        /// Node IDs, prefixes or hostnames.
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Remove one or more nodes from the swarm.
    #[command(alias = "remove")]
    Rm {
        /// Force remove a node from the swarm.
        #[arg(short, long)]
        force: bool,
        /// Node IDs, prefixes or hostnames.
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// List tasks running on one or more nodes, defaults to current node.
    Ps(NodePsArgs),
}

/// `shoal node ls`.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Only display IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Format output: 'table', 'table TEMPLATE', 'json' or a Go template
    /// ({{.ID}} {{.Self}} {{.Hostname}} {{.Status}} {{.Availability}}
    /// {{.ManagerStatus}} {{.EngineVersion}}).
    #[arg(long)]
    pub format: Option<String>,
    /// Filter output (id=, name=, role=, membership=, label=, node.label=KEY[=VALUE]).
    #[arg(short, long = "filter")]
    pub filter: Vec<String>,
}

/// `shoal node update [OPTIONS] NODE`.
#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    /// Availability of the node ("active", "pause", "drain").
    #[arg(long)]
    pub availability: Option<String>,
    /// Add or update a node label (key=value).
    #[arg(long = "label-add")]
    pub label_add: Vec<String>,
    /// Remove a node label if exists.
    #[arg(long = "label-rm")]
    pub label_rm: Vec<String>,
    /// Role of the node ("worker", "manager").
    #[arg(long)]
    pub role: Option<String>,
    /// Node ID, prefix or hostname.
    pub node: String,
}

/// `shoal node ps [OPTIONS] [NODE...]`.
#[derive(Debug, clap::Args)]
pub struct NodePsArgs {
    /// Filter output based on conditions provided (desired-state=, name=, id=, node=).
    #[arg(short, long = "filter")]
    pub filter: Vec<String>,
    /// Do not truncate output.
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Do not map IDs to names.
    #[arg(long = "no-resolve")]
    pub no_resolve: bool,
    /// Only display task IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Format output: 'table', 'table TEMPLATE', 'json' or a Go template
    /// ({{.ID}} {{.Name}} {{.Image}} {{.Node}} {{.DesiredState}}
    /// {{.CurrentState}} {{.Error}} {{.Ports}}).
    #[arg(long)]
    pub format: Option<String>,
    /// Node IDs, prefixes or hostnames (default: this node).
    pub nodes: Vec<String>,
}

/// The validated flags of `node update`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct NodeUpdate {
    /// `--availability`.
    pub availability: Option<pb::NodeAvailability>,
    /// `--role`.
    pub role: Option<pb::NodeRole>,
    /// `--label-add`, in order.
    pub label_add: Vec<(String, String)>,
    /// `--label-rm`, in order.
    pub label_rm: Vec<String>,
}

// === impl NodeUpdate ===

impl NodeUpdate {
    /// Validates the flags of `node update`.
    pub fn parse(a: &UpdateArgs) -> anyhow::Result<NodeUpdate> {
        Ok(NodeUpdate {
            availability: a
                .availability
                .as_deref()
                .map(opts::parse_availability)
                .transpose()?,
            role: a.role.as_deref().map(opts::parse_node_role).transpose()?,
            label_add: a
                .label_add
                .iter()
                .map(|l| opts::parse_label_add(l))
                .collect::<anyhow::Result<_>>()?,
            label_rm: a.label_rm.clone(),
        })
    }

    /// Applies the flags to `spec` as Docker's `mergeNodeUpdate` does: role,
    /// availability, added labels, then removed labels (which must exist).
    pub fn apply(&self, spec: &mut pb::NodeSpec) -> anyhow::Result<()> {
        if let Some(role) = self.role {
            spec.role = role as i32;
        }
        if let Some(a) = self.availability {
            spec.availability = a as i32;
        }
        for (k, v) in &self.label_add {
            spec.labels.insert(k.clone(), v.clone());
        }
        for k in &self.label_rm {
            if spec.labels.remove(k).is_none() {
                bail!("key {k} doesn't exist in node's labels");
            }
        }
        Ok(())
    }
}

/// Runs a `node` subcommand; flags are validated before connecting.
pub async fn run(host: &Host, cmd: NodeCommand) -> anyhow::Result<()> {
    match cmd {
        NodeCommand::Ls(args) => {
            let filter = parse_filter(&args.filter)?;
            ls(&mut client::connect(host).await?, &args, &filter).await
        }
        NodeCommand::Inspect {
            pretty,
            format,
            nodes,
        } => {
            // As Docker: `--pretty` wins over `--format`.
            let mut c = client::connect(host).await?;
            let mut found = Vec::new();
            for name in &nodes {
                found.push(get_node(&mut c, name).await?);
            }
            if pretty {
                let mut out = std::io::stdout().lock();
                for n in &found {
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
        NodeCommand::Update(args) => {
            let update = NodeUpdate::parse(&args)?;
            let mut c = client::connect(host).await?;
            client::retry_out_of_sequence(async || {
                let node = get_node(&mut c, &args.node).await?;
                let mut spec = node.spec.clone().unwrap_or_default();
                update.apply(&mut spec)?;
                update_node(&mut c, &node, spec).await
            })
            .await?;
            writeln!(std::io::stdout(), "{}", args.node)?;
            Ok(())
        }
        NodeCommand::Promote { nodes } => {
            change_role(
                &mut client::connect(host).await?,
                &nodes,
                pb::NodeRole::Manager,
            )
            .await
        }
        NodeCommand::Demote { nodes } => {
            change_role(
                &mut client::connect(host).await?,
                &nodes,
                pb::NodeRole::Worker,
            )
            .await
        }
        NodeCommand::Rm { force, nodes } => {
            let mut c = client::connect(host).await?;
            let mut errors = Vec::new();
            for name in &nodes {
                match c
                    .remove_node(pb::RemoveNodeRequest {
                        node: name.clone(),
                        force,
                    })
                    .await
                    .daemon()
                {
                    Ok(_) => writeln!(std::io::stdout(), "{name}")?,
                    Err(e) => errors.push(client::one_line(&e, &host.to_string())),
                }
            }
            if !errors.is_empty() {
                bail!("{}", errors.join("; "));
            }
            Ok(())
        }
        NodeCommand::Ps(args) => ps(host, &args).await,
    }
}

/// `self` is this node (as Docker's `node.Reference`); anything else as given.
async fn resolve(c: &mut Control, name: &str) -> anyhow::Result<String> {
    if name == "self" {
        Ok(c.info(pb::InfoRequest {}).await.daemon()?.node_id)
    } else {
        Ok(name.to_string())
    }
}

/// Looks a node up by ID, prefix, hostname or `self`.
async fn get_node(c: &mut Control, name: &str) -> anyhow::Result<pb::Node> {
    let key = resolve(c, name).await?;
    match c
        .get_node(pb::GetNodeRequest { node: key })
        .await
        .daemon()?
        .node
    {
        Some(n) => Ok(n),
        None => bail!("Error: No such node: {name}"),
    }
}

/// Writes `spec` back, guarded by the version that was read.
async fn update_node(c: &mut Control, node: &pb::Node, spec: pb::NodeSpec) -> anyhow::Result<()> {
    c.update_node(pb::UpdateNodeRequest {
        node: node.id.clone(),
        version: node.meta.as_ref().map_or(0, |m| m.version),
        spec: Some(spec),
    })
    .await
    .daemon()?;
    Ok(())
}

/// `node promote` / `node demote`: stops at the first error, as Docker does;
/// a node already in the role is reported and skipped.
async fn change_role(c: &mut Control, names: &[String], role: pb::NodeRole) -> anyhow::Result<()> {
    for name in names {
        let node = get_node(c, name).await?;
        let mut spec = node.spec.clone().unwrap_or_default();
        if spec.role == role as i32 {
            writeln!(std::io::stdout(), "{}", already_text(&node.id, role))?;
            continue;
        }
        spec.role = role as i32;
        update_node(c, &node, spec).await?;
        writeln!(std::io::stdout(), "{}", role_changed_text(name, role))?;
    }
    Ok(())
}

/// Docker's line after a successful promote (`Manager`) or demote (`Worker`).
pub fn role_changed_text(name: &str, role: pb::NodeRole) -> String {
    match role {
        pb::NodeRole::Manager => format!("Node {name} promoted to a manager in the swarm."),
        pb::NodeRole::Worker => format!("Manager {name} demoted in the swarm."),
    }
}

/// Docker's line when the node already has the role (it names the node ID).
pub fn already_text(id: &str, role: pb::NodeRole) -> String {
    format!("Node {id} is already a {}.", crate::swarm::role_word(role))
}

/// `node ps`: the tasks of each named node (default `self`), in the
/// `service ps` table. Nodes that fail to resolve are reported after the table.
async fn ps(host: &Host, a: &NodePsArgs) -> anyhow::Result<()> {
    let filters = opts::parse_task_filters(&a.filter)?;
    let mut c = client::connect(host).await?;
    let names = if a.nodes.is_empty() {
        vec!["self".to_string()]
    } else {
        a.nodes.clone()
    };
    let mut errors = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    for name in &names {
        match get_node(&mut c, name).await {
            Ok(n) if !ids.contains(&n.id) => ids.push(n.id),
            Ok(_) => {}
            Err(e) => errors.push(client::one_line(&e, &host.to_string())),
        }
    }
    let mut tasks = Vec::new();
    if !ids.is_empty() {
        tasks = c
            .list_tasks(pb::ListTasksRequest {
                services: Vec::new(),
                nodes: ids.clone(),
                desired_states: filters.desired_states.clone(),
            })
            .await
            .daemon()?
            .tasks;
        // Whatever the daemon does with `nodes`, show only the asked-for ones.
        tasks.retain(|t| ids.contains(&t.node_id));
    }
    if errors.is_empty() || !tasks.is_empty() {
        let hosts = hostnames(&mut c).await?;
        let opts = RowOptions {
            no_trunc: a.no_trunc,
            no_resolve: a.no_resolve,
        };
        let rows = task_table::rows(&tasks, &hosts, &filters, opts, shoal_api::now_ms());
        task_table::print(&rows, a.quiet, a.format.as_deref())?;
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    Ok(())
}

/// The filters `node ls` takes, as Docker's daemon.
const FILTERS: [&str; 6] = ["id", "name", "role", "membership", "label", "node.label"];

/// Parses and checks `node ls -f` values.
pub fn parse_filter(values: &[String]) -> anyhow::Result<ListFilter> {
    let f = ListFilter::parse(values, &FILTERS)?;
    f.check_values("role", "role", crate::names::parse_role)?;
    f.check_values("membership", "membership", |m| {
        ["accepted", "pending"]
            .contains(&m.to_lowercase().as_str())
            .then_some(())
    })?;
    Ok(f)
}

/// Whether a node passes the filter. Every Shoal node is an accepted member,
/// and none has engine labels (`label`); `node.label` are its own labels.
pub fn matches(f: &ListFilter, n: &pb::Node) -> bool {
    let spec = n.spec.clone().unwrap_or_default();
    let role = crate::names::role_name(spec.role);
    f.prefix("id", &n.id)
        && f.prefix("name", hostname(n))
        && f.any("role", |r| r.eq_ignore_ascii_case(role))
        && f.any("membership", |m| m.eq_ignore_ascii_case("accepted"))
        && f.labels("label", &std::collections::HashMap::new())
        && f.labels("node.label", &spec.labels)
}

async fn ls(c: &mut Control, args: &LsArgs, filter: &ListFilter) -> anyhow::Result<()> {
    let self_id = c.info(pb::InfoRequest {}).await.daemon()?.node_id;
    let mut nodes = c.list_nodes(pb::ListNodesRequest {}).await.daemon()?.nodes;
    nodes.retain(|n| matches(filter, n));
    nodes.sort_by(|a, b| natural_cmp(hostname(a), hostname(b)).then(a.id.cmp(&b.id)));
    let mut out = std::io::stdout().lock();
    if !listing::is_default(args.format.as_deref()) {
        let format = args.format.as_deref().unwrap_or_default();
        write!(out, "{}", node_formatted(&nodes, &self_id, format)?)?;
        return Ok(());
    }
    if args.quiet {
        for n in &nodes {
            writeln!(out, "{}", n.id)?;
        }
        return Ok(());
    }
    write!(out, "{}", node_table(&nodes, &self_id).render())?;
    Ok(())
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
        let manager = manager_status(n);
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

/// The placeholders of a `node ls` row, with their column titles.
const COLUMNS: [(&str, &str); 7] = [
    ("ID", "ID"),
    ("Self", ""),
    ("Hostname", "HOSTNAME"),
    ("Status", "STATUS"),
    ("Availability", "AVAILABILITY"),
    ("ManagerStatus", "MANAGER STATUS"),
    ("EngineVersion", "ENGINE VERSION"),
];

/// The nodes through a user's `--format`.
pub fn node_formatted(nodes: &[pb::Node], self_id: &str, format: &str) -> anyhow::Result<String> {
    use gtmpl::Value;
    let rows: Vec<listing::Row> = nodes
        .iter()
        .map(|n| {
            let spec = n.spec.clone().unwrap_or_default();
            vec![
                ("ID", Value::from(n.id.as_str())),
                ("Self", Value::Bool(n.id == self_id)),
                ("Hostname", Value::from(hostname(n))),
                (
                    "Status",
                    Value::from(node_state_name(n.status.as_ref().map_or(0, |s| s.state))),
                ),
                (
                    "Availability",
                    Value::from(availability_name(spec.availability)),
                ),
                ("ManagerStatus", Value::from(manager_status(n))),
                (
                    "EngineVersion",
                    Value::from(
                        n.description
                            .as_ref()
                            .map_or("", |d| d.engine_version.as_str()),
                    ),
                ),
            ]
        })
        .collect();
    listing::render(format, &COLUMNS, &rows)
}

/// The MANAGER STATUS column: `Leader`, else the title-cased reachability
/// (`Reachable`, `Unavailable`); empty for workers.
pub fn manager_status(n: &pb::Node) -> String {
    let is_manager = n
        .spec
        .as_ref()
        .is_some_and(|s| s.role == pb::NodeRole::Manager as i32);
    match &n.manager_status {
        Some(m) if is_manager && m.leader => "Leader".to_string(),
        Some(m) if is_manager => title(&m.reachability),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests;
