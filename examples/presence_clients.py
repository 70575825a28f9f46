"""Two clients that see each other in presence and exchange broadcasts.

Start the server with presence on, then run this script::

    CONVEYOR_SERVER_TOKEN=change-me CONVEYOR_USE_PRESENCE=true python -m conveyor_asgi
    python examples/presence_clients.py ws://127.0.0.1:8989 change-me
"""

from __future__ import annotations

import asyncio
import json
import sys

import websockets

CHANNEL = "private-notifications"


async def client(url: str, user_id: int, greeting: str) -> None:
    async with websockets.connect(url) as ws:
        info = json.loads(await ws.recv())
        print(user_id, "is connection", json.loads(info["data"])["fd"])
        await ws.send(json.dumps({"action": "channel-connect", "channel": CHANNEL}))
        await ws.send(json.dumps({"action": "assoc-user-to-fd-action", "userId": user_id}))
        await asyncio.sleep(0.5)  # let the other client join first
        await ws.send(json.dumps({"action": "broadcast-action", "data": greeting}))
        try:
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 2))
                if frame["action"] == "broadcast-action":
                    print(user_id, "got", repr(frame["data"]), "from connection", frame["fd"])
                elif frame["action"] in ("channel-connect", "channel-disconnect"):
                    presence = json.loads(frame["data"])  # data is a JSON string
                    print(user_id, "sees", presence["fds"], presence["userIds"])
        except asyncio.TimeoutError:
            pass  # two quiet seconds: done


async def main(url: str) -> None:
    await asyncio.gather(
        client(url, 255172010152673280, "hello from A"),
        client(url, 453728974839278943, "hello from B"),
    )


if __name__ == "__main__":
    server = sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8989"
    token = sys.argv[2] if len(sys.argv) > 2 else None
    asyncio.run(main(f"{server}?token={token}" if token else server))
