"""Collects the Python blocks of README.md and docs/*.md as tests.

Each block runs as written, with pytest-markdown-docs' collector for Markdown files (a
block marked ``python notest`` is skipped, and the page says why beside it). Only its
Markdown collector is used: its ``--markdown-docs`` option would also import every test
module to scan docstrings, which the tests' own imports do not survive.
"""

from pathlib import Path

from pytest_markdown_docs.plugin import MarkdownTextFile

ROOT = Path(__file__).resolve().parent
PAGES = {ROOT / "README.md", *(ROOT / "docs").glob("*.md")}


def pytest_collect_file(file_path, parent):
    if Path(file_path).resolve() in PAGES:
        return MarkdownTextFile.from_parent(parent, path=file_path)
    return None
