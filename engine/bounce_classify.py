"""Bounce classification as KumoMTA does it: rules files, categories, first match.

KumoMTA (crates/bounce-classify/src/lib.rs) classifies a response by its
single line, ``"<code> <class>.<subject>.<detail> <content>"``
(`rfc5321::Response::to_single_line`), against an ordered list of regular
expressions, each mapped to a class; the first rule (in file order, then in
the order of the files) that matches anywhere in the line wins, and no match
is ``Uncategorized``.  A rules file is TOML or JSON with one table,
``rules = {Class = ["regex", ...]}``; a class outside the predefined set is
kept as the user wrote it.  Only bounce-classifiable record types are
classified (crates/kumo-log-types/src/lib.rs, `is_bounce_classifiable`); with
no classifier configured, every record says ``Uncategorized``.

Pure: rules come in as text or mappings (the driver reads the files).
`IANA_RULES` is KumoMTA's assets/bounce_classifier/iana.toml (Apache-2.0,
KumoCorp), the rules KumoMTA ships for the IANA enhanced status codes.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from typing import Any

from engine.errors import ConfigError

__all__ = [
    "BOUNCE_CLASSES",
    "CLASSIFIABLE",
    "IANA_RULES",
    "UNCATEGORIZED",
    "BounceClassifier",
    "classifier_params",
    "single_line",
]

#: KumoMTA's PreDefinedBounceClass, in its order.
BOUNCE_CLASSES: tuple[str, ...] = (
    "InvalidRecipient", "DNSFailure", "SpamBlock", "SpamContent", "ProhibitedAttachment",
    "RelayDenied", "AutoReply", "TransientFailure", "Subscribe", "Unsubscribe",
    "ChallengeResponse", "BadConfiguration", "BadConnection", "BadDomain", "ContentRelated",
    "InactiveMailbox", "InvalidSender", "MessageExpired", "NoAnswerFromHost", "PolicyRelated",
    "ProtocolErrors", "QuotaIssues", "RelayingIssues", "RoutingErrors", "SpamRelated",
    "VirusRelated", "AuthenticationFailed", "TooManyRecipients", "Uncategorized",
)
UNCATEGORIZED = "Uncategorized"

#: Record types KumoMTA runs through the classifier (RecordType::is_bounce_classifiable).
CLASSIFIABLE: frozenset[str] = frozenset({
    "Bounce", "TransientFailure", "Expiration", "AdminBounce", "OOB", "Feedback", "Rejection",
})
_CACHE_LIMIT = 4096


def single_line(code: int, enhanced: Mapping[str, int] | None, content: str) -> str:
    """KumoMTA's `Response::to_single_line`: code, enhanced code, content with
    each line break (CRLF, CR or LF) made one space."""
    line = f"{code} "
    if enhanced is not None:
        line += f"{enhanced['class']}.{enhanced['subject']}.{enhanced['detail']} "
    if "\r" in content or "\n" in content:
        content = content.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")
    return line + content


class BounceClassifier:
    """An ordered list of (class, compiled rule); `classify` returns the class of
    the first rule that matches."""

    __slots__ = ("_cache", "rules")

    def __init__(self, rules: Iterable[tuple[str, str]] = ()) -> None:
        compiled: list[tuple[str, re.Pattern[str]]] = []
        for cls, rule in rules:
            if not isinstance(cls, str) or not cls:
                raise ConfigError(f"bounce classifier: class {cls!r} is not a non-empty string")
            try:
                compiled.append((cls, re.compile(rule)))
            except (re.error, TypeError) as err:
                raise ConfigError(
                    f"bounce classifier: rule {rule!r} of {cls} does not compile: {err}"
                ) from None
        self.rules: tuple[tuple[str, re.Pattern[str]], ...] = tuple(compiled)
        self._cache: dict[str, str] = {}

    @classmethod
    def from_files(cls, texts: Iterable[tuple[str, str]]) -> BounceClassifier:
        """Merge rules files given as (name, text), in order; a name ending in
        ``.json`` is JSON, anything else TOML (KumoMTA's two formats)."""
        rules: list[tuple[str, str]] = []
        for name, text in texts:
            rules.extend(_rules_of(name, text))
        return cls(rules)

    @classmethod
    def iana(cls) -> BounceClassifier:
        """A classifier with KumoMTA's IANA rules only."""
        return cls.from_files([("iana.toml", IANA_RULES)])

    def classify_line(self, line: str) -> str:
        """The class of a response's single line (`single_line`)."""
        hit = self._cache.get(line)
        if hit is not None:
            return hit
        result = UNCATEGORIZED
        for cls, pattern in self.rules:
            if pattern.search(line) is not None:
                result = cls
                break
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[line] = result
        return result

    def classify(self, response: Mapping[str, Any]) -> str:
        """The class of a record's ``response`` object."""
        return self.classify_line(
            single_line(response["code"], response["enhanced_code"], response["content"]))

    def classify_record(self, record: dict[str, Any]) -> dict[str, Any]:
        """Set ``bounce_classification`` on `record` when its type is
        classifiable, as KumoMTA's `apply_classification` does; returns it."""
        if record["type"] in CLASSIFIABLE:
            record["bounce_classification"] = self.classify(record["response"])
        return record


#: KumoMTA's ClassifierParams (crates/kumod/src/logging/classify.rs): `files`
#: is required; the others tune its worker pool and caches, which egress's
#: in-line classifier has no use for, so they are checked and kept only.
_PARAMS = ("files", "back_pressure", "pool_size", "cache_size", "uncategorized_cache_size")
#: Where KumoMTA installs its shipped rules; egress carries them (`IANA_RULES`).
SHIPPED_IANA = "bounce_classifier/iana.toml"


def classifier_params(params: Mapping[str, Any]) -> list[str]:
    """The rules file names of ``kumo.configure_bounce_classifier { files = {...} }``
    after KumoMTA's checks (unknown keys refused, ``.toml``/``.json`` only)."""
    extra = sorted(set(params) - set(_PARAMS))
    if extra:
        raise ConfigError(f"configure_bounce_classifier: unknown parameter {extra[0]!r}; "
                          f"expected {', '.join(_PARAMS)}")
    files = params.get("files")
    if not isinstance(files, list | tuple) or not all(isinstance(f, str) for f in files):
        raise ConfigError(f"configure_bounce_classifier: files is {files!r}; expected a list "
                          "of rules file names")
    for key in _PARAMS[1:]:
        value = params.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"configure_bounce_classifier: {key} is {value!r}; expected an "
                              "integer >= 0")
    for name in files:
        if not name.endswith((".toml", ".json")):
            raise ConfigError(f"configure_bounce_classifier: {name}: classifier files must have "
                              "either .toml or .json filename extension")
    return list(files)


def _rules_of(name: str, text: str) -> list[tuple[str, str]]:
    try:
        data = json.loads(text) if name.endswith(".json") else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"bounce classifier: {name} is not a rules file: {err}") from None
    table = data.get("rules") if isinstance(data, dict) else None
    if not isinstance(table, dict) or set(data) != {"rules"}:
        raise ConfigError(
            f"bounce classifier: {name} must hold exactly one table, rules = "
            "{Class = [\"regex\", ...]}"
        )
    out: list[tuple[str, str]] = []
    for cls, patterns in table.items():
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            raise ConfigError(f"bounce classifier: {name}: rules.{cls} is not a list of strings")
        out.extend((cls, p) for p in patterns)
    return out


IANA_RULES = """# This file contains rules that match SMTP ENHANCEDSTATUSCODES
# codes as defined in the IANA registry:
# https://www.iana.org/assignments/smtp-enhanced-status-codes/smtp-enhanced-status-codes.xhtml
# to bounce classifications.
[rules]
InvalidRecipient = [
  "^(451|550) [45]\\\\.1\\\\.[1234] ",
  "^45[02] [45]\\\\.2\\\\.4 ", # Mailing list expansion
  "^5\\\\d{2} [45]\\\\.7\\\\.17 ", # RRVS: Mailbox owner has changed
]
BadDomain = [
  "^(451|550) [45]\\\\.1\\\\.10 ", # NULL MX
  "^5\\\\d{2} [45]\\\\.7\\\\.18 ", # RRVS: domain owner has changed
]
InactiveMailbox = [
  "^(451|550) [45]\\\\.1\\\\.[6] ",
  "^[45]\\\\d{2} [45]\\\\.2\\\\.1 ",
  "^525 [45]\\\\.7\\\\.13 ", # User account disabled
]
InvalidSender = [
  "^(451|550) [45]\\\\.1\\\\.[78] ",
  "^\\\\d{3} [45]\\\\.7\\\\.27 ", # Send address has NULL MX
]
QuotaIssues = [
  "^552 [45]\\\\.2\\\\.2 ",
  "^552 [45]\\\\.2\\\\.3 ",
  "^452 [45]\\\\.3\\\\.1 ", # Mail System Full
  "^55[24] [45]\\\\.3\\\\.4 ", # Message too large for system
]
NoAnswerFromHost = [
  "^451 [45]\\\\.4\\\\.1 ",
]
BadConnection = [
  "^421 [45]\\\\.4\\\\.2 ",
]
DNSFailure = [
  "^(451|550) [45]\\\\.4\\\\.3 ", # directory server failure
]
RoutingErrors = [
  "^\\\\d{3} [45]\\\\.4\\\\.4 ", # unable to route
  "^\\\\d{3} [45]\\\\.4\\\\.6 ", # routing loop detected
]
TransientFailure = [
  "^451 [45]\\\\.4\\\\.5 ", # Congestion
]
MessageExpired = [
  "^\\\\d{3} [45]\\\\.4\\\\.7 ", # delivery time expired
]
ProtocolErrors = [
  "^\\\\d{3} [45]\\\\.5\\\\.\\\\d+ ", # misc protocol error
  "^\\\\d{3} [45]\\\\.6\\\\.\\\\d+ ", # content negotiation protocol error
]
AuthenticationFailed = [
  # Note that a couple of x.7.x codes map to BadDomain and InvalidRecipient
  # so take care to avoid an ambiguous match here
  "^5\\\\d{2} [45]\\\\.7\\\\.(0|1|2|3|4|5|6|7|8|9|10|11|12|14|15|19|20|21|22|23|24|25|26|29|30) ",
]
PolicyRelated = [
  "^\\\\d{3} [45]\\\\.7\\\\.38 ", # mail flood detected
]
TooManyRecipients = [
  "^[45]\\\\d{2} [45]\\\\.5\\\\.3 ", # too many recipients
]
"""
