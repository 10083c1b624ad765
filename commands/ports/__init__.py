"""What commands need from the outside world, as Protocols the agent's adapters implement,
one module per port (`incus`, `backup_files`, `exports`, `archives`, `catalog`,
`dashboards`, `state_bucket`; `streams` for what they share). Everything is re-exported
here, so a command imports `from commands.ports import Incus`.

Commands import these, never pylxd or paho: dependencies point schemas <- commands <- agent.
"""

from commands.ports.archives import (
    ArchiveIndex,
    ArchiveInspector,
    ArchiveTree,
)
from commands.ports.backup_files import (
    BackupFile,
    BackupFiles,
)
from commands.ports.catalog import (
    Catalog,
    CatalogItem,
    CatalogListing,
    ExportRecord,
)
from commands.ports.dashboards import (
    Dashboard,
    DashboardFiles,
    Grafana,
    SavedDashboards,
)
from commands.ports.exports import (
    ExportedFile,
    ExportFiles,
    ExportSpec,
)
from commands.ports.incus import (
    BackupCompression,
    BackupInfo,
    BackupStream,
    ExecResult,
    Incus,
    InstanceDefinition,
    Sandbox,
    ServerInfo,
    SnapshotInfo,
    VolumeInfo,
)
from commands.ports.state_bucket import (
    StateBucket,
    StateBucketMode,
)
from commands.ports.streams import (
    BinaryReader,
    Checkpoint,
    ImportSource,
    KernelBody,
    KernelReadable,
    ProgressCallback,
    VerifiedReader,
)

__all__ = [
    "ArchiveIndex",
    "ArchiveInspector",
    "ArchiveTree",
    "BackupCompression",
    "BackupFile",
    "BackupFiles",
    "BackupInfo",
    "BackupStream",
    "BinaryReader",
    "Catalog",
    "CatalogItem",
    "CatalogListing",
    "Checkpoint",
    "Dashboard",
    "DashboardFiles",
    "ExecResult",
    "ExportFiles",
    "ExportRecord",
    "ExportSpec",
    "ExportedFile",
    "Grafana",
    "ImportSource",
    "Incus",
    "InstanceDefinition",
    "KernelBody",
    "KernelReadable",
    "ProgressCallback",
    "Sandbox",
    "SavedDashboards",
    "ServerInfo",
    "SnapshotInfo",
    "StateBucket",
    "StateBucketMode",
    "VerifiedReader",
    "VolumeInfo",
]
