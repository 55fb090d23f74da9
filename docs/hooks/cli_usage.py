"""MkDocs hook: the CLI reference's code as typed.

mkdocs-typer2 inserts its HTML into the page as elements, so the page's own processors run over
it: autorefs reads a usage line's ``[OPTIONS] [paths]`` as a cross-reference to ``paths`` (and
fails the strict build for it), and a metavar such as ``<path>`` is left as a tag that browsers
do not show. On that page, put the brackets back and escape the metavars; and since
mkdocs-typer2 leaves the page empty when `typer ... utils docs` fails, say so (a warning: the
strict build fails)."""

from __future__ import annotations

import logging
import re

AUTOREF = re.compile(r"<autoref (?P<attrs>[^>]*)>(?P<title>.*?)</autoref>", re.DOTALL)
IDENTIFIER = re.compile(r'identifier="(?P<identifier>[^"]*)"')
CODE = re.compile(r"<code>(?P<text>.*?)</code>", re.DOTALL)
log = logging.getLogger(f"mkdocs.plugins.{__name__}")


def on_page_content(html: str, page, **_) -> str:
    if page.file.src_uri != "reference/cli.md":
        return html
    if "instag tag" not in html:
        log.warning("reference/cli.md: the CLI reference is empty: mkdocs-typer2 could not run "
                    "`typer instag.cli utils docs` (is the venv's bin/ on PATH?)")

    def typed(match: re.Match) -> str:
        identifier = IDENTIFIER.search(match["attrs"])["identifier"]
        return f"[{match['title']}] [{identifier}]"

    def escaped(match: re.Match) -> str:
        return f"<code>{match['text'].replace('<', '&lt;').replace('>', '&gt;')}</code>"

    return CODE.sub(escaped, AUTOREF.sub(typed, html))
