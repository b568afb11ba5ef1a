"""A stand-in for SGLang's prefill/decode servers and its mini_lb proxy, for the SLURM sandbox
end-to-end tests (SGLang cannot run here). Standard library only: it runs on the sandbox nodes.

    python3 standin_server.py --role ROLE --port PORT --port-dir DIR [--endpoints DIR] [--ready-after S]

- Binds 127.0.0.1:PORT (0: any free port; every sandbox node is 127.0.0.1, so pool members
  cannot share a fixed port) and writes the port it got to
  ``DIR/<SLURM_JOB_ID>.<SLURM_PROCID>.port``, which the stack's health check command reads.
- ``GET /health``: 200 once ``--ready-after`` seconds have passed (503 before, like a server
  still loading its model); never 200 when ``STANDIN_FAIL_HEALTH=1`` is in the environment (a
  new version that never becomes healthy, for rollback tests).
- ``GET /info``: the role and the topology this process saw (pool sizes and its rank), JSON.
- ``GET /endpoints`` (with ``--endpoints``): ``{"prefill": [...], "decode": [...]}`` read from
  the endpoint files on every request, as the real proxy's supervisor does.
- ``GET /v1/models``: an OpenAI-style model list, so the stack's endpoint answers.
- Ends on SIGTERM (scancel) like any process.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

TOPOLOGY_KEYS = (
    "NNODES",
    "SGLANG_DISAGG_PREFILL_NODES",
    "SGLANG_DISAGG_DECODE_NODES",
    "MADINFRA_FIRST_RANK_PREFILL",
    "MADINFRA_FIRST_RANK_DECODE",
    "NODE_RANK",
    "SLURM_JOB_ID",
    "SLURM_PROCID",
    "MADINFRA_REPLICA_INDEX",
    "SGLANG_NODE_RANK",
    "SGLANG_NODE_IPS",
    "STANDIN_VERSION",
)


def read_endpoints(directory: Path) -> dict[str, list[str]]:
    found = {}
    for pool in ("prefill", "decode"):
        try:
            text = (directory / pool).read_text()
        except OSError:
            text = ""
        found[pool] = [line.strip() for line in text.splitlines() if line.strip()]
    return found


def make_handler(role: str, ready_at: float, endpoints: Path | None, page_size: str | None = None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            if self.path == "/health":
                ready = time.monotonic() >= ready_at and os.environ.get("STANDIN_FAIL_HEALTH") != "1"
                self.reply(200 if ready else 503, {"status": "ok" if ready else "loading", "role": role})
            elif self.path == "/info":
                self.reply(200, {"role": role, "page_size": page_size, **{key: os.environ.get(key) for key in TOPOLOGY_KEYS}})
            elif self.path == "/endpoints" and endpoints is not None:
                self.reply(200, read_endpoints(endpoints))
            elif self.path == "/v1/models":
                self.reply(200, {"object": "list", "data": [{"id": "standin", "object": "model", "owned_by": role}]})
            else:
                self.reply(404, {"error": f"no {self.path}"})

        def reply(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
            return

    return Handler


def publish_port(port_dir: Path, port: int) -> None:
    """Write the bound port to ``DIR/<SLURM_JOB_ID>.<SLURM_PROCID>.port`` (atomically)."""
    port_dir.mkdir(parents=True, exist_ok=True)
    name = f"{os.environ.get('SLURM_JOB_ID', 'local')}.{os.environ.get('SLURM_PROCID', '0')}.port"
    temp = port_dir / f".{name}.tmp"
    temp.write_text(f"{port}\n")
    temp.replace(port_dir / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--port-dir", type=Path, required=True)
    parser.add_argument("--endpoints", type=Path)
    parser.add_argument("--ready-after", type=float, default=0.0)
    parser.add_argument("--page-size", help="SGLang's KV cache page size, as a real server takes it; reported by /info")
    args = parser.parse_args()
    handler = make_handler(args.role, time.monotonic() + args.ready_after, args.endpoints, args.page_size)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    publish_port(args.port_dir, server.server_address[1])
    server.serve_forever()


if __name__ == "__main__":
    main()
