"""`python -m services.publish`"""

from services.publish.app import build
from services.publish.settings import PublishSettings
from shared.service import main

if __name__ == "__main__":
    main("publish", PublishSettings, build)
