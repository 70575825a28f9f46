// Node.js clients that behave on the wire like the existing Conveyor clients
// (PROTOCOL.md, appendix A), built on the `ws` package.
//
// BrowserLikeClient reproduces the browser client (socket-conveyor-client 1.2.x):
// the URL form, the frames it sends the moment the socket opens, its binary
// heartbeat and the JSON.parse it runs on every frame. Inbox is the strict
// part: a binary frame, a frame that JSON.parse rejects, or a JSON value that
// is not an object with a string `action` is recorded as an error and fails
// every later wait.

import { randomUUID } from 'node:crypto';

import WebSocket from 'ws';

export const HOST = process.env.CONVEYOR_TEST_HOST ?? '127.0.0.1';
export const PORT = process.env.CONVEYOR_TEST_PORT;
// Empty or unset: the server runs open (no token).
export const TOKEN = process.env.CONVEYOR_TEST_TOKEN || null;

if (!PORT) {
  throw new Error('CONVEYOR_TEST_PORT must name the port of a running conveyor-asgi server');
}

// Every socket the tests open, so that a failed test cannot leave one open
// (an open socket or a heartbeat timer would keep Node running).
const sockets = new Set();

/** A `ws` WebSocket to `url` (offering `protocols`, if any), tracked for {@link closeAll}. */
export function openSocket(url, protocols = undefined) {
  const ws = new WebSocket(url, protocols);
  sockets.add(ws);
  ws.on('close', () => sockets.delete(ws));
  ws.on('error', () => {}); // seen by the tests through `opened`/`closed`
  return ws;
}

/** Cuts every socket still open; for `afterEach`. */
export function closeAll() {
  for (const ws of sockets) {
    ws.terminate();
  }
  sockets.clear();
}

/** The heartbeat the browser client sends: a binary frame of two bytes. */
export const HEARTBEAT = Buffer.from([0x89, 0x00]);

/** The URL exactly as the browser client builds it: no slash before the query. */
export function clientUrl({ token = TOKEN, query = null } = {}) {
  let url = `ws://${HOST}:${PORT}`;
  if (token) {
    url += `?token=${token}`;
  }
  if (query) {
    url += (token ? '&' : '?') + query;
  }
  return url;
}

/** Every frame one socket receives, parsed with JSON.parse, with waits on them. */
export class Inbox {
  constructor(ws, label) {
    this.label = label;
    this.frames = []; // { raw, frame }
    this.errors = [];
    this.taken = new Set();
    this.waiters = new Set();
    ws.on('message', (data, isBinary) => this.#receive(data, isBinary));
  }

  #receive(data, isBinary) {
    if (isBinary) {
      this.errors.push(`${this.label}: binary frame from the server (${data.length} bytes)`);
    } else {
      const raw = data.toString('utf8');
      let frame;
      try {
        frame = JSON.parse(raw);
      } catch (err) {
        this.errors.push(`${this.label}: JSON.parse failed (${err.message}) on ${raw}`);
      }
      if (frame !== undefined) {
        if (frame === null || typeof frame !== 'object' || Array.isArray(frame)) {
          this.errors.push(`${this.label}: frame is not a JSON object: ${raw}`);
        } else if (typeof frame.action !== 'string') {
          this.errors.push(`${this.label}: frame has no string action: ${raw}`);
        } else {
          this.frames.push({ raw, frame });
        }
      }
    }
    for (const wake of this.waiters) {
      wake();
    }
  }

  /** Fails when any frame so far broke JSON.parse or the envelope shape. */
  assertClean() {
    if (this.errors.length > 0) {
      throw new Error(this.errors.join('\n'));
    }
  }

  /** Actions of every frame received so far, in order. */
  actions() {
    return this.frames.map(({ frame }) => frame.action);
  }

  /**
   * The first frame not taken yet for which `predicate(frame, raw)` is true;
   * waits for it up to `timeoutMs`. The frame is taken: later waits skip it.
   */
  take(predicate, what, timeoutMs = 5000) {
    return new Promise((resolve, reject) => {
      let timer = null;
      const check = () => {
        if (this.errors.length > 0) {
          finish();
          reject(new Error(this.errors.join('\n')));
          return;
        }
        for (let i = 0; i < this.frames.length; i += 1) {
          const { raw, frame } = this.frames[i];
          if (!this.taken.has(i) && predicate(frame, raw)) {
            this.taken.add(i);
            finish();
            resolve(frame);
            return;
          }
        }
      };
      const finish = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      timer = setTimeout(() => {
        finish();
        const seen = this.frames.map(({ raw }) => raw).join('\n  ');
        reject(new Error(`${this.label}: no ${what} within ${timeoutMs} ms; received:\n  ${seen}`));
      }, timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  /** The next presence update (`channel-connect` or `channel-disconnect`) matching `test`. */
  async presence(action, test, what, timeoutMs = 5000) {
    const frame = await this.take(
      (f) => f.action === action && typeof f.data === 'string' && test(JSON.parse(f.data)),
      what,
      timeoutMs,
    );
    return JSON.parse(frame.data);
  }
}

/** Resolves once `ws` is open; rejects on an error or a close before that. */
export function opened(ws) {
  return new Promise((resolve, reject) => {
    if (ws.readyState === WebSocket.OPEN) {
      resolve();
      return;
    }
    ws.once('open', resolve);
    ws.once('error', reject);
    ws.once('close', (code) => reject(new Error(`closed with ${code} before opening`)));
  });
}

/** Resolves with the close code once `ws` is closed. */
export function closed(ws) {
  return new Promise((resolve) => {
    if (ws.readyState === WebSocket.CLOSED) {
      resolve(null);
      return;
    }
    ws.once('close', (code) => resolve(code));
  });
}

/** The `fd` the server announced in `connection-info` (its `data` is a JSON string). */
export async function connectionId(inbox) {
  const info = await inbox.take((f) => f.action === 'connection-info', 'connection-info');
  if (typeof info.data !== 'string') {
    throw new Error(`connection-info data is not a string: ${JSON.stringify(info)}`);
  }
  const data = JSON.parse(info.data);
  if (data.event !== 'connection-info' || !Number.isInteger(data.fd) || data.fd <= 0) {
    throw new Error(`bad connection-info: ${info.data}`);
  }
  return data.fd;
}

/** The browser client's wire behaviour (socket-conveyor-client 1.2.x). */
export class BrowserLikeClient {
  constructor({ token = TOKEN, channel = null, userId = null, query = null, heartbeatMs = 10000,
    acknowledge = false, label = 'browser' } = {}) {
    this.acknowledge = acknowledge;
    this.token = token;
    this.channel = channel;
    this.userId = userId;
    this.heartbeatsSent = 0;
    this.ws = openSocket(clientUrl({ token, query }));
    this.inbox = new Inbox(this.ws, label);
    this.closed = closed(this.ws);
    this.ws.on('open', () => this.#onOpen(heartbeatMs));
    this.ws.on('close', () => clearInterval(this.heartbeat));
    this.opened = opened(this.ws);
  }

  #onOpen(heartbeatMs) {
    // The moment the socket opens, without waiting for any reply.
    if (this.userId !== null) {
      this.ws.send(JSON.stringify({ action: 'assoc-user-to-fd-action', userId: this.userId }));
    }
    if (this.channel !== null) {
      this.ws.send(
        JSON.stringify({ action: 'channel-connect', channel: this.channel, auth: this.token }),
      );
    }
    this.heartbeat = setInterval(() => {
      if (this.ws.readyState === WebSocket.OPEN) {
        this.ws.send(HEARTBEAT, { binary: true });
        this.heartbeatsSent += 1;
      }
    }, heartbeatMs);
  }

  /** `send(message, action)` of the client: `{action, data}`, plus a UUID `id` with acknowledge on. */
  send(message, action = 'base-action') {
    const frame = { action, data: message };
    if (this.acknowledge) {
      frame.id = randomUUID();
    }
    this.ws.send(JSON.stringify(frame));
    return frame.id;
  }

  async close() {
    clearInterval(this.heartbeat);
    this.ws.close();
    return this.closed;
  }
}

/** Waits (polling) until `condition()` is true, up to `timeoutMs`. */
export async function until(condition, what, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A channel name no other test uses. */
export function uniqueChannel(prefix) {
  return `${prefix}-${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
}
