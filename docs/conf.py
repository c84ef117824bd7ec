"""Sphinx configuration of segjax's documentation (python -m sphinx -W -b html docs docs/_build).

Pages are MyST Markdown; the tutorials are MyST notebooks that myst-nb executes at every build
(their outputs are real); the config key table is generated from segjax/defaults.py and
segjax/validation.py before the build (segjax.config_reference); the API reference comes from
the public modules' docstrings (autodoc).
"""

import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

from segjax import config_reference  # noqa: E402

project = "segjax"
author = "the segjax authors"
copyright = "2026, the segjax authors"  # noqa: A001

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "force"  # every build runs the tutorials: their outputs are never stale
nb_execution_timeout = 900
nb_execution_raise_on_error = True
nb_execution_show_tb = True
exclude_patterns = ["_build", "_generated/*.md.tmp", "**.ipynb_checkpoints"]
html_theme = "furo"
html_title = "segjax"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
nitpicky = False  # cross-references inside the docs are checked by myst (xref warnings)
suppress_warnings = []


def _write_generated(app) -> None:
    """docs/_generated/config_keys.md, written fresh before every build."""
    folder = os.path.join(app.srcdir, "_generated")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "config_keys.md")
    text = config_reference.markdown()
    if not os.path.exists(path) or open(path).read() != text:
        with open(path, "w") as file:
            file.write(text)


def setup(app):
    app.connect("builder-inited", _write_generated)
