from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from agentmaestro.crypto import DecryptionError, Keyring, generate_key
from agentmaestro.errors import ConfigError


def test_encrypt_decrypt_and_rotate() -> None:
    old, new = generate_key(), generate_key()
    token = Keyring([old]).encrypt("s3cret")
    assert "s3cret" not in token
    both = Keyring([new, old])
    assert both.decrypt(token) == "s3cret"
    rotated = both.rotate(token)
    assert Keyring([new]).decrypt(rotated) == "s3cret"
    with pytest.raises(DecryptionError):
        Keyring([new]).decrypt(token)


def test_signatures_verify_with_old_keys_until_removed() -> None:
    old, new = generate_key(), generate_key()
    sig = Keyring([old]).sign("approve:a1:exp")
    assert Keyring([new, old]).verify("approve:a1:exp", sig)
    assert not Keyring([new, old]).verify("approve:a2:exp", sig)
    assert not Keyring([new]).verify("approve:a1:exp", sig)


def test_bad_key_is_a_clear_config_error() -> None:
    with pytest.raises(ConfigError, match="secret key #2 is not a Fernet key"):
        Keyring([generate_key(), "nope"])


def test_key_file_is_created_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAESTRO_SECRET_KEYS", raising=False)
    monkeypatch.delenv("MAESTRO_SECRET_KEY", raising=False)
    ring = Keyring.from_env(tmp_path)
    path = tmp_path / "secret.key"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert Keyring.from_env(tmp_path).decrypt(ring.encrypt("x")) == "x"


def test_env_keys_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = generate_key(), generate_key()
    monkeypatch.setenv("MAESTRO_SECRET_KEYS", f"{a}, {b}")
    ring = Keyring.from_env(tmp_path)
    assert Keyring([a]).decrypt(ring.encrypt("y")) == "y"
    assert not (tmp_path / "secret.key").exists()


def test_processes_racing_to_create_the_key_file_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The key file appears whole or not at all: racing creators never read it empty and all use one key."""
    import multiprocessing

    monkeypatch.delenv("MAESTRO_SECRET_KEYS", raising=False)
    monkeypatch.delenv("MAESTRO_SECRET_KEY", raising=False)
    home = tmp_path / "home"
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(8) as pool:
        ids = pool.map(_key_id_of, [str(home)] * 32)
    assert len(set(ids)) == 1
    assert [p.name for p in home.iterdir()] == ["secret.key"]  # no temporary file left behind
    assert stat.S_IMODE((home / "secret.key").stat().st_mode) == 0o600


def _key_id_of(home: str) -> str:
    return Keyring.from_env(home).key_id


def test_derived_keys_are_per_purpose_and_never_the_key_itself() -> None:
    import base64

    old, new = generate_key(), generate_key()
    ring = Keyring([new, old])
    chain, checkpoint = ring.derived("audit-chain/v2"), ring.derived("audit-checkpoint/v1")
    assert len(chain) == 2 and chain[0].key_id != chain[1].key_id
    assert {k.secret for k in chain}.isdisjoint({k.secret for k in checkpoint})
    assert base64.urlsafe_b64decode(new) not in {k.secret for k in (*chain, *checkpoint)}
    assert Keyring([old]).derived("audit-chain/v2")[0] == chain[1]  # stable: the old key's entries still verify
    assert "secret" not in repr(chain[0]) and chain[0].key_id in repr(chain[0])
