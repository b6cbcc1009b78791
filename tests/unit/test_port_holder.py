"""Who holds a port, read from /proc while the holder opens and closes files (#28 item 9: under
load, a test's listener was not found, the sandbox took it for its own PostgreSQL going away,
waited 15 s and failed with "timed out waiting for port … to be free" instead of moving)."""

from __future__ import annotations

import subprocess
import sys
import time

from weltgewebe_ops.core import procs

# a listener above 40 files it keeps closing and opening again: a file listed by /proc may be
# closed before it is read, and the holder must still be found
BUSY_HOLDER = """
import os, socket
files = [os.open("/dev/null", os.O_RDONLY) for _ in range(40)]
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
print(listener.getsockname()[1], flush=True)
while True:
    for i, fd in enumerate(files):
        os.close(fd)
        files[i] = os.open("/dev/null", os.O_RDONLY)
"""


def test_the_holder_of_a_port_is_found_while_it_opens_and_closes_files():
    holder = subprocess.Popen([sys.executable, "-c", BUSY_HOLDER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(holder.stdout.readline())
        found = [procs.port_holder(port) for _ in range(100)]
        missed = sum(1 for f in found if f is None or f[0] != holder.pid)
        assert missed == 0, f"the holder (PID {holder.pid}) was missed {missed} of 100 times"
        assert "socket.socket()" in found[0][1], "its command line comes with it"
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    assert procs.port_holder(port) is None, "nobody listens once the holder is gone"
