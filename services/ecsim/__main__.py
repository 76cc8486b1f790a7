"""`python -m services.ecsim`"""

from services.ecsim.app import build
from services.ecsim.settings import EcsimSettings
from shared.service import main

if __name__ == "__main__":
    main("ecsim", EcsimSettings, build)
