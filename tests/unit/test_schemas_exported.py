"""The JSON Schema files in schemas/ say what the Structs export."""

import json

import pytest

from schemas.export import SCHEMAS, clean_descriptions, path_for, schema_for


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_file_matches_the_types(name: str) -> None:
    # Compared as JSON values: key order and indentation are not part of a schema.
    assert json.loads(path_for(name).read_text()) == schema_for(name), (
        f"{path_for(name).name} drifted from the types: run `python -m schemas.export`"
    )


def test_descriptions_do_not_depend_on_docstring_indentation() -> None:
    indented = {"description": "First line:\n    second line."}
    flush = {"description": "First line:\nsecond line."}
    assert clean_descriptions(indented) == clean_descriptions(flush)
