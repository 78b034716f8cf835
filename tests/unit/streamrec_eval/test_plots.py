"""Plots without side effects: matplotlib is optional (the ``eval`` extra), imported only when
a plot is drawn, and drawing never touches pyplot or the global backend (a notebook user's
stays theirs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streamrec.errors import MissingExtra, StreamrecError


def _python(code: str) -> str:
    """Run ``code`` in a fresh interpreter (clean ``sys.modules``) and return its stdout."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parents[3])
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_importing_the_evaluation_modules_does_not_import_matplotlib() -> None:
    out = _python("import sys, streamrec.cli, streamrec_eval.evaluate, streamrec_eval.report, "
                  "streamrec_eval.seed_protocol; print('matplotlib' in sys.modules)")
    assert out == "False"


def test_a_plot_is_written_without_pyplot_or_a_backend_switch(tmp_path: Path) -> None:
    png = tmp_path / "exploration.png"
    out = _python(
        "import sys, matplotlib\n"
        "backend = matplotlib.rcParams._get('backend')\n"
        "from streamrec_eval.plots import plot_exploration\n"
        "rows = [{'explore_share': s, 'temperature': 2.0, 'hit@10': 0.2 - s / 10,\n"
        "         'coverage': 0.3 + s, 'new_items_shown': s} for s in (0, 0.05, 0.1)]\n"
        f"plot_exploration(rows, {str(png)!r})\n"
        "print('matplotlib.pyplot' in sys.modules, matplotlib.rcParams._get('backend') == backend)")
    assert out == "False True"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_matplotlib_plots_say_which_extra_to_install(monkeypatch) -> None:
    from streamrec_eval import plots

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(MissingExtra, match=r"pip install 'streamrec\[eval\]'") as info:
        plots.new_figure(figsize=(4, 3))
    assert isinstance(info.value, StreamrecError)  # the CLI prints it as one line
