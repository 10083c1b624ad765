"""The client's exit codes (README, "CLI")."""

OK = 0
# The job ended in any state but `succeeded`: failed, partial, cancelled, interrupted.
FAILED = 1
# The command was refused: by the agent (the error names the field), by the argument
# parser, or by the client's settings.
REJECTED = 2
# The broker cannot be reached, the agent is offline (its retained state says so or is
# absent), or no answer came within `--timeout`.
UNREACHABLE = 3
# Ctrl-C while following a job: the job goes on.
STOPPED_FOLLOWING = 130


def for_state(state: str) -> int:
    return OK if state == "succeeded" else FAILED


class ClientError(Exception):
    """Root of the client's own errors; each says the exit code it ends the run with."""

    exit_code = REJECTED
