"""Named fault points for the fault suite: the agent kills itself where a test asks.

`ATLAS_BACKUP_FAULT=<point>` makes the agent SIGKILL itself when it reaches that point,
as a power cut would. Unset in production, where each point costs one dict lookup.
"""

import os
import signal

ENV = "ATLAS_BACKUP_FAULT"


def fault_point(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
