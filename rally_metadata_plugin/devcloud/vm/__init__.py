"""The devcloud's second guest backend: real QEMU virtual machines.

``--guests vm`` replaces the process guests (:mod:`..guests`, :mod:`..ssh`,
:mod:`..metadata`) with:

* :mod:`.image`: a CirrOS-like guest (Debian kernel, busybox, curl,
  dropbear) built once from the machine's Debian packages into a cache;
* :mod:`.qmp` and :mod:`.qemu`: one QEMU process per running instance and
  a small QMP client;
* :mod:`.network`: each compute host is a network namespace; floating IPs
  are routed from the devcloud's namespace to the host the guest runs on;
* :mod:`.metadata`: each host's metadata service at 169.254.169.254,
  answering only for the instances on that host;
* :mod:`.knobs`: the profiles' ``vm:`` section (QEMU migration settings);
* :mod:`.hypervisor`: the guests' life cycle and the real live migration
  the migration engine asks for;
* :mod:`.preflight`: what must be there, checked before anything starts.

Everything but the image and the preflight needs root (namespaces, taps,
iptables).
"""
