use std::collections::VecDeque;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::unistd::Gid;

use super::{bind, AcceptLoop, Acceptor, Backoff, SocketAccess};

proptest::proptest! {
    /// Any `--group` value: no panic; a refusal is one line naming the flag.
    #[test]
    fn any_group_flag_is_taken_or_refused_in_one_line(flag in proptest::prelude::any::<String>()) {
        if let Err(err) = SocketAccess::from_flag(Some(&flag)) {
            let err = format!("{err:#}");
            proptest::prop_assert!(err.starts_with("--group ") && !err.contains('\n'), "{}", err);
        }
    }

    /// A numeric `--group` is that GID, whatever the group database says.
    #[test]
    fn a_numeric_group_flag_is_that_gid(gid in proptest::prelude::any::<u32>()) {
        let access = SocketAccess::from_flag(Some(&gid.to_string())).unwrap();
        proptest::prop_assert_eq!(
            access,
            SocketAccess::Group { name: gid.to_string(), gid: Gid::from_raw(gid) }
        );
    }
}

#[test]
fn group_flag_takes_a_name_a_gid_or_empty_for_root_only() {
    assert_eq!(
        SocketAccess::from_flag(Some("")).unwrap(),
        SocketAccess::RootOnly
    );
    assert_eq!(
        SocketAccess::from_flag(Some("0")).unwrap(),
        SocketAccess::Group {
            name: "0".into(),
            gid: Gid::from_raw(0)
        }
    );
    assert_eq!(
        SocketAccess::from_flag(Some("root")).unwrap(),
        SocketAccess::Group {
            name: "root".into(),
            gid: Gid::from_raw(0)
        }
    );
    let err = format!(
        "{:#}",
        SocketAccess::from_flag(Some("no-such-group-h19")).unwrap_err()
    );
    assert!(
        err.starts_with("--group \"no-such-group-h19\": no such group") && !err.contains('\n'),
        "{err}"
    );
    let docker = nix::unistd::Group::from_name("docker").unwrap();
    let default = SocketAccess::from_flag(None).unwrap();
    match docker {
        Some(g) => assert_eq!(
            default,
            SocketAccess::Group {
                name: "docker".into(),
                gid: g.gid
            }
        ),
        None => assert_eq!(default, SocketAccess::RootOnly),
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[tokio::test]
async fn socket_mode_and_group_do_not_depend_on_the_umask() {
    if !is_root() {
        eprintln!("skipping: chown to a group needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let group = tmp.path().join("run/shoal/group.sock");
    let root_only = tmp.path().join("run/shoal/root.sock");
    let access = SocketAccess::Group {
        name: "0".into(),
        gid: Gid::from_raw(0),
    };
    let bound = (
        bind(&group, &access).await,
        bind(&root_only, &SocketAccess::RootOnly).await,
    );
    nix::sys::stat::umask(old);
    let (_g, _r) = (bound.0.unwrap(), bound.1.unwrap());
    let meta = std::fs::metadata(&group).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    let meta = std::fs::metadata(&root_only).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
    let dir = std::fs::metadata(tmp.path().join("run/shoal")).unwrap();
    assert_eq!(dir.permissions().mode() & 0o7777, 0o755);
}

#[tokio::test]
async fn bind_refuses_a_socket_a_live_daemon_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("shoal.sock");
    let _live = bind(&path, &SocketAccess::RootOnly).await.unwrap();
    let err = format!(
        "{:#}",
        bind(&path, &SocketAccess::RootOnly).await.unwrap_err()
    );
    assert!(err.contains("another shoald is already serving"), "{err}");
}

/// Fails with `errno` for its first `failures` accepts, then accepts.
struct Scripted {
    failures: VecDeque<i32>,
    calls: Arc<AtomicUsize>,
}

impl Acceptor for Scripted {
    type Conn = ();

    async fn accept(&mut self) -> io::Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match self.failures.pop_front() {
            Some(errno) => Err(io::Error::from_raw_os_error(errno)),
            None => Ok(()),
        }
    }
}

/// Backoff for the tests: short, so they run on real time.
const TEST_BACKOFF: Backoff = Backoff {
    first: Duration::from_millis(1),
    longest: Duration::from_millis(10),
};

#[tokio::test]
async fn out_of_descriptors_spends_the_reserve_then_backs_off_instead_of_spinning() {
    let calls = Arc::new(AtomicUsize::new(0));
    let acceptor = Scripted {
        failures: std::iter::repeat_n(libc::EMFILE, 100_000).collect(),
        calls: calls.clone(),
    };
    let mut accept_loop = AcceptLoop::new(acceptor, 2, TEST_BACKOFF);
    assert_eq!(accept_loop.reserved(), 2);
    let next = tokio::time::timeout(Duration::from_millis(300), accept_loop.next()).await;
    assert!(next.is_err(), "still failing after 300 ms");
    let calls = calls.load(Ordering::SeqCst);
    // Two immediate retries (one per reserved descriptor), then waits
    // growing to 10 ms: about 35 accepts in 300 ms, not a spinning core's
    // hundreds of thousands.
    assert!((10..=80).contains(&calls), "{calls} accepts");
    assert_eq!(accept_loop.reserved(), 0);
}

#[tokio::test]
async fn a_freed_reserve_descriptor_lets_the_next_accept_through_at_once() {
    let calls = Arc::new(AtomicUsize::new(0));
    let acceptor = Scripted {
        failures: VecDeque::from([libc::EMFILE]),
        calls: calls.clone(),
    };
    // A backoff this long would time the test out: none may be taken.
    let slow = Backoff {
        first: Duration::from_secs(60),
        longest: Duration::from_secs(60),
    };
    let mut accept_loop = AcceptLoop::new(acceptor, 2, slow);
    tokio::time::timeout(Duration::from_secs(5), accept_loop.next())
        .await
        .expect("accepted without waiting");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(accept_loop.reserved(), 2, "refilled after the accept");
}

#[tokio::test]
async fn other_accept_errors_back_off_and_recover() {
    let calls = Arc::new(AtomicUsize::new(0));
    let acceptor = Scripted {
        failures: VecDeque::from([libc::ECONNABORTED, libc::EINVAL, libc::EINVAL]),
        calls: calls.clone(),
    };
    let mut accept_loop = AcceptLoop::new(acceptor, 2, TEST_BACKOFF);
    accept_loop.next().await;
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert_eq!(accept_loop.reserved(), 2, "the reserve is only for EMFILE");
}
