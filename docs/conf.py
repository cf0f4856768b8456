"""Sphinx configuration for jaxgmm's documentation site (``python3 dev.py docs``).

The build is checked: ``dev.py`` runs it with ``-W`` (every warning is an
error) and ``nitpicky`` makes every unresolved cross-reference a warning.
Things that live outside docs/ (the notebooks, BENCHMARKS.md, the command
line's ``--help``) are copied or generated into docs/_generated/ at build
time, never committed there, so the site cannot drift from them.
"""

import ast
import os
import re
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
GENERATED = DOCS / "_generated"
sys.path.insert(0, str(ROOT))

import jaxgmm  # noqa: E402  (after the path: the checkout's jaxgmm, as the docs describe it)

project = "jaxgmm"
author = "the jaxgmm developers"
copyright = "the jaxgmm developers"
release = version = jaxgmm.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_nb",
]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}  # .rst first: autosummary writes its stubs in the first

# Checked cross-references: every `:func:` and every type in a signature must resolve, except the
# names that live in other projects (no intersphinx: the build needs no network).
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(jax|jnp|np|numpy|optax|sklearn|matplotlib|argparse|pathlib|typing|collections|os)(\..*)?"),
    (r"py:.*", r"(Array|ArrayLike|PRNGKey|Mesh|NamedSharding|Axes|Figure|Callable|Iterable|Iterator|Sequence|Mapping)"),
    (r"py:.*", r"(optional|default.*|array-like|array_like|callable|str|int|float|bool|tuple|list|dict|None)"),
    (r"py:class", r".*[ -].*|[^A-Za-z_].*"),  # prose in a type field: "NaN-padded", "(K, D)"
]

autosummary_generate = True
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"  # no second, undocumented parameter list
autodoc_member_order = "bysource"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_ivar = True  # fields are documented once, by autodoc, as the classes' members

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "off"  # render the committed outputs; the test suite executes the notebooks

# The pages load MathJax from its CDN. JAXGMM_DOCS_MATHJAX (a MathJax 2 URL, e.g. Debian's
# file:///usr/share/javascript/mathjax/MathJax.js?config=TeX-AMS_CHTML) builds pages that typeset
# their math offline: tests/test_docs.py uses it to check in a browser that every formula renders.
if os.environ.get("JAXGMM_DOCS_MATHJAX"):
    mathjax_path = os.environ["JAXGMM_DOCS_MATHJAX"]
    # MyST marks its sections tex2jax_ignore and the formulas "math" (MathJax 3's way); say the same to 2
    mathjax2_config = {"tex2jax": {"processClass": "math|output_area", "ignoreClass": "tex2jax_ignore"}}

html_theme = "pydata_sphinx_theme"
html_title = f"jaxgmm {version}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_static_path = []
templates_path = ["_templates"]


def _copy_external_sources() -> None:
    """Notebooks and the benchmark tables, copied so that Sphinx sees them inside its source tree."""
    GENERATED.mkdir(exist_ok=True)
    notebooks = GENERATED / "notebooks"
    shutil.rmtree(notebooks, ignore_errors=True)
    notebooks.mkdir()
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        shutil.copy2(nb, notebooks / nb.name)
    # The benchmark tables (BENCHMARKS.md gathers every table benchmarks/ writes) and their figures.
    shutil.copy2(ROOT / "BENCHMARKS.md", GENERATED / "benchmarks.md")
    for png in ("results.png", "results-accelerator.png"):
        shutil.copy2(ROOT / "benchmarks" / png, GENERATED / png)


def _cli_help() -> None:
    """The command's and each subcommand's ``--help``, verbatim, into _generated/cli_help.inc (included by
    guide/cli.md), so a new subcommand or option shows up by itself. The text is the parser's own
    ``format_help()``, which is what ``--help`` prints, at a fixed width (argparse reads COLUMNS);
    formatted in this process because starting ``jaxgmm --help`` seven times took 9 s of a 20 s build."""
    from jaxgmm.cli import build_parser

    parser = build_parser()
    subparsers = parser._subparsers._group_actions[0].choices  # argparse keeps them there
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "90"  # the same text on every terminal
    try:
        sections = [f"### `{p.prog}`\n\n````text\n{p.format_help().rstrip()}\n````\n"
                    for p in [parser, *subparsers.values()]]
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
    (GENERATED / "cli_help.inc").write_text("\n".join(sections), encoding="utf-8")


# The words of a numpydoc type field ("array, shape (K, D)", "int, optional") become references to
# whatever object has that name ("shape" would link to IncompleteData.shape): plain lower-case words,
# dimension letters and literals are prose there, so they stay text.
TYPE_FIELD_PROSE = re.compile(r"[a-z_][a-z_0-9]*|[A-Z](_[a-z0-9]+)?|True|False|None")


def _unlink_type_prose(app, doctree):
    from sphinx.addnodes import pending_xref

    for node in list(doctree.findall(pending_xref)):
        if (node.get("refdomain") == "py" and node.get("refspecific") and node.get("reftype") in ("class", "obj")
                and TYPE_FIELD_PROSE.fullmatch(node["reftarget"])):
            node.replace_self(node.children)


def attribute_docstrings(package_dir: Path) -> dict:
    """``{NAME: docstring}`` for module constants documented by a string right after their assignment.

    autodoc finds these only in the module that defines a constant; the reference documents them
    where users import them (``jaxgmm.COVARIANCE_MODELS``), where it would show the docstring of
    ``tuple`` instead.
    """
    docs = {}
    for path in sorted(package_dir.rglob("*.py")):
        body = ast.parse(path.read_text(encoding="utf-8")).body
        for node, after in zip(body, body[1:]):
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str):
                docs.update({t.id: after.value.value for t in targets if isinstance(t, ast.Name)})
    return docs


CONSTANT_DOCS = attribute_docstrings(ROOT / "jaxgmm")

# jaxgmm's compiled entry points (em_loop, initialize, sample, …, made by jaxgmm.xla_options.jit) are
# callable objects wrapping a function, which autosummary takes for data (no signature, no docstring):
# its stub template (_templates/autosummary/base.rst) documents these names as functions.
autosummary_context = {
    "wrapped_functions": sorted(f"jaxgmm.{n}" for n in jaxgmm.__all__
                                if callable(getattr(getattr(jaxgmm, n), "__wrapped__", None))),
}


def _constant_docstring(app, what, name, obj, options, lines):
    if what == "data" and not callable(obj):
        from sphinx.util.docstrings import prepare_docstring

        lines[:] = prepare_docstring(CONSTANT_DOCS.get(name.rsplit(".", 1)[-1], ""))


def _require_docstring(app, what, name, obj, options, lines):
    """A documented name without a docstring is a warning, so the -W build fails on it."""
    if not any(line.strip() for line in lines):
        from sphinx.util import logging

        logging.getLogger(__name__).warning(f"{what} {name} has no docstring", type="jaxgmm", subtype="docstring")


import jaxgmm.models  # noqa: E402

PUBLIC = {f"jaxgmm.{n}" for n in jaxgmm.__all__} | {f"jaxgmm.models.{n}" for n in jaxgmm.models.__all__}


def _public_alias(app, env, node, contnode):
    """Annotations and internal modules name an object where it is defined
    (``jaxgmm.incomplete.IncompleteData``); the reference documents it where users import it
    (``jaxgmm.IncompleteData``)."""
    if node.get("refdomain") != "py":
        return None
    name = node["reftarget"].rsplit(".", 1)[-1]
    for public in (f"jaxgmm.{name}", f"jaxgmm.models.{name}"):
        if public in PUBLIC and public != node["reftarget"]:
            return env.get_domain("py").resolve_xref(
                env, node["refdoc"], app.builder, node["reftype"], public, node, contnode)
    return None


def _skip_member(app, what, name, obj, skip, options):
    """Leave out the ``set_*_request`` methods scikit-learn adds to every estimator (its metadata
    routing, documented by scikit-learn with references into its own site)."""
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    # autosummary writes a page per listed name; a stale one (a name since removed) would be an orphan
    shutil.rmtree(DOCS / "api" / "generated", ignore_errors=True)
    _copy_external_sources()
    _cli_help()
    app.connect("autodoc-skip-member", _skip_member)
    app.connect("autodoc-process-docstring", _constant_docstring)
    app.connect("autodoc-process-docstring", _require_docstring)
    app.connect("doctree-read", _unlink_type_prose)
    app.connect("missing-reference", _public_alias)
