"""Progress display and plots shared by the demos."""

import sys

__all__ = ["ProgressBar", "save_loss_plot"]


class ProgressBar:
    """A text progress bar; redraws in place on a terminal, prints lines otherwise."""

    def __init__(self, total, width=30, stream=None):
        self.total = total
        self.width = width
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()

    def __call__(self, done, total, losses):
        filled = self.width * done // total
        bar = "#" * filled + "." * (self.width - filled)
        loss = f"  loss {losses[-1]:.5f}" if losses else ""
        text = f"[{bar}] {done:>5}/{total} epochs{loss}"
        if self.tty:
            self.stream.write("\r" + text + ("\n" if done == total else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


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
