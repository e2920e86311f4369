//! nginx for the side-by-side benchmark (BENCHMARKS.md, "nginx"): the shipped
//! `mesh/nginx/` config, with the app replaced by nginx's own `empty_gif` (so the
//! upstream costs nothing, as Envoy's `direct_response` does), one worker process
//! in the foreground (`master_process off`: the process whose CPU time is read
//! does all the work), and three ways of checking:
//! - no auth: the `auth_request` line removed;
//! - `auth_request` to the do-nothing HTTP endpoint (`null_http`): the floor;
//! - `auth_request` to portcullis' `/check/nginx`.

use super::procs::{self, Process};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

const NGINX_CONF: &str = include_str!("../../mesh/nginx/nginx.conf");
const PORTCULLIS_CONF: &str = include_str!("../../mesh/nginx/portcullis.conf");
const CHECK_CONF: &str = include_str!("../../mesh/nginx/portcullis-check.conf");

/// The nginx binary: `$NGINX_BIN`, else `nginx` on the PATH or in /usr/sbin.
pub fn nginx_bin() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("NGINX_BIN") {
        return Ok(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!("nginx not found (Debian: apt-get install nginx; or set NGINX_BIN)")
        })
}

/// `text` with `from` (which must occur exactly once) replaced by `to`.
fn replace_once(text: &str, from: &str, to: &str) -> anyhow::Result<String> {
    anyhow::ensure!(
        text.matches(from).count() == 1,
        "mesh/nginx must contain `{from}` exactly once"
    );
    Ok(text.replace(from, to))
}

/// Starts nginx in `dir` (its prefix, config and log) on a free port; `check`:
/// the HTTP check endpoint `auth_request` asks, `None` for no auth.
pub fn start(
    dir: &Path,
    check: Option<SocketAddr>,
    cpus: Option<&str>,
) -> anyhow::Result<(Process, SocketAddr)> {
    std::fs::create_dir_all(dir)?;
    let listener = procs::free_port();
    let main = replace_once(NGINX_CONF, "worker_processes auto;", "worker_processes 1;")?;
    let mut site = replace_once(
        PORTCULLIS_CONF,
        "listen 8080;",
        &format!("listen {listener};"),
    )?;
    site = replace_once(&site, "proxy_pass http://app;", "empty_gif;")?;
    site = match check {
        Some(check) => replace_once(&site, "server 127.0.0.1:8181;", &format!("server {check};"))?,
        None => replace_once(&site, "auth_request /_portcullis;", "")?,
    };
    std::fs::write(dir.join("nginx.conf"), main)?;
    std::fs::write(dir.join("portcullis.conf"), site)?;
    std::fs::write(dir.join("portcullis-check.conf"), CHECK_CONF)?;
    let mut process = Process::spawn(
        "nginx",
        &nginx_bin()?,
        &[
            "-p".into(),
            dir.display().to_string(),
            "-c".into(),
            dir.join("nginx.conf").display().to_string(),
            "-e".into(),
            "stderr".into(),
            "-g".into(),
            "daemon off; master_process off;".into(),
        ],
        &dir.join("nginx.log"),
        cpus,
    )?;
    procs::wait_listening(listener, &mut process)?;
    Ok((process, listener))
}
