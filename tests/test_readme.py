"""The README's model table is generated from the published cards, so no number in it is typed."""

from pathlib import Path

from zoo import registry

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_model_table_matches_the_cards():
    text = README.read_text()
    begin, end = "<!-- models:begin -->\n", "<!-- models:end -->"
    assert begin in text and end in text, "README.md lost its model table markers"
    table = text.split(begin, 1)[1].split(end, 1)[0]
    assert table == registry.model_table(), (
        "README model table is stale: regenerate it with `python -m zoo.cli readme`")


def test_readme_opens_with_the_two_commands():
    lines = [line for line in README.read_text().splitlines() if line.startswith("make ")]
    assert [line.split()[:2] for line in lines[:2]] == [["make", "demo"], ["make", "test"]]
