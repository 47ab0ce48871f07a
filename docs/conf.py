"""Sphinx configuration for the rnnjax documentation.

Build (from the repository root; needs the ``docs`` extra):

    .venv/bin/sphinx-build -W --keep-going -b html docs docs/_build/html

The API reference is generated here, at configuration time, from ``rnnjax.__all__`` (and the
``__all__`` of ``rnnjax.nnx`` and ``rnnjax.interop``): one page per topic under
``api/generated/`` (not committed). The topics are the commented groups of ``rnnjax.__all__``,
gathered by ``TOPICS`` below, so a name added to a group of ``__all__`` is documented by the
next build without touching these files (a new group must be given a topic: the build says so). Everything is offline: no intersphinx, no CDN scripts, no
math (which would load MathJax from a CDN).
"""

from __future__ import annotations

import importlib
import inspect
import os
import pathlib
import re
import sys

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
# the executed pages' kernels import the same rnnjax as autodoc: this tree's
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the executed guides and autodoc's imports

import rnnjax  # noqa: E402

project = "rnnjax"
author = "the rnnjax authors"
copyright = "the rnnjax authors"
release = version = rnnjax.__version__

extensions = [
    "myst_nb",  # Markdown pages (MyST) and executed text notebooks; includes myst_parser
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # Google-style Args:/Returns: sections
]

exclude_patterns = ["_build", "README.md", "**/.ipynb_checkpoints", ".jupyter_cache"]
html_theme = "furo"  # bundles its CSS/JS: the pages render offline
html_title = f"rnnjax {release}"
html_static_path: list[str] = []
templates_path: list[str] = []

# Markdown ---------------------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist"]  # no dollarmath: math would need MathJax
myst_heading_anchors = 3  # links to README/EXPERIMENTS sections like (#some-heading) resolve

# Executed guides ---------------------------------------------------------------------------------
# Every page with a {code-cell} is run on each build, on the CPU, so its code cannot drift from
# the library; an error in a cell fails the build.
nb_execution_mode = "force"
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_execution_timeout = 600  # per cell; a loaded 2-core machine is slow to compile
nb_ipywidgets_js: dict = {}  # no widgets: keep require.js and the widget manager (CDN) out
nb_merge_streams = True

# API reference -----------------------------------------------------------------------------------
autodoc_default_options = {"members": False}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True  # ``dtype=jnp.float32`` rather than its repr
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
add_module_names = False

GENERATED = DOCS / "api" / "generated"


def _public(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    return list(module.__all__)


def _write_if_changed(path: pathlib.Path, text: str) -> None:
    """Atomic and only on change: concurrent builds of one tree write the same bytes."""
    if path.exists() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _entry(qualified: str, obj: object) -> str:
    if inspect.isclass(obj):
        return f".. autoclass:: {qualified}\n   :members:\n"
    if callable(obj):
        return f".. autofunction:: {qualified}\n"
    return f".. autodata:: {qualified}\n"


# (page, title, summary, the comment lines of ``rnnjax.__all__``'s groups that it gathers)
TOPICS = [
    ("cells", "Cells", "Every built-in cell and block: params, step, factory; ``Cell`` and the cell registry.",
     ("cells", "more cells", "gated linear recurrences", "the papers' blocks", "the cell registry")),
    ("loops", "Time loops", "Running a step over time: the loops for long sequences and the parallel-in-time forms.",
     ("time loops", "parallel in time")),
    ("models", "Models", "Composition into sequence models, packing, attention, encoder–decoders, decoding and "
     "token inputs.", ("composition", "attention, encoder", "token inputs")),
    ("training", "Training", "Losses, the training step and loop, checkpoints, metrics, diagnostics, data "
     "parallelism and parameter files.", ("losses", "training", "plain parameter files")),
]
SUBMODULE_PAGES = {
    "rnnjax.interop": ("interop", "Interop: weights from and to other libraries"),
    "rnnjax.nnx": ("nnx", "Flax NNX adapters (the ``nnx`` extra)"),
}


def _groups() -> list[tuple[str, list[str]]]:
    """``rnnjax.__all__`` as written: ``[(comment, [names])]`` in source order."""
    source = (ROOT / "rnnjax" / "__init__.py").read_text()
    body = source[source.index("__all__ = [") : ]
    body = body[: body.index("\n]") ]
    groups: list[tuple[str, list[str]]] = []
    for line in body.splitlines()[1:]:
        line = line.strip()
        if line.startswith("#"):
            groups.append((line.lstrip("# "), []))
        else:
            groups[-1][1].extend(re.findall(r'"(\w+)"', line))
    return groups


def api_pages() -> dict[str, tuple[str, str, list[str]]]:
    """``{page: (title, summary, [qualified names])}``: rnnjax's names by topic, then interop and nnx."""
    pages: dict[str, tuple[str, str, list[str]]] = {}
    for comment, names in _groups():
        topic = [t for t in TOPICS if comment.startswith(t[3])]
        if not topic:
            raise RuntimeError(f"docs/conf.py: the group {comment!r} of rnnjax.__all__ has no topic in TOPICS")
        page, title, summary, _ = topic[0]
        pages.setdefault(page, (title, summary, []))[2].extend(f"rnnjax.{name}" for name in names)
    for sub, (page, title) in SUBMODULE_PAGES.items():
        summary = (inspect.getdoc(importlib.import_module(sub)) or "").split("\n\n")[0]
        pages[page] = (title, summary, [f"{sub}.{name}" for name in _public(sub)])
    return pages


def generate_api() -> None:
    pages = api_pages()
    for page, (title, summary, names) in pages.items():
        lines = [title, "=" * len(title), "", summary, ""]
        if page in ("interop", "nnx"):
            lines += [f".. module:: rnnjax.{page}", "   :no-index:", ""]
        lines += [_entry(qualified, _resolve(qualified)) for qualified in names]
        _write_if_changed(GENERATED / f"{page}.rst", "\n".join(lines) + "\n")
    for stale in GENERATED.glob("*.rst"):  # a page no longer generated
        if stale.stem not in pages:
            stale.unlink()


def _resolve(qualified: str) -> object:
    module_name, _, name = qualified.rpartition(".")
    return getattr(importlib.import_module(module_name), name)


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
    """NamedTuple fields show in the class signature; their 'Alias for field number' docs add nothing."""
    if (getattr(obj, "__doc__", None) or "").startswith("Alias for field number"):
        return True
    return skip


generate_api()


def setup(app):
    app.connect("autodoc-skip-member", _skip_namedtuple_fields)
