"""Launching Unreal game instances with UnrealCV: headless, one port and one ``unrealcv.ini`` copy each,
ready when ``vget /unrealcv/status`` answers, restarted when they crash or hang, stopped on exit.

Each instance runs in its own working folder holding its own ``unrealcv.ini`` (from ``unrealcv.ini``
beside this file, with the port and resolution filled in), so instances never race on one file; the
port is also passed on the command line as ``-UnrealCVPort N`` (a separate argument, as UnrealCV
parses it). ``-graphicsadapter=N`` selects the GPU. Processes start in their own session and are killed
as a group, and every instance still running is stopped when the Python process exits.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from ue_plugin.protocol import UnrealCVClient, UnrealCVError

INI_TEMPLATE = Path(__file__).with_name("unrealcv.ini")
_RUNNING: weakref.WeakSet = weakref.WeakSet()


class LaunchError(RuntimeError):
    """An instance could not be started or did not become ready; the message ends with its log tail."""


@dataclass
class InstanceConfig:
    """How to start one game instance."""

    binary: str
    """Path of the packaged game executable (Linux: Binaries/Linux/<Project>)."""
    map: str
    """Map (level) to open, e.g. /Game/Maps/Apartment."""
    port: int = 0
    """UnrealCV port (0 = pick a free one)."""
    gpu: int | None = None
    """Graphics adapter index (``-graphicsadapter=N``); None = the default GPU."""
    resolution: tuple[int, int] = (640, 480)
    """Window / render target size (-ResX, -ResY)."""
    extra_args: list[str] = field(default_factory=list)
    """More command-line arguments for the game."""
    workdir: str = "ue-instances"
    """Folder under which each instance gets its own working folder, ini copy and log."""
    startup_timeout_s: float = 300.0
    """How long a start may take until ``vget /unrealcv/status`` answers."""


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the process that launched it dies (a killed Ray worker leaves no game)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: atexit still stops instances on a normal exit
        pass


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UEInstance:
    """One game process and its UnrealCV endpoint."""

    def __init__(self, config: InstanceConfig) -> None:
        self.config = config
        self.port = config.port or free_port()
        self.folder = Path(config.workdir) / f"instance-{self.port}"
        self.process: subprocess.Popen | None = None
        self.restarts = 0

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        c = self.config
        cmd = [str(Path(c.binary).resolve()), c.map, "-RenderOffScreen", f"-ResX={c.resolution[0]}",
               f"-ResY={c.resolution[1]}", "-UnrealCVPort", str(self.port), "-nosound", "-unattended"]
        if c.gpu is not None:
            cmd.append(f"-graphicsadapter={c.gpu}")
        return cmd + list(c.extra_args)

    def write_ini(self) -> Path:
        """This instance's own ``unrealcv.ini``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        w, h = self.config.resolution
        text = INI_TEMPLATE.read_text().format(port=self.port, width=w, height=h)
        ini = self.folder / "unrealcv.ini"
        ini.write_text(text)
        return ini

    def start(self) -> None:
        """Start the game and wait until UnrealCV answers (LaunchError with the log tail otherwise)."""
        if not Path(self.config.binary).exists():
            raise LaunchError(f"game binary {self.config.binary} does not exist: give the packaged game's "
                              f"executable (renderer.binary)")
        self.write_ini()
        log = open(self.folder / "game.log", "ab")
        self.process = subprocess.Popen(self.command(), cwd=self.folder, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent)
        log.close()
        _RUNNING.add(self)
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.config.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise LaunchError(f"{self.config.binary} exited with code {self.process.returncode} during start-up"
                                  f"{self._log_tail()}")
            if self.answers(timeout=2.0):
                return
            time.sleep(0.2)
        self.stop()
        raise LaunchError(f"{self.config.binary} did not answer on port {self.port} within "
                          f"{self.config.startup_timeout_s:.0f} s{self._log_tail()}")

    def answers(self, timeout: float = 5.0) -> bool:
        """Whether ``vget /unrealcv/status`` gets an answer now."""
        client = UnrealCVClient("127.0.0.1", self.port, timeout=timeout)
        try:
            client.connect(attempts=2, backoff=0.2)  # the previous client may still be leaving
            client.request("vget /unrealcv/status")
            return True
        except (UnrealCVError, OSError):
            return False
        finally:
            client.close()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def restart(self) -> None:
        """Stop (if needed) and start again, on the same port with the same ini."""
        self.stop()
        self.restarts += 1
        self.start()

    def stop(self, grace_s: float = 10.0) -> None:
        """Terminate the game's process group; kill it if it does not exit in ``grace_s``."""
        p = self.process
        if p is None:
            return
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(grace_s)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        self.process = None
        _RUNNING.discard(self)

    def _log_tail(self, lines: int = 15) -> str:
        log = self.folder / "game.log"
        if not log.exists():
            return ""
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        return f"; last lines of {log}:\n" + "\n".join(tail) if tail else ""


@atexit.register
def _stop_all() -> None:
    """No orphans: stop every instance this process started."""
    for instance in list(_RUNNING):
        instance.stop(grace_s=3.0)
