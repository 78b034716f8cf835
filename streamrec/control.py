"""Operator messages on the control topic: their schema, and an optional HMAC signature.

Whoever can produce to ``streamrec.control`` steers the worker: it swaps models in
(``model``, sent by ``streamrec retrain``) and lifts the fraud guard (``release``, sent by
``streamrec release``). So the worker accepts only messages that follow this schema, and,
when ``control_key`` is set, only messages signed with it: ``sig`` is the hex HMAC-SHA256 of
the message without ``sig`` (canonical JSON, sorted keys). Anything else goes to the
dead-letter topic with the reason and is counted; the worker carries on.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Annotated, Literal, Union

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from streamrec.errors import InvalidEvent
from streamrec.schema import MAX_ID_LEN, _reason, json_object

_Id = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=MAX_ID_LEN)]


class ModelMessage(BaseModel):
    """A retrained model is ready in ``path`` (under ``STATE_DIR/retrain/``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["model"]
    version: _Id
    path: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=4096)]
    offsets: dict[str, int] = Field(default_factory=dict)
    holdout: dict[str, float] = Field(default_factory=dict)
    sig: str | None = None


class ReleaseMessage(BaseModel):
    """Lift the guard's flag on a user or an item (``streamrec release``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["release"]
    kind: Literal["user", "item"]
    id: _Id
    sig: str | None = None


ControlMessage = Annotated[Union[ModelMessage, ReleaseMessage], Field(discriminator="type")]
_control = TypeAdapter(ControlMessage)


def _mac(key: str, body: dict) -> str:
    payload = orjson.dumps({k: v for k, v in body.items() if k != "sig"},
                           option=orjson.OPT_SORT_KEYS)
    return hmac.new(key.encode(), payload, hashlib.sha256).hexdigest()


def sign(body: dict, key: str | None) -> bytes:
    """The record value for ``body``, signed when ``key`` is set."""
    doc = {k: v for k, v in body.items() if k != "sig"}
    if key:
        doc["sig"] = _mac(key, doc)
    return orjson.dumps(doc)


def parse_control(raw: bytes | None, key: str | None) -> ModelMessage | ReleaseMessage:
    """Validate (and, with ``key``, authenticate) a control record; raise InvalidEvent with
    the reason otherwise."""
    if not raw:
        raise InvalidEvent("control: empty value")
    data = json_object(raw, "a message", "control: ")
    try:
        msg = _control.validate_python(data)
    except ValidationError as exc:
        raise InvalidEvent(f"control: {_reason(exc)}") from None
    if key:
        if not msg.sig:
            raise InvalidEvent("control: unsigned message refused (control_key is set)")
        if not hmac.compare_digest(msg.sig, _mac(key, data)):
            raise InvalidEvent("control: bad signature (forged, or signed with another key)")
    return msg


def retrain_path(state_dir: Path, path: str) -> Path:
    """The model folder a ``model`` message names, resolved (symlinks included); it must
    exist strictly inside ``STATE_DIR/retrain/``, the only place ``streamrec retrain``
    writes and the only folder the worker ever deletes after a swap."""
    root = (Path(state_dir) / "retrain").resolve()
    try:
        resolved = Path(path).resolve(strict=True)
    except (OSError, RuntimeError):
        raise InvalidEvent(f"control: model path {path!r} does not exist") from None
    if resolved == root or not resolved.is_relative_to(root):
        raise InvalidEvent(f"control: model path {path!r} is not inside {root}")
    if not resolved.is_dir():
        raise InvalidEvent(f"control: model path {path!r} is not a folder")
    return resolved
