// A hostile OpenID Connect provider: a correct discovery document, JWKS, authorization endpoint
// (client, redirect URI and PKCE checked like a real one) and token endpoint, whose ID tokens are
// crafted wrong on purpose, one way per `mode`, so a relying party's refusals can be tested
// through its real callback. `good` is the control: the same path with a correct token.
//
//   const evil = await startHostile({ clientId, clientSecret, redirectUris });
//   evil.setMode('alg-none');   // the next authorization code carries this mode
//
// The browser's side (authorize) answers at once with a redirect back: no login page.

import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { SignJWT, exportJWK, exportSPKI, generateKeyPair } from 'jose';

/** Every way an ID token can be wrong here, and `good`. */
export const MODES = [
  'good', // a correct token: the control
  'wrong-nonce', // nonce is not the one the client sent
  'missing-nonce', // no nonce claim at all
  'other-audience', // aud is another client
  'other-issuer', // iss is another provider
  'expired', // exp an hour ago
  'unknown-kid', // signed with a key the JWKS never publishes (also after a refetch)
  'alg-none', // {"alg":"none"}, no signature
  'hs256-public-key', // HS256 with the provider's public key (SPKI PEM) as the HMAC secret
  'bad-signature', // a correct token whose payload was changed after signing
  'code-used', // no token: the token endpoint refuses the code as already used (invalid_grant)
];

const b64url = (buf) => Buffer.from(buf).toString('base64url');

/**
 * Options: port (0: any), host, clientId, clientSecret, redirectUris, user ({ sub,
 * preferred_username }), mode (default 'good').
 * Resolves { issuer, url, port, modes, setMode, user, jwksFetches, tokenRequests, codes, close }.
 */
export async function startHostile({
  port = 0, host = '127.0.0.1', clientId = 'parley', clientSecret, redirectUris = [],
  user = { sub: 'hostile-1', preferred_username: 'mallet' }, mode: initialMode = 'good',
} = {}) {
  let mode = initialMode;
  const { publicKey, privateKey } = await generateKeyPair('RS256', { extractable: true });
  const kid = `hostile-${randomBytes(4).toString('hex')}`;
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' };
  const publicPem = await exportSPKI(publicKey);
  const { privateKey: strangerKey } = await generateKeyPair('RS256');
  const codes = new Map(); // code -> { nonce, challenge, redirectUri, mode, used }
  const accessTokens = new Set();
  const stats = { jwksFetches: 0, tokenRequests: 0, userinfoRequests: 0 };
  const sockets = new Set();

  const server = http.createServer(async (req, res) => {
    try {
      await handle(req, res);
    } catch (e) {
      send(res, 500, { error: 'server_error', error_description: String(e) });
    }
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  const issuer = `http://${host}:${server.address().port}`;

  async function handle(req, res) {
    const url = new URL(req.url, issuer);
    if (req.method === 'GET' && url.pathname === '/.well-known/openid-configuration') {
      return send(res, 200, {
        issuer,
        authorization_endpoint: `${issuer}/authorize`,
        token_endpoint: `${issuer}/token`,
        userinfo_endpoint: `${issuer}/userinfo`,
        jwks_uri: `${issuer}/jwks`,
        response_types_supported: ['code'],
        grant_types_supported: ['authorization_code'],
        subject_types_supported: ['public'],
        id_token_signing_alg_values_supported: ['RS256'],
        code_challenge_methods_supported: ['S256'],
        token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
        scopes_supported: ['openid', 'profile'],
      });
    }
    if (req.method === 'GET' && url.pathname === '/jwks') {
      stats.jwksFetches++;
      return send(res, 200, { keys: [publicJwk] });
    }
    if (req.method === 'GET' && url.pathname === '/authorize') {
      const q = url.searchParams;
      const redirectUri = q.get('redirect_uri');
      if (q.get('client_id') !== clientId || !redirectUris.includes(redirectUri)) {
        return send(res, 400, { error: 'invalid_request', error_description: 'unknown client or redirect_uri' });
      }
      const back = new URL(redirectUri);
      const fail = (error) => {
        back.searchParams.set('error', error);
        back.searchParams.set('state', q.get('state') ?? '');
        res.writeHead(303, { location: back.href }).end();
      };
      if (q.get('response_type') !== 'code') return fail('unsupported_response_type');
      if (q.get('code_challenge_method') !== 'S256' || !q.get('code_challenge')) return fail('invalid_request');
      const code = b64url(randomBytes(24));
      codes.set(code, { nonce: q.get('nonce'), challenge: q.get('code_challenge'), redirectUri, mode, used: false });
      back.searchParams.set('code', code);
      if (q.has('state')) back.searchParams.set('state', q.get('state'));
      back.searchParams.set('iss', issuer);
      return res.writeHead(303, { location: back.href }).end();
    }
    if (req.method === 'POST' && url.pathname === '/token') {
      stats.tokenRequests++;
      const form = new URLSearchParams(await readBody(req));
      let id = form.get('client_id');
      let secret = form.get('client_secret');
      const basic = /^Basic (.+)$/i.exec(req.headers.authorization || '');
      if (basic) {
        const decoded = Buffer.from(basic[1], 'base64').toString();
        const i = decoded.indexOf(':');
        [id, secret] = [decoded.slice(0, i), decoded.slice(i + 1)].map(decodeURIComponent);
      }
      if (id !== clientId || (clientSecret !== undefined && secret !== clientSecret)) {
        return send(res, 401, { error: 'invalid_client' });
      }
      const grant = codes.get(form.get('code') ?? '');
      if (form.get('grant_type') !== 'authorization_code' || !grant || grant.used) {
        return send(res, 400, { error: 'invalid_grant', error_description: 'authorization code invalid or already used' });
      }
      if (grant.mode === 'code-used') { // as a provider answers a code someone redeemed first
        return send(res, 400, { error: 'invalid_grant', error_description: 'authorization code already consumed' });
      }
      grant.used = true;
      const verifier = form.get('code_verifier') ?? '';
      if (form.get('redirect_uri') !== grant.redirectUri
        || b64url(createHash('sha256').update(verifier).digest()) !== grant.challenge) {
        return send(res, 400, { error: 'invalid_grant', error_description: 'PKCE or redirect_uri mismatch' });
      }
      const accessToken = b64url(randomBytes(24));
      accessTokens.add(accessToken);
      return send(res, 200, {
        access_token: accessToken, token_type: 'Bearer', expires_in: 300, scope: 'openid profile',
        id_token: await idToken(grant),
      });
    }
    if (req.method === 'GET' && url.pathname === '/userinfo') {
      stats.userinfoRequests++;
      const token = /^Bearer (.+)$/i.exec(req.headers.authorization || '')?.[1];
      if (!accessTokens.has(token)) return send(res, 401, { error: 'invalid_token' });
      return send(res, 200, { sub: user.sub, preferred_username: user.preferred_username });
    }
    return send(res, 404, { error: 'not_found' });
  }

  async function idToken({ nonce, mode: m }) {
    const now = Math.floor(Date.now() / 1000);
    const claims = { preferred_username: user.preferred_username, nonce };
    let iss = issuer;
    let aud = clientId;
    let iat = now;
    let exp = now + 300;
    if (m === 'wrong-nonce') claims.nonce = b64url(randomBytes(16));
    if (m === 'missing-nonce') delete claims.nonce;
    if (m === 'other-audience') aud = 'some-other-client';
    if (m === 'other-issuer') iss = 'http://127.0.0.1:9/elsewhere';
    if (m === 'expired') [iat, exp] = [now - 7200, now - 3600];
    const jwt = (alg, k = kid) => new SignJWT(claims).setProtectedHeader({ alg, kid: k, typ: 'JWT' })
      .setIssuer(iss).setAudience(aud).setSubject(user.sub).setIssuedAt(iat).setExpirationTime(exp);
    switch (m) {
      case 'unknown-kid':
        return jwt('RS256', `stranger-${randomBytes(4).toString('hex')}`).sign(strangerKey);
      case 'alg-none': {
        const payload = { ...claims, iss, aud, sub: user.sub, iat, exp };
        return `${b64url(JSON.stringify({ alg: 'none', typ: 'JWT' }))}.${b64url(JSON.stringify(payload))}.`;
      }
      case 'hs256-public-key':
        return jwt('HS256').sign(new TextEncoder().encode(publicPem));
      case 'bad-signature': {
        const [h, p, s] = (await jwt('RS256').sign(privateKey)).split('.');
        const payload = JSON.parse(Buffer.from(p, 'base64url').toString());
        payload.sub = 'someone-else';
        return `${h}.${b64url(JSON.stringify(payload))}.${s}`;
      }
      default:
        return jwt('RS256').sign(privateKey);
    }
  }

  return {
    issuer,
    url: issuer,
    port: server.address().port,
    modes: MODES,
    user,
    publicJwk,
    /** The mode of the ID token for authorization codes issued from now on. */
    setMode(m) {
      if (!MODES.includes(m)) throw new Error(`unknown mode ${m}`);
      mode = m;
    },
    get mode() { return mode; },
    get jwksFetches() { return stats.jwksFetches; },
    get tokenRequests() { return stats.tokenRequests; },
    get userinfoRequests() { return stats.userinfoRequests; },
    codes,
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

function send(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(JSON.stringify(body));
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 65536) throw new Error('body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString();
}
