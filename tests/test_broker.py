"""The simulated site's broker is its own: never another process that happens to hold its port.

Two simulated sites on one broker (one restarted onto a port the other had let go) mix their
records: each decodes the other's with its own registry's schema ids, and a CSC that is
plainly running seems never to have reported a summary state.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from sim.broker import BrokerError, TansuBroker


@pytest.fixture
def listener() -> Iterator[int]:
    """A port some other process listens on (here, a plain socket of this one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


async def _answers_kafka(broker: TansuBroker) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


async def test_a_port_another_process_listens_on_is_refused_not_mistaken_for_tansu(
    listener: int,
) -> None:
    broker = TansuBroker(port=listener)
    with pytest.raises(BrokerError, match=f"127.0.0.1:{listener}: another process holds the port"):
        await broker.start()
    assert not broker.running


async def test_a_chosen_port_taken_before_tansu_binds_it_moves_to_another(listener: int) -> None:
    broker = TansuBroker()
    broker.port = listener  # chosen free, then taken by someone else before tansu started
    async with broker:
        assert broker.port != listener
        assert broker.running
        assert await _answers_kafka(broker) == []


async def test_a_restart_onto_a_port_taken_meanwhile_fails_rather_than_joining_the_other() -> None:
    async with TansuBroker() as broker:
        port = broker.port
        await broker.stop()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen()
            # Clients know the old address: the broker may not move on a restart.
            with pytest.raises(BrokerError, match="another process holds the port"):
                await broker.start()
        assert broker.port == port
        assert not broker.running
