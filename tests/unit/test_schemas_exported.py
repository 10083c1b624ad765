"""The JSON Schema files in schemas/ are exactly what the Structs export."""

import pytest

from schemas.export import SCHEMAS, path_for, render


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_file_matches_the_types(name: str) -> None:
    assert path_for(name).read_text() == render(name), (
        f"{path_for(name).name} drifted from the types: run `python -m schemas.export`"
    )
