"""atlas-backup: the agent (`atlas-backup agent`) and the client that drives it over MQTT."""

from __future__ import annotations

import argparse
import sys

from agent import __version__
from client.flags import add_flags
from client.requests import JOB_ACTIONS

EXAMPLES = """exit codes: 0 succeeded, 1 the job failed (also partial, cancelled, interrupted),
2 rejected (the error names the field), 3 agent offline or no answer, 130 Ctrl-C.

examples:
  atlas-backup snapshot grafana01-data
  atlas-backup export all --encrypt
  atlas-backup restore grafana01-data backup-20261128-020000 --confirm grafana01-data
  atlas-backup list
  atlas-backup status --json
"""


def _job_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--id", help="the request id, which becomes the job id")
    parser.add_argument("--json", action="store_true", help="print the job's final state")
    parser.add_argument("--no-wait", action="store_true", help="print the response, do not wait")
    parser.add_argument("--dry-run", action="store_true", help="print the plan; nothing changes")
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for the answer (10)"
    )
    add_flags(parser)


def _confirm_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--confirm",
        metavar=what,
        help=f"{what}, to confirm (asked for on a terminal when not given)",
    )


def _volumes(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("volumes", nargs="*", metavar="VOLUME", help=f"`all` or names ({default})")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="atlas-backup",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    root.add_argument("--version", action="version", version=__version__)
    sub = root.add_subparsers(dest="action", required=True, metavar="COMMAND")
    agent = sub.add_parser("agent", help="run the agent in the foreground")
    agent.add_argument("--config", required=True, help="the TOML config file")
    _backup_commands(sub)
    _recovery_commands(sub)
    _view_commands(sub)
    assert set(JOB_ACTIONS) <= set(sub.choices)
    return root


def _job(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str
) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help_text, description=help_text)


def _backup_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _job(sub, "snapshot", "snapshot volumes")
    p.add_argument("volumes", nargs="+", metavar="VOLUME", help="`all` or names")
    p.add_argument("--name", help="the snapshot name (default backup-YYYYmmdd-HHMMSS)")
    p.add_argument("--quiesce", action=argparse.BooleanOptionalAction, default=None)
    _job_options(p)

    p = _job(sub, "export", "export volumes to tarballs in the backup directory")
    p.add_argument("volumes", nargs="+", metavar="VOLUME", help="`all` or names")
    p.add_argument("--mode", choices=("stop", "snapshot"))
    p.add_argument("--compression", choices=("zstd", "gzip", "none"))
    p.add_argument("--encrypt", action=argparse.BooleanOptionalAction, default=None)
    _job_options(p)


def _recovery_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _job(sub, "restore", "restore a volume to a snapshot (destructive)")
    p.add_argument("volume")
    p.add_argument("snapshot")
    _confirm_option(p, "VOLUME")
    _job_options(p)

    p = _job(sub, "import", "import an exported backup as a new volume, or replace one")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--backup", help="a catalog entry <set>/<volume>")
    source.add_argument("--file", help="a tarball, relative to the backup directory")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--as", dest="as_", metavar="VOLUME", help="import under a new name")
    target.add_argument("--replace", action="store_true", help="replace the volume (destructive)")
    _confirm_option(p, "VOLUME")
    _job_options(p)

    p = _job(sub, "verify", "verify backups: checksums, archive, decryption, a restore test")
    _volumes(p, "their newest backups; default all")
    p.add_argument("--backup", help="one catalog entry <set>/<volume>")
    p.add_argument("--restore-test", action="store_true")
    _job_options(p)

    p = _job(sub, "prune", "remove old backups per the retention policy")
    _volumes(p, "default all")
    _job_options(p)

    p = _job(sub, "drill", "run a disaster-recovery drill of a service")
    p.add_argument("service")
    p.add_argument("--scenario", choices=("snapshot", "tarball"))
    _job_options(p)

    p = _job(sub, "rebuild", "rebuild every volume from a backup set (destructive)")
    p.add_argument("set", help="the backup set (date folder)")
    _confirm_option(p, "all")
    _job_options(p)


def _view_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _job(sub, "list", "list volumes, their snapshots and exported backups")
    _volumes(p, "default all")
    _job_options(p)

    p = _job(sub, "status", "the agent, every volume's state, running jobs and schedules")
    _job_options(p)

    p = _job(sub, "cancel", "cancel a job and wait until it has stopped")
    p.add_argument("job")
    _job_options(p)

    p = sub.add_parser("watch", help="a live table of every volume and running job")
    p.add_argument("--all-jobs", action="store_true", help="also the jobs that have ended")
    add_flags(p)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.action == "agent":
        from agent.cli import main as agent_main  # the runtime, only for the agent itself

        return agent_main(["agent", "--config", args.config])
    if args.action == "watch":
        from client.watch import watch

        return watch(args)
    from client.run import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
