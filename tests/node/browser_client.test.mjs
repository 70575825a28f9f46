// The browser client's wire behaviour against a running server (PROTOCOL.md, appendix A).

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import WebSocket from 'ws';

import {
  BrowserLikeClient, clientUrl, closeAll, closed, connectionId, HOST, Inbox, opened, openSocket,
  PORT, TOKEN, uniqueChannel, until,
} from './clients.mjs';

afterEach(closeAll);

const NUMERIC_USER = 1001;
const STRING_USER = 'user-b7';

// What the server may send a client of this test: nothing answers a heartbeat.
const EXPECTED_ACTIONS = new Set([
  'connection-info',
  'channel-connect',
  'channel-disconnect',
  'broadcast-action',
]);

function bothKnown(a, b) {
  return (p) =>
    p.fds.includes(a.fd) && p.fds.includes(b.fd) && String(a.fd) in p.userIds
    && String(b.fd) in p.userIds;
}

test('user id before channel-connect, binary heartbeats, presence and broadcasts', async () => {
  const channel = uniqueChannel('browser');
  const a = new BrowserLikeClient({ channel, userId: NUMERIC_USER, heartbeatMs: 200, label: 'a' });
  const b = new BrowserLikeClient({ channel, userId: STRING_USER, heartbeatMs: 200, label: 'b' });
  await Promise.all([a.opened, b.opened]);
  a.fd = await connectionId(a.inbox);
  b.fd = await connectionId(b.inbox);
  assert.equal(a.inbox.actions()[0], 'connection-info');
  assert.equal(b.inbox.actions()[0], 'connection-info');
  assert.notEqual(a.fd, b.fd);

  // Each sees both connections, each with its user id, its JSON type kept.
  for (const client of [a, b]) {
    const roster = await client.inbox.presence(
      'channel-connect', bothKnown(a, b), 'presence listing both user ids',
    );
    assert.equal(roster.event, 'channel-presence');
    assert.equal(roster.channel, channel);
    assert.deepEqual(roster.fds, [a.fd, b.fd].sort((x, y) => x - y));
    assert.deepEqual(roster.userIds, { [a.fd]: NUMERIC_USER, [b.fd]: STRING_USER });
  }

  // Heartbeats go on (several of them) and change nothing: no reply, no close.
  await until(() => a.heartbeatsSent >= 3 && b.heartbeatsSent >= 3, 'three heartbeats each');
  assert.equal(a.ws.readyState, WebSocket.OPEN);
  assert.equal(b.ws.readyState, WebSocket.OPEN);

  const message = { text: 'hello from a', n: 1, nested: { list: [1, 'two', null] } };
  a.send(message, 'broadcast-action');
  for (const client of [a, b]) {
    const frame = await client.inbox.take((f) => f.action === 'broadcast-action', 'a broadcast');
    assert.deepEqual(frame, { action: 'broadcast-action', data: message, fd: a.fd });
  }
  b.send('hello from b', 'broadcast-action');
  for (const client of [a, b]) {
    const frame = await client.inbox.take((f) => f.action === 'broadcast-action', 'b broadcast');
    assert.deepEqual(frame, { action: 'broadcast-action', data: 'hello from b', fd: b.fd });
  }

  // b leaves: a sees the roster without it; b gets no update of its own leave.
  await b.close();
  const left = await a.inbox.presence('channel-disconnect', (p) => p.fd === b.fd, 'b leaving');
  assert.deepEqual(left.fds, [a.fd]);
  assert.deepEqual(left.userIds, { [a.fd]: NUMERIC_USER });
  await a.close();

  for (const client of [a, b]) {
    client.inbox.assertClean();
    for (const action of client.inbox.actions()) {
      assert.ok(EXPECTED_ACTIONS.has(action), `unexpected ${action} frame`);
    }
  }
});

test('extra query options after the token, and a client with no channel or user', async () => {
  const client = new BrowserLikeClient({ query: 'client=conveyor-js&v=1.2', label: 'query' });
  await client.opened;
  const fd = await connectionId(client.inbox);
  client.send('ping');
  const echo = await client.inbox.take((f) => f.action === 'base-action', 'the echo');
  assert.deepEqual(echo, { action: 'base-action', data: 'ping', fd });
  await client.close();
  client.inbox.assertClean();
});

test('a reconnect opens a new connection with a new id and the same options', async () => {
  const channel = uniqueChannel('reconnect');
  const first = new BrowserLikeClient({ channel, userId: NUMERIC_USER, label: 'first' });
  await first.opened;
  const firstFd = await connectionId(first.inbox);
  await first.inbox.presence('channel-connect', (p) => p.fd === firstFd, 'first join');
  await first.close();

  const again = new BrowserLikeClient({ channel, userId: NUMERIC_USER, label: 'again' });
  await again.opened;
  const againFd = await connectionId(again.inbox);
  assert.notEqual(againFd, firstFd);
  const roster = await again.inbox.presence('channel-connect', (p) => p.fd === againFd, 'rejoin');
  assert.deepEqual(roster.fds, [againFd]);
  assert.deepEqual(roster.userIds, { [againFd]: NUMERIC_USER });
  await again.close();
  first.inbox.assertClean();
  again.inbox.assertClean();
});

test('no frame the server sends to bad input breaks JSON.parse', async () => {
  const client = new BrowserLikeClient({ label: 'bad-input' });
  await client.opened;
  const fd = await connectionId(client.inbox);
  const bad = [
    '{}',
    '{"action": null}',
    '{"action": 12}',
    '{"action": "no-such-action"}',
    '{"action": "channel-connect"}',
    '{"action": "channel-connect", "channel": ""}',
    '{"action": "assoc-user-to-fd-action", "userId": true}',
    '{"action": "broadcast-action"}',
    '[1, 2, 3]',
    'not json at all',
    '"\\ud800 lone surrogate"',
  ];
  for (const text of bad) {
    client.ws.send(text);
  }
  client.ws.send(Buffer.from([0xff, 0xfe, 0x00]), { binary: true });
  client.send('still here');
  await client.inbox.take(
    (f) => f.action === 'base-action' && f.data === 'still here', 'the last echo',
  );
  const errors = client.inbox.frames.filter(({ frame }) => frame.action === 'error');
  assert.equal(errors.length, 8, client.inbox.frames.map(({ raw }) => raw).join('\n'));
  for (const { frame } of errors) {
    assert.equal(frame.fd, fd);
    assert.equal(typeof frame.code, 'string');
    assert.equal(typeof frame.data, 'string');
  }
  assert.equal(client.ws.readyState, WebSocket.OPEN);
  await client.close();
  client.inbox.assertClean();
});

test('a wrong token: HTTP 403 when the server has a token, ignored when it runs open', async () => {
  const ws = openSocket(clientUrl({ token: 'wrong-token' }));
  const outcome = await new Promise((resolve) => {
    ws.on('unexpected-response', (req, res) => resolve(res.statusCode));
    ws.on('open', () => resolve('opened'));
    ws.on('error', (err) => resolve(err.message));
  });
  assert.equal(outcome, TOKEN ? 403 : 'opened');
  ws.terminate();
});

test('a temporary token bound to a channel and a user, in the URL and as auth', async () => {
  const channel = uniqueChannel('temporary');
  const headers = { 'Content-Type': 'application/json' };
  if (TOKEN) {
    headers.Authorization = `Bearer ${TOKEN}`;
  }
  const response = await fetch(`http://${HOST}:${PORT}/conveyor/auth`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ channel, userId: 'temp-user' }),
  });
  assert.equal(response.status, 200);
  const { auth } = await response.json();
  assert.equal(typeof auth, 'string');

  // The browser client puts the same token in the URL and in `auth`.
  const client = new BrowserLikeClient({ token: auth, channel, userId: 'temp-user', label: 'temp' });
  await client.opened;
  const fd = await connectionId(client.inbox);
  const roster = await client.inbox.presence('channel-connect', (p) => p.fd === fd, 'the join');
  assert.deepEqual(roster.fds, [fd]);
  assert.deepEqual(roster.userIds, { [fd]: 'temp-user' });
  client.send('in');
  await client.inbox.take((f) => f.action === 'base-action', 'the echo');
  assert.ok(!client.inbox.actions().includes('error'), client.inbox.actions().join(', '));
  await client.close();
  client.inbox.assertClean();

  // Used up by that handshake (ignored altogether when the server runs open).
  const again = openSocket(clientUrl({ token: auth }));
  const outcome = await new Promise((resolve) => {
    again.on('unexpected-response', (req, res) => resolve(res.statusCode));
    again.on('open', () => resolve('opened'));
    again.on('error', (err) => resolve(err.message));
  });
  assert.equal(outcome, TOKEN ? 403 : 'opened');
  again.terminate();
});

test('offered subprotocols: socketconveyor.com is selected, else the first one', async () => {
  for (const [offered, selected] of [
    [['chat', 'socketconveyor.com'], 'socketconveyor.com'],
    [['chat', 'superchat'], 'chat'],
  ]) {
    // `ws`, like browsers, fails the handshake unless the server selects one of them.
    const ws = openSocket(clientUrl(), offered);
    const inbox = new Inbox(ws, `subprotocol ${selected}`);
    await opened(ws);
    assert.equal(ws.protocol, selected);
    await connectionId(inbox);
    ws.close();
    await closed(ws);
    inbox.assertClean();
  }
});
