"""Settings of the review app, from arguments or the environment."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from wildreid.web.maps import check_tile_template

# The shared review token of earlier versions; `serve` refuses it and says how to make accounts.
TOKEN_ENV = "WILDREID_TOKEN"
SESSION_IDLE_HOURS = 12.0  # a session ends after this long without a request...
SESSION_LONGEST_HOURS = 7 * 24.0  # ...and this long after signing in, however busy
# Host names always served (the machine itself); others must be listed (DNS-rebinding guard).
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")


@dataclass
class WebConfig:
    catalog: Path  # the catalogue's SQLite file
    preset: str = "offline"  # named preset of the catalogue's gallery
    cache_dir: Path | None = None  # embedding cache (default: beside the catalogue)
    device: str | None = None
    max_upload_bytes: int = 20 * 1024 * 1024  # per photo
    max_files: int = 20  # photos per upload
    max_pixels: int = 60_000_000  # decompression-bomb guard for uploads
    allowed_hosts: list[str] = field(default_factory=list)  # Host names served besides LOCAL_HOSTS
    # A tile server's URL template ({z}/{x}/{y}) drawn under the sighting maps; empty: the maps
    # are drawn offline (points, graticule and scale on a plain background), nothing is fetched.
    map_tiles: str = ""
    public_read: bool = False  # anonymous visitors may read (never change); else they are sent to sign in
    session_idle_s: float = SESSION_IDLE_HOURS * 3600
    session_longest_s: float = SESSION_LONGEST_HOURS * 3600
    # Reviewers' answers after which the catalogue's gallery learns from them again, in the
    # background (web/jobs.py maybe_learn); 0: never.
    refit_after: int = 25

    def __post_init__(self):
        self.catalog = Path(self.catalog)
        if not 0 < self.session_idle_s <= self.session_longest_s:
            raise ValueError("sessions: the idle time must be positive and no longer than the longest lifetime.")
        self.allowed_hosts = [h.strip().lower() for h in self.allowed_hosts if h.strip()]
        self.map_tiles = check_tile_template(self.map_tiles)
        if self.refit_after < 0:
            raise ValueError("refit_after: give a number of answers, or 0 to never learn from them.")
        if self.max_upload_bytes <= 0 or self.max_files <= 0:
            raise ValueError("upload limits: max_upload_bytes and max_files must be positive.")

    @property
    def served_hosts(self) -> list[str]:
        return list(dict.fromkeys([*LOCAL_HOSTS, *self.allowed_hosts]))

    @property
    def max_request_bytes(self) -> int:
        # All photos at their limit plus room for the form fields and multipart boundaries.
        return self.max_files * self.max_upload_bytes + 1024 * 1024
