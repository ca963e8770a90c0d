// The /admin page: live counters charted from GET /api/admin/overview (polled every few seconds),
// the lists operators act on (refreshed on load, after an action, and with the Refresh button;
// reads are logged by the server but not stored in the audit log, which keeps the actions), and
// their actions. Signs in like the chat page: the session cookie's refresh token, or a login.

const POLL_MS = 3000;
const POINTS = 100; // about five minutes of the charts

let token = null;
const history = []; // {t, sessions, messages_in, deliveries}

const $ = (id) => document.getElementById(id);

function say(text) {
  $('status').textContent = text || '';
}

/** The session cookie's refresh token traded for an access token (one tab at a time). */
async function refreshToken() {
  const run = async () => {
    const resp = await fetch('/api/token/refresh', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'content-type': 'application/json' },
      body: '{}',
    });
    if (!resp.ok) return false;
    const body = await resp.json();
    token = body.access_token;
    return true;
  };
  if (navigator.locks && navigator.locks.request) return navigator.locks.request('parley-session', run);
  return run();
}

/** An admin call: the JSON answer (null for 204), or an Error saying why. */
async function call(path, { method = 'GET', json, retry = true } = {}) {
  const headers = { accept: 'application/json', authorization: `Bearer ${token}` };
  if (json !== undefined) headers['content-type'] = 'application/json';
  const resp = await fetch(`/api/admin/${path}`, {
    method,
    headers,
    credentials: 'omit',
    body: json === undefined ? undefined : JSON.stringify(json),
  });
  if (resp.status === 401 && retry && (await refreshToken())) return call(path, { method, json, retry: false });
  let body = null;
  try {
    body = await resp.json();
  } catch {
    /* 204 */
  }
  if (resp.status === 403) throw new Error((body && body.error) || 'operators only');
  if (!resp.ok) throw new Error((body && body.error) || `HTTP ${resp.status}`);
  return body;
}

// ---- charts --------------------------------------------------------------------------------------

const SVG = 'http://www.w3.org/2000/svg';

/** Draws `series` (arrays of numbers, one line each) into `svg`, scaled to the largest value. */
function draw(svg, series) {
  svg.replaceChildren();
  const max = Math.max(1, ...series.flat());
  series.forEach((values, i) => {
    if (values.length < 2) return;
    const step = 300 / (POINTS - 1);
    const start = 300 - step * (values.length - 1);
    const points = values.map((v, j) => `${(start + j * step).toFixed(1)},${(78 - (v / max) * 74).toFixed(1)}`);
    const line = document.createElementNS(SVG, 'polyline');
    line.setAttribute('points', points.join(' '));
    line.setAttribute('class', i === 0 ? 'line' : 'line second');
    svg.append(line);
  });
}

/** Per-second rates of `key` between consecutive samples. */
function rates(key) {
  const out = [];
  for (let i = 1; i < history.length; i++) {
    const dt = (history[i].t - history[i - 1].t) / 1000;
    out.push(dt > 0 ? Math.max(0, (history[i][key] - history[i - 1][key]) / dt) : 0);
  }
  return out;
}

async function poll() {
  try {
    const o = await call('overview');
    $('node').textContent = `node ${o.node}`;
    history.push({ t: o.now_ms, sessions: o.sessions, messages_in: o.messages_in, deliveries: o.deliveries });
    if (history.length > POINTS) history.shift();
    draw($('chart-sessions'), [history.map((h) => h.sessions)]);
    const inRate = rates('messages_in');
    const outRate = rates('deliveries');
    draw($('chart-rates'), [inRate, outRate]);
    $('now-sessions').textContent = String(o.sessions);
    const last = (xs) => (xs.length ? xs[xs.length - 1].toFixed(1) : '0');
    $('now-rates').textContent = `${last(inRate)} in / ${last(outRate)} out`;
    say('');
  } catch (e) {
    say(`overview: ${e.message}`);
  }
}

// ---- tables ---------------------------------------------------------------------------------------

const when = (ms) => new Date(ms).toLocaleString();

/** A table row of `cells` (strings or elements). */
function row(cells) {
  const tr = document.createElement('tr');
  for (const cell of cells) {
    const td = document.createElement('td');
    if (cell instanceof Node) td.append(cell);
    else td.textContent = cell == null ? '' : String(cell);
    tr.append(td);
  }
  return tr;
}

/** A button that runs `action`, then refreshes the lists. */
function button(label, action) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = label;
  b.addEventListener('click', () => act(action));
  return b;
}

function fill(id, rows) {
  $(id).querySelector('tbody').replaceChildren(...rows);
}

async function act(action) {
  try {
    await action();
    say('');
  } catch (e) {
    say(e.message);
  }
  await refreshLists();
}

const kick = (body) => call('kick', { method: 'POST', json: body });

async function refreshLists() {
  try {
    const [conns, bans, rooms, busy, slow, audit] = await Promise.all([
      call('connections?limit=200'),
      call('bans'),
      call('rooms'),
      call('busiest-rooms?limit=10'),
      call('slow-consumers?limit=10'),
      call('audit?limit=50'),
    ]);
    $('conn-total').textContent = `(${conns.total} on node ${conns.node})`;
    fill('connections', conns.connections.map((c) => row([
      c.user ? (c.guest ? `${c.user} (guest)` : c.user) : '—',
      c.protocol, c.transport, c.address, when(c.since_ms), `${c.outbox} (${c.outbox_bytes} B)`,
      button('Kick', () => kick({ session: c.session, node: c.node })),
    ])));
    fill('bans', bans.bans.map((b) => row([
      b.user, b.reason, b.by, when(b.at_ms),
      button('Unban', () => call(`bans/${encodeURIComponent(b.user)}`, { method: 'DELETE' })),
    ])));
    fill('closed', rooms.closed.map((r) => row([
      r.room, r.reason, r.by,
      button('Reopen', () => call(`rooms/${encodeURIComponent(r.room)}/reopen`, { method: 'POST' })),
    ])));
    $('busy-window').textContent = `(last ${Math.round(busy.window_ms / 1000)} s)`;
    fill('busiest', busy.rooms.map((r) => row([
      r.room, r.messages,
      button('Close', () => call(`rooms/${encodeURIComponent(r.room)}/close`, { method: 'POST', json: {} })),
    ])));
    fill('slow', slow.deepest.map((c) => row([c.user || '—', c.protocol, c.outbox, c.outbox_bytes])));
    fill('evicted', slow.evicted.map((e) => row([when(e.at_ms), e.user || '—', e.reason])));
    fill('audit', audit.entries.map((e) => row([
      when(e.at_ms), e.actor, e.action, e.target, e.detail, e.node, e.outcome,
    ])));
  } catch (e) {
    say(`lists: ${e.message}`);
  }
}

/** Wires a form: `action(fields)` on submit, then the lists again. */
function form(id, action) {
  const f = $(id);
  f.addEventListener('submit', (event) => {
    event.preventDefault();
    const fields = Object.fromEntries(new FormData(f).entries());
    act(() => action(fields)).then(() => f.reset());
  });
}

function wire() {
  form('kick-form', ({ user, reason }) => kick({ user, reason }));
  form('ban-form', ({ user, reason }) => call('bans', { method: 'POST', json: { user, reason } }));
  form('close-form', ({ room, reason }) =>
    call(`rooms/${encodeURIComponent(room)}/close`, { method: 'POST', json: { reason } }));
  form('delete-form', ({ room, id }) =>
    call(`rooms/${encodeURIComponent(room)}/messages/${encodeURIComponent(id)}`, { method: 'DELETE' }));
  $('refresh').addEventListener('click', refreshLists);
}

// ---- start ----------------------------------------------------------------------------------------

async function start() {
  $('signin').hidden = true;
  try {
    await call('overview');
  } catch (e) {
    say(e.message);
    return;
  }
  $('main').hidden = false;
  wire();
  await poll();
  setInterval(poll, POLL_MS);
  await refreshLists();
}

$('signin').addEventListener('submit', async (event) => {
  event.preventDefault();
  const fields = Object.fromEntries(new FormData(event.target).entries());
  const resp = await fetch('/api/login', {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: fields.username, password: fields.password, cookie: true }),
  });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    say(body.error || `HTTP ${resp.status}`);
    return;
  }
  token = body.access_token;
  $('who').textContent = fields.username;
  start();
});

if (await refreshToken()) {
  start();
} else {
  $('signin').hidden = false;
}
