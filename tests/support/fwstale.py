"""Is a firmware build older than the C module it carries? (bench/cmodule_*.py)

The benches time whatever MicroPython build sits in build/firmware/; one built before
the last change to cmodules/rbnn/ would print the old code's figures as today's.
"""

from __future__ import annotations

from pathlib import Path

MODULE = Path(__file__).resolve().parents[2] / "cmodules" / "rbnn"


def newer_sources(image: Path, module: Path = MODULE) -> list[str]:
    """Names of the module's sources changed after ``image`` was built (empty: current)."""
    built = image.stat().st_mtime
    return sorted(p.name for p in module.iterdir() if p.is_file() and p.stat().st_mtime > built)


def stale_reason(image: Path, module: Path = MODULE) -> str | None:
    """A one-line reason to skip ``image``, or None when it is current."""
    newer = newer_sources(image, module)
    if not newer:
        return None
    return f"{image.name} in {image.parent} is older than cmodules/rbnn/{newer[0]}" + (
        f" (and {len(newer) - 1} more)" if len(newer) > 1 else "") + "; rebuild it (make firmware ...)"
