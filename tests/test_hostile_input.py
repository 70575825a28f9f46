"""Hostile input that once cost others dearly: bounded ids and listeners, encoded
token keys kept out of the logs, numbers the server cannot carry, bad UTF-8."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import conveyor_asgi.__main__ as cli
from conveyor_asgi import ConfigurationError, Settings
from conveyor_asgi.actions import MAX_LISTENERS, MAX_NAME_LENGTH

from .rawws import OP_TEXT, RawClient
from .support import HOST, Client, ServerProcess, ahttp

pytestmark = pytest.mark.anyio

TOKEN = "hostile-input-server-token"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    env = {"CONVEYOR_SERVER_TOKEN": TOKEN, "CONVEYOR_USE_PRESENCE": "true"}
    with ServerProcess(env) as running:
        yield running


async def _client(server: ServerProcess) -> Client:
    return await Client.connect(f"{server.ws}?token={TOKEN}")


async def test_user_ids_are_bounded_in_length(server: ServerProcess) -> None:
    client = await _client(server)
    for bad in ("u" * (MAX_NAME_LENGTH + 1), 10**MAX_NAME_LENGTH):
        await client.send({"action": "assoc-user-to-fd-action", "userId": bad})
        error = await client.expect("error")
        assert error["code"] == "invalid-field" and "userId" in error["data"]
    longest = "u" * MAX_NAME_LENGTH
    biggest = 10**MAX_NAME_LENGTH - 1
    await client.send({"action": "assoc-user-to-fd-action", "userId": longest})
    await client.join("bounded")
    assert (await client.presence())["userIds"] == {str(client.fd): longest}
    await client.send({"action": "assoc-user-to-fd-action", "userId": biggest})
    assert (await client.presence())["userIds"] == {str(client.fd): biggest}
    await client.close()

    status, body = await ahttp(
        "POST",
        f"{server.http}/conveyor/auth?token={TOKEN}",
        {"userId": "u" * (MAX_NAME_LENGTH + 1)},
    )
    assert status == 400 and "userId" in body["error"]


async def test_listeners_are_bounded_in_length_and_number(server: ServerProcess) -> None:
    client = await _client(server)
    await client.send({"action": "add-listener", "listen": "l" * (MAX_NAME_LENGTH + 1)})
    assert (await client.expect("error"))["code"] == "invalid-field"
    for n in range(MAX_LISTENERS):
        await client.send({"action": "add-listener", "listen": f"action-{n}"})
    await client.send({"action": "add-listener", "listen": "action-0"})  # already there: fine
    await client.send({"action": "add-listener", "listen": "one-too-many"})
    error = await client.expect("error")
    assert error["code"] == "invalid-field" and str(MAX_LISTENERS) in error["data"]
    await client.close()


async def test_a_percent_encoded_token_key_never_reaches_the_log(server: ServerProcess) -> None:
    # The server decodes "%74oken" to "token", so it must redact it the same way.
    status, _ = await ahttp("GET", f"{server.http}/conveyor/channels?%74oken={TOKEN}")
    assert status == 200
    client = await Client.connect(f"{server.ws}/?tok%65n={TOKEN}")
    await client.close()
    status, _ = await ahttp("GET", f"{server.http}/conveyor/channels?%74oken=almost-{TOKEN}")
    assert status == 401
    assert TOKEN not in server.output()


async def test_token_like_query_keys_never_reach_the_log(server: ServerProcess) -> None:
    # Refused keys, but a client that encodes its query wrongly still sends its secret.
    for query in (
        f"token%3D{TOKEN}",
        f"%2574oken={TOKEN}",
        f"token[]={TOKEN}",
        f"access_token={TOKEN}",
    ):
        status, _ = await ahttp("GET", f"{server.http}/conveyor/channels?{query}")
        assert status == 401
    assert TOKEN not in server.output()


async def test_routing_errors_are_json(server: ServerProcess) -> None:
    assert await ahttp("GET", f"{server.http}/no/such/path") == (404, {"error": "Not Found"})
    status, body = await ahttp("GET", f"{server.http}/conveyor/message?token={TOKEN}")
    assert (status, body) == (405, {"error": "Method Not Allowed"})


async def test_numbers_the_server_cannot_carry_get_an_error_not_an_echo(
    server: ServerProcess,
) -> None:
    client = await _client(server)
    for raw in (
        '{"action":"broadcast-action","data":1e400}',
        '{"action":"assoc-user-to-fd-action","userId":' + "7" * 5000 + "}",
    ):
        await client.send(raw)
        error = await client.expect("error")
        assert error["code"] == "invalid-field" and "refused" in error["data"]
    # A bare number out of range is JSON but not an object: echoed as base-action.
    await client.send("1e400")
    assert await client.recv() == {"action": "base-action", "data": "1e400", "fd": client.fd}
    await client.close()
    status, body = await ahttp(
        "POST",
        f"{server.http}/conveyor/message?token={TOKEN}",
        raw=b'{"channel":"room","message":1e999}',
    )
    assert status == 400 and "range" in body["error"]


async def test_a_text_frame_that_is_not_utf8_logs_no_error(server: ServerProcess) -> None:
    bystander = await _client(server)
    raw = await RawClient.connect(HOST, server.port, f"token={TOKEN}")
    raw.send_frame(OP_TEXT, b'{"action":"base-action","data":"\xff"}')
    assert await raw.closed_by_server(timeout=10)
    raw.abort()
    await bystander.send("still here")
    assert (await bystander.expect("base-action"))["data"] == "still here"
    await bystander.close()
    tail = server.output()
    assert "Traceback" not in tail and "ERROR" not in tail, tail[-2000:]


def test_blank_or_padded_server_tokens_and_malformed_origins_stop_start_up() -> None:
    for token in (" ", "padded "):
        with pytest.raises(ConfigurationError, match="CONVEYOR_SERVER_TOKEN"):
            Settings(server_token=token)
    for origins in ("foo", "https://app.example/path", "http://app.example:port"):
        with pytest.raises(ConfigurationError, match="CONVEYOR_ALLOWED_ORIGINS"):
            Settings.from_env({"CONVEYOR_ALLOWED_ORIGINS": origins})
    with pytest.raises(ConfigurationError, match="CONVEYOR_SERVER_TOKEN"):
        Settings.from_env({"CONVEYOR_SERVER_TOKEN": ""})  # a blank line must not open the server
    good = Settings.from_env({"CONVEYOR_ALLOWED_ORIGINS": "https://a.example, http://b:8080/"})
    assert good.allowed_origins == ("https://a.example", "http://b:8080/")


def test_an_empty_listen_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # uvicorn would take "" for every interface.
    monkeypatch.setenv("CONVEYOR_HOST", "")
    assert cli.main(["--port", "1"]) == 2


def test_origins_match_without_the_default_port() -> None:
    from conveyor_asgi.endpoints import origin_allowed

    assert origin_allowed("https://app.example", ("https://app.example:443",))
    assert origin_allowed("https://app.example:443", ("https://app.example",))
    assert origin_allowed("http://app.example", ("http://APP.example:80/",))
    assert not origin_allowed("https://app.example:8443", ("https://app.example",))
    assert not origin_allowed("http://app.example", ("https://app.example",))
