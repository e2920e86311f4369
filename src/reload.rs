//! Hot reload: the policy file and the config file are watched; a valid new
//! version is swapped in atomically as one snapshot (checks in flight finish on
//! the old one), keeping the runtime's long-lived state; an invalid one leaves
//! the old in force, is logged with every error, counted in
//! `portcullis_policy_reload_total{result="error"}`, and shown on `/readyz`
//! (which stays ready: the old version still decides).
//!
//! Files are polled, not watched with inotify: a Kubernetes ConfigMap update swaps
//! a `..data` symlink, which inotify on the file itself misses. Each poll compares
//! the resolved path, size, modification time and inode, so in-place writes,
//! renames over the file and symlink swaps are all seen.

use crate::authorizer::{Authorizer, Pipeline};
use crate::config::Config;
use crate::metrics::ResultLabels;
use crate::policy::Policy;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::task::JoinHandle;

/// Why the last reload failed, while the previous config and policy serve
/// (`/readyz` and `Admin/GetStatus` show it).
#[derive(Default)]
pub struct LastReload {
    error: arc_swap::ArcSwapOption<String>,
}

impl LastReload {
    /// Records the outcome of a reload: `Some(why)` when it failed.
    pub fn set(&self, error: Option<String>) {
        self.error.store(error.map(Arc::new));
    }

    /// Why the last reload failed, if it did.
    pub fn error(&self) -> Option<Arc<String>> {
        self.error.load_full()
    }
}

/// How often the watched files are looked at.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// What a running server reloads from.
#[derive(Debug, Clone)]
pub struct Watched {
    /// The config file (`None` for the embedded dev defaults).
    pub config_file: Option<PathBuf>,
    /// The config in force: its policy file and load options.
    pub config: Config,
}

impl Watched {
    pub fn of(config: &Config) -> Self {
        Self {
            config_file: config.source_file.clone(),
            config: config.clone(),
        }
    }
}

/// A file's identity at one moment: changes when its content may have.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    resolved: Option<PathBuf>,
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(Fingerprint {
        resolved: std::fs::canonicalize(path).ok(),
        len: meta.len(),
        modified: meta.modified().ok(),
        inode,
    })
}

/// Starts the watcher; it runs until aborted.
pub fn spawn(
    watched: Watched,
    authorizer: Arc<Authorizer>,
    last: Arc<LastReload>,
    every: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut config = watched.config;
        let config_file = watched.config_file;
        let mut config_seen = config_file.as_deref().and_then(fingerprint);
        let mut policy_seen = config.policy_file.as_deref().and_then(fingerprint);
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if let Some(file) = &config_file {
                let now = fingerprint(file);
                if now != config_seen {
                    config_seen = now;
                    if let Some(new) = reload_config(file, &config, &authorizer, &last) {
                        config = new;
                        // The config reload loaded the policy too.
                        policy_seen = config.policy_file.as_deref().and_then(fingerprint);
                        continue;
                    }
                }
            }
            if let Some(file) = &config.policy_file {
                let now = fingerprint(file);
                if now != policy_seen {
                    policy_seen = now;
                    reload_policy(file, &config, &authorizer, &last);
                }
            }
        }
    })
}

fn count(authorizer: &Authorizer, result: &'static str) {
    authorizer
        .metrics()
        .policy_reloads
        .get_or_create(&ResultLabels { result })
        .inc();
}

fn reload_policy(file: &Path, config: &Config, authorizer: &Authorizer, last: &LastReload) {
    match Policy::load(file, &config.policy_options) {
        Ok(policy) => {
            let rules = policy.rules().len();
            authorizer.set_policy(Arc::new(policy));
            last.set(None);
            count(authorizer, "success");
            tracing::info!(file = %file.display(), rules, "policy reloaded");
        }
        Err(e) => {
            let errors = e.errors();
            for error in &errors {
                tracing::error!(%error, "policy reload failed; the previous policy stays in force");
            }
            last.set(Some(format!("policy reload failed: {}", errors.join("; "))));
            count(authorizer, "error");
        }
    }
}

/// Reloads the config: issuers, headers and policy are swapped; listener and TLS
/// changes need a restart and are only reported.
fn reload_config(
    file: &Path,
    current: &Config,
    authorizer: &Authorizer,
    last: &LastReload,
) -> Option<Config> {
    let new = match Config::load(file) {
        Ok(new) => new,
        Err(e) => {
            let errors = e.errors();
            for error in &errors {
                tracing::error!(%error, "config reload failed; the previous config stays in force");
            }
            last.set(Some(format!("config reload failed: {}", errors.join("; "))));
            count(authorizer, "error");
            return None;
        }
    };
    if new.grpc_listen != current.grpc_listen
        || new.http_listen != current.http_listen
        || new.check_listen != current.check_listen
        || new.trusted_proxies != current.trusted_proxies
        || new.http_limits != current.http_limits
        || new.drain_delay != current.drain_delay
        || new.shutdown_timeout != current.shutdown_timeout
        || new.token_cache != current.token_cache
        || new.redis != current.redis
        || new.tls != current.tls
    {
        tracing::warn!(
            "server listeners, trusted_proxies, limits, shutdown timing, server.tls paths, token_cache or state.redis changed: restart portcullis to apply them"
        );
    }
    let pipeline = match Pipeline::build(&new, authorizer.runtime()) {
        Ok(pipeline) => pipeline,
        Err(e) => {
            tracing::error!(error = %e, "config reload failed; the previous config stays in force");
            last.set(Some(format!("config reload failed: {e}")));
            count(authorizer, "error");
            return None;
        }
    };
    authorizer.install(pipeline, Arc::clone(&new.policy));
    last.set(None);
    count(authorizer, "success");
    tracing::info!(file = %file.display(), issuers = new.issuers.len(), rules = new.policy.rules().len(), "config reloaded");
    Some(new)
}
