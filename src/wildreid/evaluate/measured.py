"""What the presets were measured to do on real data, as `wildreid presets` shows it: a copy of
the `offline` rows of BENCHMARKS.md, "Issue 20, second slice: the defaults now", and the `fusion`
rows of "Issue 20, sixth slice: the defaults now". Change both together, and only with figures
that a command printed.

Speed per photo is a cold run's wall time (model load, every photo described, keypoints,
matching, calibration, threshold choice, outputs) over the dataset's photos
(../shared/data/README.md); the runs shared 2 cores with other jobs, so it is pessimistic.
Presets missing here (seed, megadescriptor, wildfusion) need weights that could not be
downloaded on the machine that measured.
"""

from __future__ import annotations

from dataclasses import dataclass

SOURCE = 'BENCHMARKS.md, "Issue 20", second, sixth and seventh slices'
MACHINE = "2-core AMD EPYC VM, no GPU, shared (load about 2-4: tests and benchmarks beside it)"
# The command and when it ran (cold: each process with an empty cache).
RUNS = {
    "offline": ("benchmarks/real_data.py --presets offline,fusion", "2026-12-04 08:21-08:41 UTC"),
    "fusion": (
        "benchmarks/real_data.py --presets fusion --datasets NyalaData,LionData,Holstein2025",
        "2026-12-04 23:03-23:17 UTC (NyalaData: 2026-12-05 01:55-01:58 UTC)",
    ),
}
PHOTOS = {"LionData": 740, "NyalaData": 458, "Holstein2025": 3776}


@dataclass(frozen=True)
class Measured:
    """One preset on one dataset: its AnimalCLEF2025 score and the run's wall time."""

    dataset: str
    score: float
    wall_s: float

    @property
    def seconds_per_photo(self) -> float:
        return self.wall_s / PHOTOS[self.dataset]


MEASURED: dict[str, tuple[Measured, ...]] = {
    "offline": (
        Measured("LionData", 0.355, 91.7),
        Measured("NyalaData", 0.370, 64.7),
        Measured("Holstein2025", 0.411, 406.2),
    ),
    "fusion": (
        Measured("LionData", 0.585, 165.2),
        Measured("NyalaData", 0.366, 165.5),
        Measured("Holstein2025", 0.681, 479.5),
    ),
}
