"""`python -m services.reconcile`"""

import gc

from services.reconcile.app import build
from services.reconcile.settings import ReconcileSettings
from shared.service import main

# Full collections ten times rarer than CPython's default (after 100 middle ones, not 10): each walks every object
# alive, and a busy stream keeps a poll's worth of records queued for each partition waiting for its turn
# (~60,000 objects): ~71 full collections a million changes in issue 18's benchmark, 1.3 of 7.5 CPU seconds in a
# harness of its consumer.
# Young and middle collections keep their pace, so short-lived cycles are freed as soon as before; the one found
# that lived long (a paused partition's records dropped by aiokafka) no longer happens: partitions are held,
# not paused (shared/kafka/partitions.py).
COLLECTOR_THRESHOLDS: tuple[int, int, int] = (700, 10, 100)

if __name__ == "__main__":
    # The modules loaded so far (most of the heap) live as long as the process: frozen, out of the collector's
    # walks. A poll of 5,000 recipient changes allocates ~30,000 objects, each young collection they trigger
    # walking the generation they are promoted to with the startup's objects (~25% of decoding a change,
    # issue 18's benchmark). The pace of collections stays the default: with a slower one (young collections
    # every 50,000 allocations) reconcile's RSS reached 850 MB in that benchmark, against 130 MB.
    gc.freeze()
    gc.set_threshold(*COLLECTOR_THRESHOLDS)
    main("reconcile", ReconcileSettings, build)
