//! The report of a run: the Markdown table of medians over rounds, the ratios
//! against BENCHMARKS.md's targets (as ratios of medians and as the median of each
//! round's ratio), and `results.json` with every round and figure.

use super::harness::{Measured, Options, Report};
use serde_json::json;

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Medians over rounds of one figure of one measurement.
struct Medians<'a>(&'a [Vec<Measured>]);

impl Medians<'_> {
    fn get(&self, name: &str, f: impl Fn(&Measured) -> Option<f64>) -> f64 {
        median(
            self.0
                .iter()
                .flat_map(|r| r.iter().filter(|m| m.name == name).filter_map(&f))
                .collect(),
        )
    }
    fn rps(&self, name: &str) -> f64 {
        self.get(name, |m| Some(m.load.rps))
    }
    fn cpu(&self, name: &str, who: &str) -> f64 {
        self.get(name, |m| m.cpu_us.get(who).copied())
    }
    /// Envoy + authorizer CPU per request.
    fn total_cpu(&self, name: &str) -> f64 {
        self.get(name, |m| Some(m.cpu_us.values().sum()))
    }
}

/// One figure of one measurement in one round (NaN when it was not run).
fn figure(round: &[Measured], name: &str, f: impl Fn(&Measured) -> Option<f64>) -> f64 {
    round
        .iter()
        .find(|m| m.name == name)
        .and_then(f)
        .unwrap_or(f64::NAN)
}

/// A ratio taken within each round, where both sides ran side by side in
/// alternating slices (`interleave`): on a noisy machine a slow window slows both,
/// and these stay fair where a ratio of medians need not.
struct PerRound {
    what: &'static str,
    ratios: Vec<f64>,
}

fn per_round(rounds: &[Vec<Measured>], verify_us: &[f64]) -> Vec<PerRound> {
    let cpu = |m: &Measured| m.cpu_us.get("authz").copied();
    let rps = |m: &Measured| Some(m.load.rps);
    let ratio = |what, num, den, f: &dyn Fn(&Measured) -> Option<f64>| PerRound {
        what,
        ratios: rounds
            .iter()
            .map(|r| figure(r, num, f) / figure(r, den, f))
            .filter(|v| v.is_finite())
            .collect(),
    };
    vec![
        ratio(
            "portcullis (a) / null-authz, CPU per Check",
            "grpc portcullis (a) cached token",
            "grpc null-authz",
            &cpu,
        ),
        ratio(
            "Envoy+portcullis (a) / Envoy+null-authz, throughput",
            "e2e envoy+portcullis (a)",
            "e2e envoy+null-authz",
            &rps,
        ),
        PerRound {
            what: "(portcullis (b) − null-authz) / bare RS256, CPU per Check",
            ratios: rounds
                .iter()
                .zip(verify_us)
                .map(|(r, bare)| {
                    (figure(r, "grpc portcullis (b) fresh RS256", cpu)
                        - figure(r, "grpc null-authz", cpu))
                        / bare
                })
                .filter(|v| v.is_finite())
                .collect(),
        },
        ratio(
            "portcullis (b) / null-authz + bare RS256 (b), CPU per Check",
            "grpc portcullis (b) fresh RS256",
            "grpc null-authz + bare RS256 (b) fresh RS256",
            &cpu,
        ),
        ratio(
            "Envoy+module (a) / Envoy jwt_authn (a, JWT cache), throughput",
            super::harness::MODULE_ROW,
            "e2e envoy jwt_authn (a), JWT cache",
            &rps,
        ),
    ]
}

pub fn report(
    opts: &Options,
    mtls: bool,
    rounds: &[Vec<Measured>],
    verify_rounds: &[f64],
    rss: &[f64],
    fill_rss: f64,
) -> Report {
    let m = Medians(rounds);
    let verify_us = median(verify_rounds.to_vec());
    let names: Vec<String> = rounds
        .first()
        .map_or(vec![], |r| r.iter().map(|m| m.name.clone()).collect());
    let fmt = |v: f64, digits: usize| {
        if v.is_nan() {
            "–".to_owned()
        } else {
            format!("{v:.digits$}")
        }
    };
    let mut md = String::new();
    md.push_str(&format!(
        "Medians of {} round(s), {:.0} s per measurement, concurrency {}, {}. Load average at the end (the benchmark itself keeps both cores busy): {}.\n\n",
        rounds.len(),
        opts.duration.as_secs_f64(),
        opts.concurrency,
        if opts.pin { "pinned (Envoy CPU 0; authorizer and wrk CPU 1; load generator CPU 0)" } else { "not pinned" },
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    ));
    md.push_str("| measurement | req/s | p50 µs | p99 µs | CPU µs/req Envoy (nginx) | CPU µs/req authorizer | handler p50 / p99 µs | unexpected |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for name in &names {
        let hp50 = m.get(name, |x| x.handler_p50_us);
        let hp99 = m.get(name, |x| x.handler_p99_us);
        md.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} |\n",
            fmt(m.rps(name), 0),
            fmt(m.get(name, |x| Some(x.load.p50_us)), 0),
            fmt(m.get(name, |x| Some(x.load.p99_us)), 0),
            // The proxy of the row: Envoy, or nginx in the auth_request rows.
            fmt(
                if name.starts_with("e2e nginx") {
                    m.cpu(name, "nginx")
                } else {
                    m.cpu(name, "envoy")
                },
                1
            ),
            fmt(m.cpu(name, "authz"), 1),
            if hp50.is_nan() {
                "–".into()
            } else {
                format!("{} / {}", fmt(hp50, 0), fmt(hp99, 0))
            },
            fmt(m.get(name, |x| Some(x.load.unexpected as f64)), 0),
        ));
    }
    let null_cpu = m.cpu("grpc null-authz", "authz");
    let a_cpu = m.cpu("grpc portcullis (a) cached token", "authz");
    let b_cpu = m.cpu("grpc portcullis (b) fresh RS256", "authz");
    let b_floor_cpu = m.cpu("grpc null-authz + bare RS256 (b) fresh RS256", "authz");
    let e2e_null = m.rps("e2e envoy+null-authz");
    let e2e_a = m.rps("e2e envoy+portcullis (a)");
    let jwt_cache = m.rps("e2e envoy jwt_authn (a), JWT cache");
    let jwt_nocache = m.rps("e2e envoy jwt_authn (a), no JWT cache");
    let handler_p99 = m.get("grpc @1000/s portcullis (a)", |x| x.handler_p99_us);
    let e2e_handler_p99 = m.get("e2e @1000/s envoy+portcullis (a)", |x| x.handler_p99_us);
    let rss_mib = fill_rss / 1048576.0;
    let ah_cpu = m.total_cpu("e2e envoy+portcullis (a), allowed_headers");
    let all_cpu = m.total_cpu("e2e envoy+portcullis (a)");
    let context_envoy = m.cpu("e2e envoy+null-authz, context headers", "envoy");
    let null_envoy = m.cpu("e2e envoy+null-authz", "envoy");
    let verdict = |ok: bool| if ok { "met" } else { "**not met**" };
    let per_round = per_round(rounds, verify_rounds);
    let rounds_ratio = |i: usize| median(per_round[i].ratios.clone());
    let round_median = |i: usize| {
        format!(
            " (median of the rounds' ratios: {}×)",
            fmt(rounds_ratio(i), 2)
        )
    };
    // A ratio with a target is met when both statistics meet it.
    let both = |medians: bool, rounds: bool| match (medians, rounds) {
        (true, true) => "met",
        (false, true) => "**not met** (ratio of medians)",
        (true, false) => "**not met** (median of the rounds' ratios)",
        (false, false) => "**not met**",
    };
    let mut ratios: Vec<(String, String, String, String)> = vec![
        (
            "CPU per Check, portcullis (a) / null-authz (direct gRPC)".into(),
            format!("{} / {} µs = {}×", fmt(a_cpu, 1), fmt(null_cpu, 1), fmt(a_cpu / null_cpu, 2)) + &round_median(0),
            "≤ 1.25×".into(),
            both(a_cpu / null_cpu <= 1.25, rounds_ratio(0) <= 1.25).into(),
        ),
        (
            "throughput, Envoy+portcullis (a) / Envoy+null-authz".into(),
            format!("{} / {} req/s = {}×", fmt(e2e_a, 0), fmt(e2e_null, 0), fmt(e2e_a / e2e_null, 2)) + &round_median(1),
            "≥ 0.9×".into(),
            both(e2e_a / e2e_null >= 0.9, rounds_ratio(1) >= 0.9).into(),
        ),
        (
            "CPU per Check, portcullis (b) − null-authz, in bare RS256 verifications".into(),
            format!("({} − {}) / {} µs = {}×", fmt(b_cpu, 1), fmt(null_cpu, 1), fmt(verify_us, 1), fmt((b_cpu - null_cpu) / verify_us, 2)) + &round_median(2),
            "≤ 1.2×".into(),
            both(b_cpu <= null_cpu + 1.2 * verify_us, rounds_ratio(2) <= 1.2).into(),
        ),
        (
            "CPU per Check, portcullis (b) / null-authz + bare RS256 (b) (the measured floor of (b))".into(),
            format!("{} / {} µs = {}×", fmt(b_cpu, 1), fmt(b_floor_cpu, 1), fmt(b_cpu / b_floor_cpu, 2)) + &round_median(3),
            "reference".into(),
            "–".into(),
        ),
        (
            "handler p99 at 1,000 req/s (direct gRPC; through Envoy)".into(),
            format!("{} µs; {} µs", fmt(handler_p99, 0), fmt(e2e_handler_p99, 0)),
            "< 200 µs".into(),
            verdict(handler_p99 < 200.0 && e2e_handler_p99 < 200.0).into(),
        ),
        (
            format!("RSS with {} cached users and tokens", opts.fill),
            format!("{} MiB (after a round: {} MiB)", fmt(rss_mib, 1), fmt(median(rss.to_vec()) / 1048576.0, 1)),
            "< 64 MiB".into(),
            if opts.fill >= 100_000 { verdict(rss_mib < 64.0).into() } else { "not measured at 100,000 (quick run)".into() },
        ),
        (
            "throughput, Envoy+portcullis (a) / Envoy jwt_authn (JWT cache; no cache)".into(),
            format!("{}×; {}×", fmt(e2e_a / jwt_cache, 2), fmt(e2e_a / jwt_nocache, 2)),
            "reference".into(),
            "–".into(),
        ),
        (
            "throughput, Envoy+portcullis (b) / Envoy jwt_authn (b), fresh tokens".into(),
            format!("{}×", fmt(m.rps("e2e envoy+portcullis (b) fresh RS256") / m.rps("e2e envoy jwt_authn (b) fresh RS256"), 2)),
            "reference".into(),
            "–".into(),
        ),
        (
            "CPU per request (all processes), Envoy+portcullis (a) / Envoy jwt_authn (a, JWT cache)".into(),
            format!("{} / {} µs = {}×", fmt(all_cpu, 1), fmt(m.total_cpu("e2e envoy jwt_authn (a), JWT cache"), 1), fmt(all_cpu / m.total_cpu("e2e envoy jwt_authn (a), JWT cache"), 2)),
            "reference".into(),
            "–".into(),
        ),
        (
            "context headers: Envoy's CPU per request behind null-authz, with / without; throughput, Envoy+portcullis (a) / Envoy+null-authz with them".into(),
            format!(
                "{} / {} µs = {}×; {}×",
                fmt(context_envoy, 1),
                fmt(null_envoy, 1),
                fmt(context_envoy / null_envoy, 2),
                fmt(e2e_a / m.rps("e2e envoy+null-authz, context headers"), 2)
            ),
            "reference".into(),
            "–".into(),
        ),
        (
            "allowed_headers: CPU per request (Envoy + portcullis), with / without".into(),
            format!("{} / {} µs = {}× ; throughput {}×", fmt(ah_cpu, 1), fmt(all_cpu, 1), fmt(ah_cpu / all_cpu, 2), fmt(m.rps("e2e envoy+portcullis (a), allowed_headers") / e2e_a, 2)),
            "saving".into(),
            "–".into(),
        ),
        (
            "Unix socket: throughput, Envoy+portcullis (a) over a Unix socket / over TCP loopback; CPU per request (Envoy + portcullis), socket / TCP".into(),
            {
                let uds = "e2e envoy+portcullis (a) over a Unix socket";
                format!(
                    "{} / {} req/s = {}×; {} / {} µs = {}×",
                    fmt(m.rps(uds), 0),
                    fmt(e2e_a, 0),
                    fmt(m.rps(uds) / e2e_a, 2),
                    fmt(m.total_cpu(uds), 1),
                    fmt(all_cpu, 1),
                    fmt(m.total_cpu(uds) / all_cpu, 2)
                )
            },
            "reference".into(),
            "–".into(),
        ),
    ];
    // The module (docs/in-proxy.md): the same check inside Envoy, against
    // Envoy's own JWT filter doing less, and against the same check over gRPC.
    {
        let module = super::harness::MODULE_ROW;
        let jwt = "e2e envoy jwt_authn (a), JWT cache";
        let (rps, against) = (m.rps(module), m.rps(jwt));
        ratios.push((
            "in-proxy: throughput, Envoy+module (a) / Envoy jwt_authn (a, JWT cache); / Envoy+portcullis (a); Envoy CPU per request, module / jwt_authn".into(),
            format!(
                "{} / {} req/s = {}×{}; {}×; {} / {} µs = {}×",
                fmt(rps, 0),
                fmt(against, 0),
                fmt(rps / against, 2),
                round_median(4),
                fmt(rps / e2e_a, 2),
                fmt(m.cpu(module, "envoy"), 1),
                fmt(m.cpu(jwt, "envoy"), 1),
                fmt(m.cpu(module, "envoy") / m.cpu(jwt, "envoy"), 2)
            ),
            "≥ 0.9×".into(),
            both(rps / against >= 0.9, rounds_ratio(4) >= 0.9).into(),
        ));
    }
    // The rate-limit rows (docs/rate-limits.md): the same check under a rule with a
    // limit, counted in the process or in Redis.
    let local_cpu = m.cpu("grpc portcullis (a) + local rate limit", "authz");
    let global_cpu = m.cpu("grpc portcullis (a) + global rate limit (Redis)", "authz");
    let global_p99 = m.get(
        "grpc @1000/s portcullis (a) + global rate limit (Redis)",
        |x| x.handler_p99_us,
    );
    let local_p99 = m.get("grpc @1000/s portcullis (a) + local rate limit", |x| {
        x.handler_p99_us
    });
    ratios.push((
        "rate limit, local: CPU per Check added to (a) (direct gRPC); handler p99 at 1,000 req/s"
            .into(),
        format!(
            "{} − {} µs = {} µs; {} µs",
            fmt(local_cpu, 1),
            fmt(a_cpu, 1),
            fmt(local_cpu - a_cpu, 1),
            fmt(local_p99, 0)
        ),
        "≤ 2 µs".into(),
        verdict(local_cpu - a_cpu <= 2.0).into(),
    ));
    ratios.push((
        "rate limit, global (one Redis round trip): handler p99 at 1,000 req/s; CPU per Check added to (a)".into(),
        format!(
            "{} µs; {} − {} µs = {} µs",
            fmt(global_p99, 0),
            fmt(global_cpu, 1),
            fmt(a_cpu, 1),
            fmt(global_cpu - a_cpu, 1)
        ),
        "< 500 µs".into(),
        verdict(global_p99 < 500.0).into(),
    ));
    {
        let [none, floor, product] = super::harness::NGINX_ROWS;
        let (rps, cpu) = (m.rps(product), m.total_cpu(product));
        ratios.push((
            "nginx auth_request: throughput, nginx+portcullis (a) / nginx without auth; / nginx+null-http (the floor of the mode); CPU per request (nginx + authorizer), portcullis / null-http".into(),
            format!(
                "{} / {} req/s = {}×; {} / {} req/s = {}×; {} / {} µs = {}×",
                fmt(rps, 0),
                fmt(m.rps(none), 0),
                fmt(rps / m.rps(none), 2),
                fmt(rps, 0),
                fmt(m.rps(floor), 0),
                fmt(rps / m.rps(floor), 2),
                fmt(cpu, 1),
                fmt(m.total_cpu(floor), 1),
                fmt(cpu / m.total_cpu(floor), 2)
            ),
            "reference".into(),
            "–".into(),
        ));
    }
    if !mtls {
        ratios.push((
            "scenario (d) east-west mTLS".into(),
            "skipped: `mtls:` not in this build".into(),
            "–".into(),
            "–".into(),
        ));
    }
    md.push_str("\n| ratio | measured (medians) | target | verdict |\n|---|---|---|---|\n");
    for (what, value, target, verdict) in &ratios {
        md.push_str(&format!("| {what} | {value} | {target} | {verdict} |\n"));
    }
    md.push_str("\nPer round (each pair measured side by side in alternating slices):\n");
    for p in &per_round {
        let list: Vec<String> = p.ratios.iter().map(|v| format!("{v:.2}")).collect();
        md.push_str(&format!(
            "- {}: {} — median {}×\n",
            p.what,
            if list.is_empty() {
                "–".into()
            } else {
                list.join(", ")
            },
            fmt(median(p.ratios.clone()), 2)
        ));
    }
    md.push_str(&format!(
        "\nBare RS256 verification (`jsonwebtoken::decode`, aws-lc-rs) on this machine, median of the rounds (timed in shares between the slices of (b)): {} µs.\n",
        fmt(verify_us, 1)
    ));
    let json = json!({
        "options": {
            "rounds": opts.rounds,
            "duration_s": opts.duration.as_secs_f64(),
            "concurrency": opts.concurrency,
            "fresh_tokens_per_run": opts.fresh_tokens,
            "fill": opts.fill,
            "pinned": opts.pin,
        },
        "machine": {
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "cpu_model": std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())),
            "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        },
        "bare_rs256_verify_us": verify_us,
        "bare_rs256_verify_us_rounds": verify_rounds,
        "rss_after_round_bytes": rss,
        "rss_filled_bytes": fill_rss,
        "mtls_scenario": mtls,
        "rounds": rounds,
        "per_round_ratios": per_round.iter().map(|p| json!({"ratio": p.what, "rounds": p.ratios, "median": median(p.ratios.clone())})).collect::<Vec<_>>(),
        "ratios": ratios.iter().map(|(w, v, t, r)| json!({"ratio": w, "measured": v, "target": t, "verdict": r})).collect::<Vec<_>>(),
    });
    Report { json, markdown: md }
}
