"""Wire compatibility with Node.js clients (``ws`` from npm), against a real server.

The JavaScript tests in ``tests/node/`` reproduce the Conveyor browser client
(PROTOCOL.md, appendix A), the hand-written example order and the PHP
back-end client; this module starts the server and runs them under Node's
test runner. Without Node or its packages (``npm ci`` in ``tests/node``) they
skip with the reason, except in CI (``CI=true``), where that is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from .conftest import IN_CI
from .support import HOST, ROOT

NODE_DIR = ROOT / "tests" / "node"
NODE_TESTS = sorted(p.name for p in NODE_DIR.glob("*.test.mjs"))
ACK_TESTS = ["acknowledge_option.test.mjs"]  # need acknowledgments on
TOKEN = "node-compat-server-token"

pytestmark = pytest.mark.node


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        reason = "Node.js is not installed (the Node compatibility tests need `node`)"
    elif not (NODE_DIR / "node_modules" / "ws").is_dir():
        reason = "the npm packages are missing: run `npm ci` in tests/node (or scripts/install)"
    else:
        return node
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


def test_the_node_suite_exists() -> None:
    assert NODE_TESTS == [
        "acknowledge_option.test.mjs",
        "browser_client.test.mjs",
        "handwritten_client.test.mjs",
        "php_client.test.mjs",
    ]


MODES = {
    "server-token": {"CONVEYOR_SERVER_TOKEN": TOKEN},
    "open": {},
    "acknowledgment": {
        "CONVEYOR_SERVER_TOKEN": TOKEN,
        "CONVEYOR_USE_ACKNOWLEDGMENT": "true",
        "CONVEYOR_ACKNOWLEDGMENT_TIMEOUT": "0.2",
        "CONVEYOR_ACKNOWLEDGMENT_ATTEMPTS": "3",
    },
}


@pytest.mark.parametrize("mode", list(MODES))
def test_node_clients_against_the_server(server_factory, mode: str) -> None:
    node = _node()
    env = {"CONVEYOR_USE_PRESENCE": "true", **MODES[mode]}
    server = server_factory(env)
    files = ACK_TESTS if mode == "acknowledgment" else sorted(set(NODE_TESTS) - set(ACK_TESTS))

    node_env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    node_env.update(
        CONVEYOR_TEST_HOST=HOST,
        CONVEYOR_TEST_PORT=str(server.port),
        CONVEYOR_TEST_TOKEN=env.get("CONVEYOR_SERVER_TOKEN", ""),
        CONVEYOR_TEST_ACK_ATTEMPTS=env.get("CONVEYOR_ACKNOWLEDGMENT_ATTEMPTS", "0"),
        NO_COLOR="1",
    )
    # One file at a time (clients in no channel receive each other's
    # broadcasts), each in its own Node process.
    for name in files:
        result = subprocess.run(
            [node, "--test", "--test-reporter=spec", name],
            cwd=NODE_DIR,
            env=node_env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        report = f"{name}:\n{result.stdout}\n{result.stderr}\n--- server log ---\n{server.output()}"
        assert result.returncode == 0, report
        # Every test ran and passed: none failed, was skipped or cancelled.
        counts = dict(
            re.findall(
                r"^\S*\s*(tests|pass|fail|skipped|cancelled|todo) (\d+)$",
                result.stdout,
                re.MULTILINE,
            )
        )
        assert int(counts.get("tests", 0)) >= 1, report
        assert counts.get("pass") == counts.get("tests"), report
