"""Build the course site: ``python tutorials/site/build.py`` (needs ``pip install -e ".[docs]"``).

Every page is generated from a source the project already has, so nothing is
written twice:

- one page per tutorial, from its executed notebook ``tutorials/notebooks/NN_*.ipynb``
  (prose, code, printed output and figures), with links to download the
  ``.ipynb`` and the ``.py``;
- ``derivations.md`` and the figures of ``tutorials/figures/`` as they are;
- the exercises: ``tutorials/exercises/README.md``, then one entry per
  exercise of ``npvae.exercises.EXERCISES`` with its file's docstring;
- the command line: the help of every (sub)command, from ``npvae.cli.build_parser()``;
- the API: every public module, class and function of ``npvae`` with its docstring;
- the benchmarks: ``benchmarks/README.md`` with its figures and result files;
- the guide: ``tutorials/site/guide.md``, README's long sections (written there only),
  and the data's ``npvae/datasets/mnist/README.md``;
- the home page: ``tutorials/site/home.md``, whose ``<!-- include FILE: SECTION -->``
  lines pull sections of README.md and tutorials/README.md in.

Links between the sources (``derivations.md#adam``, ``tutorials/01_dense_layer.py``,
``npvae/train.py``...) are rewritten to the pages made from them. The pages go
to ``tutorials/site/build/docs/`` and the site to ``tutorials/site/build/site/``
(git ignores ``build/``); then ``mkdocs build --strict`` runs on
``tutorials/site/mkdocs.yml`` plus the generated navigation, so a broken link,
a missing anchor or a page left out of the navigation fails the build.
Open ``tutorials/site/build/site/index.html`` through a web server
(``python -m http.server -d tutorials/site/build/site``): search needs one.
"""

import argparse
import base64
import importlib
import importlib.util
import inspect
import json
import os
import pkgutil
import posixpath
import re
import shutil
import sys
import time
from pathlib import Path

SITE = Path(__file__).resolve().parent
REPO = SITE.parents[1]
TUTORIALS = REPO / "tutorials"
BUILD = SITE / "build"
DOCS = BUILD / "docs"
OUTPUT = BUILD / "site"
HOME = SITE / "home.md"
CONFIG = SITE / "mkdocs.yml"
COLUMNS = "100"  # argparse wraps help to the terminal: a fixed width, the same page everywhere
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HOOKS = _load("npvae_site_hooks", SITE / "hooks.py")
"""The site's MkDocs hooks (maths to MathML), whose code-aware text helpers the pages share."""


class SiteError(Exception):
    """A source the site cannot be built from (a link to nothing, a missing section...)."""


# ------------------------------------------------------------------ where each source's page goes

def tutorial_sources():
    return sorted(TUTORIALS.glob("[0-9][0-9]_*.py"))


def page_of(repo_path):
    """The site path (below docs/) that stands for the repository file ``repo_path``, or None."""
    p = repo_path.rstrip("/")
    m = re.fullmatch(r"tutorials/(?:notebooks/)?(\d\d_\w+)\.(?:py|ipynb)", p)
    if m:
        return f"tutorials/{m.group(1)}.md"
    fixed = {"README.md": "index.md", "tutorials/README.md": "index.md", "tutorials": "index.md",
             "tutorials/notebooks": "index.md", "tutorials/derivations.md": "derivations.md",
             "tutorials/exercises": "exercises.md", "tutorials/exercises/README.md": "exercises.md",
             "benchmarks/README.md": "benchmarks/index.md", "benchmarks": "benchmarks/index.md",
             "npvae": "api/index.md", "npvae/cli.py": "cli.md", "tutorials/site/guide.md": "guide.md",
             "npvae/datasets/mnist/README.md": "mnist.md"}
    if p in fixed:
        return fixed[p]
    m = re.fullmatch(r"npvae/(\w+)(?:/__init__)?\.py|npvae/(\w+)", p)
    if m:
        return f"api/{m.group(1) or m.group(2)}.md"
    m = re.fullmatch(r"tutorials/(figures/[\w.-]+\.png|exercises/\w+\.py)", p)
    if m:
        return m.group(1)
    m = re.fullmatch(r"benchmarks/(results/[\w.-]+|\w+\.py)", p)
    if m:
        return f"benchmarks/{m.group(1)}"
    return None


def relink(markdown, source, page):
    """``markdown`` of the repository file ``source``, its relative links made to point, from the
    site page ``page``, at the pages made from their targets. Code spans and blocks are left alone."""
    def fix(match):
        head, target, tail = match.groups()
        if re.match(r"^([a-z][a-z0-9+.-]*:|#)", target, re.I):
            return match.group(0)
        path, hash_, anchor = target.partition("#")
        repo_path = posixpath.normpath(posixpath.join(posixpath.dirname(source), path))
        to = page_of(repo_path)
        if to is None:
            raise SiteError(f"{source}: link to {target!r} ({repo_path}) has no page on the site")
        rel = posixpath.relpath(to, posixpath.dirname(page) or ".")
        return f"{head}{rel}{hash_}{anchor}{tail}"
    return HOOKS.outside_code(markdown, lambda text: LINK.sub(fix, text))


def section(markdown, title, source):
    """The body of the section headed ``title`` (up to the next heading), or the text before the
    first ``## `` heading for the title ``start``."""
    text = HOOKS.FENCE.sub(lambda m: m.group(0).replace("#", "\0"), markdown)  # no headings in code
    if title == "start":
        body = re.split(r"^## ", text, maxsplit=1, flags=re.M)[0]
        body = re.sub(r"\A# .*\n", "", body)
    else:
        m = re.search(rf"^#+ {re.escape(title)}\s*\n(.*?)(?=^#+ |\Z)", text, re.M | re.S)
        if not m:
            raise SiteError(f"{source} has no section {title!r}")
        body = m.group(1)
    return body.replace("\0", "#").strip() + "\n"


# ------------------------------------------------------------------ pages

def write(page, text):
    path = DOCS / page
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def home_page():
    """home.md with its ``<!-- include FILE: SECTION -->`` lines replaced by those sections."""
    def include(match):
        source, title = match.group(1).strip(), match.group(2).strip()
        body = section((REPO / source).read_text(), title, source)
        return relink(body, source, "index.md")
    text = re.sub(r"^<!-- include ([^:]+): (.+?) -->$", include, HOME.read_text(), flags=re.M)
    write("index.md", text)


def tutorial_page(source):
    """The page of one tutorial from its executed notebook: prose, code, outputs, figures."""
    import nbformat

    notebook_file = TUTORIALS / "notebooks" / f"{source.stem}.ipynb"
    if not notebook_file.is_file():
        raise SiteError(f"{notebook_file.relative_to(REPO)} is missing: python tutorials/make_notebooks.py")
    notebook = nbformat.read(notebook_file, as_version=4)
    page = f"tutorials/{source.stem}.md"
    repo_path = f"tutorials/notebooks/{notebook_file.name}"
    figures = DOCS / "tutorials" / source.stem
    cells = [c for c in notebook.cells if "npvae-generated" not in c.get("metadata", {}).get("tags", [])]
    if not cells or cells[0].cell_type != "markdown" or not cells[0].source.startswith("# "):
        raise SiteError(f"{repo_path}: its first cell is not the tutorial's title")
    title, _, rest = cells[0].source.partition("\n")
    parts = [title, "",
             f"Download the notebook [{notebook_file.name}]({notebook_file.name}){{ download }} "
             f"or the script [{source.name}]({source.name}){{ download }}; "
             f"run it: `python tutorials/{source.name}` · the notebook was executed in quick mode "
             "(`NPVAE_QUICK=1`), so its training runs are short.", "", relink(rest, repo_path, page)]
    n_figures = 0
    for cell in cells[1:]:
        if cell.cell_type == "markdown":
            parts.append(relink(cell.source, repo_path, page))
            continue
        parts.append(f"```python\n{cell.source}\n```")
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                parts.append(text_block(output.text))
            elif output.output_type in ("display_data", "execute_result"):
                data = output.get("data", {})
                if "image/png" in data:
                    n_figures += 1
                    figures.mkdir(parents=True, exist_ok=True)
                    name = f"figure_{n_figures}.png"
                    (figures / name).write_bytes(base64.b64decode(data["image/png"]))
                    parts.append(f"![figure {n_figures} of tutorial {source.stem[:2]}]({source.stem}/{name})")
                elif "text/plain" in data:
                    parts.append(text_block(data["text/plain"]))
            elif output.output_type == "error":
                raise SiteError(f"{repo_path}: a cell failed ({output.ename}); regenerate the notebook")
    text = "\n\n".join(p.rstrip("\n") for p in parts) + "\n"
    write(page, text)
    shutil.copy2(notebook_file, DOCS / "tutorials" / notebook_file.name)
    shutil.copy2(source, DOCS / "tutorials" / source.name)
    return page, title.lstrip("# ").strip(), n_figures


def text_block(text):
    text = ANSI.sub("", text).rstrip("\n")
    fence = "````" if "```" in text else "```"
    return f"{fence}text\n{text}\n{fence}"


def derivations_page():
    text = (TUTORIALS / "derivations.md").read_text()
    write("derivations.md", relink(text, "tutorials/derivations.md", "derivations.md"))


def figures():
    target = DOCS / "figures"
    target.mkdir(parents=True, exist_ok=True)
    for png in sorted((TUTORIALS / "figures").glob("*.png")):
        shutil.copy2(png, target / png.name)


def exercises_page():
    """The exercises: their README, then each one (what to write, the command, the derivation,
    and its file's docstring, which names the mistakes the grader recognises)."""
    from npvae.exercises import EXERCISES

    folder = TUTORIALS / "exercises"
    readme = (folder / "README.md").read_text()
    parts = [relink(readme, "tutorials/exercises/README.md", "exercises.md").rstrip("\n"), "",
             "## Every exercise", ""]
    for ex in EXERCISES.values():
        file = folder / ex.file
        if not file.is_file():
            raise SiteError(f"exercise {ex.name}: tutorials/exercises/{ex.file} is missing")
        (DOCS / "exercises").mkdir(exist_ok=True)
        shutil.copy2(file, DOCS / "exercises" / ex.file)
        doc = inspect.cleandoc(re.match(r'\s*"""(.*?)"""', file.read_text(), re.S).group(1))
        functions = ", ".join(f"`{f}`" for f in ex.functions)
        parts += [f"### {ex.name}", "",
                  *([ex.summary, ""] if ex.summary else []),
                  f"- write: {functions} in [`tutorials/exercises/{ex.file}`](exercises/{ex.file}){{ download }}",
                  f"- grade it: `npvae exercises check {ex.name}`",
                  f"- the derivation: [derivations.md#{ex.anchor}](derivations.md#{ex.anchor})", "",
                  text_block(doc), ""]
    write("exercises.md", "\n".join(parts) + "\n")


def cli_page():
    """The help of ``npvae`` and of every subcommand, from the parser the command itself uses."""
    from npvae.cli import build_parser

    parts = ["# The command line", "",
             "Generated from `npvae.cli.build_parser()`, the parser `npvae` itself runs: "
             "what `npvae COMMAND --help` prints.", ""]

    def walk(parser, name, depth):
        parts.extend([f"{'#' * depth} `{name}`", "", text_block(parser.format_help()), ""])
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    walk(sub, f"{name} {sub_name}", min(depth + 1, 4))

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = COLUMNS
    try:
        walk(build_parser(), "npvae", 2)
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    write("cli.md", "\n".join(parts))


def api_pages():
    """A page per public module of npvae: its docstring, then each public class and function."""
    import npvae

    names = sorted(m.name for m in pkgutil.walk_packages(npvae.__path__, "npvae.")
                   if not any(part.startswith("_") for part in m.name.split(".")))
    pages = []
    index = ["# The package", "", text_block(inspect.cleandoc(npvae.__doc__ or "")), "", "## Modules", ""]
    for name in names:
        module = importlib.import_module(name)
        short = name.split(".", 1)[1]
        page = f"api/{short.replace('.', '/')}.md"
        parts = [f"# `{name}`", "", text_block(inspect.getdoc(module) or "(no docstring)"), ""]
        for member_name, member in vars(module).items():
            if member_name.startswith("_") or getattr(member, "__module__", None) != name:
                continue
            if inspect.isclass(member) or inspect.isfunction(member):
                parts += member_doc(member_name, member)
        write(page, "\n".join(parts) + "\n")
        first = (inspect.getdoc(module) or "").split("\n")[0]
        index.append(f"- [`{name}`]({posixpath.relpath(page, 'api')}): {first}")
        pages.append(page)
    write("api/index.md", "\n".join(index) + "\n")
    return pages


def member_doc(name, member, level=2):
    try:
        signature = str(inspect.signature(member))
    except (TypeError, ValueError):
        signature = ""
    kind = "class" if inspect.isclass(member) else "def"
    parts = [f"{'#' * level} `{name}`", "", f"```python\n{kind} {name}{signature}\n```", "",
             text_block(inspect.getdoc(member) or "(no docstring)"), ""]
    if inspect.isclass(member):
        for attr, value in vars(member).items():
            if attr.startswith("_") or not (inspect.isfunction(value) or isinstance(value, property)):
                continue
            if isinstance(value, property):
                parts += [f"{'#' * (level + 1)} `{name}.{attr}` (property)", "",
                          text_block(inspect.getdoc(value) or "(no docstring)"), ""]
            else:
                parts += member_doc(f"{name}.{attr}", value, level + 1)
    return parts


def guide_page():
    """The guide (hand-written, once: README's long sections moved there) and the data's README."""
    text = (SITE / "guide.md").read_text()
    write("guide.md", relink(text, "tutorials/site/guide.md", "guide.md"))
    source = "npvae/datasets/mnist/README.md"
    write("mnist.md", relink((REPO / source).read_text(), source, "mnist.md"))


def benchmarks_page():
    text = (REPO / "benchmarks" / "README.md").read_text()
    results = DOCS / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    for file in sorted((REPO / "benchmarks" / "results").iterdir()):
        if file.suffix in (".png", ".json"):
            shutil.copy2(file, results / file.name)
    for script in sorted((REPO / "benchmarks").glob("*.py")):   # the scripts, to download
        shutil.copy2(script, DOCS / "benchmarks" / script.name)
    listing = ["", "## The result files", "",
               "Every number above comes from one of these, written by the script named in its section:", ""]
    listing += [f"- [`{f.name}`](results/{f.name})" for f in sorted(results.glob("*.json"))]
    write("benchmarks/index.md", relink(text, "benchmarks/README.md", "benchmarks/index.md").rstrip("\n")
          + "\n" + "\n".join(listing) + "\n")


# ------------------------------------------------------------------ the build

def nav(tutorials, api):
    return [
        {"Home": "index.md"},
        {"Tutorials": [{title: page} for page, title, _ in tutorials]},
        {"Guide": "guide.md"},
        {"Derivations": "derivations.md"},
        {"Exercises": "exercises.md"},
        {"Command line": "cli.md"},
        {"API": ["api/index.md"] + api},
        {"Benchmarks": "benchmarks/index.md"},
        {"Data": "mnist.md"},
    ]


def generate():
    """Write every page into ``DOCS``; return (navigation, tutorial pages)."""
    if DOCS.exists():
        shutil.rmtree(DOCS)
    DOCS.mkdir(parents=True)
    home_page()
    tutorials = [tutorial_page(source) for source in tutorial_sources()]
    derivations_page()
    figures()
    exercises_page()
    cli_page()
    api = api_pages()
    benchmarks_page()
    guide_page()
    return nav(tutorials, api), tutorials


def build(strict=True, build_dir=None):
    """Generate the pages and build the site with MkDocs; return the tutorial pages.

    ``build_dir``: where the pages (``docs/``) and the site (``site/``) go,
    ``tutorials/site/build/`` unless given (the tests build into a temporary folder).
    """
    import yaml
    from mkdocs.commands.build import build as mkdocs_build
    from mkdocs.config import load_config

    global BUILD, DOCS, OUTPUT  # the page writers above all write below DOCS
    if build_dir is not None:
        BUILD, DOCS, OUTPUT = Path(build_dir), Path(build_dir) / "docs", Path(build_dir) / "site"
    sys.path.insert(0, str(REPO))  # npvae from this checkout, installed or not
    navigation, tutorials = generate()
    # mkdocs.yml plus what was generated: where the pages are, the site goes, the navigation
    config = dict(INHERIT=str(CONFIG), docs_dir=str(DOCS), site_dir=str(OUTPUT), nav=navigation,
                  strict=strict, hooks=[str(SITE / "hooks.py")])
    generated = BUILD / "mkdocs.yml"
    generated.write_text("# generated by tutorials/site/build.py: tutorials/site/mkdocs.yml and the "
                         "pages it found\n" + yaml.safe_dump(config, sort_keys=False))
    mkdocs_build(load_config(str(generated), strict=strict))
    return tutorials


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-strict", action="store_true", help="report warnings without failing")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        tutorials = build(strict=not args.no_strict)
    except SiteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # MkDocs's "Aborted with N warnings in strict mode!"
        if type(err).__name__ == "Abort":
            print(f"error: {err}", file=sys.stderr)
            return 1
        raise
    without = [page for page, _, n in tutorials if n == 0]
    if without:
        print(f"error: tutorial pages without a figure: {', '.join(without)}", file=sys.stderr)
        return 1
    print(json.dumps({"site": str(OUTPUT), "tutorials": len(tutorials),
                      "figures": sum(n for _, _, n in tutorials),
                      "seconds": round(time.perf_counter() - started, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
