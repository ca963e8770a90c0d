// One publisher and N subscribers in one room, with or without permessage-deflate, against
// Parley (raw JSON on /ws, STOMP on /stomp) or the `ws` broadcast server: bytes on the wire per
// delivery, the server's CPU per delivery (from /proc), latency, the server's memory per
// connection, and (raw) the size of a 50-message history page. Prints one JSON line.
//
//   node deflate-load.js --url ws://127.0.0.1:18080 --proto raw|stomp|broadcast --deflate 0|1 \
//     --subscribers 1000 --rate 20 --seconds 10 --pid SERVER_PID
// Every wait is bounded; the process exits by itself (code 1 on loss or a timeout).
'use strict';
const WebSocket = require('ws');
const fs = require('fs');

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? acc.concat([[a.slice(2), all[i + 1]]]) : acc), []),
);
const URL_BASE = args.url || 'ws://127.0.0.1:18080';
const PROTO = args.proto || 'raw';
const DEFLATE = args.deflate === '1';
const N = Number(args.subscribers || 1000);
const RATE = Number(args.rate || 20);
const SECONDS = Number(args.seconds || 10);
const PID = Number(args.pid || 0);
const ROOM = 'deflate';
const HZ = 100; // clock ticks per second (getconf CLK_TCK on Linux)

// Chat text of a realistic length: 100-200 characters, so the JSON is 150-300 bytes; words drawn
// from common English with a seeded generator, frequent words more often (as in real chat), so
// no message repeats another.
const WORDS = ('the I to you a and it is that of in we for on this be have with can not are ' +
  'just do at so what if will me but my was all about get like up out think know there one ' +
  'now they time good yes no our see from how did going would should could when then work ' +
  'today tomorrow meeting lunch build release fix bug review pull request test deploy green ' +
  'broken again thanks great sounds later team call notes ticket branch merge main server ' +
  'client page login error log metrics dashboard numbers week friday morning afternoon done ' +
  'almost ready waiting looks please check quick question idea plan doc update issue').split(' ');
let seed = 12345;
function random() {
  seed = (seed * 1103515245 + 12345) % 2147483648;
  return seed / 2147483648;
}
function chatText(i) {
  const len = 100 + ((i * 37) % 100);
  let out = '';
  while (out.length < len) out += WORDS[Math.floor(WORDS.length * random() * random())] + ' ';
  return out.slice(0, len);
}

function cpuTicks(pid) {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]);
}
function rssKib(pid) {
  const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

function stompFrame(command, headers, body = '') {
  return `${command}\n${Object.entries(headers).map(([k, v]) => `${k}:${v}`).join('\n')}\n\n${body}\0`;
}

function withTimeout(promise, ms, what) {
  let t;
  return Promise.race([promise, new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`timeout: ${what}`)), ms); })])
    .finally(() => clearTimeout(t));
}

// A connected client: `onBody(body)` for every chat message it gets; resolves once it is in the room.
function connect(name, onBody) {
  const path = PROTO === 'raw' ? `/ws?name=${name}` : PROTO === 'stomp' ? '/stomp' : '/';
  const opts = { perMessageDeflate: DEFLATE ? { threshold: 128 } : false };
  if (PROTO === 'stomp') opts.headers = {};
  const ws = new WebSocket(URL_BASE + path, PROTO === 'stomp' ? ['v12.stomp'] : [], opts);
  ws.on('error', () => {});
  return new Promise((resolve, reject) => {
    ws.on('open', () => {
      if (PROTO === 'raw') ws.send(JSON.stringify({ type: 'join', room: ROOM }));
      else if (PROTO === 'stomp') {
        ws.send(stompFrame('CONNECT', { 'accept-version': '1.2', host: 'parley', login: name }));
      } else resolve(ws);
    });
    ws.on('message', (data) => {
      const text = data.toString();
      if (PROTO === 'raw') {
        const m = JSON.parse(text);
        if (m.type === 'joined') resolve(ws);
        else if (m.type === 'message') onBody(m.body);
        else if (m.type === 'history' && ws.onHistory) ws.onHistory(text);
        else if (m.type === 'error') reject(new Error(text));
      } else if (PROTO === 'stomp') {
        for (const frame of text.split('\0')) {
          if (frame.startsWith('CONNECTED')) {
            ws.send(stompFrame('SUBSCRIBE', { id: 's1', destination: `/topic/${ROOM}`, receipt: 'r1' }));
          } else if (frame.startsWith('RECEIPT')) resolve(ws);
          else if (frame.startsWith('MESSAGE')) onBody(frame.slice(frame.indexOf('\n\n') + 2));
          else if (frame.startsWith('ERROR')) reject(new Error(frame));
        }
      } else onBody(JSON.parse(text).body);
    });
    ws.on('close', () => reject(new Error(`${name} closed`)));
  });
}

// Send times travel in the body as microseconds since this client started, in base 36 (a few
// characters, as short as a real message's own fields): a 19-digit nanosecond stamp would be a
// tenth of every body and, being random to deflate, would skew what compression achieves.
const START = process.hrtime.bigint();
function nowUs() {
  return Number((process.hrtime.bigint() - START) / 1000n);
}

function publish(ws, i) {
  const body = `${nowUs().toString(36)} ${chatText(i)}`;
  if (PROTO === 'raw') ws.send(JSON.stringify({ type: 'send', room: ROOM, body }));
  else if (PROTO === 'stomp') ws.send(stompFrame('SEND', { destination: `/topic/${ROOM}`, 'content-type': 'text/plain' }, body));
  else ws.send(JSON.stringify({ type: 'message', room: ROOM, from: 'publisher', body }));
}

function percentile(sorted, p) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] : null;
}

async function main() {
  const rssBefore = PID ? rssKib(PID) : 0;
  let measuring = false;
  let delivered = 0;
  let payloadBytes = 0;
  const latencies = [];
  const onBody = (body) => {
    if (!measuring) return;
    delivered += 1;
    payloadBytes += Buffer.byteLength(body);
    if (delivered % 10 === 0) {
      const sent = parseInt(body.slice(0, body.indexOf(' ')), 36);
      latencies.push(nowUs() - sent);
    }
  };
  const subs = [];
  for (let i = 0; i < N; i += 100) {
    const batch = [];
    for (let j = i; j < Math.min(N, i + 100); j++) batch.push(connect(`sub${j}`, onBody));
    subs.push(...await withTimeout(Promise.all(batch), 30000, 'subscribers joining'));
  }
  const publisher = await withTimeout(connect('publisher', () => {}), 10000, 'publisher joining');
  const negotiated = subs[0].extensions || '';
  // Warm up (the first compressions allocate), then measure.
  for (let i = 0; i < RATE; i++) publish(publisher, i);
  await new Promise((r) => setTimeout(r, 1500));
  const bytesRead = () => subs.reduce((n, ws) => n + ws._socket.bytesRead, 0);
  const wire0 = bytesRead();
  const cpu0 = PID ? cpuTicks(PID) : 0;
  const client0 = process.cpuUsage();
  const t0 = Date.now();
  measuring = true;
  let sent = 0;
  await new Promise((resolve) => {
    const timer = setInterval(() => {
      const due = Math.floor(((Date.now() - t0) / 1000) * RATE);
      while (sent < due) publish(publisher, sent++);
      if (Date.now() - t0 >= SECONDS * 1000) { clearInterval(timer); resolve(); }
    }, 5);
  });
  const expected = sent * N;
  await withTimeout(new Promise((resolve) => {
    const check = setInterval(() => { if (delivered >= expected) { clearInterval(check); resolve(); } }, 10);
  }), 20000, 'deliveries').catch(() => {});
  measuring = false;
  const cpuTicksUsed = PID ? cpuTicks(PID) - cpu0 : 0;
  const clientCpu = process.cpuUsage(client0);
  const elapsed = (Date.now() - t0) / 1000;
  const wire = bytesRead() - wire0;
  const rssAfter = PID ? rssKib(PID) : 0;

  // A 50-message history page (raw only), through the first subscriber.
  let history = null;
  if (PROTO === 'raw') {
    const ws = subs[0];
    const before = ws._socket.bytesRead;
    const text = await withTimeout(new Promise((resolve) => {
      ws.onHistory = resolve;
      ws.send(JSON.stringify({ type: 'history', room: ROOM, limit: 50 }));
    }), 10000, 'history');
    await new Promise((r) => setTimeout(r, 100));
    history = { json_bytes: Buffer.byteLength(text), wire_bytes: ws._socket.bytesRead - before };
  }
  latencies.sort((a, b) => a - b);
  const result = {
    proto: PROTO,
    deflate: DEFLATE,
    negotiated,
    subscribers: N,
    rate: RATE,
    sent,
    delivered,
    lost: Math.max(0, expected - delivered),
    wire_bytes_per_delivery: delivered ? wire / delivered : null,
    body_bytes_per_delivery: delivered ? payloadBytes / delivered : null,
    server_cpu_us_per_delivery: PID && delivered ? (cpuTicksUsed / HZ) * 1e6 / delivered : null,
    client_cores: (clientCpu.user + clientCpu.system) / 1e6 / elapsed,
    server_rss_kib_per_connection: PID ? (rssAfter - rssBefore) / (N + 1) : null,
    p50_us: percentile(latencies, 0.5),
    p99_us: percentile(latencies, 0.99),
    history,
  };
  console.log(JSON.stringify(result));
  for (const ws of subs.concat([publisher])) ws.terminate();
  process.exit(result.lost ? 1 : 0);
}

main().catch((e) => { console.error(e.message); process.exit(1); });
setTimeout(() => { console.error('deflate-load: overall timeout'); process.exit(1); }, 180000).unref();
