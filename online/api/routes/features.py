"""GET /v1/features: the feature catalogue (names a profile request may ask for)."""

from __future__ import annotations

from fastapi import APIRouter

from online import catalogue

from ..deps import ReadAccess
from ..schemas import FeatureInfo, problem_responses

router = APIRouter(prefix="/v1/features", tags=["features"], dependencies=[ReadAccess],
                   responses=problem_responses(401, 403))


@router.get("")
def list_features() -> list[FeatureInfo]:
    """Every served feature: name, dtype, unit, feature view (theme), kind and description."""
    return [
        FeatureInfo(name=f.name, dtype=f.dtype, unit=f.unit, view=f.view, kind=f.kind,
                    description=f.description)
        for f in catalogue.FEATURES
    ]  # fmt: skip
