#!/usr/bin/env bash
# The GPU checks in one prepared run, on a bare GPU machine (the device tool's H200), by hand:
#
#     bash benchmarks/gpu_run.sh            # output under $OUT (default /tmp/gpu-out)
#
# The machine has Python 3.12 with CUDA torch, xarray, scipy, pandas; not dask, distributed, zarr,
# rasterio, rioxarray, shapely or MONAI. Those travel as one xz tarball of their unpacked py3.12
# manylinux wheels, .gpu/site312.tar.xz (git-ignored; the versions of constraints.txt; made with
# `pip download --no-deps --only-binary=:all: --python-version 3.12 ...`, each wheel unzipped into one
# folder, `tar -cf - . | xz -9`): 41 MB against 61 MB of wheels, under the tool's 64 MiB a call.
# Each step has its own time budget and writes its own file under $OUT; without CUDA the script stops
# after printing the environment, with exit 3.
set -u
OUT=${OUT:-/tmp/gpu-out}
PY=${PY:-python3}
SITE=${SITE:-/tmp/site}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
if [ -f .gpu/site312.tar.xz ] && [ ! -d "$SITE/distributed" ]; then
    mkdir -p "$SITE" && tar -xJf .gpu/site312.tar.xz -C "$SITE" || exit 2
fi
export PYTHONPATH="$SITE:$PWD:$PWD/benchmarks"

{
    date -u +"%F %T UTC"
    echo "commit ${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null)}"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    nproc
    "$PY" - <<'EOF'
import dask, distributed, numpy, torch, xarray, zarr
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
print("dask", dask.__version__, "distributed", distributed.__version__, "xarray", xarray.__version__,
      "zarr", zarr.__version__, "numpy", numpy.__version__)
import seamless_dask
print("seamless_dask imports from", seamless_dask.__file__)
EOF
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
"$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)" || {
    echo "no CUDA (torch.cuda.is_available() is False): nothing to measure here"
    exit 3
}

step() {  # step NAME SECONDS COMMAND...: COMMAND's output in $OUT/NAME.txt, its exit status last
    local name=$1 budget=$2
    shift 2
    echo "== $name (at most $budget s)"
    local start=$SECONDS
    timeout -k 5 "$budget" "$@" > "$OUT/$name.txt" 2>&1
    echo "rc=$? after $((SECONDS - start)) s" >> "$OUT/$name.txt"
    tail -n 30 "$OUT/$name.txt"
}

# 1. the gpu-marked tests, and the segment/model/blend suites with device="auto" meaning CUDA
step tests 120 "$PY" -m pytest -q -p no:cacheprovider -o addopts="" -m "not slow and not chaos" \
    --continue-on-collection-errors -W "ignore::DeprecationWarning" \
    tests/test_gpu.py tests/model tests/blend/test_torch_tiler.py tests/test_segment.py tests/blend \
    tests/test_volumes.py tests/test_heads.py
# 2. tiles/s, bare loop against seamless_dask, the peers' U-Net (256 px tiles), fp32 and bf16;
#    autocast's errors; where the host's time goes
step unet 140 "$PY" benchmarks/gpu.py --model unet --errors --profile "$OUT/profile.txt"
# 3. end to end: 16000 x 16000 px to zarr on the default LocalCluster
step e2e 150 "$PY" benchmarks/gpu_e2e.py --size 16000
# 4. a heavier network: MONAI's UNet on 512 px tiles
step monai 90 "$PY" benchmarks/gpu.py --model monai-unet --tile 512 --batches 8 32 --threads 2 --errors
