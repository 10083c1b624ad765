"""Recovery's undo of a drill project: removed when the drill made it (or was making it),
left alone when the entry was only `intended`; the adapter refuses any other project."""

from typing import cast

import pytest

from agent.incus.client import IncusClient
from agent.runtime.recovery import undo_for
from agent.runtime.store import Effect
from commands.base import EffectKind
from commands.ports import Incus
from schemas.config import IncusConfig
from schemas.errors import InvalidCommand

PROJECT = "atlas-drill-20261202-050423-3882a7"


class Recording:
    def __init__(self) -> None:
        self.deleted: list[str] = []

    async def delete_drill_project(self, project: str) -> None:
        self.deleted.append(project)


def effect(state: str) -> Effect:
    return Effect(1, "j1", EffectKind.DRILL_PROJECT, PROJECT, {"service": "g", "state": state})


@pytest.mark.anyio
@pytest.mark.parametrize("state", ["creating", "created"])
async def test_a_drill_project_the_job_made_is_removed(state: str) -> None:
    incus = Recording()
    undo = undo_for(EffectKind.DRILL_PROJECT)
    assert undo is not None
    what = await undo(cast(Incus, incus), effect(state))
    assert incus.deleted == [PROJECT]
    assert PROJECT in what


@pytest.mark.anyio
async def test_a_drill_project_only_intended_is_left_alone() -> None:
    incus = Recording()
    undo = undo_for(EffectKind.DRILL_PROJECT)
    assert undo is not None
    what = await undo(cast(Incus, incus), effect("intended"))
    assert incus.deleted == []
    assert "left as is" in what


@pytest.mark.parametrize("project", ["default", "atlas-it-1234", "atlas-drill-x"])
def test_the_adapter_removes_no_project_but_a_drill_project(project: str) -> None:
    client = IncusClient(IncusConfig(socket="/nonexistent/unix.socket"))
    with pytest.raises(InvalidCommand, match="not a drill project"):
        client.remove_drill_project(project)
