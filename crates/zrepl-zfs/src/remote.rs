//! `zfs` and `zpool` on an agentless remote: every command of a [`crate::Zfs`] handle whose
//! config has a [`Remote`] runs as `ssh … <destination> -- <quoted command line>` through one
//! multiplexed OpenSSH connection (`ControlMaster=auto`), so everything built on the handle
//! (holds, cursors, placeholders, streams, batching) works on the remote host unchanged. The
//! remote needs only sshd and `zfs`; the remote shell receives one command line in which every
//! argument is single-quoted.

use std::path::PathBuf;

/// How to reach the remote host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// The local `ssh` binary; default `ssh` from `$PATH`.
    pub ssh_binary: PathBuf,
    pub host: String,
    pub user: String,
    pub port: u16,
    pub identity_file: PathBuf,
    /// A known_hosts file that must list the host's key (`StrictHostKeyChecking=yes`); `None`
    /// uses ssh's defaults (still strict: the key must be known).
    pub known_hosts: Option<PathBuf>,
    /// Extra `-o` options (`Name=value`).
    pub options: Vec<String>,
    /// The control socket of the shared connection.
    pub control_path: PathBuf,
    /// `zfs` and `zpool` on the remote (default: from the remote user's `$PATH`).
    pub zfs_binary: String,
    pub zpool_binary: String,
}

impl Remote {
    /// The control socket for `user@host:port` in `dir`: `ssh-<12 hex digits of a hash>`,
    /// short enough for a Unix socket path (ssh adds a temporary suffix while creating it).
    pub fn control_path_in(dir: &std::path::Path, user: &str, host: &str, port: u16) -> PathBuf {
        use sha2::Digest;
        let h = sha2::Sha256::digest(format!("{user}@{host}:{port}").as_bytes());
        let hex: String = h.iter().take(6).map(|b| format!("{b:02x}")).collect();
        dir.join(format!("ssh-{hex}"))
    }

    /// The local argv that runs `binary args…` on the remote: `ssh`'s options, the
    /// destination, `--`, and one command line for the remote shell.
    pub fn argv(&self, binary: &str, args: &[String]) -> Vec<String> {
        let mut v = vec![
            "-o".to_string(),
            "BatchMode=yes".to_string(),
            "-o".to_string(),
            "StrictHostKeyChecking=yes".to_string(),
            "-o".to_string(),
            "ControlMaster=auto".to_string(),
            "-o".to_string(),
            format!("ControlPath={}", self.control_path.display()),
            "-o".to_string(),
            "ControlPersist=120".to_string(),
            "-o".to_string(),
            "ServerAliveInterval=15".to_string(),
            "-o".to_string(),
            "IdentitiesOnly=yes".to_string(),
            "-i".to_string(),
            self.identity_file.display().to_string(),
            "-p".to_string(),
            self.port.to_string(),
            "-l".to_string(),
            self.user.clone(),
        ];
        if let Some(k) = &self.known_hosts {
            v.push("-o".into());
            v.push(format!("UserKnownHostsFile={}", k.display()));
        }
        for o in &self.options {
            v.push("-o".into());
            v.push(o.clone());
        }
        v.push("--".into());
        v.push(self.host.clone());
        v.push(remote_command(binary, args));
        v
    }
}

/// One POSIX shell command line: `exec env LC_ALL=C TZ=UTC 'binary' 'arg'…`, each word
/// single-quoted (a `'` inside becomes `'\''`), so no argument is split, expanded or read as
/// shell syntax by the remote shell.
pub fn remote_command(binary: &str, args: &[String]) -> String {
    let mut s = String::from("exec env LC_ALL=C TZ=UTC ");
    s.push_str(&quote(binary));
    for a in args {
        s.push(' ');
        s.push_str(&quote(a));
    }
    s
}

/// `word` single-quoted for a POSIX shell.
pub fn quote(word: &str) -> String {
    let mut q = String::with_capacity(word.len() + 2);
    q.push('\'');
    for c in word.chars() {
        if c == '\'' {
            q.push_str("'\\''");
        } else {
            q.push(c);
        }
    }
    q.push('\'');
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        for (word, want) in [
            ("tank/a", "'tank/a'"),
            ("tank/with space@s 1", "'tank/with space@s 1'"),
            ("it's", "'it'\\''s'"),
            ("$(rm -rf /);`x`|&>", "'$(rm -rf /);`x`|&>'"),
            ("", "''"),
            ("a\nb", "'a\nb'"),
        ] {
            assert_eq!(quote(word), want, "{word:?}");
        }
    }

    /// Every word survives a real shell unchanged.
    #[test]
    fn a_shell_reads_back_every_argument() {
        let args: Vec<String> = [
            "send",
            "--",
            "tank/with space@s 1",
            "it's",
            "$(touch /tmp/zrepl-remote-quote-test)",
            "*",
            "a\nb",
            "",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let line = remote_command("printf", &args).replacen(
            "exec env LC_ALL=C TZ=UTC 'printf'",
            "printf '%s\\0'",
            1,
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&line)
            .output()
            .unwrap();
        let got: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .split_terminator('\0')
            .map(str::to_string)
            .collect();
        assert_eq!(got, args);
        assert!(!std::path::Path::new("/tmp/zrepl-remote-quote-test").exists());
    }

    #[test]
    fn control_paths_are_short_and_distinct() {
        let d = std::path::Path::new("/var/run/zrepl/stdinserver");
        let a = Remote::control_path_in(d, "zrepl", "b.example", 22);
        let b = Remote::control_path_in(d, "zrepl", "b.example", 2222);
        assert_ne!(a, b);
        assert_eq!(a, Remote::control_path_in(d, "zrepl", "b.example", 22));
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("ssh-") && name.len() == 16, "{name}");
    }

    #[test]
    fn argv_shape() {
        let r = Remote {
            ssh_binary: "ssh".into(),
            host: "backup.example".into(),
            user: "zrepl".into(),
            port: 2222,
            identity_file: "/etc/zrepl/id".into(),
            known_hosts: Some("/etc/zrepl/known_hosts".into()),
            options: vec!["Compression=no".into()],
            control_path: "/run/zrepl/ssh-j".into(),
            zfs_binary: "zfs".into(),
            zpool_binary: "zpool".into(),
        };
        let v = r.argv("zfs", &["list".into(), "--".into(), "tank/a b".into()]);
        let dd = v.iter().position(|a| a == "--").unwrap();
        assert_eq!(
            &v[dd..],
            [
                "--",
                "backup.example",
                "exec env LC_ALL=C TZ=UTC 'zfs' 'list' '--' 'tank/a b'"
            ]
        );
        for want in [
            "BatchMode=yes",
            "StrictHostKeyChecking=yes",
            "ControlMaster=auto",
            "ControlPath=/run/zrepl/ssh-j",
            "UserKnownHostsFile=/etc/zrepl/known_hosts",
            "Compression=no",
        ] {
            let i = v.iter().position(|a| a == want).unwrap();
            assert_eq!(v[i - 1], "-o", "{want}");
        }
        assert!(v.windows(2).any(|w| w == ["-p", "2222"]));
        assert!(v.windows(2).any(|w| w == ["-l", "zrepl"]));
        assert!(v.windows(2).any(|w| w == ["-i", "/etc/zrepl/id"]));
    }
}
