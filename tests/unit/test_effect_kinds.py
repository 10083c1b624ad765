"""Every kind of side effect a job journals has an undo in recovery, and recovery undoes
no kind the commands do not journal."""

from agent.runtime.recovery import UNDO, undo_for
from commands.base import EffectKind


def test_every_journalled_kind_has_an_undo() -> None:
    assert set(UNDO) == set(EffectKind)
    assert all(undo_for(kind.value) is UNDO[kind] for kind in EffectKind)


def test_a_kind_this_agent_does_not_know_has_no_undo() -> None:
    assert undo_for("made_by_a_newer_agent") is None
