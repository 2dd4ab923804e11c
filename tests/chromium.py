"""Opens a page in Debian's headless Chromium through Playwright and reads back what a reader would see."""

from __future__ import annotations

import pathlib
import shutil
import tempfile

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The flags this machine needs: no sandbox as root, and no background connections (the network is closed).
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip


def missing() -> str | None:
    """Why a browser test cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (the test extra)"
    if not pathlib.Path(CHROMIUM).exists():
        return "Chromium is not installed: `apt-get install chromium` (scripts/setup.sh does it as root)"
    return None


def render(page_path: str, screenshot: str) -> dict:
    """Loads a local HTML file; returns its images (source kind, loaded, natural size), its tables' cell
    texts, its visible text, and whatever the console reported as errors; writes a full-page screenshot."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                               args=FLAGS, viewport={"width": 1300, "height": 900})  # fmt: skip
        page = browser.new_page()
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(pathlib.Path(page_path).resolve().as_uri(), wait_until="load")
        images = page.evaluate(
            "() => Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth,"
            " height: i.naturalHeight, inline: i.src.startsWith('data:image/png;base64,')}))"
        )
        tables = page.evaluate(
            "() => Array.from(document.querySelectorAll('table')).map(t => Array.from(t.rows).map("
            "r => Array.from(r.cells).map(c => c.innerText.trim())))"
        )
        text = page.inner_text("body")
        page.screenshot(path=screenshot, full_page=True)
        browser.close()
    return {"images": images, "tables": tables, "text": text, "errors": errors}
