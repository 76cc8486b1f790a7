"""`python -m services.reconcile`"""

import gc

from services.reconcile.app import build
from services.reconcile.settings import ReconcileSettings
from shared.service import main

if __name__ == "__main__":
    # The modules loaded so far (most of the heap) live as long as the process: frozen, out of the collector's
    # walks. A poll of 5,000 recipient changes allocates ~30,000 objects, each young collection they trigger
    # walking the generation they are promoted to with the startup's objects (~25% of decoding a change,
    # issue 18's benchmark). The pace of collections stays the default: with a slower one (young collections
    # every 50,000 allocations) reconcile's RSS reached 850 MB in that benchmark, against 130 MB.
    gc.freeze()
    main("reconcile", ReconcileSettings, build)
