"""What a spool keeps beside its journal: the policy and shaping files in force.

The journal holds the inputs; the engine's decisions follow from them and from
the policy and the shaping files the service ran with.  A restart, `egress
check --spool` and `egress replay` fold the journal again, so they need those
files as they were, not as they are now wherever they came from.  `egress
deliver` keeps them at start, and a reload keeps the ones it installed:

* ``SPOOL/policy.py`` (``policy.lua`` for a Lua policy, with the modules and
  data files it read beside it);
* ``SPOOL/shaping/``: a copy of each ``--shaping`` file, named by its
  content's hash (``shaping.1f2e3d4c5b6a.toml``), and ``files.json``, which
  lists them in merge order with the path each was read from.

Every file is written whole under a temporary name and renamed over the old
one (0600 in the 0700 spool, `replace_file`).  The list is written after the
copies it names, and the copies it no longer names are removed after it, so a
crash at any point leaves a list naming the old set or the new one, all there.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ConfigError
from engine.live.private_files import private_dir, replace_file

__all__ = ["SHAPING_DIR", "KeptFile", "keep_policy", "keep_shaping", "kept_shaping",
           "shaping_in_spool"]

SHAPING_DIR = "shaping"
MANIFEST = "files.json"


@dataclass(frozen=True, slots=True)
class KeptFile:
    """One shaping file kept in a spool: where it was read from, and its copy."""

    file: str  # the path it was read from, absolute (a reload reads it there again)
    copy: Path  # SPOOL/shaping/<name>.<hash>.toml
    text: str


def keep_policy(spool: Path, policy_path: str | Path, files: Sequence[str] = ()) -> None:
    """Copy the policy file into `spool` as policy.py or policy.lua (removing the
    other), with `files` (a Lua policy's modules and data files, relative to its
    directory) beside it.  OSError when the spool cannot be written."""
    source = Path(policy_path)
    name = "policy.lua" if source.suffix == ".lua" else "policy.py"
    private_dir(spool)
    for src, target in [(source, spool / name),
                        *((source.parent / r, spool / r) for r in files)]:
        if src.resolve() == target.resolve():
            continue  # started from the spool's own copy
        private_dir(target.parent)
        replace_file(target, src.read_bytes())
    (spool / ("policy.py" if name == "policy.lua" else "policy.lua")).unlink(missing_ok=True)


def _copy_name(name: str, text: str) -> str:
    path = Path(name)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    return f"{path.stem or 'shaping'}.{digest}{path.suffix or '.toml'}"


def keep_shaping(spool: Path, contents: Sequence[tuple[str, Any]]) -> None:
    """Make the spool's shaping files `contents`, the (name, TOML text) pairs a
    service loaded from its ``--shaping`` files, in merge order (an empty list:
    none).  A spool that keeps none and is given none is left alone."""
    folder = spool / SHAPING_DIR
    if not contents and not (folder / MANIFEST).exists():
        return
    private_dir(folder)
    listed = []
    for name, text in contents:
        assert isinstance(text, str), f"shaping file {name!r} kept as text"
        copy = folder / _copy_name(name, text)
        if not copy.is_file() or copy.read_text(encoding="utf-8") != text:
            replace_file(copy, text.encode("utf-8"))
        listed.append({"file": os.path.abspath(name), "copy": copy.name})
    replace_file(folder / MANIFEST, (json.dumps({"files": listed}, indent=2) + "\n").encode())
    names = {entry["copy"] for entry in listed} | {MANIFEST}
    for old in folder.iterdir():
        if old.name not in names and old.is_file():
            old.unlink(missing_ok=True)


def kept_shaping(spool: str | Path) -> list[KeptFile] | None:
    """The shaping files `spool` keeps, in merge order; None when it keeps no
    list (a spool never given ``--shaping``).  A ConfigError names a list or a
    copy that cannot be read or does not match its hash."""
    folder = Path(spool) / SHAPING_DIR
    manifest = folder / MANIFEST
    try:
        raw = manifest.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):  # no list (or no spool: named later)
        return None
    except OSError as exc:
        raise ConfigError(f"{manifest}: cannot read: {exc.strerror or exc}") from None
    try:
        entries = json.loads(raw)["files"]
        pairs = [(str(e["file"]), str(e["copy"])) for e in entries]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{manifest}: not a list of kept shaping files ({exc}); give the "
                          "files with --shaping") from None
    out = []
    for file, name in pairs:
        copy = folder / Path(name).name
        try:
            text = copy.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{copy}: the spool's copy of {file} cannot be read "
                              f"({exc.strerror or exc}); give the files with --shaping") from None
        if _copy_name(file, text) != copy.name:
            raise ConfigError(f"{copy}: the spool's copy of {file} was changed (its content "
                              "does not match its name's hash); give the files with --shaping")
        out.append(KeptFile(file, copy, text))
    return out


def shaping_in_spool(spool: str | Path) -> tuple[Any, list[KeptFile] | None]:
    """(the kept files loaded and merged, an `engine.shaping.Shaping` or None; the
    kept files).  Each loads under the path it was read from, so a reload reads
    it there again; a ConfigError says when the copies no longer load."""
    from engine.shaping_load import load_shaping

    kept = kept_shaping(spool)
    if not kept:
        return None, kept
    try:
        return load_shaping([(k.file, k.text) for k in kept]), kept
    except ConfigError as exc:
        raise ConfigError(f"the shaping files kept in {Path(spool) / SHAPING_DIR} do not "
                          f"load: {exc}; give the files with --shaping") from None
