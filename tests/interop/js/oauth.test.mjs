// OAuth 2.0 / OpenID Connect against the real `parley` (docs/auth.md), without a browser: HTTP
// with redirects followed by hand and a cookie jar per "browser" (tests/oidc/agent.mjs), a real
// OpenID Connect provider (oidc-provider, tests/oidc/provider.mjs) and a hostile one that crafts
// bad ID tokens (tests/oidc/hostile.mjs).
//   Sign-in: what the login redirect asks for; replayed and foreign `state`; a replayed code;
//   open redirects through return_to; every crafted ID token refused, in words, with no account.
//   Resource-server mode: the provider's JWT access tokens as REST bearer, `/ws?access_token=`
//   and STOMP CONNECT `passcode`; wrong aud/iss, expired, key rotation and retirement, a
//   read-only role, a name that belongs to an account.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { Client } from '@stomp/stompjs';
import { startParley, rawSocket, sleep } from './socketio-helpers.mjs';
import { deferred, freePort, withTimeout } from './timeout.mjs';
import { startProvider } from '../../oidc/provider.mjs';
import { MODES, startHostile } from '../../oidc/hostile.mjs';
import { Agent, signInAtProvider } from '../../oidc/agent.mjs';

const IS_RABBIT = (process.env.INTEROP_TARGET ?? 'parley') === 'rabbitmq';
const WAIT = 10_000;
const SECRET = 'interop-client-secret-not-a-real-one';
const AUDIENCE = 'parley-api';
const REFETCH_S = 1;

let parley;
let op;
let evil;
let base;
let tmp;

const PEOPLE = {
  pat: { sub: 'op-2001', preferred_username: 'pat' },
  quinn: { sub: 'op-2002', preferred_username: 'quinn' },
  rosa: { sub: 'op-2003', preferred_username: 'rosa' },
  sam: { sub: 'op-2004', preferred_username: 'sam' },
  tess: { sub: 'op-2005', preferred_username: 'tess' },
  uma: { sub: 'op-2006', preferred_username: 'uma' },
};

// ---- helpers -------------------------------------------------------------------------------------

/** GET /auth/<provider>/login[?query] with `agent`: asserts the 303 to the provider; its URL. */
async function beginLogin(agent, provider = 'test', query = '') {
  const r = await agent.get(`${base}/auth/${provider}/login${query}`);
  assert.equal(r.status, 303, `login: HTTP ${r.status} ${r.text.slice(0, 300)}`);
  assert.ok(r.location, 'no Location');
  return new URL(r.location);
}

/** Login at Parley, the provider's pages as `person`: the callback URL the provider sends back. */
async function toCallback(agent, person, { provider = 'test', query = '', consent = true } = {}) {
  const authorize = await beginLogin(agent, provider, query);
  return signInAtProvider(agent, authorize.href, { login: person.sub, consent });
}

/** The callback's answer: { status, location, session (a parley_session was set), words }. */
async function callback(agent, url) {
  const r = await agent.get(url);
  const session = r.setCookies.some((c) => /^parley_session=[^;]+/.test(c) && !/Max-Age=0/i.test(c));
  const words = /<p id="auth-error">([\s\S]*?)<\/p>/.exec(r.text)?.[1] ?? null;
  return { ...r, session, words };
}

/** Asserts the callback answered with the error page saying `re`, and signed nobody in. */
function assertRefused(res, re, what) {
  assert.ok([400, 502].includes(res.status), `${what}: HTTP ${res.status} ${res.location ?? ''} ${res.text.slice(0, 300)}`);
  assert.match(res.headers.get('content-type') ?? '', /text\/html/, what);
  assert.ok(res.words !== null, `${what}: no <p id="auth-error"> in ${res.text.slice(0, 500)}`);
  assert.match(res.words, re, `${what}: the page says "${res.words}"`);
  assert.match(res.text, /<a href="\/">Back to Parley<\/a>/, `${what}: no way back`);
  assert.equal(res.session, false, `${what}: a session cookie was set`);
}

/** The session cookie of `agent` exchanged for an access token; GET /api/me: the user name. */
async function whoAmI(agent) {
  const r = await agent.postJson(`${base}/api/token/refresh`, {}, { headers: { origin: base } });
  assert.equal(r.status, 200, `refresh: HTTP ${r.status} ${r.text}`);
  const me = await fetch(`${base}/api/me`, { headers: { authorization: `Bearer ${r.json().access_token}` } });
  assert.equal(me.status, 200);
  return (await me.json()).username;
}

async function register(name, password = `pw-${name}-long-enough`) {
  const r = await fetch(`${base}/api/register`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: name, password }),
  });
  assert.equal(r.status, 201, `register ${name}: ${r.status}`);
  const login = await fetch(`${base}/api/login`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: name, password }),
  });
  return (await login.json()).access_token;
}

let watcherToken;
async function accountNames() {
  const r = await fetch(`${base}/api/users?limit=200`, { headers: { authorization: `Bearer ${watcherToken}` } });
  assert.equal(r.status, 200);
  return (await r.json()).users.map((u) => u.name);
}

function restGet(path, token) {
  return fetch(`${base}${path}`, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(WAIT) });
}

function restPost(path, token, body) {
  return fetch(`${base}${path}`, {
    method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body), signal: AbortSignal.timeout(WAIT),
  });
}

/** A raw `/ws` connection with the token in the query: joined to `room` (answers queued). */
async function rawJoin(token, room, { header = false } = {}) {
  const url = header ? `${base.replace('http', 'ws')}/ws` : `${base.replace('http', 'ws')}/ws?access_token=${encodeURIComponent(token)}`;
  const s = rawSocket(url, header ? { headers: { authorization: `Bearer ${token}` } } : {});
  await s.open();
  s.send(JSON.stringify({ type: 'join', room }));
  const joined = await nextOf(s, 'joined');
  return { s, joined };
}

/** The next message of `type` on a raw socket (others skipped). */
async function nextOf(s, type, ms = WAIT) {
  const until = Date.now() + ms;
  for (;;) {
    const m = JSON.parse(await s.next({ ms: Math.max(1, until - Date.now()) }));
    if (m.type === type || (type !== 'error' && m.type === 'error')) return m;
  }
}

/** The HTTP status a `/ws` upgrade with this token is refused with (or 101 if it opens). */
async function wsStatus(token) {
  const s = rawSocket(`${base.replace('http', 'ws')}/ws?access_token=${encodeURIComponent(token)}`);
  try {
    await s.open();
    return 101;
  } catch {
    return s.refusedStatus;
  } finally {
    s.close();
  }
}

/** A STOMP session over `/stomp` with the token as CONNECT passcode: { client, connected }. */
async function stompConnect(token) {
  const connected = deferred();
  const client = new Client({
    webSocketFactory: () => new WebSocket(`${base.replace('http', 'ws')}/stomp`, ['v12.stomp']),
    connectHeaders: { host: '/', passcode: token },
    reconnectDelay: 0, heartbeatIncoming: 0, heartbeatOutgoing: 0,
  });
  client.onConnect = (frame) => connected.resolve(frame);
  client.onStompError = (frame) => connected.reject(new Error(`STOMP ERROR: ${frame.headers.message} ${frame.body}`));
  client.onWebSocketClose = (evt) => connected.reject(new Error(`WebSocket closed before CONNECTED (${evt?.code})`));
  client.activate();
  try {
    const frame = await withTimeout(connected.promise, WAIT, 'STOMP CONNECTED');
    return { client, frame };
  } catch (e) {
    await client.deactivate();
    throw e;
  }
}

function receipt(client, id) {
  const d = deferred();
  client.watchForReceipt(id, (f) => d.resolve(f));
  return withTimeout(d.promise, WAIT, `receipt ${id}`);
}

// ---- the servers ---------------------------------------------------------------------------------

describe('OAuth 2.0 / OpenID Connect against Parley', { skip: IS_RABBIT && 'parley-only' }, () => {
  before(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'parley-oauth-'));
    const port = await freePort();
    base = `http://127.0.0.1:${port}`;
    op = await startProvider({
      clients: [{ client_id: 'parley', client_secret: SECRET, redirect_uris: [`${base}/auth/test/callback`] }],
      users: Object.values(PEOPLE),
      anyLogin: false,
    });
    evil = await startHostile({ clientId: 'parley', clientSecret: SECRET, redirectUris: [`${base}/auth/evil/callback`] });
    const secretFile = join(tmp, 'secret');
    writeFileSync(secretFile, SECRET, { mode: 0o600 });
    // One provider's secret from the environment, the other's from a file: both ways work.
    process.env.PARLEY_TEST_OIDC_SECRET = SECRET;
    parley = await startParley({
      httpPort: port,
      args: [
        '--public-url', base,
        '--auth-provider', `name=test,label=Test ID,issuer=${op.issuer},client-id=parley,client-secret-env=PARLEY_TEST_OIDC_SECRET`,
        '--auth-provider', `name=evil,label=Evil,issuer=${evil.issuer},client-id=parley,client-secret-file=${secretFile}`,
        '--provider-timeout', '3s',
        '--jwks-refetch-interval', `${REFETCH_S}s`,
        '--external-jwt-issuer', op.issuer,
        '--external-jwt-audience', AUDIENCE,
        '--external-jwt-roles-claim', 'roles',
        '--external-jwt-writer-role', 'writer',
        '--registrations-per-ip', '1000', // every sign-in here makes an account from 127.0.0.1
        '--sign-ins-per-ip', '1000',
      ],
    });
    watcherToken = await register('watcher');
  });

  after(async () => {
    await parley?.stop();
    await op?.close();
    await evil?.close();
    if (parley) rmSync(parley.dataDir, { recursive: true, force: true });
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  describe('sign-in', () => {
    test('the login redirect: code flow with PKCE S256, state, nonce; a short HttpOnly Lax cookie on /auth/', async () => {
      const agent = new Agent('pat');
      const authorize = await beginLogin(agent);
      assert.equal(authorize.origin, op.issuer);
      const q = authorize.searchParams;
      assert.equal(q.get('response_type'), 'code');
      assert.equal(q.get('client_id'), 'parley');
      assert.equal(q.get('redirect_uri'), `${base}/auth/test/callback`);
      assert.ok(q.get('scope').split(' ').includes('openid'), q.get('scope'));
      assert.ok((q.get('state') ?? '').length >= 16, 'state too short to be unguessable');
      assert.ok((q.get('nonce') ?? '').length >= 16, 'nonce missing or short');
      assert.equal(q.get('code_challenge_method'), 'S256');
      assert.match(q.get('code_challenge') ?? '', /^[A-Za-z0-9_-]{43}$/);
      const cookie = agent.cookie('parley_oauth');
      assert.ok(cookie, 'no parley_oauth cookie');
      assert.equal(cookie.attrs.httponly, true);
      assert.match(String(cookie.attrs.samesite), /^lax$/i);
      assert.equal(cookie.path, '/auth/');
      // A browser-session cookie, or a short one: the sealed state inside expires by itself
      // (--sign-in-timeout, 10 minutes by default; below).
      if (cookie.expires !== null) {
        const life = (cookie.expires - Date.now()) / 1000;
        assert.ok(life > 60 && life <= 15 * 60, `cookie lives ${life} s`);
      }
      // Two logins, two states, two challenges.
      const again = (await beginLogin(new Agent())).searchParams;
      assert.notEqual(again.get('state'), q.get('state'));
      assert.notEqual(again.get('code_challenge'), q.get('code_challenge'));

      // The control: through the provider and back, signed in as pat.
      const res = await callback(agent, await signInAtProvider(agent, authorize.href, { login: PEOPLE.pat.sub }));
      assert.equal(res.status, 303, res.text.slice(0, 300));
      assert.equal(res.location, `${base}/`);
      assert.ok(res.session, 'no session cookie after the callback');
      assert.equal(await whoAmI(agent), 'pat');
    });

    test('a replayed state is refused: "did not start", nobody signed in', async () => {
      const agent = new Agent('quinn');
      const url = await toCallback(agent, PEOPLE.quinn);
      const first = await callback(agent, url);
      assert.equal(first.status, 303);
      const replay = await callback(agent, url);
      assertRefused(replay, /did not start/i, 'the same callback again');
      // Forged: a state Parley never handed out, with the browser's cookie.
      const agent2 = new Agent('forger');
      const real = new URL(await toCallback(agent2, PEOPLE.quinn));
      real.searchParams.set('state', 'A'.repeat(43));
      assertRefused(await callback(agent2, real.href), /did not start/i, 'a forged state');
    });

    test('a state from another browser is refused: no cookie, or another sign-in\'s cookie', async () => {
      const victim = new Agent('victim');
      const url = await toCallback(victim, PEOPLE.rosa);
      assertRefused(await callback(new Agent('no-cookie'), url), /did not start/i, 'no parley_oauth cookie');
      const other = new Agent('other');
      await beginLogin(other); // its own, different pending sign-in
      assertRefused(await callback(other, url), /did not start/i, 'another sign-in\'s cookie');
      // The browser that started it still finishes it.
      const own = await callback(victim, url);
      assert.equal(own.status, 303, own.text.slice(0, 300));
      assert.equal(await whoAmI(victim), 'rosa');
    });

    test('an expired state: "expired" (a server with --sign-in-timeout 2s)', async () => {
      // Its own server, whose sign-ins expire after 2 s. It names the suite's server as its
      // --public-url, so the redirect URI it sends is one the hostile provider has registered;
      // the test then brings the callback to it (same path, its own port).
      const short = await startParley({
        args: ['--public-url', base, '--sign-in-timeout', '2s', '--registrations-per-ip', '1000',
          '--auth-provider', `name=evil,label=Evil,issuer=${evil.issuer},client-id=parley,client-secret-file=${join(tmp, 'secret')}`],
      });
      try {
        evil.setMode('good');
        const agent = new Agent('slow');
        // Started at the short-lived server (its state cookie, its sealing key) ...
        const r = await agent.get(`${short.url}/auth/evil/login`);
        assert.equal(r.status, 303);
        const back = await agent.follow(r.location, { stop: (u) => u.startsWith(`${base}/`) });
        // ... and finished there too, 2.5 s later (the provider sent it to --public-url: same path).
        const late = back.stoppedAt.replace(base, short.url);
        await sleep(2500);
        const res = await callback(agent, late);
        assertRefused(res, /expired/i, 'a callback after --sign-in-timeout');
        // In time, the same way works (the refusal was for the time).
        const agent2 = new Agent('quick');
        const r2 = await agent2.get(`${short.url}/auth/evil/login`);
        const back2 = await agent2.follow(r2.location, { stop: (u) => u.startsWith(`${base}/`) });
        const ok = await callback(agent2, back2.stoppedAt.replace(base, short.url));
        assert.equal(ok.status, 303, ok.words ?? ok.text.slice(0, 300));
      } finally {
        await short.stop();
        rmSync(short.dataDir, { recursive: true, force: true });
      }
    });

    test('a replayed authorization code is refused; a code the provider calls used: "already used"', async () => {
      const agent = new Agent('sam');
      const url = await toCallback(agent, PEOPLE.sam);
      const copy = agent.clone('sam-copy'); // the browser as it was before the callback
      assert.equal((await callback(agent, url)).status, 303);
      const replay = await callback(copy, url);
      // Parley either spent the state itself or asked the provider, which refused the spent code.
      assertRefused(replay, /already used|did not start/i, 'the code again, with the state cookie');
      // The provider refuses the code (someone redeemed it first): Parley says so.
      evil.setMode('code-used');
      const victim = new Agent('code-used');
      const back = await victim.follow((await beginLogin(victim, 'evil')).href, { stop: (u) => u.startsWith(`${base}/`) });
      assertRefused(await callback(victim, back.stoppedAt), /already used/i, 'invalid_grant from the provider');
      evil.setMode('good');
    });

    test('return_to never sends the browser off-site', async () => {
      const agent = new Agent('tess');
      const cases = {
        'https://evil.example/': '/',
        '//evil.example': '/',
        '/\\evil.example': '/',
        '/%5Cevil.example': null, // decoded by the server or not: must stay on the site
        'https:evil.example': '/',
        'javascript:alert(1)': '/',
        '/rooms#general': null,
        '/ok/path?x=1': null,
      };
      let first = true;
      for (const [returnTo, want] of Object.entries(cases)) {
        const url = await toCallback(agent, PEOPLE.tess, { query: `?return_to=${encodeURIComponent(returnTo)}` });
        const res = await callback(agent, url);
        assert.equal(res.status, 303, `${returnTo}: ${res.text.slice(0, 300)}`);
        const raw = res.headers.get('location');
        const where = new URL(raw, base);
        assert.equal(where.origin, base, `return_to=${returnTo} sent the browser to ${raw}`);
        assert.ok(raw.startsWith('/') ? !/^\/[/\\]/.test(raw) : raw.startsWith(`${base}/`), `return_to=${returnTo}: Location ${raw}`);
        if (want) assert.equal(where.pathname, want, `return_to=${returnTo}: Location ${raw}`);
        if (returnTo === '/ok/path?x=1') assert.equal(`${where.pathname}${where.search}`, '/ok/path?x=1', 'a path on the site is kept');
        if (first) assert.equal(await whoAmI(agent), 'tess');
        first = false;
      }
    });

    test('the hostile provider: every crafted ID token refused ("could not be verified"), no account; a good one works', async () => {
      const name = evil.user.preferred_username;
      for (const mode of MODES.filter((m) => m !== 'good' && m !== 'code-used')) {
        evil.setMode(mode);
        if (mode === 'unknown-kid') await sleep(REFETCH_S * 1000 + 200); // a refetch is allowed now
        const fetchesBefore = evil.jwksFetches;
        const agent = new Agent(mode);
        const back = await agent.follow((await beginLogin(agent, 'evil')).href, { stop: (u) => u.startsWith(`${base}/`) });
        assert.ok(back.stoppedAt?.startsWith(`${base}/auth/evil/callback?`), `${mode}: ${back.stoppedAt}`);
        const res = await callback(agent, back.stoppedAt);
        assertRefused(res, /could not be verified/i, `ID token ${mode}`);
        if (mode === 'unknown-kid') assert.ok(evil.jwksFetches > fetchesBefore, 'an unknown kid did not make Parley fetch the keys again');
        assert.ok(!(await accountNames()).includes(name), `${mode}: an account was made`);
      }
      // The control: the same path with a correct token signs in (so the refusals were for the tokens).
      evil.setMode('good');
      const agent = new Agent('good');
      const back = await agent.follow((await beginLogin(agent, 'evil')).href, { stop: (u) => u.startsWith(`${base}/`) });
      const res = await callback(agent, back.stoppedAt);
      assert.equal(res.status, 303, res.words ?? res.text.slice(0, 300));
      assert.equal(await whoAmI(agent), name);
    });

    test('declined consent: "declined"', async () => {
      const agent = new Agent('uma');
      const url = await toCallback(agent, PEOPLE.uma, { consent: false });
      assert.equal(new URL(url).searchParams.get('error'), 'access_denied');
      assertRefused(await callback(agent, url), /declined/i, 'access_denied');
      assert.ok(!(await accountNames()).includes('uma'));
    });
  });

  describe('resource server: the provider\'s access tokens', () => {
    let room;
    before(async () => {
      const owner = await register('roomkeeper');
      room = 'ext-room';
      const r = await restPost('/api/rooms', owner, { name: room, private: false });
      assert.equal(r.status, 201);
    });

    test('a writer token works as REST bearer, on /ws (query and header) and as STOMP passcode', async () => {
      const token = await op.mintAccessToken({ sub: 'op-3001', name: 'xena', aud: AUDIENCE, roles: ['writer'] });
      const me = await restGet('/api/me', token);
      assert.equal(me.status, 200);
      assert.equal((await me.json()).username, 'xena');
      const posted = await restPost(`/api/rooms/${room}/messages`, token, { body: 'from REST' });
      assert.equal(posted.status, 201, await posted.clone().text());
      assert.equal((await posted.json()).sender, 'xena');

      const { s, joined } = await rawJoin(token, room);
      assert.equal(joined.type, 'joined', JSON.stringify(joined));
      assert.ok(joined.members.includes('xena'), JSON.stringify(joined));
      s.send(JSON.stringify({ type: 'send', room, body: 'from /ws', ref: 'r1' }));
      const msg = await nextOf(s, 'message');
      assert.equal(msg.from, 'xena');
      assert.equal(msg.body, 'from /ws');
      assert.equal((await nextOf(s, 'ack')).ref, 'r1');
      s.close();
      const viaHeader = await rawJoin(token, room, { header: true });
      assert.equal(viaHeader.joined.type, 'joined');
      viaHeader.s.close();

      const { client, frame } = await stompConnect(token);
      try {
        assert.equal(frame.headers['user-name'] ?? 'xena', 'xena');
        const got = deferred();
        client.subscribe(`/topic/${room}`, (m) => got.resolve(m), { receipt: 'sub-1' });
        await receipt(client, 'sub-1');
        client.publish({ destination: `/topic/${room}`, body: 'from STOMP', headers: { receipt: 'pub-1' } });
        await receipt(client, 'pub-1');
        const m = await withTimeout(got.promise, WAIT, 'the MESSAGE');
        assert.equal(m.body, 'from STOMP');
        assert.equal(m.headers.sender, 'xena');
      } finally {
        await client.deactivate();
      }
    });

    test('ES256 and EdDSA tokens of the provider work too', async () => {
      for (const alg of ['ES256', 'EdDSA']) {
        const token = await op.mintAccessToken({ sub: `op-${alg}`, name: `yves-${alg.toLowerCase()}`, aud: AUDIENCE, roles: ['writer'], alg });
        const me = await restGet('/api/me', token);
        assert.equal(me.status, 200, `${alg}: ${me.status}`);
      }
    });

    test('refused: another audience, another issuer, expired, no signature by the provider, an account\'s name', async () => {
      await register('zoe');
      const bad = {
        'other audience': await op.mintAccessToken({ sub: 'op-3002', name: 'walt', aud: 'someone-else', roles: ['writer'] }),
        'other issuer': await op.mintAccessToken({ sub: 'op-3002', name: 'walt', aud: AUDIENCE, iss: 'http://127.0.0.1:9/other', roles: ['writer'] }),
        expired: await op.mintAccessToken({ sub: 'op-3002', name: 'walt', aud: AUDIENCE, expiresIn: -600, roles: ['writer'] }),
        'alg none': (() => {
          const b = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
          const now = Math.floor(Date.now() / 1000);
          return `${b({ alg: 'none', typ: 'at+jwt' })}.${b({ iss: op.issuer, aud: AUDIENCE, sub: 'op-3002', preferred_username: 'walt', exp: now + 300, iat: now })}.`;
        })(),
        "an account's name": await op.mintAccessToken({ sub: 'op-3003', name: 'zoe', aud: AUDIENCE, roles: ['writer'] }),
      };
      for (const [what, token] of Object.entries(bad)) {
        const me = await restGet('/api/me', token);
        assert.equal(me.status, 401, `${what}: REST answered ${me.status}`);
        assert.equal(await wsStatus(token), 401, `${what}: /ws`);
        await assert.rejects(stompConnect(token), /ERROR|closed/, `${what}: STOMP CONNECT`);
      }
    });

    test('keys: a token signed with a rotated-in key works; with a retired key it is refused', async () => {
      const claims = { sub: 'op-3010', name: 'kira', aud: AUDIENCE, roles: ['writer'] };
      const gen1 = await op.mintAccessToken(claims);
      assert.equal((await restGet('/api/me', gen1)).status, 200);
      await op.rotateKeys();
      await sleep(REFETCH_S * 1000 + 200); // an unknown kid may make Parley fetch the keys again
      const gen2 = await op.mintAccessToken(claims);
      assert.equal((await restGet('/api/me', gen2)).status, 200, 'a token with the new key');
      assert.equal((await restGet('/api/me', gen1)).status, 200, 'the old key is still published');
      // Retire everything but a third generation. Parley learns of it the same way (a token with
      // its unknown kid makes it fetch the key set again); the set it gets has no older key.
      await op.rotateKeys();
      op.removeOldKeys();
      await sleep(REFETCH_S * 1000 + 200);
      const gen3 = await op.mintAccessToken(claims);
      assert.equal((await restGet('/api/me', gen3)).status, 200, 'a token with the newest key');
      assert.equal((await restGet('/api/me', gen1)).status, 401, 'a token with a retired key (generation 1)');
      assert.equal((await restGet('/api/me', gen2)).status, 401, 'a token with a retired key (generation 2)');
      assert.equal(await wsStatus(gen2), 401, 'a retired key on /ws');
    });

    test('without the writer role: reads, but every way of sending is refused', async () => {
      const token = await op.mintAccessToken({ sub: 'op-3020', name: 'lurker', aud: AUDIENCE, roles: ['reader'] });
      const noRoles = await op.mintAccessToken({ sub: 'op-3021', name: 'lurker2', aud: AUDIENCE });
      for (const t of [token, noRoles]) {
        assert.equal((await restGet('/api/me', t)).status, 200);
        assert.equal((await restGet(`/api/rooms/${room}/messages`, t)).status, 200);
        const post = await restPost(`/api/rooms/${room}/messages`, t, { body: 'read-only REST' });
        assert.equal(post.status, 403, `REST post: ${post.status}`);
      }
      const { s } = await rawJoin(token, room);
      s.send(JSON.stringify({ type: 'send', room, body: 'read-only /ws', ref: 'ro' }));
      const answer = await nextOf(s, 'ack');
      assert.equal(answer.type, 'error', `a read-only send was answered ${JSON.stringify(answer)}`);
      s.close();
      const { client } = await stompConnect(token);
      const refused = deferred();
      client.onStompError = (f) => refused.resolve(f);
      client.onWebSocketClose = () => refused.resolve(null);
      client.publish({ destination: `/topic/${room}`, body: 'read-only STOMP', headers: { receipt: 'ro-1' } });
      let gotReceipt = false;
      client.watchForReceipt('ro-1', () => { gotReceipt = true; });
      await withTimeout(refused.promise, WAIT, 'an ERROR for a read-only SEND');
      assert.equal(gotReceipt, false, 'a read-only SEND got its receipt');
      await client.deactivate();
      const history = await (await restGet(`/api/rooms/${room}/messages?limit=100`, token)).json();
      const bodies = history.messages.map((m) => m.body);
      for (const b of ['read-only REST', 'read-only /ws', 'read-only STOMP']) assert.ok(!bodies.includes(b), `stored: ${b}`);
    });
  });
});

