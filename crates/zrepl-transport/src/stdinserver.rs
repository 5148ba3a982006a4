//! `stdinserver` serve: one unix socket per client identity under
//! `global.serve.stdinserver.sockdir`; `zrepl stdinserver IDENTITY` (the `authorized_keys` forced
//! command) connects to it and relays its stdin/stdout. The identity is the socket's name, so
//! only the forced command decides who a client is.
//!
//! zrepl passes the ssh pipes' file descriptors to the daemon (SCM_RIGHTS); this relays the
//! bytes instead, which needs no file-descriptor passing and is invisible to both ends.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use crate::TransportError;

pub(crate) struct StdinListener {
    rx: mpsc::Receiver<std::io::Result<(UnixStream, String)>>,
    tasks: tokio::task::JoinSet<()>,
    paths: Vec<PathBuf>,
}

impl Drop for StdinListener {
    fn drop(&mut self) {
        self.tasks.abort_all();
        for p in &self.paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Why a directory holding sockets that are trusted by their name (stdinserver identities, the
/// daemon's control socket) is unsafe, if it is: a symlink (it could point anywhere another
/// user prepared), not a directory, or owned by another user than the daemon's (`euid`), who
/// could replace the sockets.
pub fn socket_dir_problem(meta: &std::fs::Metadata, euid: u32) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    if meta.file_type().is_symlink() {
        return Some("must not be a symlink".into());
    }
    if !meta.is_dir() {
        return Some("is not a directory".into());
    }
    if meta.uid() != euid {
        return Some(format!(
            "must be owned by the daemon's user (uid {euid}), not uid {}",
            meta.uid()
        ));
    }
    None
}

fn prepare_sockdir(dir: &Path) -> Result<(), TransportError> {
    let err = |e: std::io::Error| {
        TransportError::Config(format!("stdinserver sockdir {}: {e}", dir.display()))
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let meta = std::fs::symlink_metadata(dir).map_err(err)?;
    if let Some(p) = socket_dir_problem(&meta, rustix::process::geteuid().as_raw()) {
        return Err(TransportError::Config(format!(
            "stdinserver sockdir {}: {p}",
            dir.display()
        )));
    }
    // Connections on these sockets are trusted blindly: only the owner may reach them.
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    }
    Ok(())
}

impl StdinListener {
    pub(crate) fn bind(sockdir: &str, identities: &[String]) -> Result<Self, TransportError> {
        let dir = Path::new(sockdir);
        prepare_sockdir(dir)?;
        let (tx, rx) = mpsc::channel(16);
        let mut tasks = tokio::task::JoinSet::new();
        let mut paths = Vec::new();
        for id in identities {
            let p = dir.join(id);
            if let Ok(m) = std::fs::symlink_metadata(&p) {
                if m.file_type().is_socket() {
                    let _ = std::fs::remove_file(&p);
                } else {
                    return Err(TransportError::Config(format!(
                        "{} exists and is not a socket",
                        p.display()
                    )));
                }
            }
            let l = UnixListener::bind(&p).map_err(|e| {
                TransportError::Config(format!("cannot listen on {}: {e}", p.display()))
            })?;
            paths.push(p);
            let tx = tx.clone();
            let id = id.clone();
            tasks.spawn(async move {
                loop {
                    let r = l.accept().await.map(|(s, _)| (s, id.clone()));
                    if tx.send(r).await.is_err() {
                        return;
                    }
                }
            });
        }
        Ok(StdinListener { rx, tasks, paths })
    }

    pub(crate) async fn accept(&mut self) -> Result<(UnixStream, String), TransportError> {
        match self.rx.recv().await {
            Some(r) => Ok(r?),
            None => Err(TransportError::Config(
                "no stdinserver client identities".into(),
            )),
        }
    }
}

/// `zrepl stdinserver IDENTITY`: relays this process's stdin/stdout to the daemon's socket for
/// `identity` until the daemon closes the connection.
pub async fn stdinserver_proxy(sockdir: &str, identity: &str) -> Result<(), TransportError> {
    if identity.is_empty() || identity.contains('/') || identity == "." || identity == ".." {
        return Err(TransportError::Config(format!(
            "invalid client identity {identity:?}"
        )));
    }
    let path = Path::new(sockdir).join(identity);
    let sock = UnixStream::connect(&path).await.map_err(|e| {
        TransportError::Connect(format!(
            "cannot connect to the zrepl daemon at {} (is a job serving stdinserver client {identity:?}?): {e}",
            path.display()
        ))
    })?;
    let (mut rd, mut wr) = sock.into_split();
    let upstream = async {
        let mut stdin = BufReader::with_capacity(256 << 10, tokio::io::stdin());
        let r = tokio::io::copy_buf(&mut stdin, &mut wr).await;
        let _ = wr.shutdown().await;
        r
    };
    let downstream = async {
        let mut stdout = tokio::io::stdout();
        let mut rd = BufReader::with_capacity(256 << 10, &mut rd);
        let r = tokio::io::copy_buf(&mut rd, &mut stdout).await;
        let _ = stdout.flush().await;
        r
    };
    tokio::pin!(upstream, downstream);
    // The connection ends when the daemon closes it; stdin closing first only half-closes.
    tokio::select! {
        r = &mut downstream => { r?; }
        r = &mut upstream => {
            r?;
            downstream.await?;
        }
    }
    Ok(())
}
