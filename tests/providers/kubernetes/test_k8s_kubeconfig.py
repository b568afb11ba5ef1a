"""kubeconfig read as kubectl reads it: merged files, relative paths, exec credential plugins."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
import yaml

from madinfra.errors import ProviderError
from madinfra_kubernetes.kubeconfig import load

pytestmark = pytest.mark.k8s


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def config(clusters=(), users=(), contexts=(), current=None) -> dict:
    return {"apiVersion": "v1", "kind": "Config", "clusters": list(clusters), "users": list(users), "contexts": list(contexts), **({"current-context": current} if current else {})}


def test_files_in_kubeconfig_merge_and_the_first_current_context_wins(tmp_path, monkeypatch):
    first = write(tmp_path / "a", config(contexts=[{"name": "lab", "context": {"cluster": "c", "user": "u", "namespace": "ml"}}], current="lab"))
    (tmp_path / "ca.crt").write_text("CA-PEM")
    second = write(
        tmp_path / "b",
        config(
            clusters=[{"name": "c", "cluster": {"server": "https://10.0.0.1:6443/", "certificate-authority": "ca.crt"}}],
            users=[{"name": "u", "user": {"token": "t0k"}}],
            current="other",
        ),
    )
    monkeypatch.setenv("KUBECONFIG", f"{first}:{second}")
    creds = load(None, None)
    assert (creds.server, creds.token, creds.ca_pem, creds.namespace, creds.context) == ("https://10.0.0.1:6443", "t0k", "CA-PEM", "ml", "lab")


def test_inline_certificates_and_unknown_context(tmp_path):
    data = lambda text: base64.b64encode(text.encode()).decode()  # noqa: E731
    path = write(
        tmp_path / "kc",
        config(
            clusters=[{"name": "c", "cluster": {"server": "https://k", "certificate-authority-data": data("CA")}}],
            users=[{"name": "u", "user": {"client-certificate-data": data("CERT"), "client-key-data": data("KEY")}}],
            contexts=[{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            current="x",
        ),
    )
    creds = load(str(path), None)
    assert (creds.ca_pem, creds.client_cert_pem, creds.client_key_pem) == ("CA", "CERT", "KEY")
    with pytest.raises(ProviderError, match="context 'nope' is not in kubeconfig"):
        load(str(path), "nope")


def test_exec_credential_plugin_token_is_used(tmp_path):
    plugin = tmp_path / "get-token"
    plugin.write_text("#!/bin/sh\n" f"echo '{json.dumps({'apiVersion': 'client.authentication.k8s.io/v1', 'kind': 'ExecCredential', 'status': {'token': 'from-plugin'}})}'\n")
    plugin.chmod(plugin.stat().st_mode | stat.S_IEXEC)
    path = write(
        tmp_path / "kc",
        config(
            clusters=[{"name": "c", "cluster": {"server": "https://k"}}],
            users=[{"name": "u", "user": {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": str(plugin), "args": []}}}],
            contexts=[{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            current="x",
        ),
    )
    assert load(str(path), None).token == "from-plugin"
    plugin.write_text("#!/bin/sh\necho 'token expired, run aws sso login' >&2\nexit 3\n")
    with pytest.raises(ProviderError, match=r"failed \(exit 3\): token expired, run aws sso login"):
        load(str(path), None)


def test_the_removed_auth_provider_is_refused_with_what_to_use(tmp_path):
    path = write(
        tmp_path / "kc",
        config(
            clusters=[{"name": "c", "cluster": {"server": "https://k"}}],
            users=[{"name": "u", "user": {"auth-provider": {"name": "gcp"}}}],
            contexts=[{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            current="x",
        ),
    )
    with pytest.raises(ProviderError, match="auth-provider 'gcp'.*exec credential plugin"):
        load(str(path), None)
