"""Trust maps: how much each pixel of a tile's prediction is trusted when tiles overlap.

Pure numpy. A trust map is highest at the tile's centre, where the model saw the most context, and
never zero, so a pixel covered by a single tile still gets that tile's prediction. Blending divides
the weighted sum of overlapping predictions by the sum of the weights, so maps need no
normalisation.

Kinds (1-D profiles, combined by outer product):

- ``"trust"``: the tent of seamless-seg, made symmetric: linear from ``2/(n + 1)`` just inside the
  edges to 1 at the centre (seamless-seg's own tent leans half a pixel towards one side on even
  sizes).
- ``"spline"``: the second-order spline window of smooth-tiled-predictions.
- ``"gaussian"``: MONAI's gaussian importance map, ``sigma`` a fraction of the tile size (one, or
  one per axis as MONAI's ``sigma_scale``). Not floored: MONAI raises every weight below 1e-3 to
  1e-3, which at ``sigma=0.125`` lets a tile's unreliable edge outvote its neighbour's centre
  where a corner is covered by edges only; ``floor=1e-3`` gives MONAI's numbers.
- ``"hann"``: tiler's Hann window, ``0.5 + 0.5 cos``, zero on the tile's first and last pixel: a map
  that is zero at a tile's edge is taken wherever the layout still gives every pixel a tile with
  positive weight (:meth:`TileWeights.check_cover`; an overlap of 2 px or more).
- ``"constant"``: plain averaging.
- ``"trim"``: the overlap-tile strategy of the U-Net paper: each tile is trusted only in its centre,
  the tile minus ``overlap // 2`` pixels on each side (and fully on sides on the image border), so
  every pixel takes the prediction of the tile in which it lies farthest from an edge. With the
  global lattice the centres tile the image exactly. Zero in the margins, so it is always
  border-aware.
- an array of the tile's shape: any map of your own, positive on a box (zero around it, if anywhere).

Border-aware maps (the default) do not down-weight a tile side that lies on the image border: pixels
there are as trustworthy as in a whole-image run, and keeping them high stops the flush last tile
from being outvoted by the untrustworthy edge of its neighbour.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Real
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, get_args

import numpy as np

from ..exceptions import WeightsError
from .profiles import flatten_borders, profile, raw_profile

if TYPE_CHECKING:
    from .grid import AxisTiling

WeightsKind = Literal["trim", "trust", "spline", "gaussian", "hann", "constant"]
WEIGHTS_KINDS: tuple[str, ...] = get_args(WeightsKind)  # the registry: one profile function a kind
PROFILE_KINDS = WEIGHTS_KINDS
Edges = tuple[bool, bool]
MONAI_FLOOR = 1e-3  # MONAI's compute_importance_map raises every weight to at least this


@dataclass(frozen=True, eq=False)
class TileWeights:
    """A trust-map specification; ``for_tile`` gives the map of one tile.

    Parameters
    ----------
    kind
        One of ``"trim"`` (the default), ``"trust"``, ``"spline"``, ``"gaussian"``, ``"hann"``,
        ``"constant"``, or ``"array"`` with ``array``.
    sigma
        Standard deviation of ``"gaussian"`` as a fraction of the tile size (MONAI's default,
        0.125), one for every axis or one per axis ``(y, x)``, as MONAI's ``sigma_scale``.
    border_aware
        Keep full trust on tile sides that lie on the image border.
    array
        A ``(tile_y, tile_x)`` map for ``kind="array"``: finite, positive on a box and zero around
        it (if anywhere), as a zero-edged window of tiler's is.
    floor
        The least weight of any pixel of a tile, in the map's own units (MONAI's: 1 at the centre of
        an odd-sized tile): ``1e-3`` (:data:`MONAI_FLOOR`) reproduces MONAI's importance map, which
        clamps there; 0 (the default) leaves the map as it is.

    Raises
    ------
    WeightsError
        An unknown kind, ``"trim"`` without ``border_aware`` or with a floor, ``sigma`` or
        ``floor`` out of range, or an array that is not finite, or not positive on a box.

    Examples
    --------
    >>> import numpy as np
    >>> from seamless_dask import TileWeights
    >>> TileWeights("trust", border_aware=False).for_tile((1, 5))[0].round(3)  # highest at the centre, never 0
    array([0.333, 0.667, 1.   , 0.667, 0.333], dtype=float32)
    >>> TileWeights("trim").for_tile((1, 8), overlap=(0, 4))[0]  # trusted only in the tile minus overlap // 2
    array([0., 0., 1., 1., 1., 1., 0., 0.], dtype=float32)
    """

    kind: str = "trim"
    sigma: float | tuple[float, ...] = 0.125
    border_aware: bool = True
    array: np.ndarray | None = field(default=None, repr=False)
    floor: float = 0.0

    def __post_init__(self) -> None:
        if self.kind == "array":
            object.__setattr__(self, "array", _checked_array(self.array))
        elif self.kind not in PROFILE_KINDS:
            raise WeightsError(
                f"unknown weights {self.kind!r}: use one of {PROFILE_KINDS} or a positive array "
                f"of the tile's shape"
            )
        if self.kind == "trim" and not self.border_aware:
            raise WeightsError(
                "weights 'trim' are zero in a tile's margins, so they must keep full trust on the "
                "image border: "
                "drop border_aware=False, or use 'trust' for a map that is never zero"
            )
        object.__setattr__(self, "sigma", _checked_sigma(self.sigma))
        if isinstance(self.floor, bool) or not isinstance(self.floor, Real):
            raise WeightsError(f"floor must be a number in [0, 1), got floor={self.floor!r}")
        if not 0 <= self.floor < 1:
            raise WeightsError(
                f"floor is the least weight of a pixel, in [0, 1), got floor={self.floor}: use "
                f"floor={MONAI_FLOOR} for MONAI's importance map, or 0"
            )
        if self.floor and self.kind == "trim":
            raise WeightsError(
                "weights 'trim' trust each tile only in its centre, which a floor would undo: drop "
                "floor=, or use weights='gaussian' with floor=1e-3 as MONAI does"
            )

    def __dask_tokenize__(self) -> tuple:
        array = None if self.array is None else (self.array.shape, self.array.tobytes())
        return ("seamless_dask.TileWeights", self.kind, self.sigma, self.border_aware, array,
                self.floor)  # fmt: skip

    @property
    def spec(self) -> str:
        """The map as the job record names it: the kind, its parameters where they are not the
        defaults (``"gaussian(sigma=(0.25, 0.125), floor=0.001)"``), a user array by a hash of it.
        """
        if self.array is not None:
            digest = hashlib.blake2b(repr(self.array.shape).encode(), digest_size=16)
            digest.update(self.array.tobytes())
            return "array:" + digest.hexdigest()
        given = [
            f"{name}={value!r}"
            for name, value, default in (
                ("sigma", self.sigma, 0.125),
                ("border_aware", self.border_aware, True),
                ("floor", self.floor, 0.0),
            )
            if value != default and (name != "sigma" or self.kind == "gaussian")
        ]
        return f"{self.kind}({', '.join(given)})" if given else self.kind

    def sigmas(self, ndim: int) -> tuple[float, ...]:
        """``sigma`` for each of ``ndim`` axes, or a WeightsError when it names another count."""
        if isinstance(self.sigma, float):
            return (self.sigma,) * ndim
        if len(self.sigma) != ndim:
            raise WeightsError(
                f"sigma gives {len(self.sigma)} values, one per axis, for a tile of {ndim} axes: "
                f"give {ndim} values, or one for all"
            )
        return self.sigma

    def check_tile(self, tile: tuple[int, int]) -> None:
        """Raise if a user array does not match the requested tile size."""
        if self.array is not None and self.array.shape != tuple(tile):
            raise WeightsError(
                f"custom weights must have the tile's shape {tuple(tile)}, got {self.array.shape}: "
                "build the array with the same tile_size you pass to segment"
            )

    def for_tile(
        self,
        shape: tuple[int, int],
        edges_y: Edges = (False, False),
        edges_x: Edges = (False, False),
        overlap: tuple[int, int] = (0, 0),
    ) -> np.ndarray:
        """Trust map (float32, ``shape``) of a tile touching the image borders as
        ``edges_y``/``edges_x`` say.

        ``edges_*`` are ``(at_start, at_end)`` flags; they matter only when ``border_aware``.
        ``overlap`` (pixels, per axis) sets the margins of ``"trim"``.
        """
        if self.array is not None:
            return _centre_crop(self.array, shape)
        return _profile_map(self._profile_key(shape, edges_y, edges_x, overlap))

    def for_volume_tile(
        self, shape: tuple[int, ...], edges: tuple[Edges, ...], overlap: tuple[int, ...]
    ) -> np.ndarray:
        """The map of a tile of any number of axes (a volume's ``(z, y, x)``): the outer product of
        one profile an axis, as :meth:`for_tile` makes a plane's; ``edges`` and ``overlap`` one an
        axis.
        """
        n = len(shape)
        if self.array is not None:
            raise WeightsError(
                f"custom weights are a (tile_y, tile_x) map, and this tile has {n} axes: use a "
                "kind ('gaussian', 'trust', ...), whose maps have any number of axes"
            )
        flags = tuple(edges) if self.border_aware else ((False, False),) * n
        trim = tuple(overlap) if self.kind == "trim" else (0,) * n
        sigma = self.sigmas(n) if self.kind == "gaussian" else (0.0,) * n
        return _profile_map(MapKey(self.kind, sigma, tuple(shape), flags, trim, self.floor))

    def support(
        self,
        shape: tuple[int, int],
        edges_y: Edges = (False, False),
        edges_x: Edges = (False, False),
        overlap: tuple[int, int] = (0, 0),
    ) -> Support:
        """Where the map of :meth:`for_tile` is non-zero (a box), and whether it is 1 all over that
        box.

        Blending adds only inside the box, and skips the multiplication when the box is flat: for
        ``"trim"`` that is ``(tile - overlap)**2`` plain additions per class instead of ``tile**2``
        multiply-adds.
        """
        if self.array is not None:  # per tile on the blend's path: once per shape
            cached: dict = self.__dict__.setdefault("_array_supports", {})
            if tuple(shape) not in cached:
                cached[tuple(shape)] = _support(_centre_crop(self.array, shape))
            return cached[tuple(shape)]
        return _profile_support(self._profile_key(shape, edges_y, edges_x, overlap))

    def reach(self, shape: tuple[int, int], overlap: tuple[int, int]) -> tuple[int, int]:
        """How far, per axis, a tile's non-zero weights reach into the next tile's ``overlap``: the
        width of the halo strips a chunk hands its neighbours (zero sums past it are never kept).

        ``overlap`` for maps that are never zero; ``overlap // 2`` for ``"trim"``, whose margins are
        zero. A tile reaching past its chunk never touches the image's far border (that tile is the
        last chunk's), and border awareness raises only a map's near side, so the map of a tile
        inside the image says it.
        """
        box = self.support(shape, overlap=overlap)
        return (
            max(0, overlap[0] - (shape[0] - box.rows.stop)),
            max(0, overlap[1] - (shape[1] - box.cols.stop)),
        )

    def margins(self, shape: tuple[int, int], overlap: tuple[int, int]) -> tuple[int, int]:
        """How many pixels from a tile's edge (one not on the image's border) its weights are zero,
        per axis: ``overlap // 2`` for ``"trim"``, 0 for maps that are never zero. The pixels a
        tile is trusted on start there, so a model whose receptive field fits in these margins
        gives whole-image results (:mod:`seamless_dask.model.receptive` checks it).
        """
        box = self.support(shape, overlap=overlap)
        return box.rows.start, box.cols.start

    def _profile_key(
        self, shape: tuple[int, int], edges_y: Edges, edges_x: Edges, overlap: tuple[int, int]
    ) -> MapKey:
        """The key of the cached map builders: edges only when border-aware, overlap only for
        "trim" (one cache entry per shape for the others).
        """
        edges = (edges_y, edges_x) if self.border_aware else ((False, False), (False, False))
        trim_overlap = (overlap[0], overlap[1]) if self.kind == "trim" else (0, 0)
        sigma = self.sigmas(2) if self.kind == "gaussian" else (0.0, 0.0)
        return MapKey(self.kind, sigma, (shape[0], shape[1]), edges, trim_overlap, self.floor)

    def check_cover(self, axes: Sequence[AxisTiling]) -> None:
        """Raise unless every pixel gets positive weight from some tile of the layout ``axes`` (the
        grid's axes): a map that is zero at a tile's edge (``"hann"``, a zero-edged array) needs
        its neighbours to overlap it there. Maps are products of one profile an axis, so each
        axis is checked alone.
        """
        if self.kind in ("trim", "constant") or self.floor > 0:
            return  # covered by construction
        names = {2: "yx", 3: "zyx"}.get(len(axes), "?" * len(axes))
        for k, (name, axis) in enumerate(zip(names, axes, strict=True)):
            if axis.n_tiles == 1 and self.border_aware:
                continue  # its one tile is the whole axis, at full trust
            spans = [self._positive(axis, k, len(axes), axis.edges(i)) for i in range(axis.n_tiles)]
            gap = _first_gap(
                [(o + a, o + b) for o, (a, b) in zip(axis.origins, spans, strict=True)]
            )
            if gap is not None and gap < axis.size:
                zero = max(max(a, axis.tile - b) for a, b in spans)
                raise WeightsError(
                    f"no tile gives weight to pixel {gap} along {name} with weights "
                    f"{self.spec!r}, which are zero at a tile's edge (tile {axis.tile}, overlap "
                    f"{axis.overlap}): the pixel would have no prediction. Overlap the tiles by "
                    f"at least {zero + 1} px, or use weights that are never zero (e.g. 'trust')"
                )

    def _positive(self, axis: AxisTiling, k: int, n: int, edges: Edges) -> tuple[int, int]:
        """Where along axis ``k`` a tile's weights are positive, ``[start, stop)`` in the tile."""
        if self.array is not None:
            box = self.support(self.array.shape)
            span = box.rows if k == 0 else box.cols
            return span.start, span.stop
        if not self.border_aware:
            edges = (False, False)
        sigma = self.sigmas(n)[k]
        p = flatten_borders(profile(self.kind, axis.tile, sigma, axis.overlap), edges)
        where = np.flatnonzero(p > 0)
        return (int(where[0]), int(where[-1]) + 1) if len(where) else (0, 0)


def as_weights(weights: Any) -> TileWeights:
    """Convert the ``weights=`` argument of ``segment`` to a :class:`TileWeights`."""
    if isinstance(weights, TileWeights):
        return weights
    if isinstance(weights, str):
        return TileWeights(kind=weights)
    if hasattr(weights, "shape") and hasattr(weights, "__array__"):
        return TileWeights(
            kind="array", array=np.asarray(weights.cpu() if hasattr(weights, "cpu") else weights)
        )
    raise WeightsError(
        f"weights must be one of {PROFILE_KINDS}, a TileWeights or a positive array of the tile's "
        f"shape, "
        f"got {type(weights).__name__}: use e.g. weights='trust'"
    )


class MapKey(NamedTuple):
    """What a profile map is made of (one cache entry each): the kind, a sigma, size, border flags
    and overlap per axis, and the floor.
    """

    kind: str
    sigma: tuple[float, ...]
    shape: tuple[int, ...]
    edges: tuple[Edges, ...]
    overlap: tuple[int, ...]
    floor: float = 0.0


@functools.lru_cache(maxsize=64)
def _profile_map(key: MapKey) -> np.ndarray:
    """The map of a tile of ``key.shape`` (any number of axes): the outer product of one profile an
    axis, each at peak 1 and raised on the sides on the image border, then raised to ``floor`` in
    the profiles' own units (so that ``floor=1e-3`` is MONAI's clamp of its gaussian map).
    """
    kind, sigma, shape, edges, overlap, floor = key
    raw = [raw_profile(kind, *args) for args in zip(shape, sigma, overlap, strict=True)]
    peaks = [float(p.max()) or 1.0 for p in raw]
    profiles = [flatten_borders(p / peak, e) for p, peak, e in zip(raw, peaks, edges, strict=True)]
    out = functools.reduce(np.multiply.outer, profiles)
    if floor:
        out = np.maximum(out, floor / math.prod(peaks))
    out = out.astype(np.float32)
    out.setflags(write=False)
    return out


class Support(NamedTuple):
    """The non-zero box of a trust map (``rows``, ``cols``), its values there, and whether they are all
    1.
    """

    rows: slice
    cols: slice
    values: np.ndarray
    flat: bool


def _support(weights: np.ndarray) -> Support:
    rows, cols = np.flatnonzero(weights.any(axis=1)), np.flatnonzero(weights.any(axis=0))
    if not len(rows):  # a map zero all over ("hann" on 2 px): an empty box
        return Support(slice(0, 0), slice(0, 0), weights[:0, :0], False)
    box = slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)
    values = weights[box]
    return Support(box[0], box[1], values, bool(np.all(values == 1)))


@functools.lru_cache(maxsize=64)
def _profile_support(key: MapKey) -> Support:
    return _support(_profile_map(key))


def _first_gap(spans: Sequence[tuple[int, int]]) -> int | None:
    """The first pixel from 0 that no span ``[start, stop)`` covers (spans sorted by start), or the
    end of the last span when they all join up.
    """
    reached = 0
    for start, stop in spans:
        if start > reached:
            return reached
        reached = max(reached, stop)
    return reached


def _checked_sigma(sigma: Any) -> float | tuple[float, ...]:
    values = [sigma] if isinstance(sigma, Real) else sigma
    try:
        floats = tuple(float(v) for v in values if not isinstance(v, bool))
        ok = len(floats) == len(values) and len(floats) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok or not all(0 < v <= 10 for v in floats):
        raise WeightsError(
            f"sigma is a fraction of the tile size in (0, 10], one for every axis or one per axis, "
            f"got sigma={sigma!r}: use e.g. 0.125 or (0.25, 0.125)"
        )
    return floats[0] if isinstance(sigma, Real) else floats


def _centre_crop(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    oy = (array.shape[0] - shape[0]) // 2
    ox = (array.shape[1] - shape[1]) // 2
    return array[oy : oy + shape[0], ox : ox + shape[1]]


def _checked_array(array: Any) -> np.ndarray:
    if array is None:
        raise WeightsError(
            "weights kind 'array' needs array=: pass a positive (tile_y, tile_x) array"
        )
    a = np.asarray(array, dtype=np.float64)
    if a.ndim != 2:
        raise WeightsError(
            f"custom weights must be 2-D (tile_y, tile_x), got shape {a.shape}: drop extra axes"
        )
    if not np.all(np.isfinite(a)) or a.min() < 0 or a.max() <= 0:
        bad = np.unravel_index(np.argmin(np.where(np.isfinite(a), a, -np.inf)), a.shape)
        raise WeightsError(
            f"custom weights must be finite and >= 0 (positive somewhere), got {a[bad]} at "
            f"{tuple(int(v) for v in bad)}: e.g. np.maximum(w, 1e-3)"
        )
    box = _support(a)
    if not (a[box.rows, box.cols] > 0).all():
        bad = np.argwhere(a[box.rows, box.cols] <= 0)[0] + (box.rows.start, box.cols.start)
        raise WeightsError(
            f"custom weights may be zero only around a box where they are positive (a zero-edged "
            f"window), but pixel {tuple(int(v) for v in bad)} is 0 inside the box "
            f"{(box.rows.start, box.rows.stop)} x {(box.cols.start, box.cols.stop)}: raise it, "
            "e.g. np.maximum(w, 1e-3) inside"
        )
    out = (a / a.max()).astype(np.float32)
    out.setflags(write=False)
    return out
