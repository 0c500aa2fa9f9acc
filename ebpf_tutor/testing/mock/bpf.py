"""MockBPF: stands where a BCC `BPF` object would, holding mock maps."""
from __future__ import annotations

from .maps import MockMap


class MockBPF:
    """Stands where a BCC `BPF` object would, holding mock tables:
    `b["counts"]`, `b.get_table("counts")`, `with MockBPF(...) as b:`.
    It loads and attaches nothing (`mocked = True`)."""

    mocked = True

    def __init__(self, **tables: MockMap):
        self.tables: dict[str, MockMap] = {}
        for name, t in tables.items():
            t.name = name
            self.tables[name] = t

    def __getitem__(self, name: str):
        name = name.decode() if isinstance(name, bytes) else name
        try:
            return self.tables[name]
        except KeyError:
            raise KeyError(f"no mock table {name!r}; have {', '.join(self.tables) or 'none'}") from None

    def get_table(self, name: str, *_args, **_kw):
        return self[name]

    def __contains__(self, name: str) -> bool:
        return name in self.tables

    def close(self) -> None:
        self.tables.clear()

    def cleanup(self) -> None:
        self.close()

    def __enter__(self) -> "MockBPF":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
