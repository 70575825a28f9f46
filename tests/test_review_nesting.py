"""Deeply nested JSON gets a clear refusal, never a crash, over WebSocket and HTTP."""

from __future__ import annotations

import json

import pytest

from conveyor_asgi import frames

from .support import Client, ServerProcess, ahttp

pytestmark = pytest.mark.anyio


def _nested(depth: int) -> str:
    """JSON text of arrays nested ``depth`` levels deep."""
    return "[" * depth + "]" * depth


async def test_a_frame_nested_too_deeply_gets_an_error_and_the_socket_carries_on() -> None:
    with ServerProcess() as server:
        client = await Client.connect(server.ws)
        await client.send('{"action":"base-action","data":' + _nested(1000) + "}")
        error = await client.expect("error")
        assert error["code"] == "invalid-field"
        assert "nested" in error["data"]

        await client.send({"action": "base-action", "data": "still here"})
        assert (await client.expect("base-action"))["data"] == "still here"
        await client.close()
        server.stop()
        assert "Traceback" not in server.output()


async def test_the_deepest_accepted_frame_is_echoed_unchanged() -> None:
    # The envelope is one level: data may use every level but that one.
    data = _nested(frames.MAX_DEPTH - 1)
    with ServerProcess() as server:
        client = await Client.connect(server.ws)
        await client.send('{"action":"base-action","data":' + data + "}")
        echo = await client.expect("base-action")
        assert json.dumps(echo["data"], separators=(",", ":")) == data
        await client.close()


async def test_an_http_publish_nested_too_deeply_is_a_bad_request() -> None:
    with ServerProcess() as server:
        client = await Client.connect(server.ws)
        await client.join("room")
        body = ('{"channel":"room","message":' + _nested(1000) + "}").encode()
        status, reply = await ahttp("POST", f"{server.http}/conveyor/message", raw=body)
        assert status == 400, reply
        assert "nested deeper" in reply["error"]
        await client.silent()
        await client.close()
        server.stop()
        assert "Traceback" not in server.output()
