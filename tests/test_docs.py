"""The documentation site: it builds with warnings as errors (executing every guide), its API
reference documents every public name, it is self-contained offline, and a real browser
renders its text and figures.

The site is built once per test session (shared by pytest-xdist workers through a lock), with
the README's command: ``sphinx-build -W --keep-going -b html docs <out>``.
"""

from __future__ import annotations

import fcntl
import html.parser
import importlib
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

import rnnjax as rj

for _module in ("sphinx", "myst_nb", "furo"):
    try:
        importlib.import_module(_module)
    except ImportError:
        pytest.skip(f"needs the docs extra ({_module} missing): pip install -e '.[docs]'",
                    allow_module_level=True)

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
BUILD_TIMEOUT_S = 1200


class _Page(html.parser.HTMLParser):
    """The ids, the <img>/<script>/<link> references and the text of one HTML page."""

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()
        self.refs: list[tuple[str, str]] = []  # (tag, url)
        self.text: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag in ("img", "script") and attrs.get("src"):
            self.refs.append((tag, attrs["src"]))
        if tag == "link" and attrs.get("href") and attrs.get("rel") in ("stylesheet", "preload", "icon"):
            self.refs.append((tag, attrs["href"]))
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip -= 1

    def handle_data(self, data):
        if not self._skip:
            self.text.append(data)


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def _build(out: pathlib.Path) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html",
         "-d", str(out / "doctrees"), "docs", str(out / "html")],
        cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    log = result.stdout + result.stderr
    if result.returncode != 0:
        raise AssertionError(f"sphinx-build -W failed (exit {result.returncode}):\n{log[-6000:]}")
    return time.perf_counter() - start, log


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> pathlib.Path:
    """The built site's html folder; the first xdist worker to get here builds it for all."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    out = shared / "docs-site"
    with open(shared / "docs-site.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        failed = out / "FAILED"
        if failed.exists():
            pytest.fail(failed.read_text())
        if not (out / "html" / "index.html").exists():
            out.mkdir(exist_ok=True)
            try:
                seconds, log = _build(out)
            except Exception as e:
                failed.write_text(str(e))
                raise
            (out / "build.log").write_text(log)
            print(f"\ndocs built in {seconds:.1f} s")
    return out / "html"


def test_site_builds_with_warnings_as_errors(site):
    log = (site.parent / "build.log").read_text()
    # the kernels' own "[IPKernelApp] WARNING | ... TCP" notices are not Sphinx warnings
    sphinx_warnings = [line for line in log.splitlines()
                       if "WARNING" in line and "[IPKernelApp]" not in line]
    assert not sphinx_warnings, sphinx_warnings
    assert "build succeeded" in log
    for page in ("index", "getting_started", "concepts", "design", "experiments", "benchmarks",
                 "guides/index", "api/index"):
        assert (site / f"{page}.html").is_file(), page


TOPIC_OF = {"lstm": "cells", "mamba_block": "cells", "register_step": "cells", "scan": "loops",
            "deer_scan": "loops", "rnn": "models", "beam_search": "models", "embedding_lookup": "models",
            "fit": "training", "Checkpoints": "training", "save_params": "training"}


def _public_names() -> set[str]:
    """Every public name, qualified, from the modules themselves."""
    names = {f"rnnjax.{name}" for name in rj.__all__}
    for sub in ("nnx", "interop"):
        names |= {f"rnnjax.{sub}.{name}" for name in importlib.import_module(f"rnnjax.{sub}").__all__}
    return names


def test_api_reference_documents_every_public_name(site):
    pages = {path.stem: _parse(path.read_text()) for path in (site / "api" / "generated").glob("*.html")}
    # one page per topic, none per module (private modules included)
    assert sorted(pages) == ["cells", "interop", "loops", "models", "nnx", "training"]
    names = _public_names()
    assert len(names) > 150 and "rnnjax.lstm" in names and "rnnjax.interop.from_torch" in names
    everywhere = [q for page in pages.values() for q in page.ids if q.startswith("rnnjax.")]
    missing = sorted(names - set(everywhere))
    assert not missing, f"public names missing from the API reference: {missing}"
    assert len(set(everywhere) & names) == len([q for q in everywhere if q in names])  # each on one page only
    for name, topic in TOPIC_OF.items():
        assert f"rnnjax.{name}" in pages[topic].ids, (name, topic)
    assert "rnnjax.interop.from_torch" in pages["interop"].ids and "rnnjax.nnx.CellModule" in pages["nnx"].ids
    # every name has its documentation, not just an anchor: the docstring's first line is there
    scan_text = " ".join("".join(pages["loops"].text).split())
    assert "Run step over the time axis of xs with jax.lax.scan." in scan_text


def test_guides_were_executed(site):
    """Each executed page shows its cells' outputs, computed at build time."""
    expected = {
        "getting_started": "LSTMParams",
        "concepts": "StackedCarry",
        "guides/custom_cell": "matches the NumPy loop",
        "guides/interop": "BiParams",
        "guides/tbptt": "same outputs: True",
        "guides/mixed_precision": "float32 float32",
        "guides/distributed": "CpuDevice(id=1)",
        "guides/parallel_time": "max difference to the sequential loop",
        "guides/checkpoints": "resumed run equals the uninterrupted one: True",
        "guides/unroll": "first layer equals the default: True",
        "guides/training": "skipped 0",
        "guides/modern_blocks": "parallel = step loop: True",
        "guides/export": "equals the model: True",
        "index": "in 300 steps",
    }
    for page, output in expected.items():
        text = (site / f"{page}.html").read_text()
        assert 'class="cell_output' in text, f"{page}: no cell outputs"
        assert output in text, f"{page}: the output {output!r} is missing"
    # the front page shows its figure, drawn at build time
    front = [url for tag, url in _parse((site / "index.html").read_text()).refs if tag == "img"]
    assert front and all((site / url).is_file() and (site / url).stat().st_size > 5000 for url in front)


def test_site_is_self_contained(site):
    """No script, stylesheet or image is loaded from the network, and every one exists."""
    checked = 0
    for path in site.rglob("*.html"):
        for tag, url in _parse(path.read_text()).refs:
            assert not re.match(r"^(https?:)?//", url), f"{path.relative_to(site)}: {tag} from {url}"
            if url.startswith("data:"):
                continue
            target = (path.parent / url.split("?")[0].split("#")[0]).resolve()
            assert target.is_file(), f"{path.relative_to(site)}: {tag} {url} does not exist"
            checked += 1
    assert checked > 100


def test_experiment_figures_are_in_the_site(site):
    for source, page in (("EXPERIMENTS.md", "experiments"), ("BENCHMARKS.md", "benchmarks")):
        figures = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", (ROOT / source).read_text())
        assert figures, source
        images = [url for tag, url in _parse((site / f"{page}.html").read_text()).refs if tag == "img"]
        assert sorted(pathlib.PurePath(u).name for u in images) == sorted(pathlib.PurePath(f).name for f in figures)
        for url in images:
            built = site / url
            original = next(ROOT / f for f in figures if pathlib.PurePath(f).name == pathlib.PurePath(url).name)
            assert built.read_bytes() == original.read_bytes(), url


# ------------------------------------------------------------------------------- in a browser

def _chromium(*args: str, timeout: float = 120) -> str:
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        result = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=10000", *args],
            capture_output=True, text=True, timeout=timeout,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed")

# page -> text that must be visible once the browser has rendered it (scripts run)
RENDERED = {
    "index.html": ["Recurrent sequence models in JAX", "How-to guides", "API reference"],
    "api/generated/loops.html": ["truncated_scan", "Run step over the time axis of xs",
                                       "PARAMETERS", "time_major"],
    "guides/parallel_time.html": ["Parallel-in-time evaluation", "DeerInfo(iterations=",
                                  "max difference to the sequential loop"],
}


@needs_chromium
@pytest.mark.parametrize("page", sorted(RENDERED))
def test_browser_renders_text(site, page, tmp_path):
    dom = _chromium("--dump-dom", (site / page).as_uri())
    text = " ".join("".join(_parse(dom).text).split())
    for expected in RENDERED[page]:
        assert expected.lower() in text.lower(), f"{page}: {expected!r} not rendered"
    # the pixels: a screenshot that is not blank, with dark text on the light page
    shot = tmp_path / "page.png"
    _chromium(f"--screenshot={shot}", "--window-size=1200,900", (site / page).as_uri())
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (900, 1200)
    dark = (pixels.mean(axis=-1) < 0.35).mean()
    assert 0.005 < dark < 0.5, f"{page}: {dark:.3%} dark pixels (blank or unstyled page?)"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20


@needs_chromium
def test_browser_loads_every_figure(site):
    """The experiments page as built, plus a probe that reports each <img>'s decoded size."""
    probe = site / "experiments-image-probe.html"
    page = (site / "experiments.html").read_text()
    script = ("<script>window.addEventListener('load', () => { const p = document.createElement('pre');"
              " p.id = 'probe'; p.textContent = Array.from(document.images).map(i =>"
              " i.naturalWidth + 'x' + i.naturalHeight + ' ' + i.getAttribute('src')).join('\\n');"
              " document.body.appendChild(p); });</script>")
    probe.write_text(page.replace("</body>", script + "</body>"))
    try:
        dom = _chromium("--dump-dom", probe.as_uri())
    finally:
        probe.unlink()
    match = re.search(r'<pre id="probe">(.*?)</pre>', dom, flags=re.S)
    assert match, "the probe did not run"
    rows = [line.split(" ", 1) for line in match.group(1).strip().splitlines()]
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", (ROOT / "EXPERIMENTS.md").read_text())
    assert len(rows) == len(figures)
    for size, src in rows:
        width, height = map(int, size.split("x"))
        assert width > 100 and height > 100, f"{src} did not load ({size})"


def test_ci_runs_the_readme_test_commands():
    """.ci/run runs the README's test commands, both tiers (the first installs the docs extra)."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Run the tests") : readme.index("## Documentation")]
    commands = re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)
    assert len(commands) == 2 and "'.[dev,experiments,docs]'" in commands[0]
    fast = commands[0]
    slow, isa = commands[1].splitlines()
    assert fast.endswith('pytest -q -n 2 -m "not slow"') and slow.endswith("pytest -q -n 2 -m slow")
    assert isa.startswith("XLA_FLAGS=--xla_cpu_max_isa=SSE4_2 ") and "tests/test_exp_*.py" in isa
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    install, _, pytest_fast = fast.rpartition(" && ")
    assert all(line in ci for line in (install, pytest_fast, slow, isa))
    assert ci.index(install) < ci.index(pytest_fast) < ci.index(slow) < ci.index(isa)
