"""What every test module shares: the anyio backend, the `integration` marker on the suites
that need the real Incus daemon and Mosquitto, and a broker of the module's own."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import Broker, running_broker

# The suites that run against the real Incus daemon and a real Mosquitto.
REAL_SUITES = ("tests/integration", "tests/faults")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(suite in Path(item.fspath).as_posix() for suite in REAL_SUITES):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A Mosquitto of the module's own, on a free port."""
    with running_broker(tmp_path_factory.mktemp("broker")) as running:
        yield running
