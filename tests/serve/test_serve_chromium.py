"""The web page in headless Chromium (Debian's chromium + chromedriver, driven by Selenium)
against a real uvicorn server: browse, filter by family, a model's page, the gallery.

Screenshots are saved under tmp_path and checked (a PNG of the window's size, not blank).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serve_support import HOSTILE_NAME, Library, copy_catalog, job_spec, missing_service

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver"
WIDTH, HEIGHT = 1280, 900


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(library: Library, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """uvicorn serving a copy of the library's catalog (with one generated image) on loopback."""
    from modelsafe.runtime.jobs import get_job, open_queue, submit_job
    from modelsafe.serve import create_app

    folder = tmp_path_factory.mktemp("serve-chromium")
    url = copy_catalog(library, folder)
    queue: Any = open_queue(None, url, outputs=folder / "outputs")
    app = create_app(url, queue=queue, outputs=folder / "outputs")
    state = app.state.ms
    job = submit_job(
        state.catalog, job_spec(library.tiny, prompt="a blue sphere", checkpoint="tiny-sd1"), queue
    )
    assert queue.join(60)
    assert get_job(state.catalog, job.id).status == "done"
    with _serving(app) as url:
        yield url
    queue.close()


@contextlib.contextmanager
def _serving(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port, in a thread."""
    import uvicorn

    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert uv.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    binary = next((b for b in CHROMIUM if Path(b).exists()), None) or shutil.which("chromium")
    if binary is None or not Path(CHROMEDRIVER).exists():
        missing_service("chromium and chromedriver are not installed (bash .ci/chromium install)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(binary)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        # Offline: no proxy, and every host name but the server's fails to resolve.
        "--no-proxy-server",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--window-size={WIDTH},{HEIGHT}",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _screenshot(driver: Any, path: Path) -> None:
    """Save a screenshot and check it: a PNG of the viewport's size with more than one colour."""
    from PIL import Image

    assert driver.save_screenshot(str(path))
    with Image.open(path) as image:
        assert image.format == "PNG"
        inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
        ratio = driver.execute_script("return window.devicePixelRatio") or 1
        assert image.size == (round(inner[0] * ratio), round(inner[1] * ratio))
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
        assert colours is None or len(colours) > 8, "the screenshot is blank"


def test_browse_filter_model_page_and_gallery(
    server: str, browser: Any, library: Library, tmp_path: Path
) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.wait import WebDriverWait

    browser.get(server + "/")
    assert browser.title == "Models · modelsafe"
    rows = browser.find_elements(By.CSS_SELECTOR, "table.models tbody tr")
    assert len(rows) == len(library.ids)
    names = [r.find_element(By.CSS_SELECTOR, "td a").text for r in rows]
    assert HOSTILE_NAME in names  # shown as text, never run as a script
    with pytest.raises(NoAlertPresentException):  # the name's alert() never ran
        browser.switch_to.alert.text  # noqa: B018
    _screenshot(browser, tmp_path / "index.png")

    # Filter by family: the select submits the form by itself (app.js).
    Select(browser.find_element(By.ID, "filter-family")).select_by_value("sdxl")
    WebDriverWait(browser, 10).until(lambda d: "family=sdxl" in d.current_url)
    rows = browser.find_elements(By.CSS_SELECTOR, "table.models tbody tr")
    assert [r.get_attribute("data-family") for r in rows] == ["sdxl"]
    assert browser.find_element(By.ID, "model-count").text.startswith("1 of ")
    _screenshot(browser, tmp_path / "filtered.png")

    # A checkpoint's page: facts, hashes, evidence and compatible add-ons.
    browser.get(server + "/?kind=checkpoint")
    browser.find_element(By.LINK_TEXT, "tiny-sd1").click()
    WebDriverWait(browser, 10).until(lambda d: "/models/" in d.current_url)
    assert browser.find_element(By.ID, "model-name").text == "tiny-sd1"
    addons = browser.find_element(By.ID, "addons").text
    assert "ft-mse" in addons and "sd1-style" in addons
    assert "sha256" in browser.find_element(By.CSS_SELECTOR, "dl.hashes").text
    _screenshot(browser, tmp_path / "model.png")

    # The hostile pickle's page names what would run.
    browser.get(f"{server}/models/{library.ids['free-model']}")
    assert "os.system" in browser.find_element(By.ID, "findings").text

    # The gallery: the generated image, loaded, with its recipe.
    browser.get(server + "/gallery")
    card = browser.find_element(By.CSS_SELECTOR, "li.card")
    assert "a blue sphere" in card.find_element(By.CSS_SELECTOR, ".prompt").text
    assert card.find_element(By.CSS_SELECTOR, ".seed").text == "7"
    checkpoint = card.find_element(By.CSS_SELECTOR, ".checkpoint a")
    assert checkpoint.text == "tiny-sd1"
    assert checkpoint.get_attribute("href").endswith(f"/models/{library.ids['tiny-sd1']}")
    image = card.find_element(By.TAG_NAME, "img")
    WebDriverWait(browser, 10).until(
        lambda d: d.execute_script("return arguments[0].complete", image)
    )
    assert browser.execute_script("return arguments[0].naturalWidth", image) == 32
    _screenshot(browser, tmp_path / "gallery.png")


def test_api_docs_render_offline(server: str, browser: Any, tmp_path: Path) -> None:
    """/docs renders Swagger UI (title, operations) with every request to the server itself."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    browser.get(server + "/docs")
    WebDriverWait(browser, 20).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, ".swagger-ui .opblock")
    )
    root = browser.find_element(By.CSS_SELECTOR, "#swagger-ui .swagger-ui")
    assert "modelsafe" in root.find_element(By.CSS_SELECTOR, ".info .title").text
    summaries = [e.text for e in root.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")]
    assert "/api/models" in summaries and "/api/models/{model_id}" in summaries
    # The stylesheet applied (Swagger UI's own font rules, not the browser default).
    family = browser.execute_script(
        "return getComputedStyle(arguments[0]).fontFamily",
        root.find_element(By.CSS_SELECTOR, ".info .title"),
    )
    assert "sans-serif" in family
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert any(u.endswith("/static/swagger-ui/swagger-ui-bundle.js") for u in loaded)
    assert any(u.endswith("/openapi.json") for u in loaded)
    assert all(u.startswith(server + "/") for u in loaded), loaded
    _screenshot(browser, tmp_path / "docs.png")


def test_cancel_jobs_from_the_jobs_page_with_the_token(
    browser: Any, library: Library, tmp_path: Path
) -> None:
    """A server with a token: the page asks for it once (a wrong one is refused and forgotten),
    cancels the job through the API, and shows its new status without a reload."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    from modelsafe.runtime.jobs import get_job, submit_job
    from modelsafe.serve import create_app
    from modelsafe.testing.queues import RecordingQueue

    url = copy_catalog(library, tmp_path)
    app = create_app(url, queue=RecordingQueue(), outputs=tmp_path / "outputs", token="s3cret")
    catalog = app.state.ms.catalog
    first, second = (
        submit_job(catalog, job_spec(library.tiny, prompt=p), app.state.ms.queue()).id
        for p in ("a red cube", "a green cube")
    )
    with _serving(app) as server:
        browser.get(server + "/jobs")
        wait = WebDriverWait(browser, 10)

        def row(job_id: str) -> Any:
            return browser.find_element(By.ID, f"job-{job_id}")

        def click_and_answer(job_id: str, answer: str | None) -> None:
            row(job_id).find_element(By.CSS_SELECTOR, "button.cancel-job").click()
            if answer is not None:
                prompt = wait.until(lambda d: d.switch_to.alert)
                prompt.send_keys(answer)
                prompt.accept()

        click_and_answer(first, "wrong")
        error = row(first).find_element(By.CSS_SELECTOR, ".cancel-error")
        wait.until(lambda d: error.is_displayed())
        assert "needs the API token" in error.text
        assert get_job(catalog, first).status == "queued"

        click_and_answer(first, "s3cret")  # (the wrong token was forgotten: asked again)
        wait.until(lambda d: row(first).get_attribute("data-status") == "cancelled")
        assert row(first).find_element(By.CSS_SELECTOR, ".badge").text == "cancelled"
        assert not row(first).find_elements(By.CSS_SELECTOR, "button.cancel-job")
        assert not error.is_displayed()

        click_and_answer(second, None)  # (the right token is kept for the tab)
        wait.until(lambda d: row(second).get_attribute("data-status") == "cancelled")
        _screenshot(browser, tmp_path / "jobs.png")
    for job_id in (first, second):
        job = get_job(catalog, job_id)
        assert job.status == "cancelled" and job.cancelled_by, job
