"""Every dependency pyproject.toml names is pinned in constraints.txt, which every install
uses (deploy/python-env.sh): an upstream release cannot change what a fresh machine gets."""

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_dependency_is_pinned_to_one_version() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    names = {_normal(re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0]) for spec in wanted}
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[_normal(name)] = version
    assert all(version for version in pins.values()), "every line pins with =="
    assert sorted(names - pins.keys()) == []


def test_every_install_goes_through_the_constraints() -> None:
    script = (REPO / "deploy" / "python-env.sh").read_text()
    assert '-c "$repo/constraints.txt"' in script
