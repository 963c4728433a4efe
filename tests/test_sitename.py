"""site_name: KumoMTA's factor_names over the MX set, exactly."""

from __future__ import annotations

from engine.events import MxRecord
from engine.sitename import factor_names, is_null_mx, site_name


def mx(*pairs: tuple[int, str]) -> tuple[MxRecord, ...]:
    return tuple(MxRecord(preference=p, host=h) for p, h in pairs)


def test_common_suffix_folded() -> None:
    names = ["mta5.am0.yahoodns.net", "mta6.am0.yahoodns.net", "mta7.am0.yahoodns.net"]
    assert factor_names(names) == "(mta5|mta6|mta7).am0.yahoodns.net"


def test_case_is_normalised() -> None:
    names = ["mta5.AM0.yahoodns.net", "mta6.am0.yAHOodns.net", "mta7.am0.yahoodns.net"]
    assert factor_names(names) == "(mta5|mta6|mta7).am0.yahoodns.net"


def test_gmail_shorter_name_gives_optional_label() -> None:
    gmail = mx((5, "gmail-smtp-in.l.google.com."), (10, "alt1.gmail-smtp-in.l.google.com."),
               (20, "alt2.gmail-smtp-in.l.google.com."), (30, "alt3.gmail-smtp-in.l.google.com."),
               (40, "alt4.gmail-smtp-in.l.google.com."))
    assert site_name(gmail) == "(alt1|alt2|alt3|alt4)?.gmail-smtp-in.l.google.com"


def test_order_of_first_appearance_is_kept() -> None:
    a = ["example-com.mail.protection.outlook.com.", "mx-biz.mail.am0.yahoodns.net.",
         "mx-biz.mail.am0.yahoodns.net."]
    assert factor_names(a) == (
        "(example-com|mx-biz).mail.(protection|am0).(outlook|yahoodns).(com|net)")
    assert factor_names(list(reversed(a))) == (
        "(mx-biz|example-com).mail.(am0|protection).(yahoodns|outlook).(net|com)")


def test_preference_then_name_decides_order_not_answer_order() -> None:
    one = mx((20, "b.example.net"), (10, "z.example.net"), (20, "a.example.net"))
    two = mx((20, "A.example.net"), (20, "b.example.net"), (10, "z.example.net."))
    assert site_name(one) == site_name(two) == "(z|a|b).example.net"


def test_single_host_is_its_own_name() -> None:
    assert site_name(mx((10, "MX.Example.COM."))) == "mx.example.com"


def test_null_mx_detected() -> None:
    assert is_null_mx(mx((0, ".")))
    assert not is_null_mx(mx((0, "mx.example.com")))
    assert not is_null_mx(mx((0, "."), (10, "mx.example.com")))
