"""The cloud model: state and rules of the devcloud, no HTTP, no sockets.

One module per part of the cloud, each with its dataclasses and a small
backend class; :class:`.backend.CloudBackend` composes them and owns the
lock and the change notification:

* :mod:`.identity`: keystone's projects, users, tokens (and the
  :class:`~.identity.Caller` of a request);
* :mod:`.services`: nova's services and compute hosts (enabled/disabled,
  up/down: where the scheduler may place and migrate);
* :mod:`.compute`: nova's flavors, images, keypairs, servers and server
  groups;
* :mod:`.migrations`: live migrations and nova's records of them
  (:mod:`.conductor` has the pre-checks);
* :mod:`.actions`: nova's instance actions and their events;
* :mod:`.outages`: the metadata (identity, outages) served to a server
  while it moves;
* :mod:`.network`: neutron's networks, subnets and ports;
* :mod:`.server_ports`: the ports of servers, what compute asks of the
  network;
* :mod:`.l3`: neutron's routers and floating IPs;
* :mod:`.security_groups`: neutron's security groups and rules;
* :mod:`.common`: ids, timestamps, scoped lookups.

Backends take typed arguments (never a request body) and raise the typed
errors of :mod:`..exceptions`; the HTTP layer (:mod:`..api`) parses,
validates and serialises. Rules follow what the real services do where
rally or the clients depend on it: resources are scoped by the token's
project, every neutron resource has a project, a booted server owns a
``compute:nova`` port, a floating IP associated to that port shows in the
server's addresses, and so on. A call from one part into another is a named
method of the part called, documented there.
"""
