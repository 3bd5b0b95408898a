"""The configuration of a generated world (everything that decides its bytes)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from replens.world.vocab import DOMAINS, SPURIOUS_CUES

#: Split names in the order they are seeded and stored.
SPLITS: tuple[str, ...] = ("train", "test")


@dataclass(frozen=True)
class WorldConfig:
    """What to generate. Two equal configs give byte-identical worlds (same numpy build).

    Args:
        n: Total number of scenes over both splits.
        size: Image side in pixels (at least 16).
        domains: Render domains, a subset of :data:`~replens.world.vocab.DOMAINS`;
            each image gets one, uniformly. Use ``("tint_red", "tint_green")`` for
            the Colored-CIFAR setting of the paper's section 2.3.
        seed: Seed of every random choice.
        spurious: Probability, in the train split only, that the spurious cue
            (see ``spurious_cue``) is tied to the class; in the test split the
            cue is always independent of the class (paper section 3.5).
        spurious_cue: ``"marker"``: a coloured patch in a random corner, one
            colour per class; ``"background"``: the background colour, one per class;
            ``"pattern"``: a black-and-white patterned patch in a random corner, one
            pattern per class (it survives colour-jitter and grayscale views).
        test_fraction: Fraction of ``n`` in the test split (rounded).
        max_objects: Largest number of objects per scene (1 to 3).
        shard_size: Scenes per shard on disk, the unit of parallel work. Each
            shard is seeded from ``(seed, split, shard index)``, so another shard
            size gives another (equally valid) world.
    """

    n: int = 10_000
    size: int = 64
    domains: tuple[str, ...] = ("photo", "cartoon", "sketch", "painting")
    seed: int = 0
    spurious: float = 0.0
    spurious_cue: str = "marker"
    test_fraction: float = 0.2
    max_objects: int = 3
    shard_size: int = 2048

    def __post_init__(self) -> None:
        object.__setattr__(self, "domains", tuple(self.domains))
        unknown = [d for d in self.domains if d not in DOMAINS]
        if not self.domains or unknown or len(set(self.domains)) != len(self.domains):
            raise ValueError(f"domains must be distinct names from {DOMAINS}, got {self.domains}")
        if self.n < 1:
            raise ValueError(f"n must be positive, got {self.n}")
        if self.size < 16:
            raise ValueError(f"size must be at least 16, got {self.size}")
        if not 0.0 <= self.spurious <= 1.0:
            raise ValueError(f"spurious must be in [0, 1], got {self.spurious}")
        if self.spurious_cue not in SPURIOUS_CUES:
            raise ValueError(f"spurious_cue must be one of {SPURIOUS_CUES}, got {self.spurious_cue!r}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")
        if not 1 <= self.max_objects <= 3:
            raise ValueError(f"max_objects must be 1, 2 or 3, got {self.max_objects}")
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be positive, got {self.shard_size}")

    @property
    def patterned(self) -> bool:
        """Whether the marker patch is drawn as a pattern (``spurious_cue == "pattern"``), not a colour."""
        return self.spurious_cue == "pattern"

    @property
    def split_sizes(self) -> dict[str, int]:
        """Scenes per split: ``{"train": n - n_test, "test": round(n * test_fraction)}``."""
        n_test = int(round(self.n * self.test_fraction))
        return {"train": self.n - n_test, "test": n_test}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (domains as a list)."""
        out = asdict(self)
        out["domains"] = list(self.domains)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorldConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        names = {f.name for f in fields(cls)}
        extra = set(data) - names
        if extra:
            raise ValueError(f"unknown WorldConfig keys: {sorted(extra)}")
        return cls(**data)
