"""The documentation site (docs/): every public name documented, the site built, its links and pages.

The cheap checks (every public name listed in the API reference, with a docstring and an example,
which the suite runs as a doctest) run everywhere. Building the site needs the ``docs`` extra (Sphinx; skipped without it), and the
browser checks need Chromium (Debian's ``chromium``; skipped without it). The site does not depend
on the dtype, so it is built in the float32 pass only.
"""

import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import jax
import pytest

import jaxgmm
import jaxgmm.cli
import jaxgmm.io
import jaxgmm.models

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
API_INDEX = DOCS / "api" / "index.rst"
LOCAL_MATHJAX = Path("/usr/share/javascript/mathjax/MathJax.js")  # Debian's libjs-mathjax (MathJax 2)
MATH = 'class="math notranslate nohighlight"'  # how Sphinx marks a formula for MathJax


def _conf():
    """docs/conf.py as a module (it imports only the standard library and jaxgmm at the top)."""
    spec = importlib.util.spec_from_file_location("jaxgmm_docs_conf", DOCS / "conf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _listed_in_api() -> set:
    """Full names of the objects the API reference lists (autosummary entries, under ``jaxgmm``)."""
    names, in_autosummary = set(), False
    for line in API_INDEX.read_text().splitlines():
        if line.startswith(".. autosummary::"):
            in_autosummary = True
        elif line.strip() and not line.startswith("   "):
            in_autosummary = False  # the directive's indented block ended
        elif in_autosummary and line.strip() and not line.strip().startswith(":"):
            names.add(f"jaxgmm.{line.strip()}")
    return names


def _public_names() -> dict:
    """Every name a user imports: jaxgmm.__all__, jaxgmm.models.__all__ and the public functions and
    classes of the modules imported by their full name."""
    names = {f"jaxgmm.{n}": getattr(jaxgmm, n) for n in jaxgmm.__all__}
    names.update({f"jaxgmm.models.{n}": getattr(jaxgmm.models, n) for n in jaxgmm.models.__all__})
    modules = [jaxgmm.io, jaxgmm.cli]
    for optional in ("jaxgmm.plotting", "jaxgmm.sklearn", "jaxgmm.distributed"):
        try:
            modules.append(importlib.import_module(optional))
        except ImportError:  # matplotlib or scikit-learn absent: their pages are checked where they are installed
            pass
    for module in modules:
        for name, obj in vars(module).items():
            if (not name.startswith("_") and _is_callable(obj)
                    and obj.__module__ == module.__name__ and name in getattr(module, "__all__", [name])):
                names[f"{module.__name__}.{name}"] = obj
    # scikit-learn's argument checks, shared by the estimators, are not part of the API
    return {k: v for k, v in names.items() if not re.fullmatch(r"jaxgmm\.sklearn\.(check_.*|key_from_random_state|"
                                                              r"covariances_from_precisions)", k)}


def _is_callable(obj) -> bool:
    """A function or class, or one of jaxgmm's jitted entry points (which wrap a function)."""
    return inspect.isfunction(obj) or inspect.isclass(obj) or hasattr(obj, "__wrapped__")


def _is_listed(full_name: str, obj, listed: set) -> bool:
    """Listed under this name, or under the top-level name that re-exports it (``jaxgmm.save`` for
    ``jaxgmm.io.save``)."""
    short = full_name.rsplit(".", 1)[1]
    return full_name in listed or (getattr(jaxgmm, short, None) is obj and f"jaxgmm.{short}" in listed)


def test_every_public_name_is_in_the_api_reference():
    listed = _listed_in_api()
    missing = [n for n, obj in _public_names().items() if not _is_listed(n, obj, listed)]
    assert not missing, f"add to docs/api/index.rst: {missing}"


def test_every_public_name_has_a_docstring():
    constants = _conf().CONSTANT_DOCS
    missing = []
    for full_name, obj in _public_names().items():
        if _is_callable(obj):
            documented = bool(obj.__doc__ and obj.__doc__.strip())
        else:  # a constant: documented by the string after its assignment (autodoc's attribute docstring)
            documented = bool(constants.get(full_name.rsplit(".", 1)[1], "").strip())
        if not documented:
            missing.append(full_name)
    assert not missing, f"no docstring: {missing}"


def test_every_public_function_and_class_shows_an_example():
    """The reference shows a runnable example for each (the suite runs them as doctests)."""
    without = sorted(n for n, obj in _public_names().items() if _is_callable(obj) and ">>>" not in (obj.__doc__ or ""))
    assert not without, f"add an example (a doctest) to: {without}"


# ----------------------------------------------------------------------------------------------
# The built site

_x64 = pytest.mark.skipif(jax.config.jax_enable_x64, reason="the site does not depend on the dtype; it is built "
                          "in the float32 pass")


def float32_pass_only(test):
    return pytest.mark.slow(_x64(test))


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Build the site as ``python3 dev.py docs`` does (warnings are errors), into a temporary folder.
    Where Debian's MathJax is installed the pages load it instead of the CDN's, so the browser
    checks can render the math without a network."""
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_nb")
    pytest.importorskip("pydata_sphinx_theme")
    out = tmp_path_factory.mktemp("html")
    env = dict(os.environ)
    if LOCAL_MATHJAX.exists():
        env["JAXGMM_DOCS_MATHJAX"] = f"{LOCAL_MATHJAX.as_uri()}?config=TeX-AMS_CHTML"  # see docs/conf.py
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"the docs build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return out


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id", "name"):
            if attrs.get(key):
                self.ids.add(attrs[key])
        for key in ("href", "src"):
            if attrs.get(key) is not None and not (tag == "link" and key == "href" and "preconnect" in (attrs.get("rel") or "")):
                self.links.append(attrs[key])


def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return parser


@float32_pass_only
def test_site_has_every_page(site):
    for page in ["index.html", "search.html", "genindex.html", "api/index.html", "api/internals.html",
                 "guide/index.html", "guide/cli.html", "guide/missing.html", "guide/covariance.html",
                 "notebooks.html", "_generated/benchmarks.html", "api/generated/jaxgmm.fit.html",
                 "api/generated/jaxgmm.sklearn.GaussianMixture.html"]:
        assert (site / page).is_file(), page
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert sorted(p.stem for p in (site / "_generated" / "notebooks").glob("*.html")) == notebooks
    # a compiled entry point (a callable wrapping a function) is documented as its function
    em_loop = (site / "api" / "generated" / "jaxgmm.em_loop.html").read_text()
    assert 'id="jaxgmm.em_loop"' in em_loop and "max_iter" in em_loop and "Examples" in em_loop
    cli = (site / "guide" / "cli.html").read_text()
    for sub in ("fit", "predict", "impute", "select", "sample", "demo"):
        assert f"usage: jaxgmm {sub}" in cli  # each subcommand's --help, verbatim


@float32_pass_only
def test_no_link_inside_the_site_is_broken(site):
    """Every relative href/src of every page resolves to a file, and a #fragment to an id in it."""
    pages = {p: _parse(p) for p in site.rglob("*.html") if "_static" not in p.parts}  # _static: theme templates
    broken = []
    for page, parsed in pages.items():
        for link in parsed.links:
            parts = urlsplit(link)
            if parts.scheme or link.startswith("//") or not (parts.path or parts.fragment):
                continue  # external (not checked: no network) or empty
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{page.relative_to(site)}: {link}")
            elif parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parse(target).ids
                if unquote(parts.fragment) not in ids:
                    broken.append(f"{page.relative_to(site)}: {link} (no such anchor)")
    assert not broken, f"{len(broken)} broken links:\n" + "\n".join(broken[:40])


def _chromium():
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("Chromium is not installed (Debian: apt-get install chromium)")


def _dom(url: str) -> str:
    """The page's DOM after its scripts ran (search results and math are rendered by JavaScript)."""
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
           "--virtual-time-budget=8000", "--dump-dom", url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, HOME=os.environ.get("TMPDIR", "/tmp")))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@float32_pass_only
def test_pages_render_in_a_browser(site):
    index = _dom((site / "index.html").as_uri())
    assert "Gaussian mixture models fitted by expectation" in index
    assert "bd-sidebar" in index or "bd-header" in index  # the theme's layout was applied
    page = _dom((site / "api" / "generated" / "jaxgmm.fit.html").as_uri())
    assert 'id="jaxgmm.fit"' in page and "n_init" in page and "&gt;&gt;&gt;" in page  # signature, text, example
    if LOCAL_MATHJAX.exists():  # a guide page typesets its formulas in place (all are checked below)
        guide = _dom((site / "guide" / "covariance.html").as_uri())
        assert guide.count('type="math/tex') >= guide.count("mjx-chtml MathJax_CHTML") > 10


@float32_pass_only
def test_search_finds_fit(site):
    dom = _dom((site / "search.html").as_uri() + "?q=fit_many")
    results = dom[dom.find('id="search-results"'):]
    assert "jaxgmm.fit_many" in results, results[:2000]


@float32_pass_only
@pytest.mark.skipif(not LOCAL_MATHJAX.exists(), reason="MathJax is not installed locally (Debian: libjs-mathjax)")
def test_math_renders_without_errors(site, tmp_path):
    """Every formula of every page typesets. MathJax 2 shows TeX it cannot parse as mjx-noError and an
    unknown command in red, so a bad formula is seen here. The formulas of all pages are typeset on
    one page, with the pages' own MathJax set-up (one browser start instead of one per page)."""
    formula = re.compile(r'<(span|div) ' + re.escape(MATH) + r'>(.*?)</\1>', re.S)
    pages = {p: p.read_text(encoding="utf-8") for p in sorted(site.rglob("*.html"))}
    pages = {p: text for p, text in pages.items() if MATH in text}
    assert len(pages) >= 5  # the guide's pages and the notebooks have formulas
    head = next(iter(pages.values()))
    mathjax = re.findall(r'<script type="text/x-mathjax-config">.*?</script>|<script[^>]*MathJax\.js[^>]*></script>', head)
    assert len(mathjax) == 2, mathjax
    body = [f'<div data-page="{p.relative_to(site)}"><{tag} {MATH}>{tex}</{tag}></div>'
            for p, text in pages.items() for tag, tex in formula.findall(text)]
    harness = tmp_path / "formulas.html"
    harness.write_text(f"<html><head>{''.join(mathjax)}</head><body class='tex2jax_ignore'>{''.join(body)}</body></html>")
    dom = _dom(harness.as_uri())
    assert dom.count('type="math/tex') == len(body), "not every formula was typeset"
    for bad in ('class="mjx-noError', 'mathcolor="red"'):  # TeX that does not parse; an unknown command
        if bad in dom:
            page = re.findall(r'data-page="([^"]+)"', dom[: dom.index(bad)])[-1]
            pytest.fail(f"{page}: a formula does not typeset ({bad})")
