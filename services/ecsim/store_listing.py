"""Listing the platform's objects (paging, sorting, search) and the collection each kind is kept in (ids,
integration codes, object limits)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from services.ecsim.store_errors import InvalidInput, Json, LimitExceeded, StoreConflict, StoreNotFound
from services.ecsim.store_inputs import _copy

DEFAULT_PAGE_SIZE: Final = 10


@dataclass(frozen=True, slots=True)
class ListParams:
    """The platform's optional list parameters. Any of page/pageSize given => the list is wrapped."""

    page: int | None = None
    page_size: int | None = None
    sort_by: str | None = None
    descending: bool = False
    search: str | None = None

    def __post_init__(self) -> None:
        if self.page is not None and self.page < 0:
            raise InvalidInput("page must be 0 or more", details=[{"field": "page", "message": ">= 0"}])
        if self.page_size is not None and self.page_size < 1:
            raise InvalidInput("pageSize must be 1 or more", details=[{"field": "pageSize", "message": ">= 1"}])

    @property
    def wrapped(self) -> bool:
        return self.page is not None or self.page_size is not None


@dataclass(frozen=True, slots=True)
class Listing:
    """One answer to a list request: all matches (bare array) or one page of them (wrapped)."""

    items: list[Json]
    total: int
    page: int | None
    page_size: int | None

    def body(self) -> list[Json] | Json:
        if self.page is None:
            return self.items
        return {"total": self.total, "page": self.page, "pageSize": self.page_size, "list": self.items}


def _sort_key(key: str) -> Callable[[Json], tuple[int, Any]]:
    def sort_key(obj: Json) -> tuple[int, Any]:
        value = obj.get(key)
        # Missing values last; mixed types compare by their text so sorting never raises.
        if value is None:
            return (2, "")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return (0, value)
        return (1, str(value).lower())

    return sort_key


def _matches_search(obj: Json, needle: str) -> bool:
    return any(needle in str(v).lower() for v in obj.values() if v is not None)


# --- collections -----------------------------------------------------------------------------------------


@dataclass
class _Collection:
    """Objects of one kind by id (kept in ascending id order), with an integration-code index."""

    kind: str
    id_field: str
    next_id: int
    limit: int
    items: dict[int, Json] = field(default_factory=dict)
    by_code: dict[str, int] = field(default_factory=dict)

    def get(self, obj_id: int) -> Json:
        try:
            return self.items[obj_id]
        except KeyError:
            raise StoreNotFound(f"{self.kind} {obj_id} not found", id=obj_id) from None

    def by_integration_code(self, code: str) -> Json:
        try:
            return self.items[self.by_code[code]]
        except KeyError:
            raise StoreNotFound(f"no {self.kind} with integration code {code!r}", integrationCode=code) from None

    def allocate(self, requested: int | None) -> int:
        if requested is None:
            obj_id = self.next_id
        elif requested in self.items:
            raise StoreConflict(f"{self.kind} {requested} already exists", id=requested)
        else:
            obj_id = requested
        self.next_id = max(self.next_id, obj_id + 1)
        return obj_id

    def check_code(self, code: str | None, owner: int | None = None) -> None:
        if code is not None and self.by_code.get(code, owner) != owner:
            raise StoreConflict(
                f"a {self.kind} with integration code {code!r} already exists",
                integrationCode=code,
                existing=self.by_code[code],
            )

    def check_limit(self) -> None:
        if len(self.items) >= self.limit:
            raise LimitExceeded(f"the limit of {self.limit} {self.kind}s is reached", limit=self.limit)

    def insert(self, obj: Json) -> None:
        obj_id = obj[self.id_field]
        out_of_order = bool(self.items) and obj_id < next(reversed(self.items))
        self.items[obj_id] = obj
        if out_of_order:
            self.items = dict(sorted(self.items.items()))
        if obj.get("integrationCode") is not None:
            self.by_code[obj["integrationCode"]] = obj_id

    def replace(self, obj: Json) -> None:
        obj_id = obj[self.id_field]
        old_code = self.items[obj_id].get("integrationCode")
        if old_code is not None:
            del self.by_code[old_code]
        self.items[obj_id] = obj
        if obj.get("integrationCode") is not None:
            self.by_code[obj["integrationCode"]] = obj_id

    def remove(self, obj_id: int) -> Json:
        obj = self.items.pop(obj_id)
        if obj.get("integrationCode") is not None:
            self.by_code.pop(obj["integrationCode"], None)
        return obj

    def select(
        self,
        params: ListParams,
        *,
        ids: Iterable[int] | None = None,
        where: Callable[[Json], bool] | None = None,
        view: Callable[[Json], Json] = _copy,
    ) -> Listing:
        """Filter (by candidate ``ids`` and ``where``), search, sort and page; ``view`` shapes each item."""
        simple = (
            ids is None and where is None and params.sort_by is None and not params.search and not params.descending
        )
        page_size = params.page_size or DEFAULT_PAGE_SIZE
        page = params.page or 0
        if simple:
            # The common case (page through everything) slices without building the whole list.
            total = len(self.items)
            if not params.wrapped:
                return Listing([view(o) for o in self.items.values()], total, None, None)
            start = page * page_size
            chosen = itertools.islice(self.items.values(), start, start + page_size)
            return Listing([view(o) for o in chosen], total, page, page_size)

        if ids is None:
            candidates: Iterable[Json] = self.items.values()
        else:
            candidates = (self.items[i] for i in sorted(set(ids)) if i in self.items)
        return arrange([view(o) for o in candidates if where is None or where(o)], params)


def arrange(views: list[Json], params: ListParams) -> Listing:
    """Search, sort and page items already filtered and shaped, as the platform's list endpoints do."""
    if params.search:
        needle = params.search.lower()
        views = [v for v in views if _matches_search(v, needle)]
    if params.sort_by:
        views.sort(key=_sort_key(params.sort_by), reverse=params.descending)
    elif params.descending:
        views.reverse()
    if not params.wrapped:
        return Listing(views, len(views), None, None)
    page, page_size = params.page or 0, params.page_size or DEFAULT_PAGE_SIZE
    start = page * page_size
    return Listing(views[start : start + page_size], len(views), page, page_size)
