//! `hooks: {pre, post}` of sink and source jobs: commands around every client session.
//!
//! A session is one client's job invocation as the serving side sees it: over a network
//! transport one control connection (HTTP/2, carrying every control RPC of the invocation; the
//! zfs streams come on stream connections of their own, which are attributed to the sessions
//! their client has open); over `local` one connect of an active job of the same daemon, until
//! its run ends. A client that reconnects after a network failure starts a new session.
//!
//! `pre` starts when the session starts; the session's requests wait for it. If it fails and
//! `err_is_fatal` is set, every request of the session is refused with an error that names the
//! hook, which the client reports (its run fails; nothing is received or sent). `post` runs when
//! the session ends (after `pre`, also after a refused session) and learns from its environment
//! the client, the filesystems received or sent and the result. Output and timeout as the
//! hooks of push and pull jobs (`job_hooks.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use zrepl_config::ReplicationHooks;
use zrepl_protocol::{
    ByteStream, ConvergeRequest, DestroyResult, EndpointError, FilesystemInfo, ReceiveRequest,
    Receiver, Result, SendRequest, SendResponse, Sender,
};
use zrepl_zfs::{DatasetPath, FilesystemVersion};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A serving job's hooks and the sessions it has open.
pub(crate) struct ServingHooks {
    job: String,
    hooks: ReplicationHooks,
    /// Sink: `root_fs`, below which each client gets `root_fs/<identity>`, and whether the
    /// identity component is used (`mapping.identity_component`).
    root_fs: Option<(DatasetPath, bool)>,
    next: AtomicU64,
    /// Open sessions per client identity, so that its stream connections report to them.
    open: Mutex<HashMap<String, Vec<OpenSession>>>,
}

/// A session's number and record, while it is open.
type OpenSession = (u64, Arc<Record>);

/// What a session did, as far as the serving side can tell.
#[derive(Debug, Default)]
pub(crate) struct Record {
    /// Filesystems whose received or sent steps completed (sink: the local datasets).
    filesystems: Mutex<BTreeSet<String>>,
    /// Failed receives, sends and completions.
    errors: Mutex<Vec<String>>,
}

impl Record {
    fn note<T>(&self, what: &str, r: &Result<T>) {
        if let Err(e) = r {
            lock(&self.errors).push(format!("{what}: {e}"));
        }
    }
}

/// One session, from `pre` to `post`.
pub(crate) struct Session {
    hooks: Arc<ServingHooks>,
    client: String,
    id: u64,
    record: Arc<Record>,
    /// `None` while `pre` runs; then the refusal, if any.
    pre: watch::Receiver<Option<Option<String>>>,
    ended: bool,
}

/// The environment of a serving hook (besides the daemon's own and the hook's `env`): pure.
/// `result`: the session's state (`done`, `failed`), its error and filesystems, for `post`.
pub(crate) fn session_env(
    job: &str,
    edge: &str,
    session: u64,
    client: &str,
    root: Option<&str>,
    result: Option<(&str, Option<&str>, &BTreeSet<String>)>,
) -> BTreeMap<&'static str, String> {
    let mut env = crate::job_hooks::hook_env(job, edge, session, None);
    env.remove("ZREPL_RUN");
    env.insert("ZREPL_SESSION", session.to_string());
    env.insert("ZREPL_CLIENT", client.to_string());
    if let Some(r) = root {
        env.insert("ZREPL_ROOT", r.to_string());
    }
    if let Some((state, err, fss)) = result {
        env.insert("ZREPL_RESULT", state.to_string());
        env.insert("ZREPL_JOB_ERR", err.unwrap_or("").to_string());
        let list: Vec<&str> = fss.iter().map(String::as_str).collect();
        env.insert("ZREPL_FILESYSTEMS", list.join("\n"));
    }
    env
}

/// A session's result from its errors and how its connection ended: pure.
pub(crate) fn session_result(
    refused: Option<&str>,
    errors: &[String],
    connection: std::result::Result<(), &str>,
) -> (&'static str, Option<String>) {
    let mut all: Vec<String> = refused.iter().map(|r| r.to_string()).collect();
    all.extend(errors.iter().cloned());
    if let Err(e) = connection {
        all.push(format!("connection: {e}"));
    }
    if all.is_empty() {
        ("done", None)
    } else {
        ("failed", Some(all.join("; ")))
    }
}

/// The hooks of a sink or source job (`None` without hooks).
pub(crate) fn for_role(
    job: &str,
    role: &crate::jobs::Role,
    hooks: &ReplicationHooks,
) -> Option<Arc<ServingHooks>> {
    let root = match role {
        crate::jobs::Role::Sink(rc) => Some((rc.root_fs.clone(), rc.identity_component)),
        crate::jobs::Role::Source { .. } => None,
    };
    ServingHooks::new(job, hooks, root)
}

impl ServingHooks {
    /// `None` when the job has no hooks: then nothing is wrapped or recorded.
    pub(crate) fn new(
        job: &str,
        hooks: &ReplicationHooks,
        root_fs: Option<(DatasetPath, bool)>,
    ) -> Option<Arc<Self>> {
        if hooks.pre.is_none() && hooks.post.is_none() {
            return None;
        }
        Some(Arc::new(ServingHooks {
            job: job.to_string(),
            hooks: hooks.clone(),
            root_fs,
            next: AtomicU64::new(1),
            open: Mutex::default(),
        }))
    }

    /// Where a sink puts `client`'s filesystems.
    fn root(&self, client: &str) -> Option<String> {
        self.root_fs.as_ref().map(|(r, identity)| match identity {
            true => format!("{r}/{client}"),
            false => r.to_string(),
        })
    }

    /// Starts a session of `client`: `pre` runs in the background; the session's requests
    /// wait for it ([`Session::wrap`]).
    pub(crate) fn start(self: &Arc<Self>, client: &str) -> Session {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let record = Arc::new(Record::default());
        lock(&self.open)
            .entry(client.to_string())
            .or_default()
            .push((id, record.clone()));
        let (tx, rx) = watch::channel(None);
        match self.hooks.pre.clone() {
            None => {
                let _ = tx.send(Some(None));
            }
            Some(h) => {
                let env = session_env(
                    &self.job,
                    "pre",
                    id,
                    client,
                    self.root(client).as_deref(),
                    None,
                );
                let (job, client) = (self.job.clone(), client.to_string());
                tokio::spawn(tracing::Instrument::in_current_span(async move {
                    let refusal = match crate::job_hooks::run(&h, &job, &env).await {
                        Ok(()) => None,
                        Err(e) if h.err_is_fatal => {
                            tracing::error!(job = %job, client = %client, error = %e, "the pre hook refuses this client's session (err_is_fatal)");
                            Some(format!(
                                "job {job:?} refused the session of client {client:?}: {e} (err_is_fatal)"
                            ))
                        }
                        Err(e) => {
                            tracing::warn!(job = %job, client = %client, error = %e, "pre hook failed (not fatal)");
                            None
                        }
                    };
                    let _ = tx.send(Some(refusal));
                }));
            }
        }
        Session {
            hooks: self.clone(),
            client: client.to_string(),
            id,
            record,
            pre: rx,
            ended: false,
        }
    }

    /// An endpoint for a stream connection of `client`: what it receives or sends counts for
    /// the sessions `client` has open.
    pub(crate) fn stream<E>(&self, client: &str, inner: E) -> Hooked<E> {
        let records = lock(&self.open)
            .get(client)
            .map(|v| v.iter().map(|(_, r)| r.clone()).collect())
            .unwrap_or_default();
        Hooked {
            inner,
            gate: None,
            records,
            root: self.root(client),
            session: None,
        }
    }
}

impl Session {
    /// The session's endpoint: every request waits for `pre` and is refused if it failed
    /// fatally.
    pub(crate) fn wrap<E>(&self, inner: E) -> Hooked<E> {
        Hooked {
            inner,
            gate: Some(self.pre.clone()),
            records: vec![self.record.clone()],
            root: self.hooks.root(&self.client),
            session: None,
        }
    }

    /// Waits for `pre`; its refusal, if it failed fatally.
    pub(crate) async fn pre_outcome(&self) -> Option<String> {
        wait_pre(&mut self.pre.clone()).await
    }

    /// Ends the session: after `pre` has finished, `post` runs with the session's result
    /// (`connection`: how the client's connection or run ended).
    pub(crate) async fn end(mut self, connection: std::result::Result<(), String>) {
        self.ended = true;
        let refused = wait_pre(&mut self.pre.clone()).await;
        self.close();
        let Some(h) = self.hooks.hooks.post.clone() else {
            return;
        };
        let errors = lock(&self.record.errors).clone();
        let fss = lock(&self.record.filesystems).clone();
        let (state, err) = session_result(
            refused.as_deref(),
            &errors,
            connection.as_ref().map(|_| ()).map_err(String::as_str),
        );
        let env = session_env(
            &self.hooks.job,
            "post",
            self.id,
            &self.client,
            self.hooks.root(&self.client).as_deref(),
            Some((state, err.as_deref(), &fss)),
        );
        if let Err(e) = crate::job_hooks::run(&h, &self.hooks.job, &env).await {
            // The client's run is over: a failing post hook can only be reported here.
            tracing::warn!(job = %self.hooks.job, client = %self.client, error = %e, "post hook failed");
        }
    }

    fn close(&self) {
        let mut open = lock(&self.hooks.open);
        if let Some(v) = open.get_mut(&self.client) {
            v.retain(|(id, _)| *id != self.id);
            if v.is_empty() {
                open.remove(&self.client);
            }
        }
    }
}

impl Drop for Session {
    /// A session dropped without [`Session::end`] (its task was aborted): `post` runs in the
    /// background.
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        self.close();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let s = Session {
            hooks: self.hooks.clone(),
            client: self.client.clone(),
            id: self.id,
            record: self.record.clone(),
            pre: self.pre.clone(),
            ended: true,
        };
        rt.spawn(s.end(Err("the session was cut (the daemon is stopping)".into())));
    }
}

async fn wait_pre(rx: &mut watch::Receiver<Option<Option<String>>>) -> Option<String> {
    match rx.wait_for(Option::is_some).await {
        Ok(v) => v.clone().flatten(),
        // The pre hook's task is gone without an answer (the runtime is stopping).
        Err(_) => Some("the pre hook did not finish".into()),
    }
}

/// An endpoint of a session: waits for `pre`, records what is received or sent.
pub(crate) struct Hooked<E> {
    inner: E,
    gate: Option<watch::Receiver<Option<Option<String>>>>,
    records: Vec<Arc<Record>>,
    /// Sink: the client's root, to name received filesystems as local datasets.
    root: Option<String>,
    /// `local` transport: the session this endpoint is, ended by [`Hooked::end`].
    session: Option<Session>,
}

impl<E> Hooked<E> {
    /// An endpoint without hooks.
    pub(crate) fn plain(inner: E) -> Self {
        Hooked {
            inner,
            gate: None,
            records: Vec::new(),
            root: None,
            session: None,
        }
    }

    /// `local` transport: the endpoint of a session that the active job's run is; its `pre`
    /// has finished. A fatal `pre` failure ends the session and is the error.
    pub(crate) async fn local(
        hooks: Option<&Arc<ServingHooks>>,
        client: &str,
        inner: E,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> std::result::Result<Self, String> {
        let Some(h) = hooks else {
            return Ok(Hooked::plain(inner));
        };
        let session = h.start(client);
        let refused = tokio::select! {
            r = session.pre_outcome() => r,
            // Dropping the session runs `post` once `pre` has finished.
            _ = cancel.cancelled() => return Err("cancelled".into()),
        };
        if let Some(r) = refused {
            session.end(Ok(())).await;
            return Err(r);
        }
        let mut e = session.wrap(inner);
        e.session = Some(session);
        Ok(e)
    }

    /// Ends the `local` session (if hooks made one): `post` learns the run's `outcome`.
    pub(crate) async fn end(mut self, outcome: &std::result::Result<(), String>) {
        if let Some(s) = self.session.take() {
            s.end(outcome.clone()).await;
        }
    }

    async fn gate(&self) -> Result<()> {
        let Some(g) = &self.gate else {
            return Ok(());
        };
        match wait_pre(&mut g.clone()).await {
            None => Ok(()),
            Some(refusal) => Err(EndpointError::invalid(refusal)),
        }
    }

    fn note<T>(&self, what: &str, r: &Result<T>) {
        for rec in &self.records {
            rec.note(what, r);
        }
    }

    /// Records per-request results of a batch: completed filesystems and failures.
    fn note_batch(&self, what: &str, fss: &[&DatasetPath], r: &Result<Vec<Result<()>>>) {
        self.note(what, r);
        let Ok(items) = r else { return };
        for (fs, item) in fss.iter().zip(items) {
            let name = match &self.root {
                Some(root) => format!("{root}/{fs}"),
                None => fs.to_string(),
            };
            for rec in &self.records {
                match item {
                    Ok(()) => {
                        lock(&rec.filesystems).insert(name.clone());
                    }
                    Err(e) => lock(&rec.errors).push(format!("{what} {name}: {e}")),
                }
            }
        }
    }
}

impl<E: Sender> Sender for Hooked<E> {
    async fn list_filesystems(&self) -> Result<Vec<FilesystemInfo>> {
        self.gate().await?;
        self.inner.list_filesystems().await
    }
    async fn list_versions(&self, fs: &DatasetPath) -> Result<Vec<FilesystemVersion>> {
        self.gate().await?;
        self.inner.list_versions(fs).await
    }
    async fn list_versions_many(
        &self,
        fss: &[DatasetPath],
    ) -> Result<Vec<Result<Vec<FilesystemVersion>>>> {
        self.gate().await?;
        self.inner.list_versions_many(fss).await
    }
    async fn prepare_sends(&self, reqs: &[SendRequest]) -> Result<()> {
        self.gate().await?;
        let r = self.inner.prepare_sends(reqs).await;
        self.note("prepare sends", &r);
        r
    }
    async fn sends_completed(&self, reqs: &[SendRequest]) -> Result<Vec<Result<()>>> {
        self.gate().await?;
        let r = self.inner.sends_completed(reqs).await;
        let fss: Vec<&DatasetPath> = reqs.iter().map(|r| &r.filesystem).collect();
        self.note_batch("send completion", &fss, &r);
        r
    }
    async fn converge(&self, reqs: &[ConvergeRequest]) -> Result<Vec<Result<()>>> {
        self.gate().await?;
        let r = Sender::converge(&self.inner, reqs).await;
        self.note("converge", &r);
        if let Ok(items) = &r {
            for (req, item) in reqs.iter().zip(items) {
                self.note(&format!("converge {}", req.filesystem), item);
            }
        }
        r
    }
    async fn send_dry(&self, req: &SendRequest) -> Result<u64> {
        self.gate().await?;
        self.inner.send_dry(req).await
    }
    async fn send(&self, req: SendRequest) -> Result<(SendResponse, ByteStream)> {
        self.gate().await?;
        let fs = req.filesystem.clone();
        let r = self.inner.send(req).await;
        self.note(&format!("send {fs}"), &r);
        r
    }
    async fn send_completed(&self, req: &SendRequest) -> Result<()> {
        self.gate().await?;
        let r = self.inner.send_completed(req).await;
        let r2 = r.clone().map(|()| vec![Ok(())]);
        self.note_batch("send completion", &[&req.filesystem], &r2);
        r
    }
    async fn replication_cursor(&self, fs: &DatasetPath) -> Result<Option<FilesystemVersion>> {
        self.gate().await?;
        self.inner.replication_cursor(fs).await
    }
    async fn replication_cursors(
        &self,
        fss: &[DatasetPath],
    ) -> Result<Vec<Result<Option<FilesystemVersion>>>> {
        self.gate().await?;
        self.inner.replication_cursors(fss).await
    }
    async fn cursors_and_versions(
        &self,
        fss: &[DatasetPath],
    ) -> (
        Result<Vec<Result<Option<FilesystemVersion>>>>,
        Result<Vec<Result<Vec<FilesystemVersion>>>>,
    ) {
        if let Err(e) = self.gate().await {
            return (Err(e.clone()), Err(e));
        }
        self.inner.cursors_and_versions(fss).await
    }
    async fn destroy_snapshots(
        &self,
        fs: &DatasetPath,
        snapshots: &[FilesystemVersion],
    ) -> Result<Vec<DestroyResult>> {
        self.gate().await?;
        Sender::destroy_snapshots(&self.inner, fs, snapshots).await
    }
}

impl<E: Receiver> Receiver for Hooked<E> {
    async fn list_filesystems(&self) -> Result<Vec<FilesystemInfo>> {
        self.gate().await?;
        self.inner.list_filesystems().await
    }
    async fn list_versions(&self, fs: &DatasetPath) -> Result<Vec<FilesystemVersion>> {
        self.gate().await?;
        self.inner.list_versions(fs).await
    }
    async fn list_versions_many(
        &self,
        fss: &[DatasetPath],
    ) -> Result<Vec<Result<Vec<FilesystemVersion>>>> {
        self.gate().await?;
        self.inner.list_versions_many(fss).await
    }
    async fn receive(&self, req: ReceiveRequest, stream: ByteStream) -> Result<()> {
        self.gate().await?;
        let fs = req.filesystem.clone();
        let r = self.inner.receive(req, stream).await;
        self.note(&format!("receive {fs}"), &r);
        r
    }
    async fn receives_completed(&self, reqs: &[ReceiveRequest]) -> Result<Vec<Result<()>>> {
        self.gate().await?;
        let r = self.inner.receives_completed(reqs).await;
        let fss: Vec<&DatasetPath> = reqs.iter().map(|r| &r.filesystem).collect();
        self.note_batch("receive completion", &fss, &r);
        r
    }
    async fn converge(&self, reqs: &[ConvergeRequest]) -> Result<Vec<Result<()>>> {
        self.gate().await?;
        let r = Receiver::converge(&self.inner, reqs).await;
        self.note("converge", &r);
        if let Ok(items) = &r {
            for (req, item) in reqs.iter().zip(items) {
                self.note(&format!("converge {}", req.filesystem), item);
            }
        }
        r
    }
    async fn destroy_snapshots(
        &self,
        fs: &DatasetPath,
        snapshots: &[FilesystemVersion],
    ) -> Result<Vec<DestroyResult>> {
        self.gate().await?;
        Receiver::destroy_snapshots(&self.inner, fs, snapshots).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use zrepl_config::JobHook;
    use zrepl_protocol::ReplicationConfig;

    #[test]
    fn env_table() {
        let pre = session_env("sink", "pre", 4, "host1", Some("pool/sink/host1"), None);
        assert_eq!(pre["ZREPL_JOB_NAME"], "sink");
        assert_eq!(pre["ZREPL_HOOKTYPE"], "pre_replication");
        assert_eq!(pre["ZREPL_SESSION"], "4");
        assert_eq!(pre["ZREPL_CLIENT"], "host1");
        assert_eq!(pre["ZREPL_ROOT"], "pool/sink/host1");
        assert!(!pre.contains_key("ZREPL_RUN"));
        assert!(!pre.contains_key("ZREPL_RESULT"));
        let fss: BTreeSet<String> = ["pool/a b".to_string(), "pool/c".to_string()].into();
        let post = session_env(
            "src",
            "post",
            4,
            "h",
            None,
            Some(("failed", Some("x"), &fss)),
        );
        assert_eq!(post["ZREPL_HOOKTYPE"], "post_replication");
        assert!(!post.contains_key("ZREPL_ROOT"), "a source has no root");
        assert_eq!(post["ZREPL_RESULT"], "failed");
        assert_eq!(post["ZREPL_JOB_ERR"], "x");
        assert_eq!(post["ZREPL_FILESYSTEMS"], "pool/a b\npool/c");
        let none = session_env(
            "s",
            "post",
            1,
            "h",
            None,
            Some(("done", None, &BTreeSet::new())),
        );
        assert_eq!(none["ZREPL_FILESYSTEMS"], "");
        assert_eq!(none["ZREPL_JOB_ERR"], "");
    }

    #[test]
    fn result_table() {
        let errs = vec!["receive pool/a: boom".to_string()];
        type Case<'a> = (
            Option<&'a str>,
            &'a [String],
            std::result::Result<(), &'a str>,
            &'a str,
            Option<&'a str>,
        );
        let cases: Vec<Case> = vec![
            (None, &[], Ok(()), "done", None),
            (None, &errs, Ok(()), "failed", Some("receive pool/a: boom")),
            (None, &[], Err("reset"), "failed", Some("connection: reset")),
            (Some("refused"), &[], Ok(()), "failed", Some("refused")),
            (
                Some("refused"),
                &errs,
                Err("eof"),
                "failed",
                Some("refused; receive pool/a: boom; connection: eof"),
            ),
        ];
        for (refused, errors, conn, state, err) in cases {
            let (s, e) = session_result(refused, errors, conn);
            assert_eq!(
                (s, e.as_deref()),
                (state, err),
                "{refused:?} {errors:?} {conn:?}"
            );
        }
    }

    /// A receiver that fails receives of `pool/bad`.
    #[derive(Default)]
    struct Mock;

    fn v(name: &str) -> FilesystemVersion {
        FilesystemVersion {
            typ: zrepl_zfs::VersionType::Snapshot,
            name: name.into(),
            guid: 1,
            createtxg: 1,
            creation: 0,
            userrefs: Some(0),
        }
    }

    fn recv(fs: &str) -> ReceiveRequest {
        ReceiveRequest {
            intermediates: Vec::new(),
            filesystem: DatasetPath::parse(fs).unwrap(),
            to: v("s1"),
            clear_resume_token: false,
            replication: ReplicationConfig::default(),
            from: None,
            deferred: true,
        }
    }

    impl Receiver for Mock {
        async fn list_filesystems(&self) -> Result<Vec<FilesystemInfo>> {
            Ok(vec![])
        }
        async fn list_versions(&self, _: &DatasetPath) -> Result<Vec<FilesystemVersion>> {
            Ok(vec![])
        }
        async fn receive(&self, req: ReceiveRequest, _: ByteStream) -> Result<()> {
            if req.filesystem.to_string() == "pool/bad" {
                return Err(EndpointError::zfs("cannot receive"));
            }
            Ok(())
        }
        async fn converge(&self, reqs: &[ConvergeRequest]) -> Result<Vec<Result<()>>> {
            Ok(reqs.iter().map(|_| Ok(())).collect())
        }
        async fn destroy_snapshots(
            &self,
            _: &DatasetPath,
            _: &[FilesystemVersion],
        ) -> Result<Vec<DestroyResult>> {
            Ok(vec![])
        }
    }

    fn script(dir: &std::path::Path, name: &str, body: &str, fatal: bool) -> JobHook {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        JobHook {
            path: p.display().to_string(),
            args: vec![],
            env: BTreeMap::new(),
            timeout: zrepl_config::units::GoDuration::from_secs(10),
            err_is_fatal: fatal,
        }
    }

    fn empty() -> ByteStream {
        Box::pin(std::io::Cursor::new(Vec::new()))
    }

    /// Env of the post hook, as it wrote it to `post.env`.
    fn post_env(dir: &std::path::Path) -> String {
        std::fs::read_to_string(dir.join("post.env")).unwrap_or_default()
    }

    const DUMP: &str = "env | grep ^ZREPL_ | sort > \"$(dirname \"$0\")/post.env\"\nprintf '%s' \"$ZREPL_FILESYSTEMS\" > \"$(dirname \"$0\")/post.fss\"";

    #[tokio::test]
    async fn a_session_records_what_it_received_and_post_learns_it() {
        let dir = tempfile::tempdir().unwrap();
        let hooks = ReplicationHooks {
            pre: Some(script(
                dir.path(),
                "pre",
                "sleep 0.3; touch \"$(dirname \"$0\")/pre.done\"",
                true,
            )),
            post: Some(script(dir.path(), "post", DUMP, false)),
        };
        let root = DatasetPath::parse("pool/sink").unwrap();
        let h = ServingHooks::new("sink", &hooks, Some((root, true))).unwrap();
        let session = h.start("host1");
        let control = session.wrap(Mock);
        // Requests wait for pre.
        control.list_filesystems().await.unwrap();
        assert!(
            dir.path().join("pre.done").exists(),
            "pre ran before the first request"
        );
        // A stream connection of the same client reports to the session.
        let stream = h.stream("host1", Mock);
        stream.receive(recv("pool/a"), empty()).await.unwrap();
        stream.receive(recv("pool/bad"), empty()).await.unwrap_err();
        // Another client's stream does not.
        h.stream("host2", Mock)
            .receive(recv("pool/bad"), empty())
            .await
            .unwrap_err();
        control
            .receives_completed(&[recv("pool/a"), recv("pool/x y")])
            .await
            .unwrap();
        session.end(Ok(())).await;
        let env = post_env(dir.path());
        assert!(env.contains("ZREPL_CLIENT=host1\n"), "{env}");
        assert!(env.contains("ZREPL_ROOT=pool/sink/host1\n"), "{env}");
        assert!(env.contains("ZREPL_RESULT=failed\n"), "{env}");
        assert!(
            env.contains("ZREPL_JOB_ERR=receive pool/bad: cannot receive\n"),
            "{env}"
        );
        assert!(env.contains("ZREPL_SESSION=1\n"), "{env}");
        let fss = std::fs::read_to_string(dir.path().join("post.fss")).unwrap();
        assert_eq!(fss, "pool/sink/host1/pool/a\npool/sink/host1/pool/x y");
        assert!(lock(&h.open).is_empty(), "the session is closed");

        // A clean second session: done, nothing received.
        let s2 = h.start("host1");
        s2.wrap(Mock).list_filesystems().await.unwrap();
        s2.end(Ok(())).await;
        let env = post_env(dir.path());
        assert!(
            env.contains("ZREPL_RESULT=done\n") && env.contains("ZREPL_SESSION=2\n"),
            "{env}"
        );
    }

    #[tokio::test]
    async fn a_fatal_pre_failure_refuses_every_request_and_post_still_runs() {
        let dir = tempfile::tempdir().unwrap();
        let hooks = ReplicationHooks {
            pre: Some(script(dir.path(), "pre", "echo no >&2; exit 3", true)),
            post: Some(script(dir.path(), "post", DUMP, false)),
        };
        let h = ServingHooks::new("sink", &hooks, None).unwrap();
        let session = h.start("host1");
        let control = session.wrap(Mock);
        let e = control.list_filesystems().await.unwrap_err();
        assert_eq!(
            e.kind,
            zrepl_protocol::ErrorKind::InvalidRequest,
            "not retried"
        );
        assert!(
            e.message
                .contains("job \"sink\" refused the session of client \"host1\"")
                && e.message.contains("pre_replication hook")
                && e.message.contains("err_is_fatal"),
            "{e}"
        );
        control.receive(recv("pool/a"), empty()).await.unwrap_err();
        session.end(Ok(())).await;
        let env = post_env(dir.path());
        assert!(env.contains("ZREPL_RESULT=failed\n"), "{env}");
        assert!(env.contains("refused the session"), "{env}");

        // Not fatal: the session goes on.
        let hooks = ReplicationHooks {
            pre: Some(script(dir.path(), "pre2", "exit 3", false)),
            post: None,
        };
        let h = ServingHooks::new("sink", &hooks, None).unwrap();
        let s = h.start("c");
        s.wrap(Mock).list_filesystems().await.unwrap();
        s.end(Ok(())).await;
        assert!(ServingHooks::new("sink", &ReplicationHooks::default(), None).is_none());
    }

    /// A sender whose completions fail for `pool/bad`.
    struct MockSender;

    fn send(fs: &str) -> SendRequest {
        SendRequest {
            intermediates: Vec::new(),
            filesystem: DatasetPath::parse(fs).unwrap(),
            from: None,
            to: v("s1"),
            resume_token: None,
            replication: ReplicationConfig::default(),
        }
    }

    impl Sender for MockSender {
        async fn list_filesystems(&self) -> Result<Vec<FilesystemInfo>> {
            Ok(vec![])
        }
        async fn list_versions(&self, _: &DatasetPath) -> Result<Vec<FilesystemVersion>> {
            Ok(vec![])
        }
        async fn sends_completed(&self, reqs: &[SendRequest]) -> Result<Vec<Result<()>>> {
            Ok(reqs
                .iter()
                .map(|r| match r.filesystem.to_string().as_str() {
                    "pool/bad" => Err(EndpointError::zfs("cannot move the cursor")),
                    _ => Ok(()),
                })
                .collect())
        }
        async fn converge(&self, reqs: &[ConvergeRequest]) -> Result<Vec<Result<()>>> {
            Ok(reqs.iter().map(|_| Ok(())).collect())
        }
        async fn send_dry(&self, _: &SendRequest) -> Result<u64> {
            Ok(0)
        }
        async fn send(&self, _: SendRequest) -> Result<(SendResponse, ByteStream)> {
            Err(EndpointError::not_found("nothing to send"))
        }
        async fn send_completed(&self, _: &SendRequest) -> Result<()> {
            Ok(())
        }
        async fn replication_cursor(&self, _: &DatasetPath) -> Result<Option<FilesystemVersion>> {
            Ok(None)
        }
        async fn destroy_snapshots(
            &self,
            _: &DatasetPath,
            _: &[FilesystemVersion],
        ) -> Result<Vec<DestroyResult>> {
            Ok(vec![])
        }
    }

    #[tokio::test]
    async fn a_source_session_records_its_completed_sends() {
        let dir = tempfile::tempdir().unwrap();
        let hooks = ReplicationHooks {
            pre: None,
            post: Some(script(dir.path(), "post", DUMP, false)),
        };
        let h = ServingHooks::new("source", &hooks, None).unwrap();
        let s = h.start("puller");
        let control = s.wrap(MockSender);
        control
            .sends_completed(&[send("pool/a"), send("pool/bad"), send("pool/b")])
            .await
            .unwrap();
        s.end(Ok(())).await;
        let env = post_env(dir.path());
        assert!(!env.contains("ZREPL_ROOT="), "{env}");
        assert!(env.contains("ZREPL_CLIENT=puller\n"), "{env}");
        assert!(env.contains("ZREPL_RESULT=failed\n"), "{env}");
        assert!(
            env.contains("ZREPL_JOB_ERR=send completion pool/bad: cannot move the cursor\n"),
            "{env}"
        );
        let fss = std::fs::read_to_string(dir.path().join("post.fss")).unwrap();
        assert_eq!(fss, "pool/a\npool/b");
    }

    #[tokio::test]
    async fn over_the_network_the_client_reports_the_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let hooks = ReplicationHooks {
            pre: Some(script(dir.path(), "pre", "exit 1", true)),
            post: None,
        };
        let h = ServingHooks::new("sink", &hooks, None).unwrap();
        let client = zrepl_rpc::Client::new(
            "sink-host",
            Arc::new(move || {
                let h = h.clone();
                let (a, b) = tokio::io::duplex(1 << 16);
                tokio::spawn(async move {
                    let acc = zrepl_rpc::accept(b, zrepl_rpc::ServeOptions::default())
                        .await
                        .unwrap();
                    let s = h.start("host1");
                    let r = acc
                        .serve_receiver(Arc::new(s.wrap(Mock)))
                        .await
                        .map_err(|e| e.to_string());
                    s.end(r).await;
                });
                Box::pin(async move { Ok(Box::new(a) as Box<dyn zrepl_rpc::ClientConn>) })
            }),
            zrepl_rpc::ClientOptions::default(),
        );
        let e = tokio::time::timeout(Duration::from_secs(10), Receiver::list_filesystems(&client))
            .await
            .expect("answered")
            .unwrap_err();
        assert!(
            e.message
                .contains("refused the session of client \"host1\""),
            "{e}"
        );
    }
}
