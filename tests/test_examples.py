"""The README's two-client presence example, run as a user runs it."""

from __future__ import annotations

import subprocess
import sys

from .support import ROOT

TOKEN = "change-me"


def test_the_presence_clients_example(server_factory) -> None:
    server = server_factory({"CONVEYOR_SERVER_TOKEN": TOKEN, "CONVEYOR_USE_PRESENCE": "true"})
    result = subprocess.run(
        [sys.executable, "examples/presence_clients.py", server.ws, TOKEN],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    a, b = 255172010152673280, 453728974839278943
    fds = {}
    for line in lines:
        user, _, rest = line.partition(" is connection ")
        if rest:
            fds[int(user)] = int(rest)
    assert set(fds) == {a, b}, result.stdout
    roster = sorted(fds.values())
    user_ids = {str(fds[a]): a, str(fds[b]): b}
    user_ids = dict(sorted(user_ids.items(), key=lambda item: int(item[0])))
    both = f"sees {roster} {user_ids}"
    # Every digit of the 64-bit ids comes back, and each client saw both.
    assert f"{a} {both}" in lines, result.stdout
    assert f"{b} {both}" in lines, result.stdout
    for user in (a, b):
        assert f"{user} got 'hello from A' from connection {fds[a]}" in lines, result.stdout
        assert f"{user} got 'hello from B' from connection {fds[b]}" in lines, result.stdout
