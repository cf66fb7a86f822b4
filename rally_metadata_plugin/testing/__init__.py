"""Test support: run the real guest meter against injected metadata faults.

Shared by the functional tests (``tests/functional``) and the benchmark
(``tools/bench_meter.py``); not used by the plugins or the devcloud.

* :mod:`.guest`: a fake CirrOS guest (busybox or dash ``sh``, busybox
  applets, busybox wget and/or curl, nothing else on ``PATH``) that installs,
  starts, reads and stops the meter with the scenario's own shell commands;
* :mod:`.metadata_server`: a fake metadata service that injects any
  :class:`~rally_metadata_plugin.core.faults.FaultKind` on demand, records
  the truth on ``CLOCK_BOOTTIME``, and matches it with the analysis;
* :mod:`.netns`: a throw-away network namespace (root), where the service
  listens on 169.254.169.254:80 and ``drop`` is an iptables rule.

It reuses the devcloud's clock (:mod:`rally_metadata_plugin.devcloud.boottime`)
and ``/proc`` reader (:mod:`rally_metadata_plugin.devcloud.procfs`).  It needs
busybox (and dash, curl, root, ``ip``, ``iptables`` for some cases); the
``*_unavailable()`` functions say what is missing.  Nothing here imports
pytest.
"""
