#!/usr/bin/env python3
"""The WebSocket figures: idle cost and live delivery (bench/README.md, "WebSocket").

One command:  python3 bench/ws.py

It builds the release binary and the two examples, starts a private PostgreSQL and the server
the way bench/run.py does (its classes), seeds its tenants, then runs:

- idle: examples/ws_idle.rs opens --idle (default 10,000) authenticated, idle WebSockets and
  prints the server's RSS growth per connection;
- delivery: examples/ws_delivery.rs opens --subscribers (default 1,000) WebSockets of one
  tenant and posts --rate (default 500) conversation messages a second over REST for
  --seconds (default 10): p50/p99 from each event's activity `created_at` (stamped just before
  its COMMIT) to its receipt, and events lost, repeated or out of order (it exits 1 on any).

It prints the CPU model with the figures, since they depend on it.
"""

import argparse
import os
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402

EXAMPLES = bench.ROOT / "target" / "release" / "examples"


def cpu_model():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def example(name, env):
    bench.log(f"{name}: {' '.join(f'{k}={v}' for k, v in env.items() if k != 'WS_TOKEN')}")
    done = subprocess.run([str(EXAMPLES / name)], env=dict(os.environ, **env), text=True,
                          capture_output=True)
    print(f"--- {name}")
    print(done.stdout.strip())
    if done.returncode != 0:
        print(done.stderr.strip()[-2000:], file=sys.stderr)
    return done.returncode


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=10_000, help="idle connections")
    parser.add_argument("--subscribers", type=int, default=1_000)
    parser.add_argument("--rate", type=int, default=500, help="events a second")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--skip-build", action="store_true")
    parser.add_argument("--only", choices=["idle", "delivery"])
    args = parser.parse_args()
    wanted = args.idle + args.subscribers + 1_024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < wanted:
        bench.log(f"error: the file-descriptor hard limit {hard} is below {wanted} (ulimit -Hn)")
        sys.exit(1)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    if not args.skip_build:
        bench.log("building the release binary and the examples")
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "convcommerce",
                        "--example", "ws_idle", "--example", "ws_delivery"],
                       cwd=bench.ROOT, check=True)
    bench.WORK.mkdir(parents=True, exist_ok=True)
    failed = 0
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores")
    with bench.Postgres() as pg:
        bench.provision(pg)
        bench.seed(pg)
        env = {"RATE_LIMITS": "off", "WS_MAX_CONNECTIONS": str(args.idle + args.subscribers + 100),
               "WS_MAX_CONNECTIONS_PER_TENANT": str(max(args.idle, args.subscribers) + 100)}
        common = {"WS_TOKEN": bench.member_token(1), "WS_TENANT": bench.tenant_id(1)}
        if args.only in (None, "idle"):
            with bench.Server(pg, "ws_idle", env) as server:
                failed |= example("ws_idle", {
                    **common, "WS_URL": server.base.replace("http", "ws", 1) + "/api/v1/ws",
                    "SERVER_PID": str(server.proc.pid), "N": str(args.idle)})
        if args.only in (None, "delivery"):
            with bench.Server(pg, "ws_delivery", env) as server:
                failed |= example("ws_delivery", {
                    **common, "HTTP_URL": server.base, "SUBSCRIBERS": str(args.subscribers),
                    "RATE": str(args.rate), "SECONDS": str(args.seconds)})
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
