"""The one shape mail enters egress in, and the Python API that shares its path.

A `Submission` is one message for one recipient domain (sender, recipients,
the raw RFC 5322 bytes, tenant, campaign, the submitting peer), handed to an
async callback that returns the new message ids only once the journal has
committed them.  Both doors use it: the SMTP `Listener`
(`engine.live.listener`) and `submit()` (for programs).  Keeping the callback
the only coupling means the delivery side (`engine.live.service`) owns the
journal and the engine, and the listener can be replaced without touching
either.

The rules both doors share live here so they cannot drift apart:

* A message whose recipients span several domains is split into one
  submission per domain, domains in order of first appearance (as KumoMTA
  does).
* Tenant and campaign come from the X-Tenant / X-Campaign headers (KumoMTA's
  convention; the names are configurable).  The headers are left in place.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32

__all__ = [
    "Submission",
    "SubmitCallback",
    "metadata_from_headers",
    "recipient_domain",
    "split_by_domain",
    "submit",
]


def recipient_domain(address: str) -> str:
    """The lowercased domain of ``local@domain``; ValueError for anything else."""
    at = address.rfind("@")
    if at <= 0 or at == len(address) - 1:
        raise ValueError(f"recipient {address!r} is not an address of the form local@domain")
    return address[at + 1 :].lower()


@dataclass(frozen=True, slots=True)
class Submission:
    """One message to accept: recipients all in one domain, the raw RFC 5322 bytes.

    `peer` is the submitting client's address ("" from the Python API), `helo`
    the name it gave in EHLO/HELO and `session_id` its connection's UUID, for
    the Reception record (KumoMTA's peer_address {name, addr} and session_id,
    crates/kumod/src/smtp_server.rs).
    """

    sender: str
    recipients: tuple[str, ...]
    content: bytes
    tenant: str = ""
    campaign: str = ""
    peer: str = ""
    helo: str = ""
    session_id: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.recipients, tuple) or not self.recipients:
            raise ValueError(f"Submission.recipients must be a non-empty tuple, not "
                             f"{self.recipients!r}")
        if not isinstance(self.content, bytes):
            raise ValueError(f"Submission.content must be bytes, not {type(self.content).__name__}")
        first = recipient_domain(self.recipients[0])
        for r in self.recipients[1:]:
            if recipient_domain(r) != first:
                raise ValueError(f"Submission recipients {self.recipients[0]!r} and {r!r} are in "
                                 "different domains; use split_by_domain()")

    @property
    def domain(self) -> str:
        """The recipients' domain, lowercased."""
        return recipient_domain(self.recipients[0])


SubmitCallback = Callable[[Submission], Awaitable[Sequence[str]]]
"""``await callback(submission)`` returns the new message ids once committed."""


def split_by_domain(
    sender: str, recipients: Iterable[str], content: bytes, *, tenant: str = "",
    campaign: str = "", peer: str = "", helo: str = "", session_id: str = "",
) -> list[Submission]:
    """One `Submission` per recipient domain, domains in order of first appearance."""
    groups: dict[str, list[str]] = {}
    for r in recipients:
        groups.setdefault(recipient_domain(r), []).append(r)
    if not groups:
        raise ValueError("a message needs at least one recipient")
    return [Submission(sender, tuple(rs), content, tenant, campaign, peer, helo, session_id)
            for rs in groups.values()]


_HEADER_PARSER = BytesHeaderParser(policy=compat32)


def metadata_from_headers(
    content: bytes, tenant_header: str = "X-Tenant", campaign_header: str = "X-Campaign",
) -> tuple[str, str]:
    """(tenant, campaign) read from the message's header block; "" when absent."""
    end = content.find(b"\r\n\r\n")
    head = content if end < 0 else content[: end + 4]
    headers = _HEADER_PARSER.parsebytes(head)

    def value(name: str) -> str:
        v = headers.get(name)
        return "" if v is None else " ".join(str(v).split())

    return value(tenant_header), value(campaign_header)


async def submit(
    callback: SubmitCallback,
    *,
    sender: str,
    recipients: Iterable[str],
    content: bytes,
    tenant: str | None = None,
    campaign: str | None = None,
    tenant_header: str = "X-Tenant",
    campaign_header: str = "X-Campaign",
) -> list[str]:
    """Accept a message from Python exactly as the SMTP listener would.

    Tenant and campaign default to the headers; explicit values win.  Returns
    every message id, after all of them were committed.
    """
    h_tenant, h_campaign = metadata_from_headers(content, tenant_header, campaign_header)
    subs = split_by_domain(
        sender, recipients, content,
        tenant=h_tenant if tenant is None else tenant,
        campaign=h_campaign if campaign is None else campaign,
    )
    ids: list[str] = []
    for sub in subs:
        ids.extend(await callback(sub))
    return ids
