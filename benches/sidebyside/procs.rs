//! The processes under test: started (optionally pinned with `taskset`), waited
//! for, measured from `/proc`, and killed on drop.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process; killed when dropped.
pub struct Process {
    pub name: String,
    child: Child,
}

impl Process {
    /// Runs `program args` with stdout and stderr in `log`, pinned to `cpus` (a
    /// `taskset -c` list) when given.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        log: &Path,
        cpus: Option<&str>,
    ) -> anyhow::Result<Self> {
        Self::spawn_with_env(name, program, args, &[], log, cpus)
    }

    /// [`Process::spawn`] with `env` added to the program's environment.
    pub fn spawn_with_env(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &Path)],
        log: &Path,
        cpus: Option<&str>,
    ) -> anyhow::Result<Self> {
        let mut command = match cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).arg(program);
                c
            }
            None => Command::new(program),
        };
        let out = std::fs::File::create(log)?;
        let child = command
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", program.display()))?;
        Ok(Self {
            name: name.to_owned(),
            child,
        })
    }

    /// The process id (`taskset` execs the program, so it is the program's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time (user + system) used so far, all threads, including ended ones.
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        cpu_time(self.pid())
    }

    /// Resident set size in bytes (`VmRSS`).
    pub fn rss(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .ok_or_else(|| anyhow::anyhow!("no VmRSS"))?;
        Ok(kb.parse::<u64>()? * 1024)
    }

    /// Fails when the process has exited.
    pub fn alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            Some(status) => anyhow::bail!("{} exited: {status}", self.name),
            None => Ok(()),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime of `/proc/PID/stat` (fields 14 and 15, in clock ticks).
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; fields count from its `)`.
    let rest = &stat[stat.rfind(')').ok_or_else(|| anyhow::anyhow!("bad stat"))? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64))
}

/// `getconf CLK_TCK` (100 on Linux in practice).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100)
    })
}

/// A free loopback port (bound, then released).
pub fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.local_addr().unwrap()
}

/// Waits until `addr` accepts TCP connections.
pub fn wait_listening(addr: SocketAddr, process: &mut Process) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        process.alive()?;
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("{} did not listen on {addr} in 30 s", process.name)
}

/// GET `http://addr/path` (HTTP/1.0-style, connection closed): status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Cumulative bucket counts of `portcullis_check_duration_seconds`, by upper bound.
pub type Buckets = Vec<(f64, u64)>;

/// Reads the handler histogram from portcullis' `/metrics`.
pub fn check_histogram(http: SocketAddr) -> anyhow::Result<Buckets> {
    let (_, body) = http_get(http, "/metrics")?;
    let mut buckets = Vec::new();
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("portcullis_check_duration_seconds_bucket{") else {
            continue;
        };
        let (labels, count) = rest.split_once("} ").unwrap_or((rest, "0"));
        let le = labels
            .split(',')
            .find_map(|l| l.trim().strip_prefix("le=\""))
            .map(|v| v.trim_end_matches('"'))
            .unwrap_or("+Inf");
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse()?
        };
        buckets.push((le, count.split_whitespace().next().unwrap_or("0").parse()?));
    }
    Ok(buckets)
}

/// The q-quantile (seconds) of the observations between two snapshots, linearly
/// interpolated inside its bucket (the buckets double from 25 µs, so this is only as
/// fine as they are; `le_us` is the bucket bound that holds it).
pub fn quantile(before: &Buckets, after: &Buckets, q: f64) -> Option<(f64, f64)> {
    let diff: Vec<(f64, u64)> = after
        .iter()
        .map(|(le, n)| {
            let was = before.iter().find(|(l, _)| l == le).map_or(0, |(_, n)| *n);
            (*le, n - was)
        })
        .collect();
    let total = diff.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut lower = (0.0, 0u64);
    for (le, cumulative) in diff {
        if cumulative as f64 >= rank {
            if le.is_infinite() {
                return Some((lower.0, lower.0));
            }
            let inside = (cumulative - lower.1) as f64;
            let frac = if inside > 0.0 {
                (rank - lower.1 as f64) / inside
            } else {
                1.0
            };
            return Some((lower.0 + (le - lower.0) * frac, le));
        }
        lower = (le, cumulative);
    }
    None
}
