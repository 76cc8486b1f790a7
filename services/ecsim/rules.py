"""Segment rules as the platform writes them: trait ids suffixed with ``T`` combined with AND/OR/NOT.

Grammar (keywords are case-insensitive)::

    rule     := or
    or       := and ("OR" and)*
    and      := unary ("AND" unary)*
    unary    := "NOT" unary | primary
    primary  := TRAIT | "(" or ")" | function
    function := ("FREQUENCY" | "RECENCY") "(" "[" TRAIT ("," TRAIT)* "]" [OP DAYS] ")" [OP (INT | DAYS)]
    TRAIT    := digits "T"        e.g. 123T
    DAYS     := digits "D"        e.g. 7D
    OP       := "<" | "<=" | ">" | ">=" | "==" | "!="

The recency/frequency form follows the platform's documented ``FREQUENCY([123T,456T] <op> nD) <op> n``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

MAX_RULE_LENGTH: Final = 10_000

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<trait>\d+)T\b
      | (?P<days>\d+)D\b
      | (?P<int>\d+)\b
      | (?P<kw>AND|OR|NOT|FREQUENCY|RECENCY)\b
      | (?P<op><=|>=|==|!=|<|>)
      | (?P<punct>[()\[\],])
    )""",
    re.IGNORECASE | re.VERBOSE,
)


class RuleError(ValueError):
    """The rule does not parse; ``position`` is the character offset where parsing stopped."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} at position {position}")
        self.position = position


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str
    value: str
    pos: int


def _tokenize(rule: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    end = len(rule.rstrip())
    while pos < end:
        match = _TOKEN.match(rule, pos)
        if match is None or match.end() == pos:
            raise RuleError("unexpected character", pos)
        kind = match.lastgroup
        assert kind is not None
        value = match.group(kind)
        tokens.append(_Tok(kind, value.upper() if kind == "kw" else value, match.start(kind)))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, rule: str) -> None:
        self.tokens = _tokenize(rule)
        self.i = 0
        self.end = len(rule)
        self.traits: list[int] = []

    def _peek(self) -> _Tok | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _pos(self) -> int:
        tok = self._peek()
        return tok.pos if tok is not None else self.end

    def _accept(self, kind: str, value: str | None = None) -> _Tok | None:
        tok = self._peek()
        if tok is not None and tok.kind == kind and (value is None or tok.value == value):
            self.i += 1
            return tok
        return None

    def _expect(self, kind: str, value: str | None = None, what: str | None = None) -> _Tok:
        tok = self._accept(kind, value)
        if tok is None:
            raise RuleError(f"expected {what or value or kind}", self._pos())
        return tok

    def parse(self) -> list[int]:
        if not self.tokens:
            raise RuleError("empty rule", 0)
        self._or()
        if self._peek() is not None:
            raise RuleError("unexpected token", self._pos())
        return self.traits

    def _or(self) -> None:
        self._and()
        while self._accept("kw", "OR"):
            self._and()

    def _and(self) -> None:
        self._unary()
        while self._accept("kw", "AND"):
            self._unary()

    def _unary(self) -> None:
        if self._accept("kw", "NOT"):
            self._unary()
        else:
            self._primary()

    def _primary(self) -> None:
        if tok := self._accept("trait"):
            self.traits.append(int(tok.value))
        elif self._accept("punct", "("):
            self._or()
            self._expect("punct", ")")
        elif self._accept("kw", "FREQUENCY") or self._accept("kw", "RECENCY"):
            self._function()
        else:
            raise RuleError("expected a trait (like 123T), NOT, '(' or FREQUENCY/RECENCY", self._pos())

    def _function(self) -> None:
        self._expect("punct", "(")
        self._expect("punct", "[")
        self.traits.append(int(self._expect("trait", what="a trait (like 123T)").value))
        while self._accept("punct", ","):
            self.traits.append(int(self._expect("trait", what="a trait (like 123T)").value))
        self._expect("punct", "]")
        if self._accept("op"):
            self._expect("days", what="a number of days (like 7D)")
        self._expect("punct", ")")
        if self._accept("op") and not (self._accept("int") or self._accept("days")):
            raise RuleError("expected a number", self._pos())


def trait_ids(rule: str) -> list[int]:
    """The trait ids ``rule`` refers to, in order of appearance; :class:`RuleError` if it does not parse."""
    if len(rule) > MAX_RULE_LENGTH:
        raise RuleError(f"rule longer than {MAX_RULE_LENGTH} characters", MAX_RULE_LENGTH)
    return _Parser(rule).parse()
