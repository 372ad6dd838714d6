"""CLI values (mobieye/cli.py): random argv made of the real subcommands and flags with random
values, through build_parser, overrides_from and load_settings, as main() does before it runs
a command. Properties: argparse's own refusal (exit 2 with a message naming the flag) or a
Namespace; then Settings or a ConfigError naming the flag's setting."""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mobieye.cli import build_parser, overrides_from
from mobieye.config import load_settings
from mobieye.errors import ConfigError
from tests.fuzz.common import FUZZ, backstop_s, counted, non_string_top_level_key, short, within
from tests.fuzz.strategies import json_values

pytestmark = pytest.mark.timeout(backstop_s())

PARSER = build_parser()  # every installed subcommand (entry points included)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _commands(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (sub)command path, e.g. ("models", "profile"), with its parser."""
    out = []
    for name, sub in _subparsers(parser).items():
        out.append(((*prefix, name), sub))
        out += _commands(sub, (*prefix, name))
    return out


COMMANDS = _commands(PARSER)
assert COMMANDS, "build_parser() found no subcommands: is the package installed (pip -e .)?"

ints = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["0", "-1", "32", "416", "65535", "65536", " 8", "1_000", "0x10", "1e3",
                     "\u0663\u0662", "+5", "", "nan"]),
)  # fmt: skip
floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["nan", "inf", "-inf", "1e309", "-0", "0.0", "1e-320", "240", "240.0001",
                     " 1.5", "1,5", "", "infinity"]),
)  # fmt: skip
texts = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", "-", "--", "-h", "mqtt://127.0.0.1:1883", "mqtts://h:1/", "mqtt://:1",
                     "http://127.0.0.1:8000", "0.0.0.0", "::", "a/b", "x" * 300, "stream-1",
                     "s p a c e", "\x00", "é"]),
    json_values.map(str),
)  # fmt: skip


@contextlib.contextmanager
def _config_files() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mobieye-fuzz-cli-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with _config_files() as path:
        yield path


def _value(action: argparse.Action, workdir: Path) -> st.SearchStrategy[str]:
    if action.dest == "config":
        # A real file with random YAML, or none; never /dev or a FIFO (reading never ends).
        return st.sampled_from(["cfg.yaml", "missing.yaml", "."]).map(lambda n: str(workdir / n))
    kind = action.type
    if action.choices:
        return st.one_of(st.sampled_from([str(c) for c in action.choices]), texts)
    if kind is int:
        return st.one_of(ints, texts)
    if kind is float:
        return st.one_of(floats, texts)
    return texts


@st.composite
def argvs(draw: st.DrawFn, workdir: Path) -> list[str]:
    path, parser = draw(st.sampled_from(COMMANDS))
    argv = list(path)
    options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.sampled_from(["flag", "flag", "flag", "token", "abbrev"]))
        if kind == "token" or not options:
            argv.append(draw(texts))
            continue
        action = draw(st.sampled_from(options))
        flag = draw(st.sampled_from([s for s in action.option_strings if s.startswith("--")]
                                    or action.option_strings))  # fmt: skip
        if kind == "abbrev" and len(flag) > 4:
            flag = flag[: draw(st.integers(3, len(flag) - 1))]  # argparse's prefix matching
        if action.nargs == 0:
            argv.append(flag)
        elif draw(st.booleans()):
            argv.append(f"{flag}={draw(_value(action, workdir))}")
        else:
            argv += [flag, draw(_value(action, workdir))]
    return argv


def _parse(argv: list[str]) -> argparse.Namespace | None:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            return PARSER.parse_args(argv)
        except SystemExit as exc:
            said = err.getvalue()
            if exc.code == 0:  # --help or --version
                assert out.getvalue(), f"{argv}: exit 0 but nothing printed"
                return None
            assert exc.code == 2, f"{argv}: exit {exc.code}"
            assert "error: " in said and said.split("error: ", 1)[1].strip(), (
                f"{argv}: refused without a reason: {said!r}"
            )
            return None


def _dotted(tree: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out += _dotted(value, name + ".") if isinstance(value, dict) else [name]
    return out


@FUZZ
@given(data=st.data(), config=st.one_of(st.none(), json_values, st.text(max_size=80)))
@counted
def test_any_argv_is_refused_with_a_reason_or_gives_settings(
    workdir: Path, data: st.DataObject, config: Any
) -> None:
    text = config if isinstance(config, str) else repr(config)
    text = text.encode("utf-8", "replace").decode()  # lone surrogates: test_config's business
    (workdir / "cfg.yaml").write_text(text)
    argv = data.draw(argvs(workdir))
    if non_string_top_level_key(text) and any("cfg.yaml" in a for a in argv):
        return  # tests/fuzz/test_config.py: test_a_non_string_top_level_key_is_a_config_error
    with within(f"mobieye {short(argv)}"):
        args = _parse(argv)
        if args is None:
            return
        overrides = overrides_from(args)
        assert isinstance(overrides, dict)
        try:
            load_settings(args.config, overrides)
        except ConfigError as exc:
            text = str(exc)
            if args.config is None:
                # Only flags were given: the message names the setting of one of them.
                named = [d for d in _dotted(overrides) if d in text]
                assert named, f"mobieye {short(argv)}: {text!r} names none of {overrides}"
