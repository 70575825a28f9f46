// The browser client with its acknowledge option on, against a server with
// acknowledgments enabled (CONVEYOR_USE_ACKNOWLEDGMENT=true).

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';

import { BrowserLikeClient, closeAll, connectionId, uniqueChannel } from './clients.mjs';

afterEach(closeAll);

const ATTEMPTS = Number(process.env.CONVEYOR_TEST_ACK_ATTEMPTS ?? '3');

test('messages with a UUID id are acknowledged; server frames carry ids', async () => {
  const channel = uniqueChannel('ack');
  const a = new BrowserLikeClient({ channel, userId: 5, acknowledge: true, label: 'a' });
  await a.opened;
  const fd = await connectionId(a.inbox);
  await a.inbox.presence('channel-connect', (p) => p.fd === fd, 'the join');

  const id = a.send('acknowledge me', 'broadcast-action');
  const ack = await a.inbox.take((f) => f.action === 'acknowledge-action', 'the acknowledgment');
  assert.deepEqual(ack, { action: 'acknowledge-action', data: id });
  const copy = await a.inbox.take((f) => f.action === 'broadcast-action', 'the broadcast');
  assert.equal(copy.data, 'acknowledge me');
  assert.equal(copy.fd, fd);
  assert.equal(typeof copy.id, 'string');

  // This client never acknowledges what it receives: the server sends the
  // same frame again, with the same id, `attempts` more times.
  for (let n = 0; n < ATTEMPTS; n += 1) {
    const again = await a.inbox.take((f) => f.action === 'broadcast-action', `re-send ${n + 1}`);
    assert.deepEqual(again, copy);
  }
  await a.close();
  a.inbox.assertClean();
});

test('a client that acknowledges gets each frame once', async () => {
  const a = new BrowserLikeClient({ acknowledge: true, label: 'acking' });
  a.ws.on('message', (data) => {
    const frame = JSON.parse(data.toString());
    if (frame.id !== undefined) {
      a.ws.send(JSON.stringify({ action: 'acknowledge-action', data: frame.id }));
    }
  });
  await a.opened;
  await connectionId(a.inbox);
  a.send('once', 'base-action');
  const echo = await a.inbox.take((f) => f.action === 'base-action', 'the echo');
  assert.equal(echo.data, 'once');
  // Acknowledged at once: nothing comes again within several re-send
  // timeouts (the server runs with a 0.2 s timeout for this file).
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const echoes = a.inbox.frames.filter(({ frame }) => frame.action === 'base-action');
  const infos = a.inbox.frames.filter(({ frame }) => frame.action === 'connection-info');
  assert.equal(echoes.length, 1);
  assert.equal(infos.length, 1);
  await a.close();
  a.inbox.assertClean();
});
