//! Idempotent installation of wrk, HAProxy and nginx (with its stream module).

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};

/// Where Debian's `libnginx-mod-stream` puts the dynamic stream module.
pub const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// Installs the Debian packages whose programs are missing; does nothing when all are present.
pub fn ensure_installed() -> anyhow::Result<()> {
    let mut missing = Vec::new();
    for (bin, package) in [("wrk", "wrk"), ("haproxy", "haproxy"), ("nginx", "nginx")] {
        if find_program(bin).is_none() {
            missing.push(package);
        }
    }
    if !Path::new(NGINX_STREAM_MODULE).exists() {
        missing.push("libnginx-mod-stream");
    }
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing {} with apt-get", missing.join(" "));
    apt(&["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(&missing);
    apt(&args)?;
    for bin in ["wrk", "haproxy", "nginx"] {
        if find_program(bin).is_none() {
            bail!("{bin} is still missing after apt-get install");
        }
    }
    Ok(())
}

fn apt(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("run apt-get (are we root on Debian?)")?;
    if !status.success() {
        bail!("apt-get {} failed: {status}", args.join(" "));
    }
    Ok(())
}

/// Looks a program up on PATH and in the sbin directories (root's tools).
pub fn find_program(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(Into::into))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// First line of `program args` (stdout or stderr), for the report header.
pub fn version_line(program: &str, args: &[&str]) -> String {
    let Ok(out) = Command::new(program).args(args).output() else {
        return format!("{program}: not found");
    };
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .split(" - ")
        .next()
        .and_then(|l| l.split(" [").next())
        .unwrap_or("")
        .trim()
        .to_owned()
}
