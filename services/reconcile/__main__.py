"""`python -m services.reconcile`"""

from services.reconcile.app import build
from services.reconcile.settings import ReconcileSettings
from shared.service import main

if __name__ == "__main__":
    main("reconcile", ReconcileSettings, build)
