"""The one error hierarchy of egress.

Every error egress raises on purpose derives from `EgressError`, so a caller can
catch "anything egress refused" in one clause.  Errors about input a person
wrote (a policy, a scenario) are also `ValueError`s, because that is what they
are to ordinary Python code.
"""

from __future__ import annotations


class EgressError(Exception):
    """Base of every error egress raises deliberately."""


class ConfigError(EgressError, ValueError):
    """A configuration value was wrong; the message names the key, the value and
    what was expected."""


class PolicyError(EgressError):
    """A policy hook raised or returned the wrong type; the message names the hook."""


class ProtocolError(EgressError):
    """A driver fed the engine an event it cannot handle in its current state.

    The message has one fixed shape, ``"session 17 cannot handle Response(354) in
    state MAIL_SENT"``, and the engine's state is unchanged when it is raised.
    """


class ReplyParseError(EgressError):
    """Bytes from a remote server could not be parsed as an SMTP reply."""


class JournalError(EgressError):
    """A journal could not be encoded, decoded or replayed."""
