//! Where the daemon lives (`-H/--host`), connecting to it, and turning its
//! errors into Docker's one-line messages.

use std::fmt;

use shoal_api::pb::control_client::ControlClient;
use tonic::transport::{Channel, Endpoint};

/// The daemon's socket when neither `-H` nor `SHOAL_HOST` says otherwise.
pub const DEFAULT_HOST: &str = "unix:///run/shoal/shoal.sock";

/// A connected control-API client.
pub type Control = ControlClient<Channel>;

/// A parsed `-H/--host` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// `unix:///run/shoal/shoal.sock` (or a bare absolute path).
    Unix(String),
    /// `tcp://HOST:PORT`.
    Tcp(String),
}

// === impl Host ===

impl Host {
    /// Parses `unix:///PATH`, `/PATH` or `tcp://HOST:PORT`.
    pub fn parse(s: &str) -> anyhow::Result<Host> {
        let bad = |why: &str| crate::opts::invalid(s, "-H, --host", why);
        if let Some(path) = s.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(bad(
                    "the socket path must be absolute (unix:///run/shoal/shoal.sock)",
                ));
            }
            Ok(Host::Unix(path.to_string()))
        } else if s.starts_with('/') {
            Ok(Host::Unix(s.to_string()))
        } else if let Some(addr) = s.strip_prefix("tcp://") {
            let addr = addr.trim_end_matches('/');
            match addr.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0) => {
                    Ok(Host::Tcp(addr.to_string()))
                }
                _ => Err(bad("expected tcp://HOST:PORT")),
            }
        } else {
            Err(bad("expected unix:///PATH or tcp://HOST:PORT"))
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Unix(path) => write!(f, "unix://{path}"),
            Host::Tcp(addr) => write!(f, "tcp://{addr}"),
        }
    }
}

/// The daemon could not be reached at all.
#[derive(Debug)]
pub struct CannotConnect {
    /// The socket exists but its mode or group keeps this user out.
    pub permission_denied: bool,
}

impl fmt::Display for CannotConnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cannot connect to shoald")
    }
}

impl std::error::Error for CannotConnect {}

/// An error status returned by the daemon.
#[derive(Debug)]
pub struct DaemonError(pub tonic::Status);

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error response from daemon: {}", self.0.message())
    }
}

impl std::error::Error for DaemonError {}

/// Connects to the daemon, failing with [`CannotConnect`].
pub async fn connect(host: &Host) -> anyhow::Result<Control> {
    let channel = match host {
        Host::Unix(path) => {
            let path = path.clone();
            Endpoint::try_from("http://[::]:50051")?
                .connect_with_connector(tower::service_fn(move |_| {
                    let path = path.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                    }
                }))
                .await
        }
        Host::Tcp(addr) => {
            Endpoint::try_from(format!("http://{addr}"))?
                .connect()
                .await
        }
    };
    match channel {
        Ok(channel) => {
            Ok(ControlClient::new(channel).max_decoding_message_size(shoal_api::MAX_MESSAGE_BYTES))
        }
        Err(err) => Err(CannotConnect {
            permission_denied: is_permission_denied(&err),
        }
        .into()),
    }
}

/// Whether an io::Error in `err`'s source chain is EACCES/EPERM.
fn is_permission_denied(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// Unwraps a gRPC response, turning a status into [`DaemonError`].
pub trait DaemonExt<T> {
    /// The response body, or the daemon's error.
    fn daemon(self) -> anyhow::Result<T>;
}

impl<T> DaemonExt<T> for Result<tonic::Response<T>, tonic::Status> {
    fn daemon(self) -> anyhow::Result<T> {
        self.map(tonic::Response::into_inner)
            .map_err(|s| DaemonError(s).into())
    }
}

/// How long [`retry_out_of_sequence`] keeps trying, in sleeps added up.
pub const OUT_OF_SEQUENCE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// The waits between attempts of [`retry_out_of_sequence`]: exponential from
/// 10 ms, at most 1 s each, each with random jitter (so concurrent writers
/// spread out), and no more than [`OUT_OF_SEQUENCE_PATIENCE`] in all.
fn out_of_sequence_backoff() -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(10))
        .with_max_delay(std::time::Duration::from_secs(1))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .with_total_delay(Some(OUT_OF_SEQUENCE_PATIENCE))
        .build()
}

/// Runs a read-modify-write of a service or node, again while the daemon
/// answers "update out of sequence": another client, or a manager writing
/// status, changed the object between `attempt`'s read and its write. Each
/// attempt reads the object afresh and re-applies the user's change to it;
/// attempts are spaced by [`out_of_sequence_backoff`], so concurrent writers
/// of one object all get through within [`OUT_OF_SEQUENCE_PATIENCE`].
pub async fn retry_out_of_sequence<T>(
    mut attempt: impl AsyncFnMut() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let mut waits = out_of_sequence_backoff();
    loop {
        match attempt().await {
            Err(e) if is_out_of_sequence(&e) => match waits.next() {
                Some(wait) => tokio::time::sleep(wait).await,
                None => return Err(e),
            },
            other => return other,
        }
    }
}

/// Whether the daemon refused a write because the object's version moved on.
fn is_out_of_sequence(err: &anyhow::Error) -> bool {
    err.downcast_ref::<DaemonError>()
        .is_some_and(|DaemonError(status)| status.message().contains("update out of sequence"))
}

/// Whether the status means the transport failed rather than the daemon refusing.
fn is_transport_failure(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable && std::error::Error::source(status).is_some()
}

/// Renders an error as the single stderr line the user sees.
pub fn one_line(err: &anyhow::Error, host: &str) -> String {
    let cannot = || format!("cannot connect to shoald at {host}: is it running?");
    let msg = if let Some(c) = err.downcast_ref::<CannotConnect>() {
        if c.permission_denied {
            format!(
                "permission denied while trying to connect to shoald at {host}: \
                 run as root or as a member of the socket's group (shoald --group)"
            )
        } else {
            cannot()
        }
    } else if let Some(DaemonError(status)) = err.downcast_ref::<DaemonError>() {
        if is_transport_failure(status) {
            cannot()
        } else {
            format!("{err:#}")
        }
    } else {
        format!("{err:#}")
    };
    msg.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A closed stdout (`shoal service logs web | head`) is not an error.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(
            Host::parse(DEFAULT_HOST).unwrap(),
            Host::Unix("/run/shoal/shoal.sock".into())
        );
        assert_eq!(
            Host::parse("tcp://127.0.0.1:2375").unwrap(),
            Host::Tcp("127.0.0.1:2375".into())
        );
        assert_eq!(
            Host::parse("tcp://127.0.0.1:2375").unwrap().to_string(),
            "tcp://127.0.0.1:2375"
        );
        let e = Host::parse("http://x").unwrap_err().to_string();
        assert!(
            e.starts_with("invalid argument \"http://x\" for \"-H, --host\" flag"),
            "{e}"
        );
        assert!(Host::parse("tcp://nohost").is_err());
    }

    #[test]
    fn daemon_errors_are_one_line() {
        let err: anyhow::Error =
            DaemonError(tonic::Status::not_found("no such\nservice: x")).into();
        assert_eq!(
            one_line(&err, DEFAULT_HOST),
            "Error response from daemon: no such service: x"
        );
        let err: anyhow::Error = CannotConnect {
            permission_denied: false,
        }
        .into();
        assert_eq!(
            one_line(&err, DEFAULT_HOST),
            "cannot connect to shoald at unix:///run/shoal/shoal.sock: is it running?"
        );
        let err: anyhow::Error = CannotConnect {
            permission_denied: true,
        }
        .into();
        assert_eq!(
            one_line(&err, DEFAULT_HOST),
            "permission denied while trying to connect to shoald at \
             unix:///run/shoal/shoal.sock: run as root or as a member of the socket's group \
             (shoald --group)"
        );
    }
}
