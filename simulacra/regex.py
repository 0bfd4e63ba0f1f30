"""Regular expressions from users, on RE2: linear time, and a bound on the work of a match.

Stubs (``urlPattern``, JSONPath ``=~`` and ``match()``/``search()``, XPath ``re:test``) and
cloud behaviors (criteria) carry regular expressions written by users. Python's ``re``
backtracks: ``^/(a+)+$`` against forty ``a`` and a ``!`` runs for hours, and the server has
one event loop. RE2 never backtracks; what needs backtracking (backreferences, lookaround)
does not compile, so a stub or behavior using it is refused when it is stored.

Linear is in the text *times the pattern*: when RE2's DFA thrashes it falls back to an NFA
that costs about 0.5 µs per byte for a small pattern and ~8 ns per byte per instruction of
a large one (measured). So every match is charged ``bytes * max(program size, 64)`` units
to a ``Work`` budget *before* it runs; a match that would go over raises ``OverBudget``
and its caller decides (a stub does not match, a criterion does not hold).
"""

from __future__ import annotations

from typing import Literal

import re2

from simulacra.errors import Invalid, shown

# The work one evaluation (a matcher on a request, a criterion on a value) may spend on
# regular expressions: about 20 ms when every byte costs what it does at worst.
WORK_UNITS = 2_000_000
_MIN_COST = 64  # a thrashing DFA costs ~0.5 µs a byte however small the pattern
MAX_PATTERN_CHARS = 16 * 1024
# A match costing less is not worth counting: at worst ~60 µs (a DFA thrashing on 128
# bytes), usually well under 1 µs, and scenarios try thousands of stubs' patterns.
SMALL_UNITS = 128 * _MIN_COST
# RE2's memory per pattern bounds its compile time (~8 ms at worst, Unicode classes
# repeated) and its DFA cache; a larger program does not compile ("pattern too large").
_MAX_MEMORY = 256 * 1024

_OPTIONS = re2.Options()
_OPTIONS.max_mem = _MAX_MEMORY
_OPTIONS.never_capture = True  # only "does it match?" is ever asked: no submatch work
_OPTIONS.log_errors = False  # RE2 would print every refused pattern on stderr

Anchor = Literal["search", "match", "fullmatch"]


class OverBudget(Exception):
    """An evaluation went over its ``Work``: its answer is unknown, not False."""


class Work:
    """What one evaluation may still spend, in units (see the module docstring)."""

    __slots__ = ("left", "units")

    def __init__(self, units: int = WORK_UNITS) -> None:
        self.units = self.left = units

    def charge(self, units: int) -> None:
        self.left -= units
        if self.left < 0:
            raise OverBudget

    @property
    def spent(self) -> int:
        """What was charged, up to the budget (a refused charge did not run)."""
        return min(self.units - self.left, self.units)


class LinearRegex:
    """One user pattern compiled by RE2; ``where`` names it in the 400 when it is refused.

    ``flags`` are inline flag letters RE2 knows (``i``, ``m``, ``s``), for the syntaxes
    that write them apart from the pattern (JSONPath ``/re/i``, EXSLT ``re:test``).
    """

    __slots__ = ("_cost", "_regex", "flags", "pattern")

    def __init__(self, pattern: str, where: str, flags: str = "") -> None:
        if len(pattern) > MAX_PATTERN_CHARS:
            raise Invalid(
                f"{where} is {len(pattern)} characters long; at most {MAX_PATTERN_CHARS}"
                " are accepted"
            )
        self.pattern = pattern
        self.flags = flags
        text = f"(?{flags}){pattern}" if flags else pattern
        try:
            self._regex = re2.compile(text, _OPTIONS)
        except re2.error as exc:
            reason = _reason(exc)
            if "pattern too large" in reason:
                raise Invalid(
                    f"{where} {shown(pattern)} compiles to more than {_MAX_MEMORY} bytes;"
                    " simplify it (large counted repetitions of Unicode classes cost most)"
                ) from None
            raise Invalid(
                f"{where} {shown(pattern)} is not accepted ({reason}): only"
                " linear-time regular expressions (RE2 syntax) are accepted, without"
                " backreferences or lookaround"
            ) from None
        self._cost = max(self._regex.programsize, _MIN_COST)

    def is_small(self, text: str) -> bool:
        """Whether matching ``text`` is too cheap to count (``search_small``)."""
        return len(text) * self._cost <= SMALL_UNITS and text.isascii()

    def search_small(self, text: str) -> bool:
        """``search`` for a text ``is_small`` says is small."""
        return self._regex.search(text.encode("ascii")) is not None  # bytes: no offset work

    def search(self, text: str, work: Work) -> bool:
        """Whether the pattern occurs anywhere in ``text`` (Python's ``re.search``)."""
        return self._run("search", text, work)

    def match(self, text: str, work: Work) -> bool:
        """Whether ``text`` starts with a match (Python's ``re.match``)."""
        return self._run("match", text, work)

    def fullmatch(self, text: str, work: Work) -> bool:
        return self._run("fullmatch", text, work)

    def _run(self, anchor: Anchor, text: str, work: Work) -> bool:
        # A str of n characters is n to 4n bytes: charge n first, so a text far over the
        # budget is refused before it is encoded, then the rest once its size is known.
        work.charge(len(text) * self._cost)
        data = text.encode("utf-8", "surrogatepass")
        work.charge((len(data) - len(text)) * self._cost)
        if anchor == "search":
            return self._regex.search(data) is not None
        if anchor == "match":
            return self._regex.match(data) is not None
        return self._regex.fullmatch(data) is not None


def _reason(exc: re2.error) -> str:
    """RE2's message (``missing ): <the whole pattern>``), its quoted part shortened."""
    raw = exc.args[0] if exc.args else ""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    what, sep, part = text.partition(": ")
    return f"{what}: {shown(part)}" if sep else shown(text)
