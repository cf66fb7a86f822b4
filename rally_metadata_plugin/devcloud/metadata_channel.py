"""The link between the devcloud and its metadata server process.

Messages are JSON objects on a ``SOCK_SEQPACKET`` Unix socket pair: one
``sendmsg`` is one message, whole, whatever the number of threads sending,
and a listening socket travels beside its message as ``SCM_RIGHTS``. The
devcloud's end sends what the model decides (servers, outages, endpoints) and
asks questions (``"reply"`` names the answer's ``"id"``); the server's end
answers. Either side reading the end of the stream knows the other is gone:
the server exits when the devcloud dies, however it died.

The model's records cross as plain dictionaries (:func:`identity_fields`,
:func:`outage_fields` and back).
"""

from __future__ import annotations

import array
import dataclasses
import json
import socket
from typing import Any

from rally_metadata_plugin.core.faults import FaultKind
from rally_metadata_plugin.devcloud.model.outages import InstanceIdentity, Outage

#: Room for one message: an identity with its keys is about a kilobyte.
MAX_MESSAGE = 1 << 20


class ChannelClosed(EOFError):
    """The other end is gone."""


def pair() -> tuple[socket.socket, socket.socket]:
    """(the devcloud's end, the server's end); neither is inherited by
    other children."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send(sock: socket.socket, message: dict, fds: tuple[int, ...] = ()) -> None:
    data = json.dumps(message).encode()
    ancillary = ([(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                 if fds else [])
    try:
        sock.sendmsg([data], ancillary)
    except (BrokenPipeError, ConnectionResetError) as e:
        raise ChannelClosed(str(e)) from e


def receive(sock: socket.socket) -> tuple[dict, list[int]]:
    """The next message and the descriptors that came with it (the
    receiver owns them); :class:`ChannelClosed` at the end."""
    try:
        data, ancillary, _flags, _address = sock.recvmsg(
            MAX_MESSAGE, socket.CMSG_SPACE(4 * 4))
    except ConnectionResetError as e:
        raise ChannelClosed(str(e)) from e
    if not data:
        raise ChannelClosed("the other end closed the channel")
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received = array.array("i")
            received.frombytes(payload[:len(payload) - len(payload) % 4])
            fds.extend(received)
    return json.loads(data), fds


def identity_fields(identity: InstanceIdentity) -> dict[str, Any]:
    return dataclasses.asdict(identity)


def identity_from(fields: dict[str, Any]) -> InstanceIdentity:
    return InstanceIdentity(**{**fields,
                               "fixed_ips": tuple(fields["fixed_ips"]),
                               "floating_ips": tuple(fields["floating_ips"])})


def outage_fields(outage: Outage) -> dict[str, Any]:
    return {"server_id": outage.server_id, "migration_id": outage.migration_id,
            "host": outage.host, "kind": FaultKind(outage.kind).value,
            "start": outage.start, "end": outage.end,
            "decoy": (identity_fields(outage.decoy)
                      if outage.decoy is not None else None)}


def outage_from(fields: dict[str, Any]) -> Outage:
    decoy = fields["decoy"]
    return Outage(fields["server_id"], fields["migration_id"], fields["host"],
                  FaultKind(fields["kind"]), fields["start"], fields["end"],
                  identity_from(decoy) if decoy is not None else None)
