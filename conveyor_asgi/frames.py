"""JSON decoding and encoding of frames, and the envelopes the server sends.

orjson does the work. Two things it does not do the way the protocol needs
are handled here: integers wider than 64 bits (orjson turns them into floats
when decoding and refuses them when encoding) fall back to the standard
library, which keeps every digit; and non-finite numbers are refused, since
the JSON the clients parse has no NaN or Infinity.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

# Nineteen digits in a row may be an integer orjson cannot hold exactly.
_MAYBE_WIDE_INT = re.compile(rb"\d{19}")

#: The deepest nesting of arrays and objects accepted in a frame or body.
#: The decoder takes up to 1024 levels but encoding fails past about 254, so
#: anything deeper would be accepted and then never sent on.
MAX_DEPTH = 200


class _NotJSON(ValueError):
    pass


class Unsupported(ValueError):
    """Valid JSON the server cannot carry: numbers out of range, too deep."""


class TooDeep(Unsupported):
    """JSON nested deeper than :data:`MAX_DEPTH` levels."""


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise Unsupported(f"the number {text[:20]}... is out of range for a double")
    return value


def _no_constants(name: str) -> Any:
    raise _NotJSON(f"{name} is not JSON")


def loads(data: str | bytes) -> Any:
    """Decode JSON text, keeping integers of any width exact.

    Raises ``ValueError`` when ``data`` is not JSON, and its subclass
    :class:`TooDeep` when it nests deeper than :data:`MAX_DEPTH`.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    value = _decode(raw)
    # Counting brackets (strings included) is a cheap upper bound on the depth.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _depth_exceeds(value, MAX_DEPTH):
        raise TooDeep(f"JSON nested deeper than {MAX_DEPTH} levels")
    return value


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if level > limit:
            return True
        stack.extend((child, level + 1) for child in children)
    return False


def _decode(raw: bytes) -> Any:
    if _MAYBE_WIDE_INT.search(raw) is None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            # Not JSON, or JSON orjson does not take: escaped lone surrogates
            # (JavaScript's JSON.stringify writes them for a string cut inside
            # an emoji) or numbers out of range. The standard library tells.
            pass
    try:
        # Decoded here: json.loads would also take UTF-16 and UTF-32 bytes.
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(str(exc)) from None
    try:
        return json.loads(text, parse_float=_finite_float, parse_constant=_no_constants)
    except RecursionError:
        raise TooDeep(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except (json.JSONDecodeError, _NotJSON, Unsupported):
        raise
    except ValueError:  # an integer past the interpreter's digit limit
        raise Unsupported("an integer has more than 4300 digits") from None


def dumps(value: Any) -> str:
    """Encode ``value`` as compact JSON text.

    Raises ``ValueError`` for values JSON cannot represent (non-finite floats,
    objects of unknown types).
    """
    try:
        return orjson.dumps(value).decode()
    except (orjson.JSONEncodeError, TypeError):
        pass
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except RecursionError:
        raise ValueError("value nested too deeply") from None
    except TypeError as exc:
        raise ValueError(str(exc)) from None


def action_frame(action: str, data: Any, fd: int | None, msg_id: str | None = None) -> str:
    """``{"action", "data", "fd"}``; ``fd`` is left out when None (HTTP broadcasts)."""
    frame: dict[str, Any] = {"action": action, "data": data}
    if fd is not None:
        frame["fd"] = fd
    if msg_id is not None:
        frame["id"] = msg_id
    return dumps(frame)


def error_frame(code: str, text: str, fd: int, msg_id: str | None = None) -> str:
    frame: dict[str, Any] = {"action": "error", "code": code, "data": text, "fd": fd}
    if msg_id is not None:
        frame["id"] = msg_id
    return dumps(frame)


def connection_info_frame(fd: int, msg_id: str | None = None) -> str:
    data = dumps({"fd": fd, "event": "connection-info"})
    return action_frame("connection-info", data, None, msg_id)


def presence_frame(action: str, payload: dict[str, Any], msg_id: str | None = None) -> str:
    """A presence envelope: ``data`` is the payload encoded as a JSON string."""
    frame: dict[str, Any] = {"action": action, "data": dumps(payload)}
    if msg_id is not None:
        frame["id"] = msg_id
    return dumps(frame)


def ack_frame(msg_id: Any) -> str:
    return dumps({"action": "acknowledge-action", "data": msg_id})
