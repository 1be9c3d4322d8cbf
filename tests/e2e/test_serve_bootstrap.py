"""`maestro serve` (what `make run` ends with) always tells a new user a key that works.

First start: creates an admin key, prints it and saves it (mode 0600) under ``$MAESTRO_HOME``. Later
starts print the same key again while it is valid; once it is revoked, they say how to make one (or,
when no valid key is left at all, make a new one).
"""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import time
from pathlib import Path

import httpx

from tests.e2e.test_cli import MAESTRO, Maestro, _env, ok
from tests.fakes.server import free_port

KEY = re.compile(r"^\s+(am_[0-9a-f]+_\S+)$", re.M)


def _serve(tmp_path: Path, db: str) -> tuple[str, str]:
    """Start the server, read its banner, check the printed key against it, stop it; (banner, key or "")."""
    port = free_port()
    env = _env(tmp_path)
    proc = subprocess.Popen(
        [str(MAESTRO), "--database-url", db, "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    banner = ""
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            banner += line
            if "dashboard:" in line:
                if not KEY.search(banner):  # the banner ends with how to get a key
                    banner += proc.stderr.readline()
                break
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, banner
            time.sleep(0.1)
        m = KEY.search(banner)
        if m:
            r = httpx.get(f"http://127.0.0.1:{port}/v1/workspace", headers={"Authorization": f"Bearer {m[1]}"})
            assert r.status_code == 200 and r.json()["caller"]["role"] == "admin", r.text
        return banner, m[1] if m else ""
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_serve_shows_a_working_key_on_every_start(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'maestro.db'}"
    first, key = _serve(tmp_path, db)
    assert key and "created an admin API key" in first
    saved = tmp_path / ".maestro-home" / "bootstrap-admin.key"
    assert saved.read_text().strip() == key
    assert stat.S_IMODE(os.stat(saved).st_mode) == 0o600

    again, same = _serve(tmp_path, db)
    assert same == key and "from " in again and "created" not in again

    m = Maestro(tmp_path, db)
    ok(m("keys", "create", "--name", "ops", "--role", "admin"))
    ok(m("keys", "revoke", key.split("_")[1]))
    revoked, none = _serve(tmp_path, db)  # other keys exist: nothing to show, say how to get one
    assert none == "" and "create one: maestro keys create" in revoked

    ok(m("keys", "revoke", ok(m("--json", "keys", "list")).json()[0]["key_id"]))
    fresh, new = _serve(tmp_path, db)  # no valid key left at all: a new one, saved again
    assert new and new != key and "created an admin API key" in fresh
    assert saved.read_text().strip() == new
