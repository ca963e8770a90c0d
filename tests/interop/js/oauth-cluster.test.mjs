// Signing in with another site on two `parley serve` nodes sharing a fresh PostgreSQL database
// (and one JWT secret): a sign-in started on one node is finished by the other, which is what a
// balancer without sticky sessions does to a browser. Against the real oidc-provider.
//
//   PARLEY_BIN=target/release/parley node --test oauth-cluster.test.mjs
//
// Needs PostgreSQL at PARLEY_TEST_DATABASE (default postgres://postgres@127.0.0.1:5432/test) with
// psql, as tests/run.sh prepares; missing, the test fails.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startParley } from './socketio-helpers.mjs';
import { freePort } from './timeout.mjs';
import { startProvider } from '../../oidc/provider.mjs';
import { Agent, signInAtProvider } from '../../oidc/agent.mjs';

const IS_RABBIT = (process.env.INTEROP_TARGET ?? 'parley') === 'rabbitmq';
const ADMIN_DB = process.env.PARLEY_TEST_DATABASE ?? 'postgres://postgres@127.0.0.1:5432/test';
const DB = `parley_oauth_cluster_${process.pid}`;
const SECRET = 'cluster-client-secret-not-a-real-one';
const PERSON = { sub: 'op-4001', preferred_username: 'wren' };

let tmp;
let op;
let nodes = [];

function psql(sql) {
  const r = spawnSync('psql', [ADMIN_DB, '-v', 'ON_ERROR_STOP=1', '-qAtc', sql], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 0, `psql ${ADMIN_DB} -c '${sql}': ${r.error?.message ?? ''}${r.stderr}`);
  return r.stdout;
}

/** The agent's session cookie exchanged at `node` for an access token, then GET /api/me there. */
async function whoAmI(agent, node) {
  const r = await agent.postJson(`${node.url}/api/token/refresh`, {}, { headers: { origin: node.url } });
  assert.equal(r.status, 200, `refresh at ${node.url}: HTTP ${r.status} ${r.text}`);
  const me = await fetch(`${node.url}/api/me`, { headers: { authorization: `Bearer ${r.json().access_token}` } });
  assert.equal(me.status, 200);
  return (await me.json()).username;
}

before(async () => {
  if (IS_RABBIT) return;
  tmp = mkdtempSync(join(tmpdir(), 'parley-oauth-cluster-'));
  psql(`DROP DATABASE IF EXISTS ${DB}`);
  psql(`CREATE DATABASE ${DB}`);
  const database = `${ADMIN_DB.slice(0, ADMIN_DB.lastIndexOf('/'))}/${DB}`;
  const jwtSecret = join(tmp, 'jwt-secret');
  writeFileSync(jwtSecret, 'a-jwt-secret-both-nodes-share-and-it-is-long-enough', { mode: 0o600 });
  const clientSecret = join(tmp, 'client-secret');
  writeFileSync(clientSecret, SECRET, { mode: 0o600 });
  // Both nodes are "the site": the provider sends people back to the second one.
  const ports = [await freePort(), await freePort()];
  const site = `http://127.0.0.1:${ports[1]}`;
  op = await startProvider({
    clients: [{ client_id: 'parley', client_secret: SECRET, redirect_uris: [`${site}/auth/test/callback`] }],
    users: [PERSON],
    anyLogin: false,
  });
  for (const port of ports) {
    nodes.push(await startParley({
      httpPort: port,
      args: [
        '--database', database,
        '--jwt-secret-file', jwtSecret,
        '--public-url', site,
        '--auth-provider', `name=test,label=Test ID,issuer=${op.issuer},client-id=parley,client-secret-file=${clientSecret}`,
      ],
    }));
  }
});

after(async () => {
  for (const node of nodes) {
    await node.stop();
    rmSync(node.dataDir, { recursive: true, force: true });
  }
  await op?.close();
  if (!IS_RABBIT) spawnSync('psql', [ADMIN_DB, '-qAtc', `DROP DATABASE IF EXISTS ${DB} WITH (FORCE)`], { timeout: 30_000 });
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

test('a sign-in started on one node is finished by the other, and its state works once on either', { skip: IS_RABBIT && 'Parley only' }, async () => {
  const [first, second] = nodes;
  const agent = new Agent('wren');
  const start = await agent.get(`${first.url}/auth/test/login?return_to=/%23lobby`);
  assert.equal(start.status, 303, `login at the first node: HTTP ${start.status}`);
  const back = await signInAtProvider(agent, start.location, { login: PERSON.sub, consent: true });
  assert.ok(back.startsWith(`${second.url}/auth/test/callback?`), back);
  // A thief copies the cookies before the callback, then tries the same state at the first node.
  const thief = agent.clone('thief');
  const done = await agent.get(back);
  assert.equal(done.status, 303, `callback at the second node: HTTP ${done.status} ${done.text.slice(0, 300)}`);
  assert.equal(new URL(done.location, second.url).href, `${second.url}/#lobby`);
  assert.equal(await whoAmI(agent, second), 'wren');
  assert.equal(await whoAmI(agent, first), 'wren', 'the session is the cluster\'s, not a node\'s');

  const replay = await thief.get(back.replace(second.url, first.url));
  assert.equal(replay.status, 400, `replay at the first node: HTTP ${replay.status}`);
  assert.match(replay.text, /<p id="auth-error">[^<]*did not start here/);
  assert.ok(!replay.setCookies.some((c) => /^parley_session=[^;]+/.test(c)), 'no session for the replay');
});
