"""`htrjand serve` in a real headless Chromium: upload, highlights, editing, downloads.

Needs `chromium` and `chromedriver` (Debian: `apt-get install chromium chromium-driver`) and selenium;
skipped without them, except under CI (`CI` set), where their absence is a failure.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest


def _missing() -> str:
    for module in ("fastapi", "python_multipart", "selenium", "uvicorn"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[test]')"
    if not _chromium():
        return "no chromium browser on PATH (apt-get install chromium)"
    if not shutil.which("chromedriver"):
        return "no chromedriver on PATH (apt-get install chromium-driver)"
    return ""


def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


REASON = _missing()
if REASON and not os.environ.get("CI"):
    pytest.skip(f"browser test skipped: {REASON}", allow_module_level=True)

if not REASON:
    import uvicorn
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

from htrjand.datasets import read_dataset  # noqa: E402
from htrjand.datasets.layout import load_page  # noqa: E402
from htrjand.runtime import load  # noqa: E402

from test_serve import make_page, tiny_checkpoint  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _browser_available():
    """Under CI (which installs chromium and chromedriver) a missing browser fails every test here."""
    if REASON:
        pytest.fail(f"browser test cannot run under CI: {REASON}", pytrace=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def reader(rendered, tmp_path_factory):
    return load(tiny_checkpoint(rendered, tmp_path_factory.mktemp("serve_model")))


@pytest.fixture(scope="module")
def server(reader):
    from htrjand.serve import create_app

    port = _free_port()
    config = uvicorn.Config(create_app(reader, low_confidence=0.5), host="127.0.0.1", port=port, log_level="warning",
                            lifespan="on")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads):
    options = webdriver.ChromeOptions()
    options.binary_location = _chromium()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900",
                "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False,
                                              "safebrowsing.enabled": False})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(shutil.which("chromedriver")))
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


def _wait_for_file(folder: Path, name: str, timeout: float = 10) -> Path:
    path = folder / name
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and not any(folder.glob("*.crdownload")):
            return path
        time.sleep(0.1)
    raise AssertionError(f"{name} was not downloaded (folder has {sorted(p.name for p in folder.iterdir())})")


def test_lines_highlight_edit_and_download_tsv(server, browser, downloads, rendered, reader):
    images = [s.image for s in read_dataset(rendered["test"])[:3]]
    expected = [r.text for r in reader.recognize([str(p) for p in images])]
    wait = WebDriverWait(browser, 20)
    browser.get(server + "/")
    wait.until(lambda d: "parameters" in d.find_element(By.ID, "model-info").text)
    assert browser.find_element(By.ID, "threshold-value").text == "0.50"  # the server's default

    browser.find_element(By.ID, "file-input").send_keys("\n".join(str(p) for p in images))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#lines .edit")) == 3)
    fields = browser.find_elements(By.CSS_SELECTOR, "#lines .edit")
    assert [f.get_attribute("value") for f in fields] == expected
    labels = [browser.find_element(By.CSS_SELECTOR, f"label[for='{f.get_attribute('id')}']").text for f in fields]
    assert labels == ["Text of line 1", "Text of line 2", "Text of line 3"]
    assert "3 of 3 read" in browser.find_element(By.ID, "line-count").text

    slider = browser.find_element(By.ID, "threshold")  # keyboard: End moves the slider to 1.00
    slider.send_keys(Keys.END)
    wait.until(lambda d: d.find_element(By.ID, "threshold-value").text == "1.00")
    marks = browser.find_elements(By.CSS_SELECTOR, "#lines .transcription mark.low")
    assert len(marks) == sum(len(t) for t in expected) > 0  # every character is below 1.0
    assert marks[0].get_attribute("title").startswith("confidence ")
    slider.send_keys(Keys.HOME)
    wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, "#lines mark.low"))

    fields[1].send_keys(Keys.CONTROL, "a")
    fields[1].send_keys("an edited line")
    wait.until(lambda d: "edited" in d.find_elements(By.CSS_SELECTOR, "#lines .line")[1].get_attribute("class"))
    browser.find_element(By.ID, "download-tsv").click()
    tsv = _wait_for_file(downloads, "transcriptions.tsv").read_text(encoding="utf-8")
    texts = [expected[0], "an edited line", expected[2]]
    assert tsv == "".join(f"{p.name}\t{t}\n" for p, t in zip(images, texts))


def test_page_upload_and_xml_download(server, browser, downloads, tmp_path):
    xml_path, image_path, _ = make_page(tmp_path / "page")
    wait = WebDriverWait(browser, 20)
    browser.get(server + "/")
    wait.until(lambda d: "parameters" in d.find_element(By.ID, "model-info").text)
    browser.find_element(By.ID, "file-input").send_keys(f"{image_path}\n{xml_path}")
    wait.until(lambda d: "lines of scan_001.xml" in d.find_element(By.ID, "status").text)
    lines = browser.find_elements(By.CSS_SELECTOR, "#lines .line")
    assert len(lines) == 4 and len(browser.find_elements(By.CSS_SELECTOR, "#lines .edit")) == 3
    assert "outside" in lines[3].text  # the skipped line says why
    # each read line shows its image, cut from the page in the browser
    sizes = browser.execute_script("return Array.from(document.querySelectorAll('#lines img'))"
                                   ".map(i => [i.naturalWidth, i.naturalHeight]);")
    assert len(sizes) == 3 and all(w > 50 and h > 20 for w, h in sizes)
    button = browser.find_element(By.ID, "download-xml")
    assert button.is_displayed() and button.text == "Download PAGE XML"
    pytest.importorskip("htrjand.writers", reason="htrjand.writers (PAGE/ALTO writer) is not in this tree yet")
    field = browser.find_elements(By.CSS_SELECTOR, "#lines .edit")[0]
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys("first line corrected")
    button.click()
    out = _wait_for_file(downloads, "scan_001.xml")
    doc = load_page(out)
    assert doc.lines[0].id == "l1" and doc.lines[0].text == "first line corrected"
