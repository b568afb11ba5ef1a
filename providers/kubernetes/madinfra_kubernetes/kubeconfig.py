"""Reading a kubeconfig the way kubectl does, into what an HTTPS request needs (no I/O to the API).

The official ``kubernetes`` client takes over two seconds to import (its package imports every
API group and model class), which alone would make ``madinfra plan`` slow; a plan needs a
handful of label-selected list calls. So madinfra reads the kubeconfig itself and talks HTTPS
with the standard library (``apiserver.py``).

Supported, as kubectl: several files in ``KUBECONFIG`` (for each named entry and for
``current-context`` the first file that has it wins), a context chosen by name or
``current-context``, the context's namespace, cluster ``server``, ``certificate-authority`` /
``-data``, ``insecure-skip-tls-verify``, ``tls-server-name``; user ``token``, ``tokenFile``,
``client-certificate`` / ``-data`` with ``client-key`` / ``-data``, ``username``/``password``,
and ``exec`` credential plugins (EKS, GKE, AKS kubelogin: their ``ExecCredential`` token or
client certificate). In a pod without a kubeconfig, the service account's token and CA. Relative
file paths are resolved against the kubeconfig file that names them. The legacy
``auth-provider`` is refused with a sentence pointing at the exec plugin that replaced it.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from madinfra.errors import ProviderError

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class Credentials:
    """Everything one connection to one API server needs; PEM data is kept in memory."""

    server: str
    ca_pem: str | None = None
    insecure: bool = False
    tls_server_name: str | None = None
    token: str | None = None
    client_cert_pem: str | None = None
    client_key_pem: str | None = None
    basic_auth: tuple[str, str] | None = None
    namespace: str | None = None
    context: str | None = None


def _load_files(paths: list[Path]) -> list[tuple[Path, dict[str, Any]]]:
    import yaml

    documents = []
    for path in paths:
        if not path.is_file():
            continue
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ProviderError(f"cannot read kubeconfig {path} ({exc.__class__.__name__}); check that it is a readable kubeconfig file") from None
        if not isinstance(data, dict):
            raise ProviderError(f"kubeconfig {path} is not a kubeconfig (no mapping at the top); check the file")
        documents.append((path, data))
    return documents


def _named(documents: list[tuple[Path, dict[str, Any]]], section: str, name: str, item: str) -> tuple[Path, dict[str, Any]] | None:
    for path, data in documents:
        for entry in data.get(section) or []:
            if isinstance(entry, dict) and entry.get("name") == name:
                return path, dict(entry.get(item) or {})
    return None


def _read(base: Path, value: str | None) -> str | None:
    if not value:
        return None
    path = Path(os.path.expanduser(value))
    path = path if path.is_absolute() else base.parent / path
    try:
        return path.read_text()
    except OSError as exc:
        raise ProviderError(f"kubeconfig {base} names {value}, which cannot be read ({exc.strerror or exc.__class__.__name__})") from None


def _data(value: str | None) -> str | None:
    return base64.b64decode(value).decode("ascii") if value else None


def load(kubeconfig: str | None, context: str | None) -> Credentials:
    """Credentials for ``context`` (or the current one) of ``kubeconfig`` (or ``KUBECONFIG``)."""
    if kubeconfig:
        paths = [Path(kubeconfig).expanduser()]
    else:
        paths = [Path(p).expanduser() for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    documents = _load_files(paths)
    if not documents:
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            return in_cluster()
        where = kubeconfig or os.environ.get("KUBECONFIG", "")
        raise ProviderError(f"kubeconfig {where} does not exist; pass --kubeconfig, set KUBECONFIG or k8s.kubeconfig to your cluster's kubeconfig")
    name = context or next((d.get("current-context") for _, d in documents if d.get("current-context")), None)
    if not name:
        raise ProviderError(f"kubeconfig {documents[0][0]} has no current-context; pass --context or set k8s.context (kubectl config get-contexts lists them)")
    found = _named(documents, "contexts", name, "context")
    if found is None:
        raise ProviderError(f"context '{name}' is not in kubeconfig {', '.join(str(p) for p, _ in documents)}; check the name (kubectl config get-contexts)")
    _, ctx = found
    cluster_found = _named(documents, "clusters", str(ctx.get("cluster")), "cluster")
    if cluster_found is None:
        raise ProviderError(f"context '{name}' names cluster '{ctx.get('cluster')}', which the kubeconfig does not define")
    cluster_path, cluster = cluster_found
    user_found = _named(documents, "users", str(ctx.get("user")), "user") if ctx.get("user") else None
    user_path, user = user_found if user_found is not None else (cluster_path, {})
    if not cluster.get("server"):
        raise ProviderError(f"cluster '{ctx.get('cluster')}' in kubeconfig {cluster_path} has no server address")
    creds = Credentials(
        server=str(cluster["server"]).rstrip("/"),
        ca_pem=_data(cluster.get("certificate-authority-data")) or _read(cluster_path, cluster.get("certificate-authority")),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        tls_server_name=cluster.get("tls-server-name"),
        token=user.get("token") or ((_read(user_path, user.get("tokenFile")) or "").strip() or None),
        client_cert_pem=_data(user.get("client-certificate-data")) or _read(user_path, user.get("client-certificate")),
        client_key_pem=_data(user.get("client-key-data")) or _read(user_path, user.get("client-key")),
        basic_auth=(str(user["username"]), str(user.get("password", ""))) if user.get("username") else None,
        namespace=ctx.get("namespace"),
        context=name,
    )
    if user.get("auth-provider"):
        provider = (user["auth-provider"] or {}).get("name", "?")
        raise ProviderError(f"user '{ctx.get('user')}' authenticates with the removed auth-provider '{provider}'; switch it to its exec credential plugin (e.g. gke-gcloud-auth-plugin, kubelogin) as kubectl requires")
    if user.get("exec"):
        creds = _with_exec(creds, user["exec"], str(ctx.get("user")))
    return creds


def _with_exec(creds: Credentials, spec: dict[str, Any], user: str) -> Credentials:
    """Run an exec credential plugin (client.authentication.k8s.io) and use what it prints."""
    command = spec.get("command")
    if not command:
        raise ProviderError(f"user '{user}' has an exec credential plugin without a command")
    env = {**os.environ, **{e["name"]: e["value"] for e in spec.get("env") or [] if "name" in e}}
    env["KUBERNETES_EXEC_INFO"] = json.dumps({"apiVersion": spec.get("apiVersion", "client.authentication.k8s.io/v1"), "kind": "ExecCredential", "spec": {"interactive": False}})
    try:
        proc = subprocess.run([command, *(spec.get("args") or [])], capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        hint = spec.get("installHint") or f"install {command} or fix the kubeconfig"
        raise ProviderError(f"the credential plugin {command} of user '{user}' could not run ({exc.__class__.__name__}); {hint}") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise ProviderError(f"the credential plugin {command} of user '{user}' failed (exit {proc.returncode}): {last}")
    try:
        status = json.loads(proc.stdout).get("status") or {}
    except ValueError:
        raise ProviderError(f"the credential plugin {command} of user '{user}' did not print an ExecCredential JSON document") from None
    return Credentials(
        **{
            **creds.__dict__,
            "token": status.get("token") or creds.token,
            "client_cert_pem": status.get("clientCertificateData") or creds.client_cert_pem,
            "client_key_pem": status.get("clientKeyData") or creds.client_key_pem,
        }
    )


def in_cluster() -> Credentials:
    """The pod's service account, as client-go's in-cluster config."""
    host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    host = f"[{host}]" if ":" in host else host
    try:
        token = (SERVICE_ACCOUNT_DIR / "token").read_text().strip()
        ca = (SERVICE_ACCOUNT_DIR / "ca.crt").read_text()
        namespace = (SERVICE_ACCOUNT_DIR / "namespace").read_text().strip()
    except OSError as exc:
        raise ProviderError(f"running in a pod but the service account files in {SERVICE_ACCOUNT_DIR} cannot be read ({exc.__class__.__name__}); mount the service account token or pass --kubeconfig") from None
    return Credentials(server=f"https://{host}:{port}", ca_pem=ca, token=token, namespace=namespace)
