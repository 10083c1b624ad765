"""One command from send to final state: check the agent is online, send it with our
Response Topic, wait for the answer, follow the job with a progress bar, print the outcome."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from client import exits
from client.link import FINAL_STATES, Link
from client.requests import build, confirm_target
from client.settings import Settings, SettingsError, resolve


def _error(text: str) -> None:
    print(f"atlas-backup: {text}", file=sys.stderr)


def ask_confirm(command: dict[str, Any], expected: str, *, interactive: bool) -> str | None:
    """Ask on the terminal for the `confirm` value of a destructive command; None when
    there is no terminal (the agent then rejects it naming `$.confirm`)."""
    if not interactive:
        return None
    what = expected or "the volume"
    print(
        f"{command['action']} is destructive. Type {what!s} to go on: ",
        end="",
        file=sys.stderr,
        flush=True,
    )
    try:
        return input().strip()
    except EOFError:
        return None


def topic_for(settings: Settings, link: Link, action: str) -> str:
    if action in settings.admin_actions:
        return link.topics.admin_command
    return link.topics.command


def run(args: argparse.Namespace) -> int:
    try:
        settings = resolve(args)
    except SettingsError as exc:
        _error(str(exc))
        return exc.exit_code
    command = build(args)
    expected = confirm_target(command)
    if expected is not None:
        confirm = args.confirm
        if confirm is None:
            confirm = ask_confirm(command, expected, interactive=sys.stdin.isatty())
        if confirm is not None:
            command["confirm"] = confirm
    link = Link(settings)
    try:
        link.connect()
        try:
            return _exchange(link, settings, args, command)
        finally:
            link.close()
    except exits.ClientError as exc:
        _error(str(exc))
        return exc.exit_code


def _exchange(link: Link, settings: Settings, args: argparse.Namespace, cmd: dict[str, Any]) -> int:
    job_id = str(cmd["id"])
    wants_volumes = cmd["action"] in ("list", "status")
    state_topics = [link.topics.agent, link.topics.job(job_id)]
    if wants_volumes:
        state_topics.append(link.topics.volume("+"))
    link.subscribe(*state_topics)
    link.subscribe(link.reply_topic, qos=1)  # after its SUBACK, every retained state is here
    link.pump(0)
    if not link.seen.agent_online:
        said = "says offline" if link.seen.agent else "is absent"
        _error(f"the agent is offline ({link.topics.agent} {said}); nothing was sent")
        return exits.UNREACHABLE
    correlation = link.send(topic_for(settings, link, cmd["action"]), cmd)
    if not link.wait_until(lambda s: correlation in s.responses, args.timeout):
        _error(f"no answer from the agent within {args.timeout:g} s (job id {job_id})")
        return exits.UNREACHABLE
    response = link.seen.responses[correlation]
    if response.get("status") != "accepted":
        return _rejected(link, args, cmd, response)
    if args.no_wait:
        print(json.dumps(response))
        return exits.OK
    if args.dry_run and not args.json:
        _print_plan(response)
    job_id = str(response.get("job") or job_id)
    if job_id != cmd["id"]:
        link.subscribe(link.topics.job(job_id))
    try:
        job = _follow(link, job_id, show=not args.json)
    except KeyboardInterrupt:
        _error(f"stopped following; job {job_id} goes on (atlas-backup cancel {job_id})")
        return exits.STOPPED_FOLLOWING
    if job is None:
        _error(f"the agent went offline while job {job_id} ran")
        return exits.UNREACHABLE
    if cmd["action"] == "cancel" and job.get("state") == "succeeded":
        return _after_cancel(link, args, job)
    _print_outcome(link, args, job)
    return exits.for_state(str(job.get("state")))


def _rejected(
    link: Link,
    args: argparse.Namespace,
    cmd: dict[str, Any],
    response: dict[str, Any],
) -> int:
    error = response.get("error") or {}
    admin = link.topics.admin_command
    if (
        cmd["action"] == "cancel"
        and error.get("code") == "not_allowed"
        and "$.job" in str(error.get("message"))
    ):
        # The job was started on the admin topic: it is cancelled only from there.
        retry = dict(cmd, id=f"{cmd['id']}-admin")
        link.subscribe(link.topics.job(str(retry["id"])))
        correlation = link.send(admin, retry)
        if link.wait_until(lambda s: correlation in s.responses, args.timeout):
            response = link.seen.responses[correlation]
            if response.get("status") == "accepted":
                job = _follow(link, str(response.get("job")), show=not args.json)
                if job is None:
                    return exits.UNREACHABLE
                return _after_cancel(link, args, job)
            error = response.get("error") or {}
    if args.json:
        print(json.dumps(response))
    _error(f"rejected: {error.get('code', '?')}: {error.get('message', '')}")
    return exits.REJECTED


def _after_cancel(link: Link, args: argparse.Namespace, cancel: dict[str, Any]) -> int:
    """A cancel that was taken: wait until the cancelled job has stopped."""
    result = cancel.get("result") or {}
    target = str(result.get("job") or args.job)
    if result.get("state") in FINAL_STATES:
        _print_outcome(link, args, cancel)
        return exits.OK
    link.subscribe(link.topics.job(target))
    job = _follow(link, target, show=not args.json)
    if job is None:
        _error(f"the agent went offline while job {target} was stopping")
        return exits.UNREACHABLE
    _print_outcome(link, args, job)
    return exits.OK if job.get("state") == "cancelled" else exits.FAILED


def _follow(link: Link, job_id: str, *, show: bool) -> dict[str, Any] | None:
    """The job's final state, with a progress bar on a terminal; None when the agent goes
    offline first."""
    from client.progress import JobProgress

    with JobProgress(job_id, enabled=show and sys.stderr.isatty()) as progress:
        shown: dict[str, Any] | None = None
        while True:
            if not link.seen.agent_online:
                return None
            job = link.seen.jobs.get(job_id)
            if job is not None and job is not shown:
                shown = job
                progress.update(job, time.monotonic())
                if job.get("state") in FINAL_STATES:
                    return job
            link.pump(0.5)


def _print_plan(response: dict[str, Any]) -> None:
    from client.render import plan_lines

    plan = response.get("plan") or []
    print(f"Plan of {response.get('action')} {response.get('job')} (dry run, nothing changes):")
    for line in plan_lines(plan) or ["  (nothing to do)"]:
        print(line)


def _print_outcome(link: Link, args: argparse.Namespace, job: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(job))
        return
    from client.render import outcome_lines

    action = job.get("action")
    if job.get("state") == "succeeded" and not job.get("dry_run") and action in ("list", "status"):
        _print_tables(link, job)
        return
    for line in outcome_lines(job):
        print(line)


def _print_tables(link: Link, job: dict[str, Any]) -> None:
    from rich.console import Console

    from client import render

    now_ms = int(time.time() * 1000)
    # Off a terminal (a pipe, a log), one row per line however long, for grep and awk.
    console = Console(width=None if sys.stdout.isatty() else 1000, highlight=False)
    result = job.get("result") or {}
    if job.get("action") == "list":
        console.print(render.list_table(result, link.seen.volumes, now_ms))
        for problem in result.get("catalog_problems") or []:
            console.print(f"catalog problem: {problem}", style="yellow")
        return
    console.print(render.agent_line(link.seen.agent, now_ms))
    console.print(render.volumes_table(link.seen.volumes, now_ms))
    if result.get("schedules"):
        console.print(render.schedules_table(result["schedules"], now_ms))
