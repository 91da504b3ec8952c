"""``matrix-pano review DIR``: a local web page to accept or reject clips by their first frame.

Every decision is appended at once to ``DIR/review.jsonl`` (one JSON object per line: clip id,
verdict, reviewer, time) and fsynced, so a closed browser or a crash loses nothing and a second session
continues where the first stopped (the latest line per clip wins; ``clear`` undoes). A decision is either
written whole or not at all: a failed write (disk full) is cut back off, the server answers an error and
the page shows the clip as "not saved" so the reviewer can retry; a torn last line left by a crash is
closed off before the next decision. Lines that are not decisions are skipped with a warning. The final
status of a clip combines the automatic verdict with the manual one: a clip is kept only when neither
rejects it (``final_status``).

The server binds 127.0.0.1 by default and answers only requests addressed to it (``Host`` of the bound
address, or a loopback alias; no DNS rebinding). Decisions must come from the page itself (``Origin`` of
the server, ``Content-Type: application/json``, a ``Content-Length`` within ``MAX_BODY``, a flat JSON
object of strings), so other web pages cannot post them. A fixed pool of ``WORKERS`` threads serves
connections, each with a ``READ_TIMEOUT``, so idle connections cannot pile up threads.
"""

from __future__ import annotations

import contextlib
import errno
import io
import ipaddress
import json
import os
import queue
import socket
import sys
import threading
import time
import warnings
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import pyarrow.parquet as pq

from dataset.core.addresses import parse_host_port
from dataset.core.codecs import decode_first_frame
from dataset.store.reader import PanoDataset

REVIEW_FILE = "review.jsonl"
LISTED = ["clip_id", "scene", "status", "reject_reasons", "caption", "scores"]
"""Columns the page shows."""
VERDICTS = ("accept", "reject", "clear")
FIELDS = ("clip_id", "verdict", "reviewer", "time")
"""The string fields of a decision line."""
DECISION_KEYS = {"clip_id", "verdict", "reviewer"}
"""What a POSTed decision may contain (``reviewer`` is optional)."""
MAX_BODY = 4096
"""Largest decision body accepted, in bytes (a decision is well under 1 KB)."""
READ_TIMEOUT = 15.0
"""Seconds a connection may sit without sending before it is closed."""
WORKERS = 8
"""Handler threads; further connections wait for one of them."""
FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


class ReviewSaveError(OSError):
    """A decision could not be written to the log; nothing of it was left there."""


class ReviewLog:
    """The append-only decision file of a dataset folder."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / REVIEW_FILE
        self._lock = threading.Lock()

    def append(self, clip_id: str, verdict: str, reviewer: str) -> dict:
        """Record one decision durably: the whole line is written and fsynced before this returns, or the
        file is cut back to its old size and ``ReviewSaveError`` is raised (no torn line stays behind)."""
        if verdict not in VERDICTS:
            raise ValueError(f"verdict {verdict!r} is not one of {', '.join(VERDICTS)}")
        entry = {"clip_id": clip_id, "verdict": verdict, "reviewer": reviewer,
                 "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        line = (json.dumps(entry) + "\n").encode()
        with self._lock:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            except OSError as exc:
                raise self._error(exc) from exc
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line  # a torn last line (crash mid-write) is closed off: this one stays whole
                try:
                    _write_all(fd, line)
                    os.fsync(fd)
                except OSError:
                    with contextlib.suppress(OSError):  # if even this fails, the next append closes the torn line
                        os.ftruncate(fd, size)
                        os.fsync(fd)
                    raise
            except OSError as exc:
                raise self._error(exc) from exc
            finally:
                os.close(fd)
        return entry

    def _error(self, exc: OSError) -> ReviewSaveError:
        fix = "free some disk space" if exc.errno in FULL_DISK else "check the folder"
        return ReviewSaveError(exc.errno, f"decision not saved to {self.path}: {exc.strerror or exc} ({fix}, "
                                          f"then decide again)")

    def decisions(self) -> dict[str, dict]:
        """Latest decision per clip (``clear`` removes it). Lines that are not a decision (a torn line from a
        crash, hand edits) are skipped with one warning naming them."""
        out: dict[str, dict] = {}
        if not self.path.exists():
            return out
        skipped = []
        for number, line in enumerate(self.path.read_text(errors="replace").split("\n"), 1):
            if not line.strip():
                continue
            entry = _decision(line)
            if entry is None:
                skipped.append(number)
            elif entry["verdict"] == "clear":
                out.pop(entry["clip_id"], None)
            else:
                out[entry["clip_id"]] = entry
        if skipped:
            shown = ", ".join(map(str, skipped[:10])) + (", ..." if len(skipped) > 10 else "")
            warnings.warn(f"{self.path}: skipped {len(skipped)} lines that are not decisions (line {shown}); each "
                          f"line must be a JSON object with string {', '.join(FIELDS)} and a verdict of "
                          f"{', '.join(VERDICTS)}", stacklevel=2)
        return out


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all of ``data`` is written (a write may take only part of it); OSError otherwise."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(errno.ENOSPC, "no bytes could be written")
        view = view[n:]


def _decision(line: str) -> dict | None:
    """The decision on one log line, or None when the line is not one."""
    try:
        entry = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if (not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in FIELDS)
            or entry["verdict"] not in VERDICTS):
        return None
    return entry


def final_status(auto_status: str, auto_reasons: list[str], decision: dict | None) -> tuple[str, list[str]]:
    """Automatic verdict combined with the manual one: rejected if either rejects."""
    if decision is None or decision["verdict"] == "accept":
        return auto_status, list(auto_reasons)
    return "rejected", [*auto_reasons, f"manual review: rejected by {decision['reviewer']} at {decision['time']}"]


def parse_decision(body: bytes) -> dict[str, str]:
    """A POSTed decision: a flat JSON object of strings with ``clip_id``, ``verdict`` and maybe ``reviewer``.
    Nesting is refused before parsing, so a deeply nested body cannot exhaust the parser; ValueError names
    the problem."""
    text = body.decode("utf-8", errors="replace")
    in_string = escaped = False
    depth = 0
    for ch in text:
        if in_string:
            escaped, in_string = (False, True) if escaped else (ch == "\\", ch != '"')
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > 1:
                raise ValueError("the decision must be a flat JSON object of strings (no nested arrays or objects)")
        elif ch in "]}":
            depth -= 1
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"the decision is not valid JSON: {exc}") from None
    if not isinstance(obj, dict) or not all(isinstance(v, str) for v in obj.values()):
        raise ValueError('the decision must be a JSON object of strings, e.g. {"clip_id": "...", "verdict": "reject"}')
    if extra := sorted(set(obj) - DECISION_KEYS):
        raise ValueError(f"unknown decision fields {', '.join(extra)}; allowed: {', '.join(sorted(DECISION_KEYS))}")
    for key in ("clip_id", "verdict"):
        if key not in obj:
            raise ValueError(f"the decision has no {key}")
    return obj


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


class ReviewServer(HTTPServer):
    """An HTTP server with a fixed pool of handler threads that knows which ``Host`` names are its own."""

    def __init__(self, host: str, port: int, handler: type[BaseHTTPRequestHandler], workers: int) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        super().__init__((host, port), handler)
        bound = self.server_address[0]
        ip = ipaddress.ip_address(bound)
        self.names = {host.lower(), bound, *(("localhost", "127.0.0.1") if ip.is_loopback else ())}
        """``Host``/``Origin`` names of this server: the address asked for, the one bound, loopback aliases."""
        self.any_ip = ip.is_unspecified
        """Bound to all interfaces: any IP literal is ours too (a rebinding attack needs a DNS name)."""
        if self.any_ip:
            self.names |= {"localhost", socket.gethostname().lower(), socket.getfqdn().lower()}
        self._workers = [threading.Thread(target=self._work, name=f"review-{i}", daemon=True) for i in range(workers)]
        for thread in self._workers:
            thread.start()

    def owns(self, netloc: str) -> bool:
        """Whether ``host[:port]`` (a ``Host`` header, an ``Origin`` without scheme) names this server."""
        _, colon, port_text = netloc.rpartition(":")
        try:
            name, port = parse_host_port(netloc if colon and "]" not in port_text else netloc + ":80")
        except ValueError:
            return False
        if port != self.server_address[1]:
            return False
        name = name.lower()
        if name in self.names:
            return True
        try:
            return self.any_ip and bool(ipaddress.ip_address(name))
        except ValueError:
            return False

    def process_request(self, request, client_address) -> None:
        self._queue.put((request, client_address))

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            request, client_address = item
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        """One line on stderr instead of socketserver's traceback; a client that hung up is not an error."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, ConnectionError):
            print(f"matrix-pano review: request from {client_address[0]} failed: {type(exc).__name__}: {exc}",
                  file=sys.stderr)

    def server_close(self) -> None:
        super().server_close()
        for _ in self._workers:
            self._queue.put(None)


def make_handler(app: ReviewApp, read_timeout: float = READ_TIMEOUT) -> type[BaseHTTPRequestHandler]:
    """The request handler class over ``app``; a connection is closed after ``read_timeout`` s without data."""

    class Handler(BaseHTTPRequestHandler):
        server: ReviewServer
        timeout = read_timeout  # the socket timeout StreamRequestHandler.setup sets on each connection

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

        def _refuse(self, status: int, message: str) -> None:
            self._json({"error": message}, status)

        def _addressed_to_us(self) -> bool:
            """Refuse (421) a request whose ``Host`` is not this server: a DNS-rebinding page's would not be."""
            if self.server.owns(self.headers.get("Host", "")):
                return True
            self._refuse(HTTPStatus.MISDIRECTED_REQUEST, f"Host {self.headers.get('Host')!r} is not this server; "
                                                         f"open the address that matrix-pano review printed")
            return False

        def do_GET(self) -> None:
            if not self._addressed_to_us():
                return
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

        def _body(self) -> bytes | None:
            """The body of a state-changing request from the page itself, or None once refused: other pages
            cannot send our Origin, and a JSON content type needs a CORS preflight we never grant."""
            origin = self.headers.get("Origin", "")
            if not (origin.startswith("http://") and self.server.owns(origin[len("http://"):])):
                self._refuse(HTTPStatus.FORBIDDEN, f"Origin {origin or '(none)'} is not this server's page")
                return None
            kind = self.headers.get("Content-Type", "").partition(";")[0].strip().lower()
            if kind != "application/json":
                self._refuse(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"Content-Type {kind or '(none)'} is not "
                                                                f"application/json")
                return None
            lengths = self.headers.get_all("Content-Length") or []
            if not lengths:
                self._refuse(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
                return None
            if len(lengths) > 1 or not (lengths[0].isascii() and lengths[0].isdigit()):
                self._refuse(HTTPStatus.BAD_REQUEST, f"Content-Length {', '.join(lengths)} is not one "
                                                     f"non-negative integer")
                return None
            if int(lengths[0]) > MAX_BODY:
                self._refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"Content-Length {lengths[0]} is over the "
                                                                  f"{MAX_BODY}-byte limit of a decision")
                return None
            return self.rfile.read(int(lengths[0]))

        def do_POST(self) -> None:
            if not self._addressed_to_us():
                return
            if urlparse(self.path).path != "/api/decision":
                self._refuse(HTTPStatus.NOT_FOUND, "not found")
                return
            body = self._body()
            if body is None:
                return
            try:
                decision = parse_decision(body)
                if decision["clip_id"] not in app.index:
                    raise ValueError(f"unknown clip {decision['clip_id']!r}")
                entry = app.log.append(decision["clip_id"], decision["verdict"],
                                       (decision.get("reviewer") or app.reviewer)[:80])
            except ReviewSaveError as exc:
                full = exc.errno in FULL_DISK
                self._json({"error": exc.strerror}, HTTPStatus.INSUFFICIENT_STORAGE if full
                           else HTTPStatus.INTERNAL_SERVER_ERROR)
                return
            except ValueError as exc:
                self._json({"error": str(exc)}, HTTPStatus.BAD_REQUEST)
                return
            self._json(entry)

    return Handler


def serve(folder: str | Path, host: str = "127.0.0.1", port: int = 8765, reviewer: str | None = None, *,
          timeout: float = READ_TIMEOUT, workers: int = WORKERS) -> ReviewServer:
    """Start the review server (call ``serve_forever`` on the result); port 0 picks a free port. ``timeout``
    closes idle connections; ``workers`` handler threads serve them (the rest wait their turn)."""
    app = ReviewApp(folder, reviewer or os.environ.get("USER", "reviewer"))
    try:
        return ReviewServer(host, port, make_handler(app, timeout), workers)
    except OSError as exc:
        raise ValueError(f"cannot serve on {host}:{port}: {exc.strerror or exc} (choose another --host or "
                         f"--port)") from None


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Matrix-Pano review</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 0; background: #1d1f21; color: #e8e8e8; }
 header { padding: 8px 16px; background: #2b2e31; display: flex; gap: 24px; align-items: center; }
 main { padding: 12px 16px; }
 #frame { width: 100%; max-width: 1280px; aspect-ratio: 2 / 1; background: #000; display: block; }
 .accept { color: #7ddc7d; } .reject { color: #ff7b72; } .none { color: #aaa; }
 .notsaved { color: #1d1f21; background: #ffb000; font-weight: bold; padding: 2px 6px; }
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
     <span id="decision"></span> <span id="save"></span></p>
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
  const p = c.pending;  // a decision the server did not save: shown until a retry is saved
  $("save").textContent = p ? "NOT SAVED (" + p.verdict + "): " + p.error + " — decide again to retry" : "";
  $("save").className = p ? "notsaved" : "";
  const done = clips.filter((x) => x.decision).length;
  const unsaved = clips.filter((x) => x.pending).length;
  $("progress").textContent = done + " of " + clips.length + " reviewed"
      + (unsaved ? ", " + unsaved + " NOT SAVED" : "");
  if (pos + 1 < clips.length) { new Image().src = "/thumb/" + encodeURIComponent(clips[pos + 1].clip_id) + ".jpg"; }
}
async function decide(verdict) {
  if (!clips.length) return;
  const c = clips[pos];
  let error = null;
  try {
    const r = await fetch("/api/decision", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ clip_id: c.clip_id, verdict: verdict, reviewer: reviewer }) });
    if (!r.ok) error = (await r.json().catch(() => ({}))).error || "HTTP " + r.status;
  } catch (e) { error = "the review server cannot be reached (" + e.message + ")"; }
  if (error) { c.pending = { verdict: verdict, error: error }; show(); return; }  // stays on this clip, undecided
  c.pending = null;
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
}).catch((e) => { $("title").textContent = "could not load the clips: " + e.message; });
</script></body></html>
"""
