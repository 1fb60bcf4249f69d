"""Say that a step will take a while before it starts, and show how far it has got.

A notebook cell that boots a VM, attaches gdb or records a run keeps a reader waiting for
seconds to minutes. ``with progress(title, parts) as p:`` prints the title (and how long it
usually takes) first, then shows a bar that ``p.step(...)`` moves and whose label counts the
seconds, so a long step is seen to be alive. In a Jupyter kernel the bar is an ipywidgets
``IntProgress``; its ``text/plain`` form is a line of text, which is what a frontend without
widgets (nbclient, nbconvert to text) keeps. Outside a kernel (a script, a terminal) every step
is a printed line. Every run is also kept in :data:`HISTORY` (title and wall-clock start and
end), so a test can check that a long cell was announced while it ran.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

LOG = logging.getLogger(__name__)
TICK_S = 1.0                 # how often the label's seconds are updated


@dataclass
class Run:
    """One announced step: its title and wall-clock (``time.time()``) start and end."""

    title: str
    start: float
    end: float | None = None
    ok: bool | None = None


HISTORY: list[Run] = []


def _kernel_widgets():
    """The ipywidgets module if we run in a Jupyter kernel that can show widgets, else None."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return None
    try:
        import ipywidgets
    except ImportError:
        return None
    return ipywidgets


class _Bar:
    """The widget, with a line of text for frontends that do not draw widgets."""

    def __init__(self, box, text: str):
        self.box = box
        self.text = text

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.box._repr_mimebundle_(**kwargs)
        if isinstance(bundle, tuple):
            bundle = bundle[0]
        return {**bundle, "text/plain": self.text}


class Progress:
    """A step in parts; use ``with progress(title, parts) as p`` and ``p.step()`` after each."""

    def __init__(self, title: str, parts: int | list[str] = 1, *,
                 about: str | None = None) -> None:
        self.parts = [""] * parts if isinstance(parts, int) else list(parts)
        if not self.parts:
            raise ValueError("a progress needs at least one part")
        self.title = title
        self.steps = len(self.parts)
        self.about = about
        self.done = 0
        self.run = Run(title, time.time())
        self._start = time.monotonic()
        self._widgets = _kernel_widgets()
        self._bar = self._text = self._handle = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # -- the context ---------------------------------------------------------------------
    def __enter__(self) -> "Progress":
        self.run.start = time.time()
        self._start = time.monotonic()
        HISTORY.append(self.run)
        about = f" (usually {self.about})" if self.about else ""
        print(f"{self.title}{about} ...", flush=True)
        LOG.info("%s: started", self.title)
        if self._widgets is None:
            self._print_part()
        else:
            from IPython.display import display

            w = self._widgets
            self._bar = w.IntProgress(value=0, min=0, max=self.steps, bar_style="info",
                                      layout=w.Layout(width="16em"))
            self._text = w.Label(value=self._status())
            box = w.HBox([self._bar, self._text])
            self._shown = _Bar(box, f"{self.title}: 0/{self.steps}")
            self._handle = display(self._shown, display_id=True)
            self._ticker = threading.Thread(target=self._tick, name="progress", daemon=True)
            self._ticker.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=2 * TICK_S)
        elapsed = time.monotonic() - self._start
        self.run.end, self.run.ok = time.time(), exc_type is None
        if exc_type is None:
            self.done = self.steps
            line = f"{self.title}: done in {elapsed:.0f} s"
        else:
            line = f"{self.title}: failed after {elapsed:.0f} s ({exc_type.__name__})"
        LOG.info("%s", line)
        if self._bar is not None:
            self._bar.value = self.done
            self._bar.bar_style = "success" if exc_type is None else "danger"
            self._text.value = line
            self._shown.text = line
            self._handle.update(self._shown)
        else:
            print(line, flush=True)

    # -- moving on -----------------------------------------------------------------------
    @property
    def label(self) -> str:
        """What is being done now: the next part's name."""
        return self.parts[self.done] if self.done < self.steps else ""

    def step(self, label: str | None = None) -> None:
        """One part done; ``label`` renames the next one (e.g. with a count)."""
        self.done = min(self.done + 1, self.steps)
        if label is not None and self.done < self.steps:
            self.parts[self.done] = label
        if self._bar is not None:
            self._bar.value = self.done
            self._text.value = self._status()
        elif self.done < self.steps:
            self._print_part()

    def _print_part(self) -> None:
        what = f"{self.label} " if self.label else ""
        print(f"  [{self.done + 1}/{self.steps}] {what}({self._elapsed():.0f} s)", flush=True)

    def _elapsed(self) -> float:
        return time.monotonic() - self._start

    def _status(self) -> str:
        what = f"{self.label} " if self.label else ""
        return f"{self.done}/{self.steps} done, {what}{self._elapsed():.0f} s"

    def _tick(self) -> None:
        # The label's seconds move while a long part runs, so the reader sees it is alive.
        while not self._stop.wait(TICK_S):
            try:
                self._text.value = self._status()
            except Exception:      # the kernel is shutting down: nothing left to show
                return


def progress(title: str, parts: int | list[str] = 1, *, about: str | None = None) -> Progress:
    """Announce ``title`` now and show its progress over ``parts`` (see the module doc).

    ``parts``: their names, in order (or how many, unnamed); ``p.step()`` ends one.
    ``about``: how long it usually takes, in words ("half a minute"), said with the title.
    """
    return Progress(title, parts, about=about)
