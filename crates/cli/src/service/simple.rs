//! `shoal service inspect|scale|rm`: small verbs over Get/Update/RemoveService.

use std::io::Write;

use anyhow::{bail, Context};
use shoal_api::pb;

use crate::client::{DaemonError, DaemonExt, Host};
use crate::{inspect, opts, progress};

/// Prints services as a JSON array, a template per service, or `--pretty`.
pub async fn inspect(
    host: &Host,
    pretty: bool,
    format: Option<&str>,
    names: &[String],
) -> anyhow::Result<()> {
    if pretty && format.is_some() {
        bail!("--format is incompatible with human friendly format");
    }
    let mut c = super::connect(host).await?;
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for name in names {
        match c
            .get_service(pb::GetServiceRequest {
                service: name.clone(),
            })
            .await
        {
            Ok(r) => match r.into_inner().service {
                Some(s) => found.push(s),
                None => errors.push(format!("no such service: {name}")),
            },
            Err(s) if inspect::is_not_found(&s) => errors.push(format!("no such service: {name}")),
            Err(s) => return Err(DaemonError(s).into()),
        }
    }
    if pretty {
        let mut out = std::io::stdout().lock();
        for s in &found {
            write!(out, "{}", inspect::service_pretty(s))?;
        }
    } else {
        let values: Vec<_> = found
            .iter()
            .map(|s| inspect::Object::Service(inspect::service_json(s)))
            .collect();
        inspect::print_values(&values, format)?;
    }
    if !errors.is_empty() {
        bail!("Error: {}", errors.join(", "));
    }
    Ok(())
}

/// `service scale web=6 api=2`: sets each replica count, then waits unless `-d`.
pub async fn scale(host: &Host, detach: bool, specs: &[String]) -> anyhow::Result<()> {
    let wanted = specs
        .iter()
        .map(|s| opts::parse_scale(s))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut c = super::connect(host).await?;
    let mut errors = Vec::new();
    let mut scaled = Vec::new();
    for (name, replicas) in wanted {
        let result = crate::client::retry_out_of_sequence(async || {
            let svc = c
                .get_service(pb::GetServiceRequest {
                    service: name.clone(),
                })
                .await
                .daemon()?
                .service
                .with_context(|| format!("no such service: {name}"))?;
            let mut spec = svc.spec.clone().unwrap_or_default();
            if opts::is_per_node(spec.mode) {
                bail!(
                    "{name}: scale can only be used with {}",
                    opts::REPLICAS_MODES
                );
            }
            spec.replicas = replicas;
            c.update_service(pb::UpdateServiceRequest {
                service: svc.id.clone(),
                version: svc.meta.as_ref().map_or(0, |m| m.version),
                spec: Some(spec),
                rollback: false,
            })
            .await
            .daemon()?;
            Ok(svc.id)
        })
        .await;
        match result {
            Ok(id) => {
                writeln!(std::io::stdout(), "{name} scaled to {replicas}")?;
                scaled.push((id, name));
            }
            Err(e) => errors.push(crate::client::one_line(&e, &host.to_string())),
        }
    }
    if !detach {
        let display = progress::Display::pick(false);
        for (id, name) in &scaled {
            if let Err(e) = progress::wait(&mut c, id, name, progress::Kind::Deploy, display).await
            {
                errors.push(crate::client::one_line(&e, &host.to_string()));
            }
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    Ok(())
}

/// Removes each service, printing the name as given; failures are reported
/// together after the others were removed.
pub async fn rm(host: &Host, names: &[String]) -> anyhow::Result<()> {
    let mut c = super::connect(host).await?;
    let mut errors = Vec::new();
    for name in names {
        match c
            .remove_service(pb::RemoveServiceRequest {
                service: name.clone(),
            })
            .await
            .daemon()
        {
            Ok(_) => writeln!(std::io::stdout(), "{name}")?,
            Err(e) => errors.push(crate::client::one_line(&e, &host.to_string())),
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    Ok(())
}
