"""Generated sections of docs pages: the part between two markers is rendered, never typed."""

from __future__ import annotations

from pathlib import Path


def write_section(
    page: Path, begin: str, end: str, section: str, preamble: str, postscript: str = ""
) -> None:
    """Put ``section`` between ``begin`` and ``end`` in ``page``.

    A page that does not have the markers yet is created as ``preamble``, the section, a
    newline and ``postscript``; an existing page keeps everything outside the markers.
    """
    body = f"{begin}\n{section}{end}"
    if page.exists() and begin in page.read_text():
        head, rest = page.read_text().split(begin, 1)
        text = head + body + rest.split(end, 1)[1]
    else:
        text = f"{preamble}{body}\n{postscript}"
    page.write_text(text)
