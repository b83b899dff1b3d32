"""The course site builds strictly from the sources, and every page works in a real browser.

``tutorials/site/build.py`` builds the site into a temporary folder (MkDocs
``--strict``: a broken link, a missing anchor or a page left out fails it),
then headless Chromium, driven by Playwright, opens every page from a local
web server and checks what a reader meets: the page loads; no console error;
no failed request; no request leaves the machine (each is refused and
reported); every image loads; no raw LaTeX (``$$``, ``\\frac``, ...) in the
visible text; every internal link and anchor resolves. Search finds
"reparameterization", and at a phone's width (390 px) the home page has no
horizontal scroll.

Needs the ``docs`` extra (``pip install -e ".[docs]"``: MkDocs, Material,
latex2mathml, Playwright) and Chromium (Debian's ``chromium`` package at
``/usr/bin/chromium``, or ``NPVAE_CHROMIUM=PATH``). Without them the tests
skip, unless ``NPVAE_REQUIRE_SITE=1`` (set by ``.ci/run``), which makes a
missing piece an error. ``NPVAE_SITE_SCREENSHOTS=DIR`` keeps a screenshot of
the home page at 390 px and of one tutorial page.
"""

import functools
import http.server
import importlib.util
import os
import re
import threading
import time
from pathlib import Path
from urllib.parse import urldefrag, urlparse

import pytest

REPO = Path(__file__).resolve().parents[1]
SITE_SOURCES = REPO / "tutorials" / "site"
REQUIRE = os.environ.get("NPVAE_REQUIRE_SITE") == "1"
CHROMIUM = os.environ.get("NPVAE_CHROMIUM", "/usr/bin/chromium")
RAW_LATEX = re.compile(r"\$\$|\\(frac|mathrm|mathbb|mathcal|sum|log|partial|sigma|mu|text|begin|odot|"
                       r"qquad|left|right|exp|sqrt)\b|\$[^\s$][^$\n]{0,80}\$")
PAGE_TIMEOUT_MS = 120_000  # a safety net for a loaded machine, not a speed test


def need(module):
    """``module`` imported, or the test skipped (an error under NPVAE_REQUIRE_SITE=1)."""
    try:
        return __import__(module)
    except ImportError as err:
        if REQUIRE:
            raise ImportError(f"NPVAE_REQUIRE_SITE=1 but {module} cannot be imported ({err}); "
                              'install the extra: python -m pip install -e ".[docs]"') from err
        pytest.skip(f"{module} is not installed (the docs extra)")


def need_chromium():
    if not Path(CHROMIUM).is_file():
        if REQUIRE:
            raise FileNotFoundError(f"NPVAE_REQUIRE_SITE=1 but there is no Chromium at {CHROMIUM} "
                                    "(apt-get install chromium, or set NPVAE_CHROMIUM)")
        pytest.skip(f"no Chromium at {CHROMIUM}")
    return CHROMIUM


def load_build():
    """tutorials/site/build.py as a module (a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("site_build", SITE_SOURCES / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    for module in ("mkdocs", "material", "latex2mathml", "nbformat"):
        need(module)
    build_dir = tmp_path_factory.mktemp("site")
    tutorials = load_build().build(strict=True, build_dir=build_dir)  # raises on any warning
    return build_dir / "site", tutorials


@pytest.fixture(scope="module")
def server(built):
    site, _ = built
    handler = functools.partial(QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    thread.join()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    need("playwright")
    executable = need_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


class Reader:
    """One browser tab that records what went wrong while pages load in it."""

    def __init__(self, browser, origin, **context_args):
        self.origin = origin
        self.context = browser.new_context(**context_args)
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.set_default_timeout(PAGE_TIMEOUT_MS)
        self.problems = []
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(f"console error: {m.text}"))
        self.page.on("pageerror", lambda e: self.problems.append(f"script error: {e}"))
        self.page.on("requestfailed", self._failed)
        self.page.on("response", lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"))

    def _route(self, route):
        url = route.request.url
        if url.startswith(self.origin) or url.startswith("data:") or url.startswith("blob:"):
            route.continue_()
        else:  # nothing may leave the machine: refuse it and say so
            self.problems.append(f"request to another host: {url}")
            route.abort()

    def _failed(self, request):
        # ERR_ABORTED: a request cut short by the next navigation (the favicon, the search worker);
        # a missing file still shows as its HTTP status, and a request off the machine is refused above
        if request.url.startswith(self.origin) and request.failure != "net::ERR_ABORTED":
            self.problems.append(f"request failed: {request.url} ({request.failure})")

    def visit(self, url):
        """Open ``url``; return what it shows: ids, links, broken images, raw LaTeX."""
        self.problems = []
        response = self.page.goto(url, wait_until="networkidle")  # the search index and worker too
        if response is None or response.status != 200:
            self.problems.append(f"page did not load: {url} ({response and response.status})")
        seen = self.page.evaluate(INSPECT)
        seen["problems"] = list(self.problems)
        return seen

    def close(self):
        self.context.close()


INSPECT = r"""() => {
  const images = Array.from(document.images);
  const broken = images.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.currentSrc || i.src);
  const skip = new Set(["PRE", "CODE", "SCRIPT", "STYLE", "MATH", "TEXTAREA", "NOSCRIPT"]);
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {
    acceptNode(node) {
      for (let e = node.parentElement; e; e = e.parentElement) {
        if (skip.has(e.tagName.toUpperCase())) return NodeFilter.FILTER_REJECT;
        if (e.classList && (e.classList.contains("md-search") || e.classList.contains("highlight")))
          return NodeFilter.FILTER_REJECT;
      }
      const style = getComputedStyle(node.parentElement);
      return style.display === "none" || style.visibility === "hidden" ? NodeFilter.FILTER_REJECT
                                                                        : NodeFilter.FILTER_ACCEPT;
    }});
  const text = [];
  while (walker.nextNode()) text.push(walker.currentNode.textContent);
  return {
    ids: Array.from(document.querySelectorAll("[id], a[name]")).map(e => e.id || e.name),
    links: Array.from(document.querySelectorAll("a[href]")).map(a => a.href),
    images: images.length,
    broken_images: broken,
    math: document.querySelectorAll("math").length,
    text: text.join(" "),
  };
}"""


def raw_latex(text):
    return sorted({m.group(0) for m in RAW_LATEX.finditer(text)})


def site_pages(site):
    return sorted(p.relative_to(site).as_posix() for p in site.rglob("index.html"))


def url_of(origin, page):
    return f"{origin}/{page[:-len('index.html')]}"


def test_the_site_builds_strictly_with_a_page_and_a_figure_per_tutorial(built):
    site, tutorials = built
    sources = sorted((REPO / "tutorials").glob("[0-9][0-9]_*.py"))
    assert [page for page, _, _ in tutorials] == [f"tutorials/{s.stem}.md" for s in sources]
    assert all(n >= 1 for _, _, n in tutorials), [(page, n) for page, _, n in tutorials]
    for source in sources:  # the downloads beside each page
        assert (site / "tutorials" / f"{source.stem}.ipynb").is_file()
        assert (site / "tutorials" / source.name).is_file()
    for page in ("derivations", "exercises", "cli", "api", "benchmarks"):
        assert (site / page / "index.html").is_file(), page
    html = "\n".join(p.read_text() for p in site.rglob("*.html"))
    assert "fonts.googleapis" not in html and "cdn.jsdelivr" not in html and "mathjax" not in html.lower()


def test_a_broken_link_or_formula_stops_the_build(tmp_path):
    need("latex2mathml")
    build = load_build()
    with pytest.raises(build.SiteError, match="no page on the site"):
        build.relink("see [this](nowhere/at_all.md)", "tutorials/derivations.md", "derivations.md")
    assert build.relink("[a](derivations.md#adam) `[b](x.md)`", "tutorials/01_dense_layer.py",
                        "tutorials/01_dense_layer.md") == "[a](../derivations.md#adam) `[b](x.md)`"
    spec = importlib.util.spec_from_file_location("site_hooks", SITE_SOURCES / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    assert "<math" in hooks.mathml(r"\frac{a}{b}", False, "x")
    with pytest.raises(hooks.MathError):
        hooks.mathml(r"\frac{a}{", False, "a broken formula")


def test_every_page_in_a_real_browser(built, server, browser):
    site, _ = built
    reader = Reader(browser, server)
    pages = site_pages(site)
    assert len(pages) > 30, pages
    seen, problems, maths = {}, [], 0
    try:
        for page in pages:
            url = url_of(server, page)
            result = reader.visit(url)
            seen[url] = result
            maths += result["math"]
            problems += [f"{page}: {p}" for p in result["problems"]]
            problems += [f"{page}: image does not load: {src}" for src in result["broken_images"]]
            problems += [f"{page}: raw LaTeX in the text: {t!r}" for t in raw_latex(result["text"])]
    finally:
        reader.close()
    assert maths > 500, maths  # the derivations alone have hundreds of formulas, all MathML
    for url, result in seen.items():
        for link in result["links"]:
            target, anchor = urldefrag(link)
            if not target.startswith(server):
                if urlparse(target).scheme in ("http", "https"):
                    problems.append(f"{url}: a link leaves the site: {link}")
                continue
            if target in seen:
                if anchor and anchor not in seen[target]["ids"]:
                    problems.append(f"{url}: no #{anchor} on {target}")
                continue
            path = site / urlparse(target).path.lstrip("/")
            if not (path.is_file() or (path / "index.html").is_file()):
                problems.append(f"{url}: link to nothing: {link}")
    assert not problems, "\n".join(problems[:60]) + f"\n({len(problems)} problems)"


def search(page, query):
    """Type ``query`` into the header's search box, as a reader does, and wait for a result.

    Material's search reads key presses (``fill`` sends none), and a query typed
    while its worker is still building the index can go unanswered: until a
    result shows (or PAGE_TIMEOUT_MS passes), the last letter is typed again.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.click("input.md-search__input")
    page.keyboard.type(query)
    deadline = time.monotonic() + PAGE_TIMEOUT_MS / 1000
    while True:
        try:
            page.wait_for_selector(".md-search-result__item", timeout=5_000)
            return
        except PlaywrightTimeout:
            if time.monotonic() > deadline:
                raise
            page.keyboard.press("Backspace")
            page.keyboard.type(query[-1])


def test_search_finds_reparameterization(built, server, browser):
    reader = Reader(browser, server)
    try:
        reader.visit(server + "/")
        search(reader.page, "reparameterization")
        results = reader.page.inner_text(".md-search-result")
        assert reader.page.locator(".md-search-result__item").count() >= 1
        assert "reparameteri" in results.lower(), results[:500]
        reader.page.locator(".md-search-result__link").first.click()  # (re-found if redrawn)
        reader.page.wait_for_load_state("load")
        assert reader.page.url.startswith(server) and reader.page.url.rstrip("/") != server
        assert not reader.problems, reader.problems
    finally:
        reader.close()


def test_the_home_page_fits_a_phone(built, server, browser, tmp_path):
    reader = Reader(browser, server, viewport={"width": 390, "height": 844}, device_scale_factor=2,
                    is_mobile=True, has_touch=True)
    try:
        reader.visit(server + "/")
        width = reader.page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        shots = Path(os.environ.get("NPVAE_SITE_SCREENSHOTS", tmp_path))
        shots.mkdir(parents=True, exist_ok=True)
        reader.page.screenshot(path=str(shots / "home_390px.png"))
        reader.visit(server + "/tutorials/05_reparameterization/")
        reader.page.screenshot(path=str(shots / "tutorial_05_390px.png"), full_page=False)
        assert width[0] <= width[1], f"horizontal scroll at 390 px: content {width[0]} px wide"
        assert not reader.problems, reader.problems
    finally:
        reader.close()


def test_the_checks_fail_on_a_page_that_breaks_them(browser, tmp_path):
    """The browser checks can fail: a page with raw LaTeX, a dead image and a request to another host."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "index.html").write_text(
        "<html><body><p>the loss $$\\frac{a}{b}$$ here</p><img src='missing.png'>"
        "<img src='https://example.invalid/x.png'><script>console.error('boom')</script></body></html>")
    handler = functools.partial(QuietHandler, directory=str(bad))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{httpd.server_address[1]}"
    reader = Reader(browser, origin)
    try:
        result = reader.visit(origin + "/")
    finally:
        reader.close()
        httpd.shutdown()
    found = "\n".join(result["problems"])
    assert "request to another host: https://example.invalid/x.png" in found
    assert "console error: boom" in found and "HTTP 404" in found
    assert len(result["broken_images"]) == 2
    assert raw_latex(result["text"]) == ["$$"] or "$$" in raw_latex(result["text"])

