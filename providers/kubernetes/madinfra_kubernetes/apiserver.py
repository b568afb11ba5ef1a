"""HTTPS to a Kubernetes API server with the standard library: one kept-alive connection.

Objects stay raw JSON (camelCase, exactly what the desired manifests use); every failure becomes
an ``ApiError`` with the HTTP status and the server's own message, which ``client.py`` turns into
one sentence.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import socket
import ssl
import tempfile
import threading
from typing import Any, Iterator
from urllib.parse import urlencode, urlsplit

from madinfra_kubernetes.kubeconfig import Credentials

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0


class ApiError(Exception):
    """An answer other than 2xx (``status`` set) or no answer at all (``status`` None)."""

    def __init__(self, status: int | None, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _ssl_context(creds: Credentials) -> ssl.SSLContext:
    if creds.insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif creds.ca_pem:
        # Only the cluster's CA: loading the system store too costs 30 ms and trusts more than needed.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cadata=creds.ca_pem)
    else:
        context = ssl.create_default_context()
    if creds.client_cert_pem and creds.client_key_pem:
        # ssl reads a certificate chain only from files: a private temp file, removed at once.
        fd, path = tempfile.mkstemp(prefix="madinfra-kube-", suffix=".pem")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(creds.client_cert_pem.rstrip("\n") + "\n" + creds.client_key_pem)
            context.load_cert_chain(path)
        finally:
            os.unlink(path)
    return context


class ApiServer:
    """A client for one API server; safe to share between threads (a connection per thread)."""

    def __init__(self, creds: Credentials):
        self.creds = creds
        parts = urlsplit(creds.server)
        self.scheme = parts.scheme or "https"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if self.scheme == "https" else 80)
        self.base_path = parts.path.rstrip("/")
        self._context = _ssl_context(creds) if self.scheme == "https" else None
        self._local = threading.local()
        self.calls = 0
        """Requests made (the benchmarks count round trips with it)."""

    @property
    def url(self) -> str:
        return self.creds.server

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self.scheme == "https":
                conn = http.client.HTTPSConnection(self.host, self.port, context=self._context, timeout=READ_TIMEOUT)
                if self.creds.tls_server_name:
                    conn._server_hostname = self.creds.tls_server_name  # type: ignore[attr-defined]
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=READ_TIMEOUT)
            self._local.conn = conn
        return conn

    def _headers(self, body: bytes | None, content_type: str) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "madinfra"}
        if self.creds.token:
            headers["Authorization"] = f"Bearer {self.creds.token}"
        elif self.creds.basic_auth:
            pair = f"{self.creds.basic_auth[0]}:{self.creds.basic_auth[1]}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        if body is not None:
            headers["Content-Type"] = content_type
        return headers

    def request(self, method: str, path: str, query: dict[str, str] | None = None, body: Any = None, content_type: str = "application/json") -> Any:
        """The decoded JSON answer; raises ApiError. A dropped keep-alive connection is retried once."""
        target = self.base_path + path + (("?" + urlencode(query)) if query else "")
        payload = json.dumps(body).encode() if body is not None else None
        for attempt in (1, 2):
            conn = self._connection()
            try:
                self.calls += 1
                conn.request(method, target, body=payload, headers=self._headers(payload, content_type))
                response = conn.getresponse()
                data = response.read()
                break
            except (http.client.HTTPException, ConnectionError) as exc:
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise ApiError(None, f"{exc.__class__.__name__}: {exc}") from None
            except (OSError, ssl.SSLError) as exc:
                conn.close()
                self._local.conn = None
                raise ApiError(None, f"{exc.__class__.__name__}: {exc}") from None
        if 200 <= response.status < 300:
            return json.loads(data or b"{}")
        try:
            message = json.loads(data).get("message") or response.reason
        except ValueError:
            message = response.reason or data.decode("utf-8", "replace")[:200]
        raise ApiError(response.status, message)

    def stream(self, path: str, query: dict[str, str] | None = None, timeout: float | None = READ_TIMEOUT) -> "Stream":
        """A GET whose answer is read line by line, on a connection of its own: pod logs are
        text, not JSON, and with ``follow`` they never end, so they cannot hold the shared
        kept-alive connection. ``timeout`` None: block until data or ``Stream.close``.
        Raises ApiError like ``request``."""
        target = self.base_path + path + (("?" + urlencode(query)) if query else "")
        if self.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(self.host, self.port, context=self._context, timeout=CONNECT_TIMEOUT)
            if self.creds.tls_server_name:
                conn._server_hostname = self.creds.tls_server_name  # type: ignore[attr-defined]
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=CONNECT_TIMEOUT)
        try:
            self.calls += 1
            headers = {**self._headers(None, ""), "Accept": "*/*"}
            conn.request("GET", target, headers=headers)
            sock = conn.sock  # kept: http.client hands it to the response when it will close
            if sock is not None:
                sock.settimeout(timeout)
            response = conn.getresponse()
        except (http.client.HTTPException, OSError) as exc:
            conn.close()
            raise ApiError(None, f"{exc.__class__.__name__}: {exc}") from None
        if not 200 <= response.status < 300:
            data = response.read()
            conn.close()
            try:
                message = json.loads(data).get("message") or response.reason
            except ValueError:
                message = data.decode("utf-8", "replace").strip()[:200] or response.reason
            raise ApiError(response.status, message)
        return Stream(conn, response, sock)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class Stream:
    """An answer being read line by line (``ApiServer.stream``); ``close`` may be called from
    another thread and ends a read blocked in ``lines`` (the socket is shut down first, since
    closing a file object does not wake a thread waiting in recv)."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse, sock: socket.socket | None):
        self._conn = conn
        self._response = response
        self._sock = sock
        self._closed = False

    def lines(self) -> Iterator[bytes]:
        """Each line with its newline (the last one may lack it), until the answer ends or
        ``close`` is called; a connection that breaks otherwise raises ApiError (status None),
        so a cut-off answer is never mistaken for its end."""
        while True:
            try:
                line = self._response.readline()
            except (http.client.HTTPException, OSError, ValueError, AttributeError) as exc:
                if self._closed:
                    return
                raise ApiError(None, f"{exc.__class__.__name__}: {exc}") from None
            if not line:
                return
            yield line

    def close(self) -> None:
        self._closed = True
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
        self._response.close()
        self._conn.close()
