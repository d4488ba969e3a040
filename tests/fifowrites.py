"""How many writes one `ha_clustermsg` message reaches a FIFO in.

`PROGRAM` sends one message with the `ha_clustermsg` of the shell library in `$SHELLFUNCS`
(default: the LB's `/etc/ha.d/shellfuncs`) into a new FIFO, its lines coming 0.3 s apart (a
writer the scheduler held up between two lines), and prints what each read of the FIFO got
(Python's repr, one line per read; a read that returns while the writer still runs ends a
write), then the writer's exit code. The unit tests run it here, the lab tests on an LB
(`python3 -c`).
"""

from __future__ import annotations

import ast

PROGRAM = r"""
import os, select, shutil, subprocess, tempfile, time
tmp = tempfile.mkdtemp()
fifo = os.path.join(tmp, "fifo")
os.mkfifo(fifo)
fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
lib = os.environ.get("SHELLFUNCS", "/etc/ha.d/shellfuncs")
send = '. "$SHELLFUNCS"; (echo t=a; sleep 0.3; echo b=c) | ha_clustermsg'
env = {**os.environ, "HA_FIFO": fifo, "SHELLFUNCS": lib}
proc = subprocess.Popen(["sh", "-c", send], env=env)
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    done = proc.poll() is not None
    if select.select([fd], [], [], 0.05)[0] and (data := os.read(fd, 65536)):
        print(repr(data))
    elif done:
        break
print("rc", proc.wait(timeout=5))
os.close(fd)
shutil.rmtree(tmp)
"""
MESSAGE = b">>>\nt=a\nb=c\n<<<\n"


def reads(output: str) -> list[bytes]:
    """The reads `PROGRAM` printed; AssertionError unless the writer succeeded."""
    *lines, rc = output.splitlines()
    assert rc == "rc 0", output
    return [ast.literal_eval(ln) for ln in lines]
