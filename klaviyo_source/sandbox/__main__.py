"""CLI: serve a Klaviyo sandbox until Ctrl-C.

    python -m klaviyo_source.sandbox --port 8765 --seed 1 --events 100000 --profiles 10000 \
        [--<size> N ...] [--rate-limits real|off|<multiplier>] [--latency 0.1] [--latency-per-mb 0.25] [--print-key]

Prints `base_url=...` (and `api_key=...` with --print-key) once the data is built and the port is open.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
from datetime import datetime

from klaviyo_source.sandbox.server import SandboxServer
from klaviyo_source.sandbox.store import Sizes, Store


def rate_limits_arg(text: str) -> str | float:
    return text if text in ("real", "off") else float(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m klaviyo_source.sandbox", description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--account-id", default="AbC123")
    p.add_argument("--anchor", type=datetime.fromisoformat, default=None, help="ISO datetime the data ends at")
    p.add_argument("--rate-limits", type=rate_limits_arg, default="real", help="real, off or a multiplier")
    p.add_argument("--latency", type=float, default=0.0, help="seconds before every /api request arrives")
    p.add_argument("--latency-per-mb", type=float, default=0.0, help="more seconds per MB of JSON answered")
    p.add_argument("--faults", type=json.loads, default=None, help="JSON list of fault settings")
    p.add_argument("--print-key", action="store_true", help="print the full-scope API key")
    defaults = Sizes()
    for f in dataclasses.fields(Sizes):
        p.add_argument(f"--{f.name.replace('_', '-')}", type=int, default=getattr(defaults, f.name))
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    sizes = Sizes(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Sizes)})
    store = Store(seed=args.seed, sizes=sizes, anchor=args.anchor, account_id=args.account_id)
    # The generated account lives as long as the process: keep the collector from re-scanning it on every
    # page (about a quarter of the server's CPU per page of events).
    gc.freeze()
    server = SandboxServer(
        store,
        args.account_id,
        host=args.host,
        port=args.port,
        rate_limits=args.rate_limits,
        latency=args.latency,
        latency_per_mb=args.latency_per_mb,
        faults=args.faults,
        seed=args.seed,
    )
    print(f"base_url={server.base_url}", flush=True)
    if args.print_key:
        print(f"api_key={server.api_key}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.httpd.server_close()


if __name__ == "__main__":
    main()
