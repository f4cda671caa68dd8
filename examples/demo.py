"""`make demo`: the real job on a synthetic georeferenced scene, plus the seams that tiling alone leaves.

1. Writes ``scene.tif``: a 3-band uint8 GeoTIFF (UTM 31N, 10 m, nodata border), 2048 px square.
2. Runs the CLI on it, as a user would: ``seamless-dask segment scene.tif labels.tif ...`` (a COG) and
   ``... labels.zarr`` (a zarr store), with a quicklook PNG beside the input.
3. Segments a scene naively and with seamless_dask against whole-image inference: ``seams.png``.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

from seamless_dask.demo.scene import CLASSES, PALETTE, run_demo, write_scene_geotiff

MODEL = "seamless_dask.demo:context_model"


def segment_with_cli(scene: Path, output: Path, *extra: str) -> None:
    command = [
        sys.executable,
        "-m",
        "seamless_dask.cli",
        "segment",
        str(scene),
        str(output),
        "--model",
        MODEL,
    ]
    command += [
        "--tile-size",
        "256",
        "--overlap",
        "64",
        "--normalize",
        "0/255",
        "--num-classes",
        "3",
        "--overwrite",
    ]
    # the COG's colour table and the quicklook's legend
    colours = ",".join("#" + bytes(c).hex() for c in PALETTE)
    command += ["--class-names", ",".join(CLASSES), "--palette", colours]
    print("$", " ".join(["seamless-dask", *command[3:], *extra]))
    subprocess.run([*command, *extra], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", default="demo-output", help="folder for everything the demo writes"
    )
    parser.add_argument("--size", type=int, default=2048, help="scene size in pixels")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    scene = write_scene_geotiff(out / "scene.tif", size=args.size)
    segment_with_cli(scene, out / "labels.tif", "--quicklook", str(out / "quicklook.png"))
    segment_with_cli(scene, out / "labels.zarr", "--chunks", "1024")

    result = run_demo(out, size=1024)
    print(f"classes: {', '.join(CLASSES)}")
    print(
        f"pixels that differ from whole-image inference: naive 256 px tiling {result.naive_error:.2%}, "
        f"seamless_dask {result.seamless_error:.2%} ({result.png})"
    )
    print(
        f"demo done in {time.perf_counter() - start:.0f} s; see {out}/quicklook.png and {result.png}"
    )


if __name__ == "__main__":
    main()
