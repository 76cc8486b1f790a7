"""The services and their settings models, for tooling (docs, compose/k8s checks)."""

from __future__ import annotations

from services.ecsim.settings import EcsimSettings
from services.ingest.settings import IngestSettings
from services.publish.settings import PublishSettings
from services.reconcile.settings import ReconcileSettings
from shared.settings import BaseServiceSettings

SETTINGS: dict[str, type[BaseServiceSettings]] = {
    "ingest": IngestSettings,
    "reconcile": ReconcileSettings,
    "publish": PublishSettings,
    "ecsim": EcsimSettings,
}


def env_names(cls: type[BaseServiceSettings]) -> set[str]:
    return {name.upper() for name in cls.model_fields}
