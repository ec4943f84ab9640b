"""What the presets were measured to do on real data, as `wildreid presets` shows it: a copy of
the `offline` and `fusion` rows of BENCHMARKS.md, "Identification on the real datasets". Change
both together, and only with figures that a command printed.

Speed per photo is a cold run's wall time (model load, every photo described, keypoints,
matching, calibration, threshold choice, outputs) over the dataset's photos
(../shared/data/README.md); the runs shared 2 cores with other jobs, so it is pessimistic.
Presets missing here (seed, megadescriptor, wildfusion) need weights that could not be
downloaded on the machine that measured.
"""

from __future__ import annotations

from dataclasses import dataclass

SOURCE = 'BENCHMARKS.md, "Identification on the real datasets"'
MACHINE = "2-core AMD EPYC VM, no GPU, shared (load 2-6)"
# The commands and when they ran: the fusion rows are the second run's.
RUNS = {
    # before the adaptation stage: offline now adapts by default (--adapt auto), which scored
    # 0.270 / 0.332 / 0.306 (BENCHMARKS.md, issue 20, 2026-12-04, at load 6-8: no speed figure)
    "offline": ("benchmarks/real_data.py --presets offline,fusion (adapt none)", "2026-11-27 04:41-05:22 UTC"),
    "fusion": ("benchmarks/real_data.py --presets fusion", "2026-11-27 07:08-07:16 UTC"),
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
        Measured("LionData", 0.198, 131),
        Measured("NyalaData", 0.214, 85),
        Measured("Holstein2025", 0.223, 627),
    ),
    "fusion": (
        Measured("LionData", 0.573, 80),
        Measured("NyalaData", 0.361, 80),
        Measured("Holstein2025", 0.562, 236),
    ),
}
