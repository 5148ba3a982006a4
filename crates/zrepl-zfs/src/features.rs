//! Feature detection (zrepl 0.7 §5.3): `zfs version` plus usage-text probes, cached per handle.
//!
//! Probes run `zfs <subcommand>` without arguments, which prints the usage text and exits
//! non-zero; the usage text tells which options this `zfs` knows. All probes of the first call
//! run concurrently; the result is cached for the lifetime of the handle (a failing probe that
//! could not even spawn is not cached, so the next call retries). The pool-level feature for
//! resumable receive is cached per pool; negative answers are re-checked after a while because a
//! pool upgrade can enable it.

use std::sync::Mutex;
use std::time::Instant;

use zrepl_zfs_types::DatasetPath;

use crate::command::{args, Binary, PoolCacheMap, Zfs};
use crate::error::ZfsError;
use crate::parse::{parse_zfs_version, ZfsVersion};

/// What the installed ZFS userland supports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Features {
    /// From `zfs version`; `None` on ZFS without that subcommand (< 0.8).
    pub version: Option<ZfsVersion>,
    /// `zfs send -t <receive_resume_token>` (also needed to decode tokens with `zfs send -nvt`).
    pub resumable_send: bool,
    /// `zfs receive -s` / `-A` on the command line (the pool needs `extensible_dataset` too,
    /// see [`Zfs::resumable_recv_supported`]).
    pub resumable_recv_cli: bool,
    /// Native encryption (`zfs load-key`, raw sends with `-w`).
    pub encryption: bool,
    /// `zfs destroy fs@a,b,c`.
    pub comma_destroy: bool,
    /// `zfs bookmark fs#a fs#b` (OpenZFS >= 2.0). zrepl 0.7 never used it; we detect it.
    pub bookmark_copy: bool,
    /// The `snapshots_changed` property (OpenZFS >= 2.2), from `zfs get`'s property table.
    pub snapshots_changed: bool,
}

/// Forced results for individual features; `None` = detect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeatureOverrides {
    /// `ZREPL_EXPERIMENTAL_ZFS_SEND_RESUME_SUPPORTED`.
    pub resumable_send: Option<bool>,
    /// `ZREPL_EXPERIMENTAL_ZFS_ENCRYPTION_CLI_SUPPORTED`.
    pub encryption: Option<bool>,
    /// `ZREPL_EXPERIMENTAL_ZFS_COMMA_SYNTAX_SUPPORTED`.
    pub comma_destroy: Option<bool>,
    pub bookmark_copy: Option<bool>,
}

/// Per-pool cache of `feature@extensible_dataset`.
#[derive(Default)]
pub(crate) struct PoolFeatureCache {
    map: Mutex<PoolCacheMap>,
}

impl Zfs {
    /// Detected features, probing on the first call.
    pub async fn features(&self) -> Result<Features, ZfsError> {
        self.inner
            .features
            .get_or_try_init(|| self.detect_features())
            .await
            .cloned()
    }

    /// The usage text of `zfs <sub>`; skipped (empty) if the result is overridden anyway.
    async fn probe(&self, sub: &str, overridden: Option<bool>) -> Result<String, ZfsError> {
        if overridden.is_some() {
            return Ok(String::new());
        }
        // Any exit status is fine: the usage text is what we are after.
        Ok(self.zfs(&args![sub]).await?.combined())
    }

    async fn detect_features(&self) -> Result<Features, ZfsError> {
        let o = &self.inner.config.feature_overrides;
        let (version, send, recv, load_key, destroy, bookmark, get) = tokio::join!(
            self.probe("version", None),
            self.probe("send", o.resumable_send),
            self.probe("receive", None),
            self.probe("load-key", o.encryption),
            self.probe("destroy", o.comma_destroy),
            self.probe("bookmark", o.bookmark_copy),
            self.probe("get", None),
        );
        let load_key = load_key?;
        Ok(Features {
            version: parse_zfs_version(&version?),
            resumable_send: o
                .resumable_send
                .unwrap_or(send?.contains("receive_resume_token")),
            resumable_recv_cli: recv?.contains("-A <filesystem|volume>"),
            encryption: o
                .encryption
                .unwrap_or(load_key.contains("load-key") && load_key.contains("keylocation")),
            comma_destroy: o
                .comma_destroy
                .unwrap_or(destroy?.contains("<filesystem|volume>@<snap>[%<snap>][,...]")),
            // OpenZFS >= 2.0 usage: `bookmark <snapshot|bookmark> <newbookmark>`.
            bookmark_copy: o
                .bookmark_copy
                .unwrap_or(bookmark?.contains("<snapshot|bookmark>")),
            snapshots_changed: get?.contains("snapshots_changed"),
        })
    }

    /// `zpool get -H -p -o value feature@extensible_dataset <pool>` is `active` or `enabled`.
    pub async fn pool_resumable_recv(&self, pool: &str) -> Result<bool, ZfsError> {
        let pool_path = DatasetPath::parse(pool).map_err(|e| ZfsError::invalid_name(pool, e))?;
        if pool_path.len() != 1 {
            return Err(ZfsError::InvalidArgument(format!(
                "{pool:?} is not a pool name"
            )));
        }
        let recheck = self.inner.config.pool_feature_negative_recheck;
        if let Some(&(ok, at)) = crate::command::lock(&self.inner.pool_features.map).get(pool) {
            if ok || at.elapsed() < recheck {
                return Ok(ok);
            }
        }
        let out = self
            .run(
                Binary::Zpool,
                &args![
                    "get",
                    "-H",
                    "-p",
                    "-o",
                    "value",
                    "--",
                    "feature@extensible_dataset",
                    pool
                ],
            )
            .await?
            .check()?;
        let v = out.stdout.trim();
        let ok = v == "active" || v == "enabled";
        crate::command::lock(&self.inner.pool_features.map)
            .insert(pool.to_string(), (ok, Instant::now()));
        Ok(ok)
    }

    /// Resumable receive works for `fs`: CLI support and the pool feature.
    pub async fn resumable_recv_supported(&self, fs: &DatasetPath) -> Result<bool, ZfsError> {
        if !self.features().await?.resumable_recv_cli {
            return Ok(false);
        }
        let pool = fs
            .pool()
            .ok_or_else(|| ZfsError::InvalidArgument("empty dataset path".into()))?;
        self.pool_resumable_recv(pool).await
    }
}
