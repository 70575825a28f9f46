// The usual hand-written example: `new WebSocket(url)` with the token in the URL,
// then channel-connect (no auth), assoc-user-to-fd-action and broadcast-action.

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';

import {
  clientUrl, closeAll, closed, connectionId, Inbox, opened, openSocket, uniqueChannel,
} from './clients.mjs';

afterEach(closeAll);

// Sent as JSON text so that every digit reaches the server; a JS number
// cannot hold it exactly, so the raw frames are checked for the digits.
const BIG_USER = '255172010152673280';
const STRING_USER = 'writer-9';

function handWritten(label, channel, userIdJson, greeting) {
  const ws = openSocket(clientUrl());
  const inbox = new Inbox(ws, label);
  ws.on('open', () => {
    ws.send(JSON.stringify({ action: 'channel-connect', channel }));
    ws.send(`{"action":"assoc-user-to-fd-action","userId":${userIdJson}}`);
    ws.send(JSON.stringify({ action: 'broadcast-action', data: greeting }));
  });
  return { ws, inbox, opened: opened(ws), closed: closed(ws) };
}

test('channel-connect, then the user id, then a broadcast: presence ends with both ids', async () => {
  const channel = uniqueChannel('handwritten');
  const a = handWritten('a', channel, BIG_USER, 'hi from a');
  await a.opened;
  a.fd = await connectionId(a.inbox);
  await a.inbox.take(
    (f) => f.action === 'broadcast-action' && f.data === 'hi from a', 'a own broadcast',
  );

  const b = handWritten('b', channel, JSON.stringify(STRING_USER), 'hi from b');
  await b.opened;
  b.fd = await connectionId(b.inbox);

  for (const client of [a, b]) {
    const frame = await client.inbox.take(
      (f) => f.action === 'broadcast-action' && f.data === 'hi from b', 'b broadcast',
    );
    assert.deepEqual(frame, { action: 'broadcast-action', data: 'hi from b', fd: b.fd });
  }

  // b joined before it named its user: the roster that names both comes after.
  for (const client of [a, b]) {
    let raw = null;
    await client.inbox.take((f, text) => {
      if (f.action !== 'channel-connect') {
        return false;
      }
      const p = JSON.parse(f.data);
      if (p.userIds[String(b.fd)] === STRING_USER && String(a.fd) in p.userIds) {
        raw = text;
        return true;
      }
      return false;
    }, 'presence naming both users');
    const roster = JSON.parse(JSON.parse(raw).data);
    assert.deepEqual(roster.fds, [a.fd, b.fd].sort((x, y) => x - y));
    assert.equal(roster.channel, channel);
    // Every digit of the 64-bit id, still an integer (no quotes around it).
    assert.ok(
      raw.includes(`\\"${a.fd}\\":${BIG_USER}`),
      `64-bit user id altered in ${raw}`,
    );
  }

  a.ws.close();
  await a.closed;
  const left = await b.inbox.presence('channel-disconnect', (p) => p.fd === a.fd, 'a leaving');
  assert.deepEqual(left.fds, [b.fd]);
  assert.deepEqual(left.userIds, { [b.fd]: STRING_USER });
  b.ws.close();
  await b.closed;
  a.inbox.assertClean();
  b.inbox.assertClean();
});
