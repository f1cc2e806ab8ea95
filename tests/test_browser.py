"""The published HTML, opened in a real browser (Chromium via Playwright) with the network off.

Every page of the built book is served from 127.0.0.1 and loaded once; every request that leaves the machine is
aborted and reported. Checked on each page: no console errors, no failed or external requests, internal links and
their anchors resolve, images load, the sidebar lists every page of _toc.yml, formulas are typeset by the book's own
MathJax. The search page must find terms. With an executed build, every notebook that plots shows a figure.

Which build: `BOOK_HTML_DIR` (`make book`: _build/html) and `BOOK_HTML_EXECUTED` (`1`: the build executed the
notebooks, `make book`; `0`: `make test`'s fast build without execution). With `BOOK_HTML_DIR` set, a missing browser,
missing Playwright or a missing build fails these tests with the command that provides it: they never skip then.
Without it (`pytest tests` alone, no book built) they skip, saying which command runs them.
"""

import functools
import http.server
import json
import os
import re
import shutil
import threading
import urllib.parse
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SELECTED = os.environ.get("BOOK_HTML_DIR")
HTML_DIR = (ROOT / (SELECTED or "_build/html")).resolve()
EXECUTED = os.environ.get("BOOK_HTML_EXECUTED", "0") == "1"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
PLOTS = re.compile(r"\b(plots|plt)\.\w+\(|\.show\(")
TIMEOUT_MS = 30_000

# Run inside each page once it has loaded: everything the checks need, in one round trip.
INSPECT_PAGE = """async () => {
    const images = [...document.images];
    await Promise.all(images.map((img) => {
        img.loading = "eager";
        return img.complete ? null : new Promise((done) => {
            img.addEventListener("load", done); img.addEventListener("error", done); setTimeout(done, 10000);
        });
    }));
    if (document.querySelector(".math")) {
        if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
            await MathJax.startup.promise;
            await document.fonts.ready;
        }
    }
    const prose = (document.querySelector("main") || document.body).cloneNode(true);
    prose.querySelectorAll("pre, code, script, style, textarea, mjx-container").forEach((n) => n.remove());
    return {
        links: [...document.querySelectorAll("a[href]")].map((a) => a.href),
        icon: [...document.querySelectorAll("link[rel~=icon]")].map((l) => l.href),
        ids: [...document.querySelectorAll("[id]")].map((n) => n.id)
            .concat([...document.querySelectorAll("a[name]")].map((a) => a.name)),
        images: images.map((img) => ({
            src: img.currentSrc || img.src,
            loaded: img.complete && img.naturalWidth > 0,
            output: !!img.closest(".cell_output"),
        })),
        sidebar: [...document.querySelectorAll("nav.bd-docs-nav a[href]")].map((a) => a.href.split("#")[0]),
        captions: [...document.querySelectorAll("nav.bd-docs-nav .caption-text")].map((n) => n.textContent.trim()),
        math: document.querySelectorAll(".math").length,
        mathUntypeset: [...document.querySelectorAll(".math")]
            .filter((n) => !n.querySelector("mjx-container")).map((n) => n.textContent.slice(0, 60)),
        mjx: document.querySelectorAll("mjx-container").length,
        texErrors: [...document.querySelectorAll("mjx-merror")].map((n) => n.getAttribute("data-mjx-error") || "?"),
        rawTex: (prose.textContent.match(/\\\\[(\\[][^\\n]{0,50}/g) || []).slice(0, 3),
        mathjaxScripts: [...document.scripts].filter((s) => /mathjax/i.test(s.src)).map((s) => s.src),
        outputs: document.querySelectorAll(".cell_output").length,
    };
}"""


# ----------------------------------------------------------------------------- the book's own pages


def toc_files():
    """Every page of _toc.yml (root, chapters, sections), as paths without suffix."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    found = [toc["root"]]

    def walk(entries):
        for item in entries:
            found.append(item["file"])
            walk(item.get("sections", []))

    for part in toc.get("parts", []):
        walk(part["chapters"])
    walk(toc.get("chapters", []))
    return found


def toc_captions():
    return [part["caption"] for part in yaml.safe_load((ROOT / "_toc.yml").read_text()).get("parts", [])]


def notebook_sources():
    """{page path: code of the notebook} for every notebook in the table of contents."""
    found = {}
    for name in toc_files():
        path = ROOT / f"{name}.ipynb"
        if path.is_file():
            cells = json.loads(path.read_text())["cells"]
            found[name] = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return found


def plots(code: str) -> bool:
    """Whether notebook code draws a figure (calls `plots.`, `plt.` or `.show(`)."""
    return bool(PLOTS.search(code))


# ----------------------------------------------------------------------------- serving and crawling


def require_a_selected_build():
    if not SELECTED:
        pytest.skip("no book selected: `make test` and `make book` run these checks (they set BOOK_HTML_DIR)")


@pytest.fixture(scope="module")
def site():
    """The built book served read-only on 127.0.0.1; yields its base URL."""
    require_a_selected_build()
    if not (HTML_DIR / "index.html").is_file():
        pytest.fail(
            f"No built book at {HTML_DIR}. Build it first: `make test` (fast, notebooks not executed; sets "
            "BOOK_HTML_DIR) or `make book` (executed, _build/html)."
        )

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(HTML_DIR)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright; fails (never skips) with the command to run when either is missing."""
    require_a_selected_build()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is not installed: run `make setup` (requirements.txt pins playwright).")
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"Chromium not found at {CHROMIUM}: run `apt-get install -y chromium` (or `make system-packages`).")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


class Offline:
    """A browser context that serves only `base`; each visit gets a fresh page, and its problems are kept per page."""

    def __init__(self, browser, base):
        self.base, self.problems = base, {}
        self.context = browser.new_context()
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = None

    def visit(self, path, inspect=True):
        """Load `path` in a new page with every request outside the book aborted; return what INSPECT_PAGE saw."""
        found = self.problems.setdefault(path, [])
        if self.page:
            self.page.close()
        self.page = page = self.context.new_page()
        page.route("**/*", lambda route: self._route(route, found))
        page.on("console", lambda msg: msg.type == "error" and found.append(f"console error: {msg.text}"))
        page.on("pageerror", lambda exc: found.append(f"uncaught exception: {exc}"))
        page.on("requestfailed", lambda req: self._failed(req, found))
        page.on("response", lambda res: res.status >= 400 and found.append(f"HTTP {res.status}: {res.url}"))
        page.goto(self.base + path, wait_until="load")
        return page.evaluate(INSPECT_PAGE) if inspect else None

    def close(self):
        self.context.close()
        return {path: found for path, found in self.problems.items() if found}

    @staticmethod
    def _failed(request, found):
        # ERR_ABORTED: cancelled when the page closed (a late favicon); 404s are caught as responses above
        if request.failure != "net::ERR_ABORTED":
            found.append(f"request failed: {request.url} ({request.failure})")

    def _route(self, route, found):
        if route.request.url.startswith(self.base):
            route.continue_()
        else:
            found.append(f"requested outside the book (network is off): {route.request.url}")
            route.abort()


@pytest.fixture(scope="module")
def crawl(browser, site):
    """Load every page of the build once: {page path: what INSPECT_PAGE saw}, plus the problems seen per page."""
    offline = Offline(browser, site)
    pages = sorted(
        p.relative_to(HTML_DIR).as_posix()
        for p in HTML_DIR.rglob("*.html")
        if not p.relative_to(HTML_DIR).parts[0].startswith("_")
    )
    seen = {}
    for path in pages:
        if path == "index.html":  # a redirect to the root page; inspected there
            offline.visit(path, inspect=False)
            offline.page.wait_for_url(f"**/{toc_files()[0]}.html")
            continue
        seen[path] = offline.visit(path)
    return {"base": site, "pages": seen, "problems": offline.close()}


def report(failures: dict) -> str:
    return "\n".join(f"{page}:\n  " + "\n  ".join(map(str, items)) for page, items in sorted(failures.items()))


# ----------------------------------------------------------------------------- the checks


def test_every_page_loads_offline_without_console_errors(crawl):
    assert len(crawl["pages"]) >= len(toc_files()), "fewer HTML pages than pages in _toc.yml"
    assert not crawl["problems"], "problems seen while loading the book with the network off:\n" + report(
        crawl["problems"]
    )


def test_every_toc_page_was_built(site):
    missing = [name for name in toc_files() if not (HTML_DIR / f"{name}.html").is_file()]
    assert not missing, f"pages of _toc.yml with no HTML in {HTML_DIR}: {missing}"


def test_internal_links_anchors_and_the_favicon_resolve(crawl):
    base, pages = crawl["base"], crawl["pages"]
    ids = {path: set(info["ids"]) for path, info in pages.items()}
    broken = {}
    for path, info in pages.items():
        if not info["icon"]:
            broken.setdefault(path, []).append("no <link rel=icon>: the browser would ask for /favicon.ico")
        for href in set(info["links"] + info["icon"]):
            if not href.startswith(base):
                continue  # external links (repository, Binder, Colab) are not followed: the network is off
            url = urllib.parse.urlsplit(href)
            target = urllib.parse.unquote(url.path[len(urllib.parse.urlsplit(base).path) :]) or "index.html"
            if target.endswith("/"):
                target += "index.html"
            if not (HTML_DIR / target).is_file():
                broken.setdefault(path, []).append(f"{href}: no such file")
            elif url.fragment and target in ids and urllib.parse.unquote(url.fragment) not in ids[target]:
                broken.setdefault(path, []).append(f"{href}: no element with id {url.fragment!r}")
    assert not broken, "broken internal links:\n" + report(broken)


def test_every_image_loads(crawl):
    broken = {
        path: [img["src"][:120] for img in info["images"] if not img["loaded"]]
        for path, info in crawl["pages"].items()
        if any(not img["loaded"] for img in info["images"])
    }
    assert not broken, "images that did not load:\n" + report(broken)


def test_the_sidebar_lists_every_page_of_the_toc_on_every_page(crawl):
    expected = {crawl["base"] + f"{name}.html" for name in toc_files()}
    missing = {}
    for path, info in crawl["pages"].items():
        lacking = sorted(expected - set(info["sidebar"]))
        captions = [c for c in toc_captions() if c not in info["captions"]]
        if lacking or captions:
            missing[path] = [f"not in the sidebar: {url}" for url in lacking] + [f"no part {c!r}" for c in captions]
    assert not missing, "sidebar incomplete:\n" + report(missing)


def test_formulas_are_typeset_by_the_books_own_mathjax(crawl):
    with_math = {path: info for path, info in crawl["pages"].items() if info["math"]}
    assert with_math, "no page has a formula: the check would pass vacuously"
    failures = {}
    for path, info in crawl["pages"].items():
        problems = []
        if info["math"] and (info["mathUntypeset"] or not info["mjx"]):
            problems.append(f"{len(info['mathUntypeset'])} of {info['math']} formulas not typeset by MathJax:")
            problems += info["mathUntypeset"][:3]
        if info["texErrors"]:
            problems.append(f"MathJax could not typeset: {info['texErrors'][:3]}")
        if info["rawTex"]:
            problems.append(f"raw LaTeX in the text: {info['rawTex']}")
        local = crawl["base"] + "_static/mathjax/"
        if len(info["mathjaxScripts"]) > 1 or any(not src.startswith(local) for src in info["mathjaxScripts"]):
            problems.append(f"MathJax must be loaded once, from {local}: {info['mathjaxScripts']}")
        if problems:
            failures[path] = problems
    assert not failures, f"formulas ({len(with_math)} pages have some):\n" + report(failures)


@pytest.mark.parametrize(
    "term, expected_page",
    [("fine-tuning", "book/03_finetuning_strategies/index.html"), ("backbone", "book/appendix/glossary.html")],
)
def test_search_finds_a_term(browser, site, term, expected_page):
    offline = Offline(browser, site)
    offline.visit(f"search.html?q={urllib.parse.quote(term)}", inspect=False)
    offline.page.wait_for_selector("#search-results ul.search li a", timeout=TIMEOUT_MS)
    # Sphinx lists the hits one by one; wait for its summary line, written when the search has finished
    offline.page.wait_for_function(
        "() => /found/i.test(document.querySelector('#search-results p.search-summary')?.textContent || '')",
        timeout=TIMEOUT_MS,
    )
    hits = offline.page.eval_on_selector_all("#search-results ul.search li a", "els => els.map(a => a.href)")
    problems = offline.close()
    assert any(href.split("#")[0].split("?")[0] == site + expected_page for href in hits), (
        f"searching {term!r} did not list {expected_page}; found {hits[:10]}"
    )
    assert not problems, report(problems)


def test_notebook_pages_match_the_build_mode(crawl):
    """BOOK_HTML_EXECUTED=1: every notebook page shows outputs; 0: none does (the fast build executed nothing)."""
    outputs = {name: crawl["pages"][f"{name}.html"]["outputs"] for name in notebook_sources()}
    if EXECUTED:
        empty = [name for name, count in outputs.items() if not count]
        assert not empty, f"executed build, yet these notebook pages show no output: {empty}"
    else:
        shown = {name: count for name, count in outputs.items() if count}
        assert not shown, f"BOOK_HTML_EXECUTED=0, yet these pages show outputs (wrong build?): {shown}"


def test_every_notebook_that_plots_shows_a_figure(crawl):
    if not EXECUTED:
        pytest.skip("figures come from executing the notebooks: `make book` checks them (BOOK_HTML_EXECUTED=1)")
    plotting = [name for name, code in notebook_sources().items() if plots(code)]
    assert plotting, "no notebook plots: the check would pass vacuously"
    without = [
        name
        for name in plotting
        if not any(img["output"] and img["loaded"] for img in crawl["pages"][f"{name}.html"]["images"])
    ]
    assert not without, f"notebooks that plot but whose page shows no figure: {without}"


def test_plot_detection():
    assert plots("fig = plots.show_images(x)") and plots("fig, ax = plt.subplots()") and plots("fig.show()")
    assert not plots("print('plots are below')") and not plots("splt.x = 1")


def test_every_notebook_page_ends_with_its_claims_ledger(crawl):
    """scripts/sphinx_claims.py appends the ledger's table (book/claims.json) to every notebook page."""
    missing = [name for name in notebook_sources() if "claims-ledger" not in crawl["pages"][f"{name}.html"]["ids"]]
    assert not missing, f"these notebook pages have no claims table (is sphinx_claims in _config.yml?): {missing}"


# Each framework tab's state on a chapter page: sphinx-design draws a tab as a radio <input> followed by its <label>
# (data-sync-group / data-sync-id) and its content; the checked input's content is the one shown.
TAB_STATE = """() => {
    const labels = [...document.querySelectorAll("label.sd-tab-label[data-sync-group='framework']")];
    const sets = [...document.querySelectorAll(".sd-tab-set")].filter(
        (set) => set.querySelector("label.sd-tab-label[data-sync-group='framework']"));
    const shown = (label) => {
        const content = label.nextElementSibling;
        return !!content && content.offsetParent !== null;
    };
    return {
        sets: sets.length,
        incomplete: sets.filter((set) => !["torch", "keras"].every(
            (id) => set.querySelector(`label.sd-tab-label[data-sync-id='${id}']`))).length,
        checked: labels.filter((l) => document.getElementById(l.htmlFor)?.checked).map((l) => l.dataset.syncId),
        shown: labels.filter(shown).map((l) => l.dataset.syncId),
        stored: window.localStorage.getItem("sphinx-design-tab-id-framework"),
    };
}"""


def chapter_pages() -> list[str]:
    """The chapters' framework-neutral pages (book/NN_slug/index), in the order of _toc.yml."""
    return [page for page in toc_files() if re.fullmatch(r"book/\d\d_[^/]+/index", page)]


def tab_state(offline, page: str) -> dict:
    """Load a chapter page in the context `offline` and read its framework tabs (TAB_STATE)."""
    offline.visit(f"{page}.html", inspect=False)
    return offline.page.evaluate(TAB_STATE)


def test_every_chapter_page_has_framework_tabs_that_switch_together_and_carry_to_the_next_page(browser, site):
    """differences.md (generated from the chapter's source, included by its index.md) puts every framework-specific
    pair of cells in sphinx-design tabs of one sync group: choosing Keras on one tab switches every tab on the page,
    and sphinx-design keeps the choice in localStorage, so the next chapter opens on Keras too."""
    offline = Offline(browser, site)  # a new browser context: nothing chosen yet
    pages = chapter_pages()
    assert len(pages) == 20, pages
    states = {page: tab_state(offline, page) for page in pages}
    without = [page for page, state in states.items() if not state["sets"]]
    assert not without, f"chapter pages without PyTorch | Keras tabs (is differences.md included?): {without}"
    incomplete = {page: state["incomplete"] for page, state in states.items() if state["incomplete"]}
    assert not incomplete, f"tab-sets lacking a PyTorch or a Keras tab: {incomplete}"
    first = [page for page, state in states.items() if set(state["checked"]) != {"torch"}]
    assert not first, f"before any choice, these pages do not open every tab on PyTorch: {first}"

    tab_state(offline, pages[0])
    offline.page.locator("label.sd-tab-label[data-sync-id='keras']").first.click()
    after = offline.page.evaluate(TAB_STATE)
    assert set(after["checked"]) == {"keras"} and len(after["checked"]) == after["sets"], after
    assert set(after["shown"]) == {"keras"}, f"the Keras tabs are chosen, yet other content is shown: {after}"
    assert after["stored"] == "keras", after

    carried = tab_state(offline, pages[1])
    assert set(carried["checked"]) == {"keras"} and len(carried["checked"]) == carried["sets"], (
        f"the choice of Keras on {pages[0]} did not carry to {pages[1]}: {carried}"
    )
    problems = offline.close()
    assert not problems, report(problems)
