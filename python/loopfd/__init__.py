"""loopfd: loop devices for unprivileged programs, through loopfd-helper.

    import loopfd
    with loopfd.connect() as session:          # setuid helper, or LOOPFD_SOCKET / socket=
        with session.attach("disk.img") as dev:
            os.write(dev.fd, data)              # leaving the block releases: flushed, detached
        devs = session.attach_batch(["a.img", loopfd.AttachEntry("b.img", read_only=True)])
        results = session.release_batch(devs)  # one ReleaseResult each, in order
    for part in loopfd.read_partitions("disk.img"):
        ...

The wire protocol is protocol/PROTOCOL.md; this package is a second client
of it, standard library only, with the C API's names (client/loopfd.h).
"""

from ._paths import VERSION as __version__
from .errors import (BackingAccessError, BackingFsError, BackingKindError, BackingLoopError,
                     BadOptionError, BusyError, ConfigError, ConnectError, ControlError,
                     DataLostError, DeviceChangedError, Error, FdCountError,
                     ForbiddenOptionError, HelperError, KernelError, LimitError,
                     MalformedError, NoDeviceError, NoHelloError, NotAuthorizedError,
                     ProtocolError, QuotaGlobalError, QuotaSessionError, QuotaUserError,
                     UnknownDeviceError, UnknownOpError, VersionError)
from .partitions import Partition, PartitionError, Table, read_partitions, read_table, select
from .protocol import (AUTOCLEAR, DIRECT_IO, FEAT_BATCH, FEAT_DIRECT_IO, FEAT_GRANT,
                       FEAT_PARTSCAN, GRANT, MODE_LISTEN, MODE_SETUID, MODE_SYSTEMD, PARTSCAN, READ_ONLY,
                       Reason)
from .session import AttachEntry, Device, Info, Receipt, ReleaseResult, Session, connect

__all__ = [
    "__version__", "connect", "Session", "Device", "Info", "Receipt", "Reason",
    "AttachEntry", "ReleaseResult",
    "read_partitions", "read_table", "select", "Partition", "Table", "PartitionError",
    "READ_ONLY", "PARTSCAN", "DIRECT_IO", "GRANT", "AUTOCLEAR",
    "FEAT_GRANT", "FEAT_PARTSCAN", "FEAT_DIRECT_IO", "FEAT_BATCH",
    "MODE_SETUID", "MODE_LISTEN", "MODE_SYSTEMD",
    "Error", "ConnectError", "ProtocolError", "HelperError", "LimitError",
    "MalformedError", "VersionError", "UnknownOpError", "NoHelloError", "FdCountError",
    "ControlError", "NotAuthorizedError", "ConfigError", "ForbiddenOptionError",
    "BadOptionError", "BackingKindError", "BackingAccessError", "BackingFsError",
    "BackingLoopError", "QuotaUserError", "QuotaGlobalError", "QuotaSessionError",
    "NoDeviceError", "KernelError", "UnknownDeviceError", "DeviceChangedError",
    "DataLostError", "BusyError",
]
