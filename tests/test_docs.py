"""The documentation site: built with warnings as errors (a broken cross-reference or include,
a docstring that does not parse, a tutorial cell that fails), the tutorials executed with their
outputs in the pages, and the built site opened in a real browser (Debian's chromium, headless):
the index, the API page of ``create_model`` and a tutorial, each checked for its text, with a
screenshot kept in ``docs/_build/browser/`` as the run's artifact."""

import shutil
import subprocess
import sys

import pytest

from tests.cli_utils import ROOT, cpu_env

pytestmark = pytest.mark.docs

BUILD = ROOT / "docs" / "_build"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


@pytest.fixture(scope="module")
def site():
    html = BUILD / "html"
    shutil.rmtree(html, ignore_errors=True)
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "docs", str(html)],
        cwd=ROOT, env=cpu_env(), capture_output=True, text=True, timeout=2400,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "build succeeded" in result.stdout
    return html


def browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError(f"no headless browser ({', '.join(BROWSERS)}): apt-get install chromium")


def open_page(page, screenshot: str | None = None) -> str:
    """The page's DOM after the browser ran it; a screenshot to ``docs/_build/browser/``."""
    command = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    url = page.as_uri()
    dom = subprocess.run([*command, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    if screenshot:
        folder = BUILD / "browser"
        folder.mkdir(parents=True, exist_ok=True)
        shot = folder / screenshot
        taken = subprocess.run(
            [*command, "--window-size=1280,1400", f"--screenshot={shot}", url],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert taken.returncode == 0 and shot.stat().st_size > 20_000, taken.stderr[-2000:]
    return dom.stdout


def test_the_site_opens_in_a_browser_with_its_pages(site):
    index = open_page(site / "index.html", "index.png")
    assert "segjax" in index and "Getting started" in index and "Config keys" in index
    api = open_page(site / "api.html", "api.png")
    assert "segjax.models.create_model" in api and "num_classes" in api
    keys = open_page(site / "config_keys.html")
    assert "optimizer.learning_rate" in keys and "the peak rate, after warm-up" in keys


def test_the_tutorials_ran_in_the_build(site):
    """Their cells' outputs are in the pages: what the commands printed and the figure."""
    own = open_page(site / "tutorials" / "own_images.html", "tutorial.png")
    assert "60 images" in own and "the three worst" in own
    assert "per_image.csv" in own and "MB" in own  # evaluate's line; the ONNX file's size
    assert "<img" in own  # the overlay, rendered
    compare = open_page(site / "tutorials" / "compare_encoders.html")
    assert "2/2 members finished" in compare or "members finished" in compare
    assert "| ghostnet050 | resnet18 |" in compare and "Wilcoxon" in compare
