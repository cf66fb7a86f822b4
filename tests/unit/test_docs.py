"""The chart titles the user documentation names are the ones the scenario writes."""

import pathlib
import re

import pytest

from rally_metadata_plugin.core import report

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = ["README.md", "doc/usage.md"]

#: Every chart title, as the constants in core/report.py spell them.
TITLES = {value for name, value in vars(report).items()
          if name.endswith("_TITLE") and isinstance(value, str)}

_HEADING = re.compile(r"^(#+)\s+(.*)$")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+\.)\s+")
_BOLD = re.compile(r"\*\*(.+?)\*\*")


def reading_section(text):
    """The lines of the "Reading the report" section, up to the next heading of its level."""
    lines, level = [], None
    for line in text.splitlines():
        heading = _HEADING.match(line)
        if level is None:
            if heading and heading.group(2).strip() == "Reading the report":
                level = len(heading.group(1))
            continue
        if heading and len(heading.group(1)) <= level:
            break
        lines.append(line)
    assert level is not None, "no 'Reading the report' section"
    return lines


def charts_named(lines):
    """Bold text in list items: how the docs name charts ("- **Live migrations** (table)")."""
    names, in_item = [], False
    for line in lines:
        if _LIST_ITEM.match(line):
            in_item = True
        elif not line.strip() or not line.startswith(" "):
            in_item = False
        if in_item:
            names += _BOLD.findall(line)
    return names


def test_titles_are_found():
    assert len(TITLES) == 8 and report.PER_MIGRATION_TITLE in TITLES


@pytest.mark.parametrize("doc", DOCS)
def test_every_chart_the_docs_name_exists(doc):
    named = charts_named(reading_section((ROOT / doc).read_text()))
    assert named
    unknown = [name for name in named if name not in TITLES]
    assert unknown == [], f"{doc} names charts that core/report.py does not write"


@pytest.mark.parametrize("doc", DOCS)
def test_the_docs_name_every_chart(doc):
    named = set(charts_named(reading_section((ROOT / doc).read_text())))
    assert TITLES - named == set()


def test_section_parsing():
    text = "# A\n## Reading the report\nThe **guest** clock.\n- **X**, **Y** and\n  **Z**\n" \
           "plain **W**\n## Next\n- **V**\n"
    assert charts_named(reading_section(text)) == ["X", "Y", "Z"]
