"""elk-fw as it runs on a Linux board: the UART is a tty device path (`--uart /dev/ttyX`), configured
raw by the firmware with termios, and SET_BAUD changes the device's rate. Here the "device" is the
slave of a real pty; a copier joins its master to a second pty whose slave the host opens."""

import os
import select
import subprocess
import threading
import tty

from conftest import ROOT
from elk.link import connect


def test_firmware_serves_a_tty_device_and_sets_its_baud(host_build, tmp_path):
    m1, s1 = os.openpty()  # board side: elk-fw opens the slave by path
    m2, s2 = os.openpty()  # host side
    tty.setraw(s2)
    dev, port = os.ttyname(s1), os.ttyname(s2)
    stop = threading.Event()

    def copy():
        peer = {m1: m2, m2: m1}
        while not stop.is_set():
            for fd in select.select(list(peer), [], [], 0.05)[0]:
                try:
                    os.write(peer[fd], os.read(fd, 65536))
                except OSError:
                    pass

    t = threading.Thread(target=copy, daemon=True)
    t.start()
    fw = subprocess.Popen([str(ROOT / "build/host/elk-fw"), "--uart", dev, "--flash", str(tmp_path / "f.bin"),
                           "--flash-mb", "8", "--baud", "115200", "--quiet"], stdin=subprocess.DEVNULL)
    try:
        with connect(port, 115200) as link:
            assert link.hello_reply["baud"] == 115200
            assert link.set_baud(460800) is True
            info = link.info()
            assert info.baud == 460800 and info.flash_bytes == 8 << 20
        import termios

        assert termios.tcgetattr(s1)[4] == termios.B460800  # the firmware set the device's output speed
        assert fw.poll() is None
    finally:
        fw.terminate()
        fw.wait(timeout=5)
        stop.set()
        t.join()
        for fd in (m1, s1, m2, s2):
            os.close(fd)
