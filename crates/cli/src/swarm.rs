//! `shoal swarm init|update|join|join-token|leave`.

use std::io::Write;

use shoal_api::pb;

use crate::client::{self, Control, DaemonExt, Host};
use crate::opts;

/// `shoal swarm ...`.
#[derive(Debug, clap::Subcommand)]
pub enum SwarmCommand {
    /// Initialize a swarm.
    Init {
        /// Advertised address (format: <ip|interface>[:port]).
        #[arg(long = "advertise-addr")]
        advertise_addr: Option<String>,
        /// Task history retention limit.
        #[arg(long = "task-history-limit")]
        task_history_limit: Option<String>,
        /// Dispatcher heartbeat period (ns|us|ms|s|m|h).
        #[arg(long = "dispatcher-heartbeat")]
        dispatcher_heartbeat: Option<String>,
        /// Default address pool in CIDR format (default 10.0.0.0/8).
        #[arg(long = "default-addr-pool", value_delimiter = ',')]
        default_addr_pool: Vec<String>,
        /// Default address pool subnet mask length (default 24).
        #[arg(long = "default-addr-pool-mask-length", allow_hyphen_values = true)]
        default_addr_pool_mask_length: Option<String>,
        /// Validity period for node certificates (ns|us|ms|s|m|h) (default 2160h0m0s).
        #[arg(long = "cert-expiry", allow_hyphen_values = true)]
        cert_expiry: Option<String>,
    },
    /// Update the swarm.
    Update {
        /// Task history retention limit (default 5).
        #[arg(long = "task-history-limit", allow_hyphen_values = true)]
        task_history_limit: Option<String>,
        /// Dispatcher heartbeat period (ns|us|ms|s|m|h) (default 5s).
        #[arg(long = "dispatcher-heartbeat", allow_hyphen_values = true)]
        dispatcher_heartbeat: Option<String>,
        /// Validity period for node certificates (ns|us|ms|s|m|h) (default 2160h0m0s).
        #[arg(long = "cert-expiry", allow_hyphen_values = true)]
        cert_expiry: Option<String>,
    },
    /// Display and rotate the root CA.
    Ca {
        /// Rotate the swarm CA: a new root; every node gets a certificate
        /// signed by it.
        #[arg(long)]
        rotate: bool,
        /// Exit immediately instead of waiting for the root rotation to converge.
        #[arg(short, long)]
        detach: bool,
        /// Suppress progress output.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Join a swarm as a node and/or manager.
    Join {
        /// Token for entry into the swarm.
        #[arg(long, required = true)]
        token: String,
        /// Advertised address (format: <ip|interface>[:port]).
        #[arg(long = "advertise-addr")]
        advertise_addr: Option<String>,
        /// A manager's address (HOST[:PORT], port 2377 by default).
        #[arg(value_name = "HOST:PORT")]
        remote: String,
    },
    /// Manage join tokens.
    #[command(name = "join-token")]
    JoinToken {
        /// Only display token.
        #[arg(short, long)]
        quiet: bool,
        /// Rotate join token.
        #[arg(long)]
        rotate: bool,
        /// The role whose token to show: worker or manager.
        #[arg(value_name = "worker|manager")]
        role: String,
    },
    /// Leave the swarm.
    Leave {
        /// Force this node to leave the swarm, ignoring warnings.
        #[arg(short, long)]
        force: bool,
    },
}

/// `--default-addr-pool-mask-length`: a prefix length (the daemon checks
/// it against the pools).
fn parse_mask_length(v: &str) -> anyhow::Result<u32> {
    match v.trim().parse::<u32>() {
        Ok(n) if (1..=32).contains(&n) => Ok(n),
        _ => anyhow::bail!(
            "invalid argument {v:?} for \"--default-addr-pool-mask-length\" flag: a prefix length from 8 to 29, e.g. 24"
        ),
    }
}

/// Runs a `swarm` subcommand; flags are validated before connecting.
pub async fn run(host: &Host, cmd: SwarmCommand) -> anyhow::Result<()> {
    match cmd {
        SwarmCommand::Init {
            advertise_addr,
            task_history_limit,
            dispatcher_heartbeat,
            default_addr_pool,
            default_addr_pool_mask_length,
            cert_expiry,
        } => {
            let node_cert_expiry_ms = cert_expiry
                .as_deref()
                .map(parse_cert_expiry)
                .transpose()?
                .unwrap_or(0);
            let mask_length = match default_addr_pool_mask_length {
                Some(v) => parse_mask_length(&v)?,
                None => 0,
            };
            let limit = match task_history_limit {
                Some(v) => opts::parse_count(&v, "--task-history-limit")?,
                None => 0,
            };
            let heartbeat = dispatcher_heartbeat
                .as_deref()
                .map(parse_heartbeat)
                .transpose()?
                .unwrap_or(0);
            let mut c = client::connect(host).await?;
            let resp = c
                .swarm_init(pb::SwarmInitRequest {
                    advertise_addr: advertise_addr.unwrap_or_default(),
                    task_history_limit: limit,
                    dispatcher_heartbeat_ms: heartbeat,
                    default_addr_pool,
                    default_addr_pool_mask_length: mask_length,
                    node_cert_expiry_ms,
                })
                .await
                .daemon()?;
            // Docker prints the worker join command here; a failure to fetch it
            // does not undo the init, so the lines are just left out.
            let worker = join_command_for(&mut c, pb::NodeRole::Worker, false)
                .await
                .ok();
            let text = init_text(
                &resp.node_id,
                worker.as_ref().map(|(t, a)| (t.as_str(), a.as_str())),
            );
            write!(std::io::stdout(), "{text}")?;
            Ok(())
        }
        SwarmCommand::Update {
            task_history_limit,
            dispatcher_heartbeat,
            cert_expiry,
        } => {
            let req = pb::UpdateSwarmRequest {
                task_history_limit: task_history_limit
                    .as_deref()
                    .map(parse_history_limit)
                    .transpose()?,
                dispatcher_heartbeat_ms: dispatcher_heartbeat
                    .as_deref()
                    .map(parse_heartbeat)
                    .transpose()?,
                node_cert_expiry_ms: cert_expiry.as_deref().map(parse_cert_expiry).transpose()?,
                rotate_root_ca: false,
            };
            let mut c = client::connect(host).await?;
            c.update_swarm(req).await.daemon()?;
            writeln!(std::io::stdout(), "Swarm updated.")?;
            Ok(())
        }
        SwarmCommand::Ca {
            rotate,
            detach,
            quiet,
        } => root_ca(host, rotate, detach, quiet).await,
        SwarmCommand::Join {
            token,
            advertise_addr,
            remote,
        } => {
            let remote_addr = opts::parse_remote_addr(&remote)?;
            let mut c = client::connect(host).await?;
            let resp = c
                .swarm_join(pb::SwarmJoinRequest {
                    token,
                    remote_addr,
                    advertise_addr: advertise_addr.unwrap_or_default(),
                })
                .await
                .daemon()?;
            writeln!(std::io::stdout(), "{}", joined_text(resp.role))?;
            Ok(())
        }
        SwarmCommand::JoinToken {
            quiet,
            rotate,
            role,
        } => {
            let role = opts::parse_join_role(&role)?;
            let mut c = client::connect(host).await?;
            let (token, addr) = join_command_for(&mut c, role, rotate).await?;
            let mut out = std::io::stdout().lock();
            if quiet {
                writeln!(out, "{token}")?;
                return Ok(());
            }
            if rotate {
                write!(
                    out,
                    "Successfully rotated {} join token.\n\n",
                    role_word(role)
                )?;
            }
            write!(out, "{}", join_command(role, &token, &addr))?;
            Ok(())
        }
        SwarmCommand::Leave { force } => {
            let mut c = client::connect(host).await?;
            c.swarm_leave(pb::SwarmLeaveRequest { force })
                .await
                .daemon()?;
            writeln!(std::io::stdout(), "Node left the swarm.")?;
            Ok(())
        }
    }
}

/// `swarm ca [--rotate [-d] [-q]]`: prints the root CA certificate; with
/// `--rotate`, after every node holds a certificate of the new root (unless
/// `-d`).
async fn root_ca(host: &Host, rotate: bool, detach: bool, quiet: bool) -> anyhow::Result<()> {
    let mut c = client::connect(host).await?;
    let mut resp = c
        .update_swarm(pb::UpdateSwarmRequest {
            rotate_root_ca: rotate,
            ..Default::default()
        })
        .await
        .daemon()?;
    if rotate && !detach {
        if !quiet {
            eprintln!("rotating the root CA: waiting for every node to hold a certificate of the new root");
        }
        while resp.root_rotation_in_progress {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            resp = c
                .update_swarm(pb::UpdateSwarmRequest::default())
                .await
                .daemon()?;
        }
    }
    write!(std::io::stdout(), "{}", resp.root_ca_pem)?;
    Ok(())
}

/// `--dispatcher-heartbeat`: a duration of at least 100ms, in ms.
pub fn parse_heartbeat(v: &str) -> anyhow::Result<u64> {
    let flag = "--dispatcher-heartbeat";
    let d = opts::parse_duration(v, flag)?;
    if d < std::time::Duration::from_millis(100) {
        return Err(opts::invalid(v, flag, "must be at least 100ms"));
    }
    Ok(d.as_millis() as u64)
}

/// `--cert-expiry`: how long node certificates last, in ms: at least a
/// minute (Docker's minimum is an hour), at most 20 years (the CA's life).
pub fn parse_cert_expiry(v: &str) -> anyhow::Result<u64> {
    let flag = "--cert-expiry";
    let d = opts::parse_duration(v, flag)?;
    if d < std::time::Duration::from_secs(60) {
        return Err(opts::invalid(v, flag, "must be at least 1m"));
    }
    if d > std::time::Duration::from_secs(20 * 365 * 24 * 3600) {
        return Err(opts::invalid(v, flag, "must be at most 175200h (20 years)"));
    }
    Ok(d.as_millis() as u64)
}

/// `swarm update --task-history-limit`: tasks kept per slot, the current
/// one included, so at least 1.
pub fn parse_history_limit(v: &str) -> anyhow::Result<u64> {
    let flag = "--task-history-limit";
    match opts::parse_count(v, flag)? {
        0 => Err(opts::invalid(
            v,
            flag,
            "must be at least 1 (1 keeps only the current task of each slot)",
        )),
        n => Ok(n),
    }
}

/// Fetches (and optionally rotates) a join token, with the manager address a
/// joining node dials (falling back to the first manager `Info` knows).
async fn join_command_for(
    c: &mut Control,
    role: pb::NodeRole,
    rotate: bool,
) -> anyhow::Result<(String, String)> {
    let resp = c
        .join_token(pb::JoinTokenRequest {
            role: role_word(role).to_string(),
            rotate,
        })
        .await
        .daemon()?;
    let mut addr = resp.manager_addr;
    if addr.is_empty() {
        let info = c.info(pb::InfoRequest {}).await.daemon()?;
        addr = info.managers.into_iter().next().unwrap_or_default();
    }
    Ok((resp.token, addr))
}

/// `worker` / `manager`.
pub fn role_word(role: pb::NodeRole) -> &'static str {
    match role {
        pb::NodeRole::Manager => "manager",
        pb::NodeRole::Worker => "worker",
    }
}

/// Docker's join instructions for `role`, ending with a blank line.
pub fn join_command(role: pb::NodeRole, token: &str, addr: &str) -> String {
    format!(
        "To add a {} to this swarm, run the following command:\n\n    shoal swarm join --token {token} {addr}\n\n",
        role_word(role)
    )
}

/// Everything `swarm init` prints; `worker` is the worker token and manager
/// address, when they could be fetched.
pub fn init_text(node_id: &str, worker: Option<(&str, &str)>) -> String {
    let mut o = format!("Swarm initialized: current node ({node_id}) is now a manager.\n\n");
    if let Some((token, addr)) = worker {
        o.push_str(&join_command(pb::NodeRole::Worker, token, addr));
    }
    o.push_str(
        "To add a manager to this swarm, run 'shoal swarm join-token manager' and follow the instructions.\n\n",
    );
    o
}

/// The line `swarm join` prints for the role the node joined as.
pub fn joined_text(role: i32) -> String {
    let role = pb::NodeRole::try_from(role).unwrap_or(pb::NodeRole::Worker);
    format!("This node joined a swarm as a {}.", role_word(role))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_instructions_match_docker() {
        assert_eq!(
            join_command(
                pb::NodeRole::Worker,
                "SWMTKN-1-abc-def",
                "192.168.100.10:2377"
            ),
            "To add a worker to this swarm, run the following command:\n\n    \
             shoal swarm join --token SWMTKN-1-abc-def 192.168.100.10:2377\n\n"
        );
        assert!(join_command(pb::NodeRole::Manager, "T", "a:1")
            .starts_with("To add a manager to this swarm, run the following command:\n"));
    }

    #[test]
    fn init_text_with_and_without_a_token() {
        assert_eq!(
            init_text("n1", Some(("T", "10.0.0.1:2377"))),
            "Swarm initialized: current node (n1) is now a manager.\n\n\
             To add a worker to this swarm, run the following command:\n\n    \
             shoal swarm join --token T 10.0.0.1:2377\n\n\
             To add a manager to this swarm, run 'shoal swarm join-token manager' and follow the instructions.\n\n"
        );
        assert_eq!(
            init_text("n1", None),
            "Swarm initialized: current node (n1) is now a manager.\n\n\
             To add a manager to this swarm, run 'shoal swarm join-token manager' and follow the instructions.\n\n"
        );
    }

    #[test]
    fn update_values_are_checked_before_connecting() {
        assert_eq!(parse_history_limit("2").unwrap(), 2);
        assert_eq!(
            parse_history_limit("-1").unwrap_err().to_string(),
            r#"invalid argument "-1" for "--task-history-limit" flag: must be a non-negative integer"#
        );
        assert!(parse_history_limit("abc").is_err());
        assert!(parse_history_limit("0")
            .unwrap_err()
            .to_string()
            .contains("must be at least 1"));
        assert_eq!(parse_heartbeat("500ms").unwrap(), 500);
        assert_eq!(parse_heartbeat("5s").unwrap(), 5000);
        assert_eq!(
            parse_heartbeat("50ms").unwrap_err().to_string(),
            r#"invalid argument "50ms" for "--dispatcher-heartbeat" flag: must be at least 100ms"#
        );
        assert!(parse_heartbeat("-1s").is_err());
        assert!(parse_heartbeat("abc").is_err());
    }

    #[test]
    fn cert_expiry_takes_docker_durations_from_a_minute_to_twenty_years() {
        assert_eq!(parse_cert_expiry("2160h0m0s").unwrap(), 7_776_000_000);
        assert_eq!(parse_cert_expiry("90d").unwrap(), 7_776_000_000);
        assert_eq!(parse_cert_expiry("1m").unwrap(), 60_000);
        assert_eq!(
            parse_cert_expiry("30s").unwrap_err().to_string(),
            r#"invalid argument "30s" for "--cert-expiry" flag: must be at least 1m"#
        );
        assert!(parse_cert_expiry("175201h")
            .unwrap_err()
            .to_string()
            .contains("at most 175200h"));
        assert!(parse_cert_expiry("-1h").is_err());
        assert!(parse_cert_expiry("soon").is_err());
    }

    proptest::proptest! {
        /// Any input: no panic; an accepted value is within the bounds.
        #[test]
        fn cert_expiry_parser_never_panics(input in "\\PC*") {
            if let Ok(ms) = parse_cert_expiry(&input) {
                proptest::prop_assert!((60_000..=20 * 365 * 24 * 3_600_000).contains(&ms));
            }
        }

        /// Every whole number of minutes in range is accepted as written.
        #[test]
        fn cert_expiry_round_trips_minutes(minutes in 1u64..10_000_000) {
            proptest::prop_assert_eq!(parse_cert_expiry(&format!("{minutes}m")).unwrap(), minutes * 60_000);
        }
    }

    #[test]
    fn joined_lines() {
        assert_eq!(
            joined_text(pb::NodeRole::Worker as i32),
            "This node joined a swarm as a worker."
        );
        assert_eq!(
            joined_text(pb::NodeRole::Manager as i32),
            "This node joined a swarm as a manager."
        );
    }
}
