"""``matrix-pano review DIR``: a local web page to accept or reject clips by their first frame.

Every decision is appended at once to ``DIR/review.jsonl`` (one JSON object per line: clip id,
verdict, reviewer, time) and fsynced, so a closed browser or a crash loses nothing and a second session
continues where the first stopped (the latest line per clip wins; ``clear`` undoes). The final status
of a clip combines the automatic verdict with the manual one: a clip is kept only when neither rejects
it (``final_status``).
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import pyarrow.parquet as pq

from dataset.core.codecs import decode_first_frame
from dataset.store.reader import PanoDataset

REVIEW_FILE = "review.jsonl"
LISTED = ["clip_id", "scene", "status", "reject_reasons", "caption", "scores"]
"""Columns the page shows."""
VERDICTS = ("accept", "reject", "clear")


class ReviewLog:
    """The append-only decision file of a dataset folder."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / REVIEW_FILE
        self._lock = threading.Lock()

    def append(self, clip_id: str, verdict: str, reviewer: str) -> dict:
        """Record one decision durably (written and fsynced before this returns)."""
        if verdict not in VERDICTS:
            raise ValueError(f"verdict {verdict!r} is not one of {', '.join(VERDICTS)}")
        entry = {"clip_id": clip_id, "verdict": verdict, "reviewer": reviewer,
                 "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        line = (json.dumps(entry) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        return entry

    def decisions(self) -> dict[str, dict]:
        """Latest decision per clip (``clear`` removes it); a torn last line from a crash is ignored."""
        out: dict[str, dict] = {}
        if not self.path.exists():
            return out
        for line in self.path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if entry.get("verdict") == "clear":
                out.pop(entry.get("clip_id"), None)
            elif entry.get("verdict") in ("accept", "reject"):
                out[entry["clip_id"]] = entry
        return out


def final_status(auto_status: str, auto_reasons: list[str], decision: dict | None) -> tuple[str, list[str]]:
    """Automatic verdict combined with the manual one: rejected if either rejects."""
    if decision is None or decision["verdict"] == "accept":
        return auto_status, list(auto_reasons)
    return "rejected", [*auto_reasons, f"manual review: rejected by {decision['reviewer']} at {decision['time']}"]


class ReviewApp:
    """The clips of a dataset, their thumbnails and the decision log, behind the HTTP handler."""

    def __init__(self, folder: str | Path, reviewer: str) -> None:
        self.folder = Path(folder)
        self.dataset = PanoDataset(folder)
        self.log = ReviewLog(folder)
        self.reviewer = reviewer
        self.clips: list[dict] = []
        self.where: dict[str, tuple] = {}
        """clip id -> (shard, row group, row): a thumbnail reads one row group's video column only."""
        for path in self.dataset.shards:
            f = pq.ParquetFile(path)
            for g in range(f.num_row_groups):
                rows = f.read_row_group(g, columns=LISTED).to_pylist()
                for i, row in enumerate(rows):
                    self.where[row["clip_id"]] = (path, g, i)
                self.clips += rows
        self.index = {c["clip_id"]: i for i, c in enumerate(self.clips)}
        self._thumbs: dict[str, bytes] = {}

    def listing(self) -> list[dict]:
        decisions = self.log.decisions()
        return [{**c, "decision": decisions.get(c["clip_id"], {}).get("verdict")} for c in self.clips]

    def thumbnail(self, clip_id: str) -> bytes:
        """JPEG of the clip's first frame (decoded once, then cached)."""
        if clip_id not in self._thumbs:
            from PIL import Image

            path, group, row = self.where[clip_id]
            video = pq.ParquetFile(path).read_row_group(group, columns=["rgb_mp4"])["rgb_mp4"][row].as_py()
            buf = io.BytesIO()
            Image.fromarray(decode_first_frame(video)).save(buf, "JPEG", quality=88)
            self._thumbs[clip_id] = buf.getvalue()
        return self._thumbs[clip_id]


def make_handler(app: ReviewApp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args) -> None:  # keep the terminal for the summary line
            pass

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, obj, status: int = HTTPStatus.OK) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json")

        def do_GET(self) -> None:
            path = urlparse(self.path).path
            if path == "/":
                self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
            elif path == "/api/clips":
                self._json({"reviewer": app.reviewer, "clips": app.listing()})
            elif path.startswith("/thumb/") and path.endswith(".jpg"):
                clip_id = unquote(path[len("/thumb/"):-len(".jpg")])
                if clip_id not in app.index:  # ids come from the URL: only known ones are looked up
                    self._json({"error": "unknown clip"}, HTTPStatus.NOT_FOUND)
                    return
                self._send(HTTPStatus.OK, app.thumbnail(clip_id), "image/jpeg")
            else:
                self._json({"error": "not found"}, HTTPStatus.NOT_FOUND)

        def do_POST(self) -> None:
            if urlparse(self.path).path != "/api/decision":
                self._json({"error": "not found"}, HTTPStatus.NOT_FOUND)
                return
            try:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(min(length, 65536)))
                clip_id, verdict = body["clip_id"], body["verdict"]
                if clip_id not in app.index:
                    raise ValueError(f"unknown clip {clip_id!r}")
                entry = app.log.append(clip_id, verdict, str(body.get("reviewer") or app.reviewer)[:80])
            except (ValueError, KeyError, TypeError) as exc:
                self._json({"error": str(exc)}, HTTPStatus.BAD_REQUEST)
                return
            self._json(entry)

    return Handler


def serve(folder: str | Path, host: str = "127.0.0.1", port: int = 8765, reviewer: str | None = None
          ) -> ThreadingHTTPServer:
    """Start the review server (call ``serve_forever`` on the result); port 0 picks a free port."""
    app = ReviewApp(folder, reviewer or os.environ.get("USER", "reviewer"))
    return ThreadingHTTPServer((host, port), make_handler(app))


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Matrix-Pano review</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 0; background: #1d1f21; color: #e8e8e8; }
 header { padding: 8px 16px; background: #2b2e31; display: flex; gap: 24px; align-items: center; }
 main { padding: 12px 16px; }
 #frame { width: 100%; max-width: 1280px; aspect-ratio: 2 / 1; background: #000; display: block; }
 .accept { color: #7ddc7d; } .reject { color: #ff7b72; } .none { color: #aaa; }
 #meta { max-width: 1280px; } #scores { font-family: monospace; font-size: 13px; color: #bbb; }
 kbd { background: #444; border-radius: 3px; padding: 1px 5px; }
 button { font-size: 15px; margin-right: 8px; padding: 6px 14px; }
</style></head>
<body>
<header><b>Matrix-Pano review</b><span id="progress"></span><span id="who"></span>
<span><kbd>A</kbd> accept <kbd>R</kbd> reject <kbd>&larr;</kbd><kbd>&rarr;</kbd> move <kbd>U</kbd> undo</span></header>
<main>
 <img id="frame" alt="first frame">
 <div id="meta">
  <p><button id="accept">Accept (A)</button><button id="reject">Reject (R)</button>
     <span id="decision"></span></p>
  <p id="title"></p><p id="caption"></p><p id="auto"></p><p id="scores"></p>
 </div>
</main>
<script>
let clips = [], pos = 0, reviewer = "";
const $ = (id) => document.getElementById(id);
function show() {
  if (!clips.length) { $("title").textContent = "no clips"; return; }
  const c = clips[pos];
  $("frame").src = "/thumb/" + encodeURIComponent(c.clip_id) + ".jpg";
  $("title").textContent = (pos + 1) + " / " + clips.length + "  ·  " + c.scene + "  ·  " + c.clip_id;
  $("caption").textContent = c.caption ? "Caption: " + c.caption : "No caption yet";
  const why = c.reject_reasons.length ? " (" + c.reject_reasons.join("; ") + ")" : "";
  $("auto").textContent = "Automatic: " + c.status + why;
  $("scores").textContent = Object.entries(c.scores || {}).filter(([k, v]) => v !== null)
      .map(([k, v]) => k + "=" + Number(v).toFixed(2)).join("  ");
  const d = c.decision;
  $("decision").textContent = d ? (d === "accept" ? "ACCEPTED" : "REJECTED") : "not reviewed";
  $("decision").className = d || "none";
  $("decision").dataset.clip = c.clip_id;
  const done = clips.filter((x) => x.decision).length;
  $("progress").textContent = done + " of " + clips.length + " reviewed";
  if (pos + 1 < clips.length) { new Image().src = "/thumb/" + encodeURIComponent(clips[pos + 1].clip_id) + ".jpg"; }
}
async function decide(verdict) {
  const c = clips[pos];
  const r = await fetch("/api/decision", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ clip_id: c.clip_id, verdict: verdict, reviewer: reviewer }) });
  if (!r.ok) { alert("could not save: " + (await r.text())); return; }
  c.decision = verdict === "clear" ? null : verdict;
  if (verdict !== "clear" && pos + 1 < clips.length) pos += 1;
  show();
}
document.addEventListener("keydown", (e) => {
  const k = e.key.toLowerCase();
  if (k === "a" || k === "enter") decide("accept");
  else if (k === "r" || k === "x" || k === "delete") decide("reject");
  else if (k === "u") decide("clear");
  else if (k === "arrowright" || k === "j") { pos = Math.min(pos + 1, clips.length - 1); show(); }
  else if (k === "arrowleft" || k === "k") { pos = Math.max(pos - 1, 0); show(); }
});
$("accept").onclick = () => decide("accept");
$("reject").onclick = () => decide("reject");
fetch("/api/clips").then((r) => r.json()).then((data) => {
  clips = data.clips; reviewer = data.reviewer;
  $("who").textContent = "reviewer: " + reviewer;
  const first = clips.findIndex((c) => !c.decision);
  pos = first < 0 ? 0 : first;
  show();
  document.body.dataset.ready = "1";
});
</script></body></html>
"""
