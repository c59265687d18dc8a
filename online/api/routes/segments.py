"""Differentially private customer segments: sizes and mean features, on a privacy budget."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from online.privacy import BudgetExhausted, PrivacyBudget, release_segments, segment_inputs
from online.privacy.releases import last_release, save_release

from ..deps import PrivacyAccess, ReadAccess, ServiceDep, SettingsDep
from ..errors import ApiError, NotReady
from ..schemas import problem_responses

router = APIRouter(prefix="/v1/segments", tags=["segments"], dependencies=[ReadAccess],
                   responses=problem_responses(401, 403, 422, 429))


MIN_EPSILON = 1e-3


class PrivacyBudgetExhausted(ApiError):
    """The data dir's privacy budget has less epsilon left than the query asks for."""

    status, slug, title = 429, "privacy-budget-exhausted", "Privacy budget exhausted"

    def __init__(self, exc: BudgetExhausted) -> None:
        super().__init__(
            f"{exc} (epsilon). Every release spends budget for good: it does not come back "
            "with time or a restart; the data dir's total is set by "
            "PORTRAIT_PRIVACY_BUDGET_EPSILON. GET /v1/segments serves the last release.",
            field="epsilon", requested=exc.requested, remaining=exc.remaining, total=exc.total)


class SegmentStats(BaseModel):
    """One segment: noisy size, noisy sums and the means derived from them."""

    segment: str
    description: str
    size: int = Field(description="Noisy number of users (geometric noise, floored at 0).")
    mean: dict[str, float | None] = Field(
        description="Noisy mean per feature, clamped to its bounds (None: not applicable).")
    sum: dict[str, float | None] = Field(description="Noisy clamped sum per feature.")


class SegmentsReport(BaseModel):
    """A differentially private release over every user in the projection."""

    as_of: str | None = Field(description="Time the features are evaluated at (watermark).")
    offset: int = Field(description="Log offset the release reflects.")
    epsilon: float = Field(description="Privacy loss of this release (spent from the budget).")
    segments: list[SegmentStats]
    privacy: dict[str, Any] = Field(
        description="Unit of privacy, mechanisms, noise scales, bounds and the budget left.")


class SegmentsRequest(BaseModel):
    """A new private release: how much privacy loss it spends."""

    model_config = ConfigDict(extra="forbid")

    # a floor: below it the noise drowns every figure, and a denormal epsilon (5e-324)
    # underflows the budget split to 0 (a division by zero in the mechanisms)
    epsilon: float = Field(ge=MIN_EPSILON, allow_inf_nan=False,
                           description="Privacy loss to spend on this release, for good.")


class SpendNeedsPost(ApiError):
    """GET with ``epsilon``: a read never spends budget."""

    status, slug, title = 422, "spend-needs-post", "Spending budget is a POST"


class NoRelease(ApiError):
    """GET before any release: nothing to serve again."""

    status, slug, title = 404, "no-release", "No release yet"


@router.post("", summary="A new differentially private segment release (spends budget)",
             dependencies=[PrivacyAccess], responses=problem_responses(403, 429))
def post_segments(service: ServiceDep, settings: SettingsDep,
                  request: SegmentsRequest) -> SegmentsReport:
    """Noisy sizes and mean spend, orders and recency per segment (epsilon-DP per user).

    Each call spends `epsilon` from the data dir's privacy budget, for good: spent budget
    never comes back, and a retried POST spends again. Needs the `privacy` scope (a key from
    PORTRAIT_API_PRIVACY_KEYS). Once the budget is spent, calls are refused with 429.
    Segments follow a fixed public rule (order count and days since the last purchase); see
    `online/privacy/dp.py` for bounds and the budget split.
    """
    with service._lock.read():  # one consistent state; the noisy release runs unlocked
        projector = service.projector
        if projector is None:  # the lifespan has not opened the state yet
            raise NotReady("the projector is not loaded yet: retry once the server is ready")
        inputs = segment_inputs(projector.state, projector.watermark_us, projector.offset)
    try:
        body = release_segments(inputs, request.epsilon,
                                budget=PrivacyBudget.for_settings(settings))
    except BudgetExhausted as exc:
        raise PrivacyBudgetExhausted(exc) from None
    except ValueError as exc:  # rejected by the mechanisms before anything is spent
        raise ApiError(str(exc), field="epsilon") from None
    save_release(settings, body)
    return SegmentsReport.model_validate(body)


@router.get("", summary="The last segment release again (spends nothing)",
            responses=problem_responses(404))
def get_segments(
    settings: SettingsDep,
    epsilon: Annotated[str | None, Query(include_in_schema=False)] = None,
) -> SegmentsReport:
    """The last differentially private release (by POST or `portrait segments`), unchanged.

    Serving a release again costs no privacy, so this is safe to retry and needs only the
    read scope; a new release is `POST /v1/segments`. 404 before the first release.
    """
    if epsilon is not None:  # the old GET ?epsilon= spent budget; say where that went
        raise SpendNeedsPost("GET /v1/segments never spends budget: POST /v1/segments with "
                       '{"epsilon": E} (privacy scope) makes a new release', field="epsilon")
    body = last_release(settings)
    if body is None:
        raise NoRelease("no segment release yet: POST /v1/segments makes one")
    return SegmentsReport.model_validate(body)
