"""Offline tools: the ``rally-metadata-meter`` command and run comparison.

* :mod:`.main`: ``rally-metadata-meter script|analyze|compare``;
* :mod:`.compare`: reads Rally exports or task UUIDs and compares runs;
* :mod:`.compare_html`: the self-contained HTML page of a comparison.
"""

from rally_metadata_plugin.cli.main import main

__all__ = ["main"]
