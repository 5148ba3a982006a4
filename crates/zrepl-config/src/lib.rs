//! zrepl's YAML configuration (the zrepl 0.7 schema), parsed strictly into validated runtime types.
//!
//! Two stages, as in ripgrep's low/high args: [`yaml`] turns text into a tree of nodes that remember
//! their line and column; [`parse`] decodes that tree field by field into [`model`] types, applying
//! zrepl's required/optional/default rules and validating every value (grids into buckets, cron
//! expressions into schedules, filters into matchers, sizes into bytes). Errors are collected, not
//! thrown: a config with five mistakes yields five [`ConfigError`]s with file, line, column and YAML
//! path.
//!
//! This crate does no I/O of its own: `include:` files are read through a [`SourceLoader`] the
//! caller passes in, so the whole crate is testable on strings.
//!
//! Deliberate differences from zrepl 0.7 (documented in README's compatibility section):
//! relative `include` paths resolve against the main config file's directory (zrepl 0.7 uses the
//! daemon's working directory), grid `keep=0` is rejected at parse time (zrepl panics at prune
//! time), Go durations need a unit (zrepl reads a bare `30` as 30 nanoseconds), more than one
//! monitoring endpoint is a config error (zrepl panics).

pub mod cron;
pub mod decode;
pub mod emit;
pub mod error;
pub mod grid;
pub mod lint;
pub mod model;
mod parse;
pub mod timestamp;
pub mod units;
pub mod yaml;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

pub use error::{ConfigError, ConfigErrors};
pub use model::*;
pub use parse::check_job_name;

use decode::Cx;
use yaml::Mark;

/// Reads config files for [`load`]. The binary uses the real file system; tests use a map.
pub trait SourceLoader {
    fn read(&self, path: &Path) -> io::Result<String>;
    fn is_dir(&self, path: &Path) -> io::Result<bool>;
    /// The entries of a directory (full paths, any order).
    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>>;
}

/// A successfully loaded config plus anything worth warning about.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<ConfigError>,
    /// The main file followed by every included file, in the order read.
    pub files: Vec<PathBuf>,
}

/// Loads the config at `path`, resolving `include:` through `loader`.
pub fn load(path: &Path, loader: &dyn SourceLoader) -> Result<Loaded, ConfigErrors> {
    let src = loader.read(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            mark: Mark { line: 0, col: 0 },
            path: String::new(),
            message: format!("cannot read config file: {e}"),
        }])
    })?;
    load_str(&src, path, loader)
}

/// Parses `src` as if it had been read from `path` (includes resolve relative to `path`).
pub fn load_str(src: &str, path: &Path, loader: &dyn SourceLoader) -> Result<Loaded, ConfigErrors> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut files = vec![path.to_path_buf()];

    let main_tree = parse_tree(src, path, &mut errors);
    let mut cx = Cx::new(path);
    let main = parse::decode_file(&mut cx, main_tree.as_ref(), true);
    let mut jobs: Vec<(Job, PathBuf, Mark)> = main
        .jobs
        .into_iter()
        .map(|(j, n)| (j, path.to_path_buf(), name_mark(n)))
        .collect();
    let global = main.global;
    let includes = main.include;
    errors.append(&mut cx.errors);
    warnings.append(&mut cx.warnings);

    let base = path.parent().unwrap_or(Path::new("."));
    for (inc, node) in includes {
        let inc_path: PathBuf = if Path::new(&inc).is_absolute() {
            PathBuf::from(&inc)
        } else {
            base.join(&inc)
        }
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect();
        let inc_err = |errors: &mut Vec<ConfigError>, message: String| {
            errors.push(ConfigError {
                file: path.to_path_buf(),
                mark: node.mark,
                path: "include".into(),
                message,
            })
        };
        let targets = match loader.is_dir(&inc_path) {
            Err(e) => {
                inc_err(
                    &mut errors,
                    format!("cannot include {}: {e}", inc_path.display()),
                );
                continue;
            }
            Ok(true) => match loader.list_dir(&inc_path) {
                Ok(mut entries) => {
                    // Like zrepl's glob "<dir>/*.yml": regular names ending in .yml, sorted.
                    entries.retain(|p| p.extension().is_some_and(|e| e == "yml"));
                    entries.sort();
                    entries
                }
                Err(e) => {
                    inc_err(
                        &mut errors,
                        format!("cannot list included directory {}: {e}", inc_path.display()),
                    );
                    continue;
                }
            },
            Ok(false) => {
                if inc_path.extension().is_none_or(|e| e != "yml") {
                    inc_err(
                        &mut errors,
                        format!("included file {} must end in .yml", inc_path.display()),
                    );
                    continue;
                }
                vec![inc_path]
            }
        };
        for file in targets {
            let src = match loader.read(&file) {
                Ok(s) => s,
                Err(e) => {
                    inc_err(
                        &mut errors,
                        format!("cannot read included file {}: {e}", file.display()),
                    );
                    continue;
                }
            };
            files.push(file.clone());
            let tree = parse_tree(&src, &file, &mut errors);
            let mut icx = Cx::new(&file);
            let parts = parse::decode_file(&mut icx, tree.as_ref(), false);
            if let Some(n) = parts.has_include_key {
                icx.err(
                    n.mark,
                    "include",
                    "included files must not contain include (includes do not nest)",
                );
            }
            for (key, n) in parts.ignored_keys {
                icx.warn(n.mark, &key, format!("{key:?} in an included file is ignored: only jobs are taken from included files"));
            }
            jobs.extend(
                parts
                    .jobs
                    .into_iter()
                    .map(|(j, n)| (j, file.clone(), name_mark(n))),
            );
            errors.append(&mut icx.errors);
            warnings.append(&mut icx.warnings);
        }
    }

    // Cross-job checks: unique names over all files.
    let mut seen: HashMap<String, (PathBuf, Mark)> = HashMap::new();
    for (i, (job, file, mark)) in jobs.iter().enumerate() {
        if let Some((pf, pm)) = seen.get(job.name()) {
            errors.push(ConfigError {
                file: file.clone(),
                mark: *mark,
                path: format!("jobs[{i}].name"),
                message: format!(
                    "duplicate job name {:?} (first defined at {}:{}:{})",
                    job.name(),
                    pf.display(),
                    pm.line,
                    pm.col
                ),
            });
        } else {
            seen.insert(job.name().to_string(), (file.clone(), *mark));
        }
    }

    // A sink without the identity component serves one client identity; over `local`, the
    // clients are the jobs of this config that connect to its listener.
    for (i, (job, file, mark)) in jobs.iter().enumerate() {
        let Job::Sink(sink) = job else { continue };
        let Serve::Local { listener_name } = &sink.serve else {
            continue;
        };
        if sink.mapping.identity_component {
            continue;
        }
        let ids: std::collections::BTreeSet<&str> = jobs
            .iter()
            .filter_map(|(j, ..)| match j {
                Job::Push(PushJob {
                    connect:
                        Connect::Local {
                            listener_name: l,
                            client_identity,
                            ..
                        },
                    ..
                }) if l == listener_name => Some(client_identity.as_str()),
                _ => None,
            })
            .collect();
        if ids.len() > 1 {
            errors.push(ConfigError {
                file: file.clone(),
                mark: *mark,
                path: format!("jobs[{i}].mapping.identity_component"),
                message: format!(
                    "identity_component: false needs a sink that serves exactly one client identity, so that two clients can never receive into the same dataset; push jobs connect to local listener {listener_name:?} as {}",
                    ids.into_iter().collect::<Vec<_>>().join(", ")
                ),
            });
        }
    }

    match (errors.is_empty(), global) {
        (true, Some(global)) => Ok(Loaded {
            config: Config {
                global,
                jobs: jobs.into_iter().map(|(j, ..)| j).collect(),
            },
            warnings,
            files,
        }),
        _ => {
            if errors.is_empty() {
                errors.push(ConfigError {
                    file: path.to_path_buf(),
                    mark: Mark::default(),
                    path: String::new(),
                    message: "invalid config".into(),
                });
            }
            Err(ConfigErrors(errors))
        }
    }
}

fn parse_tree(src: &str, file: &Path, errors: &mut Vec<ConfigError>) -> Option<yaml::Node> {
    match yaml::parse(src) {
        Ok(t) => t,
        Err(e) => {
            errors.push(ConfigError {
                file: file.to_path_buf(),
                mark: e.mark,
                path: String::new(),
                message: format!("YAML syntax error: {}", e.message),
            });
            None
        }
    }
}

/// The mark of a job's `name` value, or of the job itself.
fn name_mark(job: &yaml::Node) -> Mark {
    if let yaml::NodeKind::Map(es) = &job.kind {
        if let Some((_, v)) = es.iter().find(|(k, _)| k.as_scalar() == Some("name")) {
            return v.mark;
        }
    }
    job.mark
}

/// A loader over an in-memory map of files, for tests and fuzzing.
#[derive(Debug, Default, Clone)]
pub struct MemLoader {
    pub files: std::collections::BTreeMap<PathBuf, String>,
}

impl SourceLoader for MemLoader {
    fn read(&self, path: &Path) -> io::Result<String> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "No such file or directory"))
    }
    fn is_dir(&self, path: &Path) -> io::Result<bool> {
        if self.files.contains_key(path) {
            return Ok(false);
        }
        if self.files.keys().any(|k| k.starts_with(path)) {
            return Ok(true);
        }
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            "No such file or directory",
        ))
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        Ok(self
            .files
            .keys()
            .filter(|k| k.parent() == Some(path))
            .cloned()
            .collect())
    }
}
