// A client behaving like the PHP back-end client (conveyor-server-client):
// send() sends broadcast-action frames and expects its own broadcasts back;
// sendRaw() sends the text as it is.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';

import {
  clientUrl, closeAll, closed, connectionId, Inbox, opened, openSocket, TOKEN, uniqueChannel,
} from './clients.mjs';

afterEach(closeAll);

async function backendClient(label) {
  const ws = openSocket(clientUrl());
  const inbox = new Inbox(ws, label);
  await opened(ws);
  const fd = await connectionId(inbox);
  return {
    ws,
    inbox,
    fd,
    closed: closed(ws),
    send(data) {
      ws.send(JSON.stringify({ action: 'broadcast-action', data }));
    },
    sendRaw(text) {
      ws.send(text);
    },
  };
}

async function ownBroadcastsComeBack(client, count) {
  for (let i = 0; i < count; i += 1) {
    client.send({ seq: i, body: `event ${i}` });
  }
  // In the order sent, each carrying the sender's id.
  for (let i = 0; i < count; i += 1) {
    const frame = await client.inbox.take((f) => f.action === 'broadcast-action', `broadcast ${i}`);
    assert.deepEqual(frame, {
      action: 'broadcast-action', data: { seq: i, body: `event ${i}` }, fd: client.fd,
    });
  }
}

test('send() outside any channel: its own broadcasts come back, in order', async () => {
  const client = await backendClient('php-lobby');
  await ownBroadcastsComeBack(client, 20);
  client.ws.close();
  await client.closed;
  client.inbox.assertClean();
});

test('send() inside a channel: its own broadcasts come back, members get them too', async () => {
  const channel = uniqueChannel('php');
  const php = await backendClient('php');
  const member = await backendClient('member');
  for (const client of [php, member]) {
    client.sendRaw(JSON.stringify({ action: 'channel-connect', channel, auth: TOKEN }));
  }
  // The raw frames are handled in order, so a base-action sent after the
  // join is answered only once the connection is in the channel.
  for (const client of [php, member]) {
    client.sendRaw('joined?');
    await client.inbox.take((f) => f.action === 'base-action', 'the echo after joining');
  }
  await ownBroadcastsComeBack(php, 5);
  for (let i = 0; i < 5; i += 1) {
    const frame = await member.inbox.take((f) => f.action === 'broadcast-action', `copy ${i}`);
    assert.deepEqual(frame.data, { seq: i, body: `event ${i}` });
    assert.equal(frame.fd, php.fd);
  }
  for (const client of [php, member]) {
    client.ws.close();
    await client.closed;
    client.inbox.assertClean();
  }
});

test('sendRaw(): plain text is echoed as base-action, JSON frames are routed', async () => {
  const client = await backendClient('php-raw');
  client.sendRaw('ping');
  assert.deepEqual(
    await client.inbox.take((f) => f.action === 'base-action', 'the ping echo'),
    { action: 'base-action', data: 'ping', fd: client.fd },
  );
  client.sendRaw('{"action":"base-action","data":{"id":7,"ok":true}}');
  assert.deepEqual(
    await client.inbox.take((f) => f.action === 'base-action', 'the JSON echo'),
    { action: 'base-action', data: { id: 7, ok: true }, fd: client.fd },
  );
  client.sendRaw('{"action":"broadcast-action","data":"raw broadcast"}');
  assert.deepEqual(
    await client.inbox.take((f) => f.action === 'broadcast-action', 'the raw broadcast'),
    { action: 'broadcast-action', data: 'raw broadcast', fd: client.fd },
  );
  client.ws.close();
  await client.closed;
  client.inbox.assertClean();
});
