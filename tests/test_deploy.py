"""deploy/: the compose file's structure and the nginx proxy in front of real servers.

The compose file is checked for what the deployment relies on (Redis, the
replicas built from the Dockerfile, one shared env file, nginx in front) and,
where docker-compose is installed, by its own validator. The nginx config is
checked by ``nginx -t`` and then run for real in front of two uvicorn servers
on loopback ports, with its upstream and listen addresses moved there.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import websockets
import yaml

from conveyor_asgi.settings import Settings

from .conftest import IN_CI, ServerFactory
from .docker_support import parse_dockerfile
from .support import HOST, ROOT, Client, free_port

DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
NGINX_CONF = DEPLOY / "nginx.conf"
ENV_EXAMPLE = DEPLOY / "conveyor.env.example"
TOKEN = "deploy-test-token"
# An upstream entry, "server NAME:PORT params;", on one line (not a server block).
_UPSTREAM_LINE = r"^([ \t]*server[ \t]+)([^\s;{]+)([^;{\n]*;)\n"
_UPSTREAM_SERVER = r"^[ \t]*server[ \t]+([^\s;{]+)[^;{\n]*;"


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _replicas(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items() if "build" in svc}


def _known_variables() -> set[str]:
    """CONVEYOR_* names the server reads: the settings' and the command line's."""
    names = {str(f.metadata["env"]) for f in Settings.__dataclass_fields__.values()}
    for module in ("__main__.py", "app.py"):
        source = (ROOT / "conveyor_asgi" / module).read_text()
        names |= set(re.findall(r"\"(CONVEYOR_[A-Z_]+)\"", source))
    return names


def _env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"not KEY=VALUE: {line}"
            values[key] = value
    return values


# -- the compose file ------------------------------------------------------------------


def test_compose_runs_redis_nginx_and_several_replicas_of_the_image() -> None:
    compose = _compose()
    services = compose["services"]
    assert {"redis", "nginx"} <= set(services)
    replicas = _replicas(compose)
    assert len(replicas) >= 2, "several replicas of the server"
    for name, svc in replicas.items():
        context = (DEPLOY / svc["build"]["context"]).resolve()
        assert (context / svc["build"].get("dockerfile", "Dockerfile")).resolve() == (
            ROOT / "Dockerfile"
        ), name
        assert "ports" not in svc, f"{name} is reached through nginx only"
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "healthcheck" in services["redis"]


def test_replicas_share_redis_and_the_server_token_from_one_env_file() -> None:
    replicas = _replicas(_compose())
    env_files = {svc["env_file"] for svc in replicas.values()}
    assert len(env_files) == 1, "every replica reads the same env file"
    assert (DEPLOY / (env_files.pop() + ".example")).exists()
    assert _env_file(ENV_EXAMPLE)["CONVEYOR_SERVER_TOKEN"]
    for svc in replicas.values():
        assert "CONVEYOR_SERVER_TOKEN" not in svc["environment"], "the token lives in the file"
        assert svc["environment"]["CONVEYOR_BACKEND_URL"].startswith("redis://redis:6379/")


def test_every_variable_the_deployment_sets_is_one_the_server_reads() -> None:
    known = _known_variables()
    used = set(_env_file(ENV_EXAMPLE))
    for svc in _replicas(_compose()).values():
        used |= set(svc["environment"])
    ours = {name for name in used if name.startswith("CONVEYOR_")}
    assert ours and ours <= known, ours - known
    # uvicorn's own variable: trust the client address nginx forwards.
    assert used - ours == {"FORWARDED_ALLOW_IPS"}
    # What the compose file sets must also parse.
    Settings.from_env(
        {
            k: v
            for k, v in _env_file(ENV_EXAMPLE).items()
            if k in known and k not in {"CONVEYOR_HOST", "CONVEYOR_PORT", "CONVEYOR_LOG_LEVEL"}
        }
    )


def test_nginx_proxies_to_each_replica_on_the_port_it_listens_on() -> None:
    compose = _compose()
    nginx = compose["services"]["nginx"]
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert any(str(p).endswith(":80") for p in nginx["ports"])
    replicas = _replicas(compose)
    expose = parse_dockerfile().final.last("EXPOSE").args
    upstream = set(re.findall(_UPSTREAM_SERVER, NGINX_CONF.read_text(), re.M))
    assert upstream == {
        f"{name}:{svc['environment']['CONVEYOR_PORT']}" for name, svc in replicas.items()
    }
    assert {svc["environment"]["CONVEYOR_PORT"] for svc in replicas.values()} == {expose}
    for name in replicas:
        assert nginx["depends_on"][name]["condition"] == "service_healthy"


def _compose_validator() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=30
        ).returncode
        == 0
    ):
        return [docker, "compose"]
    return None


def test_compose_file_passes_the_compose_validator(tmp_path: Path) -> None:
    validator = _compose_validator()
    if validator is None:
        if IN_CI:
            pytest.fail("docker-compose is missing (apt-get install docker-compose)")
        pytest.skip("neither docker-compose nor the docker compose plugin is installed")
    # A copy, so the env file the deployment needs can exist without touching the tree.
    shutil.copytree(DEPLOY, tmp_path / "deploy")
    shutil.copy(ROOT / "Dockerfile", tmp_path / "Dockerfile")
    shutil.copy(ENV_EXAMPLE, tmp_path / "deploy" / "conveyor.env")
    done = subprocess.run(
        [*validator, "-f", "docker-compose.yml", "config", "-q"],
        cwd=tmp_path / "deploy",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# -- the nginx config -------------------------------------------------------------------


def _directives(name: str) -> list[str]:
    return re.findall(rf"^\s*{name}\s+([^;]+);", NGINX_CONF.read_text(), re.M)


def _seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h)?", value.strip()).groups()  # type: ignore[union-attr]
    return float(number) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[unit]


def test_nginx_upgrades_websockets_and_streams_them() -> None:
    assert _directives("proxy_http_version") == ["1.1"]
    headers = {h.split()[0]: h.split(None, 1)[1] for h in _directives("proxy_set_header")}
    assert headers["Upgrade"] == "$http_upgrade"
    assert headers["Connection"] == "$connection_upgrade"
    assert headers["X-Forwarded-For"] == "$remote_addr"
    assert _directives("proxy_buffering") == ["off"]
    assert re.search(r"^\s*least_conn;", NGINX_CONF.read_text(), re.M), "balances by load"


def test_nginx_timeouts_outlast_the_server_ping_interval() -> None:
    ping = uvicorn.Config("conveyor_asgi.app:app").ws_ping_interval
    assert ping is not None
    for name in ("proxy_read_timeout", "proxy_send_timeout"):
        (value,) = _directives(name)
        assert _seconds(value) >= 3 * ping, f"{name} {value} vs pings every {ping} s"


def _nginx() -> str:
    binary = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )
    if binary is None:
        if IN_CI:
            pytest.fail("nginx is missing (apt-get install nginx-light)")
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    return binary


def _local_config(tmp: Path, upstream_ports: list[int], listen_port: int) -> Path:
    """deploy/nginx.conf with upstreams and the listener on loopback ports, paths in ``tmp``."""
    text = NGINX_CONF.read_text()
    lines = list(re.finditer(_UPSTREAM_LINE, text, re.M))
    assert len(lines) >= len(upstream_ports)
    for index, match in reversed(list(enumerate(lines))):
        replacement = ""
        if index < len(upstream_ports):
            replacement = f"{match[1]}{HOST}:{upstream_ports[index]}{match[3]}\n"
        text = text[: match.start()] + replacement + text[match.end() :]
    text, count = re.subn(
        r"^(\s*)listen\s+80;", rf"\1listen {HOST}:{listen_port};", text, flags=re.M
    )
    assert count == 1
    temp_paths = "".join(
        f"    {kind}_temp_path {tmp / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = text.replace("http {\n", "http {\n" + temp_paths, 1)
    conf = tmp / "nginx.conf"
    conf.write_text(text)
    return conf


def _nginx_args(tmp: Path, conf: Path) -> list[str]:
    return [
        "-p",
        str(tmp),
        "-e",
        "stderr",
        "-c",
        str(conf),
        "-g",
        f"daemon off; pid {tmp / 'nginx.pid'};",
    ]


def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    binary = _nginx()
    conf = _local_config(tmp_path, [free_port(), free_port()], free_port())
    done = subprocess.run(
        [binary, "-t", *_nginx_args(tmp_path, conf)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert "syntax is ok" in done.stderr


@pytest.fixture
def nginx_in_front(server_factory: ServerFactory, tmp_path: Path) -> Iterator[tuple[str, list]]:
    """Two real servers on the parametrized backend, nginx in front: (base URL, servers)."""
    binary = _nginx()
    # As in docker-compose.yml: the replicas trust whatever address nginx forwards.
    env = {
        "CONVEYOR_SERVER_TOKEN": TOKEN,
        "CONVEYOR_USE_PRESENCE": "true",
        "FORWARDED_ALLOW_IPS": "*",
    }
    servers = [server_factory(env), server_factory(env)]
    tmp_path.chmod(0o755)  # nginx's workers may run as another user
    port = free_port()
    conf = _local_config(tmp_path, [s.port for s in servers], port)
    log = tmp_path / "nginx.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, *_nginx_args(tmp_path, conf)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        yield f"{HOST}:{port}", servers
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.anyio
async def test_websockets_through_nginx_reach_both_replicas_with_presence(
    nginx_in_front: tuple[str, list], backend: dict[str, str]
) -> None:
    address, servers = nginx_in_front

    # Connect from a second loopback address, claiming a third: the replica
    # sees the address nginx saw, not the one the client made up.
    a = await Client.connect(
        f"ws://{address}/?token={TOKEN}",
        local_addr=("127.0.0.2", 0),
        additional_headers={"X-Forwarded-For": "198.51.100.7"},
    )
    b = await Client.connect(f"ws://{address}?token={TOKEN}")

    # least_conn sends the second socket to the other replica.
    logs = [s.output() for s in servers]
    assert [log.count(" as connection ") for log in logs] == [1, 1], logs
    assert any("accepted 127.0.0.2:" in log for log in logs), logs
    assert not any("198.51.100.7" in log for log in logs)

    await a.join("room")
    assert (await a.presence())["fds"] == [a.fd]
    await b.join("room")
    joined = await b.presence()
    assert joined["fd"] == b.fd
    if backend["CONVEYOR_BACKEND_URL"].startswith("redis"):
        # One deployment: both replicas see both members.
        assert joined["fds"] == sorted([a.fd, b.fd])
        assert (await a.presence())["fds"] == sorted([a.fd, b.fd])
    else:
        # Memory backends share nothing: each replica knows its own member only.
        assert joined["fds"] == [b.fd]

    await b.send({"action": "base-action", "data": "through nginx"})
    assert (await b.expect("base-action"))["data"] == "through nginx"

    with pytest.raises(websockets.InvalidStatus) as refused:
        await Client.connect(f"ws://{address}/?token=wrong")
    assert refused.value.response.status_code == 403
    await a.close()
    await b.close()
