"""What the web tests share: their catalogue, the app on a real uvicorn server, and a headless
Chromium (Debian's, driven by Playwright) whose pages collect every script error and failed
request."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from argon2 import PasswordHasher

from wildreid.catalog import users
from wildreid.catalog.importer import import_dataset
from wildreid.catalog.store import Catalog
from wildreid.review.descriptors import prepare_descriptors

# argon2 at its cheapest: the tests sign in hundreds of times and the hash's cost is not what they
# test (a stored hash names its own parameters, so checking is argon2 all the same).
users.HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)

# The users of every test catalogue: name -> (role, API token). All share PASSWORD.
PASSWORD = "correct horse battery"
USERS = {
    "ada": ("admin", "ada-admin-api-token-0123456789"),
    "alice": ("reviewer", "alice-reviewer-api-token-0123456789"),
    "bob": ("reviewer", "bob-reviewer-api-token-0123456789"),
    "victor": ("viewer", "victor-viewer-api-token-0123456789"),
}


def token_of(name: str) -> dict:
    """The header that makes a request as user ``name`` (their API token)."""
    return {"X-Wildreid-Token": USERS[name][1]}


# Eight NyalaData individuals with five database photos each keep the web tests quick.
INDIVIDUALS = [
    "NyalaData_32",
    "NyalaData_41",
    "NyalaData_48",
    "NyalaData_147",
    "NyalaData_144",
    "NyalaData_34",
    "NyalaData_7",
    "NyalaData_18",
]


def build_catalogue(path: Path, nyala, backbone, cache: Path) -> Path:
    """A catalogue of the 40 database photos of INDIVIDUALS, with their descriptors and USERS."""
    chosen = nyala.database[nyala.database["identity"].isin(INDIVIDUALS)].groupby("identity").head(5)
    with Catalog(path) as catalog:
        import_dataset(catalog, nyala.subset(nyala.table["image_id"].isin(chosen["image_id"])))
        prepare_descriptors(catalog, backbone, cache)
        for name, (role, token) in USERS.items():
            users.add_user(catalog, name, role, PASSWORD, api_token=token)
    return path


def sign_in(page, base: str, name: str, next: str = "/") -> None:
    """Sign ``name`` in through the sign-in form of a Playwright page."""
    page.goto(f"{base}/login?next={next}")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(base + next)


@contextmanager
def serving(app, **options):
    """``app`` on a real uvicorn server at 127.0.0.1, on a port the OS picked; yields its URL.
    ``options``: more of uvicorn's settings (e.g. those `wildreid serve` passes)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@contextmanager
def chromium(binary: str, artifacts: Path):
    """A headless Chromium browser; ``artifacts`` (this run's screenshots) starts empty."""
    from playwright.sync_api import sync_playwright

    if not Path(binary).is_file():
        pytest.fail(
            f"Chromium not found at {binary}: install it with `apt-get install -y chromium` "
            "(or name another binary with WILDREID_CHROMIUM)."
        )
    if artifacts.exists():  # only this run's screenshots
        shutil.rmtree(artifacts)
    artifacts.mkdir(parents=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=binary, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def watched_page(browser):
    """A new page whose ``problems`` list collects script errors, Content-Security-Policy
    violations and failed requests (a missing picture, a 404 stylesheet); a clean run has none."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.problems = []
    page.on("pageerror", lambda error: page.problems.append(str(error)))
    page.on(
        "console",
        lambda message: (
            message.type == "error"
            and "Failed to load resource" not in message.text
            and page.problems.append(message.text)
        ),
    )
    page.on(
        "response",
        lambda response: response.status >= 400 and page.problems.append(f"{response.status} {response.url}"),
    )
    try:
        yield page
    finally:
        context.close()
