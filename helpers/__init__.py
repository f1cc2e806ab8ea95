"""Shared helpers for the course-book *Transfer Learning & Fine-Tuning*.

Import a framework module in a notebook, `from helpers import torch as book` or
`from helpers import keras as book`: both export the same names with the same
signatures. Framework-neutral modules: `config`, `registry`, `data`, `metrics`, `plots`.

Importing `helpers` has one side effect, on purpose: it sets environment variables that
TensorFlow reads when it is imported (unless already set): `TF_CPP_MIN_LOG_LEVEL=3` quiets its C++
logs; `TF_FORCE_GPU_ALLOW_GROWTH=true` stops it from reserving all GPU memory, which PyTorch may need
in the same process (the unit tests use both). TensorFlow's oneDNN CPU kernels stay on (they are faster
here: benchmarks/onednn-2026-12-06.md); the one-line notice they print at import, which no log level
silences, is held back by `helpers.keras`, which imports TensorFlow through `import_tensorflow_quietly`.
"""

import os
import random
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")

__all__ = ["seed"]


def seed(n: int) -> None:
    """Seed Python, NumPy and every framework already imported, so runs repeat; on a GPU, also switch the
    frameworks to deterministic algorithms in full float32 precision (on the CPU they are both already)."""
    import numpy as np

    random.seed(n)
    np.random.seed(n)  # noqa: NPY002  (seeds code that still uses the legacy global RNG)
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        torch.manual_seed(n)
        if torch.cuda.is_available():
            _deterministic_torch(torch)
    if "keras" in sys.modules:
        sys.modules["keras"].utils.set_random_seed(n)
        tf = sys.modules.get("tensorflow")
        if tf is not None and tf.config.list_physical_devices("GPU"):
            tf.config.experimental.enable_op_determinism()
            tf.config.experimental.enable_tensor_float_32_execution(False)  # full float32, as for PyTorch below


ONEDNN_NOTICE = "oneDNN custom operations are on"  # TensorFlow's import-time notice (tensorflow/core/util/port.cc)


def import_tensorflow_quietly():
    """Import TensorFlow with file descriptor 2 (stderr) sent to a temporary file, then restored; whatever the
    import printed there is passed on, except the oneDNN notice (and the absl header line just before it).
    TensorFlow prints that notice from C++ before its logging starts, so neither TF_CPP_MIN_LOG_LEVEL nor
    GLOG_minloglevel silences it. Only the first import is redirected; a TensorFlow already imported is returned
    as it is."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            rest = "".join(line for line, after in zip(lines, [*lines[1:], ""]) if not _notice(line, after))
            if rest:
                sys.stderr.write(rest)
                sys.stderr.flush()
    return tensorflow


def _notice(line: str, after: str) -> bool:
    """The oneDNN notice, or the absl header printed just before it ('All log messages before absl::...')."""
    header = line.startswith("WARNING: All log messages before absl")
    return ONEDNN_NOTICE in line or (header and ONEDNN_NOTICE in after)


def _deterministic_torch(torch) -> None:
    """Deterministic CUDA kernels: cuDNN without autotuning, cuBLAS with a fixed workspace. Operations that have
    no deterministic CUDA kernel warn instead of failing; the book's models use none of them.

    Also full float32 precision: PyTorch runs cuDNN convolutions in TF32 by default on Ampere and later GPUs, which
    moves MobileNetV2's logits by about 1e-2 (measured on an H200), more than the book's checks allow (the Keras
    port agrees to 1e-4, a stacked model and a head on cached features agree to 1e-4). Lower precision is a speed
    option to be measured, not a default."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts: set before the first use
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)
