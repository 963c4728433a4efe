"""engine.session and engine.wire together against a real SMTP server
(aiosmtpd on loopback, STARTTLS with a trustme certificate, AUTH PLAIN,
pipelining): a minimal blocking driver carries out the effects."""

from __future__ import annotations

from typing import Any

from engine.effects import (
    Close,
    Send,
    StartTls,
    Verb,
)
from engine.events import (
    Closed,
    Connected,
    Response,
    TlsEstablished,
)
from engine.live.keysource_resolve import resolve_keysource
from engine.reply import Reply
from engine.session import (
    Session,
    SessionClosed,
    State,
    TxnMessage,
)
from tests.support.session_kit import (
    CONN,
    make,
)

# -- the full dialog ------------------------------------------------------------------


# -- against a real server on loopback (aiosmtpd), through engine.wire -----------------


def _run_against(sink: Any, session: Session, messages: list[tuple[TxnMessage, bytes]],
                 ctx: Any = None) -> list[Any]:
    """A minimal blocking driver: carries out the session's effects on a real
    socket, parses what comes back with `ReplyParser`, and feeds it in."""
    import socket
    import time

    from engine.wire import ReplyParser, encode_auth_plain, encode_body, encode_command

    bodies = {m.id: body for m, body in messages}
    todo = list(messages)
    outcomes: list[Any] = []
    sock: Any = socket.create_connection(sink.address, timeout=5)
    parser = ReplyParser()
    pending = list(session.connect(time.time())[0])
    step = session.handle(Connected(at=time.time(), conn=CONN))
    while True:
        effects, outs = step
        outcomes += outs
        for e in [*pending, *effects]:
            if isinstance(e, Send):
                wire = b""
                for c in e.commands:
                    if c.verb is Verb.BODY:
                        wire += encode_body(bodies[c.arg])
                    elif c.verb is Verb.AUTH_PLAIN:
                        wire += encode_auth_plain(c.arg, resolve_keysource(c.secret))
                    else:
                        wire += encode_command(c)
                sock.sendall(wire)
            elif isinstance(e, StartTls):
                sock = ctx.wrap_socket(sock, server_hostname=e.settings.server_name)
                step = session.handle(TlsEstablished(
                    at=time.time(), conn=CONN, protocol=sock.version(), cipher=sock.cipher()[0],
                    peer_subject="CN=mx.example.com"))
            elif isinstance(e, Close):
                sock.close()
        pending = []
        if isinstance(outcomes[-1] if outcomes else None, SessionClosed):
            return outcomes
        if any(isinstance(e, StartTls) for e in effects):
            continue
        if session.state is State.IDLE:
            if todo:
                msg, _ = todo.pop(0)
                step = session.start_transaction(time.time(), msg)
            else:
                step = session.quit(time.time())
            continue
        replies: list[Reply] = []
        while not replies:
            data = sock.recv(65536)
            if not data:
                step = session.handle(Closed(at=time.time(), conn=CONN))
                break
            replies = parser.feed(data)
        else:
            effects_all: list[Any] = []
            for r in replies:
                fx, outs = session.handle(Response(at=time.time(), conn=CONN, reply=r))
                effects_all += fx
                outcomes += outs
            step = (effects_all, [])


def test_a_real_dialog_with_aiosmtpd_over_starttls_and_auth() -> None:
    from tests.support.smtp_servers import SinkServer

    with SinkServer(hostname="mx.example.com", tls="trustme", auth=("scott", "tiger"),
                    reject_recipients={"bad@example.com": "550 5.1.1 no such user"}) as sink:
        s = make("Required", smtp_auth_plain_username="scott",
                 smtp_auth_plain_password={"key_data": "tiger"})
        s.address, s.port = sink.address
        body = b"Subject: hi\n\n.leading dot\nbye"
        msgs = [(TxnMessage("m1", "s@example.org", ("bad@example.com", "good@example.com"),
                            len(body)), body),
                (TxnMessage("m2", "", ("good@example.com",), 3), b"two")]
        outcomes = _run_against(sink, s, msgs, sink.client_context())
        assert [(type(o).__name__, getattr(o, "recipient", ""), getattr(o, "status", ""))
                for o in outcomes] == [
            ("SessionReady", "", ""),
            ("RecipientResult", "bad@example.com", "permanent"),
            ("RecipientResult", "good@example.com", "delivered"),
            ("TransactionDone", "", ""),
            ("SessionReady", "", ""),
            ("RecipientResult", "good@example.com", "delivered"),
            ("TransactionDone", "", ""),
            ("SessionReady", "", ""),
            ("SessionClosed", "", ""),
        ]
        assert outcomes[1].reply == Reply.make(550, "5.1.1", "no such user")
        assert outcomes[2].reply.code == 250
        assert s.tls_info["tls_protocol_version"].startswith("TLS")
        assert [(m.sender, m.recipients, m.content, m.tls, m.login) for m in sink.messages] == [
            ("s@example.org", ("good@example.com",), b"Subject: hi\r\n\r\n.leading dot\r\nbye\r\n",
             True, "scott"),
            ("<>", ("good@example.com",), b"two\r\n", True, "scott"),  # aiosmtpd: null sender
        ]
        assert sink.auth_seen_in_plaintext is False
