"""`dashboards_export` and `dashboards_import`: Grafana dashboards through its HTTP API.

Export reads every dashboard (`/api/search?type=dash-db`, then each by uid) into the day's
backup set as `grafana-dashboards/<uid>.json` and, when a git repository is configured,
commits what changed there: one commit per run, none when nothing changed (so it can run
often: the runbook's "on change"). Import writes a set's dashboards back, overwriting,
each into the folder it was in.
"""

from datetime import datetime

from commands.base import JobContext, Outcome, Plan, Step
from commands.export import set_name_for
from commands.inventory import Inventory
from commands.ports import DashboardFiles, Grafana
from schemas.commands import DashboardsExportCommand, DashboardsImportCommand
from schemas.errors import InvalidCommand, NotFound
from schemas.results import DashboardsExportResult, DashboardsImportResult, ExportedDashboard

# What a dashboards job locks: no volume has a colon in its name.
LOCK = "grafana:dashboards"
NOT_CONFIGURED = "Grafana is not configured (`[grafana] url`) - at `$.action`"


def _ports(ctx: JobContext) -> tuple[Grafana, DashboardFiles]:
    grafana, files = ctx.ports.grafana, ctx.ports.dashboard_files
    if grafana is None or files is None:
        raise InvalidCommand(NOT_CONFIGURED)
    return grafana, files


def _require_configured(inventory: Inventory) -> None:
    if not inventory.grafana_url:
        raise InvalidCommand(NOT_CONFIGURED)


def plan_export(command: DashboardsExportCommand, inventory: Inventory, now: datetime) -> Plan:
    _require_configured(inventory)
    set_name = set_name_for(now)
    return Plan(
        targets=(LOCK,),
        steps=(
            Step("read_dashboards", inventory.grafana_url),
            Step("write_dashboards", set_name, {"folder": "grafana-dashboards"}),
            Step("commit_changes", "git", {"if": "a git_repo is configured"}),
        ),
    )


async def execute_export(
    command: DashboardsExportCommand, plan: Plan, ctx: JobContext
) -> Outcome[DashboardsExportResult]:
    grafana, files = _ports(ctx)
    set_name = plan.steps[1].target
    uids = await grafana.dashboard_uids()
    dashboards = []
    for index, uid in enumerate(uids):
        ctx.checkpoint()
        ctx.progress("reading dashboards", index, len(uids), unit="steps")
        dashboards.append(await grafana.dashboard(uid))
    ctx.progress("writing dashboards")
    saved = await files.save(set_name, dashboards)
    listed = [
        ExportedDashboard(
            uid=d.uid,
            title=d.title,
            folder_uid=d.folder_uid,
            version=d.version,
            file=saved.files[d.uid][0],
            sha256=saved.files[d.uid][1],
        )
        for d in dashboards
    ]
    result = DashboardsExportResult(
        set=set_name, dashboards=listed, commit=saved.commit, changed=list(saved.changed)
    )
    return Outcome(result, succeeded=[LOCK])


def plan_import(command: DashboardsImportCommand, inventory: Inventory, now: datetime) -> Plan:
    _require_configured(inventory)
    uids = "all" if command.uids == "all" else sorted(set(command.uids))
    return Plan(
        targets=(LOCK,),
        steps=(Step("save_dashboards", command.set, {"uids": uids, "overwrite": True}),),
    )


async def execute_import(
    command: DashboardsImportCommand, plan: Plan, ctx: JobContext
) -> Outcome[DashboardsImportResult]:
    grafana, files = _ports(ctx)
    dashboards = await files.load(command.set)
    if command.uids != "all":
        have = {d.uid for d in dashboards}
        missing = sorted(set(command.uids) - have)
        if missing:
            raise NotFound(
                f"backup set {command.set} has no dashboard {', '.join(missing)} - at `$.uids`"
            )
        dashboards = [d for d in dashboards if d.uid in command.uids]
    imported: dict[str, str] = {}
    for index, dashboard in enumerate(dashboards):
        ctx.checkpoint()
        ctx.progress("importing dashboards", index, len(dashboards), unit="steps")
        await grafana.save(dashboard)
        imported[dashboard.uid] = dashboard.folder_uid
    return Outcome(DashboardsImportResult(set=command.set, imported=imported), succeeded=[LOCK])
