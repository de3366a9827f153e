"""Sphinx configuration of the tokdyn documentation.

Build (strict: a warning, a broken cross-reference or a public name without a docstring fails)::

    sphinx-build -W --keep-going -n -b html docs docs/_build/html
"""

import glob
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "_ext"))
sys.path.insert(0, ROOT)

import tokdyn  # noqa: E402

project = "tokdyn"
author = "the tokdyn authors"
copyright = "the tokdyn authors"  # noqa: A001
release = version = tokdyn.__version__

extensions = [
    "myst_nb",  # Markdown pages (MyST) and the notebooks, rendered with their saved outputs
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",  # the docstrings' Google-style sections (Args, Returns, Attributes)
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax served from the site itself: math renders offline too
    "tokdyn_api",  # docs/_ext/tokdyn_api.py: the API pages, the docstring check, references
    "tokdyn_site",  # docs/_ext/tokdyn_site.py: tables' cells of numbers stay on one line
    "tokdyn_transformations",  # docs/_ext/tokdyn_transformations.py: transformations.md from the tests' table
    "tokdyn_interventions",  # docs/_ext/tokdyn_interventions.py: the table of interventions from the code's
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build", "**/.ipynb_checkpoints", "README.md"]
nitpicky = True

# Cross-references allowed not to resolve (none: every one resolves).
nitpick_ignore = []

# Public functions, classes, methods and properties allowed to lack a docstring (none: a public
# name without one fails the build; a listed name that has a docstring is reported as stale).
tokdyn_undocumented_allowed = []

# -- MyST and notebooks ----------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "off"  # notebooks are rendered with the outputs saved in them
nb_merge_streams = True

# -- autodoc ---------------------------------------------------------------------------------------
autodoc_member_order = "bysource"
add_module_names = False  # entries read `run(x, tokens, ...)`, under their module's title
autodoc_typehints = "signature"
python_use_unqualified_type_names = True  # annotations link to their entry, shown by their short name
autodoc_preserve_defaults = True  # defaults as written (``jnp.float32``), not their repr
autosummary_generate = False  # the pages are written by tokdyn_api
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # Attributes: sections as fields, not entries that duplicate autodoc's
napoleon_use_rtype = False

# -- HTML ------------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"tokdyn {release}"
html_static_path = ["_static"]
html_css_files = ["tokdyn.css"]  # docs/_static/tokdyn.css: tables and code blocks scroll, never clip
html_show_sourcelink = False


def copy_notebooks():
    """The notebooks live in notebooks/ at the repository root; Sphinx reads sources only under
    docs/, so they are copied to docs/notebooks/ (ignored by git) before every build."""
    target = os.path.join(HERE, "notebooks")
    os.makedirs(target, exist_ok=True)
    sources = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))
    names = {os.path.basename(p) for p in sources}
    for stale in glob.glob(os.path.join(target, "*.ipynb")):
        if os.path.basename(stale) not in names:
            os.remove(stale)
    for path in sources:
        dest = os.path.join(target, os.path.basename(path))
        if not os.path.exists(dest) or open(path, "rb").read() != open(dest, "rb").read():
            shutil.copyfile(path, dest)


copy_notebooks()
