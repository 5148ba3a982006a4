//! `zrepl configcheck`: validate the config (and the TLS material it names), optionally print it.

use std::path::Path;
use std::process::ExitCode;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use zrepl_config::{Config, LoggingOutlet};

use crate::cli::{ConfigcheckArgs, Format, What};

pub fn run(config: Option<&Path>, args: ConfigcheckArgs) -> anyhow::Result<ExitCode> {
    let cfg = crate::cli::load_config(config)?;
    // The daemon's own compile step: what passes here is what `zrepl daemon` runs.
    let zfs = zrepl_zfs::Zfs::new(crate::zfs_config());
    let mut problems: Vec<String> = match zrepl_daemon::compile(&cfg, &zfs, args.skip_cert_check) {
        Ok(()) => Vec::new(),
        Err(p) => p.into_iter().map(|p| p.message).collect(),
    };
    // Logging outlets are set up before the jobs; a TLS outlet's files must be usable too.
    if !args.skip_cert_check {
        problems.extend(check_outlet_certs(&cfg).into_iter().map(|p| match p {
            CertProblem::Missing(m) | CertProblem::Invalid(m) => m,
        }));
    }
    for p in &problems {
        eprintln!("error: {p}");
    }
    for w in zrepl_config::lint::foreign_pruning(&cfg) {
        eprintln!("warning: {w}");
    }
    if !problems.is_empty() {
        anyhow::bail!(
            "{} problem(s): zrepl daemon would refuse this config{}",
            problems.len(),
            if args.skip_cert_check {
                ""
            } else {
                " (--skip-cert-check checks it without its certificate and key files)"
            }
        );
    }
    if let Some(format) = args.format {
        print!("{}", render(&cfg, format, args.what));
    }
    Ok(ExitCode::SUCCESS)
}

/// Renders the selected part of the resolved config.
pub fn render(cfg: &Config, format: Format, what: What) -> String {
    let value = match what {
        What::All | What::Config => zrepl_config::emit::to_json_value(cfg),
        What::Jobs => zrepl_config::emit::to_json_value(&cfg.jobs),
        What::Logging => zrepl_config::emit::to_json_value(&cfg.global.logging),
    };
    match format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&value).unwrap_or_default();
            s.push('\n');
            s
        }
        Format::Yaml => zrepl_config::emit::to_yaml_string(&value),
        Format::Pretty => match what {
            What::All | What::Config => format!("{cfg:#?}\n"),
            What::Jobs => format!("{:#?}\n", cfg.jobs),
            What::Logging => format!("{:#?}\n", cfg.global.logging),
        },
    }
}

#[derive(Debug)]
enum CertProblem {
    /// The file does not exist.
    Missing(String),
    /// The file exists but is not usable.
    Invalid(String),
}

#[derive(Clone, Copy)]
enum Kind {
    Certs,
    Key,
}

fn check_outlet_certs(cfg: &Config) -> Vec<CertProblem> {
    let mut files: Vec<(String, String, Kind)> = Vec::new();
    let mut add_tls = |owner: String, ca: Option<&str>, cert: &str, key: &str| {
        if let Some(ca) = ca {
            files.push((owner.clone(), ca.to_string(), Kind::Certs));
        }
        files.push((owner.clone(), cert.to_string(), Kind::Certs));
        files.push((owner, key.to_string(), Kind::Key));
    };
    for (i, o) in cfg.global.logging.iter().enumerate() {
        if let LoggingOutlet::Tcp { tls: Some(t), .. } = o {
            add_tls(
                format!("logging outlet {i}"),
                t.ca.as_deref(),
                &t.cert,
                &t.key,
            );
        }
    }
    files
        .into_iter()
        .filter_map(|(owner, path, kind)| check_pem(&owner, &path, kind).err())
        .collect()
}

fn check_pem(owner: &str, path: &str, kind: Kind) -> Result<(), CertProblem> {
    let p = Path::new(path);
    if let Err(e) = std::fs::metadata(p) {
        if e.kind() == std::io::ErrorKind::NotFound {
            return Err(CertProblem::Missing(format!(
                "{owner}: {path} does not exist"
            )));
        }
        return Err(CertProblem::Invalid(format!(
            "{owner}: cannot access {path}: {e}"
        )));
    }
    match kind {
        Kind::Certs => {
            let certs: Result<Vec<CertificateDer>, _> = CertificateDer::pem_file_iter(p)
                .map_err(|e| {
                    CertProblem::Invalid(format!(
                        "{owner}: cannot read certificates from {path}: {e}"
                    ))
                })?
                .collect();
            match certs {
                Ok(c) if !c.is_empty() => Ok(()),
                Ok(_) => Err(CertProblem::Invalid(format!(
                    "{owner}: {path} contains no PEM certificate"
                ))),
                Err(e) => Err(CertProblem::Invalid(format!(
                    "{owner}: {path}: invalid PEM certificate: {e}"
                ))),
            }
        }
        Kind::Key => PrivateKeyDer::from_pem_file(p).map(|_| ()).map_err(|e| {
            CertProblem::Invalid(format!("{owner}: {path}: no usable PEM private key: {e}"))
        }),
    }
}
