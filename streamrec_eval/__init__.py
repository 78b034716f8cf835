"""Evaluation of streamrec, beside the runtime: nothing in ``stream_app/``, ``consumers/``
or ``producers/`` imports it, and the worker never runs it.

``streamrec evaluate`` (and ``streamrec guard report``) are its entry points; the benches in
``bench/`` use it as a library. By concern:

- ``stream.py``: the stream an evaluation replays (MovieLens in time order, splits);
  ``synthetic.py``: the synthetic power-user history;
- ``prequential.py``: the test-then-train protocol and its results;
  ``adapters.py``: the models it runs (popularity baselines, the engine as the worker
  drives it, periodic retrain, measured improvements); ``foldin.py``: closed-form user
  fold-in, one of them;
- ``beyond_accuracy.py``: coverage, novelty, diversity, popularity bias, new-item exposure;
- ``seed_protocol.py``: training lengths chosen by ROC AUC; ``offline.py``: the LightFM-docs
  offline protocol;
- ``guard_report.py``: what the fraud/bot guard would hold on a replayed data set;
- ``evaluate.py``: the runs ``streamrec evaluate`` makes; ``report.py``: its markdown
  report; ``plots.py``: its figures (matplotlib, the ``eval`` extra, imported on first use).
"""
