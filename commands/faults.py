"""Named fault points for the fault suite: the agent kills itself where a test asks.

`ATLAS_BACKUP_FAULT=<point>` makes the agent SIGKILL itself when it reaches that point,
as a power cut would; `ATLAS_BACKUP_FAULT=<point>:term` sends it SIGTERM there instead,
as systemd does on a stop, so the graceful shutdown starts at a known step; and
`<point>:stop` sends it SIGSTOP, so a test can change the world there (take a name the
job is about to use) and let it go on with SIGCONT. Unset in production, where each point
costs one dict lookup.
"""

import os
import signal

ENV = "ATLAS_BACKUP_FAULT"


def fault_point(name: str) -> None:
    wanted = os.environ.get(ENV)
    if wanted == name:
        os.kill(os.getpid(), signal.SIGKILL)
    elif wanted == f"{name}:term":
        os.kill(os.getpid(), signal.SIGTERM)
    elif wanted == f"{name}:stop":
        os.kill(os.getpid(), signal.SIGSTOP)
