"""Which propensity models served a data dir: a small append-only registry of model versions.

One JSON object per line in ``<data dir>/model_registry.jsonl``, one per model version that
served (a later line for the same version adds to it: e.g. the entry of an online model is
written when it is first projected and completed when it is replaced):

- ``model_version`` the version a profile carries (`ModelSet.model_version`);
- ``source``: ``online`` (learnt from the log by the projector), ``train`` (a batch pass of
  `portrait train` over point-in-time training rows), ``federated`` (`portrait federate
  --install`);
- ``kind`` the learner (`describe_learner`), ``recorded_at`` wall-clock time of the line;
- ``offset`` the log offset from which it served; ``replaces`` the version before it;
- ``trained_on`` the log offsets and event-time range its examples came from;
- ``evaluation`` its figures on held-out rows, where it has them; ``note`` free text.

Appends are single ``write`` calls on a file opened for appending, flushed and fsynced, so
concurrent writers (a server and a command) interleave whole lines.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

__all__ = ["FILE_NAME", "SOURCES", "ModelRegistry", "describe_learner"]

FILE_NAME = "model_registry.jsonl"
SOURCES = ("online", "train", "federated")


def describe_learner(propensity) -> str:
    """The learner's shape, e.g. ``PurchasePropensity(SignedLogScaler | LogisticRegression)``.

    >>> from river import linear_model, preprocessing
    >>> from online.models import PurchasePropensity
    >>> describe_learner(PurchasePropensity(("a",), model=preprocessing.StandardScaler()
    ...                                     | linear_model.LogisticRegression()))
    'PurchasePropensity(StandardScaler | LogisticRegression)'
    """
    model = getattr(propensity, "model", None)
    if model is None:
        inner = "default"
    elif hasattr(model, "steps"):
        inner = " | ".join(type(s).__name__ for s in model.steps.values())
    else:
        inner = type(model).__name__
    return f"{type(propensity).__name__}({inner})"


class ModelRegistry:
    """The registry file of a data dir: `record` appends, `entries` reads them merged.

    >>> import tempfile
    >>> reg = ModelRegistry(tempfile.mkdtemp())
    >>> _ = reg.record({"model_version": "abc-g0", "source": "online", "offset": 0})
    >>> _ = reg.record({"model_version": "abc-g1", "source": "train", "replaces": "abc-g0"})
    >>> _ = reg.record({"model_version": "abc-g0", "source": "online", "until_offset": 9})
    >>> [(e["model_version"], e["source"], e.get("until_offset")) for e in reg.entries()]
    [('abc-g0', 'online', 9), ('abc-g1', 'train', None)]
    """

    def __init__(self, data_dir: str | os.PathLike) -> None:
        self.path = Path(data_dir) / FILE_NAME

    def record(self, entry: dict) -> dict:
        """Append one entry (``model_version`` and ``source`` required); returns it as written."""
        version = entry.get("model_version")
        if not isinstance(version, str) or not version:
            raise ValueError(f"model_version must be a non-empty string, got {version!r}")
        if entry.get("source") not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {entry.get('source')!r}")
        line = {**entry, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        data = (json.dumps(line, sort_keys=True, default=str) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return line

    def entries(self) -> list[dict]:
        """One merged entry per version, in the order versions first appeared."""
        if not self.path.exists():
            return []
        merged: dict[str, dict] = {}
        with open(self.path, encoding="utf-8") as f:
            for number, text in enumerate(f, 1):
                if not text.strip():
                    continue
                try:
                    line = json.loads(text)
                except json.JSONDecodeError:
                    if text.endswith("\n"):
                        raise ValueError(f"{self.path}:{number}: not a JSON object") from None
                    continue  # a torn last line (a crash mid-append): ignored
                first = merged.setdefault(line["model_version"],
                                          {"first_recorded_at": line.get("recorded_at")})
                first.update(line)
        return list(merged.values())

    def get(self, model_version: str) -> dict | None:
        """The merged entry of one version, None when it was never recorded."""
        return next((e for e in self.entries() if e["model_version"] == model_version), None)
