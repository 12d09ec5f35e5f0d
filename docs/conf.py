"""The documentation site: Sphinx with MyST (Markdown), built in strict mode by the tests.

``python -m sphinx -W --keep-going -n -b html docs DIR`` (tests/test_docs_site.py): every
warning is an error, and a link to a page or a heading that does not exist is a warning
(MyST's ``xref_missing``), so a broken internal link fails the build. Links out of the site
(the code, the rules, the dashboard) are links to the repository.
"""

from __future__ import annotations

project = "pixcrawler-exporter"
author = "the pixcrawler-exporter authors"
extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
# Headings get the anchors GitHub gives them, so one link works on GitHub and on the site (the
# alerts' runbook_url points at GitHub's).
myst_heading_anchors = 4
myst_enable_extensions = ["colon_fence"]
html_theme = "alabaster"
html_title = "pixcrawler-exporter"
html_show_sourcelink = False
