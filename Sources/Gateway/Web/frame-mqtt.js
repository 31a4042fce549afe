// A small MQTT 3.1.1 client over WebSockets (subprotocol "mqtt"), the browser frame's link to
// the broker: the same per-frame identity, authorisation, persistent session and last will as
// the Linux agent's libmosquitto client.
//
//   CONNECT      username, password, client id, clean session (false for a frame: subscriptions
//                and QoS 1 messages sent while it was away wait for it), a last will, keep-alive
//   SUBSCRIBE    QoS 0 or 1 per filter; the SUBACK's codes (0x80: refused) answer the promise
//   UNSUBSCRIBE
//   PUBLISH      out: QoS 0 (sent) or 1 (the promise answers on PUBACK; unacknowledged ones are
//                sent again, DUP set, when the broker kept the session); in: QoS 0, 1 (PUBACK)
//                and 2 (PUBREC / PUBREL / PUBCOMP, delivered once)
//   PINGREQ      when nothing was sent for `keepAlive` seconds; no answer within `keepAlive`
//                more and the connection is dropped (the broker publishes the will after 1.5×)
//   reconnect    by itself, after base × 2^n seconds (capped, ±50 % jitter), until stop()
//
// Events (an EventTarget): 'connect' {sessionPresent}, 'close' {reason}, 'message' {topic,
// payload: Uint8Array, qos, retain}, 'refused' {code, reason} (CONNACK 1…5: bad credentials or
// not authorised — it keeps retrying; the caller decides whether the frame still exists).

const CONNECT = 1, CONNACK = 2, PUBLISH = 3, PUBACK = 4, PUBREC = 5, PUBREL = 6, PUBCOMP = 7;
const SUBSCRIBE = 8, SUBACK = 9, UNSUBSCRIBE = 10, UNSUBACK = 11, PINGREQ = 12, PINGRESP = 13, DISCONNECT = 14;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export const CONNACK_REASONS = {
  1: 'unacceptable protocol version',
  2: 'client identifier rejected',
  3: 'server unavailable',
  4: 'bad user name or password',
  5: 'not authorised',
};

/** An MQTT failure: `code` is 'closed', 'timeout', 'refused', 'protocol' or 'stopped'. */
export class MQTTError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'MQTTError';
    this.code = code;
  }
}

// --- Encoding (pure; exported for tests in the browser) ---

const bytes = (value) => (value instanceof Uint8Array ? value : encoder.encode(String(value ?? '')));

/** MQTT's Remaining Length: 1 to 4 bytes, 7 bits each. */
export function encodeLength(length) {
  if (length < 0 || length > 268_435_455) throw new MQTTError('protocol', `a packet of ${length} bytes cannot be sent`);
  const out = [];
  do {
    let digit = length % 128;
    length = Math.floor(length / 128);
    if (length > 0) digit |= 0x80;
    out.push(digit);
  } while (length > 0);
  return out;
}

/** A UTF-8 string or bytes with its two-byte length. */
function field(value) {
  const b = bytes(value);
  if (b.length > 65_535) throw new MQTTError('protocol', 'a string field longer than 65535 bytes');
  return [b.length >> 8, b.length & 0xff, ...b];
}

function packet(type, flags, body) {
  return new Uint8Array([(type << 4) | flags, ...encodeLength(body.length), ...body]);
}

export function connectPacket({ clientId, username, password, keepAlive, cleanSession, will }) {
  let flags = cleanSession ? 0x02 : 0;
  if (will) flags |= 0x04 | ((will.qos ?? 0) << 3) | (will.retain ? 0x20 : 0);
  if (username !== undefined && username !== null) flags |= 0x80;
  if (password !== undefined && password !== null) flags |= 0x40;
  const body = [...field('MQTT'), 4, flags, keepAlive >> 8, keepAlive & 0xff, ...field(clientId)];
  if (will) body.push(...field(will.topic), ...field(will.payload));
  if (flags & 0x80) body.push(...field(username));
  if (flags & 0x40) body.push(...field(password));
  return packet(CONNECT, 0, body);
}

export function publishPacket(topic, payload, { qos = 0, retain = false, dup = false, id = 0 } = {}) {
  const body = [...field(topic)];
  if (qos > 0) body.push(id >> 8, id & 0xff);
  body.push(...bytes(payload));
  return packet(PUBLISH, (dup ? 0x08 : 0) | (qos << 1) | (retain ? 0x01 : 0), body);
}

function idPacket(type, flags, id) {
  return packet(type, flags, [id >> 8, id & 0xff]);
}

export function subscribePacket(id, filters) {
  const body = [id >> 8, id & 0xff];
  for (const [topic, qos] of filters) body.push(...field(topic), qos);
  return packet(SUBSCRIBE, 0x02, body);
}

export function unsubscribePacket(id, topics) {
  const body = [id >> 8, id & 0xff];
  for (const topic of topics) body.push(...field(topic));
  return packet(UNSUBSCRIBE, 0x02, body);
}

/**
 * Splits the front of `buffer` into whole packets: {packets: [{type, flags, body}], rest}. A
 * packet cut short stays in `rest` until more bytes come.
 */
export function parsePackets(buffer) {
  const packets = [];
  let offset = 0;
  while (buffer.length - offset >= 2) {
    let length = 0, multiplier = 1, index = offset + 1, complete = false;
    for (let i = 0; i < 4 && index < buffer.length; i++) {
      const digit = buffer[index++];
      length += (digit & 0x7f) * multiplier;
      multiplier *= 128;
      if ((digit & 0x80) === 0) { complete = true; break; }
      if (i === 3) throw new MQTTError('protocol', 'a Remaining Length longer than 4 bytes');
    }
    if (!complete || buffer.length - index < length) break;
    packets.push({ type: buffer[offset] >> 4, flags: buffer[offset] & 0x0f, body: buffer.subarray(index, index + length) });
    offset = index + length;
  }
  return { packets, rest: buffer.subarray(offset) };
}

/** The fields of an incoming PUBLISH body. */
export function parsePublish(flags, body) {
  const qos = (flags >> 1) & 0x03;
  if (body.length < 2) throw new MQTTError('protocol', 'a PUBLISH without a topic');
  const topicLength = (body[0] << 8) | body[1];
  let offset = 2 + topicLength;
  if (body.length < offset + (qos > 0 ? 2 : 0)) throw new MQTTError('protocol', 'a PUBLISH cut short');
  const topic = decoder.decode(body.subarray(2, offset));
  let id = 0;
  if (qos > 0) {
    id = (body[offset] << 8) | body[offset + 1];
    offset += 2;
  }
  return { topic, qos, retain: (flags & 0x01) === 1, dup: (flags & 0x08) !== 0, id, payload: body.slice(offset) };
}

// --- The client ---

export class MQTTClient extends EventTarget {
  /**
   * url: ws:// or wss://; clientId, username, password; keepAlive seconds (default 15, the
   * agent's); cleanSession (default false); will {topic, payload, qos, retain}; reconnect
   * {base, max} in milliseconds (default 500 and 30000, the agent's back-off).
   */
  constructor({ url, clientId, username, password, keepAlive = 15, cleanSession = false, will = null,
    reconnect = { base: 500, max: 30_000 } }) {
    super();
    Object.assign(this, { url, clientId, username, password, keepAlive, cleanSession, will, reconnect });
    this.socket = null;
    this.buffer = new Uint8Array(0);
    this.isConnected = false;
    this.running = false;
    this.attempt = 0;
    this.nextId = 1;
    this.inflight = new Map(); // packet id → {packet, resolve, reject, kind}
    this.received = new Set(); // QoS 2 ids delivered, awaiting PUBREL
    this.timers = { retry: 0, ping: 0, connect: 0 };
    this.lastSent = 0;
    this.pingSent = 0;
  }

  get connected() { return this.isConnected; }

  /** Connects, and keeps connecting (with back-off) until stop(). */
  start() {
    if (this.running) return;
    this.running = true;
    this.open();
  }

  /** Connects again now (the network came back): no waiting for the back-off. */
  retryNow() {
    if (!this.running || this.socket) return;
    clearTimeout(this.timers.retry);
    this.open();
  }

  /** DISCONNECT (the broker does not publish the will) and close; no reconnect after it. */
  stop() {
    this.running = false;
    clearTimeout(this.timers.retry);
    if (this.socket && this.isConnected) {
      try { this.socket.send(packet(DISCONNECT, 0, [])); } catch { /* closing anyway */ }
    }
    this.drop('stopped', new MQTTError('stopped', 'the client was stopped'));
  }

  subscribe(filters) {
    return this.request('subscribe', (id) => subscribePacket(id, filters));
  }

  unsubscribe(topics) {
    return this.request('unsubscribe', (id) => unsubscribePacket(id, topics));
  }

  /** QoS 0: answers once sent. QoS 1: once the broker acknowledged it (PUBACK). */
  publish(topic, payload, { qos = 0, retain = false } = {}) {
    if (!this.isConnected) return Promise.reject(new MQTTError('closed', 'not connected to the broker'));
    if (qos === 0) {
      this.send(publishPacket(topic, payload, { retain }));
      return Promise.resolve();
    }
    return this.request('publish', (id) => publishPacket(topic, payload, { qos: 1, retain, id }), { topic, payload, retain });
  }

  // --- Internals ---

  request(kind, build, publish = null) {
    if (!this.isConnected) return Promise.reject(new MQTTError('closed', 'not connected to the broker'));
    const id = this.allocateId();
    const bytesOut = build(id);
    return new Promise((resolve, reject) => {
      this.inflight.set(id, { kind, packet: bytesOut, publish, resolve, reject });
      this.send(bytesOut);
    });
  }

  allocateId() {
    for (let i = 0; i < 65_535; i++) {
      const id = this.nextId;
      this.nextId = this.nextId === 65_535 ? 1 : this.nextId + 1;
      if (!this.inflight.has(id)) return id;
    }
    throw new MQTTError('protocol', 'no free packet id: 65535 requests in flight');
  }

  send(data) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) throw new MQTTError('closed', 'not connected to the broker');
    this.socket.send(data);
    this.lastSent = Date.now();
  }

  open() {
    let socket;
    try {
      socket = new WebSocket(this.url, ['mqtt']);
    } catch (err) {
      this.scheduleRetry(`cannot open ${this.url}: ${err.message}`);
      return;
    }
    socket.binaryType = 'arraybuffer';
    this.socket = socket;
    this.buffer = new Uint8Array(0);
    // No CONNACK in time (the socket hangs, or never reports its failure): dropped, tried again.
    clearTimeout(this.timers.connect);
    this.timers.connect = setTimeout(() => {
      if (this.socket === socket) this.drop('no answer from the broker');
    }, Math.max(10_000, this.keepAlive * 1000));
    socket.onopen = () => {
      this.send(connectPacket({
        clientId: this.clientId, username: this.username, password: this.password, keepAlive: this.keepAlive,
        cleanSession: this.cleanSession,
        will: this.will && { ...this.will, payload: bytes(this.will.payload) },
      }));
    };
    socket.onmessage = (event) => {
      try {
        this.receive(new Uint8Array(event.data));
      } catch (err) {
        this.drop(`protocol error: ${err.message}`);
      }
    };
    // A socket that could not open: some browsers report only the error.
    socket.onerror = () => {
      if (this.socket === socket && socket.readyState !== WebSocket.OPEN) this.drop(`cannot connect to ${this.url}`);
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.drop(event.reason || `connection closed (${event.code})`);
    };
  }

  receive(chunk) {
    const joined = new Uint8Array(this.buffer.length + chunk.length);
    joined.set(this.buffer);
    joined.set(chunk, this.buffer.length);
    const { packets, rest } = parsePackets(joined);
    this.buffer = rest.slice();
    for (const p of packets) this.handle(p);
  }

  handle({ type, flags, body }) {
    this.pingSent = 0; // any packet shows the broker is there
    switch (type) {
      case CONNACK: {
        clearTimeout(this.timers.connect);
        const sessionPresent = (body[0] & 0x01) === 1;
        const code = body[1];
        if (code !== 0) {
          this.dispatchEvent(new CustomEvent('refused', { detail: { code, reason: CONNACK_REASONS[code] ?? `code ${code}` } }));
          this.drop(`the broker refused the connection: ${CONNACK_REASONS[code] ?? `code ${code}`}`);
          return;
        }
        this.isConnected = true;
        this.attempt = 0;
        this.resumeInflight(sessionPresent);
        this.startPing();
        this.dispatchEvent(new CustomEvent('connect', { detail: { sessionPresent } }));
        break;
      }
      case PUBLISH: {
        const message = parsePublish(flags, body);
        if (message.qos === 2) {
          const first = !this.received.has(message.id);
          this.received.add(message.id);
          this.send(idPacket(PUBREC, 0, message.id));
          if (first) this.deliver(message);
        } else {
          this.deliver(message);
          if (message.qos === 1) this.send(idPacket(PUBACK, 0, message.id));
        }
        break;
      }
      case PUBREL: {
        const id = (body[0] << 8) | body[1];
        this.received.delete(id);
        this.send(idPacket(PUBCOMP, 0, id));
        break;
      }
      case PUBACK:
      case SUBACK:
      case UNSUBACK: {
        const id = (body[0] << 8) | body[1];
        const waiting = this.inflight.get(id);
        if (!waiting) break;
        this.inflight.delete(id);
        if (type === SUBACK) waiting.resolve([...body.subarray(2)].map((code) => (code === 0x80 ? null : code)));
        else waiting.resolve();
        break;
      }
      case PUBREC: {
        // Only for QoS 2 publishes, which this client does not send: release it all the same.
        const id = (body[0] << 8) | body[1];
        this.send(idPacket(PUBREL, 0x02, id));
        break;
      }
      case PUBCOMP:
      case PINGRESP:
        break;
      default:
        throw new MQTTError('protocol', `unexpected packet type ${type}`);
    }
  }

  deliver(message) {
    this.dispatchEvent(new CustomEvent('message', { detail: message }));
  }

  /** After a CONNACK: unacknowledged publishes again (DUP) when the session was kept, else failed. */
  resumeInflight(sessionPresent) {
    for (const [id, waiting] of this.inflight) {
      if (sessionPresent && waiting.kind === 'publish') {
        const { topic, payload, retain } = waiting.publish;
        waiting.packet = publishPacket(topic, payload, { qos: 1, retain, dup: true, id });
        this.send(waiting.packet);
      } else {
        this.inflight.delete(id);
        waiting.reject(new MQTTError('closed', 'the connection was lost before the broker answered'));
      }
    }
  }

  startPing() {
    clearInterval(this.timers.ping);
    this.lastSent = Date.now();
    this.pingSent = 0;
    const period = this.keepAlive * 1000;
    this.timers.ping = setInterval(() => {
      const now = Date.now();
      if (this.pingSent && now - this.pingSent > period) {
        this.drop('no answer from the broker within the keep-alive');
        return;
      }
      if (!this.pingSent && now - this.lastSent >= period * 0.75) {
        try {
          this.send(packet(PINGREQ, 0, []));
          this.pingSent = now;
        } catch { /* onclose follows */ }
      }
    }, Math.max(1000, period / 4));
  }

  /** Closes the socket (if any), fails what waits on it (publishes wait for the next session). */
  drop(reason, error = new MQTTError('closed', reason)) {
    const wasConnected = this.isConnected;
    this.isConnected = false;
    clearInterval(this.timers.ping);
    clearTimeout(this.timers.connect);
    const socket = this.socket;
    this.socket = null;
    if (socket) {
      socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
      try { socket.close(); } catch { /* already closed */ }
    }
    for (const [id, waiting] of this.inflight) {
      if (waiting.kind === 'publish' && this.running) continue; // sent again if the session is kept
      this.inflight.delete(id);
      waiting.reject(error);
    }
    this.received.clear();
    if (wasConnected || socket) this.dispatchEvent(new CustomEvent('close', { detail: { reason } }));
    if (this.running) this.scheduleRetry(reason);
  }

  scheduleRetry() {
    clearTimeout(this.timers.retry);
    this.attempt += 1;
    const nominal = Math.min(this.reconnect.base * 2 ** Math.min(this.attempt - 1, 20), this.reconnect.max);
    const delay = nominal * (0.5 + Math.random());
    this.timers.retry = setTimeout(() => {
      if (this.running && !this.socket) this.open();
    }, delay);
  }
}
