"""devcloud: a local simulated OpenStack for running the task without a cloud.

Real rally, rally-openstack and the python-*clients talk to it over HTTP on
loopback. The tree:

* :mod:`.model`: the cloud's state and rules, one module per service
  (identity, compute, live migration, network, ...), composed by
  :class:`.model.backend.CloudBackend`; no HTTP, no sockets;
* :mod:`.api`: the HTTP layer (keystone, nova, neutron, glance and the
  devcloud's own ``/devcloud`` endpoints): parses requests, calls the model
  with typed arguments, serialises; :mod:`.exceptions` are the errors both
  raise, each in its service's wire format;
* adapters that follow the model: :mod:`.guests` (a server's processes),
  :mod:`.ssh` (its sshd) and :mod:`.metadata` (its metadata service);
* :mod:`.migration_engine`: the live-migration engine, driven by a fault profile
  (:mod:`.profiles`), and the ground truth it records;
* :mod:`.timers` (one timer thread), :mod:`.boottime` (the clock every
  instant is taken on), :mod:`.serving`, :mod:`.keys`;
* :mod:`.cloud` assembles it all, :mod:`.config` configures it, :mod:`.cli`
  runs it from a shell.
"""
