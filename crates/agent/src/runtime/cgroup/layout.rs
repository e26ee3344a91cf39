//! Where task groups go (sans-IO): the cgroup filesystems in
//! `/proc/self/mountinfo`, this process's own group in `/proc/self/cgroup`,
//! and from them the [`Layout`] of this node's task groups.

use std::path::PathBuf;

/// The directory every task group lives in.
pub const GROUP_DIR: &str = "shoal";

/// A cgroup filesystem from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// Where it is mounted.
    pub path: PathBuf,
    /// The group shown at `path` (`/` unless the mount is of a subtree).
    pub root: String,
    /// cgroup2 (unified) rather than a v1 hierarchy.
    pub v2: bool,
    /// v1: the controllers of the hierarchy (from the super options).
    pub controllers: Vec<String>,
}

/// The cgroup mounts in a `/proc/self/mountinfo` text.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split_whitespace().collect();
        let right: Vec<&str> = right.split_whitespace().collect();
        let (Some(root), Some(path), Some(fstype)) = (left.get(3), left.get(4), right.first())
        else {
            continue;
        };
        let v2 = match *fstype {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        let controllers = if v2 {
            Vec::new()
        } else {
            right
                .get(2)
                .map(|opts| {
                    opts.split(',')
                        .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains('='))
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        out.push(CgroupMount {
            path: PathBuf::from(unescape_octal(path)),
            root: unescape_octal(root),
            v2,
            controllers,
        });
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) if b[i] == b'\\' => {
                let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(v as u8);
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// This process's group in a hierarchy, from `/proc/self/cgroup`: the v2
/// line (`0::/path`) when `controller` is `None`, else the v1 line that
/// lists it.
pub fn own_group(self_cgroup: &str, controller: Option<&str>) -> Option<String> {
    self_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (id, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let hit = match controller {
            None => id == "0" && ctrls.is_empty(),
            Some(c) => ctrls.split(',').any(|x| x == c),
        };
        hit.then(|| path.to_string())
    })
}

/// Where the task groups of this node go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// cgroup v2 with cpu and memory: `<dir>/<task id>`.
    V2 { dir: PathBuf },
    /// cgroup v1: `<dir>/<task id>` in each hierarchy found.
    V1 {
        memory: Option<PathBuf>,
        cpu: Option<PathBuf>,
        /// Accounting only (`cpuacct.usage`).
        cpuacct: Option<PathBuf>,
    },
    /// Limits cannot be enforced, and why.
    Unavailable { reason: String },
}

/// Picks the layout: v2 when its root offers both `cpu` and `memory`
/// (`v2_root_controllers` is the root's `cgroup.controllers`), else the v1
/// `memory` / `cpu` hierarchies, under this process's own group there.
pub fn choose_layout(
    mounts: &[CgroupMount],
    self_cgroup: &str,
    v2_root_controllers: Option<&str>,
) -> Layout {
    if let (Some(v2), Some(ctrls)) = (mounts.iter().find(|m| m.v2), v2_root_controllers) {
        let has = |c: &str| ctrls.split_whitespace().any(|x| x == c);
        if has("cpu") && has("memory") {
            return Layout::V2 {
                dir: v2.path.join(GROUP_DIR),
            };
        }
    }
    let v1 = |controller: &str| -> Option<PathBuf> {
        let m = mounts
            .iter()
            .find(|m| !m.v2 && m.controllers.iter().any(|c| c == controller))?;
        let own = own_group(self_cgroup, Some(controller)).unwrap_or_else(|| "/".into());
        // A mount of a subtree shows `root` at its mount point.
        let rel = own
            .strip_prefix(m.root.trim_end_matches('/'))
            .unwrap_or(&own)
            .trim_start_matches('/');
        Some(m.path.join(rel).join(GROUP_DIR))
    };
    let (memory, cpu) = (v1("memory"), v1("cpu"));
    if memory.is_none() && cpu.is_none() {
        let reason = if mounts.iter().any(|m| m.v2) {
            "cgroup v2 has no cpu and memory controllers and no cgroup v1 memory or cpu hierarchy is mounted"
        } else {
            "no cgroup filesystem is mounted"
        };
        return Layout::Unavailable {
            reason: reason.into(),
        };
    }
    // cpu and cpuacct are often one hierarchy ("cpu,cpuacct").
    let cpuacct = v1("cpuacct").filter(|a| Some(a) != cpu.as_ref());
    Layout::V1 {
        memory,
        cpu,
        cpuacct,
    }
}

/// The hierarchies to mount where none is: `(directory name, fstype,
/// options)` for cgroup2 and the v1 hierarchies holding memory, cpu or
/// cpuacct, from `/proc/self/cgroup`.
pub fn private_mounts(self_cgroup: &str) -> Vec<(String, &'static str, String)> {
    let mut out = Vec::new();
    for line in self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls)) = (parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" && ctrls.is_empty() {
            out.push(("unified".to_string(), "cgroup2", String::new()));
        } else if ctrls
            .split(',')
            .any(|c| matches!(c, "memory" | "cpu" | "cpuacct"))
        {
            out.push((ctrls.to_string(), "cgroup", ctrls.to_string()));
        }
    }
    out
}
