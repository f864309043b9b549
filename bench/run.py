#!/usr/bin/env python3
"""The benchmark harness: the service against what PostgreSQL alone can do.

One command (see bench/README.md):  python3 bench/run.py

It builds the release binary, starts a private PostgreSQL, migrates it, seeds 100 tenants x 200
products (deterministic, one member each), then runs, in this order, and again for every round
(three by default; each run reports its median round):

- the API runs: `convcommerce serve` against that database, loaded with wrk (a warm-up, then the
  measured run; a random tenant and its member's token per request): GET /api/v1/tenant, GET
  /api/v1/products?limit=20 with rate limits off, the same with the tenant's API key in place of
  the token, with the in-process limiter and with the Redis limiter (limits too high to
  trigger), and POST /api/v1/orders (one item) with limits off;
- the pgbench runs: the same database, as the application role, with the transactions the API
  runs for the product list and for an order, each once plain and once pipelined.

It prints one table (req/s or TPS, p50, p99, errors, every round's figure), the ratios API /
pgbench and the limiter's cost, and saves them to target/bench/results.json. Every process it
starts is stopped on exit, failure and Ctrl-C included.
"""

import argparse
import base64
import contextlib
import datetime
import hashlib
import hmac
import json
import math
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "target" / "bench"
BINARY = ROOT / "target" / "release" / "convcommerce"
SECRET = "bench-secret-0123456789-0123456789-0123456789"
TENANTS = 100
PRODUCTS = 200
PASSWORD = "bench"
UNLIMITED = 1_000_000_000
# Requests each wrk thread formats up front (random tenants and products), then cycles through,
# so that the load generator spends its CPU on sending rather than on Lua.
WRK_REQUESTS_PER_THREAD = 4096

# Every variable src/config.rs reads. The server gets exactly the values below: the others are set
# blank (which the service reads as unset, and which a .env file cannot override).
SERVICE_VARIABLES = (
    "ACTIVITY_BUFFER", "WS_AUTH_TIMEOUT_MILLISECONDS", "WS_MAX_CONNECTIONS", "WS_MAX_CONNECTIONS_PER_TENANT", "WS_PING_INTERVAL_MILLISECONDS", "WS_SEND_QUEUE", "AWS_ACCESS_KEY_ID", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME",
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_WEB_IDENTITY_TOKEN_FILE",
    "BACKEND_CORS_ORIGINS", "CLEANUP_INTERVAL_SECONDS", "CONVCOMMERCE_DATA_DIR", "DATABASE_LISTEN_URL", "DATABASE_URL",
    "DB_LANES", "DB_POOL_SIZE", "DB_PREPARED_STATEMENTS", "ENVIRONMENT", "HOST", "HTTP_HEADER_READ_TIMEOUT_SECONDS",
    "HTTP_IDLE_TIMEOUT_SECONDS", "HTTP_MAX_CONNECTIONS", "JWT_AUDIENCE", "JWT_HS256_SECRET",
    "JWT_ISSUER", "JWT_JWKS_REFETCH_SECONDS", "JWT_JWKS_URL", "JWT_LEEWAY_SECONDS", "LOG_FORMAT",
    "MEDIA_MAX_BYTES", "MEDIA_MAX_CONCURRENT_UPLOADS", "MEDIA_STORE", "MIGRATION_DATABASE_URL", "PLATFORM_ADMIN_SUBJECTS", "PORT",
    "PROJECT_NAME", "PUBLIC_BASE_URL", "RATE_LIMITS", "REDIS_URL", "TENANT_CACHE_TTL_SECONDS",
    "USAGE_FLUSH_MILLISECONDS", "NOTIFY_LEASE_SECONDS", "NOTIFY_MAX_ATTEMPTS",
    "NOTIFY_RETRY_BASE_MILLISECONDS", "NOTIFY_RETRY_MAX_SECONDS", "NOTIFY_SWEEP_SECONDS",
    "NOTIFY_WORKERS", "SMTP_FROM", "SMTP_HOST", "SMTP_PASSWORD", "SMTP_PORT",
    "SMTP_TIMEOUT_MILLISECONDS", "SMTP_TLS", "SMTP_TLS_CA_FILE", "SMTP_USERNAME",
    "TRUST_GRACE_SECONDS", "TRUST_RECOMPUTE_INTERVAL_SECONDS", "TWILIO_ACCOUNT_SID",
    "TWILIO_API_BASE_URL", "TWILIO_AUTH_TOKEN", "TWILIO_FROM_NUMBER", "TWILIO_TIMEOUT_MILLISECONDS",
)


class BenchError(Exception):
    """A failure worth a clear message rather than a traceback."""


def log(message):
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def run(cmd, **kwargs):
    """Runs a command to completion; its stdout, or a BenchError carrying its stderr."""
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        raise BenchError(f"`{shlex.join(str(c) for c in cmd)}` failed (exit {done.returncode}):\n"
                         f"{(done.stderr or done.stdout).strip()}")
    return done.stdout


def tail(path, lines=20):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc, what, log_path, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with {proc.returncode} before listening; "
                             f"{log_path}:\n{tail(log_path)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"{what} does not listen on {port} after {timeout} s; "
                     f"{log_path}:\n{tail(log_path)}")


def stop_process(proc, timeout=30):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tenant_id(n):
    return f"00000000-0000-7000-8000-{n:012d}"


def product_id(t, p):
    return f"00000000-{t:04x}-7000-8000-{p:012d}"


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(sub):
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"sub": sub, "exp": int(time.time()) + 24 * 3600}).encode())
    signature = hmac.new(SECRET.encode(), f"{header}.{claims}".encode(), hashlib.sha256).digest()
    return f"{header}.{claims}.{b64(signature)}"


def member_token(n):
    return token(f"bench-user-{n}")


def api_key(n):
    """Tenant n's API key (src/auth/api_key.rs): `cck_`, 43 base64url characters of a secret
    (here derived from n, so every run knows it), the tenant's id in 32 hex digits."""
    secret = hashlib.sha256(f"bench-api-key-{n}".encode()).digest()
    return "cck_" + b64(secret) + tenant_id(n).replace("-", "")


def credential(n, auth):
    """What the `Authorization: Bearer` header carries for tenant n: its member's JWT or its key."""
    return api_key(n) if auth == "api_key" else member_token(n)


class Postgres:
    """A private cluster on a free port (as the `postgres` account when run as root)."""

    def __init__(self):
        self.as_root = os.geteuid() == 0
        # As root the cluster runs as `postgres`, which may not reach the checkout.
        self.dir = Path("/var/tmp/convcommerce-bench") if self.as_root else WORK / "pg"
        self.data = self.dir / "data"
        self.log = self.dir / "log"
        self.port = free_port()
        self.bin = self.find_bin()

    @staticmethod
    def find_bin():
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                          key=lambda p: int(re.sub(r"\D", "", p.parent.parent.name) or 0))
        if versions:
            return versions[-1].parent
        initdb = shutil.which("initdb")
        if initdb:
            return Path(initdb).parent
        raise BenchError("PostgreSQL server binaries (initdb, pg_ctl) not found: "
                         "apt-get install postgresql")

    def cmd(self, *args):
        cmd = [str(self.bin / args[0]), *args[1:]]
        return ["runuser", "-u", "postgres", "--", *cmd] if self.as_root else cmd

    def __enter__(self):
        if (self.data / "postmaster.pid").exists():
            log(f"stopping a cluster a previous run left in {self.dir}")
            subprocess.run(self.cmd("pg_ctl", "stop", "-m", "immediate", "-D", str(self.data)),
                           capture_output=True)
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        run(self.cmd("initdb", "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C",
                     "-D", str(self.data)))
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
                   "-c max_connections=600 -c shared_buffers=512MB -c synchronous_commit=off")
        try:
            run(self.cmd("pg_ctl", "start", "-w", "-o", options, "-l", str(self.log),
                         "-D", str(self.data)))
        except BenchError as e:
            raise BenchError(f"{e}\n{self.log}:\n{tail(self.log)}") from None
        return self

    def __exit__(self, *exc):
        subprocess.run(self.cmd("pg_ctl", "stop", "-m", "fast", "-D", str(self.data)),
                       capture_output=True)

    def postmaster(self):
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def url(self, user, db="convcommerce"):
        password = "" if user == "postgres" else f":{PASSWORD}"
        return f"postgres://{user}{password}@127.0.0.1:{self.port}/{db}"

    def psql(self, sql, user="postgres", db="convcommerce", variables=None):
        """Runs SQL (psql interpolates `:name` from `variables`); the rows, unaligned, `|` apart."""
        cmd = ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", self.url(user, db)]
        for name, value in (variables or {}).items():
            cmd += ["-v", f"{name}={value}"]
        return run(cmd, input=sql)


class Redis:
    """A private redis-server on a free port, without persistence."""

    def __enter__(self):
        self.port = free_port()
        self.log = WORK / "redis.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(WORK)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_port(self.port, self.proc, "redis-server", self.log)
        except BaseException:
            stop_process(self.proc)
            raise
        self.url = f"redis://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc):
        stop_process(self.proc)


def service_env(**values):
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    env.update({name: "" for name in SERVICE_VARIABLES})
    env.update(RUST_LOG="warn", CONVCOMMERCE_DATA_DIR=str(WORK / "data"),
               JWT_HS256_SECRET=SECRET, **values)
    return env


class Server:
    """`convcommerce serve` on a free port; its output goes to target/bench/server-NAME.log."""

    def __init__(self, pg, name, env):
        self.pg, self.name, self.extra_env = pg, name, env

    def __enter__(self):
        self.port = free_port()
        self.log = WORK / f"server-{self.name}.log"
        env = service_env(DATABASE_URL=self.pg.url("convcommerce_app"),
                          PORT=str(self.port), DB_POOL_SIZE="16", **self.extra_env)
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen([str(BINARY), "serve"], env=env, cwd=WORK, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for_port(self.port, self.proc, "convcommerce serve", self.log)
        except BaseException:
            stop_process(self.proc)
            raise
        self.base = f"http://127.0.0.1:{self.port}"
        return self

    def __exit__(self, *exc):
        stop_process(self.proc)


def provision(pg):
    pg.psql(f"CREATE ROLE convcommerce_owner LOGIN PASSWORD '{PASSWORD}';"
            f"CREATE ROLE convcommerce_app LOGIN PASSWORD '{PASSWORD}';", db="postgres")
    pg.psql("CREATE DATABASE convcommerce OWNER convcommerce_owner", db="postgres")
    run([str(BINARY), "migrate"], cwd=WORK,
        env=service_env(MIGRATION_DATABASE_URL=pg.url("convcommerce_owner")))


def seed(pg):
    """As the superuser, which row-level security does not restrict (the quota triggers run).
    Every tenant's request limits are set far above what a run can send. The tenants are at
    trust level 3 (locked): 200 products pass level 0's cap of 5, and API keys need level 3;
    each has one API key (`api_key`), stored as the service stores it (its SHA-256), made by
    the tenant's owner."""
    limits = json.dumps({"requests_per_minute": UNLIMITED, "requests_per_hour": UNLIMITED,
                         "requests_per_day": UNLIMITED})
    keys = ",\n".join(
        f"('{tenant_id(n)}', '00000000-0002-7000-8000-{n:012d}', 'bench', 'owner', "
        f"'{api_key(n)[:12]}', '\\x{hashlib.sha256(api_key(n).encode()).hexdigest()}'::bytea, "
        f"'00000000-0001-7000-8000-{n:012d}')"
        for n in range(1, TENANTS + 1))
    pg.psql(f"""
        INSERT INTO tenants (id, name, slug, limits, trust_level, trust_locked, trust_reason)
        SELECT ('00000000-0000-7000-8000-' || lpad(t::text, 12, '0'))::uuid,
               'Bench store ' || t, 'bench-' || t, '{limits}'::jsonb, 3, true, 'benchmark'
        FROM generate_series(1, {TENANTS}) t;
        INSERT INTO users (tenant_id, id, external_id, email, role)
        SELECT ('00000000-0000-7000-8000-' || lpad(t::text, 12, '0'))::uuid,
               ('00000000-0001-7000-8000-' || lpad(t::text, 12, '0'))::uuid,
               'bench-user-' || t, 'user' || t || '@bench.example', 'owner'
        FROM generate_series(1, {TENANTS}) t;
        INSERT INTO products (tenant_id, id, name, description, price_cents, currency, sku,
                              stock, status)
        SELECT ('00000000-0000-7000-8000-' || lpad(t::text, 12, '0'))::uuid,
               ('00000000-' || lpad(to_hex(t), 4, '0') || '-7000-8000-'
                || lpad(p::text, 12, '0'))::uuid,
               'Product ' || p || ' of store ' || t, 'A benchmark product', 100 + p, 'USD',
               'SKU-' || t || '-' || p, {UNLIMITED}, 'active'
        FROM generate_series(1, {TENANTS}) t, generate_series(1, {PRODUCTS}) p;
        INSERT INTO api_keys (tenant_id, id, name, role, prefix, key_hash, created_by)
        VALUES {keys};
    """)
    settle(pg)


def settle(pg):
    """Vacuums, analyzes and checkpoints, so that no run pays for the previous one's writes."""
    pg.psql("VACUUM ANALYZE")
    pg.psql("CHECKPOINT")


# ---------------------------------------------------------------------------------------------
# The API side: wrk scripts and a check request per run.

# The body of POST /api/v1/orders; PRODUCT_ID stands for a random product of the tenant.
ORDER_BODY = json.dumps({"customer": {"name": "Bench Buyer", "phone": "+15551234567"},
                         "channel": "web", "items": [{"product_id": "PRODUCT_ID", "quantity": 1}]},
                        separators=(",", ":"))
# The customer as the service stores it (its serialisation of the validated body).
ORDER_CUSTOMER = json.dumps({"name": "Bench Buyer", "phone": "+15551234567"},
                            separators=(",", ":"))


def lua_string(text):
    return json.dumps(text)  # ASCII JSON strings are valid Lua string literals


def wrk_script(path, method, with_body, auth):
    tokens = ",\n".join(lua_string(credential(n, auth)) for n in range(1, TENANTS + 1))
    tenants = ",\n".join(lua_string(tenant_id(n)) for n in range(1, TENANTS + 1))
    if with_body:
        before, after = ORDER_BODY.split("PRODUCT_ID")
        body = (f'{lua_string(before)} .. string.format("00000000-%04d-7000-8000-%012d", i, '
                f'math.random(1, {PRODUCTS})) .. {lua_string(after)}')
        content_type = '["Content-Type"] = "application/json",'
    else:
        body, content_type = "nil", ""
    path.write_text(f"""
local tokens = {{{tokens}}}
local tenants = {{{tenants}}}
local requests = {{}}
local next_request = 1
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end

function init(args)
  math.randomseed(os.time() * 100 + thread_number)
  for n = 1, {WRK_REQUESTS_PER_THREAD} do
    local i = math.random(1, #tenants)
    local headers = {{
      ["Authorization"] = "Bearer " .. tokens[i],
      ["X-Tenant-ID"] = tenants[i],
      {content_type}
    }}
    requests[n] = wrk.format({lua_string(method)}, nil, headers, {body})
  end
end

function request()
  local r = requests[next_request]
  next_request = next_request % #requests + 1
  return r
end
""")


def check_request(base, run_name, method, path, auth):
    """One request as the wrk script sends it (tenant 1, product 1): 2xx, with the expected body."""
    body = ORDER_BODY.replace("PRODUCT_ID", product_id(1, 1)).encode() if method == "POST" else None
    request = urllib.request.Request(base + path, data=body, method=method, headers={
        "Authorization": f"Bearer {credential(1, auth)}", "X-Tenant-ID": tenant_id(1),
        "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, answer = response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        raise BenchError(f"{run_name}: {method} {path} answered {e.code}: "
                         f"{e.read().decode(errors='replace')}") from None
    if run_name == "orders":
        ok = status == 201 and answer["items"][0]["product_id"] == product_id(1, 1)
    elif path.startswith("/api/v1/products"):
        # A page of 20, and a cursor when the tenant has more (not with 20 products each).
        ok = (len(answer["items"]) == min(20, PRODUCTS)
              and bool(answer["next_cursor"]) == (PRODUCTS > 20))
    else:
        ok = answer.get("id") == tenant_id(1)
    if not ok:
        raise BenchError(f"{run_name}: {method} {path} answered {status} with an unexpected "
                         f"body: {json.dumps(answer)[:500]}")


def duration_ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def parse_wrk(output):
    def percentile(p):
        match = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.M)
        return duration_ms(*match.groups())

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                        output)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
            "p50_ms": percentile(50), "p99_ms": percentile(99),
            "requests": int(re.search(r"(\d+) requests in", output).group(1)),
            "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
            "socket_errors": sum(map(int, sockets.groups())) if sockets else 0}


def wrk(url, script, args, server, pg):
    """Warm-up, then the measured run, with the CPU the machine, the server and PostgreSQL spent
    on it, per request."""
    base = ["wrk", "-t", "2", "-c", str(args.connections), "--latency", "-s", str(script)]
    run([*base, "-d", f"{args.warmup}s", url])
    before = Cpu(server, pg)
    result = parse_wrk(run([*base, "-d", f"{args.duration}s", url]))
    return {**result, **Cpu(server, pg).per_unit_since(before, result["requests"])}


# ---------------------------------------------------------------------------------------------
# Where the CPU goes: /proc counters before and after a measured run.

TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid):
    """User + system seconds of a process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_busy():
    """Seconds all cores spent neither idle nor waiting for I/O."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / TICK


def children(pid):
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return found


class Cpu:
    """A snapshot: the machine's busy time and, for an API run, the server's and PostgreSQL's
    (the postmaster's children: the server's connections, which outlive the warm-up)."""

    def __init__(self, server=None, pg=None):
        self.busy = machine_busy()
        self.server = process_cpu(server.proc.pid) if server else None
        self.pg = {pid: process_cpu(pid) for pid in children(pg.postmaster())} if pg else None

    def per_unit_since(self, before, units):
        per = lambda seconds: round(seconds / units * 1e6, 1) if units else None
        out = {"cpu_us": per(self.busy - before.busy)}
        if self.server is not None:
            out["server_cpu_us"] = per(self.server - before.server)
            out["postgres_cpu_us"] = per(sum(t - before.pg.get(pid, 0.0)
                                            for pid, t in self.pg.items()))
        return out


# ---------------------------------------------------------------------------------------------
# The pgbench side: the API's transactions, statement for statement. Where the service binds a
# value, these scripts compute it from pgbench's random integers (:t tenant, :p product, :o order).

TENANT_TEXT = "'00000000-0000-7000-8000-' || lpad(:t::text, 12, '0')"
TENANT = f"({TENANT_TEXT})::uuid"
PRODUCT = ("('00000000-' || lpad(to_hex(:t::int), 4, '0') || '-7000-8000-' "
           "|| lpad(:p::text, 12, '0'))::uuid")
PRICE = "(100 + :p)::bigint"
# A new order's id: time-ordered like the service's UUID v7 (now() is the transaction's start,
# so every statement of the transaction computes the same id), made unique by :o.
ORDER_ID = ("(lpad(to_hex((extract(epoch FROM now()) * 1000000)::bigint), 16, '0') "
            "|| lpad(to_hex(:o::bigint), 16, '0'))::uuid")

# db::SET_TENANT
SET_TENANT = f"SELECT set_config('my.tenant_id', {TENANT_TEXT}, true);"
# products::model::Product::COLUMNS
PRODUCT_COLUMNS = (
    "p.id, p.name, p.description, p.price_cents, p.currency, p.sku, p.stock, p.status, "
    "p.created_at, p.updated_at, ARRAY(SELECT pm.media_id FROM product_media pm "
    "WHERE pm.tenant_id = p.tenant_id AND pm.product_id = p.id ORDER BY pm.position) AS media_ids")
# orders::model::Order::COLUMNS
ORDER_COLUMNS = (
    "o.id, o.status, o.channel, o.customer, o.notes, o.subtotal_cents, o.total_cents, o.currency, "
    "o.tracking_number, o.carrier, o.status_reason, o.delivered_at, o.created_at, o.updated_at, "
    "(SELECT coalesce(json_agg(json_build_object('product_id', i.product_id, 'name', i.name, "
    "'sku', i.sku, 'quantity', i.quantity, 'unit_price_cents', i.unit_price_cents, "
    "'line_total_cents', i.unit_price_cents * i.quantity) ORDER BY i.position), '[]') "
    "FROM order_items i WHERE i.tenant_id = o.tenant_id AND i.order_id = o.id) AS items, "
    "(SELECT json_build_object('stars', r.stars, 'comment', r.comment, "
    "'created_at', r.created_at) "
    "FROM order_ratings r WHERE r.tenant_id = o.tenant_id AND r.order_id = o.id) AS rating")

# What GET /api/v1/products?limit=20 runs: products::store::list with no filter (LIMIT 20 + 1).
READ_TX = {
    "variables": {"t": f"random(1, {TENANTS})"},
    "statements": [
        "BEGIN;",
        SET_TENANT,
        f"SELECT {PRODUCT_COLUMNS} FROM products p WHERE p.tenant_id = {TENANT} "
        "ORDER BY p.id DESC LIMIT 21;",
        "COMMIT;",
    ],
}

# What POST /api/v1/orders with one item runs: orders::store::create.
ORDER_TX = {
    "variables": {"t": f"random(1, {TENANTS})", "p": f"random(1, {PRODUCTS})",
                  "o": "random(1, 4611686018427387903)"},
    "statements": [
        "BEGIN;",
        SET_TENANT,
        "SELECT id, name, sku, price_cents, currency, status, stock FROM products "
        f"WHERE tenant_id = {TENANT} AND id = ANY(ARRAY[{PRODUCT}]) ORDER BY id FOR UPDATE;",
        "UPDATE products p SET stock = p.stock - x.q, updated_at = now() "
        f"FROM unnest(ARRAY[{PRODUCT}]::uuid[], ARRAY[1]::int[]) AS x(id, q) "
        f"WHERE p.tenant_id = {TENANT} AND p.id = x.id AND p.stock >= x.q;",
        "INSERT INTO orders (tenant_id, id, channel, customer, notes, subtotal_cents, "
        "total_cents, currency) "
        f"VALUES ({TENANT}, {ORDER_ID}, 'web', '{ORDER_CUSTOMER}'::jsonb, NULL, {PRICE}, {PRICE}, "
        "'USD');",
        "INSERT INTO order_items (tenant_id, order_id, position, product_id, name, sku, quantity, "
        "unit_price_cents) "
        f"SELECT {TENANT}, {ORDER_ID}, (x.n - 1)::smallint, x.product_id, x.name, x.sku, "
        "x.quantity, x.price "
        f"FROM unnest(ARRAY[{PRODUCT}]::uuid[], "
        "ARRAY['Product ' || :p::text || ' of store ' || :t::text]::text[], "
        "ARRAY['SKU-' || :t::text || '-' || :p::text]::text[], ARRAY[1]::int[], "
        f"ARRAY[{PRICE}]::bigint[]) "
        "WITH ORDINALITY AS x(product_id, name, sku, quantity, price, n);",
        f"SELECT {ORDER_COLUMNS} FROM orders o WHERE o.tenant_id = {TENANT} AND o.id = {ORDER_ID};",
        "COMMIT;",
    ],
}


def check_transaction(pg, name, tx):
    """Runs the transaction once through psql as the application role (tenant 1, product 1) and
    checks that it does the API's work: row-level security lets it see and write the tenant's
    rows (a wrong tenant setting would make it an empty, fast, meaningless transaction)."""
    rows = pg.psql("\n".join(tx["statements"]), user="convcommerce_app",
                   variables={"t": 1, "p": 1, "o": 1}).splitlines()
    if tx is READ_TX:
        tenant_products = product_id(1, 1).rsplit("-", 1)[0]
        ok = len([r for r in rows if r.startswith(tenant_products)]) == min(21, PRODUCTS)
    else:
        ok = re.search(rf'"product_id" ?: ?"{product_id(1, 1)}"', rows[-1]) is not None
    if not ok:
        raise BenchError(f"{name}: the pgbench transaction, run once as convcommerce_app, did not "
                         "return what the API's does:\n" + "\n".join(rows)[:2000])


def pgbench(pg, name, tx, args, pipelined):
    statements = tx["statements"]
    if pipelined:
        statements = ["\\startpipeline", *statements, "\\endpipeline"]
    script = WORK / f"{name}.sql"
    script.write_text("".join(f"\\set {k} {v}\n" for k, v in tx["variables"].items())
                      + "\n".join(statements) + "\n")
    logs = WORK / "pgbench-log"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir()
    base = ["pgbench", "-n", "-M", "prepared", "-c", str(args.connections), "-j", "2",
            "-f", str(script)]
    run([*base, "-T", str(args.warmup), pg.url("convcommerce_app")])
    before = Cpu()
    out = run([*base, "-T", str(args.duration), "-l", f"--log-prefix={logs / 'tx'}",
               pg.url("convcommerce_app")])
    transactions = int(re.search(r"number of transactions actually processed: (\d+)",
                                 out).group(1))
    cpu = Cpu().per_unit_since(before, transactions)
    # Per-transaction log lines: client, transaction, latency (us), script, epoch s, epoch us.
    # (A failed transaction logs a word instead of its latency; the count below reports it.)
    latencies = sorted(int(fields[2]) for f in logs.iterdir()
                       for fields in map(str.split, f.read_text().splitlines())
                       if fields[2].isdigit())
    shutil.rmtree(logs)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    return {"tps": float(re.search(r"tps = ([\d.]+)", out).group(1)),
            "p50_ms": percentile(latencies, 50) / 1000, "p99_ms": percentile(latencies, 99) / 1000,
            "transactions": transactions, "failed": int(failed.group(1)) if failed else 0, **cpu}


def percentile(sorted_values, p):
    """Nearest rank."""
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


# ---------------------------------------------------------------------------------------------
# The runs, in the order they run: reads before writes, each API run next to its pgbench one.

API = {
    # name: (method, path, limiter, credential: the member's JWT or the tenant's API key)
    "tenant": ("GET", "/api/v1/tenant", "off", "jwt"),
    "products": ("GET", "/api/v1/products?limit=20", "off", "jwt"),
    "products_api_key": ("GET", "/api/v1/products?limit=20", "off", "api_key"),
    "products_limited": ("GET", "/api/v1/products?limit=20", "in-process", "jwt"),
    "products_limited_redis": ("GET", "/api/v1/products?limit=20", "redis", "jwt"),
    "orders": ("POST", "/api/v1/orders", "off", "jwt"),
}
PGBENCH = {
    # name: (transaction, pipelined)
    "pgbench_read_plain": (READ_TX, False),
    "pgbench_read_pipelined": (READ_TX, True),
    "pgbench_order_plain": (ORDER_TX, False),
    "pgbench_order_pipelined": (ORDER_TX, True),
}
RUNS = ["tenant", "products", "products_api_key", "pgbench_read_plain", "pgbench_read_pipelined",
        "products_limited", "products_limited_redis", "orders", "pgbench_order_plain",
        "pgbench_order_pipelined"]
WRITES = {"orders", "pgbench_order_plain", "pgbench_order_pipelined"}


def run_api(pg, name, args):
    method, path, limiter, auth = API[name]
    script = WORK / f"{name}.lua"
    wrk_script(script, method, with_body=method == "POST", auth=auth)
    env = {"RATE_LIMITS": "off" if limiter == "off" else "on"}
    with contextlib.ExitStack() as stack:
        if limiter == "redis":
            env["REDIS_URL"] = stack.enter_context(Redis()).url
        server = stack.enter_context(Server(pg, name, env))
        check_request(server.base, name, method, path, auth)
        log(f"{name}: {method} {path} (limits {limiter}, {auth}), {args.connections} connections, "
            f"{args.warmup} s warm-up + {args.duration} s")
        return wrk(server.base + path, script, args, server, pg)


def run_pgbench(pg, name, args):
    tx, pipelined = PGBENCH[name]
    check_transaction(pg, name, tx)
    log(f"{name}: {args.connections} clients, {args.warmup} s warm-up + {args.duration} s")
    return pgbench(pg, name, tx, args, pipelined)


def median_round(results):
    """The round with the median throughput (the lower middle one of an even count), whole:
    its latencies belong to its throughput."""
    ordered = sorted(results, key=lambda r: r.get("rps") or r.get("tps"))
    return ordered[(len(ordered) - 1) // 2]


def ratio(a, b):
    return round(a / b, 3) if a and b else None


def cost(limited, unlimited):
    return round(100 * (1 - limited / unlimited), 1) if limited and unlimited else None


def summarise(runs):
    def rate(name):
        r = runs.get(name, {})
        return r.get("rps") or r.get("tps")

    ratios = {
        "read_api_vs_pgbench_plain": ratio(rate("products"), rate("pgbench_read_plain")),
        "read_api_vs_pgbench_pipelined": ratio(rate("products"), rate("pgbench_read_pipelined")),
        "write_api_vs_pgbench_plain": ratio(rate("orders"), rate("pgbench_order_plain")),
        "write_api_vs_pgbench_pipelined": ratio(rate("orders"), rate("pgbench_order_pipelined")),
        "limiter_cost_in_process_pct": cost(rate("products_limited"), rate("products")),
        "limiter_cost_redis_pct": cost(rate("products_limited_redis"), rate("products")),
        "api_key_cost_pct": cost(rate("products_api_key"), rate("products")),
    }
    targets = {}
    if ratios["read_api_vs_pgbench_plain"] is not None:
        targets["read_api_at_least_1x_pgbench_plain_p99_under_25ms"] = (
            ratios["read_api_vs_pgbench_plain"] >= 1.0 and runs["products"]["p99_ms"] < 25)
    if ratios["limiter_cost_in_process_pct"] is not None:
        targets["limiter_cost_in_process_under_5pct"] = ratios["limiter_cost_in_process_pct"] < 5
    if ratios["api_key_cost_pct"] is not None:
        targets["api_key_read_within_5pct_of_jwt"] = ratios["api_key_cost_pct"] < 5
    return ratios, targets


TARGETS = {
    "read_api_at_least_1x_pgbench_plain_p99_under_25ms":
        "read: API req/s >= 1.0 x pgbench plain TPS, p99 < 25 ms (issue 3)",
    "limiter_cost_in_process_under_5pct": "limiter cost in-process < 5 % (issue 4)",
    "api_key_read_within_5pct_of_jwt": "read with an API key within 5 % of the JWT figure (issue 12)",
}


def report(results):
    runs, ratios, targets = results["runs"], results["ratios"], results["targets"]
    print()
    print(f"convcommerce benchmark, {results['date']}: {TENANTS} tenants x {PRODUCTS} products, "
          f"{results['connections']} connections, {results['duration_s']} s measured after "
          f"{results['warmup_s']} s warm-up, median of {results['rounds']} rounds, "
          f"{results['cores']} cores")
    print(f"{'run':<24}{'req/s|TPS':>10}{'p50 ms':>8}{'p99 ms':>8}{'non-2xx':>8}{'errors':>7}"
          f"{'CPU us':>8}{'srv us':>8}{'PG us':>7}   every round's req/s|TPS")
    us = lambda value: f"{value:.0f}" if value is not None else ""
    for name, r in runs.items():
        every = " ".join(f"{x.get('rps') or x.get('tps'):.0f}" for x in results["all_rounds"][name])
        rate, non_2xx = r.get("rps") or r["tps"], r.get("non_2xx", "")
        errors = r["socket_errors"] if "rps" in r else r["failed"]
        print(f"{name:<24}{rate:>10.0f}{r['p50_ms']:>8.2f}{r['p99_ms']:>8.2f}{non_2xx:>8}"
              f"{errors:>7}{us(r.get('cpu_us')):>8}{us(r.get('server_cpu_us')):>8}"
              f"{us(r.get('postgres_cpu_us')):>7}   {every}")
    labels = {
        "read_api_vs_pgbench_plain": "read:  API / pgbench plain",
        "read_api_vs_pgbench_pipelined": "read:  API / pgbench pipelined",
        "write_api_vs_pgbench_plain": "write: API / pgbench plain",
        "write_api_vs_pgbench_pipelined": "write: API / pgbench pipelined",
        "limiter_cost_in_process_pct": "limiter cost, in-process",
        "limiter_cost_redis_pct": "limiter cost, Redis",
        "api_key_cost_pct": "API key cost (vs the JWT)",
    }
    print()
    for key, label in labels.items():
        value = ratios[key]
        if value is not None:
            print(f"{label:<32}{value:.1f} % of throughput" if key.endswith("_pct")
                  else f"{label:<32}{value:.2f} x")
    for key, met in targets.items():
        print(f"target {TARGETS[key]}: {'met' if met else 'MISSED'}")
    print(f"\nload average before {results['load_before']}, after {results['load_after']}; "
          f"saved to {WORK / 'results.json'}")


def check_tools(args, selected):
    needed = {"wrk": "apt-get install wrk", "pgbench": "apt-get install postgresql-client",
              "psql": "apt-get install postgresql-client"}
    if "products_limited_redis" in selected:
        needed["redis-server"] = "apt-get install redis-server"
    if not args.skip_build:
        needed["cargo"] = "https://rustup.rs"
    if os.geteuid() == 0:
        needed["runuser"] = "apt-get install util-linux"
    missing = [f"{tool} ({hint})" for tool, hint in needed.items() if not shutil.which(tool)]
    if missing:
        raise BenchError("missing tools: " + ", ".join(missing))
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise BenchError("as root the cluster runs as the `postgres` account, which does not "
                             "exist (apt-get install postgresql creates it)") from None
    Postgres.find_bin()


def interrupt(signum, frame):
    """Turns SIGINT, SIGTERM and SIGHUP into KeyboardInterrupt, once: cleanup is not interrupted."""
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    raise KeyboardInterrupt


def benchmark(args, selected):
    if not args.skip_build:
        log("building the release binary")
        build = subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT,
                               env=dict(os.environ, CARGO_TARGET_DIR=str(ROOT / "target")))
        if build.returncode != 0:
            raise BenchError("cargo build --release failed")
    if not BINARY.exists():
        raise BenchError(f"{BINARY} does not exist: run without --skip-build")
    WORK.mkdir(parents=True, exist_ok=True)
    load_before = [round(x, 2) for x in os.getloadavg()]
    rounds = {}
    with Postgres() as pg:
        log(f"PostgreSQL on port {pg.port} ({pg.dir}); migrating")
        provision(pg)
        log(f"seeding {TENANTS} tenants x {PRODUCTS} products")
        seed(pg)
        for n in range(1, args.rounds + 1):
            log(f"round {n} of {args.rounds}")
            for name in RUNS:
                if name not in selected:
                    continue
                if name in WRITES:
                    settle(pg)
                result = run_api(pg, name, args) if name in API else run_pgbench(pg, name, args)
                rounds.setdefault(name, []).append(result)
    runs = {name: median_round(results) for name, results in rounds.items()}
    ratios, targets = summarise(runs)
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "cores": os.cpu_count(), "duration_s": args.duration, "warmup_s": args.warmup,
        "connections": args.connections, "rounds": args.rounds, "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "runs": runs, "all_rounds": rounds, "ratios": ratios, "targets": targets,
    }


def main():
    global TENANTS, PRODUCTS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=15, help="measured seconds per run")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up seconds per run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3,
                        help="times every run is repeated (in turn); each reports its median")
    parser.add_argument("--skip-build", action="store_true",
                        help="use the existing target/release/convcommerce")
    parser.add_argument("--only", help=f"comma-separated runs, of: {','.join(RUNS)}")
    parser.add_argument("--tenants", type=int, default=TENANTS,
                        help="tenants seeded (the scaling curve's 10,000 x 20)")
    parser.add_argument("--products", type=int, default=PRODUCTS, help="products per tenant")
    args = parser.parse_args()
    TENANTS, PRODUCTS = args.tenants, args.products
    if not 1 <= TENANTS <= 0xFFFF:
        parser.error("--tenants must be 1 to 65535 (a product id holds its tenant in 4 hex digits)")
    READ_TX["variables"]["t"] = ORDER_TX["variables"]["t"] = f"random(1, {TENANTS})"
    ORDER_TX["variables"]["p"] = f"random(1, {PRODUCTS})"
    selected = args.only.split(",") if args.only else RUNS
    unknown = sorted(set(selected) - set(RUNS))
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if unknown:
        parser.error(f"unknown runs {', '.join(unknown)}; the runs are {', '.join(RUNS)}")
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, interrupt)
    try:
        check_tools(args, selected)
        results = benchmark(args, selected)
    except BenchError as e:
        log(f"error: {e}")
        sys.exit(1)
    except KeyboardInterrupt:
        log("interrupted; everything the harness started is stopped")
        sys.exit(130)
    (WORK / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    report(results)
    errors = sorted({name for name, rs in results["all_rounds"].items() for r in rs
                     if r.get("non_2xx") or r.get("socket_errors") or r.get("failed")})
    if errors:
        log(f"error: {', '.join(errors)} had failed requests or transactions: "
            "their figures are not a benchmark")
        sys.exit(1)


if __name__ == "__main__":
    main()
