#!/usr/bin/env node
// A real OpenID Connect provider for Parley's tests, and for signing in by hand: oidc-provider
// (OpenID-certified) on 127.0.0.1 with an in-memory store, its built-in login and consent pages,
// PKCE required, short lifetimes. The tests control it from outside: rotate and retire signing
// keys, take it down or make it hang, and mint JWT access tokens with its own keys for the
// resource-server mode. See README.md.
//
//   import { startProvider } from '../oidc/provider.mjs';
//   const op = await startProvider({ clients: [{ client_id, client_secret, redirect_uris }], users });
//
//   node tests/oidc/provider.mjs --port 9400 --client-id parley --client-secret s \
//     --redirect http://127.0.0.1:8080/auth/test/callback

import { randomBytes, randomUUID } from 'node:crypto';
import http from 'node:http';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { SignJWT, exportJWK, generateKeyPair, importJWK } from 'jose';
import Provider from 'oidc-provider';

/** The signing algorithms the provider publishes a key for (ID tokens are signed RS256). */
export const KEY_ALGS = ['RS256', 'ES256', 'EdDSA'];

/** Default lifetimes, in seconds: short, as a test wants. */
const DEFAULT_TTL = {
  AuthorizationCode: 60, AccessToken: 300, IdToken: 300, Interaction: 600, Session: 3600, Grant: 3600,
};

// The built-in pages pull a web font from fonts.googleapis.com; tests may not leave 127.0.0.0/8
// (and an offline browser logs the failure as a console error), so it is cut out of every page.
const WEB_FONT = /@import url\(https:\/\/fonts\.googleapis\.com\/[^)]*\);?/g;

/**
 * Starts the provider. Options:
 *   port       TCP port on `host` (0: any free one); the issuer is `http://<host>:<port>`
 *   clients    [{ client_id, client_secret, redirect_uris, token_endpoint_auth_method? }]
 *              (client_secret_basic by default; client_secret_post also works)
 *   users      [{ sub, preferred_username, name?, email? }]: who can sign in (the login page takes
 *              the `sub` or the `preferred_username`, and any password)
 *   anyLogin   also accept any other login name as a user whose sub and preferred_username are
 *              that name (default true: convenient by hand; tests pass their users)
 *   ttl        lifetimes in seconds, merged over DEFAULT_TTL (AuthorizationCode, AccessToken, …)
 *   log        print each request to stderr
 * Resolves { issuer, url, port, keys, rotateKeys, removeOldKeys, setDown, setHang, failAfterRedirect,
 *            mintAccessToken, requests, close }.
 */
export async function startProvider({
  port = 0, host = '127.0.0.1', clients = [], users = [], anyLogin = true, ttl = {}, log = false,
} = {}) {
  const byLogin = new Map();
  for (const u of users) {
    if (!u.sub || !u.preferred_username) throw new Error(`a user needs sub and preferred_username: ${JSON.stringify(u)}`);
    byLogin.set(u.sub, u);
    byLogin.set(u.preferred_username, u);
  }
  const userFor = (id) => byLogin.get(id) || (anyLogin && id ? { sub: id, preferred_username: id } : undefined);

  // Signing keys, newest generation first. Every key ever made stays in `allKeys` (by kid), so a
  // test can still sign with one the provider no longer publishes.
  const allKeys = new Map();
  let generation = 0;
  let published = [];
  async function newGeneration() {
    generation++;
    const made = [];
    for (const alg of KEY_ALGS) {
      const { privateKey } = await generateKeyPair(alg, { extractable: true });
      const jwk = { ...(await exportJWK(privateKey)), kid: `${alg.toLowerCase()}-g${generation}-${randomBytes(4).toString('hex')}`, alg, use: 'sig' };
      const key = { alg, kid: jwk.kid, generation, jwk, privateKey };
      allKeys.set(key.kid, key);
      made.push(key);
    }
    return made;
  }

  // Requests seen (method, path), so tests can tell what the server asked for.
  const requests = [];
  const sockets = new Set();
  const hung = new Set();
  let down = false;
  let hang = false;
  let provider = null;

  // failAfterRedirect: the provider fails right after it sends a browser back to a client.
  const redirectUris = clients.flatMap((c) => c.redirect_uris || []);
  let armed = null;

  const server = http.createServer((req, res) => {
    const { pathname } = new URL(req.url, 'http://x');
    requests.push({ method: req.method, path: pathname, at: Date.now() });
    if (armed) {
      res.on('finish', () => {
        const location = String(res.getHeader('location') || '');
        if (!armed || res.statusCode < 300 || res.statusCode > 399 || !redirectUris.some((u) => location.startsWith(u))) return;
        const how = armed;
        armed = null;
        if (how === 'hang') op.setHang(true);
        else op.setDown(true);
      });
    }
    if (log) process.stderr.write(`oidc: ${req.method} ${req.url}\n`);
    if (pathname === '/favicon.ico') { // browsers ask; a 404 would be a console error in tests
      res.writeHead(204).end();
      return;
    }
    if (hang) { // never answer; setHang(false) or close() drops the connection
      hung.add(res);
      res.on('close', () => hung.delete(res));
      return;
    }
    provider.callback()(req, res);
  });
  server.on('connection', (socket) => {
    if (down) { socket.destroy(); return; }
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await listen(server, port, host);
  const boundPort = server.address().port;
  const issuer = `http://${host}:${boundPort}`;
  const cookieKeys = [randomBytes(32).toString('hex')];
  const lifetimes = { ...DEFAULT_TTL, ...ttl };

  // oidc-provider reads its keys once, at construction: a new key set means a new Provider. Its
  // in-memory store is shared by all instances in the process and the cookie keys stay the same,
  // so sign-ins, sessions and codes in progress carry over.
  function build() {
    const p = new Provider(issuer, {
      clients: clients.map((c) => ({
        grant_types: ['authorization_code'], response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic', ...c,
      })),
      jwks: { keys: published.map((k) => k.jwk) },
      cookies: { keys: cookieKeys },
      claims: { openid: ['sub'], profile: ['preferred_username', 'name'], email: ['email', 'email_verified'] },
      scopes: ['openid', 'offline_access', 'profile', 'email'],
      pkce: { required: () => true },
      features: { devInteractions: { enabled: true }, userinfo: { enabled: true } },
      enabledJWA: { idTokenSigningAlgValues: KEY_ALGS, userinfoSigningAlgValues: KEY_ALGS },
      ttl: lifetimes,
      findAccount(ctx, id) {
        const user = userFor(id);
        if (!user) return undefined;
        return {
          accountId: user.sub,
          claims: () => ({
            sub: user.sub,
            preferred_username: user.preferred_username,
            name: user.name ?? user.preferred_username,
            ...(user.email ? { email: user.email, email_verified: true } : {}),
          }),
        };
      },
      renderError(ctx, out) {
        ctx.type = 'html';
        ctx.body = `<!doctype html><title>Provider error</title><h1>Provider error</h1><pre id="op-error">${escapeHtml(JSON.stringify(out, null, 2))}</pre>`;
      },
    });
    // The dev login page takes what is typed as the account id: a preferred_username is turned
    // into its sub here (oidc-provider then reads the already parsed body). Pages lose the web
    // font (see WEB_FONT).
    p.use(async (ctx, next) => {
      if (ctx.method === 'POST' && ctx.path.startsWith('/interaction/') && ctx.is('application/x-www-form-urlencoded')) {
        const chunks = [];
        for await (const chunk of ctx.req) chunks.push(chunk);
        const body = Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString()));
        if (body.prompt === 'login' && body.login) body.login = userFor(body.login)?.sub ?? body.login;
        ctx.req.body = body;
      }
      await next();
      if (typeof ctx.body === 'string' && ctx.response.is('html')) ctx.body = ctx.body.replace(WEB_FONT, '');
    });
    return p;
  }

  published = await newGeneration();
  provider = build();

  const op = {
    issuer,
    url: issuer,
    port: boundPort,
    requests,
    /** Keys the provider publishes now: [{ alg, kid, generation }], newest first. */
    get keys() { return published.map(({ alg, kid, generation: g }) => ({ alg, kid, generation: g })); },
    /** A new key per algorithm, used from now on; the previous ones stay published. */
    async rotateKeys() {
      published = [...(await newGeneration()), ...published];
      provider = build();
      return op.keys;
    },
    /** Stops publishing every key but the newest generation. */
    removeOldKeys() {
      published = published.filter((k) => k.generation === generation);
      provider = build();
      return op.keys;
    },
    /** true: connections are refused (nothing listens); false: it listens again on the same port. */
    async setDown(on) {
      if (on === down) return;
      down = on;
      if (on) {
        await new Promise((resolve) => {
          server.close(() => resolve());
          for (const s of sockets) s.destroy();
        });
      } else {
        await listen(server, boundPort, host);
      }
    },
    /**
     * The provider goes down ('down') or stops answering ('hang') just after its next redirect of
     * a browser back to a client's redirect URI (with a code or an error): the client's token
     * request finds it failing. Undo with setDown(false) / setHang(false).
     */
    failAfterRedirect(how) {
      if (how !== 'hang' && how !== 'down') throw new Error(`failAfterRedirect: 'hang' or 'down', not ${how}`);
      armed = how;
    },
    /** true: requests are accepted and never answered; false: those held are dropped. */
    setHang(on) {
      hang = on;
      if (!on) for (const res of hung) res.socket?.destroy();
    },
    /**
     * A JWT access token (RFC 9068 shape) signed with one of the provider's keys, for Parley's
     * resource-server mode. `key`: 'current' (newest generation), 'oldest' still known, or a kid;
     * `alg` picks among that generation's keys. `iss`/`aud`/`expiresIn` may be set to wrong values.
     */
    async mintAccessToken({
      sub, name = sub, aud, roles, expiresIn = 300, iss = issuer, alg = 'RS256', key = 'current',
      nameClaim = 'preferred_username', rolesClaim = 'roles', scope = 'openid profile', extra = {},
    } = {}) {
      const k = pickKey(allKeys, { key, alg, generation });
      const now = Math.floor(Date.now() / 1000);
      const claims = { ...extra, [nameClaim]: name, scope, client_id: clients[0]?.client_id ?? 'test' };
      if (roles !== undefined) claims[rolesClaim] = roles;
      let jwt = new SignJWT(claims)
        .setProtectedHeader({ alg: k.alg, kid: k.kid, typ: 'at+jwt' })
        .setIssuer(iss)
        .setIssuedAt(expiresIn < 0 ? now + expiresIn - 60 : now)
        .setExpirationTime(now + expiresIn)
        .setJti(randomUUID());
      if (sub !== undefined) jwt = jwt.setSubject(sub);
      if (aud !== undefined) jwt = jwt.setAudience(aud);
      return jwt.sign(k.privateKey);
    },
    /** The key a token was (or would be) signed with, as a private JWK (for crafting by hand). */
    async privateKey(kid) {
      const k = allKeys.get(kid);
      return k && importJWK(k.jwk, k.alg);
    },
    async close() {
      hang = false;
      for (const res of hung) res.socket?.destroy();
      for (const s of sockets) s.destroy();
      if (!down) await new Promise((resolve) => server.close(() => resolve()));
      down = true;
    },
  };
  return op;
}

function pickKey(allKeys, { key, alg, generation }) {
  const keys = [...allKeys.values()];
  let k;
  if (key === 'current') k = keys.find((x) => x.generation === generation && x.alg === alg);
  else if (key === 'oldest') k = keys.find((x) => x.alg === alg);
  else k = allKeys.get(key);
  if (!k) throw new Error(`no ${alg} key '${key}'`);
  return k;
}

function listen(server, port, host) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

function escapeHtml(s) {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

// ---- by hand -------------------------------------------------------------------------------------

async function main() {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: '9400' },
      host: { type: 'string', default: '127.0.0.1' },
      'client-id': { type: 'string', default: 'parley' },
      'client-secret': { type: 'string' },
      redirect: { type: 'string', multiple: true },
      user: { type: 'string', multiple: true },
      log: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help || !values['client-secret'] || !values.redirect?.length) {
    process.stderr.write(`usage: node tests/oidc/provider.mjs --client-secret SECRET --redirect URL [--redirect URL …]
         [--port 9400] [--host 127.0.0.1] [--client-id parley] [--user NAME …] [--log]
A local OpenID Connect provider. Its login page accepts any name (any password); --user names
are listed here only as examples. Ctrl-C stops it.
`);
    process.exit(values.help ? 0 : 2);
  }
  const users = (values.user || []).map((name) => ({ sub: name, preferred_username: name }));
  const op = await startProvider({
    port: Number(values.port), host: values.host, users, log: values.log,
    clients: [{ client_id: values['client-id'], client_secret: values['client-secret'], redirect_uris: values.redirect }],
  });
  const parley = new URL(values.redirect[0]);
  const name = /^\/auth\/([a-z0-9-]{1,32})\/callback$/.exec(parley.pathname)?.[1] ?? 'test';
  process.stdout.write(`oidc provider listening on ${op.issuer}
  discovery: ${op.issuer}/.well-known/openid-configuration
  client:    ${values['client-id']} (client_secret_basic), redirect ${values.redirect.join(', ')}
Start Parley with, e.g.:
  printf %s '${values['client-secret']}' > /tmp/parley-oidc-secret
  parley serve --http ${parley.host} --public-url ${parley.origin} \\
    --auth-provider 'name=${name},label=Test ID,issuer=${op.issuer},client-id=${values['client-id']},client-secret-file=/tmp/parley-oidc-secret'
then open ${parley.origin}/ and press "Sign in with Test ID".
`);
  const stop = async () => {
    await op.close();
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

if (import.meta.url === pathToFileURL(process.argv[1] || '').href) {
  main().catch((e) => {
    process.stderr.write(`${e.stack || e}\n`);
    process.exit(1);
  });
}
