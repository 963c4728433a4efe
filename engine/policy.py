"""The policy: the user's Python hooks, called by the engine, checked at the seam.

KumoMTA users write ``kumo.on('get_egress_path_config', function ... end)``;
egress users write::

    policy = Policy()

    @policy.on("get_egress_path_config")
    def path(domain, source_name, site_name):
        return make_egress_path(connection_limit=8)

The engine never calls a hook directly.  It calls the four methods below,
which supply KumoMTA's defaults when no hook is registered, check the type a
hook returns, and wrap anything a hook raises in a `PolicyError` that names
the hook and its arguments, so a broken policy is reported as the user's
code at fault, not as an engine crash.  A `ConfigError` raised inside a hook
(a bad key) is kept as the cause and its text repeated in the message.
"""

from __future__ import annotations

import difflib
import importlib.util
import itertools
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from engine.bounce_classify import IANA_RULES, SHIPPED_IANA, BounceClassifier, classifier_params
from engine.config import EgressPathConfig, make_egress_path
from engine.errors import ConfigError, PolicyError
from engine.queue_config import (
    UNSPECIFIED,
    EgressPool,
    EgressSource,
    QueueConfig,
    make_egress_pool,
    make_egress_source,
    make_queue_config,
)

__all__ = ["HOOKS", "Policy"]

#: The hook names a policy may register, with the arguments each receives.
HOOKS: dict[str, tuple[str, ...]] = {
    "get_egress_path_config": ("domain", "source_name", "site_name"),
    "get_queue_config": ("domain", "tenant", "campaign", "routing_domain"),
    "get_egress_source": ("source_name",),
    "get_egress_pool": ("pool_name",),
}

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
_module_ids = itertools.count(1)


class Policy:
    """A set of hooks; see the module docstring.  Load one from a file with
    `Policy.from_file`."""

    __slots__ = ("_hooks", "bounce_classifier", "files", "settings", "shaping", "source")

    def __init__(self) -> None:
        self._hooks: dict[str, Callable[..., Any]] = {}
        #: Where the policy came from (a file path), for messages.
        self.source: str | None = None
        #: What a Lua policy's mapped ``kumo`` calls asked for (docs/KUMOMTA.md),
        #: by function name, e.g. ``{"start_esmtp_listener": [{"listen": ...}]}``.
        self.settings: dict[str, list[Any]] = {}
        #: Files beside a Lua policy that it read (its modules and data),
        #: relative to its directory: what a copy of the policy needs.
        self.files: tuple[str, ...] = ()
        #: KumoMTA shaping files loaded beside the policy (engine.shaping.Shaping),
        #: which an `Engine` made with this policy applies; None: no shaping.
        self.shaping: Any = None
        #: The records' classifier (`configure_bounce_classifier`); None: every
        #: record says Uncategorized, as KumoMTA without one.
        self.bounce_classifier: BounceClassifier | None = None

    def on(self, hook_name: str) -> Callable[[F], F]:
        """Register the decorated function as the hook `hook_name`."""
        if hook_name not in HOOKS:
            close = difflib.get_close_matches(str(hook_name), HOOKS, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise PolicyError(
                f"unknown hook {hook_name!r}{hint} (known hooks: {', '.join(HOOKS)})"
            )

        def register(fn: F) -> F:
            if not callable(fn):
                raise PolicyError(f"hook {hook_name!r}: {fn!r} is not callable")
            if hook_name in self._hooks:
                raise PolicyError(
                    f"hook {hook_name!r} is registered twice "
                    f"({_describe(self._hooks[hook_name])} and {_describe(fn)})"
                )
            self._hooks[hook_name] = fn
            return fn

        return register

    def configure_bounce_classifier(self, files: Sequence[str] = (), *,
                                    base: str | os.PathLike[str] | None = None,
                                    **params: Any) -> BounceClassifier:
        """KumoMTA's ``kumo.configure_bounce_classifier { files = {...} }``
        (crates/kumod/src/logging/classify.rs): merge the rules files, in order,
        into the classifier whose class every classifiable record then carries
        in ``bounce_classification``.  Relative names are read from `base` (the
        working directory when None); KumoMTA's shipped
        ``.../bounce_classifier/iana.toml``, when not present here, is egress's
        built-in copy.  Configured once, as in KumoMTA."""
        if self.bounce_classifier is not None:
            raise ConfigError("configure_bounce_classifier: the classifier is already configured")
        names = classifier_params({"files": list(files), **params})
        texts = []
        for name in names:
            path = Path(base, name) if base is not None else Path(name)
            try:
                texts.append((name, path.read_text(encoding="utf-8")))
            except OSError as exc:
                if name.endswith(SHIPPED_IANA) and not path.exists():
                    texts.append((name, IANA_RULES))
                    continue
                raise ConfigError(f"configure_bounce_classifier: cannot read {str(path)!r}: "
                                  f"{exc.strerror or exc}") from None
        self.bounce_classifier = BounceClassifier.from_files(texts)
        return self.bounce_classifier

    def has_hook(self, hook_name: str) -> bool:
        """Whether a function is registered for `hook_name`."""
        return hook_name in self._hooks

    # -- the calls the engine makes ------------------------------------------

    def egress_path_config(
        self, domain: str, source_name: str, site_name: str
    ) -> EgressPathConfig:
        """The egress path config for (source, site); default `make_egress_path()`."""
        return self._call(
            "get_egress_path_config", (domain, source_name, site_name), EgressPathConfig,
            make_egress_path,
        )

    def queue_config(
        self, domain: str, tenant: str, campaign: str, routing_domain: str
    ) -> QueueConfig:
        """The scheduled queue's config; default `make_queue_config()`."""
        return self._call(
            "get_queue_config", (domain, tenant, campaign, routing_domain), QueueConfig,
            make_queue_config,
        )

    def egress_source(self, name: str) -> EgressSource:
        """The egress source called `name`; default a source with only that name."""
        source = self._call(
            "get_egress_source", (name,), EgressSource, lambda: make_egress_source(name)
        )
        if source.name != name:
            raise PolicyError(
                f"hook 'get_egress_source' called with ({name!r}) returned a source named "
                f"{source.name!r}; expected the name it was asked for"
            )
        return source

    def egress_pool(self, name: str) -> EgressPool:
        """The egress pool called `name`; default (only for ``"unspecified"``) the
        pool holding the ``"unspecified"`` source."""
        if "get_egress_pool" not in self._hooks and name != UNSPECIFIED:
            raise PolicyError(
                f"egress pool {name!r} is used by a queue config but the policy has no "
                "'get_egress_pool' hook to define it"
            )
        pool = self._call("get_egress_pool", (name,), EgressPool, lambda: make_egress_pool(name))
        if pool.name != name:
            raise PolicyError(
                f"hook 'get_egress_pool' called with ({name!r}) returned a pool named "
                f"{pool.name!r}; expected the name it was asked for"
            )
        return pool

    def _call(
        self,
        hook: str,
        args: tuple[str, ...],
        expected: type[T],
        default: Callable[[], T],
    ) -> T:
        fn = self._hooks.get(hook)
        if fn is None:
            return default()
        shown = ", ".join(repr(a) for a in args)
        try:
            result = fn(*args)
        except Exception as exc:
            raise PolicyError(
                f"hook {hook!r} ({_describe(fn)}) called with ({shown}) raised "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(result, expected):
            raise PolicyError(
                f"hook {hook!r} ({_describe(fn)}) called with ({shown}) returned "
                f"{type(result).__name__}; expected {expected.__name__} "
                f"(build it with make_{_MAKERS[expected.__name__]})"
            )
        return result

    # -- loading ---------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Policy:
        """Import the Python file at `path` and return its module-level ``policy``;
        a ``.lua`` file is a KumoMTA policy, run by `engine.lua_policy`.

        Each load gets a fresh, unique module name, so loading two policies (or
        one twice) never mixes their state.  Errors are `PolicyError`s naming
        the file (and the line, for a syntax error).
        """
        filename = os.fspath(path)
        if not os.path.isfile(filename):
            raise PolicyError(f"policy file {filename!r} does not exist or is not a file")
        if filename.endswith(".lua"):  # a KumoMTA init.lua: engine.lua_policy runs it
            from engine.lua_policy import load_lua

            lua_policy = cls()
            lua_policy.settings, lua_policy.files = load_lua(filename, lua_policy.on,
                                                              owner=lua_policy)
            for params in lua_policy.settings.get("configure_bounce_classifier", []):
                try:
                    lua_policy.configure_bounce_classifier(
                        **params, base=os.path.dirname(os.path.abspath(filename)))
                except ConfigError as exc:
                    raise PolicyError(f"policy file {filename!r}: {exc}") from None
            lua_policy.source = filename
            return lua_policy
        module_name = f"_egress_policy_{next(_module_ids)}"
        spec = importlib.util.spec_from_file_location(module_name, filename)
        if spec is None or spec.loader is None:
            raise PolicyError(f"policy file {filename!r} cannot be imported as Python")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except SyntaxError as exc:
            sys.modules.pop(module_name, None)
            raise PolicyError(
                f"policy file {filename!r} line {exc.lineno}: syntax error: {exc.msg}"
            ) from None
        except Exception as exc:
            sys.modules.pop(module_name, None)
            line = _line_in(exc, filename)
            where = f" line {line}" if line else ""
            raise PolicyError(
                f"policy file {filename!r}{where} raised {type(exc).__name__}: {exc}"
            ) from exc
        policy = getattr(module, "policy", None)
        if policy is None:
            raise PolicyError(
                f"policy file {filename!r} defines no module-level 'policy'; "
                "expected `policy = Policy()` with hooks registered on it"
            )
        if not isinstance(policy, Policy):
            raise PolicyError(
                f"policy file {filename!r}: 'policy' is a {type(policy).__name__}, "
                "expected an engine.Policy"
            )
        policy.source = filename
        return policy

    def __repr__(self) -> str:
        hooks = ", ".join(sorted(self._hooks)) or "no hooks"
        where = f" from {self.source!r}" if self.source else ""
        return f"<Policy{where}: {hooks}>"


_MAKERS = {
    "EgressPathConfig": "egress_path(...)",
    "QueueConfig": "queue_config(...)",
    "EgressSource": "egress_source(...)",
    "EgressPool": "egress_pool(...)",
}


def _describe(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__qualname__", None) or repr(fn)
    code = getattr(fn, "__code__", None)
    if code is not None:
        return f"{name} at {os.path.basename(code.co_filename)}:{code.co_firstlineno}"
    return name


def _line_in(exc: BaseException, filename: str) -> int | None:
    tb = exc.__traceback__
    line = None
    target = os.path.abspath(filename)
    while tb is not None:
        if os.path.abspath(tb.tb_frame.f_code.co_filename) == target:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
