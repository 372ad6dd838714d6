"""Config files (mobieye/config.py load_settings) made of random YAML: random text, documents
from the Settings schema with one value spoiled, deep nesting and aliases. Properties: Settings
or ConfigError, quickly, with a message that names the problem and stays readable."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from mobieye.config import Settings, load_settings
from mobieye.errors import ConfigError
from tests.fuzz.common import FUZZ, backstop_s, counted, non_string_top_level_key, short, within
from tests.fuzz.strategies import Mutated, json_values, mutate, valid_documents

pytestmark = pytest.mark.timeout(backstop_s())

# Known refusals that escape as other errors (the xfail tests below): the general targets stay
# inside these bounds so they go on looking for new problems.
MAX_NESTING = 100  # deeper: yaml's RecursionError
MAX_ALIAS_EXPANSION = 100  # more: an error message that repeats every expanded value


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    # Module-scoped (hypothesis runs many cases per test function); removed at the end.
    path = Path(tempfile.mkdtemp(prefix="mobieye-fuzz-config-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _load(workdir: Path, content: bytes) -> Settings | ConfigError:
    path = workdir / "config.yaml"
    path.write_bytes(content)
    with within(f"load_settings on {short(content)}"):
        try:
            return load_settings(path)
        except ConfigError as exc:
            text = str(exc)
            assert text.startswith(("bad configuration: ", f"config file {path}")), text
            # Quoting the input is fine; a message far longer than the file is not readable.
            assert len(text) <= 4 * len(content) + 2_000, f"{len(text)}-char message"
            return exc


def _yaml(doc: Any) -> bytes:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False).encode()


@st.composite
def nested(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(1, MAX_NESTING))
    opener, closer = draw(st.sampled_from([("[", "]"), ("{a: ", "}"), ("- ", "")]))
    if opener == "- ":
        lines = [" " * (2 * i) + "- " for i in range(depth)]
        return ("\n".join(lines) + "x\n").encode()
    return ("detector: " + opener * depth + "1" + closer * depth + "\n").encode()


@st.composite
def aliases(draw: st.DrawFn) -> bytes:
    """YAML anchors and aliases, each level repeating the one below (a bounded "bomb")."""
    width = draw(st.integers(1, 9))
    depth = draw(st.integers(0, 6))
    while depth > 0 and width ** (depth + 1) > MAX_ALIAS_EXPANSION:  # a<depth>: width^(depth+1)
        depth -= 1
    where = draw(st.sampled_from(["detector: {model: *a%d}", "fleet: {junk: *a%d}", "x: *a%d"]))
    lines = ["_0: &a0 [" + ", ".join(['"v"'] * width) + "]"]
    for d in range(1, depth + 1):
        lines.append(f"_{d}: &a{d} [" + ", ".join([f"*a{d - 1}"] * width) + "]")
    return ("\n".join(lines) + "\n" + where % depth + "\n").encode()


raw_files = st.one_of(
    st.text(max_size=300).map(str.encode),
    st.text(alphabet=" \t\n:-[]{}&*!|>'\"#%@`,?abc019.", max_size=200).map(str.encode),
    json_values.map(_yaml),
    nested(),
    aliases(),
    st.sampled_from([b"", b"\xef\xbb\xbf", b"---\n...\n", b"--- !!set {a, b}\n", b"? [a]\n: 1\n",
                     b"detector: !!binary aGk=\n", b"1: 2\n", b"null: 1\n", b"~: 1\n",
                     b"detector:\n  imgsz: 0x1a0\n", b"detector:\n  imgsz: 4_16\n",
                     b"worker:\n  port: 1:00\n", b"edge:\n  fps: .nan\n", b"edge:\n  fps: .inf\n",
                     b"log_level: !!python/object:os.system ls\n"]),
)  # fmt: skip


@FUZZ
@given(content=raw_files)
@counted
def test_any_yaml_file_gives_settings_or_a_config_error(workdir: Path, content: bytes) -> None:
    if non_string_top_level_key(content):
        return  # test_a_non_string_top_level_key_is_a_config_error
    _load(workdir, content)


near_valid_settings = valid_documents(Settings).flatmap(
    lambda doc: mutate(doc, list(Settings.model_fields))
)


@FUZZ
@given(mutated=near_valid_settings)
@counted
def test_a_refused_config_names_the_value_that_spoiled_it(workdir: Path, mutated: Mutated) -> None:
    result = _load(workdir, _yaml(mutated.doc))
    if isinstance(result, ConfigError) and not isinstance(
        _load(workdir, _yaml(mutated.original)), ConfigError
    ):
        assert mutated.blames(str(result)), (
            f"{mutated.how} at {mutated.path}: {str(result)!r} does not say where"
        )


@FUZZ
@given(doc=valid_documents(Settings))
@counted
def test_what_a_file_sets_is_what_the_settings_say(workdir: Path, doc: dict[str, Any]) -> None:
    result = _load(workdir, _yaml(doc))
    if isinstance(result, Settings):
        # Dumped and read back, the settings are the same (nothing lost or coerced twice).
        again = _load(workdir, _yaml(result.model_dump(mode="json", exclude_unset=True)))
        assert isinstance(again, Settings), str(again)
        assert again.model_dump() == result.model_dump()


# -- found by the targets above (the owner fixes mobieye/config.py) ------------------------------


def test_a_config_file_that_is_not_utf8_is_a_config_error(workdir: Path) -> None:
    path = workdir / "latin1.yaml"
    path.write_bytes(b"detector:\n  model: caf\xe9.onnx\n")
    with pytest.raises(ConfigError, match=r"UTF-8|utf-8|decode"):
        load_settings(path)


@pytest.mark.parametrize("content", [b"1: 2\n", b"null: 1\n", b"true: x\n"])
def test_a_non_string_top_level_key_is_a_config_error(workdir: Path, content: bytes) -> None:
    path = workdir / "keys.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError):
        load_settings(path)


def test_deeply_nested_yaml_is_a_config_error(workdir: Path) -> None:
    path = workdir / "deep.yaml"
    path.write_bytes(b"detector: " + b"[" * 2000 + b"]" * 2000 + b"\n")
    # In a child: after a RecursionError CPython 3.11.7 may fail later compile() calls.
    probe = (
        "import sys\nfrom mobieye.config import load_settings\nfrom mobieye.errors import "
        "ConfigError\ntry:\n    load_settings(sys.argv[1])\nexcept ConfigError:\n    "
        "print('ConfigError')\nexcept BaseException as exc:\n    print(type(exc).__name__)"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe, str(path)], capture_output=True, text=True, timeout=60
    )
    assert run.stdout.strip() == "ConfigError", run.stdout + run.stderr[-2000:]


def test_yaml_aliases_do_not_blow_up_the_error_message(workdir: Path) -> None:
    lines = ['_0: &a0 ["v", "v", "v", "v", "v", "v", "v", "v", "v"]']
    for d in range(1, 6):
        lines.append(f"_{d}: &a{d} [" + ", ".join([f"*a{d - 1}"] * 9) + "]")
    path = workdir / "aliases.yaml"
    path.write_bytes(("\n".join(lines) + "\nfleet: {junk: *a5}\n").encode())
    with within("load_settings on an alias bomb", seconds=30), pytest.raises(ConfigError) as info:
        load_settings(path)
    assert len(str(info.value)) < 10_000, f"{len(str(info.value))}-char message"
