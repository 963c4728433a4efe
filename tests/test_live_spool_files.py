"""engine.live.spool_files: the policy and shaping files a spool keeps (private,
replaced whole), read back in merge order, refused with one line when changed;
a reload keeps what it installed and a refused one leaves the spool alone."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main
from engine.engine import Engine
from engine.errors import ConfigError
from engine.live.private_files import replace_file
from engine.live.reload import load_checked
from engine.live.spool_files import (
    keep_policy,
    keep_shaping,
    kept_shaping,
    shaping_in_spool,
)
from engine.policy import Policy
from tests.support.live_harness import LOOPBACK_POLICY_FILE

A = '["default"]\nconnection_limit = 3\n'
B = '["default"]\nconnection_limit = 5\n'


def _modes(folder: Path) -> set[int]:
    return {f.stat().st_mode & 0o777 for f in folder.iterdir()}


def test_copies_are_private_listed_in_merge_order_and_read_back(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    first, second = tmp_path / "a" / "shaping.toml", tmp_path / "b" / "shaping.toml"
    keep_shaping(spool, [(str(first), A), (str(second), B)])  # one basename, two files
    folder = spool / "shaping"
    assert folder.stat().st_mode & 0o777 == 0o700 and _modes(folder) == {0o600}
    kept = kept_shaping(spool)
    assert kept is not None
    assert [(k.file, k.text) for k in kept] == [(str(first), A), (str(second), B)]
    assert [k.copy.parent for k in kept] == [folder, folder]
    shaping, _ = shaping_in_spool(spool)  # loaded under the paths they came from
    assert shaping.files == (str(first), str(second))
    assert shaping.values("example.com", "unspecified", "example.com")["connection_limit"] == 5


def test_relative_names_are_kept_absolute(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    keep_shaping(tmp_path / "spool", [("shaping.toml", A)])
    [kept] = kept_shaping(tmp_path / "spool") or []
    assert kept.file == str(tmp_path / "shaping.toml")


def test_a_new_set_replaces_the_old_one_whole(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    keep_shaping(spool, [("/etc/a.toml", A), ("/etc/b.toml", B)])
    keep_shaping(spool, [("/etc/a.toml", B)])
    kept = kept_shaping(spool) or []
    assert [(k.file, k.text) for k in kept] == [("/etc/a.toml", B)]
    assert sorted(f.name for f in (spool / "shaping").iterdir()) == sorted(
        ["files.json", kept[0].copy.name])  # no old copy, no temporary file
    keep_shaping(spool, [])  # --no-shaping: an empty list, not a missing one
    assert kept_shaping(spool) == [] and shaping_in_spool(spool) == (None, [])
    assert [f.name for f in (spool / "shaping").iterdir()] == ["files.json"]


def test_a_spool_given_none_keeps_no_list(tmp_path: Path) -> None:
    keep_shaping(tmp_path, [])
    assert not (tmp_path / "shaping").exists()
    assert kept_shaping(tmp_path) is None and shaping_in_spool(tmp_path) == (None, None)


def test_a_changed_copy_or_list_is_refused_with_one_line(tmp_path: Path) -> None:
    keep_shaping(tmp_path, [("/etc/a.toml", A)])
    [kept] = kept_shaping(tmp_path) or []
    kept.copy.write_text(B)
    with pytest.raises(ConfigError, match=r"the spool's copy of /etc/a.toml was changed .*"
                       r"give the files with --shaping$"):
        kept_shaping(tmp_path)
    kept.copy.unlink()
    with pytest.raises(ConfigError, match=r"copy of /etc/a.toml cannot be read \(No such file"):
        kept_shaping(tmp_path)
    (tmp_path / "shaping" / "files.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"files.json: not a list of kept shaping files"):
        kept_shaping(tmp_path)


def test_copies_that_no_longer_load_name_the_folder(tmp_path: Path) -> None:
    keep_shaping(tmp_path, [("/etc/a.toml", '["default"]\nconection_limit = 3\n')])
    with pytest.raises(ConfigError, match=r"^the shaping files kept in .*shaping do not load: "
                       r"/etc/a.toml: .*; give the files with --shaping$"):
        shaping_in_spool(tmp_path)


def test_replace_file_is_whole_and_private(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("old")
    os.chmod(target, 0o644)
    replace_file(target, b"new")
    assert target.read_bytes() == b"new" and target.stat().st_mode & 0o777 == 0o600
    assert [f.name for f in tmp_path.iterdir()] == ["f"]


def test_keep_policy_copies_a_python_or_a_lua_policy(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    (tmp_path / "p.py").write_text("py")
    keep_policy(spool, tmp_path / "p.py")
    assert (spool / "policy.py").read_text() == "py" and _modes(spool) == {0o600}
    keep_policy(spool, spool / "policy.py")  # restarted from the spool's own copy
    assert (spool / "policy.py").read_text() == "py"
    (tmp_path / "init.lua").write_text("lua")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "limits.toml").write_text("x = 1")
    keep_policy(spool, tmp_path / "init.lua", ["data/limits.toml"])
    assert (spool / "policy.lua").read_text() == "lua" and not (spool / "policy.py").exists()
    assert (spool / "data" / "limits.toml").read_text() == "x = 1"
    assert (spool / "data").stat().st_mode & 0o777 == 0o700


def test_a_reload_keeps_what_it_installed_and_a_refused_one_nothing(tmp_path: Path) -> None:
    spool, policy_file, shaping_file = tmp_path / "spool", tmp_path / "p.py", tmp_path / "s.toml"
    policy_file.write_text(LOOPBACK_POLICY_FILE.format(port=2525))
    shaping_file.write_text(A)
    eng = Engine(Policy.from_file(policy_file))
    load_checked(policy_file, eng, spool, [str(shaping_file)])
    assert [k.text for k in kept_shaping(spool) or []] == [A]
    assert (spool / "policy.py").read_text() == policy_file.read_text()
    shaping_file.write_text(B)
    load_checked(policy_file, eng, spool, [str(shaping_file)])
    assert [k.text for k in kept_shaping(spool) or []] == [B]
    shaping_file.write_text("not toml [")
    with pytest.raises(ValueError, match="refused, the one in force stays"):
        load_checked(policy_file, eng, spool, [str(shaping_file)])
    assert [k.text for k in kept_shaping(spool) or []] == [B]
    manifest = json.loads((spool / "shaping" / "files.json").read_text())
    assert [e["file"] for e in manifest["files"]] == [str(shaping_file)]


def test_no_shaping_and_shaping_together_are_one_line(tmp_path: Path, capsys: Any) -> None:
    assert main(["deliver", "--policy", str(tmp_path / "p.py"), "--spool", str(tmp_path),
                 "--no-shaping", "--shaping", "s.toml"]) == 1
    assert capsys.readouterr().err == \
        "egress deliver: error: --no-shaping: cannot be given with --shaping\n"
