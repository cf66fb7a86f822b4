"""The pure core of the guest meter: probe script rendering and log analysis.

Nothing in this package does I/O or imports Rally, so it can be tested in
isolation and reused by the CLI, the Rally plugins and the devcloud.
"""
