"""The documentation is part of the product: it builds, its commands parse, it speaks of zoo.

Python blocks in README.md and docs/ run as tests of their own (the root conftest.py, with
pytest-markdown-docs' collector); a block marked ``python notest`` says why beside it.
"""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from recipes.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# How a page would speak of how zoo was built instead of zoo.
PROCESS_WORDS = re.compile(
    r"\bissues? #?\d+|\(issue|\bdraft\b|\bthe lead\b|\blent\b|to be filled|tool call",
    re.IGNORECASE,
)


def _shell_commands(page: Path) -> list[str]:
    """Every `zoo ...` line of the page's bash blocks, comments removed."""
    blocks = re.findall(r"```bash\n(.*?)```", page.read_text(), re.DOTALL)
    lines = [line.split("  #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("zoo ")]


def test_mkdocs_builds_strict(tmp_path):
    # --strict: a broken link, a missing page in the nav or a docstring mkdocstrings cannot
    # render fails the build.
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "api" / "index.html").is_file()
    # A fence whose header the site's Markdown did not take shows its backticks as text.
    unrendered = [
        str(page.relative_to(tmp_path))
        for page in (tmp_path / "site").rglob("*.html")
        if "```" in page.read_text()
    ]
    assert unrendered == []


@pytest.mark.parametrize("page", [REPO / "README.md", REPO / "docs" / "cli.md"], ids=str)
def test_every_documented_command_parses(page):
    commands = _shell_commands(page)
    assert commands, f"no zoo commands in {page}"
    parser = build_parser()
    for command in commands:
        argv = shlex.split(command)[1:]
        if argv in (["--help"], ["--version"]):
            continue
        try:
            parser.parse_args(argv)
        except SystemExit as error:
            pytest.fail(f"{page.name}: `{command}` does not parse (exit {error.code})")


def test_the_cli_reference_covers_every_subcommand():
    documented = {shlex.split(c)[1] for c in _shell_commands(REPO / "docs" / "cli.md")}
    parser = build_parser()
    subcommands = next(a for a in parser._actions if a.dest == "command").choices
    assert set(subcommands) <= documented, set(subcommands) - documented


@pytest.mark.parametrize(
    "argv",
    [["list", "resnet*"], ["info", "efficientnet_lite0"], ["weights", "path", "resnet50"]],
)
def test_the_cheap_documented_commands_run(argv, capsys):
    documented = [shlex.split(c)[1:] for c in _shell_commands(REPO / "docs" / "cli.md")]
    assert argv in documented
    assert main(argv) == 0
    assert capsys.readouterr().out.strip()


def test_readme_is_a_front_page():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 210, f"README.md has {len(lines)} lines; move detail to docs/"


def _cli_help_texts() -> list[str]:
    parser = build_parser()
    texts = [parser.format_help()]
    stack = [parser]
    while stack:
        for action in stack.pop()._actions:
            if isinstance(action.choices, dict):
                for sub in action.choices.values():
                    texts.append(sub.format_help())
                    stack.append(sub)
    return texts


def test_no_process_words_in_docs_benchmarks_or_cli():
    files = [
        *PAGES,
        *(REPO / "benchmarks").rglob("*.md"),
        *(REPO / "benchmarks").glob("*.py"),
        *(REPO / "recipes" / "catalog").glob("*.toml"),
    ]
    found = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for path in files
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if PROCESS_WORDS.search(line)
    ]
    found += [
        f"zoo --help: {m.group(0)}" for t in _cli_help_texts() for m in PROCESS_WORDS.finditer(t)
    ]
    assert found == []
