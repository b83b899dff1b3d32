"""MkDocs hooks of the course site: LaTeX maths to MathML at build time.

The sources write maths as ``$...$`` and ``$$...$$`` (as GitHub and Jupyter
render them). Here each becomes MathML, which browsers render natively, so
the site needs no maths script and nothing from another host. Code blocks and
code spans are left alone. The maths is set aside before Markdown runs (so
that ``_`` and ``*`` inside it are not read as emphasis) and put back as
MathML into the HTML; a formula latex2mathml cannot convert fails the build.
"""

import re

from latex2mathml.converter import convert

DISPLAY = re.compile(r"\$\$(.+?)\$\$", re.S)
INLINE = re.compile(r"(?<![\\$\w])\$(?=\S)((?:[^$\n]|\n(?![ \t]*\n))+?)(?<=\S)\$(?!\$)")
"""``$...$``: may wrap over lines of one paragraph, never across a blank line; a word may follow
(``$-$ELBO``), as GitHub renders it."""
FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.M | re.S)
TOKEN = "npvaemath{:05d}x"


class MathError(Exception):
    pass


def outside_code(markdown, change):
    """``change`` applied to the parts of ``markdown`` outside fenced blocks and code spans."""
    out, last = [], 0
    for block in FENCE.finditer(markdown):
        out.append(_outside_spans(markdown[last:block.start()], change))
        out.append(block.group(0))
        last = block.end()
    out.append(_outside_spans(markdown[last:], change))
    return "".join(out)


def _outside_spans(text, change):
    """``change`` applied to ``text`` with its code spans set aside (a link's text may hold one)."""
    spans = []

    def aside(match):
        spans.append(match.group(0))
        return f"\0{len(spans) - 1}\0"
    changed = change(re.sub(r"(`+)[^`]*?\1", aside, text))
    return re.sub(r"\0(\d+)\0", lambda m: spans[int(m.group(1))], changed)


def mathml(latex, display, where):
    try:
        out = convert(latex.strip(), display="block" if display else "inline")
    except Exception as err:  # latex2mathml raises its own classes and plain ones
        raise MathError(f"{where}: cannot convert {latex!r} to MathML: {err}") from err
    return out


def on_page_markdown(markdown, page, config, files):
    formulas, sources = [], []

    def keep(display):
        def sub(match):
            formulas.append(mathml(match.group(1), display, page.file.src_path))
            sources.append(match.group(1))
            token = TOKEN.format(len(formulas) - 1)
            return f"\n\n{token}\n\n" if display else token
        return sub

    def change(text):
        text = DISPLAY.sub(keep(True), text)
        return INLINE.sub(keep(False), text)

    page.npvae_formulas, page.npvae_sources = formulas, sources
    return outside_code(markdown, change)


def slugged(text, page):
    """``text`` (an id or a link) with each formula as GitHub's anchors spell it: ``$e^{s}$`` -> ``es``."""
    sources = getattr(page, "npvae_sources", [])
    return re.sub(r"npvaemath(\d{5})x", lambda m: re.sub(r"[^\w-]", "", sources[int(m.group(1))]).lower(), text)


def on_page_content(html, page, config, files):
    formulas = getattr(page, "npvae_formulas", [])
    # a heading's formula is in its id and in the links to it: there as text, elsewhere as MathML
    html = re.sub(r'(id|href)="([^"]*npvaemath[^"]*)"', lambda m: f'{m.group(1)}="{slugged(m.group(2), page)}"', html)
    html = re.sub(r"<p>\s*(npvaemath\d{5}x)\s*</p>", r"\1", html)
    html = re.sub(r"npvaemath(\d{5})x", lambda m: formulas[int(m.group(1))], html)
    return html


def on_page_context(context, page, config, nav):
    # The table of contents is made from the Markdown's headings: their formulas go back in as
    # MathML (a title there is HTML), and as plain text in the page's title (the browser's tab).
    formulas = getattr(page, "npvae_formulas", [])

    def as_mathml(text):
        return re.sub(r"npvaemath(\d{5})x", lambda m: formulas[int(m.group(1))], text)

    def plain(text):
        return re.sub(r"<[^>]+>", "", as_mathml(text))

    def walk(items):
        for item in items:
            item.title = as_mathml(item.title)
            item.id = slugged(item.id, page)
            walk(item.children)

    walk(page.toc)
    if page.title:
        page.title = plain(page.title)
    return context
