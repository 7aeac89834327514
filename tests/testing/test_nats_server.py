"""The test support's ``free_port``: the ports of servers started one after another."""

from __future__ import annotations

from tidings.testing.nats_server import free_port


def test_free_port_never_hands_a_process_the_same_port_twice() -> None:
    """A server's client and monitoring ports, a cluster's nine ports, a broker killed and
    restarted on its port: each must be a port of its own. The kernel gives a port just
    closed out again (a 3-node cluster had two equal ports about 3 times in 1,000), so in
    2,000 ports a repeat is all but certain unless ``free_port`` avoids it."""
    ports = [free_port() for _ in range(2_000)]
    assert len(set(ports)) == len(ports)
