"""What the Redis backend stores and sends: key names, Lua scripts, bus messages.

Keys, all under one deployment prefix ``P``:

- ``P:ids`` (string): the connection-id counter (INCR).
- ``P:ch:<channel>`` (hash): member fd -> ``<owner node id><mark><user id as JSON>``;
  the mark is ``|`` when the member's changes are announced (presence on),
  ``!`` when not; the user id is ``null`` when the member has none. Emptied
  hashes vanish.
- ``P:channels`` (set): names of channels that have members.
- ``P:nodes`` (set): ids of nodes that registered.
- ``P:node:<id>`` (string with a TTL): a node's heartbeat; gone means dead.
- ``P:node:<id>:fds`` (hash): fd -> channel for the members a node owns.
- ``P:sweep:<id>`` (string with a TTL): one sweeper at a time per dead node.
- ``P:tok:<sha256 of token>`` (string with a TTL): a temporary token's grant.

Keys without a short TTL of their own carry a backstop expiry (a day),
refreshed while they are in use, so a deployment that vanished without a
trace leaves nothing behind for long.

One pub/sub channel, ``P:bus``, carries every delivery (``D`` + header + a
newline + the encoded frame) and every presence change (``P`` + JSON built
by the membership scripts, which publish the roster in the same atomic step
as the change, so one channel's changes are announced in mutation order),
and ``R`` + node id, a marker a node sends itself after an outage.
"""

from __future__ import annotations

import re
from typing import Any

from .. import frames
from ..types import Delivery, PresenceChange, TokenGrant, UserId

_MARK = re.compile(r"[|!]")

# Builds the presence message from the hash KEYS[1] right after a change.
# User ids are copied as stored JSON text: Lua never decodes them, so wide
# integers keep every digit.
_ROSTER = """
local function roster(kind, channel, fd)
  local flat = redis.call('HGETALL', KEYS[1])
  local parts = {}
  for i = 1, #flat, 2 do
    local v = flat[i + 1]
    local bar = string.find(v, '[|!]')
    parts[#parts + 1] = '[' .. flat[i] .. ',' .. string.sub(v, bar + 1) .. ']'
  end
  return 'P{"k":"' .. kind .. '","c":' .. cjson.encode(channel) .. ',"f":' .. fd
    .. ',"m":[' .. table.concat(parts, ',') .. ']}'
end
local function userpart(v)
  return string.sub(v, string.find(v, '[|!]') + 1)
end
"""

# KEYS: channel hash, channels set, owner's fds hash.
# ARGV: fd, "owner|user", channel, bus, announce, quiet_if_unchanged, linger.
JOIN = (
    _ROSTER
    + """
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[3])
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[7]) end
if ARGV[5] ~= '1' then return 1 end
if ARGV[6] == '1' and old and userpart(old) == userpart(ARGV[2]) then return 0 end
redis.call('PUBLISH', ARGV[4], roster('join', ARGV[3], ARGV[1]))
return 1
"""
)

# KEYS: channel hash, channels set, a fds hash to forget the fd in.
# ARGV: fd, channel, bus, announce ("1", "0", or "auto": as the member joined),
# owner ("" = whoever owns it).
LEAVE = (
    _ROSTER
    + """
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local mark = string.find(v, '[|!]')
if ARGV[5] ~= '' and string.sub(v, 1, mark - 1) ~= ARGV[5] then return 0 end
local announce = ARGV[4] == '1' or (ARGV[4] == 'auto' and string.sub(v, mark, mark) == '|')
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[2]) end
if announce then redis.call('PUBLISH', ARGV[3], roster('leave', ARGV[2], ARGV[1])) end
return 1
"""
)

# KEYS: token key. ARGV: "1" when a channel is required, that channel.
# The stored value is "<user JSON>\n<0|1><channel>"; JSON text has no raw newline.
TAKE_TOKEN = """
local v = redis.call('GET', KEYS[1])
if not v then return false end
if ARGV[1] == '1' then
  local nl = string.find(v, '\\n', 1, true)
  if string.sub(v, nl + 1) ~= '1' .. ARGV[2] then return false end
end
redis.call('DEL', KEYS[1])
return v
"""

# KEYS: id counter. ARGV: the highest id this node has handed out, linger.
RAISE_IDS = """
local current = redis.call('GET', KEYS[1])
if not current or tonumber(current) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


#: Bus message a node sends itself after registering again (followed by its id).
RESYNC = "R"


class Keys:
    """Key names of one deployment prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.ids = f"{prefix}:ids"
        self.channels = f"{prefix}:channels"
        self.nodes = f"{prefix}:nodes"
        self.bus = f"{prefix}:bus"

    def channel(self, name: str) -> str:
        return f"{self.prefix}:ch:{name}"

    def heartbeat(self, node: str) -> str:
        return f"{self.prefix}:node:{node}"

    def fds(self, node: str) -> str:
        return f"{self.prefix}:node:{node}:fds"

    def sweep(self, node: str) -> str:
        return f"{self.prefix}:sweep:{node}"

    def token(self, digest: str) -> str:
        return f"{self.prefix}:tok:{digest}"


def member_value(node: str, user_id: UserId | None, announced: bool) -> str:
    return node + ("|" if announced else "!") + frames.dumps(user_id)


def user_json(value: str) -> str:
    """The user id part of a member value, as stored JSON text."""
    return _MARK.split(value, 1)[1]


def user_of(value: str) -> UserId | None:
    user: UserId | None = frames.loads(user_json(value))
    return user


def encode_delivery(delivery: Delivery) -> str:
    header = [
        delivery.target,
        delivery.channel,
        delivery.action,
        delivery.filtered,
        delivery.msg_id,
    ]
    return "D" + frames.dumps(header) + "\n" + delivery.text


def decode(message: str) -> Delivery | PresenceChange | None:
    """A bus message as a Delivery or a PresenceChange; None when it is neither."""
    kind, body = message[:1], message[1:]
    if kind == "D":
        head, _, text = body.partition("\n")
        target, channel, action, filtered, msg_id = frames.loads(head)
        return Delivery(target, channel, action, text, bool(filtered), msg_id)
    if kind == "P":
        data: dict[str, Any] = frames.loads(body)
        members = tuple(sorted((int(fd), user) for fd, user in data["m"]))
        return PresenceChange(data["k"], data["c"], int(data["f"]), members)
    return None


def encode_grant(grant: TokenGrant) -> str:
    bound = "0" if grant.channel is None else "1" + grant.channel
    return frames.dumps(grant.user_id) + "\n" + bound


def decode_grant(value: str) -> TokenGrant:
    user_json, _, bound = value.partition("\n")
    channel = bound[1:] if bound.startswith("1") else None
    return TokenGrant(channel, frames.loads(user_json))
