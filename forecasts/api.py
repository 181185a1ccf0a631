"""The forecasts API (SPEC §15): a batch's forecast, a process's control chart."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint

from forecasts import services
from forecasts.schemas import ForecastSchema, TrendChartSchema, dump_forecast
from gmp_mes.http import db_session, roles_required

blp = Blueprint("forecasts_api", __name__, url_prefix="/api/v1",
                description="Expansion forecasts and control charts (advice; no status "
                            "changes)")


@blp.route("/batches/<batch_number>/forecast", methods=["GET"])
@blp.response(200, ForecastSchema)
@roles_required()
def batch_forecast(batch_number: str) -> dict[str, Any]:
    """From 3 counts on: the model, doubling time, 90 % prediction interval of the cells
    at the harvest day and the probability of reaching the target; fewer: `model` null
    and `reason`."""
    return dump_forecast(services.batch_forecast(db_session(), batch_number))


@blp.route("/processes/<code>/control-charts/<attribute>", methods=["GET"])
@blp.response(200, TrendChartSchema)
@roles_required()
def control_chart(code: str, attribute: str) -> services.TrendChart:
    """`attribute` `qc:<test>` or `step:<step>.<parameter>`: one point per batch (the
    newest 100), centre line and individuals-chart limits from the released batches'
    moving range (none on fewer than `min_baseline`), the Nelson rules 1-4 each point
    breaks."""
    return services.trend_chart(db_session(), code, attribute)
