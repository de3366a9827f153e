"""Check the built documentation site: every internal link resolves, and pages render in a browser.

Usage (after ``sphinx-build -W --keep-going -n -b html docs docs/_build/html``)::

    python docs/check_site.py [--site docs/_build/html] [--screenshots docs/_build/screenshots]
                              [--no-browser] [--browser PATH]

1. **Links.** Every ``href`` and ``src`` of every built HTML page that points inside the site (not
   ``http(s):``, ``mailto:`` or ``data:``) must name a file that exists, and its ``#anchor``, if any,
   must be an ``id`` (or an ``<a name>``) of the target page. A link to a missing page or a missing
   anchor is a failure.
2. **Browser.** The home page, two API pages (entries with signatures), the token-dynamics
   concepts page (long, with math) and a study page are opened in headless Chromium (Debian's
   ``chromium``, or ``--browser``): a screenshot of each is saved to ``--screenshots``, and the DOM
   the browser rendered (after its scripts ran) must hold the page's expected text and the theme's
   navigation. Skipped with ``--no-browser``; a missing browser is a failure unless ``--no-browser``.

Exits 0 when everything passed, 1 otherwise, listing each failure. Standard library only.
"""

from __future__ import annotations

import argparse
import html.parser
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
SITE = os.path.join(HERE, "_build", "html")
SCREENSHOTS = os.path.join(HERE, "_build", "screenshots")
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# (file in the site, screenshot name, text the rendered page must contain)
PAGES = (
    ("index.html", "home.png", "tokdyn"),
    ("api/tokdyn.dynamics.loop.html", "api-dynamics-loop.png", "tokdyn.dynamics.loop.run"),
    ("concepts/token-dynamics.html", "concept-token-dynamics.png", "Your own rule is a value"),
    ("api/tokdyn.diagnostics.grounding.html", "api-grounding.png", "tokdyn.diagnostics.grounding.scores"),
    ("studies/token-dynamics.html", "study-token-dynamics.png", "Ours beside the published figures"),
)
EXTERNAL = ("http:", "https:", "mailto:", "data:", "javascript:", "ftp:")


class _Page(html.parser.HTMLParser):
    """The anchors (``id``, ``<a name>``) and the links (``href``, ``src``) of one HTML page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("name"):
            self.ids.add(attrs["name"])
        for name in ("href", "src"):
            value = attrs.get(name)
            if value is not None and not (tag == "link" and attrs.get("rel") in ("preconnect", "dns-prefetch")):
                self.links.append(value)
        self._in_title = tag == "title"

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data


def parse(path: str) -> _Page:
    page = _Page()
    with open(path, encoding="utf-8") as f:
        page.feed(f.read())
    return page


def pages(site: str) -> list[str]:
    """Every built HTML page of the site (relative paths; the theme's static files excluded)."""
    out = []
    for root, dirs, files in os.walk(site):
        dirs[:] = [d for d in dirs if not d.startswith(("_static", "_sources", "_images", ".")) or root != site]
        out += [os.path.relpath(os.path.join(root, f), site) for f in files if f.endswith(".html")]
    return sorted(out)


def check_links(site: str) -> tuple[list[str], int]:
    """``(failures, links checked)`` over every page of the site."""
    site = os.path.abspath(site)
    parsed: dict[str, _Page] = {}

    def page_of(rel):
        if rel not in parsed:
            parsed[rel] = parse(os.path.join(site, rel))
        return parsed[rel]

    failures, checked = [], 0
    for rel in pages(site):
        for link in page_of(rel).links:
            if not link or link.lower().startswith(EXTERNAL) or link.startswith("//"):
                continue
            checked += 1
            url = urllib.parse.urlsplit(link)
            target = (
                rel
                if not url.path
                else os.path.normpath(os.path.join(os.path.dirname(rel), urllib.parse.unquote(url.path)))
            )
            path = os.path.join(site, target)
            if os.path.isdir(path):
                target, path = os.path.join(target, "index.html"), os.path.join(path, "index.html")
            if target.startswith(".."):
                failures.append(f"{rel}: {link} points outside the site")
                continue
            if not os.path.isfile(path):
                failures.append(f"{rel}: {link} -> missing file {target}")
                continue
            anchor = urllib.parse.unquote(url.fragment)
            if anchor and target.endswith(".html") and anchor not in page_of(target).ids:
                failures.append(f"{rel}: {link} -> no anchor #{anchor} in {target}")
    return failures, checked


def find_browser(explicit: str | None = None) -> str | None:
    if explicit:
        return explicit if shutil.which(explicit) or os.path.isfile(explicit) else None
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def _chromium(browser: str, profile: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def check_browser(site: str, screenshots: str, browser: str) -> list[str]:
    """Open each page of :data:`PAGES` in headless Chromium: a screenshot and the rendered DOM."""
    failures = []
    os.makedirs(screenshots, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        for rel, shot, expected in PAGES:
            page, _, anchor = rel.partition("#")
            path = os.path.join(os.path.abspath(site), page)
            if not os.path.isfile(path):
                failures.append(f"{page}: not built")
                continue
            url = "file://" + urllib.parse.quote(path) + (f"#{anchor}" if anchor else "")
            out = os.path.join(screenshots, shot)
            if os.path.exists(out):
                os.remove(out)
            run = _chromium(
                browser, profile, "--window-size=1280,1600", "--virtual-time-budget=5000", f"--screenshot={out}", url
            )
            if not os.path.isfile(out) or os.path.getsize(out) < 20_000:
                failures.append(f"{rel}: no screenshot, or a blank one ({run.stderr.strip()[-300:]})")
            dom = _chromium(browser, profile, "--virtual-time-budget=5000", "--dump-dom", url).stdout
            if expected not in dom:
                failures.append(f"{rel}: the rendered page does not contain {expected!r}")
            if "sidebar-tree" not in dom:
                failures.append(f"{rel}: the rendered page has no navigation sidebar")
            print(f"  {rel}: screenshot {os.path.relpath(out)}, rendered DOM {len(dom):,} characters")
    return failures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", default=SITE, help="the built HTML site (default: docs/_build/html)")
    parser.add_argument("--screenshots", default=SCREENSHOTS, help="where the screenshots go")
    parser.add_argument("--no-browser", action="store_true", help="check the links only")
    parser.add_argument("--browser", default=None, help="the Chromium executable (default: found on PATH)")
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(args.site, "index.html")):
        print(
            f"no built site at {args.site}: build it with "
            "sphinx-build -W --keep-going -n -b html docs docs/_build/html",
            file=sys.stderr,
        )
        return 1
    failures, checked = check_links(args.site)
    print(f"links: {checked:,} internal links on {len(pages(args.site))} pages, {len(failures)} broken")
    if not args.no_browser:
        browser = find_browser(args.browser)
        if browser is None:
            failures.append("no Chromium found (apt-get install chromium, or pass --browser, or --no-browser)")
        else:
            print(f"browser: {browser}")
            failures += check_browser(args.site, args.screenshots, browser)
    for failure in failures:
        print("FAIL", failure)
    print("ok" if not failures else f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
