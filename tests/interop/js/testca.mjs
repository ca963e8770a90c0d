// A test certificate authority for the TLS suites (made with the openssl CLI): server
// certificates for 127.0.0.1 and localhost, files replaced whole as deployment tools do, and
// the SPKI hash Chromium pins a certificate by. Node built-ins only, so tests/e2e imports it too.

import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createHash, X509Certificate } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

function openssl(...args) {
  execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A new CA in a temporary directory: { ca (its PEM, for clients to trust), issue, served, install }. */
export function testCa() {
  const dir = mkdtempSync(join(tmpdir(), 'parley-test-ca-'));
  const caPem = join(dir, 'ca.pem');
  const caKey = join(dir, 'ca.key');
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
    '-keyout', caKey, '-out', caPem, '-days', '30', '-subj', '/CN=Parley test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  let serial = 1;

  /** A server certificate valid for `days` from now, with its own key: { cert, key } paths. */
  function issue(name, days = 30) {
    const cert = join(dir, `${name}.pem`);
    const key = join(dir, `${name}.key`);
    const csr = join(dir, `${name}.csr`);
    const ext = join(dir, `${name}.ext`);
    writeFileSync(ext, 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n');
    openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key,
      '-out', csr, '-subj', `/CN=${name}`);
    openssl('x509', '-req', '-in', csr, '-CA', caPem, '-CAkey', caKey, '-set_serial', String(serial++),
      '-days', String(days), '-extfile', ext, '-out', cert);
    return { cert, key };
  }

  /** Copies pair `from` over the files of pair `to` (written aside, then renamed). */
  function install(from, to) {
    for (const k of ['cert', 'key']) {
      copyFileSync(from[k], `${to[k]}.new`);
      renameSync(`${to[k]}.new`, to[k]);
    }
  }

  /** Where a server reads its certificate: `name` issued, copied to files tests replace. */
  function served(name) {
    const at = { cert: join(dir, 'served.pem'), key: join(dir, 'served.key') };
    install(issue(name), at);
    return at;
  }

  return { dir, ca: caPem, caBytes: readFileSync(caPem), issue, install, served };
}

/** A certificate file's SHA-256 fingerprint as Node's TLS sockets report it (AA:BB:…). */
export function fingerprint(certPath) {
  return new X509Certificate(readFileSync(certPath)).fingerprint256;
}

/** base64 SHA-256 of a certificate's SubjectPublicKeyInfo: what Chromium's
 *  --ignore-certificate-errors-spki-list pins. */
export function spkiHash(certPath) {
  const spki = new X509Certificate(readFileSync(certPath)).publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest('base64');
}

/** The stdout lines of a TLS Parley: { https, stomp, stompTls } ports, or null. */
export function parseTlsLines(lines) {
  const https = /^parley listening on https:\/\/127\.0\.0\.1:(\d+)$/.exec(lines[0] ?? '');
  const stomp = /^parley stomp listening on tcp:\/\/127\.0\.0\.1:(\d+)$/.exec(lines[1] ?? '');
  const stompTls = /^parley stomp-tls listening on tcp:\/\/127\.0\.0\.1:(\d+)$/.exec(lines[2] ?? '');
  if (!https || !stomp || !stompTls) return null;
  return { https: Number(https[1]), stomp: Number(stomp[1]), stompTls: Number(stompTls[1]) };
}
