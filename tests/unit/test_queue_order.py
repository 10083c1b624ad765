from agent.runtime.queue_order import Waiting, runnable


def waiting(job_id: str, *volumes: str) -> Waiting:
    return Waiting(job_id, frozenset(volumes))


def test_jobs_on_different_volumes_start_together_up_to_the_limit() -> None:
    queue = [waiting("a", "v1"), waiting("b", "v2"), waiting("c", "v3")]
    assert runnable(queue, busy=set(), free_slots=2) == ["a", "b"]


def test_a_job_never_starts_on_a_busy_volume() -> None:
    queue = [waiting("a", "v1"), waiting("b", "v2")]
    assert runnable(queue, busy={"v1"}, free_slots=2) == ["b"]


def test_two_queued_jobs_on_one_volume_do_not_start_together() -> None:
    queue = [waiting("a", "v1"), waiting("b", "v1", "v2")]
    assert runnable(queue, busy=set(), free_slots=2) == ["a"]


def test_a_waiting_job_reserves_its_volumes_against_later_jobs() -> None:
    queue = [waiting("all", "v1", "v2", "v3"), waiting("single", "v2")]
    assert runnable(queue, busy={"v1"}, free_slots=2) == []


def test_read_only_jobs_lock_nothing() -> None:
    queue = [waiting("list"), waiting("snap", "v1")]
    assert runnable(queue, busy={"v9"}, free_slots=2) == ["list", "snap"]


def test_no_free_slot_starts_nothing() -> None:
    assert runnable([waiting("a", "v1")], busy=set(), free_slots=0) == []
