"""The demo's campaign streams: recipient changes, a click, an opt-out and an erasure, each checked.

After the demo's export, new recipients stream in on ``recipient-changes`` and join the targeted list; a click
on ``visitor-links`` links one of them to an ECID the engaged-visitors import could not place (it joins that
list at once); the audience is exported; then one recipient changes e-mail, one opts out and one is erased
(a streamed delete); the next mirror export must carry exactly that to the platform. The demo's own recipients
are deleted again at the end (streamed deletes), so the next demo starts from the population alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson

from services.cli.demo_setup import EXPORT_AUDIENCE, TARGETED_LIST
from shared.errors import BridgeError
from shared.kafka import OutgoingMessage, Producer, ensure_topics
from shared.messages import AudienceExportRequest, Message, RecipientChange, VisitorLink, utcnow
from shared.runs.states import ENDED_STATES
from shared.settings import KafkaSettings
from shared.topics import AUDIENCE_EXPORT_REQUESTS, RECIPIENT_CHANGES, VISITOR_LINKS, topic_name

Admin = Callable[..., Awaitable[Any]]
Check = tuple[str, bool, str]
ENGAGED_AUDIENCE = "demo-engaged-visitors"
ENGAGED_LIST = "Demo: engaged visitors"


def sha256_email(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


class StreamsFailed(BridgeError):
    """A streamed change did not arrive in time."""


class CampaignStreams:
    def __init__(self, kafka: KafkaSettings, admin: Admin, timeout_s: float) -> None:
        self._kafka = kafka
        self._admin = admin
        self._timeout = timeout_s

    async def run(self, conn: Any, first_new_id: int) -> list[Check]:
        changed, opted_out, erased, clicker = (first_new_id + i for i in range(4))
        checks: list[Check] = []
        producer = Producer(self._kafka, "demo")
        topics = [topic_name(self._kafka.topic_prefix, t) for t in (RECIPIENT_CHANGES, VISITOR_LINKS)]
        await ensure_topics(self._kafka, [*topics, topic_name(self._kafka.topic_prefix, AUDIENCE_EXPORT_REQUESTS)])
        try:
            people = (changed, opted_out, erased, clicker)
            await self._send(producer, RECIPIENT_CHANGES, [self._upsert(r, f"stream.{r}@example.com") for r in people])
            await self._until(conn, "SELECT count(*) = 4 FROM recipient WHERE recipient_id = ANY($1::bigint[])", people)
            checks.append(await self._click(conn, producer, clicker))
            await conn.execute(
                """INSERT INTO list_member (list_id, recipient_id) SELECT l.list_id, r FROM list l,
                          unnest($2::bigint[]) r WHERE l.name = $1 ON CONFLICT DO NOTHING""",
                TARGETED_LIST,
                [changed, opted_out, erased],
            )
            await self._export(conn, producer)
            await self._send(
                producer,
                RECIPIENT_CHANGES,
                [
                    self._upsert(changed, f"moved.{changed}@example.com"),
                    self._upsert(opted_out, f"stream.{opted_out}@example.com", opted_out=True),
                    RecipientChange(recipient_id=erased, op="delete", changed_at=utcnow()),
                ],
            )
            await self._until(conn, "SELECT count(*) = 0 FROM recipient WHERE recipient_id = $1", erased)
            await self._until(conn, "SELECT opted_out FROM recipient WHERE recipient_id = $1", opted_out)
            counts = await self._export(conn, producer)
            checks += await self._platform_checks(conn, changed, opted_out, erased, counts)
        finally:
            # The demo's own recipients go again (the next demo starts from the population alone).
            deletes = [RecipientChange(recipient_id=r, op="delete", changed_at=utcnow()) for r in people]
            await self._send(producer, RECIPIENT_CHANGES, deletes)
            await producer.stop()
        return checks

    @staticmethod
    def _upsert(recipient_id: int, email: str, *, opted_out: bool = False) -> RecipientChange:
        return RecipientChange(
            recipient_id=recipient_id, op="upsert", email=email, opted_out=opted_out, changed_at=utcnow()
        )

    async def _send(self, producer: Producer, base: str, messages: Sequence[Message]) -> None:
        topic = topic_name(self._kafka.topic_prefix, base)
        await producer.send([OutgoingMessage.of(topic, m) for m in messages])

    async def _until(self, conn: Any, sql: str, *args: Any) -> float:
        started = time.monotonic()
        while not await conn.fetchval(sql, *args):
            if time.monotonic() - started > self._timeout:
                raise StreamsFailed("a streamed change was not applied in time", query=sql.split(" FROM ")[0])
            await asyncio.sleep(0.05)
        return time.monotonic() - started

    async def _click(self, conn: Any, producer: Producer, clicker: int) -> Check:
        title = "a click puts an unmatched ECID's recipient in its list"
        ecid = await conn.fetchval(
            "SELECT id FROM unmatched_id WHERE audience_id = $1 AND reason = 'unknown_ecid' ORDER BY id LIMIT 1",
            ENGAGED_AUDIENCE,
        )
        if ecid is None:
            return (title, False, "no unmatched ECID to click with")
        await self._send(producer, VISITOR_LINKS, [VisitorLink(ecid=ecid, recipient_id=clicker, seen_at=utcnow())])
        seconds = await self._until(
            conn,
            """SELECT EXISTS (SELECT 1 FROM list_member JOIN list USING (list_id)
                               WHERE list.name = $1 AND recipient_id = $2)""",
            ENGAGED_LIST,
            clicker,
        )
        return (title, True, f"recipient {clicker} joined {ENGAGED_LIST!r} {seconds:.1f}s after the click")

    async def _export(self, conn: Any, producer: Producer) -> dict[str, int]:
        request = AudienceExportRequest(
            list_id=TARGETED_LIST,
            audience_name=EXPORT_AUDIENCE,
            data_source="hashed-emails",
            mode="mirror",
            requested_by="demo",
        )
        await producer.send_model(topic_name(self._kafka.topic_prefix, AUDIENCE_EXPORT_REQUESTS), request)
        await self._until(
            conn,
            "SELECT state = ANY($2::text[]) FROM run WHERE request_id = $1",
            request.request_id,
            list(ENDED_STATES),
        )
        row = await conn.fetchrow("SELECT state, reason, counts FROM run WHERE request_id = $1", request.request_id)
        if row["state"] != "succeeded":
            raise StreamsFailed("the demo's stream export did not succeed", state=row["state"], reason=row["reason"])
        return {k: int(v) for k, v in orjson.loads(row["counts"]).items()}

    async def _platform_checks(
        self, conn: Any, changed: int, opted_out: int, erased: int, counts: dict[str, int]
    ) -> list[Check]:
        trait = await conn.fetchval(
            "SELECT platform_trait_id FROM shared_audience WHERE direction = 'export' AND name = $1", EXPORT_AUDIENCE
        )
        expected_gone = {
            sha256_email(f"stream.{changed}@example.com"),
            sha256_email(f"stream.{opted_out}@example.com"),
            sha256_email(f"stream.{erased}@example.com"),
        }
        new_key = sha256_email(f"moved.{changed}@example.com")
        held: set[str] = set()
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            await self._admin("POST", "/sim/inbound/scan")
            body = await self._admin("GET", f"/sim/traits/{trait}/members?ids=true&pageSize=1000000")
            held = set(body["ids"])
            if new_key in held and not held & expected_gone:
                break
            await asyncio.sleep(0.5)
        return [
            (
                "an e-mail change moved the declared key on the platform",
                new_key in held and sha256_email(f"stream.{changed}@example.com") not in held,
                f"recipient {changed}: new hash {'held' if new_key in held else 'missing'}",
            ),
            (
                "an opt-out and an erasure left the platform, the opt-out counted",
                not (held & (expected_gone - {sha256_email(f"stream.{changed}@example.com")}))
                and counts.get("opted_out") == 1,
                f"recipients {opted_out} (opted out, counted {counts.get('opted_out', 0)}) and {erased} (erased)",
            ),
        ]
