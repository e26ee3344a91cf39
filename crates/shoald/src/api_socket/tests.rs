use std::os::unix::fs::{MetadataExt, PermissionsExt};

use nix::unistd::Gid;

use super::{bind, SocketAccess};

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
