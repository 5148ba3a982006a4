//! A mock `zfs`/`zpool`: a bash script in a fresh temp dir that logs its argv and then runs a
//! test-provided bash snippet (typically a `case` on the subcommand).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use zrepl_zfs::{Zfs, ZfsConfig};

pub struct Mock {
    dir: PathBuf,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Mock {
    /// `body` runs after logging with the original arguments in `"$@"`; `$D` is the mock's
    /// directory and `$BIN` is `zfs` or `zpool`.
    pub fn new(body: &str) -> Mock {
        let dir = std::env::temp_dir().join(format!(
            "zrepl-zfs-mock-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let script = format!(
            "#!/bin/bash\n\
             D='{dir}'\n\
             BIN=$(basename \"$0\")\n\
             line=\"$BIN\"; for a in \"$@\"; do line=\"$line\"$'\\x1f'\"$a\"; done\n\
             printf '%s\\n' \"$line\" >> \"$D/log\"\n\
             {body}\n",
            dir = dir.display()
        );
        // Write the executable from a separate process: a file we opened for writing could be
        // inherited by a child that another test thread forks at that moment, and exec'ing a
        // file that is open for writing fails with ETXTBSY.
        let src = dir.join("zfs.src");
        std::fs::write(&src, script).unwrap();
        let zfs = dir.join("zfs");
        let st = std::process::Command::new("install")
            .arg("-m")
            .arg("755")
            .arg(&src)
            .arg(&zfs)
            .status()
            .unwrap();
        assert!(st.success());
        std::os::unix::fs::symlink(&zfs, dir.join("zpool")).unwrap();
        Mock { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> ZfsConfig {
        ZfsConfig {
            zfs_binary: self.dir.join("zfs"),
            zpool_binary: self.dir.join("zpool"),
            ..ZfsConfig::default()
        }
    }

    pub fn zfs(&self) -> Zfs {
        Zfs::new(self.config())
    }

    /// Every invocation so far: binary name followed by the arguments.
    pub fn calls(&self) -> Vec<Vec<String>> {
        let Ok(s) = std::fs::read_to_string(self.dir.join("log")) else {
            return Vec::new();
        };
        s.lines()
            .map(|l| l.split('\x1f').map(str::to_string).collect())
            .collect()
    }

    /// Invocations excluding feature probes (a subcommand without arguments).
    pub fn calls_no_probes(&self) -> Vec<Vec<String>> {
        self.calls().into_iter().filter(|c| c.len() > 2).collect()
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `["zfs", args...]` as owned strings, for comparisons.
pub fn v(args: &[&str]) -> Vec<String> {
    std::iter::once("zfs")
        .chain(args.iter().copied())
        .map(str::to_string)
        .collect()
}

/// Usage texts of OpenZFS 2.3 for the probed subcommands (abridged to the probed parts).
pub const PROBES_2_3: &str = r#"
probe() {
  case "$1" in
    version) printf 'zfs-2.3.2-1~bpo12+1\nzfs-kmod-2.3.2-1~bpo12+1\n'; exit 0 ;;
    send) printf 'usage:\n\tsend [-DLPbcehnpsVvw] [-i|-I snapshot]\n\t     [-R [-X dataset[,dataset]...]]     <snapshot>\n\tsend [-DnVvPLecw] [-i snapshot|bookmark] <filesystem|volume|snapshot>\n\tsend [-DnPpVvLec] [-i bookmark|snapshot] --redact <bookmark> <snapshot>\n\tsend [-nVvPe] -t <receive_resume_token>\n\tsend [-PnVv] --saved filesystem\n' >&2; exit 2 ;;
    receive) printf 'usage:\n\treceive [-vMnsFhu] [-o <property>=<value>] ... [-x <property>] ...\n\t    <filesystem|volume|snapshot>\n\treceive [-vMnsFhu] [-o <property>=<value>] ... [-x <property>] ... \n\t    [-d | -e] <filesystem>\n\treceive -A <filesystem|volume>\n' >&2; exit 2 ;;
    load-key) printf 'missing dataset argument\nusage:\n\tload-key [-rn] [-L <keylocation>] <-a | filesystem|volume>\n' >&2; exit 2 ;;
    destroy) printf 'usage:\n\tdestroy [-fnpRrv] <filesystem|volume>\n\tdestroy [-dnpRrv] <filesystem|volume>@<snap>[%%<snap>][,...]\n\tdestroy <filesystem|volume>#<bookmark>\n' >&2; exit 2 ;;
    bookmark) printf 'missing source argument\nusage:\n\tbookmark <snapshot|bookmark> <newbookmark>\n' >&2; exit 2 ;;
    get) printf 'missing property argument\nusage:\n\tget [-rHp] [-d max] ...\n\nThe following properties are supported:\n\n\tPROPERTY       EDIT  INHERIT   VALUES\n\n\tsnapshots_changed  NO    NO   <date>\n' >&2; exit 2 ;;
  esac
}
if [ $# -eq 1 ]; then probe "$1"; fi
"#;
