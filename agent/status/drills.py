"""The retained drill state (`<p>/drills/<service>`) from a drill job's result."""

from schemas.messages import DrillPhase, DrillState
from schemas.results import DrillResult


def drill_state(result: DrillResult) -> DrillState:
    return DrillState(
        service=result.service,
        scenario=result.scenario,
        ok=result.ok,
        rto_s=result.rto_s,
        target_rto_s=result.target_rto_s,
        phases=[DrillPhase(name=p.name, seconds=p.seconds) for p in result.phases],
        at=result.at,
        at_ts=result.at_ts,
        error=result.error,
    )
