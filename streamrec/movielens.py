"""MovieLens 100K (GroupLens, research use): find, download, parse into contract records.

The data set is never shipped with streamrec; any folder in the ML-100K layout works.
"""

from __future__ import annotations

import io
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamrec.errors import DataNotFound

log = logging.getLogger(__name__)

REQUIRED = ("u.data", "u.item", "u.user")
AGE_GROUPS = ((18, "<18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (50, "45-49"),
              (56, "50-55"), (200, "56+"))


def candidate_dirs() -> list[Path]:
    here = Path.cwd()
    return [here / "../shared/data/ml-100k", here / "data/ml-100k",
            Path(__file__).resolve().parents[2] / "shared/data/ml-100k"]


def find_movielens(path: Path | None = None, download_to: Path | None = None,
                   url: str = "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
                   download: bool = True) -> Path:
    """A folder with ML-100K: ``path`` if given, else a known location, else downloaded."""
    if path is not None:
        path = Path(path)
        missing = [f for f in REQUIRED if not (path / f).exists()]
        if missing:
            raise DataNotFound(f"{path} is not a MovieLens 100K folder (missing {missing})")
        return path
    for cand in candidate_dirs():
        if all((cand / f).exists() for f in REQUIRED):
            return cand.resolve()
    if not download:
        raise DataNotFound("MovieLens 100K not found; pass --data PATH")
    target = Path(download_to or "data")
    return _download(url, target)


def _download(url: str, target: Path) -> Path:
    import httpx

    log.info("downloading MovieLens 100K from %s", url)
    try:
        resp = httpx.get(url, timeout=60, follow_redirects=True)
        resp.raise_for_status()
    except httpx.HTTPError as exc:
        raise DataNotFound(
            f"MovieLens 100K is not here and could not be downloaded from {url} ({exc}); "
            "download ml-100k.zip by hand, unzip it and pass --data PATH") from exc
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(resp.content)) as zf:
        zf.extractall(target)
    return target / "ml-100k"


def age_group(age: int) -> str:
    for bound, label in AGE_GROUPS:
        if age < bound:
            return label
    return "56+"


@dataclass
class MovieLens:
    """Ratings in time order plus user and item metadata, with contract ids (u1, m1)."""

    users: np.ndarray       # user ids (str) per rating
    items: np.ndarray       # item ids (str) per rating
    ratings: np.ndarray     # float
    timestamps: np.ndarray  # int epoch seconds
    user_features: dict[str, dict]
    item_features: dict[str, dict]
    titles: dict[str, str]

    def __len__(self) -> int:
        return len(self.ratings)

    def split_index(self, fraction: float) -> int:
        """First index of the last ``1 - fraction`` of events in time order."""
        return int(len(self) * fraction)


def load_movielens(path: Path) -> MovieLens:
    """Parse u.data (sorted by time, ties by file order), u.user and u.item."""
    path = Path(path)
    raw = np.loadtxt(path / "u.data", dtype=np.int64)
    order = np.argsort(raw[:, 3], kind="stable")
    raw = raw[order]
    genres = [line.split("|")[0] for line in
              (path / "u.genre").read_text(encoding="latin-1").splitlines() if line.strip()] \
        if (path / "u.genre").exists() else []
    item_features: dict[str, dict] = {}
    titles: dict[str, str] = {}
    for line in (path / "u.item").read_text(encoding="latin-1").splitlines():
        parts = line.split("|")
        if len(parts) < 6:
            continue
        iid = f"m{parts[0]}"
        titles[iid] = parts[1]
        flags = parts[5:]
        feats: dict = {"genre": [g for g, f in zip(genres, flags) if f.strip() == "1"]}
        year = parts[2][-4:]
        if year.isdigit():
            feats["decade"] = f"{year[:3]}0s"
        item_features[iid] = feats
    user_features: dict[str, dict] = {}
    for line in (path / "u.user").read_text(encoding="latin-1").splitlines():
        parts = line.split("|")
        if len(parts) < 5:
            continue
        user_features[f"u{parts[0]}"] = {"age_group": age_group(int(parts[1])),
                                        "gender": parts[2], "occupation": parts[3]}
    return MovieLens(users=np.char.add("u", raw[:, 0].astype(str)),
                     items=np.char.add("m", raw[:, 1].astype(str)),
                     ratings=raw[:, 2].astype(np.float64), timestamps=raw[:, 3],
                     user_features=user_features, item_features=item_features, titles=titles)
