"""Accounts (docs/auth.md) with stomp.py, over TCP and WebSocket: CONNECT with username and
password, with an access token (JWT) as passcode, or `Authorization: Bearer`; wrong credentials
get an ERROR and the connection closes; in-band token renewal (SEND /app/auth); guests are
refused by a strict server and marked (`sender-guest`) where they are allowed.

Users are registered with POST /api/register (urllib) and tokens come from POST /api/login.
Parley only: RabbitMQ has neither the REST API nor these rules, so the whole module is skipped
with INTEROP_TARGET=rabbitmq.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.parley_only(reason="Parley accounts: /api/register, /api/login, JWT passcodes")

def password_of(user: str) -> str:
    return f"pw-{user}-correct-horse"


@pytest.fixture
def account(strict_target, uniq):
    """account(prefix) -> a freshly registered user name on the strict server (password_of(name))."""

    def make(prefix: str = "user") -> str:
        name = uniq(prefix)[:32]
        strict_target.register(name, password_of(name))
        return name

    return make


def assert_refused(c, what: str):
    """CONNECT must fail: an ERROR frame and then the close (or, on WebSocket, a refused upgrade)."""
    with pytest.raises(Exception) as info:  # ServerError, or stomp.py's ConnectFailedException
        c.connect()
    assert c.connected_frame is None, f"{what}: connected anyway as {c.connected_frame.headers!r}"
    if c.errors:
        assert c.disconnected.wait(5), f"{what}: connection still open after the ERROR"
    return info.value


def error_message(c) -> str:
    assert c.errors, f"no ERROR frame (connection just closed) for {c.name}"
    return c.errors[0].headers.get("message", "")


def round_trip(clients, target, sender_client, dest_prefix: str, uniq):
    """sender_client publishes to a topic another session of the same server reads; returns the MESSAGE."""
    dest = f"/topic/{uniq(dest_prefix)}"
    reader = clients(None, "tcp", "1.2", tgt=target, credentials=sender_client.credentials)
    reader.subscribe(dest)
    sender_client.send(dest, "signed", receipt=True)
    return reader.wait_messages(1)[0]


# ----------------------------------------------------------------------------------------------
# Connecting with an account
# ----------------------------------------------------------------------------------------------


def test_login_and_password(clients, strict_target, account, transport, version, uniq):
    user = account("pw")
    c = clients(user, transport, version, tgt=strict_target, credentials=(user, password_of(user)))
    assert c.connected_frame.headers.get("user-name") == user, c.connected_frame.headers
    m = round_trip(clients, strict_target, c, "pw", uniq)
    assert m.body == "signed"
    assert m.headers.get("sender") == user, m.headers
    assert m.headers.get("sender-guest", "false") != "true", m.headers


def test_jwt_as_passcode(clients, strict_target, account, transport, uniq):
    user = account("jwt")
    token = strict_target.login(user, password_of(user))
    # passcode alone (no login) ...
    c = clients(None, transport, "1.2", tgt=strict_target, credentials=(None, token))
    assert c.connected_frame.headers.get("user-name") == user, c.connected_frame.headers
    # ... and with login equal to the token's subject.
    c2 = clients(user, transport, "1.2", tgt=strict_target, credentials=(user, token))
    assert c2.connected_frame.headers.get("user-name") == user
    m = round_trip(clients, strict_target, c, "jwt", uniq)
    assert m.headers.get("sender") == user, m.headers


def test_authorization_bearer_header(clients, strict_target, account, transport):
    user = account("bearer")
    token = strict_target.login(user, password_of(user))
    c = clients(None, transport, "1.2", tgt=strict_target, connect=False, credentials=(None, None))
    c.connect(headers={"Authorization": f"Bearer {token}"})
    assert c.connected_frame.headers.get("user-name") == user, c.connected_frame.headers


def test_bearer_on_the_websocket_upgrade(clients, strict_target, account):
    user = account("upgrade")
    token = strict_target.login(user, password_of(user))
    c = clients(None, "ws", "1.2", tgt=strict_target, credentials=(None, None),
                ws_header={"Authorization": f"Bearer {token}"})
    assert c.connected_frame.headers.get("user-name") == user, c.connected_frame.headers


# ----------------------------------------------------------------------------------------------
# Refusals
# ----------------------------------------------------------------------------------------------


def test_wrong_password_is_refused(clients, strict_target, account, transport):
    user = account("wrong")
    c = clients(user, transport, "1.2", tgt=strict_target, connect=False, credentials=(user, "not-the-password"))
    assert_refused(c, "wrong password")
    assert error_message(c).startswith("authentication failed"), c.errors[0].headers
    # The right one still works (one failure is far from the throttle).
    ok = clients(user, transport, "1.2", tgt=strict_target, credentials=(user, password_of(user)))
    assert ok.connected_frame.headers.get("user-name") == user


def test_unknown_user_is_refused(clients, strict_target, transport, uniq):
    user = uniq("ghost")[:32]
    c = clients(user, transport, "1.2", tgt=strict_target, connect=False, credentials=(user, "whatever-password"))
    assert_refused(c, "unknown user")
    assert error_message(c).startswith("authentication failed"), c.errors[0].headers


def test_bad_or_foreign_tokens_are_refused(clients, strict_target, account, transport):
    alice, bob = account("alice"), account("bob")
    token = strict_target.login(alice, password_of(alice))
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")  # signature broken
    for what, creds in [
        ("a forged signature", (None, forged)),
        ("not a JWT at all", (None, "not.a.jwt")),
        ("login naming someone else than the token", (bob, token)),
    ]:
        c = clients(None, transport, "1.2", tgt=strict_target, connect=False, credentials=creds)
        assert_refused(c, what)
        assert error_message(c).startswith("authentication failed"), (what, c.errors[0].headers)


def test_strict_server_refuses_guests(clients, strict_target, transport, uniq):
    for creds in [(uniq("guest")[:32], None), (None, None)]:
        c = clients(None, transport, "1.2", tgt=strict_target, connect=False, credentials=creds)
        assert_refused(c, f"guest CONNECT {creds!r} on a strict server")
        if transport == "tcp":
            assert error_message(c).startswith("authentication failed"), c.errors[0].headers


# ----------------------------------------------------------------------------------------------
# Renewal and guests
# ----------------------------------------------------------------------------------------------


def test_in_band_token_renewal(clients, strict_target, account, transport, uniq):
    """SEND /app/auth with a fresh token (header access-token, or as the body): RECEIPT, and the
    session goes on as the same user."""
    user = account("renew")
    c = clients(None, transport, "1.2", tgt=strict_target,
                credentials=(None, strict_target.login(user, password_of(user))))
    c.send("/app/auth", "", headers={"access-token": strict_target.login(user, password_of(user))}, receipt=True)
    c.send("/app/auth", strict_target.login(user, password_of(user)), receipt=True)
    m = round_trip(clients, strict_target, c, "renew", uniq)
    assert m.headers.get("sender") == user


def test_guests_are_marked_and_cannot_take_account_names(clients, target, transport, uniq):
    """On the session server (guests allowed): a guest's MESSAGE has sender-guest:true, an
    account's does not; a guest cannot use a registered name."""
    member = uniq("member")[:32]
    target.register(member, password_of(member))
    acct = clients(member, transport, "1.2", credentials=(member, password_of(member)))
    guest = clients(uniq("visitor")[:32], transport, "1.2")
    dest = f"/topic/{uniq('mixed')}"
    acct.subscribe(dest)
    guest.send(dest, "from a guest", receipt=True)
    acct.send(dest, "from an account", receipt=True)
    got = acct.wait_messages(2)
    by_body = {m.body: m.headers for m in got}
    assert by_body["from a guest"].get("sender-guest") == "true", by_body
    assert by_body["from an account"].get("sender-guest", "false") != "true", by_body
    impostor = clients(member, transport, "1.2", connect=False, credentials=(member, None))
    assert_refused(impostor, "a guest with a registered name")
    assert "belongs to a registered user" in error_message(impostor), impostor.errors[0].headers
