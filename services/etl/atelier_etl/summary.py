"""What a load did: rows read, loaded and rejected per file (the value `load()` returns)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


class LoadError(Exception):
    """The load failed; the previously served data is untouched."""


@dataclass(frozen=True)
class FileSummary:
    file: str
    read: int  # records after the header, blank lines not counted
    loaded: int
    rejected: int
    rejected_by_kind: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # No row may vanish silently: every record read is either loaded or in the rejects report.
        if self.loaded + self.rejected != self.read:
            raise LoadError(
                f"{self.file}: {self.read} records read but {self.loaded} loaded + {self.rejected} rejected"
            )
        if sum(self.rejected_by_kind.values()) != self.rejected:
            raise LoadError(f"{self.file}: rejects by kind do not add up to {self.rejected}")


@dataclass(frozen=True)
class LoadSummary:
    files: tuple[FileSummary, ...]
    rejects_path: Path
    seconds: float

    def __getitem__(self, file: str) -> FileSummary:
        for summary in self.files:
            if summary.file == file:
                return summary
        raise KeyError(file)

    @property
    def read(self) -> int:
        return sum(summary.read for summary in self.files)

    @property
    def loaded(self) -> int:
        return sum(summary.loaded for summary in self.files)

    @property
    def rejected(self) -> int:
        return sum(summary.rejected for summary in self.files)

    @property
    def rejected_by_kind(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for summary in self.files:
            for kind, count in summary.rejected_by_kind.items():
                totals[kind] = totals.get(kind, 0) + count
        return dict(sorted(totals.items()))

    def as_dict(self) -> dict[str, object]:
        """The summary for machines (`atelier-load --json`)."""
        return {
            "ok": True,
            "seconds": round(self.seconds, 3),
            "rejects_report": str(self.rejects_path),
            "files": [
                {
                    "file": f.file,
                    "read": f.read,
                    "loaded": f.loaded,
                    "rejected": f.rejected,
                    "rejected_by_kind": dict(sorted(f.rejected_by_kind.items())),
                }
                for f in self.files
            ],
            "totals": {"read": self.read, "loaded": self.loaded, "rejected": self.rejected},
        }
