"""A port that goes away under a write (the board lost power with a USB adapter it powers, the cable
was pulled) is the same one line as one that goes away under a read: "connection lost". It was
"write failed: write failed: [Errno 5] Input/output error" (pyserial's text inside ours), seen by the
multi-fault campaign when a power cut landed while `elk flash` was writing."""

import os
import tty

import pytest

from elk.link import CMD, Link, LinkError


def test_a_port_that_closes_under_a_write_is_one_connection_lost_line():
    master, slave = os.openpty()
    tty.setraw(slave)
    name = os.ttyname(slave)
    link = Link(name, 0)
    try:
        os.close(master)  # the other end is gone: every write now fails with EIO
        with pytest.raises(LinkError) as e:
            link.request(CMD["INFO"])
    finally:
        link.close()
        os.close(slave)
    msg = str(e.value)
    assert msg == f"{name}: connection lost: the port closed (the emulated board stopped, or the cable was unplugged)"
