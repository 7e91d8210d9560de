"""The docs cannot drift from the code: every `run.py` command they show parses with the CLI, every
TOML example loads, and docs/configuration.md documents exactly the settings of config.FIELDS, with
their defaults, ranges and choices. Fast: nothing is started.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

import config
from streamer import cli

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CONFIGURATION = ROOT / "docs" / "configuration.md"

SHELL_BLOCK = re.compile(r"^```(?:sh|bash|shell|console)\n(.*?)^```", re.M | re.S)
ANY_BLOCK = re.compile(r"^```.*?^```", re.M | re.S)
TOML_BLOCK = re.compile(r"^```toml\n(.*?)^```", re.M | re.S)
INLINE = re.compile(r"`([^`\n]+)`")


def shell_lines(text: str) -> list[str]:
    """The commands of a document: each line of its shell blocks (backslash continuations joined)
    and each inline code span outside the blocks."""
    lines = []
    for block in SHELL_BLOCK.findall(text):
        lines += block.replace("\\\n", " ").splitlines()
    lines += INLINE.findall(ANY_BLOCK.sub("", text))
    return lines


def run_py_commands(line: str) -> list[list[str]]:
    """The argument lists given to run.py in one shell line: after `python run.py`,
    `.venv/bin/python run.py`, `/opt/x/.venv/bin/python /opt/x/run.py` or a bare `run.py`, up to the
    end of that command (`&&`, `|`, `;`, a closing `)` of `$(...)`, or a comment)."""
    if "run.py" not in line:
        return []
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""  # as in a shell, `#` starts a comment only at the start of a word (below)
    try:
        tokens = list(lexer)
    except ValueError as exc:
        raise ValueError(f"cannot split this documented command: {line}: {exc}") from None
    if any(t.startswith("#") for t in tokens):
        tokens = tokens[:next(i for i, t in enumerate(tokens) if t.startswith("#"))]
    commands = []
    for i, token in enumerate(tokens):
        if Path(token).name != "run.py":
            continue
        args = []
        for arg in tokens[i + 1:]:
            if set(arg) <= set("();<>|&"):
                break
            args.append(arg)
        commands.append(args)
    return commands


def documented_commands() -> list[tuple[str, str, list[str]]]:
    found = []
    for doc in DOCS:
        for line in shell_lines(doc.read_text(encoding="utf-8")):
            found += [(doc.relative_to(ROOT).as_posix(), line, args) for args in run_py_commands(line)]
    return found


def test_the_command_finder_finds_what_it_should():
    assert run_py_commands("python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/python run.py") == [[]]
    assert run_py_commands("T=$(.venv/bin/python run.py user token ann | tail -1); H=x") == [["user", "token", "ann"]]
    assert run_py_commands('.venv/bin/python run.py backup "b/c-$(date +%F).db"  # a comment') == \
        [["backup", "b/c-$(date +%F).db"]]
    assert run_py_commands("sudo -u s /opt/s/.venv/bin/python /opt/s/run.py user add ann --config /e/s.toml") == \
        [["user", "add", "ann", "--config", "/e/s.toml"]]
    assert run_py_commands("python run.py --hls-bitrates 96,160#no-comment # comment") == \
        [["--hls-bitrates", "96,160#no-comment"]]
    assert run_py_commands("python bench/range_bench.py --rounds 5") == []
    commands = documented_commands()
    assert any(doc == "README.md" and args == [] for doc, _, args in commands)  # the first command
    assert {"cluster", "promote", "follow", "user", "backup", "scan", "config"} <= {a[0] for _, _, a in commands if a}


@pytest.mark.parametrize("doc, line, args", documented_commands(), ids=lambda v: v if isinstance(v, str) else None)
def test_every_documented_command_parses(doc, line, args):
    argv = list(args)
    if not argv or argv[0] not in (*cli.COMMANDS, "-h", "--help"):
        argv.insert(0, "serve")  # as cli.main does: serve is the default command
    try:
        cli.build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{doc}: this command does not parse with run.py's CLI: {line}")


TOML_EXAMPLES = [(doc.relative_to(ROOT).as_posix(), block) for doc in DOCS
                 for block in TOML_BLOCK.findall(doc.read_text(encoding="utf-8"))]


@pytest.mark.parametrize("doc, block", TOML_EXAMPLES)
def test_every_documented_toml_file_loads(doc, block, tmp_path):
    example = tmp_path / "example.toml"
    example.write_text(block, encoding="utf-8")
    try:
        config.load(example, {}, {}, check_paths=False)
    except config.ConfigError as exc:
        pytest.fail(f"{doc}: this TOML example does not load:\n{block}\n{exc}")


def settings_table() -> dict[str, tuple[str, str]]:
    """key -> (type, default) from the rows of the table under '## Every setting'."""
    text = CONFIGURATION.read_text(encoding="utf-8")
    section = re.search(r"^## Every setting\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert section, "docs/configuration.md has no '## Every setting' section"
    rows: dict[str, tuple[str, str]] = {}
    for line in section.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        key = re.fullmatch(r"`([a-z0-9_]+)`", cells[0]) if line.startswith("|") else None
        if key:
            assert key.group(1) not in rows, f"{key.group(1)} is documented twice"
            rows[key.group(1)] = (cells[1], cells[2])
    return rows


def test_every_setting_is_documented_and_every_documented_key_exists():
    documented = set(settings_table())
    declared = {field.name for field in config.FIELDS}
    assert not declared - documented, f"settings missing from docs/configuration.md: {sorted(declared - documented)}"
    assert not documented - declared, f"docs/configuration.md documents unknown settings: {sorted(documented - declared)}"


@pytest.mark.parametrize("field", config.FIELDS, ids=lambda f: f.name)
def test_documented_default_type_and_range_match_the_field(field):
    row = settings_table().get(field.name)
    assert row, f"{field.name} is not documented in docs/configuration.md"
    kind, default = row
    literal = re.fullmatch(r"`(.+)`", default)
    if literal:  # a TOML value, which must be the field's default
        value = tomllib.loads(f"v = {literal.group(1)}")["v"]
        expected = field.default
        if isinstance(expected, tuple):
            expected = list(expected)
        elif isinstance(expected, Path):
            expected = str(expected)
        assert value == expected, f"{field.name}: documented default {default}, declared {field.default!r}"
    else:  # "(...)": unset, so the field's default must be empty
        assert default.startswith("(") and not field.default, \
            f"{field.name}: documented default {default!r}, declared {field.default!r}"
    numbers = [int(n) for n in re.findall(r"\d+", kind)]
    assert numbers == [n for n in (field.minimum, field.maximum) if n is not None], \
        f"{field.name}: documented type {kind!r}, declared range {field.minimum}..{field.maximum}"
    if field.choices:
        assert re.findall(r"`([^`]+)`", kind) == list(field.choices), f"{field.name}: documented choices {kind!r}"


LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_relative_link_and_anchor_exists():
    broken = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for target in LINK.findall(ANY_BLOCK.sub("", text)):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not checked here
            path, _, anchor = target.partition("#")
            linked = (doc.parent / path).resolve() if path else doc
            if not linked.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", ANY_BLOCK.sub("", linked.read_text(encoding="utf-8")), re.M)
                if anchor not in {slug(h) for h in headings}:
                    broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)
