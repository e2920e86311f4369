#!/usr/bin/env python3
"""Soak: fixed-rate mixed traffic through a real Envoy in front of portcullis.

Started by scripts/soak (which builds the release binary and installs Envoy).
Every 30 s it prints portcullis' resident memory and the status counts so far;
at the end, the RSS growth over the second half of the run.

Traffic mix per second (RATE requests, spread evenly):
  50% a cached user token   -> 200    15% a fresh user token (new subject) -> 200
   5% a fresh 11 KB token   -> 200    10% no token on a public path        -> 200
   5% no token on /api/     -> 401     5% a forged signature              -> 401
   5% a USER on /api/admin  -> 403     5% path tricks (/api/../api/admin)  -> 403/400
"""
import base64, hashlib, hmac, http.client, http.server, json, os, random, re
import signal, socketserver, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINUTES = float(os.environ.get("SOAK_MINUTES", sys.argv[1] if len(sys.argv) > 1 else 10))
RATE = int(os.environ.get("SOAK_RATE", 200))
TOKEN_CACHE = os.environ.get("SOAK_TOKEN_CACHE", "8MiB")
SECRET = b"soak-secret-0123456789abcdef0123456789"
PORTCULLIS = os.environ.get("PORTCULLIS_BIN", os.path.join(ROOT, "target/release/portcullis"))
ENVOY = os.environ.get("ENVOY_BIN", os.path.join(ROOT, ".venv/bin/envoy"))


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(sub, role="USER", pad=0, key=SECRET):
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"iss": "soak", "sub": sub, "role": role, "exp": int(time.time()) + 3600}
    if pad:
        claims["pad"] = "x" * pad
    payload = b64(json.dumps(claims).encode())
    signing = f"{header}.{payload}".encode()
    return f"{header}.{payload}.{b64(hmac.new(key, signing, hashlib.sha256).digest())}"


class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b"ok"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    work = tempfile.mkdtemp(prefix="portcullis-soak-")
    grpc, http_port, listener, admin = free_port(), free_port(), free_port(), free_port()
    upstream = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    upstream.daemon_threads = True
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    with open(os.path.join(work, "secret"), "wb") as f:
        f.write(SECRET)
    with open(os.path.join(work, "policy.yaml"), "w") as f:
        f.write("""default: deny
rules:
  - name: public
    to: { paths: [/public, /public/**] }
    from: anyone
  - name: videos-read
    to: { paths: [/api/videos, /api/videos/**], methods: [GET] }
    from: { users: { roles: [USER, ADMIN] } }
  - name: admin
    to: { paths: [/api/admin, /api/admin/**] }
    from: { users: { roles: [ADMIN] } }
""")
    with open(os.path.join(work, "portcullis.yaml"), "w") as f:
        f.write(f"""server: {{ grpc_listen: 127.0.0.1:{grpc}, http_listen: 127.0.0.1:{http_port} }}
issuers:
  - name: soak
    kind: user
    issuer: soak
    secret_file: secret
    algorithms: [HS256]
users: {{ source: claims }}
# Small enough to fill within the first minutes at this rate: the second half of
# the run then shows whether memory stays flat once every cache is full.
token_cache: {{ max_bytes: {TOKEN_CACHE} }}
headers:
  user: {{ x-user-id: user.id, x-user-role: user.role }}
policy: policy.yaml
""")
    envoy_yaml = open(os.path.join(ROOT, "mesh/envoy/front-proxy.yaml")).read()
    for old, new in [("address: 0.0.0.0, port_value: 8080", f"address: 127.0.0.1, port_value: {listener}"),
                     ("address: 127.0.0.1, port_value: 9901", f"address: 127.0.0.1, port_value: {admin}"),
                     ("address: 127.0.0.1, port_value: 9191", f"address: 127.0.0.1, port_value: {grpc}"),
                     ("address: 127.0.0.1, port_value: 8000", f"address: 127.0.0.1, port_value: {upstream.server_address[1]}")]:
        assert envoy_yaml.count(old) == 1, old
        envoy_yaml = envoy_yaml.replace(old, new)
    with open(os.path.join(work, "envoy.yaml"), "w") as f:
        f.write(envoy_yaml)

    log = open(os.path.join(work, "portcullis.log"), "w")
    server = subprocess.Popen([PORTCULLIS, "serve", "--config", os.path.join(work, "portcullis.yaml")],
                              cwd=work, stdout=log, stderr=log, env={**os.environ, "RUST_LOG": os.environ.get("SOAK_LOG", "warn")})
    envoy = subprocess.Popen([ENVOY, "-c", os.path.join(work, "envoy.yaml"), "--disable-hot-restart",
                              "--concurrency", "1", "-l", "error"], cwd=work,
                             stdout=open(os.path.join(work, "envoy.log"), "w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 30
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", listener, timeout=2)
                c.request("GET", "/public")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                sys.exit(f"soak: Envoy/portcullis not up; logs in {work}")
            time.sleep(0.2)
        run(server.pid, listener)
    finally:
        envoy.terminate()
        server.terminate()
        envoy.wait()
        server.wait()
        upstream.shutdown()
        print(f"logs: {work}")


def run(pid, listener):
    cached = [token(f"cached-{i}") for i in range(50)]
    forged = token("forger", key=b"not-the-secret-not-the-secret-00000")
    mix = ([("cached", 200)] * 10 + [("fresh", 200)] * 3 + [("fresh_big", 200)] + [("public", 200)] * 2
           + [("anonymous", 401)] + [("forged", 401)] + [("admin", 403)] + [("trick", None)])
    counts, lock, seq = {}, threading.Lock(), [0]
    samples = []
    stop = time.time() + MINUTES * 60
    interval = 1.0 / RATE
    local = threading.local()

    def conn():
        if getattr(local, "c", None) is None:
            local.c = http.client.HTTPConnection("127.0.0.1", listener, timeout=5)
        return local.c

    def one(kind):
        path, headers = "/api/videos", {}
        with lock:
            seq[0] += 1
            n = seq[0]
        if kind == "cached":
            headers["authorization"] = "Bearer " + random.choice(cached)
        elif kind == "fresh":
            headers["authorization"] = "Bearer " + token(f"fresh-{n}")
        elif kind == "fresh_big":
            headers["authorization"] = "Bearer " + token(f"big-{n}", pad=8000)
        elif kind == "public":
            path = "/public"
        elif kind == "forged":
            headers["authorization"] = "Bearer " + forged
        elif kind == "admin":
            path = "/api/admin/users"
            headers["authorization"] = "Bearer " + random.choice(cached)
        elif kind == "trick":
            path = random.choice(["/api/videos/../admin", "/api/%2e%2e/admin", "/api//admin", "/api/..;/admin"])
            headers["authorization"] = "Bearer " + random.choice(cached)
        try:
            c = conn()
            c.request("GET", path, headers=headers)
            r = c.getresponse()
            r.read()
            status = r.status
            if r.getheader("connection", "").lower() == "close":
                c.close()
                local.c = None
        except (OSError, http.client.HTTPException) as e:
            status = f"error:{type(e).__name__}"
            local.c = None
        with lock:
            counts[(kind, status)] = counts.get((kind, status), 0) + 1

    def worker(offset, workers):
        next_at = time.time() + offset * interval
        i = offset
        while time.time() < stop:
            one(mix[i % len(mix)][0])
            i += workers
            next_at += interval * workers
            delay = next_at - time.time()
            if delay > 0:
                time.sleep(delay)

    workers = 8
    threads = [threading.Thread(target=worker, args=(k, workers), daemon=True) for k in range(workers)]
    start = time.time()
    for t in threads:
        t.start()
    next_sample = start
    while any(t.is_alive() for t in threads):
        if time.time() >= next_sample:
            rss = rss_kib(pid)
            samples.append((time.time() - start, rss))
            with lock:
                total = sum(counts.values())
                by_status = {}
                for (_, status), n in counts.items():
                    by_status[status] = by_status.get(status, 0) + n
            print(f"t={time.time() - start:6.0f}s rss={rss / 1024:6.1f} MiB requests={total} statuses={dict(sorted(by_status.items(), key=str))}", flush=True)
            next_sample += 30
        time.sleep(0.5)
    samples.append((time.time() - start, rss_kib(pid)))
    print("\nstatus counts by kind:")
    for (kind, status), n in sorted(counts.items(), key=str):
        print(f"  {kind:10} {status}: {n}")
    unexpected = {k: n for k, n in counts.items()
                  if (dict(mix)[k[0]] is not None and k[1] != dict(mix)[k[0]])
                  or (k[0] == "trick" and k[1] not in (400, 403, 404))}
    half = samples[len(samples) // 2][1]
    end = samples[-1][1]
    growth = (end - half) / half * 100 if half else 0.0
    print(f"\nRSS: start {samples[0][1] / 1024:.1f} MiB, half-way {half / 1024:.1f} MiB, end {end / 1024:.1f} MiB; "
          f"growth over the second half {growth:+.1f}%")
    if unexpected:
        print(f"UNEXPECTED answers: {unexpected}")
        sys.exit(1)


if __name__ == "__main__":
    main()
