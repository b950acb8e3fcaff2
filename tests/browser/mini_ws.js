/* mini_ws.js: a minimal WebSocket client (RFC 6455) over Node's `net`, enough to talk to
 * Chromium's DevTools endpoint on loopback when Node has no global WebSocket (Node < 22
 * without --experimental-websocket). Text frames only, client frames masked, continuation
 * frames reassembled, ping answered. Exposes the browser-style onopen/onmessage/onerror/
 * onclose handlers and send()/close(). */
'use strict';
const net = require('net');
const crypto = require('crypto');

class MiniWebSocket {
  constructor(url) {
    const u = new URL(url);
    this.onopen = null; this.onmessage = null; this.onerror = null; this.onclose = null;
    this.buf = Buffer.alloc(0); this.open = false; this.frags = [];
    const key = crypto.randomBytes(16).toString('base64');
    this.sock = net.connect(Number(u.port) || 80, u.hostname, () => {
      this.sock.write('GET ' + u.pathname + u.search + ' HTTP/1.1\r\nHost: ' + u.host + '\r\nUpgrade: websocket\r\n' +
        'Connection: Upgrade\r\nSec-WebSocket-Key: ' + key + '\r\nSec-WebSocket-Version: 13\r\n\r\n');
    });
    this.sock.on('data', (d) => this._data(d));
    this.sock.on('error', (e) => { if (this.onerror) this.onerror(e); });
    this.sock.on('close', () => { this.open = false; if (this.onclose) this.onclose({}); });
  }
  _data(d) {
    this.buf = Buffer.concat([this.buf, d]);
    if (!this.open) {
      const end = this.buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = this.buf.slice(0, end).toString();
      this.buf = this.buf.slice(end + 4);
      if (!/^HTTP\/1\.1 101/.test(head)) { if (this.onerror) this.onerror(new Error('handshake: ' + head.split('\r\n')[0])); this.sock.destroy(); return; }
      this.open = true;
      if (this.onopen) this.onopen({});
    }
    for (;;) {
      if (this.buf.length < 2) return;
      const b0 = this.buf[0], b1 = this.buf[1];
      let len = b1 & 0x7f, off = 2;
      if (len === 126) { if (this.buf.length < 4) return; len = this.buf.readUInt16BE(2); off = 4; }
      else if (len === 127) { if (this.buf.length < 10) return; len = Number(this.buf.readBigUInt64BE(2)); off = 10; }
      const masked = (b1 & 0x80) !== 0;
      const mask = masked ? this.buf.slice(off, off + 4) : null;
      if (masked) off += 4;
      if (this.buf.length < off + len) return;
      let payload = this.buf.slice(off, off + len);
      this.buf = this.buf.slice(off + len);
      if (mask) { payload = Buffer.from(payload); for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i & 3]; }
      const fin = (b0 & 0x80) !== 0, op = b0 & 0x0f;
      if (op === 0x8) { this.close(); return; }
      if (op === 0x9) { this._frame(0xA, payload); continue; }
      if (op === 0xA) continue;
      if (op === 0x1 || op === 0x2 || op === 0x0) {
        this.frags.push(payload);
        if (fin) {
          const msg = Buffer.concat(this.frags).toString('utf8');
          this.frags = [];
          if (this.onmessage) this.onmessage({ data: msg });
        }
      }
    }
  }
  _frame(op, payload) {
    const len = payload.length;
    let head;
    if (len < 126) { head = Buffer.alloc(2); head[1] = 0x80 | len; }
    else if (len < 65536) { head = Buffer.alloc(4); head[1] = 0x80 | 126; head.writeUInt16BE(len, 2); }
    else { head = Buffer.alloc(10); head[1] = 0x80 | 127; head.writeBigUInt64BE(BigInt(len), 2); }
    head[0] = 0x80 | op;
    const mask = crypto.randomBytes(4);
    const body = Buffer.from(payload);
    for (let i = 0; i < body.length; i++) body[i] ^= mask[i & 3];
    this.sock.write(Buffer.concat([head, mask, body]));
  }
  send(text) { this._frame(0x1, Buffer.from(String(text), 'utf8')); }
  close() { if (this.open) { try { this._frame(0x8, Buffer.alloc(0)); } catch (e) { /* gone */ } } this.open = false; this.sock.end(); }
}
module.exports = MiniWebSocket;
