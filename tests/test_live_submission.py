"""engine/live/submission.py: the Submission shape, its helpers and the Python submit API.

The callback is a recording stand-in for the journal
(tests/support/listener_kit.py); no socket is involved.
"""

from __future__ import annotations

import asyncio

import pytest

from engine.live.submission import (
    Submission,
    metadata_from_headers,
    recipient_domain,
    split_by_domain,
    submit,
)
from tests.support.listener_kit import MSG, CommitRecorder


def test_custom_header_names_and_python_submit_api() -> None:
    journal = CommitRecorder()
    content = b"X-Kumo-Tenant: t1\r\nX-Tenant: ignored\r\n\r\nX-Kumo-Campaign: in body\r\n"

    got = asyncio.run(submit(journal, sender="a@s.test", recipients=["p@a.test", "q@b.test"],
                             content=content, tenant_header="X-Kumo-Tenant",
                             campaign_header="X-Kumo-Campaign"))
    assert got == ["id1", "id2"]
    assert [(s.domain, s.tenant, s.campaign, s.peer) for s in journal.committed] == [
        ("a.test", "t1", "", ""), ("b.test", "t1", "", "")]

    got = asyncio.run(submit(journal, sender="", recipients=["r@c.test"], content=MSG,
                             tenant="override", campaign=""))
    assert got == ["id3"]
    assert (journal.committed[2].tenant, journal.committed[2].campaign) == ("override", "")


def test_a_failed_commit_propagates_from_submit() -> None:
    journal = CommitRecorder()
    journal.fail = True
    with pytest.raises(OSError, match="disk full"):
        asyncio.run(submit(journal, sender="a@s.test", recipients=["p@a.test"], content=MSG))
    assert journal.committed == []


def test_submission_validation_and_helpers() -> None:
    assert metadata_from_headers(MSG) == ("acme", "spring sale")
    assert metadata_from_headers(b"no headers at all") == ("", "")
    assert [s.recipients for s in split_by_domain("a@s", ["b@X.t", "c@y.t", "d@x.T"], b"")] == [
        ("b@X.t", "d@x.T"), ("c@y.t",)]
    assert recipient_domain("Local@Example.TEST") == "example.test"
    with pytest.raises(ValueError, match="at least one recipient"):
        split_by_domain("a@s", [], b"")
    with pytest.raises(ValueError, match="'nodomain' is not an address of the form"):
        Submission("a@s", ("nodomain",), b"")
    with pytest.raises(ValueError, match="'a@' is not an address of the form"):
        recipient_domain("a@")
    with pytest.raises(ValueError, match=r"'b@x\.t' and 'c@y\.t' are in different domains"):
        Submission("a@s", ("b@x.t", "c@y.t"), b"")
    with pytest.raises(ValueError, match="content must be bytes, not str"):
        Submission("a@s", ("b@x.t",), "text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"recipients must be a non-empty tuple, not \[\]"):
        Submission("a@s", [], b"")  # type: ignore[arg-type]
