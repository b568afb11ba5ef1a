"""A stand-in for SGLang's mini_lb router, run by madinfra's own generated proxy command.

The e2e tests upload it as ``sglang/srt/disaggregation/mini_lb.py`` under ``model.scripts_dir``,
so ``python3 -m sglang.srt.disaggregation.mini_lb --prefill URL... --decode URL... --host H
--port P`` in the proxy job (run in the stack directory) finds it, and the generated supervisor
(``supervise()``: restart on endpoint file change, ``endpoints/.proxy-seen`` acknowledgement)
is what is tested. Standard library only.

- ``GET /endpoints``: the URL lists it was started with, the replica job ids behind them (read
  from ``endpoints/<pool>.source`` when it started) and ``started`` (this process' id), so a
  test can tell whether two answers came from the same router process.
- ``GET /health``, ``GET /v1/models``: as a router answers them.
- Writes its port to ``standin/<SLURM_JOB_ID>.<SLURM_PROCID>.port`` for the stack's health check.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

POOLS = ("prefill", "decode")


def source_jobs(pool: str) -> list[str]:
    """The job ids of ``endpoints/<pool>.source`` in the file's order (``replica.<i>=<job>``)."""
    try:
        text = (Path("endpoints") / f"{pool}.source").read_text()
    except OSError:
        return []
    return [line.split("=", 1)[1].strip() for line in text.splitlines() if line.startswith("replica.") and "=" in line]


def main() -> None:
    parser = argparse.ArgumentParser(description="stand-in mini_lb")
    parser.add_argument("--prefill", nargs="*", default=[])
    parser.add_argument("--decode", nargs="*", default=[])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    body = {
        "prefill": args.prefill,
        "decode": args.decode,
        "jobs": {pool: source_jobs(pool) for pool in POOLS},
        "started": os.getpid(),
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            if self.path == "/endpoints":
                self.reply(200, body)
            elif self.path == "/health":
                self.reply(200, {"status": "ok", "role": "proxy"})
            elif self.path == "/v1/models":
                self.reply(200, {"object": "list", "data": [{"id": "standin", "object": "model", "owned_by": "proxy"}]})
            else:
                self.reply(404, {"error": f"no {self.path}"})

        def reply(self, code: int, data: dict) -> None:
            raw = json.dumps(data).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
            return

    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    sys.path.insert(0, os.getcwd())
    from standin_server import publish_port

    publish_port(Path("standin"), server.server_address[1])
    server.serve_forever()


if __name__ == "__main__":
    main()
