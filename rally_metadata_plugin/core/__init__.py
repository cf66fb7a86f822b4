"""The pure core: what the project knows, with no I/O and no Rally imports.

* :mod:`.probe_script`: the guest meter (a POSIX ``sh`` script) and the shell
  commands that drive it;
* :mod:`.log_analysis`: meter log -> outages with error bounds;
* :mod:`.network_probe`: the network meter's probes of the guest's address
  from the Rally host (ICMP or TCP connect), their schedule and failure reasons;
* :mod:`.clock_mapping`: controller clock <-> guest clock, guest pause;
* :mod:`.report`: the figures and Rally output charts of one iteration, and
  reading them back from a Rally export;
* :mod:`.regression`: statistics that compare runs;
* :mod:`.faults`: the fault vocabulary (:class:`~.faults.FaultKind`) and what
  each fault looks like from the guest.

Everything here can be tested in isolation and is reused by the adapters, the
Rally plugins, the offline tools and the devcloud.
"""
