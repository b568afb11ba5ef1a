import pytest

from madinfra.config.schema import SecretSource
from madinfra.errors import MadinfraError
from madinfra.secrets import SENSITIVE, Redactor, available_secret_values, resolve_secret, resolve_secrets, secret_digest


def test_digest_is_stable_salted_by_name_and_hides_the_value():
    digest = secret_digest("TOKEN", "abc123")
    assert digest == secret_digest("TOKEN", "abc123") and digest.startswith("sha256:") and len(digest) == 71
    assert digest != secret_digest("OTHER", "abc123") and digest != secret_digest("TOKEN", "abc124")
    assert "abc123" not in digest


def test_resolve_from_env_and_inline(monkeypatch):
    monkeypatch.setenv("HF_TOKEN_SRC", "from-env")
    assert resolve_secret(SecretSource(from_env="HF_TOKEN_SRC")) == "from-env"
    assert resolve_secret({"value": "inline"}) == "inline"
    assert resolve_secrets({"A": SecretSource(value="1"), "B": SecretSource(from_env="HF_TOKEN_SRC")}) == {"A": "1", "B": "from-env"}


def test_unset_env_var_is_named(monkeypatch):
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(MadinfraError, match="NOT_SET_ANYWHERE, which is not set") as err:
        resolve_secret(SecretSource(from_env="NOT_SET_ANYWHERE"), "HF")
    assert "secret_env.HF reads" in str(err.value)
    with pytest.raises(MadinfraError, match="neither 'from_env' nor 'value'"):
        resolve_secret(SecretSource(), "X")
    assert available_secret_values({"X": SecretSource(from_env="NOT_SET_ANYWHERE"), "Y": SecretSource(value="yes-value")}) == ["yes-value"]


def test_redactor_masks_text_and_nested_data_longest_first():
    red = Redactor(["secret", "secret-long", "ab"])
    assert red.text("x secret-long y secret") == f"x {SENSITIVE} y {SENSITIVE}"
    assert red.text("ab stays: too short to mask safely") == "ab stays: too short to mask safely"
    data = {"k": ["secret", 3, {"secret": ("secret",)}], "n": None}
    assert red.data(data) == {"k": [SENSITIVE, 3, {SENSITIVE: (SENSITIVE,)}], "n": None}
    assert not Redactor() and Redactor().data(data) is data
