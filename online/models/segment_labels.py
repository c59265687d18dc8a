"""Segment labels in words: each centroid's distinctive RFM axes, made distinct."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["segment_labels"]

# RFM axes 0..3: recency, frequency, monetary, average order value
_HIGH = ("lapsed", "frequent", "high spend", "large baskets")
_LOW = ("recent", "occasional", "low spend", "small baskets")
_AXIS = ("recency", "orders", "spend", "basket size")
# The order words appear in a label: what a marketer asks first.
_LABEL_ORDER = (1, 2, 0, 3)


def segment_labels(centers: Sequence[Mapping[int, float]], formed: Sequence[bool],
                   threshold: float) -> list[str]:
    """Every segment's label (`UserSegments.label`): ``centers`` in standard units keyed by
    axis 0..3, ``formed`` whether each speaks for the data yet ("unformed" otherwise), and
    ``threshold`` the distance from the mean an axis needs to earn its word."""
    # axes by distance from the mean, strongest first (ties: the marketer's order)
    ranked = [sorted(_LABEL_ORDER, key=lambda k, z=z: (-abs(z[k]), _LABEL_ORDER.index(k)))  # type: ignore[misc]
              for z in centers]
    used = [sorted((k for k in _LABEL_ORDER if abs(z[k]) >= threshold),
                   key=_LABEL_ORDER.index) for z in centers]

    def text(c: int) -> str:
        if not formed[c]:
            return "unformed"
        z = centers[c]
        return ", ".join(_HIGH[k] if z[k] > 0 else _LOW[k] for k in used[c]) or "average"

    for _ in range(len(_AXIS)):
        texts = [text(c) for c in range(len(centers))]
        clashing = [c for c in range(len(centers))
                    if texts.count(texts[c]) > 1 and formed[c]]
        if not clashing:
            break
        for c in clashing:
            extra = next((k for k in ranked[c] if k not in used[c]), None)
            if extra is not None:
                used[c] = sorted([*used[c], extra], key=_LABEL_ORDER.index)
    texts = [text(c) for c in range(len(centers))]
    out = list(texts)
    for t in set(texts):
        group = [c for c in range(len(centers)) if texts[c] == t and formed[c]]
        if len(group) < 2:
            continue
        # same words on every axis: rank them on the axis where they differ most
        axis = max(_LABEL_ORDER, key=lambda k: (
            max(centers[c][k] for c in group) - min(centers[c][k] for c in group),
            -_LABEL_ORDER.index(k)))
        order = sorted(group, key=lambda c: (-centers[c][axis], c))
        for r, c in enumerate(order, 1):
            out[c] = f"{t} ({_AXIS[axis]} rank {r} of {len(group)})"
    return out
