"""`python -m services.ingest`"""

from services.ingest.app import build
from services.ingest.settings import IngestSettings
from shared.service import main

if __name__ == "__main__":
    main("ingest", IngestSettings, build)
