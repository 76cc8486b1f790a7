"""The HTTP API's bodies (``/api/...`` on reconcile): pydantic models, the source of schemas/openapi.yaml.

Requests are strict (an unknown field is an error: a typo must not silently become a default); responses
carry what the status page and ``audience-bridge run`` show, as typed fields.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.messages import ExportMode, Name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExportBody(_Strict):
    """An export request, as ``audience-bridge export`` takes it. Who asks is the authenticated user."""

    request_id: uuid.UUID | None = Field(
        None,
        description="Makes the request idempotent: the same id asks for one export, however often it is sent "
        "(a workflow engine retrying after a timeout). Without it, the server picks one.",
    )
    list: Name = Field(description="The campaign list (its name or id).")
    audience: Name = Field(description="The shared audience's name on the platform.")
    data_source: Name = Field(description="The data source whose IDs identify the audience.")
    mode: ExportMode = Field("append", description="append, mirror or full (see the README's Exporting).")


class ExportAccepted(BaseModel):
    """Where the request stands: poll ``run_url`` until ``state`` is an ended state."""

    request_id: uuid.UUID
    state: str = Field(description="requested (not picked up yet), or its latest run's state.")
    run_id: uuid.UUID | None = Field(None, description="Its latest run, once reconcile picked it up.")
    run_url: str = Field(description="GET it to follow the request (by request id until a run exists).")


class RunFile(BaseModel):
    """One file an export run uploaded, and what the platform's receipt says of it."""

    file: str
    lines_uploaded: int
    receipt: str
    lines_applied: int | None
    lines_rejected: int | None
    rejected_by: dict[str, int]
    reason: str | None
    uploaded_at: datetime


class RunView(BaseModel):
    """A run: its state, counts and (an export's) files."""

    run_id: uuid.UUID | None = Field(description="None while the request waits to be picked up.")
    request_id: uuid.UUID | None
    direction: Literal["import", "export"] | None
    audience_id: str | None
    audience_name: str | None
    mode: str | None
    state: str
    counts: dict[str, int]
    reason: str | None
    started_at: datetime | None
    finished_at: datetime | None
    released_by: str | None
    files: list[RunFile] = Field(default_factory=list)


class AudienceView(BaseModel):
    audience_id: str
    name: str
    direction: Literal["import", "export"]
    data_source: str
    id_type: str
    list_name: str | None
    list_size: int
    export_mode: str | None
    last_state: str | None
    last_started_at: datetime | None


class AudienceList(BaseModel):
    audiences: list[AudienceView]


class ScheduleView(BaseModel):
    schedule_id: int
    list: str
    audience: str
    data_source: str
    mode: str
    every_s: int | None = Field(description="The interval in seconds (None: a cron schedule).")
    cron: str | None = Field(description="The cron expression, UTC (None: an interval schedule).")
    paused: bool
    created_by: str
    last_run_at: datetime | None = Field(description="When its last slot was fired.")
    last_slot: datetime | None
    last_request_id: uuid.UUID | None = Field(description="The export request its last slot fired.")
    next_run_at: datetime | None = Field(description="When it fires next (None while paused).")


class ScheduleList(BaseModel):
    schedules: list[ScheduleView]


class DryRunSamples(BaseModel):
    to_add: list[str]
    to_remove: list[str]
    excluded: list[str] = Field(description="Recipient ids left out for lack of an ID in the data source.")
    opted_out: list[str] = Field(description="Recipient ids left out for their consent (opted out).")


class DryRunView(BaseModel):
    """The run the request would make now. Nothing was recorded or sent."""

    audience_id: str
    list_id: int
    mode: str
    verdict: Literal["would_run", "would_wait", "would_be_held", "would_be_refused", "would_be_blocked"]
    reason: str | None = Field(description="Why it would wait, be held, refused or blocked.")
    received: int = Field(description="Recipients in the list.")
    to_add: int
    to_remove: int
    excluded: int = Field(description="Recipients without an ID in the data source.")
    shared: int = Field(description="IDs the audience holds from the bridge now.")
    opted_out: int = Field(description="Recipients left out for their consent (opted out).")
    samples: DryRunSamples


class ActionDone(BaseModel):
    """What release, cancel or retry did."""

    run_id: uuid.UUID
    state: str
    counts: dict[str, int] = Field(default_factory=dict)
    request_id: uuid.UUID | None = Field(None, description="retry: the new export request.")
    run_url: str | None = None


class Problem(BaseModel):
    """RFC 9457 problem details (``application/problem+json``)."""

    type: str = Field("about:blank", description="A URI reference naming the kind of problem.")
    title: str
    status: int
    detail: str | None = None
    instance: str | None = Field(None, description="The request path.")
    errors: list[dict[str, str]] | None = Field(None, description="Invalid request fields: where and what.")
