"""The metadata service past its connection limit: a client that already
left gets nothing, and no traceback (devcloud/metadata_server.py _Overloaded)."""

from __future__ import annotations

import asyncio
import logging
from unittest import mock

from rally_metadata_plugin.devcloud.metadata_server import _OVERLOADED, _Overloaded


def test_a_client_still_there_gets_503_then_fin():
    async def go():
        transport = mock.Mock()
        protocol = _Overloaded()
        protocol.connection_made(transport)
        transport.write.assert_called_once_with(_OVERLOADED)
        transport.write_eof.assert_called_once_with()
        transport.abort.assert_not_called()
        protocol.connection_lost(None)
    asyncio.run(go())


def test_a_client_gone_before_the_accept_is_aborted_quietly(caplog):
    async def go():
        transport = mock.Mock()
        transport.write_eof.side_effect = OSError(107, "not connected")
        protocol = _Overloaded()
        protocol.connection_made(transport)   # raised, and asyncio logged it
        transport.abort.assert_called_once_with()
        protocol.connection_lost(None)
    with caplog.at_level(logging.DEBUG):
        asyncio.run(go())
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
