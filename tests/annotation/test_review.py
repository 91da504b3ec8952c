"""The review log and page: decisions are saved whole or reported as not saved, odd log lines are skipped, and
the page in a real headless Chromium (reject with the keyboard, reload, the decision is kept)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
import urllib.error
import urllib.request

import pytest

from annotation import review
from annotation.export import run_export
from annotation.review import ReviewLog, ReviewSaveError, final_status, serve
from dataset.store.reader import PanoDataset

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def server(small_dataset, tmp_path):
    folder = tmp_path / "ds"
    shutil.copytree(small_dataset, folder)
    srv = serve(folder, port=0, reviewer="tester")
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{srv.server_address[1]}/", srv
    srv.shutdown()
    srv.server_close()


def post(url: str, body: dict) -> dict:
    """POST a decision the way the page does (own Origin, JSON content type)."""
    req = urllib.request.Request(url + "api/decision", json.dumps(body).encode(),
                                 {"Content-Type": "application/json", "Origin": url.rstrip("/")})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())


def fake_disk(monkeypatch, path, plan: list) -> None:
    """Make ``os.write`` on the file ``path`` follow ``plan``, one step per call: an int n writes only the first
    n bytes (0: nothing), an exception is raised; once the plan is used up, writes are real again."""
    real = os.write

    def write(fd, data):
        here = os.fstat(fd)
        if plan and path.exists() and (here.st_dev, here.st_ino) == (path.stat().st_dev, path.stat().st_ino):
            step = plan.pop(0)
            if isinstance(step, BaseException):
                raise step
            return real(fd, bytes(data[:step])) if step else 0
        return real(fd, data)

    monkeypatch.setattr(review.os, "write", write)


def test_server_binds_to_localhost_only(server):
    assert server[2].server_address[0] == "127.0.0.1"


def test_api_rejects_unknown_clips_and_verdicts(server):
    folder, url, _ = server
    for bad in ({"clip_id": "../../etc/passwd", "verdict": "reject"}, {"clip_id": "x"}):
        with pytest.raises(urllib.error.HTTPError) as err:
            post(url, bad)
        assert err.value.code == 400
    cid = next(PanoDataset(folder).clips()).clip_id
    with pytest.raises(urllib.error.HTTPError) as err:
        post(url, {"clip_id": cid, "verdict": "maybe"})
    assert err.value.code == 400 and "maybe" in json.loads(err.value.read())["error"]
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
    with pytest.warns(UserWarning, match="line 2"):
        assert list(log.decisions()) == ["c1"]


def test_torn_last_line_is_closed_before_the_next_decision(tmp_path):
    log = ReviewLog(tmp_path)
    log.append("c1", "reject", "a")
    with open(log.path, "a") as f:
        f.write('{"clip_id": "c2", "verd')  # the process died mid-write
    log.append("c3", "reject", "a")
    assert log.path.read_bytes().endswith(b"\n")
    with pytest.warns(UserWarning, match="line 2"):
        assert sorted(log.decisions()) == ["c1", "c3"]


def test_short_writes_are_completed(tmp_path, monkeypatch):
    log = ReviewLog(tmp_path)
    log.append("c1", "accept", "a")
    fake_disk(monkeypatch, log.path, [10, 7])  # the kernel takes the line in three parts
    log.append("c2", "reject", "a")
    assert log.decisions()["c2"]["verdict"] == "reject" and log.decisions()["c1"]["verdict"] == "accept"


@pytest.mark.parametrize(("plan", "code"), [
    ([20, OSError(errno.ENOSPC, "No space left on device")], 507),  # part of the line, then the disk is full
    ([0], 507),  # the write takes nothing
    ([OSError(errno.EIO, "Input/output error")], 500),
])
def test_failed_write_is_not_saved_and_leaves_no_torn_line(server, monkeypatch, plan, code, tmp_path, capfd):
    folder, url, _ = server
    first, second = [c.clip_id for c in PanoDataset(folder).clips()][:2]
    post(url, {"clip_id": first, "verdict": "accept"})
    log = ReviewLog(folder)
    before, plan_again = log.path.read_bytes(), list(plan)
    fake_disk(monkeypatch, log.path, plan)
    with pytest.raises(urllib.error.HTTPError) as err:
        post(url, {"clip_id": second, "verdict": "reject"})
    assert err.value.code == code and "not saved" in json.loads(err.value.read())["error"]
    assert log.path.read_bytes() == before  # nothing of the failed decision is left
    fake_disk(monkeypatch, log.path, plan_again)
    with pytest.raises(ReviewSaveError, match="not saved"):  # the same failure on the log itself
        log.append(second, "reject", "a")
    assert log.path.read_bytes() == before
    assert post(url, {"clip_id": second, "verdict": "reject"})["verdict"] == "reject"  # the retry is saved whole
    counts = run_export(folder, tmp_path / "out", "rejected")
    assert second in {c.clip_id for c in PanoDataset(tmp_path / "out").clips()}
    assert counts["reviewed"] == 2
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.parametrize("line", ["[1]", '"x"', "5", "null", '{"clip_id": "c9"}', '{"verdict": "reject"}',
                                  '{"clip_id": "c9", "verdict": "maybe", "reviewer": "a", "time": "t"}',
                                  '{"clip_id": ["c9"], "verdict": "reject", "reviewer": "a", "time": "t"}',
                                  "[" * 5000])
def test_lines_that_are_not_decisions_are_skipped_with_a_warning(server, tmp_path, line, capfd):
    folder, url, _ = server
    first = next(PanoDataset(folder).clips()).clip_id
    log = ReviewLog(folder)
    log.path.write_text(line + "\n")
    post(url, {"clip_id": first, "verdict": "reject"})
    with pytest.warns(UserWarning, match=r"skipped 1 lines .*\(line 1\)"):
        assert list(log.decisions()) == [first]
    with pytest.warns(UserWarning, match="line 1"):
        listing = json.loads(urllib.request.urlopen(url + "api/clips").read())["clips"]
    assert [c["decision"] for c in listing if c["clip_id"] == first] == ["reject"]
    with pytest.warns(UserWarning, match="line 1"):
        counts = run_export(folder, tmp_path / "out", "rejected")
    assert counts["reviewed"] == 1 and first in {c.clip_id for c in PanoDataset(tmp_path / "out").clips()}
    assert "Traceback" not in capfd.readouterr().err


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def open_page(driver, url: str) -> str:
    """Load the page and wait until it shows its first clip; returns that clip's id."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 20).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    return driver.find_element(By.ID, "decision").get_attribute("data-clip")


needs_chromium = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver")


@needs_chromium
def test_reject_with_keyboard_survives_reload_in_chromium(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    folder, url, _ = server
    wait = WebDriverWait(browser, 20)
    first = open_page(browser, url)
    wait.until(lambda d: d.execute_script("return document.getElementById('frame').naturalWidth") > 0)
    browser.find_element(By.TAG_NAME, "body").send_keys("r")
    wait.until(lambda d: d.find_element(By.ID, "decision").get_attribute("data-clip") != first)
    assert ReviewLog(folder).decisions()[first]["verdict"] == "reject"
    assert ReviewLog(folder).decisions()[first]["reviewer"] == "tester"
    assert open_page(browser, url) != first  # a new session continues after the decided clip
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_LEFT)
    decision = browser.find_element(By.ID, "decision")
    assert decision.get_attribute("data-clip") == first and decision.text == "REJECTED"
    assert "1 of 4 reviewed" in browser.find_element(By.ID, "progress").text


@needs_chromium
def test_unsaved_decision_is_shown_and_retried_in_chromium(server, browser, monkeypatch):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    folder, url, _ = server
    wait = WebDriverWait(browser, 20)
    log = ReviewLog(folder)
    log.path.touch()
    first = open_page(browser, url)
    fake_disk(monkeypatch, log.path, [OSError(errno.ENOSPC, "No space left on device")])
    browser.find_element(By.TAG_NAME, "body").send_keys("r")
    wait.until(lambda d: "NOT SAVED" in d.find_element(By.ID, "save").text)
    assert "No space left on device" in browser.find_element(By.ID, "save").text
    decision = browser.find_element(By.ID, "decision")  # still on the same clip, still undecided
    assert decision.get_attribute("data-clip") == first and decision.text == "not reviewed"
    assert "0 of 4 reviewed, 1 NOT SAVED" in browser.find_element(By.ID, "progress").text
    assert not log.decisions()
    browser.find_element(By.TAG_NAME, "body").send_keys("r")  # the disk has room again: the retry is saved
    wait.until(lambda d: d.find_element(By.ID, "decision").get_attribute("data-clip") != first)
    assert browser.find_element(By.ID, "save").text == ""
    assert log.decisions()[first]["verdict"] == "reject"
    assert "1 of 4 reviewed" == browser.find_element(By.ID, "progress").text
