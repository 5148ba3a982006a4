//! The `local` transport: an active and a passive job in the same daemon, connected in-process.
//!
//! A sink (or source) registers its listener name; a push job connecting to that name gets a
//! receiver for `root_fs/<client_identity>`, exactly what a remote peer with that identity would
//! get (a pull job gets the source's sender). No bytes are serialized: the endpoint traits are
//! called directly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use zrepl_endpoint::{LocalReceiver, LocalSender, ReceiverConfig, Registry, SenderConfig};
use zrepl_zfs::Zfs;

use crate::serve_hooks::{Hooked, ServingHooks};

/// What a passive job offers on its local listener.
#[derive(Clone)]
pub enum LocalPeer {
    Sink(Zfs, ReceiverConfig),
    Source(Zfs, SenderConfig),
}

impl LocalPeer {
    fn job(&self) -> &str {
        match self {
            LocalPeer::Sink(_, c) => &c.job,
            LocalPeer::Source(_, c) => &c.job,
        }
    }
}

/// The daemon's local listeners; the endpoints a connection gets share the daemon's
/// [`Registry`].
#[derive(Clone, Default)]
pub struct LocalListeners {
    inner: Arc<Mutex<HashMap<String, LocalPeer>>>,
    /// The session hooks of the jobs behind the listeners (those that have hooks).
    hooks: Arc<Mutex<HashMap<String, Arc<ServingHooks>>>>,
    reg: Registry,
}

impl LocalListeners {
    pub fn new(reg: Registry) -> Self {
        LocalListeners {
            inner: Arc::default(),
            hooks: Arc::default(),
            reg,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, LocalPeer>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(&self, name: &str, peer: LocalPeer) -> Result<(), String> {
        let mut m = self.lock();
        if let Some(other) = m.get(name) {
            return Err(format!(
                "local listener {name:?} is already used by job {:?}",
                other.job()
            ));
        }
        m.insert(name.to_string(), peer);
        Ok(())
    }

    pub fn unregister(&self, name: &str) {
        self.lock().remove(name);
        self.hooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    /// The session hooks (`hooks:` of the sink or source job) of listener `name`: every
    /// connect is a session.
    pub(crate) fn set_hooks(&self, name: &str, hooks: Option<Arc<ServingHooks>>) {
        let mut m = self.hooks.lock().unwrap_or_else(|p| p.into_inner());
        match hooks {
            Some(h) => m.insert(name.to_string(), h),
            None => m.remove(name),
        };
    }

    fn hooks_of(&self, name: &str) -> Option<Arc<ServingHooks>> {
        self.hooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Connects a push job to a local sink listener, waiting up to `timeout` for it to appear
    /// (jobs start concurrently); zero means no timeout, as in zrepl. With sink hooks this is
    /// a session: its `pre` has run, [`Hooked::end`] runs its `post`.
    pub(crate) async fn connect(
        &self,
        name: &str,
        client_identity: &str,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<Hooked<LocalReceiver>, String> {
        match self.find(name, timeout, cancel).await? {
            LocalPeer::Sink(zfs, mut cfg) => {
                cfg.client_identity = Some(client_identity.to_string());
                let r = LocalReceiver::new(zfs, cfg, &self.reg).map_err(|e| e.to_string())?;
                Hooked::local(self.hooks_of(name).as_ref(), client_identity, r, cancel).await
            }
            LocalPeer::Source(_, c) => Err(format!(
                "local listener {name:?} is served by source job {:?}, not a sink",
                c.job
            )),
        }
    }

    /// Connects a pull job to a local source listener (a session, as [`Self::connect`]).
    pub(crate) async fn connect_sender(
        &self,
        name: &str,
        client_identity: &str,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<Hooked<LocalSender>, String> {
        match self.find(name, timeout, cancel).await? {
            LocalPeer::Source(zfs, cfg) => {
                let s = LocalSender::new(zfs, cfg, &self.reg);
                Hooked::local(self.hooks_of(name).as_ref(), client_identity, s, cancel).await
            }
            LocalPeer::Sink(_, c) => Err(format!(
                "local listener {name:?} is served by sink job {:?}, not a source",
                c.job
            )),
        }
    }

    async fn find(
        &self,
        name: &str,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<LocalPeer, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(p) = self.lock().get(name).cloned() {
                return Ok(p);
            }
            if !timeout.is_zero() && tokio::time::Instant::now() >= deadline {
                return Err(format!("local listener {name:?} not reachable"));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = cancel.cancelled() => return Err("cancelled".into()),
            }
        }
    }
}
