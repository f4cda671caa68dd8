"""Split a batch into the tiles of a :class:`~seamless_dask.TileGrid` and merge tile predictions
back, in torch.

For a batch that fits on one device (a training step, a tensor already on the GPU): the same tiles,
trust maps and normalised weighted sum as :func:`seamless_dask.segment`, as plain tensor ops on the
tensor's own device, so a CUDA tensor never goes through the host and gradients flow through both
steps. ``merge(activate(model(split(x))))`` equals ``segment(x, model, output="probabilities")`` for
the same tile size, overlap and weights (to float32 rounding: segment sums in float64).

Gathering is advanced indexing with index buffers (rows of every tile, then columns), merging two
``index_add`` passes (columns, then rows): no Python loop over tiles, so the module scripts with
TorchScript and traces with ``torch.compile``.
"""

from typing import Any

import numpy as np
import torch

from ..exceptions import DimensionError
from ..tiling.grid import Pair, TileGrid
from ..tiling.weights import TileWeights, as_weights
from .tiles import TilePadding


class TensorTiler(torch.nn.Module):
    """Split ``(N, C, H, W)`` tensors into overlapping tiles and merge per-tile outputs with the
    blend weights.

    Parameters
    ----------
    shape
        Image size ``(H, W)`` in pixels.
    tile_size, overlap
        As for :func:`seamless_dask.segment`: pixels, an int or ``(y, x)``.
    weights
        As for :func:`seamless_dask.segment`: a kind (``"trim"``, ``"trust"``, ...), a
        :class:`TileWeights` or a positive array of the tile's shape.
    pad_value
        On an axis shorter than the tile, the image's one tile is centred in a tile of ``tile_size``
        filled with this value (segment's padding: the normalisation mean, 0 once normalised), so
        every tile has the requested size; ``merge`` crops it back.

    Examples
    --------
    >>> import torch
    >>> from seamless_dask import TensorTiler
    >>> tiler = TensorTiler((100, 70), tile_size=32, overlap=8, weights="trust")
    >>> x = torch.rand(2, 3, 100, 70)
    >>> tiles = tiler.split(x)  # batch-major: the tiles of image 0, then those of image 1
    >>> tuple(tiles.shape), tiler.n_tiles
    ((24, 3, 32, 32), 12)
    >>> torch.allclose(tiler.merge(tiles), x, atol=1e-6)  # an identity model gives the image back
    True
    """

    row_index: torch.Tensor
    col_index: torch.Tensor
    tile_weights: torch.Tensor
    weight_sum: torch.Tensor

    def __init__(
        self,
        shape: int | Pair,
        tile_size: int | Pair,
        overlap: int | Pair = 0,
        weights: Any = "trim",
        pad_value: float = 0.0,
    ):
        super().__init__()
        self.grid = TileGrid(shape, tile_size, overlap)
        self.weights: TileWeights = as_weights(weights)
        self.weights.check_tile(self.grid.tile_shape)
        self.weights.check_cover((self.grid.y, self.grid.x))
        (th, tw), (ny, nx) = self.grid.tile_shape, self.grid.grid_shape
        self.height, self.width = self.grid.shape
        self.n_tiles, self.tiles_y, self.tiles_x, self.tile_h, self.tile_w = ny * nx, ny, nx, th, tw
        rows = np.array(self.grid.y.origins)[:, None] + np.arange(th)  # (ny, th)
        cols = np.array(self.grid.x.origins)[:, None] + np.arange(tw)  # (nx, tw)
        maps = np.stack([self._map(iy, ix) for iy in range(ny) for ix in range(nx)]).reshape(
            ny, nx, th, tw
        )
        self.register_buffer("row_index", torch.from_numpy(rows).long(), persistent=False)
        self.register_buffer("col_index", torch.from_numpy(cols).long(), persistent=False)
        self.register_buffer(
            # float64: merge casts them to the tiles' dtype, so float64 tiles blend at float64
            # accuracy and float32 ones exactly as before
            "tile_weights",
            torch.from_numpy(maps.astype(np.float64)),
            persistent=False,
        )
        total = self._merge_sums(self.tile_weights[None, :, :, None], 1)[0, 0]
        if bool((total <= 0).any()):
            y, x = (int(v) for v in torch.nonzero(total <= 0)[0])
            raise DimensionError(
                f"no tile gives weight to pixel ({y}, {x}) with weights {self.weights.kind!r}: "
                "use a map that is positive everywhere, e.g. weights='trust'"
            )
        self.register_buffer("weight_sum", total, persistent=False)
        # An image smaller than the tile: its one tile is centred in a zero-padded tile of the
        # requested size, as segment does (TilePadding), so a model trained on that size sees it;
        # merge crops it back.
        padding = TilePadding.to_fit((th, tw), self.grid.tile_size, np.zeros(1))
        (self.pad_top, self.pad_left), (self.pad_bottom, self.pad_right) = (
            padding.before,
            padding.after,
        )
        self.pad_value = float(pad_value)

    def _map(self, iy: int, ix: int) -> np.ndarray:
        grid = self.grid
        return self.weights.for_tile(
            grid.tile_shape, grid.y.edges(iy), grid.x.edges(ix), grid.effective_overlap
        )

    @torch.jit.export
    def split(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N * n_tiles, C, *tile_size)``, image-major then row-major over the
        grid.
        """
        if x.dim() != 4 or x.shape[2] != self.height or x.shape[3] != self.width:
            raise ValueError(
                f"split expects an (N, C, {self.height}, {self.width}) tensor, got "
                f"{list(x.shape)}: "
                "build the TensorTiler with the image's (H, W)"
            )
        n, c = x.shape[0], x.shape[1]
        tiles = x[:, :, self.row_index][:, :, :, :, self.col_index]  # (N, C, ny, th, nx, tw)
        tiles = tiles.permute(0, 2, 4, 1, 3, 5)  # (N, ny, nx, C, th, tw)
        tiles = tiles.reshape(n * self.n_tiles, c, self.tile_h, self.tile_w)
        if self.pad_top + self.pad_bottom + self.pad_left + self.pad_right == 0:
            return tiles
        pads = [self.pad_left, self.pad_right, self.pad_top, self.pad_bottom]
        return torch.nn.functional.pad(tiles, pads, value=self.pad_value)

    @torch.jit.export
    def merge(self, tiles: torch.Tensor) -> torch.Tensor:
        """``(N * n_tiles, K, *tile_size)`` -> ``(N, K, H, W)``: each pixel the trust-weighted mean
        of the predictions of the tiles that cover it, as :func:`seamless_dask.segment` blends them.
        """
        size = [
            self.tile_h + self.pad_top + self.pad_bottom,
            self.tile_w + self.pad_left + self.pad_right,
        ]
        if tiles.dim() != 4 or tiles.shape[0] % self.n_tiles != 0 or list(tiles.shape[2:]) != size:
            raise ValueError(
                f"merge expects (N * {self.n_tiles}, K, {size[0]}, {size[1]}) tiles, got "
                f"{list(tiles.shape)}: "
                "pass the model's outputs for every tile of split(x), in split's order"
            )
        tiles = tiles[
            :,
            :,
            self.pad_top : self.pad_top + self.tile_h,
            self.pad_left : self.pad_left + self.tile_w,
        ]
        n, k = tiles.shape[0] // self.n_tiles, tiles.shape[1]
        stacked = tiles.reshape(n, self.tiles_y, self.tiles_x, k, self.tile_h, self.tile_w)
        weighted = stacked * self.tile_weights[None, :, :, None].to(tiles.dtype)
        return self._merge_sums(weighted, k) / self.weight_sum.to(tiles.dtype)

    @torch.jit.export
    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        """Blend the overlaps of a stack of tiles and split the result again (blended-tiling's
        ``forward``).
        """
        return self.split(self.merge(tiles))

    def _merge_sums(self, stacked: torch.Tensor, k: int) -> torch.Tensor:
        """Sum ``(N, ny, nx, K, th, tw)`` onto ``(N, K, H, W)``: columns first, then rows."""
        n = stacked.shape[0]
        cols = stacked.permute(0, 1, 3, 4, 2, 5).reshape(
            n, self.tiles_y, k, self.tile_h, self.tiles_x * self.tile_w
        )
        wide = torch.zeros(
            n, self.tiles_y, k, self.tile_h, self.width, dtype=stacked.dtype, device=stacked.device
        )
        wide = wide.index_add(4, self.col_index.reshape(-1), cols)  # (N, ny, K, th, W)
        rows = wide.permute(0, 2, 1, 3, 4).reshape(n, k, self.tiles_y * self.tile_h, self.width)
        out = torch.zeros(n, k, self.height, self.width, dtype=stacked.dtype, device=stacked.device)
        return out.index_add(2, self.row_index.reshape(-1), rows)
