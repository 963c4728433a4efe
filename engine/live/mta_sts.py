"""MTA-STS (RFC 8461) for the live driver: the TXT record, the HTTPS policy
fetch, strict parsing, and the policy cache.

The engine asks `FetchMtaSts(domain)` and wants `MtaStsResolved(policy=...)`
back, the policy or None; what a policy means for delivery (enforce ->
Required and only matching MX hosts, testing -> OpportunisticInsecure) is the
engine's business (`engine.mxplan`, matching with `engine.mta_sts_match`).

The control flow is RFC 8461 section 5.1, kept in one method (`fetch`):

1. Look up TXT ``_mta-sts.<domain>``; keep records starting ``v=STSv1``; more
   than one, or a malformed one, counts as none.
2. A cached, unexpired policy whose id equals the TXT id is used as is.
3. Otherwise GET ``https://mta-sts.<domain>/.well-known/mta-sts.txt``: the
   certificate must be valid for ``mta-sts.<domain>``, the status 200 (no
   redirects followed), the type text/plain, the body at most 64 KiB.
4. A policy that fails to fetch or parse is logged with its reason and
   replaced by the cached one if still unexpired, else by None.  With no
   valid TXT record an unexpired cached policy is still used.

Policies are cached for their ``max_age`` (by the injectable clock) together
with the TXT id they were fetched under, so a new id triggers a refetch.
Port, CA file and resolver are parameters so tests can point everything at
loopback.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from engine.events import MtaStsPolicy, MtaStsResolved
from engine.live.dns import DnsLookupError, LiveResolver

__all__ = ["MtaStsError", "MtaStsFetcher", "parse_policy", "parse_txt_id"]

log = logging.getLogger("egress.mta_sts")

MAX_BODY = 64 * 1024
MAX_MAX_AGE = 31557600
_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,31}")
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_MX_PATTERN = re.compile(rf"(\*\.)?{_LABEL}(\.{_LABEL})+\.?", re.IGNORECASE)


class MtaStsError(Exception):
    """A TXT record, a fetch or a policy text was not acceptable; the message says why."""


def parse_txt_id(records: tuple[str, ...]) -> str | None:
    """The policy id of the one ``v=STSv1`` TXT record, or None (none, several, or
    malformed: RFC 8461 3.1 treats all three as "no record")."""
    sts = [r for r in records if r.startswith("v=STSv1")]
    if len(sts) != 1:
        return None
    fields = {}
    for part in sts[0].split(";"):
        part = part.strip(" \t")
        if not part:
            continue
        key, eq, value = part.partition("=")
        if not eq:
            return None
        fields.setdefault(key.strip(), value.strip())
    if fields.get("v") != "STSv1":
        return None
    policy_id = fields.get("id", "")
    return policy_id if _ID.fullmatch(policy_id) else None


def parse_policy(text: str) -> MtaStsPolicy:
    """Parse a policy body strictly (RFC 8461 3.2); raise `MtaStsError` naming the fault.

    Required: ``version: STSv1``, ``mode`` (enforce | testing | none),
    ``max_age`` (0..31557600 seconds), and at least one ``mx`` unless mode is
    none.  Unknown fields are ignored; a repeated field other than mx is an error.
    """
    seen: dict[str, str] = {}
    mx: list[str] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r")
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        if not colon or not _FIELD_NAME.fullmatch(key):
            raise MtaStsError(f"policy line {number} is not 'key: value': {line[:80]!r}")
        value = value.strip(" \t")
        if key == "mx":
            if not _MX_PATTERN.fullmatch(value):
                raise MtaStsError(f"policy mx {value!r} is not a host name or '*.' pattern")
            mx.append(value.rstrip(".").lower())
        elif key in seen and key in ("version", "mode", "max_age"):
            raise MtaStsError(f"policy field {key!r} appears twice")
        else:
            seen[key] = value
    version = seen.get("version")
    if version != "STSv1":
        raise MtaStsError(f"policy version must be 'STSv1', not {version!r}")
    mode = seen.get("mode")
    if mode not in ("enforce", "testing", "none"):
        raise MtaStsError(f"policy mode must be enforce, testing or none, not {mode!r}")
    max_age = seen.get("max_age")
    if max_age is None or not re.fullmatch(r"[0-9]{1,10}", max_age):
        raise MtaStsError(f"policy max_age must be a whole number of seconds, not {max_age!r}")
    if int(max_age) > MAX_MAX_AGE:
        raise MtaStsError(f"policy max_age {max_age} is above the limit {MAX_MAX_AGE}")
    if not mx and mode != "none":
        raise MtaStsError(f"policy in mode {mode} lists no mx")
    return MtaStsPolicy(mode=mode, mx=tuple(mx), max_age=float(int(max_age)))


@dataclass(frozen=True, slots=True)
class _Cached:
    policy_id: str
    policy: MtaStsPolicy
    expires: float


class MtaStsFetcher:
    """Finds and caches MTA-STS policies.

    ``MtaStsFetcher(resolver, port=8443, cafile="ca.pem")`` fetches from that
    port and trusts that CA (tests); the defaults are 443 and the system store.
    `timeout` bounds each HTTPS fetch, in seconds.  `last_reason[domain]`
    holds why the latest lookup of a domain gave no fresh policy.
    """

    def __init__(
        self,
        resolver: LiveResolver,
        *,
        port: int = 443,
        cafile: str | None = None,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.resolver = resolver
        self.port = port
        self.timeout = timeout
        self._ssl = ssl.create_default_context(cafile=cafile)
        self._clock = clock
        self._cache: dict[str, _Cached] = {}
        self.last_reason: dict[str, str] = {}

    async def fetch(self, domain: str, at: float) -> MtaStsResolved:
        """The policy of `domain` (RFC 8461 5.1), as the event the engine expects."""
        domain = domain.rstrip(".").lower()
        now = self._clock()
        cached = self._cache.get(domain)
        if cached is not None and cached.expires <= now:
            del self._cache[domain]
            cached = None
        try:
            policy_id = parse_txt_id(await self.resolver.resolve_txt(f"_mta-sts.{domain}"))
            txt_problem = "no valid v=STSv1 TXT record at _mta-sts." + domain
        except DnsLookupError as exc:
            policy_id, txt_problem = None, f"TXT lookup failed: {exc.detail}"
        if policy_id is None:
            self._note(domain, txt_problem, quiet=cached is None)
            return MtaStsResolved(at=at, domain=domain, policy=cached.policy if cached else None)
        if cached is not None and cached.policy_id == policy_id:
            return MtaStsResolved(at=at, domain=domain, policy=cached.policy)
        try:
            policy = parse_policy(await self._get(domain))
        except MtaStsError as exc:
            self._note(domain, f"policy for {domain} (id {policy_id}) refused: {exc}")
            return MtaStsResolved(at=at, domain=domain, policy=cached.policy if cached else None)
        self._cache[domain] = _Cached(policy_id, policy, self._clock() + policy.max_age)
        self.last_reason.pop(domain, None)
        return MtaStsResolved(at=at, domain=domain, policy=policy)

    def _note(self, domain: str, reason: str, *, quiet: bool = False) -> None:
        self.last_reason[domain] = reason
        (log.debug if quiet else log.warning)("MTA-STS %s: %s", domain, reason)

    async def _get(self, domain: str) -> str:
        """GET the policy text over HTTPS; raise `MtaStsError` saying what went wrong."""
        host = f"mta-sts.{domain}"
        try:
            addresses = await self.resolver.resolve_addresses(host)
        except DnsLookupError as exc:  # pragma: no cover - resolve_addresses swallows these
            raise MtaStsError(f"cannot resolve {host}: {exc.detail}") from None
        if not addresses:
            raise MtaStsError(f"{host} has no address")
        problems = []
        for address in addresses:
            try:
                return await asyncio.wait_for(self._get_from(host, address), self.timeout)
            except TimeoutError:
                problems.append(f"{address}: no response in {self.timeout:g}s")
            except ssl.SSLCertVerificationError as exc:
                problems.append(f"{address}: certificate not valid for {host}: "
                                f"{exc.verify_message}")
            except (OSError, ssl.SSLError) as exc:
                problems.append(f"{address}: {exc}")
            except MtaStsError as exc:
                raise MtaStsError(f"https://{host}/.well-known/mta-sts.txt: {exc}") from None
        raise MtaStsError(f"cannot fetch https://{host}/.well-known/mta-sts.txt: "
                          + "; ".join(problems))

    async def _get_from(self, host: str, address: str) -> str:
        reader, writer = await asyncio.open_connection(
            address, self.port, ssl=self._ssl, server_hostname=host
        )
        try:
            writer.write(
                f"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\n"
                "User-Agent: egress\r\nAccept: text/plain\r\nConnection: close\r\n\r\n".encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
            status, headers = _parse_head(head)
            if status != 200:
                raise MtaStsError(f"HTTP status {status} (redirects are not followed)")
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            if ctype != "text/plain":
                raise MtaStsError(f"content type {ctype or 'missing'!r}, expected text/plain")
            if headers.get("transfer-encoding", "").lower() == "chunked":
                body = await _read_chunked(reader)
            elif "content-length" in headers:
                length = int(headers["content-length"])
                if length > MAX_BODY:
                    raise MtaStsError(f"policy of {length} bytes exceeds {MAX_BODY}")
                body = await reader.readexactly(length)
            else:
                body = await reader.read(MAX_BODY + 1)
            if len(body) > MAX_BODY:
                raise MtaStsError(f"policy exceeds {MAX_BODY} bytes")
            return body.decode("utf-8", errors="strict")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            raise MtaStsError(f"malformed HTTP response: {exc}") from None
        finally:
            writer.close()


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise MtaStsError(f"not an HTTP status line: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            return body
        body += await reader.readexactly(size)
        await reader.readexactly(2)
        if len(body) > MAX_BODY:
            raise MtaStsError(f"policy exceeds {MAX_BODY} bytes")
