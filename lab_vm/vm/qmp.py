"""QMP through the qemu.qmp library, usable from any caller — a Jupyter kernel included.

qemu.qmp is asyncio. Its synchronous "legacy" wrapper runs the caller's event
loop, which fails inside Jupyter, where a loop is already running. So the
client lives on a private event loop in a daemon thread, and each call waits
for its result there with a timeout.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from qemu.qmp import ExecuteError, QMPClient

from ..errors import VMError

LOG = logging.getLogger(__name__)


class QMPError(VMError):
    """QEMU answered with an error, or did not answer (a LabVMError like every other)."""


class QMPConnection:
    def __init__(self, name: str = "vmexit") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"qmp-{name}",
                                        daemon=True)
        self._thread.start()
        self._client = QMPClient(name)
        # Nobody reads QEMU's events, and the library's default listener would keep every one
        # (a queue and a history, never emptied): four per breakpoint hit under gdb (STOP and
        # RESUME around the hit and around the step), 8000 for a 2000-hit sample().
        self._client.events.event_filter = lambda event: False

    def _call(self, coro, timeout: float):
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, timeout), self._loop)
        try:
            return future.result(timeout + 1.0)
        except ExecuteError as exc:
            raise QMPError(exc.error.desc) from exc
        except (asyncio.TimeoutError, TimeoutError) as exc:
            future.cancel()
            raise QMPError(f"no answer within {timeout:g} s") from exc
        except Exception as exc:     # the library's others: disconnected, protocol errors
            raise QMPError(f"{type(exc).__name__}: {exc}") from exc

    def connect(self, path: str, timeout: float, alive=lambda: None) -> None:
        """Connect to QEMU's QMP socket, retrying while QEMU creates it; ``alive()`` may raise."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._call(self._client.connect(path), max(0.1, deadline - time.monotonic()))
                return
            except Exception as exc:     # the socket is not there yet, or refused
                alive()
                if time.monotonic() > deadline:
                    raise QMPError(f"could not connect to {path}: {exc}") from exc
                time.sleep(0.005)

    def execute(self, command: str, args: dict | None = None, timeout: float = 10.0) -> Any:
        return self._call(self._client.execute(command, args), timeout)

    def close(self) -> None:
        try:
            self._call(self._client.disconnect(), 2.0)
        except Exception:   # the peer may be gone already; nothing to tidy then
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=2)
        if not self._thread.is_alive():
            self._loop.close()
