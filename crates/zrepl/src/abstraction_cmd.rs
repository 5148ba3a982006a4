//! Operator commands: `zfs-abstraction`, `migrate`, `test placeholder`, completions, man page.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;
use zrepl_endpoint::abstractions::{self, Abstraction, Query};
use zrepl_filters::DatasetFilter;
use zrepl_zfs::{DatasetPath, VersionPath, VersionType, VersionTypes, Zfs, ZfsError};
use zrepl_zfs_types::abstraction::{cursor_bookmark_name, AbstractionType, V1_CURSOR_NAME};

use crate::cli::{
    AbstractionArgs, AbstractionCommand, AbstractionFilter, CompletionShell, CreateCommand,
    GencompletionArgs, GenmanArgs, MigrateArgs, MigrateCommand, PlaceholderArgs,
};
use crate::control_client::block_on;

fn zfs() -> Zfs {
    Zfs::new(crate::zfs_config())
}

/// Maps "zfs not installed" to a clear message.
fn zfs_context(e: ZfsError) -> anyhow::Error {
    match e {
        ZfsError::Spawn { binary, source } if source.kind() == std::io::ErrorKind::NotFound => {
            anyhow::anyhow!("{binary:?} not found: ZFS is not installed or not in PATH")
        }
        e => anyhow::Error::new(e),
    }
}

fn query(f: &AbstractionFilter) -> anyhow::Result<Query> {
    let filesystems = match &f.fs {
        None => None,
        Some(spec) if spec.contains(':') => Some(DatasetFilter::parse_cli(spec).map_err(|e| {
            anyhow::anyhow!(
                "invalid --fs filter {spec:?}: {}",
                e.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })?),
        Some(ds) => {
            let p =
                DatasetPath::parse(ds).with_context(|| format!("invalid --fs dataset {ds:?}"))?;
            Some(DatasetFilter::single(&p))
        }
    };
    let mut types = Vec::new();
    for t in f.types.iter().filter(|t| !t.is_empty()) {
        types.push(AbstractionType::parse(t).with_context(|| {
            let all: Vec<&str> = AbstractionType::ALL.iter().map(|t| t.as_str()).collect();
            format!(
                "unknown abstraction type {t:?} (expected one of: {})",
                all.join(", ")
            )
        })?);
    }
    if let Some(j) = &f.job {
        zrepl_config::check_job_name(j).map_err(|e| anyhow::anyhow!("invalid --job: {e}"))?;
    }
    if f.concurrency == 0 {
        anyhow::bail!("--concurrency must be at least 1");
    }
    Ok(Query {
        filesystems,
        job: f.job.clone(),
        types,
    })
}

fn print(items: &[Abstraction], json: bool) -> anyhow::Result<()> {
    for a in items {
        if json {
            println!("{}", serde_json::to_string_pretty(a)?);
        } else {
            println!("{a}");
        }
    }
    Ok(())
}

fn list(zfs: &Zfs, f: &AbstractionFilter) -> anyhow::Result<(Vec<Abstraction>, Vec<String>)> {
    let q = query(f)?;
    block_on(abstractions::list(zfs, &q))?.map_err(zfs_context)
}

pub fn run(args: AbstractionArgs) -> anyhow::Result<ExitCode> {
    let zfs = zfs();
    match args.command {
        AbstractionCommand::List(f) => {
            let (items, errors) = list(&zfs, &f)?;
            print(&items, f.json)?;
            report_errors(&errors)
        }
        AbstractionCommand::ReleaseAll { filter, dry_run } => {
            let (items, errors) = list(&zfs, &filter)?;
            release(&zfs, &items, dry_run, filter.json, errors)
        }
        AbstractionCommand::ReleaseStale { filter, dry_run } => {
            let q = query(&filter)?;
            let has = |t| q.types.is_empty() || q.types.contains(&t);
            if has(AbstractionType::StepHold) != has(AbstractionType::ReplicationCursorV2) {
                anyhow::bail!(
                    "release-stale needs both step-hold and replication-cursor-bookmark-v2 in --type (staleness of step holds depends on the cursors)"
                );
            }
            let (items, errors) = list(&zfs, &filter)?;
            let stale = abstractions::stale(&items);
            release(&zfs, &stale, dry_run, filter.json, errors)
        }
        AbstractionCommand::Create {
            what: CreateCommand::Step { target, jobid },
        } => {
            zrepl_config::check_job_name(&jobid)
                .map_err(|e| anyhow::anyhow!("invalid --jobid: {e}"))?;
            let snap = VersionPath::parse(&target)
                .with_context(|| format!("invalid --target {target:?}"))?;
            let a = block_on(abstractions::create_step_hold(&zfs, &snap, &jobid))?
                .map_err(zfs_context)?;
            println!("{a}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn report_errors(errors: &[String]) -> anyhow::Result<ExitCode> {
    for e in errors {
        eprintln!("error: {e}");
    }
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn release(
    zfs: &Zfs,
    items: &[Abstraction],
    dry_run: bool,
    json: bool,
    mut errors: Vec<String>,
) -> anyhow::Result<ExitCode> {
    for a in items {
        if dry_run {
            if json {
                println!("{}", serde_json::to_string_pretty(a)?);
            } else {
                println!("would destroy {a}");
            }
            continue;
        }
        match block_on(abstractions::release(zfs, a))? {
            Ok(()) => {
                if json {
                    println!("{}", serde_json::to_string_pretty(a)?);
                } else {
                    println!("destroyed {a}");
                }
            }
            Err(e) => errors.push(format!("cannot destroy {a}: {e}")),
        }
    }
    report_errors(&errors)
}

/// `zrepl test placeholder`.
pub fn placeholder(args: PlaceholderArgs) -> anyhow::Result<ExitCode> {
    let zfs = zfs();
    println!("IS_PLACEHOLDER\tDATASET\tzrepl:placeholder");
    let datasets: Vec<DatasetPath> = match &args.dataset {
        Some(d) => {
            vec![DatasetPath::parse(d).with_context(|| format!("invalid dataset name {d:?}"))?]
        }
        None => block_on(zfs.list_filesystems(None))?.map_err(zfs_context)?,
    };
    for ds in datasets {
        let st = block_on(zfs.placeholder_state(&ds))?.map_err(zfs_context)?;
        if !st.exists {
            anyhow::bail!("dataset {ds} does not exist");
        }
        let yes = if st.is_placeholder { "yes" } else { "no" };
        println!("{yes}\t{ds}\t{}", st.raw_local_value.unwrap_or_default());
    }
    Ok(ExitCode::SUCCESS)
}

pub fn migrate(config: Option<&Path>, args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let cfg = crate::cli::load_config(config)?;
    let zfs = zfs();
    let mut failed = false;
    match args.command {
        MigrateCommand::Placeholder { dry_run } => {
            for job in &cfg.jobs {
                let root = match job {
                    zrepl_config::Job::Sink(j) => &j.root_fs,
                    zrepl_config::Job::Pull(j) => &j.root_fs,
                    _ => continue,
                };
                println!(
                    "job {:?}: inspecting datasets below root_fs {root}",
                    job.name()
                );
                let props = match block_on(zfs.get_properties_recursive(
                    root,
                    None,
                    &[zrepl_zfs::PLACEHOLDER_PROPERTY],
                ))? {
                    Ok(p) => p,
                    Err(ZfsError::DatasetDoesNotExist { .. }) => {
                        println!("  root_fs {root} does not exist: nothing to migrate");
                        continue;
                    }
                    Err(e) => return Err(zfs_context(e)),
                };
                for (ds, p) in props {
                    let Some(v) = p.get(zrepl_zfs::PLACEHOLDER_PROPERTY) else {
                        continue;
                    };
                    let legacy = v.source == zrepl_zfs::PropertySource::Local
                        && v.value == zrepl_zfs::legacy_placeholder_value(&ds);
                    if !legacy {
                        continue;
                    }
                    if dry_run {
                        println!("  would migrate {ds}: zrepl:placeholder={} -> on", v.value);
                    } else {
                        match block_on(zfs.set_placeholder(&ds, true))? {
                            Ok(()) => println!("  migrated {ds}: zrepl:placeholder -> on"),
                            Err(e) => {
                                failed = true;
                                println!("  MIGRATION FAILED {ds}: {e}");
                            }
                        }
                    }
                }
            }
        }
        MigrateCommand::ReplicationCursor { dry_run } => {
            let senders: Vec<(&str, &DatasetFilter)> = cfg
                .jobs
                .iter()
                .filter(|j| matches!(j, zrepl_config::Job::Push(_) | zrepl_config::Job::Source(_)))
                .filter_map(|j| j.filesystems().map(|f| (j.name(), f)))
                .collect();
            let all = block_on(zfs.list_filesystems(None))?.map_err(zfs_context)?;
            for fs in all {
                let jobs: Vec<&str> = senders
                    .iter()
                    .filter(|(_, f)| f.accepts(&fs))
                    .map(|(n, _)| *n)
                    .collect();
                let [job] = jobs[..] else {
                    if jobs.len() > 1 {
                        println!(
                            "FILESYSTEM SKIPPED {fs}: matched by more than one sending job ({})",
                            jobs.join(", ")
                        );
                    }
                    continue;
                };
                println!("INSPECT FILESYSTEM {fs} (job {job:?})");
                let bms = match block_on(zfs.list_versions(&fs, VersionTypes::Bookmarks))? {
                    Ok(b) => b,
                    Err(e) => {
                        failed = true;
                        println!("  MIGRATION FAILED: cannot list bookmarks: {e}");
                        continue;
                    }
                };
                let Some(v1) = bms.iter().find(|b| b.name == V1_CURSOR_NAME) else {
                    println!("  FILESYSTEM SKIPPED: no v1 replication cursor");
                    continue;
                };
                let v2 = bms
                    .iter()
                    .filter(|b| {
                        b.typ == VersionType::Bookmark
                            && b.name == cursor_bookmark_name(b.guid, job)
                    })
                    .max_by_key(|b| b.createtxg);
                match v2 {
                    Some(v2) if v2.createtxg >= v1.createtxg => {
                        let path = VersionPath::of(&fs, v1)?;
                        if dry_run {
                            println!("  would destroy v1 cursor {path} (v2 cursor {} is newer)", v2.full_path(&fs));
                        } else {
                            match block_on(zfs.destroy_version_idempotent(&path))? {
                                Ok(()) => println!("  destroyed v1 cursor {path}"),
                                Err(e) => {
                                    failed = true;
                                    println!("  MIGRATION FAILED: {e}");
                                }
                            }
                        }
                    }
                    _ => println!(
                        "  FILESYSTEM SKIPPED: no v2 cursor of job {job:?} at or after the v1 cursor yet (replicate once with this version first)"
                    ),
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub fn gencompletion(args: GencompletionArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = crate::cli::Cli::command();
    let mut out = std::fs::File::create(&args.path)
        .with_context(|| format!("cannot create {}", args.path.display()))?;
    let shell = match args.shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut cmd, "zrepl", &mut out);
    Ok(ExitCode::SUCCESS)
}

pub fn genman(args: GenmanArgs) -> anyhow::Result<ExitCode> {
    let cmd = crate::cli::Cli::command();
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut buf)?;
    std::fs::write(&args.path, buf)
        .with_context(|| format!("cannot write {}", args.path.display()))?;
    Ok(ExitCode::SUCCESS)
}
