//! The `local` transport: a push job and a sink job in the same daemon, connected in-process.
//!
//! A sink registers its listener name; a push job connecting to that name gets a receiver for
//! `root_fs/<client_identity>`, exactly what a remote peer with that identity would get. No
//! bytes are serialized: the endpoint traits are called directly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use zrepl_endpoint::{LocalReceiver, ReceiverConfig};
use zrepl_zfs::Zfs;

#[derive(Clone, Default)]
pub struct LocalListeners {
    inner: Arc<Mutex<HashMap<String, (Zfs, ReceiverConfig)>>>,
}

impl LocalListeners {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Zfs, ReceiverConfig)>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(&self, name: &str, zfs: Zfs, cfg: ReceiverConfig) -> Result<(), String> {
        let mut m = self.lock();
        if let Some((_, other)) = m.get(name) {
            return Err(format!(
                "local listener {name:?} is already used by job {:?}",
                other.job
            ));
        }
        m.insert(name.to_string(), (zfs, cfg));
        Ok(())
    }

    pub fn unregister(&self, name: &str) {
        self.lock().remove(name);
    }

    /// Connects to a local listener, waiting up to `timeout` for it to appear (jobs start
    /// concurrently); zero means no timeout, as in zrepl.
    pub async fn connect(
        &self,
        name: &str,
        client_identity: &str,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<LocalReceiver, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let found = self.lock().get(name).cloned();
            if let Some((zfs, mut cfg)) = found {
                cfg.client_identity = Some(client_identity.to_string());
                return LocalReceiver::new(zfs, cfg).map_err(|e| e.to_string());
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
