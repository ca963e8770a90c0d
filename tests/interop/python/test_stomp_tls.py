"""stomp.py over STOMP over TLS (Parley's --stomp-tls listener), trusting a test CA made with the
openssl CLI; the session stays up across a certificate swap and SIGHUP while new handshakes get
the new certificate."""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import TARGET, ParleyServer, Target, parley_bin
from stomp_client import WAIT, Client

pytestmark = pytest.mark.skipif(TARGET == "rabbitmq", reason="parley-only: STOMP over TLS with a test CA")


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


class Ca:
    """A CA for one test, issuing certificates for 127.0.0.1 and localhost."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="parley-test-ca-"))
        self.cert, key = self.dir / "ca.pem", self.dir / "ca.key"
        self._key = key
        self._serial = 1
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", str(key), "-out", str(self.cert), "-days", "30", "-subj", "/CN=Parley test CA",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def issue(self, name: str) -> tuple[Path, Path]:
        cert, key, csr, ext = (self.dir / f"{name}.{x}" for x in ("pem", "key", "csr", "ext"))
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                       "extendedKeyUsage=serverAuth\n")
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key),
                "-out", str(csr), "-subj", f"/CN={name}")
        openssl("x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self._key),
                "-set_serial", str(self._serial), "-days", "30", "-extfile", str(ext), "-out", str(cert))
        self._serial += 1
        return cert, key


def install(pair: tuple[Path, Path], to: tuple[Path, Path]) -> None:
    for src, dst in zip(pair, to):
        aside = dst.with_suffix(".new")
        shutil.copyfile(src, aside)
        aside.replace(dst)


def der(cert: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.read_text())


def served_der(port: int, ca: Path) -> bytes:
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.getpeercert(binary_form=True)


@pytest.fixture
def tls_server():
    ca = Ca()
    served = (ca.dir / "served.pem", ca.dir / "served.key")
    install(ca.issue("first"), served)
    server = ParleyServer(parley_bin(), extra_args=("--tls-cert", str(served[0]), "--tls-key", str(served[1]),
                                                    "--stomp-tls", "127.0.0.1:0", "--tls-check-interval", "0s"))
    server.start()
    target = Target("parley", ("127.0.0.1", server.stomp_tls_port), ("127.0.0.1", server.http_port), "/stomp", server)
    clients: list[Client] = []

    def client(user: str) -> Client:
        c = Client(target, "tcp", "1.2", user=user)
        c.conn.set_ssl(for_hosts=[target.tcp], ca_certs=str(ca.cert))
        clients.append(c)
        c.connect()
        return c

    yield ca, served, server, client
    for c in clients:
        c.close()
    server.stop()


def test_stomp_py_over_tls(tls_server):
    _, _, _, client = tls_server
    alice, bob = client("alice"), client("bob")
    sub = bob.subscribe("/topic/tls-py")
    alice.send("/topic/tls-py", "hello over TLS", receipt=True)
    assert [m.body for m in bob.wait_messages(1, sub)] == ["hello over TLS"]


def test_a_session_survives_a_certificate_swap_and_sighup(tls_server):
    ca, served, server, client = tls_server
    carol = client("carol")
    sub = carol.subscribe("/topic/tls-swap")
    carol.send("/topic/tls-swap", "before", receipt=True)
    carol.wait_messages(1, sub)

    new = ca.issue("second")
    install(new, served)
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + WAIT
    while served_der(server.stomp_tls_port, ca.cert) != der(new[0]):
        assert time.monotonic() < deadline, "the new certificate is not served after SIGHUP"
        time.sleep(0.1)

    carol.send("/topic/tls-swap", "after", receipt=True)
    assert [m.body for m in carol.wait_messages(2, sub)] == ["before", "after"]
    dave = client("dave")  # a new session handshakes with the new certificate
    dave.send("/topic/tls-swap", "from dave", receipt=True)
    assert carol.wait_messages(3, sub)[-1].body == "from dave"
