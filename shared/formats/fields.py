"""Field rules both directions' formats share, in file names and in lines.

* ``digits``: ASCII decimal digits only (``str.isdigit`` alone accepts e.g. Arabic-Indic digits).
* ``MAX_ID``, ``id_value``, ``id_tokens``: trait and segment ids are non-negative 64-bit integers (what
  Postgres' bigint holds), read from a token or written as one.
* ``BadToken``: what a line grammar raises for a token it cannot read; its parser turns it into a
  ``LineError`` whose detail is the token, ``clip``-ped.
* ``check_user_id``: what a writer refuses as the user id that starts every line.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final, Literal

from shared.formats import InvalidRecord

MAX_ID: Final = 2**63 - 1  # what Postgres' bigint holds


def digits(s: str) -> bool:
    return s.isascii() and s.isdigit()


def clip(s: str, n: int = 100) -> str:
    return s if len(s) <= n else s[:n] + "…"


class BadToken(Exception):
    def __init__(self, token: str) -> None:
        super().__init__(token)
        self.token = token


def id_value(s: str, token: str) -> int:
    """``s`` as an id; raises ``BadToken(token)`` when it is not a non-negative 64-bit integer."""
    if not (s.isascii() and s.isdigit()):  # digits(s), inline: this runs once per token
        raise BadToken(token)
    n = int(s)
    if n > MAX_ID:
        raise BadToken(token)
    return n


def id_tokens(ids: Collection[int], kind: Literal["segment", "trait"], prefix: str = "") -> list[str]:
    """``<prefix><id>`` for each id, in order. Raises ``InvalidRecord`` for one that is not a non-negative
    64-bit integer."""
    out = []
    for i in ids:
        if type(i) is not int or not 0 <= i <= MAX_ID:
            raise InvalidRecord(f"{kind} id is not a non-negative 64-bit integer", **{f"{kind}_id": repr(i)})
        out.append(prefix + str(i))
    return out


def check_user_id(user_id: str, separator: str, separator_name: str) -> None:
    """Raises ``InvalidRecord`` when ``user_id`` cannot start a line whose fields ``separator`` separates."""
    problem = None
    if not user_id:
        problem = "empty user id"
    elif separator in user_id or "\n" in user_id or "\r" in user_id:
        problem = f"user id contains {separator_name} or a line break"
    elif user_id[0] == "\ufeff":
        problem = "user id starts with a byte order mark"
    if problem is not None:
        raise InvalidRecord(problem)
