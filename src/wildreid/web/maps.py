"""An individual's sightings as a map that works offline: an inline SVG computed here, with the
points on a plain background, a graticule (lines of latitude and longitude, labelled) and a
scale bar. No script, no map library, no request leaves the app, so it works in the field and
under the app's Content-Security-Policy.

The projection is Web Mercator, the one web map tiles use, so that when the user configures a
tile server (``wildreid serve --map-tiles URL``) its tiles are laid under the same points;
without one there are none. Over the few kilometres a study area spans, Mercator is true to
shape, and the scale bar is measured at the map's middle latitude.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

EARTH_CIRCUMFERENCE_M = 40_075_016.686  # at the equator (WGS84), what Web Mercator's scale is based on
MIN_SPAN_M = 1_000  # one sighting, or several at one spot, is shown within a square kilometre or so
TILE_PIXELS = 256
MAX_TILES = 64  # a configured tile server is asked for at most this many tiles per map


@dataclass(frozen=True)
class MapPoint:
    latitude: float
    longitude: float
    label: str  # shown on hover: when and where


def _world(latitude: float, longitude: float) -> tuple[float, float]:
    """Web Mercator: (x, y) in [0, 1], y growing southwards."""
    latitude = max(-85.0511, min(85.0511, latitude))
    sine = math.sin(math.radians(latitude))
    return (longitude + 180.0) / 360.0, 0.5 - math.log((1 + sine) / (1 - sine)) / (4 * math.pi)


def _latitude(y: float) -> float:
    return math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * y))))


def _nice(value: float) -> float:
    """The largest of 1, 2, 5 x 10^k not above ``value``."""
    power = 10 ** math.floor(math.log10(value))
    return max(step * power for step in (1, 2, 5) if step * power <= value)


def _degrees_label(value: float, sides: str, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    side = sides[0] if value >= 0 else sides[1]
    return f"{abs(value):.{decimals}f}°{side}"


def _distance_label(metres: float) -> str:
    return f"{metres / 1000:g} km" if metres >= 1000 else f"{metres:g} m"


def sightings_svg(points: list[MapPoint], *, width: int = 640, height: int = 360, tiles: str = "") -> str:
    """The map as an ``<svg>`` element (empty text without points). ``tiles``: a tile server's
    URL template with {z}, {x} and {y} (e.g. https://tile.openstreetmap.org/{z}/{x}/{y}.png)."""
    if not points:
        return ""
    world = [_world(p.latitude, p.longitude) for p in points]
    middle_latitude = sum(p.latitude for p in points) / len(points)
    metres_per_unit = EARTH_CIRCUMFERENCE_M * math.cos(math.radians(middle_latitude))  # per world unit, here
    min_span = MIN_SPAN_M / metres_per_unit
    xs, ys = [x for x, _ in world], [y for _, y in world]
    span_x = max(max(xs) - min(xs), min_span) * 1.3  # a margin around the outermost points
    span_y = max(max(ys) - min(ys), min_span) * 1.3
    centre_x, centre_y = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2
    scale = min(width / span_x, height / span_y)  # SVG pixels per world unit: the same both ways
    left, top = centre_x - width / 2 / scale, centre_y - height / 2 / scale

    def to_svg(x: float, y: float) -> tuple[float, float]:
        return (x - left) * scale, (y - top) * scale

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="sightings-map" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="map of {len(points)} sighting(s)">',
        f'<rect class="map-background" width="{width}" height="{height}" fill="#eef2e6"/>',
    ]
    if tiles:
        parts += _tile_images(tiles, left, top, scale, width, height)
    parts += _graticule(left, top, scale, width, height)
    for point, (x, y) in zip(points, world):
        cx, cy = to_svg(x, y)
        parts.append(
            f'<circle class="sighting" cx="{cx:.1f}" cy="{cy:.1f}" r="6" fill="#c0392b" fill-opacity="0.8" '
            f'stroke="#ffffff" stroke-width="1.5"><title>{escape(point.label)}</title></circle>'
        )
    parts += _scale_bar(metres_per_unit / scale, width, height)
    parts.append("</svg>")
    return "\n".join(parts)


def _graticule(left: float, top: float, scale: float, width: int, height: int) -> list[str]:
    """Lines of longitude and latitude at a round step (1, 2 or 5 x 10^k degrees), 2 to 6 across."""
    west, east = left * 360 - 180, (left + width / scale) * 360 - 180
    north, south = _latitude(top), _latitude(top + height / scale)
    step = _nice((east - west) / 3)
    parts = ['<g class="graticule" stroke="#9aa58c" stroke-width="0.7" fill="#5b6650" font-size="10">']
    longitude = math.ceil(west / step) * step
    while longitude <= east:
        x = ((longitude + 180) / 360 - left) * scale
        parts.append(f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height}"/>')
        parts.append(f'<text x="{x + 3:.1f}" y="12" stroke="none">{_degrees_label(longitude, "EW", step)}</text>')
        longitude += step
    latitude = math.ceil(south / step) * step
    while latitude <= north:
        y = (_world(latitude, 0)[1] - top) * scale
        parts.append(f'<line x1="0" y1="{y:.1f}" x2="{width}" y2="{y:.1f}"/>')
        parts.append(f'<text x="3" y="{y - 3:.1f}" stroke="none">{_degrees_label(latitude, "NS", step)}</text>')
        latitude += step
    parts.append("</g>")
    return parts


def _scale_bar(metres_per_pixel: float, width: int, height: int) -> list[str]:
    """A bar of a round length (1, 2 or 5 x 10^k metres) near a quarter of the map's width."""
    metres = _nice(metres_per_pixel * width / 4)
    pixels = metres / metres_per_pixel
    x, y = width - pixels - 12, height - 12
    return [
        '<g class="scale-bar" fill="#222222" font-size="11">',
        f'<rect x="{x - 4:.1f}" y="{y - 16}" width="{pixels + 8:.1f}" height="22" fill="#ffffff" fill-opacity="0.7"/>',
        f'<line x1="{x:.1f}" y1="{y}" x2="{x + pixels:.1f}" y2="{y}" stroke="#222222" stroke-width="2"/>',
        f'<text x="{x + pixels / 2:.1f}" y="{y - 4}" text-anchor="middle">{_distance_label(metres)}</text>',
        "</g>",
    ]


def _tile_images(template: str, left: float, top: float, scale: float, width: int, height: int) -> list[str]:
    """``<image>`` elements of the configured tile server's tiles under the map, at the zoom whose
    tiles are closest to their natural size (never more than MAX_TILES of them)."""
    zoom = max(0, min(19, round(math.log2(scale / TILE_PIXELS))))
    while zoom > 0:
        count = 2**zoom
        first_x, last_x = math.floor(left * count), math.floor((left + width / scale) * count)
        first_y, last_y = math.floor(top * count), math.floor((top + height / scale) * count)
        if (last_x - first_x + 1) * (last_y - first_y + 1) <= MAX_TILES:
            break
        zoom -= 1
    count = 2**zoom
    first_x, last_x = math.floor(left * count), math.floor((left + width / scale) * count)
    first_y, last_y = math.floor(top * count), math.floor((top + height / scale) * count)
    size = scale / count
    parts = ['<g class="tiles">']
    for tile_y in range(max(first_y, 0), min(last_y, count - 1) + 1):
        for tile_x in range(first_x, last_x + 1):
            url = template.replace("{z}", str(zoom)).replace("{x}", str(tile_x % count)).replace("{y}", str(tile_y))
            parts.append(
                f'<image href="{escape(url)}" x="{(tile_x / count - left) * scale:.1f}" '
                f'y="{(tile_y / count - top) * scale:.1f}" width="{size:.1f}" height="{size:.1f}"/>'
            )
    parts.append("</g>")
    return parts


def tile_origin(template: str) -> str:
    """The scheme and host of a tile server's URL template, for the app's Content-Security-Policy."""
    scheme, _, rest = template.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


def check_tile_template(template: str) -> str:
    """The template, stripped; ValueError saying what is wrong with it."""
    template = (template or "").strip()
    if not template:
        return ""
    if not template.startswith(("https://", "http://")) or not all(k in template for k in ("{z}", "{x}", "{y}")):
        raise ValueError(
            f"--map-tiles '{template}': give a tile server's URL template with {{z}}, {{x}} and {{y}}, "
            "e.g. https://tile.openstreetmap.org/{z}/{x}/{y}.png (leave it out for the offline map)."
        )
    if any(c in template for c in "\"'<> ;"):
        raise ValueError(f"--map-tiles '{template}': quotes, spaces, semicolons and angle brackets are not allowed.")
    return template
