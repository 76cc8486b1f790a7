"""A drop zone that hangs, for the fault scenario: a delivered batch whose part cannot be opened for a while.

The file drop zone offers regular files only (a FIFO is never read), so the hang is a regular file under a
write lease (fcntl F_SETLEASE, Linux): a blocking open() waits until the driver gives the lease up (or the
kernel breaks it after /proc/sys/fs/lease-break-time, 45 s by default; the hang stays below that), and the
drop zone's open, which does not block, is refused (EWOULDBLOCK) for as long. Ingest must take that as the
zone being unavailable, go on with other batches meanwhile, and process this batch once when it can be read.
The lease also tells whether anyone tried to open the file while it hung (a fault nobody met proves nothing).
"""

from __future__ import annotations

import fcntl
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from shared.formats.outbound import OutboundRow
from tests.helpers import deliver_outbound

MAX_HANG_S = 40.0  # below the kernel's lease-break-time (45 s by default)


@dataclass
class HangingBatch:
    batch_root: str
    leases: list[int]  # the driver's descriptors holding a write lease on each part

    def release(self) -> bool:
        """Give the leases up (the blocked opens go on); True when someone was blocked on a part."""
        met = False
        for fd in self.leases:
            # A lease break pending (someone opening the file) shows as the lease it must come down to.
            met = met or fcntl.fcntl(fd, fcntl.F_GETLEASE) != fcntl.F_WRLCK
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
            os.close(fd)
        self.leases = []
        return met


def deliver_hanging(zone: Path, rows: list[OutboundRow], ts: int) -> HangingBatch:
    """Deliver an ``iter`` batch of the visitors' data source whose parts hang when opened, until released.
    Call from the main thread: the lease's break notice (SIGIO) is ignored, as its default would end us."""
    signal.signal(signal.SIGIO, signal.SIG_IGN)
    aside = zone.parent / f"hanging-{ts}"
    aside.mkdir(parents=True, exist_ok=True)
    batch = deliver_outbound(aside, "iter", rows, ts)
    parts = sorted(p.name for p in aside.iterdir() if p.name != batch.info_name)
    leases = []
    for name in parts:
        fd = os.open(aside / name, os.O_RDONLY)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
        leases.append(fd)
        os.replace(aside / name, zone / name)  # the lease is the file's: it moves with it
    os.replace(aside / batch.info_name, zone / batch.info_name)
    aside.rmdir()
    return HangingBatch(batch_root=batch.batch_root, leases=leases)
