"""The review page in a real headless Chromium: reject with the keyboard, reload, the decision is kept."""

from __future__ import annotations

import json
import shutil
import threading

import pytest

from annotation.review import ReviewLog, final_status, serve
from dataset.store.reader import PanoDataset

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def server(small_dataset, tmp_path):
    folder = tmp_path / "ds"
    shutil.copytree(small_dataset, folder)
    srv = serve(folder, port=0, reviewer="tester")
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()
    srv.server_close()


def test_server_binds_to_localhost_only(server):
    _, url = server
    assert url.startswith("http://127.0.0.1:")


def test_api_rejects_unknown_clips_and_verdicts(server):
    import urllib.error
    import urllib.request

    folder, url = server

    def post(body):
        req = urllib.request.Request(url + "api/decision", json.dumps(body).encode(), {"Content-Type": "json"})
        return urllib.request.urlopen(req)

    for bad in ({"clip_id": "../../etc/passwd", "verdict": "reject"}, {"clip_id": "x"}):
        with pytest.raises(urllib.error.HTTPError) as err:
            post(bad)
        assert err.value.code == 400
    cid = next(PanoDataset(folder).clips()).clip_id
    with pytest.raises(urllib.error.HTTPError):
        post({"clip_id": cid, "verdict": "maybe"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(url + "thumb/..%2F..%2Fmanifest.jpg")
    assert err.value.code == 404
    assert urllib.request.urlopen(url + f"thumb/{cid}.jpg").read()[:2] == b"\xff\xd8"
    assert not ReviewLog(folder).decisions()


def test_final_status_combines_automatic_and_manual():
    assert final_status("accepted", [], None) == ("accepted", [])
    assert final_status("rejected", ["dark"], {"verdict": "accept", "reviewer": "a", "time": "t"})[0] == "rejected"
    status, why = final_status("accepted", [], {"verdict": "reject", "reviewer": "a", "time": "t"})
    assert status == "rejected" and why == ["manual review: rejected by a at t"]


def test_torn_last_line_is_ignored(tmp_path):
    log = ReviewLog(tmp_path)
    log.append("c1", "reject", "a")
    with open(log.path, "a") as f:
        f.write('{"clip_id": "c2", "verd')  # the process died mid-write
    assert list(log.decisions()) == ["c1"]


@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver")
def test_reject_with_keyboard_survives_reload_in_chromium(server):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    folder, url = server
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        wait = WebDriverWait(driver, 20)
        driver.get(url)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        first = driver.find_element(By.ID, "decision").get_attribute("data-clip")
        wait.until(lambda d: d.execute_script("return document.getElementById('frame').naturalWidth") > 0)
        driver.find_element(By.TAG_NAME, "body").send_keys("r")
        wait.until(lambda d: d.find_element(By.ID, "decision").get_attribute("data-clip") != first)
        assert ReviewLog(folder).decisions()[first]["verdict"] == "reject"
        assert ReviewLog(folder).decisions()[first]["reviewer"] == "tester"
        driver.refresh()  # a new session continues after the decided clip
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        assert driver.find_element(By.ID, "decision").get_attribute("data-clip") != first
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_LEFT)
        decision = driver.find_element(By.ID, "decision")
        assert decision.get_attribute("data-clip") == first and decision.text == "REJECTED"
        assert "1 of 4 reviewed" in driver.find_element(By.ID, "progress").text
    finally:
        driver.quit()
