#!/usr/bin/env bash
# Builds peftspace with the `cuda` feature on a machine without a GPU (the build needs nvcc, not a device).
#
#   scripts/cuda-build.sh [cargo build args...]      e.g. scripts/cuda-build.sh --release
#
# The CUDA 13.0 toolkit comes from PyPI wheels (Debian ships only 11.8) into $PEFTSPACE_CUDA_SDK (default
# target/cuda-sdk, so repeated builds reuse it and `cargo clean` removes it). 13.0.x exactly: GPU drivers of the 580
# series run CUDA 13.0 and reject PTX from a newer nvcc. The binary links libcuda/libcudart/libcublas/libcurand at
# load time, so it runs only where a driver and those libraries are present (see benches/gpu_check.sh).
# CUDA_COMPUTE_CAP defaults to 90 (H100/H200); set it for other GPUs (e.g. 80 for A100, 89 for L4/RTX 40xx).
set -euo pipefail
cd "$(dirname "$0")/.."
SDK=${PEFTSPACE_CUDA_SDK:-$PWD/target/cuda-sdk}
CU=$SDK/nvidia/cu13
PYTHON=${PYTHON:-python3}

WHEELS="cuda-toolkit[nvcc,crt,nvvm,cccl,cudart,cublas,curand,nvrtc]==13.0.2"
if [ ! -x "$CU/bin/nvcc" ]; then
  echo "== installing the CUDA 13.0 toolkit wheels into $SDK" >&2
  if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
    # A Python without pip (Debian's): a virtual environment brings one.
    "$PYTHON" -m venv "$SDK.venv"
    PYTHON="$SDK.venv/bin/python"
  fi
  "$PYTHON" -m pip install --no-cache-dir --quiet --target "$SDK" "$WHEELS"
fi

# The wheels ship versioned libraries only; the linker wants the unversioned names.
(
  cd "$CU/lib"
  for lib in libcublas.so.13 libcublasLt.so.13 libcudart.so.13 libnvrtc.so.13 libcurand.so.10; do
    ln -sf "$lib" "${lib%.so.*}.so"
  done
)

# libcuda.so comes with the GPU driver, which a build machine lacks: link against a stub exporting the driver API's
# symbols (empty bodies; the real library is loaded at run time). Every `cu…` name in cuda.h counts, the versioned
# ones included (`#define cuMemAlloc cuMemAlloc_v2`: the binary references `cuMemAlloc_v2`).
mkdir -p "$CU/lib/stubs"
if [ ! -e "$CU/lib/stubs/libcuda.so" ] || [ ! -e "$CU/lib/stubs/versioned" ]; then
  grep -oE '\bcu[A-Z][A-Za-z0-9_]*' "$CU/include/cuda.h" | sort -u \
    | sed 's/.*/void &(void) {}/' > "$CU/lib/stubs/libcuda_stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CU/lib/stubs/libcuda.so" "$CU/lib/stubs/libcuda_stub.c"
  touch "$CU/lib/stubs/versioned"
fi

export PATH="$CU/bin:$PATH"
export CUDA_ROOT="$CU"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-$(nproc)}
# PEFTSPACE_CUDA_CARGO=check type-checks the CUDA path (the kernels are still compiled by nvcc in candle-kernels'
# build script) without generating and linking code: CI's compile-only check.
exec cargo "${PEFTSPACE_CUDA_CARGO:-build}" --features cuda "$@"
