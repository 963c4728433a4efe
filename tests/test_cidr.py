"""CidrSet: parsing, membership (v4, v6, mapped), equality, errors."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.cidr import CidrSet
from engine.errors import ConfigError

LOOP = CidrSet(["127.0.0.0/8", "::1", "0.0.0.0", "::"])


@pytest.mark.parametrize(
    ("addr", "inside"),
    [
        ("127.0.0.1", True),
        ("127.255.255.255", True),
        ("128.0.0.0", False),
        ("126.255.255.255", False),
        ("0.0.0.0", True),
        ("0.0.0.1", False),
        ("::1", True),
        ("::", True),
        ("::2", False),
        ("::ffff:127.0.0.1", True),  # IPv4-mapped spelling cannot bypass it
        ("[::1]", True),
        ("8.8.8.8", False),
        ("2001:db8::1", False),
    ],
)
def test_membership(addr: str, inside: bool) -> None:
    assert (addr in LOOP) is inside
    assert (addr in LOOP) is inside  # second time through the cache


def test_membership_of_ipaddress_objects_and_other_types() -> None:
    assert ipaddress.ip_address("127.0.0.9") in LOOP
    assert ipaddress.ip_address("10.0.0.1") not in LOOP
    assert 12 not in LOOP


def test_invalid_address_raises() -> None:
    with pytest.raises(ValueError, match="'not-an-ip' is not an IP address"):
        _ = "not-an-ip" in LOOP


def test_merging_overlapping_and_adjacent_networks() -> None:
    cs = CidrSet(["10.0.0.0/25", "10.0.0.128/25", "10.0.0.5", "2001:db8::/32"])
    assert "10.0.0.200" in cs
    assert "10.0.1.0" not in cs
    assert "2001:db8:ffff::1" in cs
    assert "2001:db9::" not in cs
    assert len(cs) == 4


def test_repr_equality_hash() -> None:
    a = CidrSet(["::1", "127.0.0.0/8"])
    b = CidrSet(["127.0.0.0/8", "::1/128", "::1"])
    assert a == b
    assert hash(a) == hash(b)
    assert repr(a) == "CidrSet(['127.0.0.0/8', '::1/128'])"
    assert a.to_list() == ["127.0.0.0/8", "::1/128"]
    assert list(a) == ["127.0.0.0/8", "::1/128"]
    assert a != CidrSet(["::1"])
    assert not CidrSet()
    assert repr(CidrSet()) == "CidrSet([])"


def test_errors_name_the_key_and_entry() -> None:
    with pytest.raises(ConfigError, match=r"skip_hosts: '10\.0\.0\.1/8' has host bits set; "
                       r"did you mean '10\.0\.0\.0/8'\?"):
        CidrSet(["10.0.0.1/8"], key="skip_hosts")
    with pytest.raises(ConfigError, match=r"prohibited_hosts: 'bogus' is not a CIDR network"):
        CidrSet(["bogus"], key="prohibited_hosts")
    with pytest.raises(ConfigError, match=r"skip_hosts: 42 is not a CIDR network"):
        CidrSet([42], key="skip_hosts")
    with pytest.raises(ConfigError, match="is a single string"):
        CidrSet("10.0.0.0/8", key="skip_hosts")
    with pytest.raises(ConfigError, match=r"skip_hosts: 5 is not a CIDR list"):
        CidrSet.coerce(5, key="skip_hosts")
    assert CidrSet.coerce("10.0.0.0/8") == CidrSet(["10.0.0.0/8"])


@given(
    st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(8, 32)), min_size=1, max_size=8),
    st.integers(0, 2**32 - 1),
)
def test_membership_agrees_with_ipaddress(nets: list[tuple[int, int]], probe: int) -> None:
    networks = [ipaddress.ip_network((n, p), strict=False) for n, p in nets]
    cs = CidrSet([str(n) for n in networks])
    addr = ipaddress.ip_address(probe)
    assert (str(addr) in cs) == any(addr in n for n in networks)
