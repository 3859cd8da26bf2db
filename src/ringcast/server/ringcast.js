/*
 * ringcast.js: a dependency-free client for ringcast's `ringcast.v1` protocol
 * (docs/history.md), for browsers and Node >= 22 (which has a global WebSocket).
 *
 * Browser: <script src="/ringcast.js"></script> defines globalThis.RingcastClient.
 * Node:    const RingcastClient = require("./ringcast.js");  // also .RingcastClient
 *
 *   const client = new RingcastClient("ws://localhost:8080/", {
 *     token,            // optional, sent as the ?token= query parameter
 *     minDelay: 250,    // reconnect delay (ms): random in [0, min(maxDelay, minDelay * 2**attempt)]
 *     maxDelay: 10000,
 *     onState(state, info) {},  // "connecting", "open", "closed" {code, reason}, or
 *                               // "refused" {code, reason}: closed with 1008, no reconnect
 *     WebSocket,        // optional: the WebSocket class (default globalThis.WebSocket)
 *   });
 *
 *   const sub = client.subscribe("news", (data, meta) => {}, {
 *     since,            // optional {epoch, offset}: resume after that position
 *     onResync(info) {},  // {channel, epoch, offset}: what was missed cannot be replayed
 *                         // (say the server restarted; or a message came in a new epoch):
 *                         // refetch state, messages after {epoch, offset} follow
 *     onError(info) {},   // {code, reason}: the subscribe was refused (forbidden, ...);
 *                         // the subscription is dropped (default: console.warn). But
 *                         // "unavailable" (what orders the channel is restarting: a
 *                         // worker, or Redis) is retried, with backoff and jitter
 *   });
 *   // data: a string, or a Uint8Array for a binary message;
 *   // meta: {channel, epoch, offset, binary} (epoch/offset null without history;
 *   // epoch always given: the wire names it only at offset 1, see messagePosition)
 *   sub.position        // {epoch, offset} last handled (or subscribed at), or null
 *   sub.unsubscribe()
 *
 *   await client.publish("news", "text" or a Uint8Array/ArrayBuffer);
 *   // resolves with {epoch, offset} (or {} on a channel without history); rejects
 *   // with an Error having .code and .reason: an error reply's code ("forbidden", ...),
 *   // "disconnected" (not connected, or lost before the reply) or "closed" (close()d)
 *
 *   client.state        // the last state onState was told ("connecting" at first)
 *   client.close()      // for good: no reconnect
 *   client._drop()      // test hook: drop the current connection as a network failure
 *                       // would (the client reconnects and resumes)
 *
 * The client reconnects on its own and subscribes every channel again with `since` set
 * to the last position handled; messages at or below it (same epoch) are dropped, so a
 * resume within the server's history shows neither a gap nor a duplicate. One
 * subscription per channel; commands are only sent while connected (subscriptions
 * made meanwhile go out on the next connection).
 */
(function () {
  "use strict";

  const PROTOCOL = "ringcast.v1";
  const REFUSED = 1008; // how the server turns a ringcast.v1 client away (bad token, ...)
  const DROPPED = 4000; // the close code of the test hook _drop()

  // `?token=` appended as is: re-serialising the query (URLSearchParams) could alter
  // what the caller wrote there. A fragment, if any, stays last.
  function withToken(url, token) {
    if (token === undefined || token === null || token === "") return url;
    const hash = url.indexOf("#");
    const fragment = hash < 0 ? "" : url.slice(hash);
    const base = hash < 0 ? url : url.slice(0, hash);
    const sep = base.indexOf("?") < 0 ? "?" : /[?&]$/.test(base) ? "" : "&";
    return base + sep + "token=" + encodeURIComponent(token) + fragment;
  }

  function positionOf(obj) {
    return typeof obj.epoch === "string" && Number.isInteger(obj.offset)
      ? { epoch: obj.epoch, offset: obj.offset } : null;
  }

  // A message names its epoch only at offset 1, where an epoch begins; any other is in
  // the epoch its subscription is in: its `subscribed` reply's, or its last message's
  // (`last`, the subscription's position). Null without an offset (no history).
  function messagePosition(msg, last) {
    if (!Number.isInteger(msg.offset)) return null;
    const epoch = typeof msg.epoch === "string" ? msg.epoch : last ? last.epoch : null;
    return epoch === null ? null : { epoch, offset: msg.offset };
  }

  function toBase64(bytes) {
    let text = "";
    for (let i = 0; i < bytes.length; i += 0x8000) { // chunks: apply() has an argument limit
      text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(text);
  }

  function fromBase64(text) {
    const binary = atob(text);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

  function commandError(code, reason) {
    const error = new Error(reason ? code + ": " + reason : code);
    error.code = code;
    error.reason = reason || "";
    return error;
  }

  function report(error) {
    if (typeof reportError === "function") reportError(error); // the page's error handlers
    else console.error(error);
  }

  // A throwing callback must not break the client's bookkeeping: report it and go on.
  function call(fn, ...args) {
    try {
      fn(...args);
    } catch (error) {
      report(error);
    }
  }

  class Subscription {
    constructor(client, channel, onMessage, options) {
      const since = options.since;
      this.channel = channel;
      this.position = since ? { epoch: String(since.epoch), offset: Number(since.offset) } : null;
      this._client = client;
      this._onMessage = onMessage;
      this._onResync = options.onResync;
      this._onError = options.onError;
    }

    unsubscribe() {
      this._client._unsubscribe(this);
    }
  }

  class RingcastClient {
    constructor(url, options = {}) {
      this.url = withToken(url, options.token);
      this.minDelay = options.minDelay ?? 250;
      this.maxDelay = options.maxDelay ?? 10000;
      this.state = "connecting";
      this._onState = options.onState;
      this._WebSocket = options.WebSocket || globalThis.WebSocket;
      if (typeof this._WebSocket !== "function") {
        throw new Error("ringcast: no WebSocket here; pass options.WebSocket");
      }
      this._subs = new Map();    // channel -> Subscription: what each connection subscribes
      this._pending = new Map(); // command id -> {type, sub, since, initial, resolve, reject}
      this._nextId = 0;
      this._ws = null;           // the current socket; events of any other one are ignored
      this._open = false;
      this._attempt = 0;         // failed connections since the last good one (backoff)
      this._initialLeft = 0;     // re-subscribes of this connection still unanswered
      this._timer = null;
      this._stopped = false;
      // Connect after the caller's code has run: its onState may use the variable the
      // client is being assigned to, and its subscribe() calls go out on the first open.
      queueMicrotask(() => { if (!this._stopped && !this._ws) this._connect(); });
    }

    subscribe(channel, onMessage, options = {}) {
      if (typeof channel !== "string") throw new TypeError("ringcast: channel must be a string");
      if (typeof onMessage !== "function") throw new TypeError("ringcast: onMessage must be a function");
      if (this._subs.has(channel)) throw new Error("ringcast: already subscribed to " + channel);
      const sub = new Subscription(this, channel, onMessage, options);
      this._subs.set(channel, sub);
      if (this._open) this._sendSubscribe(sub, false);
      return sub;
    }

    publish(channel, data) {
      const frame = { type: "publish", id: 0, channel };
      if (typeof data === "string") frame.data = data;
      else if (data instanceof ArrayBuffer) frame.base64 = toBase64(new Uint8Array(data));
      else if (ArrayBuffer.isView(data)) {
        frame.base64 = toBase64(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      } else {
        return Promise.reject(new TypeError("ringcast: publish takes a string, Uint8Array or ArrayBuffer"));
      }
      // Not queued while disconnected: a publish held for seconds would surprise more
      // than an immediate failure the caller can retry.
      if (!this._open) {
        return Promise.reject(this._stopped ? commandError("closed", "the client is closed")
          : commandError("disconnected", "not connected"));
      }
      return new Promise((resolve, reject) => {
        frame.id = ++this._nextId;
        this._pending.set(frame.id, { type: "publish", resolve, reject });
        this._send(frame);
      });
    }

    close() {
      if (this._stopped) return;
      this._stopped = true;
      clearTimeout(this._timer);
      this._timer = null;
      const ws = this._ws;
      if (ws) {
        this._ws = null;
        this._open = false;
        try { ws.close(1000, "closed by the client"); } catch (_) { /* closed already */ }
        this._failPending("closed", "the client is closed");
      }
      // Between connections "closed" was said already, when the last one was lost.
      if (this.state !== "closed") this._setState("closed", { code: 1000, reason: "closed by the client" });
    }

    // Test hook: lose the connection without stopping the client. The socket is closed
    // and forgotten at once, so nothing it still delivers is handled; the client then
    // behaves as after any lost connection: it reconnects and resumes.
    _drop() {
      const ws = this._ws;
      if (!ws) return;
      this._ws = null;
      try { ws.close(DROPPED, "dropped"); } catch (_) { /* closed already */ }
      this._lost(DROPPED, "dropped");
    }

    // -- internals ------------------------------------------------------------------

    _setState(state, info) {
      this.state = state;
      if (this._onState) call(this._onState, state, info);
    }

    // The reconnect delay: "full jitter" (random in [0, cap]) spreads out clients that
    // lost their server at the same moment, so they do not all come back at once.
    _nextDelay() {
      // (The exponent stops at 30: 2**1100 is Infinity, and 0 * Infinity is NaN.)
      const cap = Math.min(this.maxDelay, this.minDelay * 2 ** Math.min(this._attempt, 30));
      this._attempt++;
      return Math.random() * cap;
    }

    _connect() {
      this._timer = null;
      this._setState("connecting");
      if (this._stopped) return; // onState called close()
      let ws;
      try {
        ws = new this._WebSocket(this.url, [PROTOCOL]);
      } catch (error) { // a malformed URL, say: reported, then retried like a failure
        report(error);
        this._lost(1006, String(error && error.message));
        return;
      }
      this._ws = ws;
      ws.onopen = () => { if (ws === this._ws) this._opened(ws); };
      ws.onmessage = (event) => { if (ws === this._ws) this._received(event.data); };
      ws.onclose = (event) => { if (ws === this._ws) this._lost(event.code, event.reason); };
      // An error event is always followed by a close event, handled above.
    }

    _opened(ws) {
      if (ws.protocol !== PROTOCOL) {
        // Browsers fail such a handshake already; this covers other WebSocket classes.
        this._ws = null;
        try { ws.close(1000); } catch (_) { /* closed already */ }
        this._lost(1002, "the server did not select " + PROTOCOL);
        return;
      }
      this._open = true;
      // Re-subscribe before the caller hears "open", so anything it sends then comes after.
      this._initialLeft = 0;
      for (const sub of this._subs.values()) this._sendSubscribe(sub, true);
      if (this._initialLeft === 0) this._attempt = 0;
      this._setState("open");
    }

    _lost(code, reason) {
      this._ws = null;
      this._open = false;
      const why = "connection closed (" + code + (reason ? ": " + reason : "") + ")";
      this._failPending("disconnected", why);
      if (code === REFUSED) {
        // A refusal (bad or expired token, forbidden path) would only be repeated.
        this._stopped = true;
        this._setState("refused", { code, reason });
        return;
      }
      this._setState("closed", { code, reason });
      if (!this._stopped) this._timer = setTimeout(() => this._connect(), this._nextDelay());
    }

    _failPending(code, reason) {
      const pending = this._pending;
      this._pending = new Map();
      this._initialLeft = 0;
      // Subscribes need nothing: every subscription goes out again on the next connection.
      for (const entry of pending.values()) {
        if (entry.type === "publish") entry.reject(commandError(code, reason));
      }
    }

    _send(frame) {
      this._ws.send(JSON.stringify(frame));
    }

    _sendSubscribe(sub, initial) {
      const since = sub.position; // the last position handled: resume after it
      const frame = { type: "subscribe", id: ++this._nextId, channel: sub.channel };
      if (since) frame.since = { epoch: since.epoch, offset: since.offset };
      this._pending.set(frame.id, { type: "subscribe", sub, since, initial });
      if (initial) this._initialLeft++;
      this._send(frame);
    }

    _unsubscribe(sub) {
      if (this._subs.get(sub.channel) !== sub) return; // gone already (or refused)
      this._subs.delete(sub.channel); // first: nothing of it is handled from now on
      if (this._open) {
        const id = ++this._nextId;
        this._pending.set(id, { type: "unsubscribe" });
        this._send({ type: "unsubscribe", id, channel: sub.channel });
      }
    }

    _received(raw) {
      if (typeof raw !== "string") return; // ringcast.v1 frames are all text
      let msg;
      try { msg = JSON.parse(raw); } catch (_) { return; }
      if (msg === null || typeof msg !== "object") return;
      if (msg.type === undefined) { // a message: the one frame without a type
        this._message(msg);
        return;
      }
      const entry = this._pending.get(msg.id);
      if (entry === undefined) { // replies carry the command's id; this one is nobody's
        if (msg.type === "error") console.warn("ringcast: " + msg.code + ": " + msg.reason);
        return;
      }
      this._pending.delete(msg.id);
      // The connection has been open and every channel answered: a good one, backoff over.
      if (entry.initial && --this._initialLeft === 0) this._attempt = 0;
      if (entry.type === "subscribe") this._subscribeReply(entry, msg);
      else if (entry.type === "publish") {
        if (msg.type === "error") entry.reject(commandError(msg.code, msg.reason));
        else entry.resolve(positionOf(msg) || {});
      }
      // unsubscribe: nothing to do (the subscription was forgotten when it was sent)
    }

    _subscribeReply(entry, msg) {
      const sub = entry.sub;
      if (this._subs.get(sub.channel) !== sub) return; // unsubscribed meanwhile
      if (msg.type === "error" && msg.code === "unavailable") {
        // Transient: subscribe again later on this connection (a reconnect meanwhile
        // subscribes it anyway), backing off as reconnects do.
        sub._retries = (sub._retries || 0) + 1;
        const cap = Math.min(this.maxDelay, this.minDelay * 2 ** Math.min(sub._retries, 30));
        const ws = this._ws;
        setTimeout(() => {
          if (this._ws === ws && this._open && this._subs.get(sub.channel) === sub) {
            this._sendSubscribe(sub, false);
          }
        }, Math.random() * cap);
        return;
      }
      if (msg.type === "error") {
        this._subs.delete(sub.channel);
        const info = { code: msg.code, reason: msg.reason };
        if (sub._onError) call(sub._onError, info);
        else console.warn("ringcast: subscribe to " + sub.channel + " refused: " + info.code +
          (info.reason ? ": " + info.reason : ""));
        return;
      }
      sub._retries = 0;
      const pos = positionOf(msg);
      if (entry.since && msg.recovered !== true) {
        // `recovered: false` (and, to be safe, no `recovered` at all): what came after
        // `since` cannot be replayed. The subscription is live from the reply's position.
        sub.position = pos;
        if (sub._onResync) {
          call(sub._onResync, { channel: sub.channel, epoch: pos ? pos.epoch : null,
            offset: pos ? pos.offset : null });
        }
      } else if (!entry.since && pos) {
        sub.position = pos; // resume from here if the connection is lost before a message
      }
      // recovered: true: the missed messages follow; the position stays at `since`.
    }

    _message(msg) {
      const sub = this._subs.get(msg.channel);
      if (!sub) return; // unsubscribed: a message sent before the server knew
      let data;
      let binary = false;
      if (typeof msg.data === "string") data = msg.data;
      else if (typeof msg.base64 === "string") {
        try { data = fromBase64(msg.base64); } catch (_) { return; }
        binary = true;
      } else return;
      const pos = messagePosition(msg, sub.position);
      if (pos) {
        // Cannot happen within one connection; it keeps an overlapping resume harmless.
        const last = sub.position;
        if (last && last.epoch === pos.epoch && pos.offset <= last.offset) return;
        sub.position = pos;
        if (last && last.epoch !== pos.epoch && last.offset > 0 && sub._onResync) {
          // The channel's history restarted (its owner worker did) while this
          // connection stayed: what was published in between is unknown. (From offset
          // 0, "" included, nothing was handled in the old epoch: nothing is missed.)
          call(sub._onResync, { channel: sub.channel, epoch: pos.epoch, offset: pos.offset - 1 });
        }
      }
      call(sub._onMessage, data, { channel: sub.channel, epoch: pos ? pos.epoch : null,
        offset: pos ? pos.offset : null, binary });
    }
  }

  RingcastClient.RingcastClient = RingcastClient; // require("./ringcast.js").RingcastClient
  globalThis.RingcastClient = RingcastClient;
  if (typeof module !== "undefined" && module.exports) module.exports = RingcastClient;
})();
