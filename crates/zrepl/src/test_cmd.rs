//! `zrepl test ...`: check config parts against the live system.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use zrepl_zfs_types::DatasetPath;

use crate::cli::{DecodeTokenArgs, TestArgs, TestCommand, TestFilesystemsArgs};

pub fn run(config: Option<&Path>, args: TestArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        TestCommand::Filesystems(a) => filesystems(config, a),
        TestCommand::Decoderesumetoken(a) => decode_token(a),
        TestCommand::Placeholder(a) => crate::abstraction_cmd::placeholder(a),
    }
}

fn filesystems(config: Option<&Path>, args: TestFilesystemsArgs) -> anyhow::Result<ExitCode> {
    let cfg = crate::cli::load_config(config)?;
    let job = cfg
        .jobs
        .iter()
        .find(|j| j.name() == args.job)
        .with_context(|| {
            let names: Vec<&str> = cfg.jobs.iter().map(|j| j.name()).collect();
            format!(
                "job {:?} is not defined (jobs: {})",
                args.job,
                names.join(", ")
            )
        })?;
    let filter = job.filesystems().with_context(|| {
        format!(
            "job {:?} of type {} does not have a filesystems filter",
            job.name(),
            job.type_name()
        )
    })?;

    let names: Vec<String> = match &args.input {
        Some(input) => vec![input.clone()],
        None => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let zfs = zrepl_zfs::Zfs::new(crate::zfs_config());
            let list = match rt.block_on(zfs.list_filesystems(None)) {
                Ok(l) => l,
                Err(zrepl_zfs::ZfsError::Spawn { binary, source })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    anyhow::bail!("could not list ZFS filesystems: {binary:?} not found: ZFS is not installed or not in PATH")
                }
                Err(e) => return Err(e).context("could not list ZFS filesystems"),
            };
            list.into_iter().map(|p| p.to_string()).collect()
        }
    };
    let mut paths = Vec::with_capacity(names.len());
    for n in &names {
        paths.push(DatasetPath::parse(n).with_context(|| format!("invalid dataset name {n:?}"))?);
    }
    for p in paths {
        let verdict = if filter.accepts(&p) {
            "ACCEPT"
        } else {
            "REJECT"
        };
        // zrepl prints a third, error column; our filter cannot fail on a valid path, so it is empty.
        println!("{verdict}\t{p}\t");
    }
    Ok(ExitCode::SUCCESS)
}

fn decode_token(args: DecodeTokenArgs) -> anyhow::Result<ExitCode> {
    let token =
        zrepl_zfs_types::resume_token::decode(&args.token).context("cannot decode resume token")?;
    let out = zrepl_zfs_types::resume_token::ZreplDecodedToken::from(&token);
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}
