"""Progress display and plots shared by the demos."""

import sys
import time

__all__ = ["ProgressBar", "save_loss_plot", "save_step_timeline"]


class ProgressBar:
    """A text progress bar; redraws in place on a terminal, prints lines otherwise (at most
    one "running" line every ``quiet`` seconds)."""

    def __init__(self, total, width=30, stream=None, quiet=10.0):
        self.total = total
        self.width = width
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.quiet = quiet
        self.done = 0
        self.loss = ""
        self._last = 0.0

    def _show(self, text, final=False):
        if self.tty:
            self.stream.write("\r" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def _bar(self):
        filled = int(self.width * self.done // self.total)
        done = f"{self.done:g}" if self.done == int(self.done) else f"{self.done:.2f}"
        return f"[{'#' * filled}{'.' * (self.width - filled)}] {done:>6}/{self.total} epochs"

    def __call__(self, done, total, losses):
        self.done = done
        self.loss = f"  loss {losses[-1]:.5f}" if losses else ""
        self._show(self._bar() + self.loss, final=done == total)
        self._last = time.monotonic()

    def running(self, cycles):
        """A run is going on: show its device cycles so far."""
        now = time.monotonic()
        if not self.tty and now - self._last < self.quiet:
            return
        self._last = now
        self._show(f"{self._bar()}{self.loss}  (running, cycle {cycles:,})")


def save_loss_plot(losses, path, title, extra=None):
    """Save a PNG of the loss curve (and optional ``extra = (label, values)`` curves); returns
    False when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(range(1, len(losses) + 1), losses, label="device")
    for label, values in extra or ():
        ax.plot(range(1, len(values) + 1), values, label=label, linestyle="--")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def save_step_timeline(cfg, model, x, y, *, batch_size, lr, path, title):
    """Draw one training step (the first batch, no loss log) as a per-engine timeline, from
    the reference model (whose cycles are every backend's); returns the step's events, or
    None without matplotlib."""
    from ..runtime.accelerator import Accelerator
    from ..runtime.timeline import save_timeline_plot
    acc = Accelerator(cfg, timeline=True)
    acc.train(model.copy(), x[:batch_size], y[:batch_size], lr=lr, epochs=1,
              batch_size=batch_size, record_loss=False)
    events = acc.timeline()
    if not save_timeline_plot(events, path, title=f"{title}: one training step, "
                              f"{acc.stats.cycles} cycles"):
        return None
    return events
