"""What the checker concludes from a history: the invariants, and each one broken."""

from __future__ import annotations

from dataclasses import dataclass, field

#: The six invariants of the soak, by number (issue 18).
INVARIANTS = {
    1: "no request accepted with a token whose logout, reuse revocation or password change "
    "was acknowledged before it was sent",
    2: "no refresh token produced two successful refreshes",
    3: "every answer is a documented status; a 503 only while a dependency is down; never a 500",
    4: "every acknowledged user change, logout and revocation is still there after the faults",
    5: "within 10 s of the last fault, a new login and a protected request succeed on every "
    "instance",
    6: "no token, password or secret appears in any log",
}


@dataclass(frozen=True)
class Violation:
    """One broken invariant, with the request (or fault, or ``passwd``) record that breaks
    it, by history ``id``, and what is wrong, in words that never quote a secret."""

    invariant: int
    message: str
    record: int | None = None


@dataclass
class Verdict:
    """Every violation found, and how many cases each invariant examined."""

    violations: list[Violation] = field(default_factory=list)
    examined: dict[int, int] = field(default_factory=lambda: dict.fromkeys(INVARIANTS, 0))

    def held(self, invariant: int) -> bool:
        """True when ``invariant`` has no violation."""
        return not any(v.invariant == invariant for v in self.violations)

    @property
    def ok(self) -> bool:
        """True when every invariant held."""
        return not self.violations
