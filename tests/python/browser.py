"""Headless Chromium for the page tests: the DOM after the page's scripts ran, and a screenshot.

Debian's `chromium` (scripts/bootstrap installs it). Every run gets its own profile folder and
a host resolver that resolves nothing, so a page that tried to reach the network would fail."""
import html.parser
import os
import shutil
import subprocess

import numpy as np
import pytest


def chromium():
    """The browser's path; in CI (or MOLT_REQUIRE_TORCH=1) a missing one fails the test."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI", "").lower() in ("1", "true") or os.environ.get("MOLT_REQUIRE_TORCH") == "1":
        pytest.fail("no chromium (scripts/bootstrap installs Debian's chromium)")
    pytest.skip("no chromium")


def _run(page, profile, *flags, fragment=""):
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-extensions", "--hide-scrollbars", "--disable-dev-shm-usage",
           f"--user-data-dir={profile}",
           "--host-resolver-rules=MAP * ~NOTFOUND", *flags,
           "file://" + os.path.abspath(page) + (f"#{fragment}" if fragment else "")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def dump_dom(page, profile, fragment=""):
    """The DOM after the page's scripts ran; `fragment` is the address's #part."""
    return _run(page, profile, "--dump-dom", fragment=fragment)


def screenshot(page, png, profile, width, height):
    _run(page, profile, f"--screenshot={png}", f"--window-size={width},{height}")
    from PIL import Image  # pillow comes with matplotlib (scripts/bootstrap)
    return Image.open(png).convert("RGB")


class Dom(html.parser.HTMLParser):
    """Every element as (tag, attrs dict, its own text), in document order."""

    VOID = {"meta", "br", "img", "input", "link", "hr", "circle", "rect", "line", "path"}

    def __init__(self, text):
        super().__init__()
        self.elements, self._open = [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        e = [tag, dict(attrs), ""]
        self.elements.append(e)
        if tag not in self.VOID:
            self._open.append(e)

    def handle_startendtag(self, tag, attrs):
        self.elements.append([tag, dict(attrs), ""])

    def handle_endtag(self, tag):
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data):
        if self._open:
            self._open[-1][2] += data

    def find(self, tag=None, cls=None, **attrs):
        out = []
        for t, a, text in self.elements:
            if tag and t != tag:
                continue
            if cls and cls not in a.get("class", "").split():
                continue
            if any(a.get(k.replace("_", "-")) != v for k, v in attrs.items()):
                continue
            out.append((a, text))
        return out


def colour_share(image, rgb, tol=12):
    """The share of pixels within `tol` of `rgb` on every channel."""
    a = np.asarray(image, dtype=np.int16)
    return float((np.abs(a - np.asarray(rgb, np.int16)) <= tol).all(-1).mean())


def non_background_share(image, rgb=(255, 255, 255), tol=8):
    return 1.0 - colour_share(image, rgb, tol)


__all__ = ["chromium", "dump_dom", "screenshot", "Dom", "colour_share", "non_background_share"]
