"""Hostile names, paths, ids and topics, through every command that takes one, against the
agent as a process, a real Mosquitto and a real Incus project (issue 8, "Tests").

Each example sends one command, waits for its answer and, when accepted, for its job's
final state, then asks for `status`, and compares the world (`tests.support.world`)
before and after: no volume, snapshot, server-side backup, bucket, instance or backup
file may be created, changed or deleted beyond what the command may do by the contract
(`MAY`, below), and no file beside the backup directory at all (the agent's work folder,
the folder its links point to). The agent reaches Incus through a proxy that keeps its
requests (`tests.support.incus_proxy`): none may change anything outside its project,
and a project it makes must be a drill's (`atlas-drill-...`), removed by the job's end;
its Grafana (`tests.support.fake_grafana`) gets only the dashboards a valid
`dashboards_import` names. Decoys stand where a name cut short or decoded in a URL
would land: `victim` for `victim?x` and `victim#x`, `victim/snap0` and a backup of
`victim` for `victim/snapshots/...`, `victim` in a second project for
`victim?project=...`, and files around the backup directory (a runbook tarball, the
agent's own set, links out, a set whose file is a link).

Every command is also answered, on the topic the contract names (`<p>/response`, or a
`reply_to` / Response Topic it allows), accepted or rejected with a field path, and the
agent still serves afterwards. Hostile topics have a test of their own: they fail most
examples they are in, which would hide the name findings behind them.

Every action of the contract is generated; those added after the first property
(`LATER_ACTIONS`, with `drill` and `rebuild`) get a few examples each and their known
cases, to keep CI short. The agent has a state bucket (which this Incus cannot host: no
MinIO, so bucket jobs end at Incus) and a Grafana, and the backup directory holds a state
bucket backup and a dashboards set, so that each of these actions gets past its checks.

One agent process serves every example. Each example starts from the same decoys (what
an earlier one deleted is made again, what it left is removed; backup files come back
from hard links kept at the start, so a compromise mark or a pruned export does not
carry over), and an agent that stopped answering is restarted before its example ends,
so examples stay independent and shrink.
`{set}`, `{state_set}`, `{dash_set}`, `{decoy_project}`, `{backup_dir}`, `{outside}`,
`{known_job}` and `{fresh}` in a generated value are filled in when it is sent.
"""

import contextlib
import json
import os
import re
import shutil
import string
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import anyio
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agent.incus.client import IncusClient
from agent.state_bucket.incus_bucket import IncusStateBucket
from commands import state_bucket
from commands.names import is_drill_project
from commands.state_bucket import SERVICE as STATE_SERVICE
from schemas.commands import ACTIONS as CONTRACT_ACTIONS
from schemas.commands import StateExportCommand
from schemas.config import ADMIN_ACTIONS, IncusConfig, StateBucketConfig
from tests.support.backups import SET as CATALOG_SET
from tests.support.backups import catalog_backup, cli_export
from tests.support.broker import Broker
from tests.support.client import Received, TestClient, response_properties
from tests.support.fake_grafana import FakeGrafana, fake_grafana
from tests.support.fake_incus_buckets import FakeBucket, fake_incus_buckets
from tests.support.harness import ATLAS, AgentHarness, prepare_agent
from tests.support.incus_env import IncusProject, incus, incus_project
from tests.support.incus_proxy import IncusProxy, incus_proxy
from tests.support.state_job import state_job
from tests.support.world import (
    Change,
    How,
    IncusReader,
    Kind,
    Obj,
    World,
    changes,
    files_under,
    observe,
)

PREFIX = "atlas/backup"  # the module has a broker of its own: the real default prefix
HA_PREFIX = "homeassistant"
SERVICES = {f"{s}01-data": f"{s}01" for s in ATLAS}  # volume -> instance
DECOYS = ("victim", "x", "y")
BASELINE_SNAPSHOTS = ("victim/snap0", "grafana01-data/snap0")
# Incus 6.0.4 refuses a backup name another project's volume of the same name holds.
DECOY_BACKUP = f"b0-{uuid.uuid4().hex[:6]}"
BASELINE_BACKUPS = (f"victim/{DECOY_BACKUP}",)
RUNBOOK_VICTIM = "victim-20241126.tar.gz"
RUNBOOK_GRAFANA = "grafana01-data-20241126.tar.gz"
STATE_BUCKET = "tfstate"  # configured; Incus here has no bucket of that name (no MinIO)
GRAFANA_TOKEN = "glsa_hostile-names-0123456789abcdef"
DASHBOARD_UIDS = ("node-exporter", "mqtt")
NAME_MAX_EXAMPLES = 70
TOPIC_MAX_EXAMPLES = 25
ANSWER_TIMEOUT_S = 10.0
SETTLE_TIMEOUT_S = 3.0  # for a job whose answer was lost (there may be none)
JOB_TIMEOUT_S = 90.0

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")  # schemas.commands.IncusName
REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
BACKUP_REF = re.compile(rf"{NAME.pattern}/{NAME.pattern}")
# A topic the agent may answer on: API.md's rule, and no control character (Mosquitto
# drops a client that publishes one).
TOPIC = re.compile(r"[^#+\x00-\x1f\x7f-\x9f]{1,512}")
# A JSON field (`$.reply_to`), or the MQTT 5 property that is not in the JSON.
FIELD_PATH = re.compile(r"at `(\$[^`]*|Response Topic)`")


# One failure type per property, so that Hypothesis shrinks and reports each on its own.
class PropertyFailure(AssertionError):
    pass


class NotAnswered(PropertyFailure):
    """No answer, or no final job state, in time."""


class StoppedServing(PropertyFailure):
    """The agent died or no longer answers `status`."""


class AnsweredElsewhere(PropertyFailure):
    """The answer went to a topic the contract does not name for it."""


class AcceptedForbidden(PropertyFailure):
    """A command the contract rejects (for its reply topic) was accepted."""


class RejectedWithoutField(PropertyFailure):
    """A rejection that names no field."""


class TouchedCreated(PropertyFailure):
    """Something was created that the command may not create."""


class TouchedDeleted(PropertyFailure):
    """Something was deleted that the command may not delete."""


class TouchedChanged(PropertyFailure):
    """Something was changed (or an instance left stopped) that the command may not change."""


class AskedOutside(PropertyFailure):
    """The agent asked Incus to change something outside its project: another project
    (the decoy's, `default`), the server, or a project it made and left behind."""


class TouchedGrafana(PropertyFailure):
    """A dashboard was written to Grafana that the command did not name."""


TOUCHED: Mapping[str, type[PropertyFailure]] = {
    "deleted": TouchedDeleted,
    "created": TouchedCreated,
    "changed": TouchedChanged,
}

# ---------------------------------------------------------------------------------------
# What a job may change, by action: (kind of object, how, a regex template of its name).
# Templates name bindings the contract gives a valid command (`bindings`): {volume} its
# target volumes, {instance} their instances, {name} the snapshot name, {as} the new
# volume of an import, {replaced} the volume an import replaces, {set} the staged export's
# set, or the set of an export the command makes.
# A rejected, dry-run or invalid command has no bindings, so it may change nothing.
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class May:
    kind: Kind
    hows: frozenset[How]
    pattern: str


CREATED: frozenset[How] = frozenset({"created"})
CHANGED: frozenset[How] = frozenset({"changed"})
DELETED: frozenset[How] = frozenset({"deleted"})
WRITTEN: frozenset[How] = frozenset({"created", "changed"})

PROTECTION = (
    May("snapshot", CHANGED, "{volume}/{snapshot}"),  # the mark in its description
    May("file", WRITTEN, r"{backup_set}/manifest\.json|{backup_set}/\.manifest\.lock"),
)
MAY: Mapping[str, tuple[May, ...]] = {
    "snapshot": (
        May("snapshot", CREATED, "{volume}/{name}"),
        May("instance", CHANGED, "{instance}"),  # quiesce: stopped and started
    ),
    "restore": (
        May("snapshot", CREATED, "{volume}/pre-restore-.+"),  # the safety snapshot
        May("instance", CHANGED, "{instance}"),
    ),
    "export": (
        May("file", CREATED, "{set}"),
        May("file", WRITTEN, r"{set}/{volume}\.tar(\.zst|\.gz)?(\.gpg)?"),
        May("file", WRITTEN, r"{set}/manifest\.json|{set}/\.manifest\.lock"),
        # Each exported instance's definition, for a rebuild that must recreate it.
        May("file", CREATED, r"{set}/instances"),
        May("file", WRITTEN, r"{set}/instances/{instance}\.json"),
        May("instance", CHANGED, "{instance}"),  # mode stop
    ),
    "import": (
        May("volume", CREATED, "{as}"),
        May("volume", CHANGED, "{replaced}"),
        May("snapshot", DELETED, "{replaced}/.+"),  # the imported volume has none
        May("instance", CHANGED, "{instance}"),
    ),
    "verify": (),  # a restore test's scratch volume is gone again by the end
    "list": (),
    "status": (),
    "cancel": (),
    # Only what the agent made and the policy lets go; the stage's backups are all kept
    # (manual snapshots, each volume's newest export).
    "prune": (),
    "drill": (),  # its project is the agent's own, and gone by the end (`asked_outside`)
    "rebuild": (),
    "protect": PROTECTION,
    "unprotect": PROTECTION,
    "mark_compromised": (
        May("file", WRITTEN, r"{marks}"),
        May("file", WRITTEN, r"{marked_set}/manifest\.json|{marked_set}/\.manifest\.lock"),
    ),
    # Incus here cannot host a bucket (no MinIO): these end at Incus, as on a host whose
    # bucket is gone; what they would write on success is listed all the same.
    "state_export": (
        May("file", CREATED, "{new_set}"),
        May("file", WRITTEN, r"{new_set}/tfstate\.tar\.gz\.gpg"),
        May("file", WRITTEN, r"{new_set}/manifest\.json|{new_set}/\.manifest\.lock"),
    ),
    "state_import": (
        May("bucket", CREATED, "{bucket_as}"),
        May("bucket", frozenset({"created", "changed", "deleted"}), "{bucket_replaced}"),
        # Replace: the current bucket exported first, the way back.
        May("file", CREATED, "{bucket_safety_set}"),
        May("file", WRITTEN, r"{bucket_safety_set}/tfstate-pre-import-[-0-9a-f]+\.tar\.gz\.gpg"),
        May(
            "file",
            WRITTEN,
            r"{bucket_safety_set}/manifest\.json|{bucket_safety_set}/\.manifest\.lock",
        ),
    ),
    "dashboards_export": (
        May("file", CREATED, "{new_set}"),
        May("file", CREATED, "{new_set}/grafana-dashboards"),
        May("file", WRITTEN, r"{new_set}/grafana-dashboards/[A-Za-z0-9_-]{{1,40}}\.json"),
    ),
    "dashboards_import": (),  # into Grafana only (`grafana_writes`)
}


# ---------------------------------------------------------------------------------------
# The generated cases
# ---------------------------------------------------------------------------------------

SPECIALS = [
    "?", "#", "%", "/", "\\", "&", "=", "+", ";", ":", "@", " ", ".", "..", "-", "_", "~",
    "%2e", "%2E%2e", "%2f", "%3F", "%23", "%00", "%25", "\x00", "\n", "\r", "\t",
    "\u0301", "\u202e", "\u200f", "\u200b", "\ufeff", "\U0001f600", "\U0001f469\u200d\U0001f4bb",
    "\u0456", "\uff56", "\u2215", "\uff0f", "\u2024", "*", "[", "]", "'", '"', "<", ">", "|",
    "`", "$", "{", "}", "!",
]  # fmt: skip
BASES = ["victim", "x", "grafana01-data", "snap0", ""]
TAILS = [
    "",
    "x",
    "victim",
    "snapshots/snap0",
    f"backups/{DECOY_BACKUP}",
    "../victim",
    "project={decoy_project}",
    "?project={decoy_project}",
]
CURATED_NAMES = [
    "victim?x", "victim?", "victim#x", "victim#", "victim%3Fx", "victim%23x", "victim/x",
    "victim/snapshots/snap0", f"victim/backups/{DECOY_BACKUP}", "victim?project={decoy_project}",
    "victim#?project={decoy_project}", "grafana01-data/../victim", "grafana01-data/../x",
    "grafana01-data/..", "grafana01-data/%2e%2e/victim", "%2e%2e", "%2e%2e/victim", "..", ".",
    "", "-victim", ".victim", "--", "victim ", " victim", "victim\x00", "victim\n",
    "victim\u0301", "\u202evictim", "v\u0456ctim", "victim\U0001f600", "a" * 64, "a" * 300,
    "a" * 5000, "victim&x=1", "victim;x", "victim:x", "victim@x", "victim+x", "victim=x",
    "victim\\x", "victim%", "victim%zz", "victim?recursion=1", "?", "#", "/", "//", "victim/",
    "/victim", "victim%2Fsnapshots%2Fsnap0",
]  # fmt: skip
VALID_NAMES = [
    "victim",
    "x",
    "y",
    "grafana01-data",
    "mosquitto01-data",
    "snap0",
    DECOY_BACKUP,
    "restored",
    "a",
    "A.b_c-1",
    "a" * 63,
    "victim.",
    "1",
]

hostile_names: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(CURATED_NAMES),
    st.builds(
        lambda a, s, b: a + s + b,
        st.sampled_from(BASES),
        st.sampled_from(SPECIALS),
        st.sampled_from(TAILS),
    ),
    st.lists(st.sampled_from(SPECIALS + BASES), max_size=5).map("".join),
    st.text(max_size=8),
)
names: st.SearchStrategy[str] = st.one_of(hostile_names, st.sampled_from(VALID_NAMES))
volume_lists: st.SearchStrategy[object] = st.one_of(
    st.just("all"),
    st.lists(names, min_size=1, max_size=3),
    st.lists(st.sampled_from(sorted(SERVICES)), min_size=1, max_size=2, unique=True),
)

CURATED_FILES = [
    "manual/victim?.tar.zst", "manual/victim#.tar.zst", "victim?x.tar.gz", RUNBOOK_VICTIM,
    f"manual/{RUNBOOK_VICTIM}", RUNBOOK_GRAFANA, "{set}/grafana01-data.tar.zst",
    "{set}/manifest.json", f"{CATALOG_SET}/victim.tar.zst", "../x",
    "../outside/victim-out.tar.gz", "/etc/passwd", "{backup_dir}/" + RUNBOOK_VICTIM,
    "{outside}/victim-out.tar.gz", ".", "./", "..", "", "manual", "manual/",
    "manual/link-out.tar.gz", "manual/link-in.tar.gz", "manual/out/victim-out.tar.gz",
    "manual/dangling.tar.gz", "manual/loop.tar.gz", "manual/junk.tar.gz", "%2e%2e/x",
    "%2e%2e/outside/victim-out.tar.gz", "manual/%2e%2e/" + RUNBOOK_VICTIM,
    "manual/./" + RUNBOOK_VICTIM, "manual//" + RUNBOOK_VICTIM, RUNBOOK_VICTIM + "\x00.txt",
    "a" * 5000,
]  # fmt: skip
files: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(CURATED_FILES),
    st.builds(
        lambda d, n, e: d + n + e,
        st.sampled_from(["", "manual/", "{set}/", "./", "../", "/", "%2e%2e/", "manual/../"]),
        names,
        st.sampled_from([".tar.zst", ".tar.gz", ".tar", "", ".tar.zst.gpg", "?.tar.zst"]),
    ),
)
backup_refs: st.SearchStrategy[str] = st.one_of(
    st.sampled_from([
        "{set}/grafana01-data", "{set}/victim", f"{CATALOG_SET}/victim", "manual/victim",
        "{set}/../victim", "../{set}/x", "{set}/grafana01-data?x", "{set}/%2e%2e", "{set}",
        "/{set}/grafana01-data", "{set}/grafana01-data/../victim",
    ]),
    st.builds(lambda n: "{set}/" + n, names),
    st.builds(lambda a, b: f"{a}/{b}", names, names),
)  # fmt: skip
# The later actions' references also aim at the state bucket's and the dashboards' sets.
LATER_HOSTILE: Mapping[str, st.SearchStrategy[object]] = {
    "backup": st.one_of(
        backup_refs,
        st.sampled_from([
            "{state_set}/" + STATE_BUCKET, "{state_set}/tfstate?x", "{state_set}/victim",
            "{dash_set}/grafana-dashboards", "{state_set}/grafana01-data",
            f"{CATALOG_SET}/victim", "{set}/mosquitto01-data",
        ]),
    ),
    "set": st.one_of(
        names,
        st.sampled_from([
            "{dash_set}", "{state_set}", "{set}", CATALOG_SET, "manual", "{dash_set}/..",
            "{dash_set}/grafana-dashboards", "{dash_set}?x",
        ]),
    ),
}  # fmt: skip
REPLY_TOPICS = [
    f"{PREFIX}/agent", f"{PREFIX}/volumes/grafana01-data", f"{PREFIX}/jobs/x", f"{PREFIX}/events",
    f"{PREFIX}/cmd", f"{PREFIX}/cmd/admin", f"{PREFIX}/drills/grafana", PREFIX, f"{PREFIX}/",
    f"{PREFIX}/response", f"{PREFIX}/response/ok", f"{PREFIX}/responsex",
    f"{HA_PREFIX}/button/atlas_backup/grafana_backup_now/config", f"{HA_PREFIX}/status",
    HA_PREFIX, "x/#", "x/+", "#", "+", "x\x00y", "", "/", "//", "a" * 512, "a" * 513,
    "replies/ok", "replies/\u202e\U0001f600", "replies/\n", "replies/\x7f", "$atlas/x",
    "ATLAS/BACKUP/agent", f"{PREFIX}/../backup/agent",
]  # fmt: skip
replies: st.SearchStrategy[str] = st.one_of(
    st.sampled_from(REPLY_TOPICS), st.builds(lambda n: "replies/" + n, hostile_names)
)
# Mosquitto drops a client whose Response Topic holds a control character: the test's own.
response_topics: st.SearchStrategy[str] = replies.filter(
    lambda t: not re.search(r"[\x00-\x1f\x7f-\x9f]", t)
)
hostile_ids: st.SearchStrategy[str | None] = st.one_of(
    st.none(),
    st.just("{known_job}"),
    st.sampled_from(
        [
            "",
            "../x",
            "a/b",
            "a#b",
            "+",
            "x" * 65,
            "\u00e9",
            "a\x00",
            " a",
            ".a",
            "-a",
            "a b",
            "{fresh}?x",
            "{fresh}/x",
        ]
    ),
    hostile_names,
)
# Mostly a fresh valid id: a hostile one gets the command rejected before anything else.
request_ids: st.SearchStrategy[str | None] = st.integers(0, 7).flatmap(
    lambda n: hostile_ids if n == 7 else st.just("{fresh}")
)


@dataclass(frozen=True)
class Case:
    """One command as generated: placeholders still in; `swap_topic` sends an admin action
    on the plain topic (and any other on the admin one, which takes every action)."""

    action: str
    fields: Mapping[str, object]
    id: str | None = "{fresh}"
    reply_to: str | None = None
    response_topic: str | None = None
    swap_topic: bool = False
    materialize: bool = False  # the test puts a real tarball at `file` first

    def __repr__(self) -> str:
        return (
            f"Case({self.action!r}, {dict(self.fields)!r}, id={self.id!r},"
            f" reply_to={self.reply_to!r}, response_topic={self.response_topic!r},"
            f" swap_topic={self.swap_topic}, materialize={self.materialize})"
        )


def _optional(draw: st.DrawFn, strategy: st.SearchStrategy[Any], p_absent: int = 2) -> Any:
    return None if draw(st.integers(0, 4)) < p_absent else draw(strategy)


PROTECTION_FIELDS: Mapping[str, st.SearchStrategy[object]] = {
    "volume": st.just("grafana01-data"),
    "snapshot": st.just("snap0"),
    "backup": st.just("{set}/grafana01-data"),
}
# A valid value for each field of each action: a command gets one or two hostile fields
# and valid ones elsewhere, so that it reaches the code behind the first check.
VALID: Mapping[str, Mapping[str, st.SearchStrategy[object]]] = {
    "snapshot": {
        "volumes": st.sampled_from([["grafana01-data"], "all"]),
        "name": st.sampled_from(["s1", "backup-manual"]),
    },
    "restore": {
        "volume": st.just("grafana01-data"),
        "snapshot": st.just("snap0"),
        "confirm": st.just("grafana01-data"),
    },
    "export": {"volumes": st.just(["grafana01-data"])},
    "import": {
        "file": st.sampled_from([RUNBOOK_VICTIM, "{set}/grafana01-data.tar.zst"]),
        "backup": st.just("{set}/grafana01-data"),
        "as": st.just("restored"),
        "confirm": st.just("grafana01-data"),
    },
    "verify": {"backup": st.just("{set}/grafana01-data"), "volumes": st.just(["grafana01-data"])},
    "list": {"volumes": st.just(["grafana01-data"])},
    "cancel": {"job": st.just("{known_job}")},
    "drill": {"service": st.just("grafana")},
    "rebuild": {"set": st.just("{set}"), "confirm": st.just("all")},
    "status": {},
    # The actions added after the property: `test_hostile_names_through_each_later_action`.
    "prune": {"volumes": st.sampled_from([["grafana01-data"], "all"])},
    "protect": PROTECTION_FIELDS,
    "unprotect": PROTECTION_FIELDS,
    "mark_compromised": {
        "service": st.sampled_from(["grafana", STATE_SERVICE]),
        "reason": st.just("hostile names test"),
    },
    "state_export": {},
    "state_import": {
        "backup": st.just("{state_set}/" + STATE_BUCKET),
        "as": st.just("tfstate-copy"),
        "confirm": st.just(STATE_BUCKET),
    },
    "dashboards_export": {},
    "dashboards_import": {"set": st.just("{dash_set}"), "uids": st.sampled_from(["all", ["mqtt"]])},
}
HOSTILE: Mapping[str, st.SearchStrategy[object]] = {
    "volumes": volume_lists,
    "volume": names,
    "name": names,
    "snapshot": names,
    "confirm": names,
    "file": files,
    "backup": backup_refs,
    "as": names,
    "job": names,
    "service": names,
    "set": names,
    "uids": st.one_of(
        st.lists(st.one_of(names, st.sampled_from(DASHBOARD_UIDS)), min_size=1, max_size=3),
        names,
        st.just([]),
    ),
    "reason": st.one_of(hostile_names, st.sampled_from(["x" * 501, "{set}", "$(reboot)"])),
}


@st.composite
def action_fields(draw: st.DrawFn, action: str) -> dict[str, object]:
    """The fields of one command: which are present, then one or two of them hostile."""
    keys = [k for k in VALID[action] if k != "confirm"]
    if action == "import":
        source = draw(st.sampled_from(["file", "file", "file", "backup", "both", "neither"]))
        target = draw(st.sampled_from(["as", "as", "as", "replace", "both", "neither"]))
        keys = [k for k in ("file", "backup") if source in (k, "both")] + (
            ["as"] if target in ("as", "both") else []
        )
        if target in ("replace", "both"):
            keys.append("confirm")
    elif action == "state_import":
        target = draw(st.sampled_from(["as", "as", "replace", "both", "neither"]))
        keys = ["backup"] + (["as"] if target in ("as", "both") else [])
        if target in ("replace", "both"):
            keys.append("confirm")
    elif action in ("protect", "unprotect"):
        target = draw(st.sampled_from(["snapshot", "snapshot", "backup", "both", "neither"]))
        keys = {
            "snapshot": ["volume", "snapshot"],
            "backup": ["backup"],
            "both": ["volume", "snapshot", "backup"],
            "neither": [],
        }[target]
    elif action == "verify":
        keys = [draw(st.sampled_from(["backup", "volumes"]))]
    elif action in ("restore", "rebuild"):
        keys.append("confirm")
    hostile: set[str] = set()
    if keys:  # a file or a reference first: they reach furthest into the agent
        first = [k for k in keys if k in ("file", "backup")] * 2 + keys
        hostile.add(draw(st.sampled_from(first)))
        if draw(st.integers(0, 3)) == 3:
            hostile.add(draw(st.sampled_from(keys)))
    pool = {**HOSTILE, **LATER_HOSTILE} if action in LATER_ACTIONS else HOSTILE
    fields = {k: draw(pool[k] if k in hostile else VALID[action][k]) for k in keys}
    if action in ("import", "state_import") and "confirm" in fields:
        fields["replace"] = True
    if action == "snapshot" and draw(st.integers(0, 4)) == 4:
        fields["quiesce"] = True
    return fields


# The actions the first property draws from, as it always has (its examples stay the
# same); the later ones each get a few examples of their own.
ACTIONS = ["snapshot", "restore", "export", "import", "verify", "list", "cancel", "drill",
           "rebuild", "status"]  # fmt: skip
LATER_ACTIONS = [a for a in VALID if a not in ACTIONS]


@st.composite
def cases(draw: st.DrawFn, hostile_topics: bool, action: str | None = None) -> Case:
    """Hostile names, files and references (and ids); with `hostile_topics`, hostile
    `reply_to` and Response Topics too, which would otherwise fail most examples first.
    `action`: only that one."""
    action = action or draw(st.sampled_from(
        ["import"] * 8 + ["snapshot"] * 2 + ["restore"] * 2 + ["verify"] * 2 + ACTIONS
    ))  # fmt: skip
    fields = draw(action_fields(action))
    if draw(st.integers(0, 9)) == 9:
        fields["dry_run"] = True
    materialize = "file" in fields and draw(st.integers(0, 4)) < 4
    reply_to = response_topic = None
    if hostile_topics:
        reply_to = _optional(draw, replies, 1)
        response_topic = None if draw(st.integers(0, 2)) else draw(response_topics)
    return Case(
        action,
        fields,
        id=draw(request_ids),
        reply_to=reply_to,
        response_topic=response_topic,
        swap_topic=draw(st.integers(0, 9)) == 9,
        materialize=materialize,
    )


# ---------------------------------------------------------------------------------------
# The stage: the project with its decoys, backup files, and one agent for every example
# ---------------------------------------------------------------------------------------


class Stage:
    """The project with its decoys, the agent, and the world as it should start.
    (A plain class: Hypothesis prints a dataclass argument field by field.)"""

    def __init__(
        self,
        atlas: IncusProject,
        decoy: IncusProject,
        agent: AgentHarness,
        *,
        reader: IncusReader,
        outside: Path,
        known_job: str,
        set_name: str,
        proxy: IncusProxy,
        grafana: FakeGrafana,
        vault: Path,
    ) -> None:
        self.atlas, self.decoy, self.agent, self.reader = atlas, decoy, agent, reader
        self.outside, self.known_job, self.set_name = outside, known_job, set_name
        # The agent's way to Incus, which keeps what it asked; its Grafana; hard links to
        # the baseline's backup files, to put back what an example deleted or rewrote.
        self.proxy, self.grafana, self.vault = proxy, grafana, vault
        self.state_set = self.dash_set = ""
        # The world as the last example left it, when nothing touched it since: an
        # observation is most of an example's time (Incus lists volumes slowly).
        self.seen: World | None = None
        # What each backup file holds (by its real path), as its index.yaml says.
        self.holds: dict[str, str] = {}
        self.baseline: World = {}
        self.sent = 0
        # False once the agent stopped answering: it is restarted before the example ends,
        # so one poisoned agent does not fail (and shrink) every later example.
        self.healthy = True
        self.restarts = 0

    def recover_agent(self) -> str:
        """Restart an agent that stopped answering; if it does not come back online with
        its state, start it on an empty state folder. What happened, for the report."""
        self.agent.process.stop()
        self.healthy = True
        try:
            self.agent.start()
            return "it came back after a restart"
        except TimeoutError:
            self.agent.process.stop()
            self.restarts += 1
            state = self.agent.workdir / "state"
            state.rename(state.with_name(f"state.stuck-{self.restarts}"))
            self.agent.start()
            return "it did NOT come back online after a restart with its state (kept aside)"

    def __repr__(self) -> str:
        return f"Stage(project={self.atlas.name!r}, decoy={self.decoy.name!r})"

    @property
    def backup_dir(self) -> Path:
        return self.agent.backup_dir

    def observe(self) -> World:
        world = observe(
            self.reader, [self.atlas.name, self.decoy.name], self.atlas.pool, self.backup_dir
        )
        return {**world, **self._files_beside()}

    def projects(self) -> set[str]:
        return {url.rsplit("/", 1)[-1] for url in self.reader.get("/1.0/projects")}

    def _files_beside(self) -> World:
        """The files of the agent's work folder outside the backup directory (its state
        folder and log aside) and of the folder the backup directory's links point to,
        named `../<path>`: no pattern in `MAY` matches one, so any change there fails."""
        beside = files_under(self.agent.workdir, skip=("backup", "state", "agent.log"))
        return {Obj("file", "", f"../{obj.name}"): mark for obj, mark in beside.items()}

    def render(self, value: str) -> str:
        for token, real in (
            ("{decoy_project}", self.decoy.name),
            ("{backup_dir}", str(self.backup_dir)),
            ("{outside}", str(self.outside)),
            ("{set}", self.set_name),
            ("{state_set}", self.state_set),
            ("{dash_set}", self.dash_set),
            ("{known_job}", self.known_job),
        ):
            value = value.replace(token, real)
        return value

    def fresh_id(self) -> str:
        self.sent += 1
        return f"h{self.sent}-{uuid.uuid4().hex[:6]}"

    def restore_baseline(self) -> World:
        """Undo what earlier examples left (allowed or not), so each example starts from
        the same decoys: examples stay independent, and shrinking works after damage."""
        world, self.seen = self.seen or self.observe(), None
        order = {"volume": 0, "snapshot": 1, "backup": 2}
        found = sorted(
            changes(self.baseline, world),
            key=lambda c: (order.get(c.obj.kind, 3), c.obj.name.count("/")),
        )
        undone = [self._undo(change) for change in found]
        return self.observe() if any(undone) else world

    def _undo(self, change: Change) -> bool:
        """Put one object back as the baseline has it, when the test can; whether it did."""
        obj, how = change.obj, change.how
        project = self.atlas if obj.project == self.atlas.name else self.decoy
        if obj.kind == "volume" and how == "created":
            url = f"/1.0/storage-pools/{project.pool}/volumes/custom/{quote(obj.name, safe='')}"
            incus("query", "-X", "DELETE", "--wait", f"{url}?project={project.name}", check=False)
        elif obj.kind == "volume" and how == "deleted" and obj.name in DECOYS:
            project.run("storage", "volume", "create", project.pool, obj.name)
        elif obj.kind == "snapshot" and how == "created":
            volume, _, snapshot = obj.name.partition("/")
            project.run(
                "storage",
                "volume",
                "snapshot",
                "delete",
                project.pool,
                volume,
                snapshot,
                check=False,
            )
        elif obj.kind == "snapshot" and how == "changed":  # a protection mark
            volume, _, snapshot = obj.name.partition("/")
            url = (
                f"/1.0/storage-pools/{project.pool}/volumes/custom/{volume}"
                f"/snapshots/{snapshot}?project={project.name}"
            )
            body = json.dumps({"description": json.loads(change.before or "{}")["description"]})
            incus("query", "-X", "PATCH", "-d", body, url, check=False)
        elif obj.kind == "snapshot" and how == "deleted":
            volume, _, snapshot = obj.name.partition("/")
            project.run(
                "storage",
                "volume",
                "snapshot",
                "create",
                project.pool,
                volume,
                snapshot,
                check=False,
            )
        elif obj.kind == "backup":
            self._undo_backup(project, obj, how)
        elif obj.kind == "file" and not obj.name.startswith("../"):
            return self._undo_file(change)
        elif obj.kind == "instance" and '"Running"' not in (change.after or ""):
            project.run("start", obj.name, check=False)
        else:
            return False
        return True

    def keep_files(self) -> None:
        """Hard-link the baseline's regular files into the vault (outside what is observed)."""
        for obj, mark in self.baseline.items():
            if obj.kind == "file" and not obj.name.startswith("../") and '"file": true' in mark:
                kept = self.vault / obj.name
                kept.parent.mkdir(parents=True, exist_ok=True)
                os.link(self.backup_dir / obj.name, kept)

    def _undo_file(self, change: Change) -> bool:
        """Remove what an example made; put back the baseline's file, folder or link
        (the very inode: a file comes back from the vault) that it deleted or changed."""
        path = self.backup_dir / change.obj.name
        if change.how == "changed" and '"dir": true' in (change.before or ""):
            return False  # a folder made again: its inode changed, nothing else can
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
        if change.how == "created":
            return True
        before = json.loads(change.before or "{}")
        path.parent.mkdir(parents=True, exist_ok=True)
        if "link" in before:
            path.symlink_to(before["link"])
        elif before.get("dir"):
            path.mkdir(mode=0o700)
        else:
            os.link(self.vault / change.obj.name, path)
        return True

    def _undo_backup(self, project: IncusProject, obj: Obj, how: How) -> None:
        volume, _, name = obj.name.partition("/")
        url = f"/1.0/storage-pools/{project.pool}/volumes/custom/{volume}/backups"
        if how == "created":
            incus("query", "-X", "DELETE", f"{url}/{name}?project={project.name}", check=False)
        elif how == "deleted":
            make_backup(project, volume, name)


def make_backup(project: IncusProject, volume: str, name: str) -> None:
    """A server-side backup of a volume, left on the server (a decoy)."""
    url = f"/1.0/storage-pools/{project.pool}/volumes/custom/{volume}/backups"
    body = json.dumps({"name": name, "volume_only": True, "expires_at": "2099-01-01T00:00:00Z"})
    incus("query", "-X", "POST", "--wait", "-d", body, f"{url}?project={project.name}")


def start_agent(
    broker: Broker, project: str, workdir: Path, proxy: IncusProxy, grafana: FakeGrafana
) -> AgentHarness:
    token = workdir.parent / f"{workdir.name}-grafana.token"
    token.write_text(GRAFANA_TOKEN + "\n")
    token.chmod(0o600)
    harness = prepare_agent(
        broker.port,
        project,
        workdir,
        prefix=PREFIX,
        # Everything: answers may go anywhere a hostile `reply_to` says.
        client=lambda prefix: TestClient(broker.port, prefix, subscriptions=("#", "$atlas/#")),
        incus={"socket": str(proxy.path)},
        state_bucket={"mode": "incus", "bucket": STATE_BUCKET},
        grafana={"url": grafana.url, "token_file": str(token)},
    )
    harness.start()
    return harness


def place_state_backup(stage: Stage, workdir: Path) -> None:
    """A state bucket backup in the catalog, made by the agent's own code from a stand-in
    for Incus's bucket API (`state_export` on this Incus ends at its missing bucket)."""
    with fake_incus_buckets(workdir) as (socket_path, fake):
        state = json.dumps({"version": 4, "serial": 3, "lineage": "l-1", "resources": []})
        fake.buckets[STATE_BUCKET] = FakeBucket({"atlas/terraform.tfstate": state.encode()}, [])
        config = StateBucketConfig(mode="incus", bucket=STATE_BUCKET)
        client = IncusClient(IncusConfig(socket=socket_path, pool="local"))
        bucket = IncusStateBucket(client, "local", STATE_BUCKET, config.max_bytes)
        with state_job(workdir, bucket, config, backup_dir=stage.backup_dir) as (job, inventory):
            command = StateExportCommand()
            plan = state_bucket.plan_export(command, inventory, datetime.now(UTC))
            outcome = anyio.run(state_bucket.execute_export, command, plan, job.context)
    stage.state_set = str(outcome.result.backup).partition("/")[0]


def place_dashboards(stage: Stage) -> None:
    """A set of Grafana's dashboards, exported by the agent."""
    for uid in DASHBOARD_UIDS:
        stage.grafana.add(uid, f"Dashboard {uid}")
    job = stage.agent.client.run({"action": "dashboards_export"}, timeout=JOB_TIMEOUT_S)
    assert job["state"] == "succeeded", job
    stage.dash_set = str(job["result"]["set"])


def place_backup_files(stage: Stage) -> None:
    """The runbook's tarballs, links in and out, junk, and a catalog set whose file is a
    link out of the backup directory."""
    root, outside, atlas = stage.backup_dir, stage.outside, stage.atlas
    manual = root / "manual"
    manual.mkdir(parents=True, exist_ok=True)
    cli_export(atlas, "victim", root / RUNBOOK_VICTIM, "gzip")
    cli_export(atlas, "grafana01-data", root / RUNBOOK_GRAFANA, "gzip")
    os.link(root / RUNBOOK_VICTIM, manual / RUNBOOK_VICTIM)
    cli_export(atlas, "victim", outside / "victim-out.tar.gz", "gzip")
    (manual / "link-out.tar.gz").symlink_to(outside / "victim-out.tar.gz")
    (manual / "link-in.tar.gz").symlink_to(f"../{RUNBOOK_VICTIM}")
    (manual / "out").symlink_to(outside)
    (manual / "dangling.tar.gz").symlink_to("nowhere.tar.gz")
    (manual / "loop.tar.gz").symlink_to("loop.tar.gz")
    (manual / "junk.tar.gz").write_bytes(b"not a tarball\n" * 100)
    linked = catalog_backup(atlas, "victim", root)  # <CATALOG_SET>/victim.tar.zst
    moved = outside / "catalog-victim.tar.zst"
    linked.rename(moved)
    linked.symlink_to(moved)
    stage.holds |= {
        str(root / RUNBOOK_VICTIM): "victim",
        str(root / RUNBOOK_GRAFANA): "grafana01-data",
        str(outside / "victim-out.tar.gz"): "victim",
        str(moved): "victim",
    }


@pytest.fixture(scope="module")
def stage(
    broker: Broker, atlas: IncusProject, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stage]:
    with contextlib.ExitStack() as stack:
        workdir = tmp_path_factory.mktemp("hostile")
        proxy = stack.enter_context(incus_proxy(workdir.parent / f"{workdir.name}-incus.sock"))
        grafana = stack.enter_context(fake_grafana(GRAFANA_TOKEN))
        decoy = stack.enter_context(incus_project("atlas-decoy"))
        decoy.run("storage", "volume", "create", decoy.pool, "victim")
        decoy.run("storage", "volume", "snapshot", "create", decoy.pool, "victim", "snap0")
        for name in DECOYS:
            atlas.run("storage", "volume", "create", atlas.pool, name)
        for snapshot in BASELINE_SNAPSHOTS:
            atlas.run("storage", "volume", "snapshot", "create", atlas.pool, *snapshot.split("/"))
        for backup in BASELINE_BACKUPS:
            make_backup(atlas, *backup.split("/"))
        outside = workdir / "outside"
        outside.mkdir()
        agent = start_agent(broker, atlas.name, workdir, proxy, grafana)
        stack.callback(agent.client.close)
        stack.callback(agent.process.stop)
        reader = IncusReader()
        stack.callback(reader.close)
        job = agent.client.run(
            {"action": "export", "volumes": ["grafana01-data", "mosquitto01-data"]},
            timeout=JOB_TIMEOUT_S,
        )
        assert job["state"] == "succeeded", job
        set_name = str(job["result"]["files"][0]["file"]).partition("/")[0]
        stage = Stage(
            atlas,
            decoy,
            agent,
            reader=reader,
            outside=outside,
            known_job=job["id"],
            set_name=set_name,
            proxy=proxy,
            grafana=grafana,
            vault=tmp_path_factory.mktemp("hostile-vault"),
        )
        for volume in ("grafana01-data", "mosquitto01-data"):
            stage.holds[str(agent.backup_dir / set_name / f"{volume}.tar.zst")] = volume
        place_backup_files(stage)
        place_state_backup(stage, tmp_path_factory.mktemp("hostile-state"))
        place_dashboards(stage)
        stage.baseline = stage.observe()
        stage.keep_files()
        yield stage
        print(agent.process.log()[-20000:])


# ---------------------------------------------------------------------------------------
# The contract's view of one command
# ---------------------------------------------------------------------------------------


def reply_allowed(topic: object) -> bool:
    """API.md: no wildcards, not under `<p>/` except `<p>/response/...`, not under the
    Home Assistant discovery prefix; and nothing the broker refuses."""
    if not isinstance(topic, str) or not TOPIC.fullmatch(topic):
        return False
    if under(topic, HA_PREFIX) or topic.startswith("$SYS"):
        return False
    return not under(topic, PREFIX) or under(topic, f"{PREFIX}/response")


def under(topic: str, root: str) -> bool:
    return topic == root or topic.startswith(root + "/")


def legit_file(backup_dir: Path, path: str) -> bool:
    """A relative path, without `..`, to a regular file (no link, final or on the way)
    inside the backup directory: the only kind of `file` an import may read."""
    if not path or path.startswith("/") or "\x00" in path or ".." in path.split("/"):
        return False
    full = backup_dir / path
    try:
        regular = full.lstat().st_mode & 0o170000 == 0o100000
    except (OSError, ValueError):
        return False
    root = os.path.realpath(backup_dir)
    return regular and os.path.realpath(full) == os.path.join(root, os.path.normpath(path))


@dataclass(frozen=True)
class Sent:
    """A case as sent: placeholders filled in."""

    payload: dict[str, object]
    topic: str
    response_topic: str | None

    @property
    def action(self) -> str:
        return str(self.payload["action"])


def bindings(sent: Sent, stage: Stage, before: World) -> dict[str, list[str]] | None:
    """What a valid command may touch, as regex fragments; None when the contract
    rejects it (or it is a dry run, or on the wrong topic)."""
    p = sent.payload
    admin_only = sent.action in ADMIN_ACTIONS
    if p.get("dry_run") or (admin_only and not sent.topic.endswith("/admin")):
        return None
    if not reply_allowed(p.get("reply_to", PREFIX + "/response")):
        return None
    if sent.response_topic is not None and not reply_allowed(sent.response_topic):
        return None
    if "id" in p and not (isinstance(p["id"], str) and REQUEST_ID.fullmatch(p["id"])):
        return None
    project = stage.atlas.name
    volumes = _targets(p.get("volumes", p.get("volume")))
    today = datetime.now(UTC).strftime("%Y%m%d")  # an export's own set, of today
    bound: dict[str, list[str]] = {
        "set": [re.escape(stage.set_name), rf"{today}-\d{{6}}-[0-9a-f]{{6}}"]
    }
    if sent.action == "snapshot" and volumes:
        name = p.get("name")
        existing = {o.name for o in before if o.kind == "snapshot" and o.project == project}
        if name is None:
            bound["name"] = [r"backup-\d{8}-\d{6}"]
        elif _valid(name) and not any(f"{v}/{name}" in existing for v in volumes):
            bound["name"] = [re.escape(str(name))]
    if sent.action == "restore" and (
        p.get("confirm") != p.get("volume")
        or Obj("snapshot", project, f"{p.get('volume')}/{p.get('snapshot')}") not in before
    ):
        return None
    if sent.action == "import":
        bound |= _import_bindings(p, stage, before)
    elif sent.action in LATER_ACTIONS:
        bound |= _later_bindings(p, stage, before, today)
    elif volumes:
        bound |= {
            "volume": [re.escape(v) for v in volumes],
            "instance": [re.escape(SERVICES[v]) for v in volumes],
        }
    return bound


def _import_bindings(p: Mapping[str, object], stage: Stage, before: World) -> dict[str, list[str]]:
    file, backup = p.get("file"), p.get("backup")
    if (file is None) == (backup is None):
        return {}
    if isinstance(file, str):
        if not legit_file(stage.backup_dir, file):
            return {}
        holds = stage.holds.get(os.path.realpath(stage.backup_dir / file), "")
    elif isinstance(backup, str) and BACKUP_REF.fullmatch(backup):
        set_name, _, volume = backup.partition("/")
        path = stage.backup_dir / set_name / f"{volume}.tar.zst"
        if not legit_file(stage.backup_dir, f"{set_name}/{volume}.tar.zst"):
            return {}
        holds = stage.holds.get(os.path.realpath(path), "")
    else:
        return {}
    existing = {o.name for o in before if o.kind == "volume" and o.project == stage.atlas.name}
    new = p.get("as")
    if p.get("replace") is True and new is None:
        if holds in SERVICES and p.get("confirm") == holds:
            return {"replaced": [re.escape(holds)], "instance": [re.escape(SERVICES[holds])]}
        return {}
    if _valid(new) and new not in existing and not p.get("replace"):
        return {"as": [re.escape(str(new))]}
    return {}


def _later_bindings(
    p: Mapping[str, object], stage: Stage, before: World, today: str
) -> dict[str, list[str]]:
    """What a valid command of a later action may touch (its files, snapshot or bucket)."""
    action, project, new_set = str(p["action"]), stage.atlas.name, rf"{today}-\d{{6}}-[0-9a-f]{{6}}"
    if action in ("protect", "unprotect"):
        volume, snapshot, backup = p.get("volume"), p.get("snapshot"), p.get("backup")
        if backup is not None and volume is None and snapshot is None:
            set_name, _, of = str(backup).partition("/")
            if BACKUP_REF.fullmatch(str(backup)) and of in SERVICES:
                return {"backup_set": [re.escape(set_name)]}
        elif (
            backup is None
            and volume in SERVICES
            and _valid(snapshot)
            and Obj("snapshot", project, f"{volume}/{snapshot}") in before
        ):
            return {"volume": [re.escape(str(volume))], "snapshot": [re.escape(str(snapshot))]}
        return {}
    if action == "mark_compromised":
        reason, service = p.get("reason"), p.get("service")
        valid_reason = isinstance(reason, str) and 0 < len(reason) <= 500
        if service in (*ATLAS, STATE_SERVICE) and valid_reason:
            marks = [r"compromised\.json", r"\.compromised\.lock"]
            return {"marks": marks, "marked_set": [r"[^/]+"]}
        return {}
    if action == "state_export":
        return {"new_set": [new_set]}
    if action == "state_import" and isinstance(p.get("backup"), str):
        if p.get("replace") is True and "as" not in p and p.get("confirm") == STATE_BUCKET:
            return {"bucket_replaced": [STATE_BUCKET], "bucket_safety_set": [new_set]}
        if _valid(p.get("as")) and not p.get("replace"):
            return {"bucket_as": [re.escape(str(p["as"]))]}
        return {}
    if action == "dashboards_export":
        return {"new_set": [new_set]}
    return {}


def _valid(name: object) -> bool:
    return isinstance(name, str) and bool(NAME.fullmatch(name))


def _targets(value: object) -> list[str]:
    """The configured volumes a command names, or [] when it names any other."""
    if value == "all":
        return sorted(SERVICES)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        return []
    if not all(isinstance(v, str) and v in SERVICES for v in value):
        return []
    return sorted(set(value))


def allowed(
    change: Change, sent: Sent, bound: Mapping[str, list[str]] | None, project: str
) -> bool:
    if bound is None or change.obj.project not in ("", project):
        return False
    for may in MAY.get(sent.action, ()):
        if change.obj.kind != may.kind or change.how not in may.hows:
            continue
        keys = [k for _, k, _, _ in string.Formatter().parse(may.pattern) if k]
        if not all(bound.get(k) for k in keys):
            continue
        pattern = may.pattern.format(**{k: "(?:" + "|".join(bound[k]) + ")" for k in keys})
        if re.fullmatch(pattern, change.obj.name):
            return True
    return False


# ---------------------------------------------------------------------------------------
# Sending one case
# ---------------------------------------------------------------------------------------


def prepare(case: Case, stage: Stage) -> tuple[Sent, list[Path]]:
    """The payload, topic and Response Topic as sent, and any file put in place for it."""
    payload: dict[str, object] = {"action": case.action}
    if case.id is not None:
        payload["id"] = stage.render(case.id.replace("{fresh}", stage.fresh_id()))
    for key, value in case.fields.items():
        if isinstance(value, str):
            payload[key] = stage.render(value)
        elif isinstance(value, list):
            payload[key] = [stage.render(v) if isinstance(v, str) else v for v in value]
        else:
            payload[key] = value
    if case.reply_to is not None:
        payload["reply_to"] = stage.render(case.reply_to)
    admin = case.action in ADMIN_ACTIONS
    topic = f"{PREFIX}/cmd/admin" if admin != case.swap_topic else f"{PREFIX}/cmd"
    made = materialize(stage, payload.get("file")) if case.materialize else []
    rt = stage.render(case.response_topic) if case.response_topic is not None else None
    return Sent(payload, topic, rt), made


def materialize(stage: Stage, file: object) -> list[Path]:
    """Hard-link the runbook's victim tarball at `file`, when it is a plain new path inside
    the backup directory; the paths made (file, then new folders), for removal."""
    if not isinstance(file, str) or not file or file.startswith("/") or "\x00" in file:
        return []
    parts = file.split("/")
    if any(p in ("", ".", "..") or len(p.encode()) > 255 for p in parts):
        return []
    made: list[Path] = []
    folder = stage.backup_dir
    for part in parts[:-1]:
        folder = folder / part
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            return _remove(made)
        if not folder.exists():
            folder.mkdir()
            made.append(folder)
    target = folder / parts[-1]
    if os.path.lexists(target):
        return _remove(made)
    os.link(stage.backup_dir / RUNBOOK_VICTIM, target)
    return [target, *reversed(made)]


def _remove(paths: list[Path]) -> list[Path]:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            path.rmdir()
        else:
            path.unlink(missing_ok=True)
    return []


def is_answer(received: Received, expected_id: str) -> bool:
    if received.retain:
        return False
    try:
        answer = received.json()
    except ValueError:
        return False
    return (
        isinstance(answer, dict)
        and answer.get("status") in ("accepted", "rejected")
        and answer.get("id") == expected_id
    )


def send(sent: Sent, stage: Stage) -> Received:
    """Publish, and wait for the answer: any message carrying a response for this id."""
    client = stage.agent.client
    request_id = sent.payload.get("id")
    expected_id = (
        request_id if isinstance(request_id, str) and REQUEST_ID.fullmatch(request_id) else ""
    )
    mark = client.mark()
    properties = (
        response_properties(sent.response_topic, b"corr")
        if sent.response_topic is not None
        else None
    )
    client.publish(json.dumps(sent.payload).encode(), topic=sent.topic, properties=properties)
    try:
        return client.wait_for(lambda r: is_answer(r, expected_id), ANSWER_TIMEOUT_S, mark)
    except TimeoutError:
        stage.healthy = False
        raise NotAnswered(
            f"{sent.action}: no answer within {ANSWER_TIMEOUT_S} s to {sent}"
        ) from None


def expected_answer_topic(sent: Sent) -> tuple[str, bool]:
    """Where the answer must go, and whether the contract requires a rejection."""
    reply = sent.payload.get("reply_to")
    must_reject = "reply_to" in sent.payload and not reply_allowed(reply)
    if sent.response_topic is not None:
        if not reply_allowed(sent.response_topic):
            return f"{PREFIX}/response", True
        return sent.response_topic, must_reject
    if must_reject or reply is None:
        return f"{PREFIX}/response", must_reject
    return str(reply), False


def answer_failure(sent: Sent, answer: Received) -> PropertyFailure | None:
    """What is wrong with an answer by the contract: its topic, its status, its error."""
    body = answer.json()
    topic, must_reject = expected_answer_topic(sent)
    where = (
        f"{sent.action}: answered on {answer.topic!r}, expected {topic!r};"
        f" answer {body}; sent {sent}"
    )
    if topic.startswith("$") and answer.topic == f"{PREFIX}/response":
        topic = answer.topic  # a `$` topic: the broker's to take; a rejection is fine too
    if answer.topic != topic:
        return AnsweredElsewhere(where)
    if must_reject and body["status"] != "rejected":
        return AcceptedForbidden(f"{sent.action}: should be rejected: {where}")
    message = str(body.get("error", {}).get("message", ""))
    if body["status"] == "rejected" and not FIELD_PATH.search(message):
        return RejectedWithoutField(f"{sent.action}: rejection names no field: {where}")
    return None


def check_still_serving(stage: Stage, sent: Sent) -> None:
    process = stage.agent.process.process
    stage.healthy = process is not None and process.poll() is None
    if not stage.healthy:
        raise StoppedServing(f"the agent died on {sent}")
    try:
        answer = stage.agent.client.command(
            {"action": "status", "id": stage.fresh_id()}, timeout=ANSWER_TIMEOUT_S
        )
    except TimeoutError:
        stage.healthy = False
        raise StoppedServing(f"the agent no longer answers `status` after {sent}") from None
    if answer["status"] != "accepted":
        raise StoppedServing(f"`status` after {sent}: {answer}")


def exchange(sent: Sent, stage: Stage) -> PropertyFailure | None:
    """Send, wait for the answer and the job's end, then check the agent still serves;
    what went wrong with the exchange, for after the world is checked."""
    try:
        answer = send(sent, stage)
    except NotAnswered:
        settle(sent, stage)
        raise
    body = answer.json()
    if body["status"] == "accepted":
        try:
            job = stage.agent.client.wait_job(str(body["job"]), JOB_TIMEOUT_S)
        except TimeoutError:
            stage.healthy = False
            return NotAnswered(f"{sent.action}: job {body['job']} never ended; sent {sent}")
        print(f"{sent.action} job {job['state']}: {job.get('error') or job.get('result')}")
    failure = answer_failure(sent, answer)
    check_still_serving(stage, sent)
    return failure


def settle(sent: Sent, stage: Stage) -> None:
    """After a lost answer, wait for the job (if one was made) before the world is read."""
    request_id = sent.payload.get("id")
    if isinstance(request_id, str) and REQUEST_ID.fullmatch(request_id):
        with contextlib.suppress(TimeoutError):
            stage.agent.client.wait_job(request_id, SETTLE_TIMEOUT_S)


def run_case(case: Case, stage: Stage) -> None:
    before = stage.restore_baseline()
    sent, made = prepare(case, stage)
    asked_from, saved_from = len(stage.proxy.requests), len(stage.grafana.saved)
    dashboards = set(stage.grafana.dashboards)
    try:
        before = stage.observe() if made else before
        # What the command may touch depends on the files it names: read while they exist.
        bound = bindings(sent, stage, before)
        try:
            failure = exchange(sent, stage)
        except PropertyFailure as exc:
            failure = exc
        restarted = not stage.healthy and failure is not None
        if restarted and failure is not None:
            failure.args = (f"{failure.args[0]}; {stage.recover_agent()}",)
        after = stage.observe()
    finally:
        _remove(made)
    # Files put in place are gone again, and a restarted agent may still be recovering.
    stage.seen = None if made or restarted else after
    bad = [c for c in changes(before, after) if not allowed(c, sent, bound, stage.atlas.name)]
    bad += [
        Change(o, "changed", before[o], after[o])
        for o in before
        if o.kind == "instance"
        and o in after
        and '"Running"' in before[o]
        and '"Running"' not in after[o]
    ]
    if bad:
        bad.sort(key=lambda c: ("deleted", "changed", "created").index(c.how))
        raise TOUCHED[bad[0].how](
            f"{sent.action} {sent.payload!r} on {sent.topic} (Response Topic"
            f" {sent.response_topic!r}) changed what it may not:\n"
            + "\n".join(f"  {c}" for c in bad)
        ) from failure
    asked = stage.proxy.requests[asked_from:]
    if outside := asked_outside(asked, stage.atlas.name, stage.projects):
        raise AskedOutside(
            f"{sent.action} {sent.payload!r}: the agent asked Incus for\n  " + "\n  ".join(outside)
        ) from failure
    saved = [str(body["dashboard"].get("uid")) for body in stage.grafana.saved[saved_from:]]
    if wrong := grafana_writes(sent, stage, bound, saved, dashboards):
        raise TouchedGrafana(f"{sent.action} {sent.payload!r}: {wrong}") from failure
    if failure is not None:
        raise failure


_CHANGING = re.compile(rb"\A(POST|PUT|PATCH|DELETE) (\S+) HTTP/1\.[01]\r\n")
_PROJECT_NAME = re.compile(rb'"name":\s*"([^"]*)"')


def asked_outside(asked: list[bytes], project: str, projects: Callable[[], set[str]]) -> list[str]:
    """Of the agent's requests that change something, those aimed anywhere but its
    project or a drill project (`atlas-drill-...`) it made, removed and left no trace of;
    each as `METHOD target`. Attributable to the agent alone: other tests share incusd."""
    wrong: list[str] = []
    made: set[str] = set()
    removed: set[str] = set()
    for request in asked:
        match = _CHANGING.match(request)
        if match is None:
            continue
        method, target = match.group(1).decode(), match.group(2).decode(errors="replace")
        url = urlsplit(target)
        where = parse_qs(url.query).get("project", [])
        if url.path == "/1.0/projects" and method == "POST":
            named = _PROJECT_NAME.search(request)
            name = named.group(1).decode(errors="replace") if named else "?"
            made.add(name)
            if not is_drill_project(name):
                wrong.append(f"{method} {target} (project {name!r})")
        elif url.path.startswith("/1.0/projects/"):
            name = unquote(url.path.removeprefix("/1.0/projects/"))
            if method == "DELETE" and name in made:
                removed.add(name)
            else:
                wrong.append(f"{method} {target}")
        elif url.path.startswith("/1.0/operations/"):
            continue  # an operation of its own, cancelled
        elif not (where == [project] or (len(where) == 1 and where[0] in made)):
            wrong.append(f"{method} {target}")
    wrong += [f"project {name!r} made and not removed" for name in sorted(made - removed)]
    if made:  # those there now: read only when needed
        wrong += [f"project {name!r} still there" for name in sorted(made & projects())]
    return wrong


def grafana_writes(
    sent: Sent,
    stage: Stage,
    bound: Mapping[str, list[str]] | None,
    saved: list[str],
    before: set[str],
) -> str:
    """What is wrong with the dashboards written to Grafana: only a valid
    `dashboards_import` of the stage's dashboard set writes, and only the ones it names."""
    created = sorted(set(stage.grafana.dashboards) - before)
    if created:
        return f"dashboards {created} created in Grafana"
    if not saved:
        return ""
    p = sent.payload
    uids = p.get("uids", "all")
    named = DASHBOARD_UIDS if uids == "all" else uids if isinstance(uids, list) else []
    if sent.action != "dashboards_import" or bound is None or p.get("set") != stage.dash_set:
        return f"dashboards {saved} written to Grafana"
    if not set(saved) <= set(named):
        return f"dashboards {saved} written to Grafana for {uids!r}"
    return ""


# ---------------------------------------------------------------------------------------
# The property, and the known-bad inputs, always run
# ---------------------------------------------------------------------------------------

NAME_EXAMPLES = [
    # 1: a `?` in a file name cut the URL to `custom/victim`, and the clean-up deleted it.
    Case("import", {"file": "manual/victim?.tar.zst", "as": "restored"}, materialize=True),
    Case("import", {"file": "manual/victim#.tar.zst", "as": "restored"}, materialize=True),
    Case(
        "import",
        {"file": "manual/victim?project={decoy_project}.tar.zst", "as": "restored"},
        materialize=True,
    ),
    # 6: a catalog reference and a file that are links out of the backup directory.
    Case("import", {"backup": f"{CATALOG_SET}/victim", "as": "restored"}),
    Case("import", {"file": "manual/link-out.tar.gz", "as": "restored"}),
    Case("import", {"file": "manual/out/victim-out.tar.gz", "as": "restored"}),
    # 8: accepted, then failed as jobs: outside paths, `.`, `as` existing, snapshot existing.
    Case("import", {"file": "{outside}/victim-out.tar.gz", "as": "restored"}),
    Case("import", {"file": "{backup_dir}/" + RUNBOOK_VICTIM, "as": "restored"}),
    Case("import", {"file": ".", "as": "restored"}),
    Case("import", {"file": RUNBOOK_VICTIM, "as": "victim"}),
    Case("snapshot", {"volumes": ["grafana01-data"], "name": "snap0"}),
    Case("list", {"volumes": ["victim?x"]}, id="a/b"),
    # 8: a rejection for a missing field names no field.
    Case("restore", {"volume": "grafana01-data", "confirm": "grafana01-data"}),
    # 9: the runbook's own tarball, by replace.
    Case("import", {"file": RUNBOOK_GRAFANA, "replace": True, "confirm": "grafana01-data"}),
    # URL tricks in the one free-text name field, reaching decoys' snapshots and backups.
    Case(
        "import",
        {"file": "manual/victim/snapshots/snap0?.tar.zst", "as": "restored"},
        materialize=True,
    ),
    Case(
        "import", {"file": "manual/grafana01-data/..?.tar.zst", "as": "restored"}, materialize=True
    ),
]


TOPIC_EXAMPLES = [
    # 3: a Response Topic the broker refuses.
    Case("snapshot", {"volumes": ["grafana01-data"], "name": "rt-wildcard"}, response_topic="x/#"),
    # 5: replies on the agent's own state topics and under Home Assistant's prefix.
    Case("status", {}, reply_to=f"{PREFIX}/agent"),
    Case("list", {}, reply_to=f"{PREFIX}/volumes/grafana01-data"),
    Case("status", {}, reply_to=f"{HA_PREFIX}/status"),
    Case("status", {}, response_topic=f"{PREFIX}/jobs/x"),
    # A reply topic Mosquitto refuses (a control character): the broker drops the agent.
    Case("status", {}, reply_to="replies/\x7f"),
]


TestFn = Callable[[Stage, Case], None]


def with_examples(cases: list[Case]) -> Callable[[TestFn], TestFn]:
    def attach(test: TestFn) -> TestFn:
        for case in reversed(cases):
            test = example(case=case)(test)
        return test

    return attach


SETTINGS = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)


@with_examples(NAME_EXAMPLES)
@settings(SETTINGS, max_examples=NAME_MAX_EXAMPLES)
@given(case=cases(hostile_topics=False))
def test_hostile_names_paths_and_ids_touch_nothing_beyond_the_jobs_own(
    stage: Stage, case: Case
) -> None:
    run_case(case, stage)


@with_examples(TOPIC_EXAMPLES)
@settings(SETTINGS, max_examples=TOPIC_MAX_EXAMPLES)
@given(case=cases(hostile_topics=True))
def test_hostile_reply_topics_are_refused_and_every_command_is_answered(
    stage: Stage, case: Case
) -> None:
    run_case(case, stage)


# ---------------------------------------------------------------------------------------
# The actions added after the first property: a few examples each, and their known cases
# ---------------------------------------------------------------------------------------

# Per action: the property's examples are few (CI time), the cases below always run.
LATER_MAX_EXAMPLES = 3
EACH_ACTION = [*LATER_ACTIONS, "drill", "rebuild"]

LATER_EXAMPLES = [
    # Accepted, each touching what is its own: a snapshot's description, a manifest note,
    # the compromise marks (put back before the next example), a new set.
    Case("protect", {"volume": "grafana01-data", "snapshot": "snap0"}),
    Case("unprotect", {"backup": "{set}/grafana01-data"}),
    Case("mark_compromised", {"service": "grafana", "reason": "hostile names"}),
    Case("prune", {"volumes": "all"}),
    Case("dashboards_export", {}),
    Case("dashboards_import", {"set": "{dash_set}", "uids": ["mqtt"]}),
    # Accepted, then ending at Incus (it holds no bucket here) before anything changes.
    Case("state_export", {}),
    Case("state_import", {"backup": "{state_set}/" + STATE_BUCKET, "as": "tfstate-copy"}),
    Case("state_import", {"backup": "{state_set}/tfstate", "replace": True, "confirm": "tfstate"}),
    # The decoy's snapshot; a volume's backup taken for the state bucket's.
    Case("protect", {"volume": "victim", "snapshot": "snap0"}),
    Case("state_import", {"backup": "{set}/grafana01-data", "as": "tfstate-copy"}),
]


def test_every_action_of_the_contract_is_generated() -> None:
    assert sorted(VALID) == sorted(CONTRACT_ACTIONS)
    assert set(MAY) == set(VALID)


def test_requests_outside_the_agents_project_are_found() -> None:
    """`asked_outside` on requests as the proxy keeps them (no Incus needed)."""
    mine, drill = "atlas-it-1", "atlas-drill-20261202-080000-abcdef"

    def request(line: str, body: str = "") -> bytes:
        return f"{line} HTTP/1.1\r\nHost: incus\r\n\r\n{body}".encode()

    fine = [
        request("GET /1.0/storage-pools/local/volumes?project=atlas-decoy-1"),
        request(f"PUT /1.0/storage-pools/local/volumes/custom/v/snapshots/s?project={mine}"),
        request("POST /1.0/projects", json.dumps({"name": drill, "config": {}})),
        request(f"POST /1.0/instances?project={drill}"),
        request(f"DELETE /1.0/projects/{drill}"),
    ]
    assert asked_outside(fine, mine, lambda: {mine}) == []
    wrong = [
        request("DELETE /1.0/storage-pools/local/volumes/custom/victim?project=atlas-decoy-1"),
        request(f"DELETE /1.0/storage-pools/local/volumes/custom/victim?project={mine}&project=x"),
        request("PATCH /1.0/storage-pools/local/volumes/custom/victim"),  # `default`
        request("POST /1.0/projects", json.dumps({"name": "victim"})),
        request("PUT /1.0"),
    ]
    assert len(asked_outside(wrong, mine, lambda: {mine})) == len(wrong) + 1  # `victim` left
    assert asked_outside(fine[2:4], mine, lambda: {mine, drill}) == [
        f"project {drill!r} made and not removed",
        f"project {drill!r} still there",
    ]


@pytest.mark.parametrize("case", LATER_EXAMPLES, ids=lambda c: c.action)
def test_later_actions_known_cases_touch_nothing_beyond_the_jobs_own(
    stage: Stage, case: Case
) -> None:
    run_case(case, stage)


@pytest.mark.parametrize("action", EACH_ACTION)
@settings(SETTINGS, max_examples=LATER_MAX_EXAMPLES)
@given(data=st.data())
def test_hostile_names_through_each_later_action(
    stage: Stage, action: str, data: st.DataObject
) -> None:
    run_case(data.draw(cases(hostile_topics=False, action=action), label="case"), stage)
