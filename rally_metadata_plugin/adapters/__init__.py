"""Adapters: the code that talks to a guest or to a cloud.

* :mod:`.guest_meter`: the guest meter driven over SSH (Rally's ``sshutils``,
  paramiko);
* :mod:`.guest_ssh`: the SSH connection to the guest, Rally's ``sshutils.SSH``
  without its leaks and its one-second handshake;
* :mod:`.network_meter`: the network meter, a process of its own probing the
  guest's address from the Rally host;
* :mod:`.live_migration`: nova's live-migration API through novaclient.

They turn I/O into the pure core's types and failures into sentences a user
can act on; they import no Rally task machinery.
"""
