// Checks the test provider on its own (no Parley): discovery, the authorization code flow with
// PKCE through the built-in pages, the ID token against the published keys, userinfo, refusal of
// a code used twice and of a missing code_verifier, key rotation, minted access tokens, down and
// hang. `node --test tests/oidc/selfcheck.mjs` (tests/e2e/run.sh and tests/interop/run.sh run it).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createLocalJWKSet, jwtVerify } from 'jose';
import { startProvider } from './provider.mjs';
import { Agent, signInAtProvider } from './agent.mjs';

const REDIRECT = 'http://127.0.0.1:1/cb';
const b64url = (buf) => buf.toString('base64url');
const op = await startProvider({
  clients: [{ client_id: 'parley', client_secret: 's3cret', redirect_uris: [REDIRECT] }],
  users: [{ sub: 'op-1001', preferred_username: 'olivia' }],
  anyLogin: false,
});
after(() => op.close());

async function codeFlow(agent, { login = 'op-1001', scope = 'openid profile' } = {}) {
  const verifier = b64url(randomBytes(32));
  const state = b64url(randomBytes(16));
  const nonce = b64url(randomBytes(16));
  const disc = await (await fetch(`${op.issuer}/.well-known/openid-configuration`)).json();
  const u = new URL(disc.authorization_endpoint);
  Object.entries({
    response_type: 'code', client_id: 'parley', redirect_uri: REDIRECT, scope, state, nonce,
    code_challenge: b64url(createHash('sha256').update(verifier).digest()), code_challenge_method: 'S256',
  }).forEach(([k, v]) => u.searchParams.set(k, v));
  const back = new URL(await signInAtProvider(agent, u.href, { login }));
  assert.equal(back.searchParams.get('state'), state);
  return { disc, code: back.searchParams.get('code'), verifier, nonce };
}

function redeem(disc, code, verifier) {
  return fetch(disc.token_endpoint, {
    method: 'POST',
    headers: { authorization: `Basic ${Buffer.from('parley:s3cret').toString('base64')}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: REDIRECT, ...(verifier ? { code_verifier: verifier } : {}) }),
    signal: AbortSignal.timeout(5000),
  });
}

test('authorization code + PKCE through the login and consent pages; the ID token verifies', async () => {
  const agent = new Agent();
  const { disc, code, verifier, nonce } = await codeFlow(agent);
  assert.ok(code);
  const resp = await redeem(disc, code, verifier);
  const tokens = await resp.json();
  assert.equal(resp.status, 200, JSON.stringify(tokens));
  const jwks = await (await fetch(disc.jwks_uri)).json();
  const { payload, protectedHeader } = await jwtVerify(tokens.id_token, createLocalJWKSet(jwks), { issuer: op.issuer, audience: 'parley' });
  assert.equal(protectedHeader.alg, 'RS256');
  assert.equal(payload.sub, 'op-1001');
  assert.equal(payload.nonce, nonce);
  const me = await (await fetch(disc.userinfo_endpoint, { headers: { authorization: `Bearer ${tokens.access_token}` } })).json();
  assert.equal(me.preferred_username, 'olivia');
  // The code is single-use.
  const again = await redeem(disc, code, verifier);
  assert.equal(again.status, 400);
  assert.equal((await again.json()).error, 'invalid_grant');
  // PKCE is required.
  const second = await codeFlow(agent); // the provider session is remembered: no login page
  const noVerifier = await redeem(second.disc, second.code, null);
  assert.equal(noVerifier.status, 400);
});

test('login by preferred_username maps to the same sub', async () => {
  const { disc, code, verifier } = await codeFlow(new Agent(), { login: 'olivia' });
  const tokens = await (await redeem(disc, code, verifier)).json();
  const jwks = await (await fetch(disc.jwks_uri)).json();
  const { payload } = await jwtVerify(tokens.id_token, createLocalJWKSet(jwks), { issuer: op.issuer, audience: 'parley' });
  assert.equal(payload.sub, 'op-1001');
});

test('declining consent sends the browser back with access_denied', async () => {
  const agent = new Agent();
  const u = new URL(`${op.issuer}/auth`);
  Object.entries({ response_type: 'code', client_id: 'parley', redirect_uri: REDIRECT, scope: 'openid', state: 'st',
    code_challenge: b64url(createHash('sha256').update('v'.repeat(43)).digest()), code_challenge_method: 'S256' })
    .forEach(([k, v]) => u.searchParams.set(k, v));
  const back = new URL(await signInAtProvider(agent, u.href, { login: 'op-1001', consent: false }));
  assert.equal(back.searchParams.get('error'), 'access_denied');
  assert.equal(back.searchParams.get('state'), 'st');
});

test('keys: rotation publishes new + old, removal keeps the newest; minted tokens verify against them', async () => {
  const jwksNow = async () => createLocalJWKSet(await (await fetch(`${op.issuer}/jwks`)).json());
  const first = op.keys;
  const old = await op.mintAccessToken({ sub: 'op-1001', aud: 'parley-api', roles: ['writer'] });
  await jwtVerify(old, await jwksNow(), { issuer: op.issuer, audience: 'parley-api' });
  await op.rotateKeys();
  assert.equal(op.keys.length, first.length * 2);
  const fresh = await op.mintAccessToken({ sub: 'op-1001', aud: 'parley-api' });
  for (const alg of ['ES256', 'EdDSA']) {
    await jwtVerify(await op.mintAccessToken({ sub: 'x', aud: 'a', alg }), await jwksNow(), { audience: 'a' });
  }
  await jwtVerify(fresh, await jwksNow(), { issuer: op.issuer, audience: 'parley-api' });
  await jwtVerify(old, await jwksNow(), { issuer: op.issuer, audience: 'parley-api' });
  op.removeOldKeys();
  assert.equal(op.keys.length, first.length);
  await jwtVerify(fresh, await jwksNow(), { issuer: op.issuer, audience: 'parley-api' });
  await assert.rejects(jwtVerify(old, await jwksNow(), { issuer: op.issuer, audience: 'parley-api' }), /no applicable key/i);
  // A sign-in still works with the new keys (a rebuilt provider, same store).
  const { disc, code, verifier } = await codeFlow(new Agent());
  assert.equal((await redeem(disc, code, verifier)).status, 200);
});

test('down: connections refused; hang: no answer; both recover', async () => {
  await op.setDown(true);
  // A pooled connection may die first ("other side closed"); a new one is refused.
  await assert.rejects(fetch(`${op.issuer}/jwks`, { signal: AbortSignal.timeout(2000) }), TypeError);
  await assert.rejects(fetch(`${op.issuer}/jwks`, { signal: AbortSignal.timeout(2000) }), (e) => e.cause?.code === 'ECONNREFUSED');
  await op.setDown(false);
  assert.equal((await fetch(`${op.issuer}/jwks`)).status, 200);
  op.setHang(true);
  await assert.rejects(fetch(`${op.issuer}/jwks`, { signal: AbortSignal.timeout(500) }), /TimeoutError|aborted/i);
  op.setHang(false);
  assert.equal((await fetch(`${op.issuer}/jwks`)).status, 200);
  // Armed: fails right after sending a browser back to the client.
  op.failAfterRedirect('down');
  assert.equal((await fetch(`${op.issuer}/jwks`)).status, 200, 'not a redirect: still up');
  const { code } = await codeFlow(new Agent());
  assert.ok(code);
  await assert.rejects(fetch(`${op.issuer}/jwks`, { signal: AbortSignal.timeout(2000) }), TypeError);
  await op.setDown(false);
  op.failAfterRedirect('hang');
  await codeFlow(new Agent());
  await assert.rejects(fetch(`${op.issuer}/jwks`, { signal: AbortSignal.timeout(500) }), /TimeoutError|aborted/i);
  op.setHang(false);
  assert.equal((await fetch(`${op.issuer}/jwks`)).status, 200);
});

test('the hostile provider: PKCE checked, codes single-use; each crafted ID token fails a proper check, `good` passes', async () => {
  const { startHostile, MODES } = await import('./hostile.mjs');
  const evil = await startHostile({ clientSecret: 'x', redirectUris: [REDIRECT] });
  try {
    const disc = await (await fetch(`${evil.issuer}/.well-known/openid-configuration`)).json();
    const jwks = createLocalJWKSet(await (await fetch(disc.jwks_uri)).json());
    const results = {};
    for (const mode of MODES.filter((m) => m !== 'code-used')) {
      evil.setMode(mode);
      const verifier = b64url(randomBytes(32));
      const u = new URL(disc.authorization_endpoint);
      Object.entries({ response_type: 'code', client_id: 'parley', redirect_uri: REDIRECT, state: 's', nonce: 'n-1', scope: 'openid',
        code_challenge: b64url(createHash('sha256').update(verifier).digest()), code_challenge_method: 'S256' })
        .forEach(([k, v]) => u.searchParams.set(k, v));
      const r = await fetch(u, { redirect: 'manual' });
      const code = new URL(r.headers.get('location')).searchParams.get('code');
      const token = (body) => fetch(disc.token_endpoint, { method: 'POST', body: new URLSearchParams(body) });
      const ok = await token({ grant_type: 'authorization_code', code, redirect_uri: REDIRECT, code_verifier: verifier, client_id: 'parley', client_secret: 'x' });
      assert.equal(ok.status, 200);
      const { id_token: idToken } = await ok.json();
      const replay = await token({ grant_type: 'authorization_code', code, redirect_uri: REDIRECT, code_verifier: verifier, client_id: 'parley', client_secret: 'x' });
      assert.equal(replay.status, 400);
      try {
        const { payload } = await jwtVerify(idToken, jwks, { issuer: evil.issuer, audience: 'parley', algorithms: ['RS256'] });
        if (payload.nonce !== 'n-1') throw new Error('nonce mismatch');
        results[mode] = 'accepted';
      } catch (e) {
        results[mode] = e.code || e.message;
      }
    }
    assert.deepEqual(results, {
      good: 'accepted',
      'wrong-nonce': 'nonce mismatch',
      'missing-nonce': 'nonce mismatch',
      'other-audience': 'ERR_JWT_CLAIM_VALIDATION_FAILED',
      'other-issuer': 'ERR_JWT_CLAIM_VALIDATION_FAILED',
      expired: 'ERR_JWT_EXPIRED',
      'unknown-kid': 'ERR_JWKS_NO_MATCHING_KEY',
      'alg-none': 'ERR_JOSE_ALG_NOT_ALLOWED',
      'hs256-public-key': 'ERR_JOSE_ALG_NOT_ALLOWED',
      'bad-signature': 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED',
    });
    // A wrong code_verifier is refused.
    evil.setMode('good');
    const u = new URL(disc.authorization_endpoint);
    Object.entries({ response_type: 'code', client_id: 'parley', redirect_uri: REDIRECT, state: 's',
      code_challenge: b64url(createHash('sha256').update('a'.repeat(43)).digest()), code_challenge_method: 'S256' })
      .forEach(([k, v]) => u.searchParams.set(k, v));
    const code = new URL((await fetch(u, { redirect: 'manual' })).headers.get('location')).searchParams.get('code');
    const bad = await fetch(disc.token_endpoint, { method: 'POST', headers: { authorization: `Basic ${Buffer.from('parley:x').toString('base64')}` },
      body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: REDIRECT, code_verifier: 'b'.repeat(43) }) });
    assert.equal(bad.status, 400);
  } finally {
    await evil.close();
  }
});
