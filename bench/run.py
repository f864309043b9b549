#!/usr/bin/env python3
"""The benchmark harness: the service against what PostgreSQL alone can do.

One command (see bench/README.md):  python3 bench/run.py

It builds the release binary, starts a private PostgreSQL under target/bench, migrates it,
seeds 100 tenants x 200 products (deterministic, one member each), then for each scenario
starts `convcommerce serve` against it and loads it with wrk (32 connections, a random tenant
and its member's token per request, a warm-up, then the measured run), and runs pgbench on the
same database, as the application role, with the equivalent tenant transaction: once plain and
once pipelined. It prints req/s, p50 and p99 for the API, TPS for pgbench, and the ratios.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "target" / "bench"
BINARY = ROOT / "target" / "release" / "convcommerce"
SECRET = "bench-secret-0123456789-0123456789-0123456789"
TENANTS = 100
PRODUCTS = 200
PASSWORD = "bench"
UNLIMITED = 1_000_000_000


def log(message):
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def run(cmd, **kwargs):
    return subprocess.run(cmd, check=True, **kwargs)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def tenant_id(n):
    return f"00000000-0000-7000-8000-{n:012d}"


def user_id(n):
    return f"00000000-0001-7000-8000-{n:012d}"


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(sub):
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"sub": sub, "exp": int(time.time()) + 24 * 3600}).encode())
    signature = hmac.new(SECRET.encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{b64(signature)}"


class Postgres:
    """A private cluster (as the `postgres` account when run as root)."""

    def __init__(self):
        self.as_root = os.geteuid() == 0
        # As root the cluster runs as `postgres`, which may not reach the checkout.
        self.dir = Path("/var/tmp/convcommerce-bench") if self.as_root else WORK / "pg"
        self.port = free_port()
        self.bin = self.find_bin()

    @staticmethod
    def find_bin():
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if versions:
            return versions[-1].parent
        initdb = shutil.which("initdb")
        if initdb:
            return Path(initdb).parent
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")

    def cmd(self, *args):
        cmd = [str(self.bin / args[0]), *args[1:]]
        return ["runuser", "-u", "postgres", "--", *cmd] if self.as_root else cmd

    def start(self):
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        run(self.cmd("initdb", "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C",
                     "-D", str(self.dir / "data")), stdout=subprocess.DEVNULL)
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
                   "-c max_connections=200 -c shared_buffers=512MB -c synchronous_commit=off")
        run(self.cmd("pg_ctl", "start", "-w", "-o", options, "-l", str(self.dir / "log"),
                     "-D", str(self.dir / "data")), stdout=subprocess.DEVNULL)

    def stop(self):
        subprocess.run(self.cmd("pg_ctl", "stop", "-m", "fast", "-D", str(self.dir / "data")),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def url(self, user, db="convcommerce"):
        password = "" if user == "postgres" else f":{PASSWORD}"
        return f"postgres://{user}{password}@127.0.0.1:{self.port}/{db}"

    def psql(self, sql, user="postgres", db="convcommerce"):
        run(["psql", "-q", "-v", "ON_ERROR_STOP=1", self.url(user, db), "-c", sql],
            stdout=subprocess.DEVNULL)


def provision(pg):
    pg.psql(f"CREATE ROLE convcommerce_owner LOGIN PASSWORD '{PASSWORD}';"
            f"CREATE ROLE convcommerce_app LOGIN PASSWORD '{PASSWORD}';", db="postgres")
    pg.psql("CREATE DATABASE convcommerce OWNER convcommerce_owner", db="postgres")
    env = dict(os.environ, MIGRATION_DATABASE_URL=pg.url("convcommerce_owner"))
    env.pop("DATABASE_URL", None)
    run([str(BINARY), "migrate"], env=env, stdout=subprocess.DEVNULL)


def seed(pg):
    """As the superuser, which row-level security does not restrict (the quota triggers run)."""
    limits = json.dumps({"requests_per_minute": UNLIMITED, "requests_per_hour": UNLIMITED,
                         "requests_per_day": UNLIMITED})
    pg.psql(f"""
        INSERT INTO tenants (id, name, slug, limits)
        SELECT ('00000000-0000-7000-8000-' || lpad(t::text, 12, '0'))::uuid,
               'Bench store ' || t, 'bench-' || t, '{limits}'::jsonb
        FROM generate_series(1, {TENANTS}) t;
        INSERT INTO users (tenant_id, id, external_id, email, role)
        SELECT ('00000000-0000-7000-8000-' || lpad(t::text, 12, '0'))::uuid,
               ('00000000-0001-7000-8000-' || lpad(t::text, 12, '0'))::uuid,
               'bench-user-' || t, 'user' || t || '@bench.example', 'owner'
        FROM generate_series(1, {TENANTS}) t;
        INSERT INTO products (tenant_id, id, name, description, price_cents, currency, sku,
                              stock, status)
        SELECT ('00000000-0000-7000-8000-' || lpad(t::text, 12, '0'))::uuid,
               ('00000000-' || lpad(t::text, 4, '0') || '-7000-8000-' || lpad(p::text, 12, '0'))::uuid,
               'Product ' || p || ' of store ' || t, 'A benchmark product', 100 + p, 'USD',
               'SKU-' || t || '-' || p, {UNLIMITED}, 'active'
        FROM generate_series(1, {TENANTS}) t, generate_series(1, {PRODUCTS}) p;
        ANALYZE;
    """)


def wrk_script(path, method="GET", body_fn=None):
    """A wrk Lua script choosing a random tenant (and its member's token) per request."""
    tokens = ",\n".join(f'"{token(f"bench-user-{n}")}"' for n in range(1, TENANTS + 1))
    tenants = ",\n".join(f'"{tenant_id(n)}"' for n in range(1, TENANTS + 1))
    body = body_fn or 'nil'
    path.write_text(f"""
local tokens = {{{tokens}}}
local tenants = {{{tenants}}}
math.randomseed(os.time())
request = function()
  local i = math.random(1, #tenants)
  local headers = {{
    ["Authorization"] = "Bearer " .. tokens[i],
    ["X-Tenant-ID"] = tenants[i],
    ["Content-Type"] = "application/json",
  }}
  return wrk.format("{method}", nil, headers, {body})
end
""")


def order_body():
    return ('\'{"customer":{"name":"Bench Buyer","phone":"+15551234567"},'
            '"channel":"web","items":[{"product_id":"00000000-\' .. string.format("%04d", i) .. '
            '\'-7000-8000-\' .. string.format("%012d", math.random(1, ' + str(PRODUCTS) + ')) .. '
            '\'","quantity":1}]}\'')


def parse_wrk(output):
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))

    def percentile(p):
        match = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    total = int(re.search(r"(\d+) requests in", output).group(1))
    return {"rps": rps, "p50_ms": percentile(50), "p99_ms": percentile(99),
            "requests": total, "errors": int(non_2xx.group(1)) if non_2xx else 0}


def load(url, script, args):
    """Warm-up, then the measured run."""
    base = ["wrk", "-t", "2", "-c", str(args.connections), "--latency", "-s", str(script)]
    subprocess.run([*base, "-d", f"{args.warmup}s", url], check=True, stdout=subprocess.DEVNULL)
    out = subprocess.run([*base, "-d", f"{args.duration}s", url], check=True,
                         capture_output=True, text=True).stdout
    return parse_wrk(out)


class Server:
    def __init__(self, pg, extra_env):
        self.port = free_port()
        env = dict(os.environ, DATABASE_URL=pg.url("convcommerce_app"), JWT_HS256_SECRET=SECRET,
                   PORT=str(self.port), RUST_LOG="warn", DB_POOL_SIZE="16",
                   PLATFORM_ADMIN_SUBJECTS="bench-admin", **extra_env)
        env.pop("MIGRATION_DATABASE_URL", None)
        self.proc = subprocess.Popen([str(BINARY), "serve"], env=env, stdout=subprocess.DEVNULL)
        wait_for_port(self.port)
        self.base = f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


def pgbench(pg, script_body, args, pipelined):
    script = WORK / ("pgbench-pipelined.sql" if pipelined else "pgbench-plain.sql")
    lines = script_body.strip().splitlines()
    if pipelined:
        lines = ["\\startpipeline", *lines, "\\endpipeline"]
    script.write_text(f"\\set t random(1, {TENANTS})\n\\set p random(1, {PRODUCTS})\n"
                      + "\n".join(lines) + "\n")
    cmd = ["pgbench", "-n", "-M", "prepared", "-c", str(args.connections), "-j", "2",
           "-T", str(args.duration), "-f", str(script), pg.url("convcommerce_app")]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))
    latency = re.search(r"latency average = ([\d.]+) ms", out)
    return {"tps": tps, "avg_ms": float(latency.group(1)) if latency else None}


SET_TENANT = ("SELECT set_config('my.tenant_id', "
              "'00000000-0000-7000-8000-' || lpad(:t::text, 12, '0'), true);")

READ_TX = f"""
BEGIN;
{SET_TENANT}
SELECT id, name, description, price_cents, currency, sku, stock, status, media_ids, created_at, updated_at FROM products WHERE tenant_id = ('00000000-0000-7000-8000-' || lpad(:t::text, 12, '0'))::uuid ORDER BY id DESC LIMIT 21;
COMMIT;
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=15, help="measured seconds per run")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--skip-build", action="store_true")
    parser.add_argument("--only", help="comma-separated scenarios to run")
    args = parser.parse_args()
    for tool in ["wrk", "pgbench", "psql"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is required (apt-get install wrk postgresql-client)")

    if not args.skip_build:
        log("building the release binary")
        run(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    WORK.mkdir(parents=True, exist_ok=True)
    pg = Postgres()
    log(f"starting PostgreSQL on port {pg.port}")
    pg.start()
    redis = None
    results = {}
    try:
        provision(pg)
        log(f"seeding {TENANTS} tenants x {PRODUCTS} products")
        seed(pg)
        scripts = {"tenant": WORK / "tenant.lua", "products": WORK / "products.lua"}
        wrk_script(scripts["tenant"])
        wrk_script(scripts["products"])
        scenarios = [
            ("tenant", "/api/v1/tenant", {"RATE_LIMITS": "off"}),
            ("products", "/api/v1/products?limit=20", {"RATE_LIMITS": "off"}),
            ("products_limited", "/api/v1/products?limit=20", {}),
            ("products_limited_redis", "/api/v1/products?limit=20", None),
        ]
        only = set(args.only.split(",")) if args.only else None
        for name, path, env in scenarios:
            if only and name not in only:
                continue
            if env is None:
                redis_port = free_port()
                redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind",
                                          "127.0.0.1", "--save", "", "--appendonly", "no"],
                                         stdout=subprocess.DEVNULL)
                wait_for_port(redis_port)
                env = {"REDIS_URL": f"redis://127.0.0.1:{redis_port}"}
            server = Server(pg, env)
            try:
                log(f"{name}: GET {path} at {args.connections} connections, {args.duration} s")
                script = scripts["tenant" if name == "tenant" else "products"]
                results[name] = load(server.base + path, script, args)
            finally:
                server.stop()
        if not only or "pgbench" in only:
            for pipelined in (False, True):
                label = "pgbench_read_pipelined" if pipelined else "pgbench_read_plain"
                log(f"{label}: {args.connections} clients, {args.duration} s")
                results[label] = pgbench(pg, READ_TX, args, pipelined)
    finally:
        if redis:
            redis.terminate()
        pg.stop()

    report(results, args)


def report(results, args):
    print()
    print(f"convcommerce benchmark: {TENANTS} tenants x {PRODUCTS} products, "
          f"{args.connections} connections, {args.duration} s measured after {args.warmup} s warm-up, "
          f"{os.cpu_count()} cores")
    print(f"{'run':<28}{'req/s or TPS':>14}{'p50 ms':>10}{'p99 ms':>10}{'non-2xx':>10}")
    for name, r in results.items():
        if "rps" in r:
            print(f"{name:<28}{r['rps']:>14.0f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}{r['errors']:>10}")
        else:
            print(f"{name:<28}{r['tps']:>14.0f}{'':>10}{'':>10}{'':>10}")
    plain = results.get("pgbench_read_plain", {}).get("tps")
    piped = results.get("pgbench_read_pipelined", {}).get("tps")
    api = results.get("products", {}).get("rps")
    if api and plain and piped:
        print(f"\nread path: API / pgbench plain = {api / plain:.2f}x, "
              f"API / pgbench pipelined = {api / piped:.2f}x")
    limited = results.get("products_limited", {}).get("rps")
    redis = results.get("products_limited_redis", {}).get("rps")
    if api and limited:
        print(f"limiter cost (in-process): {100 * (1 - limited / api):.1f}% of throughput")
    if api and redis:
        print(f"limiter cost (Redis):      {100 * (1 - redis / api):.1f}% of throughput")
    (WORK / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
