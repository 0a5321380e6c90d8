"""
Read README.md's sections and shell blocks, for the tests that check what it tells a new user.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def section(title: str, text: str | None = None) -> str:
    """The text of the ``## title`` section of README.md (up to the next ``## ``)."""
    text = README.read_text(encoding="utf-8") if text is None else text
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start: end if end != -1 else len(text)]


def shell_block(title: str, text: str | None = None) -> str:
    """The first ```sh block of the section ``title``."""
    match = re.search(r"```sh\n(.*?)```", section(title, text), re.S)
    assert match, f"no sh block under {title!r}"
    return match.group(1)


def commands(block: str) -> list[str]:
    """The block's commands, one per entry: continuation lines joined, comments and blank lines dropped,
    here-documents kept with their command."""
    lines = block.replace("\\\n", " ").splitlines()
    out: list[str] = []
    heredoc_end: str | None = None
    for line in lines:
        if heredoc_end is not None:
            out[-1] += "\n" + line
            if line.strip() == heredoc_end:
                heredoc_end = None
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        out.append(re.sub(r"\s+", " ", stripped))
        heredoc = re.search(r"<<\s*'?(\w+)'?", stripped)
        if heredoc:
            heredoc_end = heredoc.group(1)
    return out


__all__ = ["README", "ROOT", "commands", "section", "shell_block"]
