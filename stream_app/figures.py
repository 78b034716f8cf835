"""Matplotlib figures for reports and benches, without pyplot.

A :class:`matplotlib.figure.Figure` made directly renders PNGs through the Agg canvas when
saved, so writing a plot never picks or switches matplotlib's global backend (a notebook or
GUI app that imports streamrec keeps its own) and leaves no figure registered in pyplot.
matplotlib is imported here, on first use only: it is in the ``eval`` extra, not a hard
dependency (the worker and the lookup never plot).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamrec.errors import MissingExtra

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def new_figure(**kwargs: Any) -> Figure:
    """``matplotlib.figure.Figure(**kwargs)``; save it with ``fig.savefig(path)``."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingExtra("plots need matplotlib, which is not installed; install it with "
                           "pip install 'streamrec[eval]'") from exc
    return Figure(**kwargs)
