"""The text table of the numerics profiles (`refq profiles`): each profile's description, every field
in which they differ and the fields they share."""
from __future__ import annotations

from dataclasses import fields

from .profiles import PROFILES, Profile, get_profile

__all__ = ["describe_profiles"]


def _fmt(v) -> str:
    if isinstance(v, tuple):
        return ",".join(v)
    return "-" if v is None else str(v)


def describe_profiles(profiles=None) -> str:
    """A text table of `profiles` (default: all shipped): one line per profile with its
    description, then every field in which they differ (one column per profile), then the fields
    they share."""
    profs = list(PROFILES.values()) if profiles is None else [
        p if isinstance(p, Profile) else get_profile(p) for p in profiles]
    names = [p.name for p in profs]
    keys = [f.name for f in fields(Profile) if f.name not in ("name", "description")]
    differ = [k for k in keys if len({getattr(p, k) for p in profs}) > 1]
    same = [k for k in keys if k not in differ]
    width = max(len(n) for n in names)
    lines = ["Fixed-point profiles (each field's source is in `help(refq.fixedpoint.Profile)`)", ""]
    lines += [f"  {p.name:<{width}}  {p.description}" for p in profs]
    if differ:
        rows = [["field"] + names] + [[k] + [_fmt(getattr(p, k)) for p in profs] for k in differ]
        cols = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines += ["", "Fields that differ:"]
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, cols)).rstrip() for r in rows]
    if same:
        shared = ", ".join(f"{k}={_fmt(getattr(profs[0], k))}" for k in same)
        lines += ["", "Shared by all: " + shared]
    return "\n".join(lines) + "\n"
