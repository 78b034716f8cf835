"""The LightFM-docs offline protocol through the streamrec model: ML-100K ``ua.base`` /
``ua.test``, ratings >= 4 positive, precision@10 and ROC AUC per loss, with and without
metadata features. Padding is kept to one dummy row so dummy items hardly enter rankings.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from lightfm.evaluation import auc_score, precision_at_k

from stream_app.model import ModelParams, PaddedLightFM
from streamrec.movielens import load_movielens

LOSSES = ("warp", "bpr", "logistic", "warp-kos")
OFFLINE_PARAMS = {"positive_rating": 4.0, "components": 30, "epochs": 30, "learning_rate": 0.05}
"""The protocol's parameters (the LightFM docs' example), quoted by the report."""


def _split(path: Path, name: str) -> np.ndarray:
    return np.loadtxt(Path(path) / name, dtype=np.int64)


def offline_table(data: Path, epochs: int = OFFLINE_PARAMS["epochs"],
                  components: int = OFFLINE_PARAMS["components"],
                  lr: float = OFFLINE_PARAMS["learning_rate"],
                  feature_weight: float = 0.5, threads: int = 2,
                  losses: tuple[str, ...] = LOSSES) -> list[dict]:
    """One row per (loss, features) with precision@10 and AUC on ``ua.test``."""
    ml = load_movielens(data)
    base, test = _split(data, "ua.base"), _split(data, "ua.test")
    n_users = int(max(base[:, 0].max(), test[:, 0].max()))
    n_items = int(max(base[:, 1].max(), test[:, 1].max()))

    def matrix(rows: np.ndarray, cap_u: int, cap_i: int) -> sp.coo_matrix:
        pos = rows[rows[:, 2] >= OFFLINE_PARAMS["positive_rating"]]
        return sp.coo_matrix((np.ones(len(pos), np.float32), (pos[:, 0] - 1, pos[:, 1] - 1)),
                             shape=(cap_u, cap_i))

    out = []
    for loss in losses:
        for features in (False, True):
            params = ModelParams(no_components=components, loss=loss, learning_rate=lr,
                                 feature_weight=feature_weight if features else 0.0)
            model = PaddedLightFM(params, n_users + 1, n_items + 1)
            if features:
                for u in range(1, n_users + 1):
                    model.users.set(u - 1, ml.user_features.get(f"u{u}", {}))
                for i in range(1, n_items + 1):
                    model.items.set(i - 1, ml.item_features.get(f"m{i}", {}))
            train = matrix(base, model.user_capacity, model.item_capacity)
            tst = matrix(test, model.user_capacity, model.item_capacity)
            t0 = time.perf_counter()
            model.fit_partial(train.row, train.col, train.data, epochs=epochs,
                              num_threads=threads)
            fit_s = time.perf_counter() - t0
            kw = {"user_features": model.users.matrix(), "item_features": model.items.matrix(),
                  "num_threads": threads}
            out.append({"loss": loss, "features": features,
                        "precision_at_10": float(precision_at_k(
                            model.lightfm, tst, train_interactions=train.tocsr(), k=10,
                            **kw).mean()),
                        "auc": float(auc_score(model.lightfm, tst,
                                               train_interactions=train.tocsr(), **kw).mean()),
                        "fit_s": fit_s})
    return out
