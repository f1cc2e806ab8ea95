"""Write the references that the registry checks derived files against (helpers/reference_*), or check them.

    python scripts/make_derived_references.py tensors    # the Keras safetensors copies, from the torch checkpoints
    python scripts/make_derived_references.py detector   # the ONNX detector's detections, from a fresh conversion
    python scripts/make_derived_references.py digits     # the spoken digits' fingerprints, from a fresh build

`detector` converts the frozen graph into a temporary folder (about 65 s on 2 cores), runs the TF frozen graph and
the ONNX model on the photos, prints how far they differ (the spread the tolerances must cover) and stores the ONNX
model's detections. `--check` compares without writing. Each framework runs in its own subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from helpers import detector_onnx, registry, speech_synthesis

TENSOR_SOURCES = {"mobilenet_v2": "mobilenet_v2-torch", "efficientnet_lite0": "efficientnet_lite0-torch"}
TORCH_CHILD = """
import sys, json, torch
from helpers import registry
state = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
arrays = {k: v.numpy() for k, v in state.items() if not k.endswith("num_batches_tracked")}
json.dump(registry.tensor_fingerprint(arrays), open(sys.argv[2], "w"))
"""
TF_CHILD = """
import sys, json, numpy as np, tensorflow as tf
from helpers import detector_onnx
graph_def = tf.compat.v1.GraphDef()
graph_def.ParseFromString(open(sys.argv[1], "rb").read())
run = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(graph_def, name=""), [])
outputs = [run.graph.get_tensor_by_name(n) for n in detector_onnx.OUTPUTS]
run = run.prune(run.graph.get_tensor_by_name("image_tensor:0"), outputs)
found = {}
for name, image in detector_onnx.photos().items():
    boxes, scores, classes, _ = (t.numpy() for t in run(tf.constant(image[None])))
    keep = scores[0] >= detector_onnx.MIN_SCORE / 2
    found[name] = {"boxes": boxes[0][keep].tolist(), "scores": scores[0][keep].tolist(),
                   "classes": np.rint(classes[0][keep]).astype(int).tolist()}
json.dump(found, open(sys.argv[2], "w"))
"""


def _child(code: str, *args: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        subprocess.run([sys.executable, "-c", code, *args, str(out)], check=True)
        return json.loads(out.read_text())


def tensors(check: bool) -> int:
    for model, source in TENSOR_SOURCES.items():
        reference = registry.REFERENCES / f"reference_tensors_{model}.json"
        prints = _child(TORCH_CHILD, str(registry.fetch(source)))
        if not check:
            reference.write_text(json.dumps(prints, separators=(",", ":")))
            print(f"wrote {reference} ({len(prints)} tensors)")
        converted = registry.cache_dir() / registry.REGISTRY[f"{model}-keras"].filename
        if converted.is_file():
            print(f"{converted.name}: {registry.check_tensors(converted, reference) or 'matches'}")
    return 0


def spread(a: dict, b: dict) -> tuple[float, float]:
    """Largest score and box differences between matched detections (same class, nearest box) of two runs."""
    score_gap = box_gap = 0.0
    for name, want in a.items():
        have = b[name]
        for box, score, label in zip(want["boxes"], want["scores"], want["classes"]):
            if score < detector_onnx.MIN_SCORE:
                continue
            gaps = [
                (np.abs(np.subtract(other, box)).max(), abs(other_score - score))
                for other, other_score, other_label in zip(have["boxes"], have["scores"], have["classes"])
                if other_label == label
            ]
            best = min(gaps) if gaps else (np.inf, np.inf)
            box_gap, score_gap = max(box_gap, best[0]), max(score_gap, best[1])
    return score_gap, box_gap


def detector(check: bool, onnx_path: str | None) -> int:
    reference = registry.REFERENCES / "reference_detections.json"
    graph = registry.fetch("ssd-mobilenet-v2-coco")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(onnx_path or Path(tmp) / "detector.onnx")
        if not path.is_file():
            subprocess.run([sys.executable, "-m", "helpers.detector_onnx", str(graph), str(path)], check=True)
        found = detector_onnx.detections(path, detector_onnx.photos())
        structure = detector_onnx.structure(path)
        weights = detector_onnx.weight_fingerprint(path)
    frozen = _child(TF_CHILD, str(graph))
    score_gap, box_gap = spread(frozen, found)
    print(f"ONNX Runtime vs the TF frozen graph: scores {score_gap:.1e}, boxes {box_gap:.1e} apart at most")
    for name, values in found.items():
        top = [(c, round(s, 3)) for c, s in zip(values["classes"], values["scores"]) if s >= detector_onnx.MIN_SCORE]
        print(f"  {name}: {top}")
    if check:
        expected = json.loads(reference.read_text())
        problem = detector_onnx.compare_weights(weights, expected["weights"])
        problem = problem or detector_onnx.compare(found, expected["detections"])
        print(problem or f"matches {reference.name}")
        return 1 if problem else 0
    document = {"structure": structure, "weights": weights, "detections": found}
    reference.write_text(json.dumps(document, separators=(",", ":")))
    print(f"wrote {reference}")
    return 0


def digits(check: bool, npz_path: str | None) -> int:
    reference = registry.REFERENCES / "reference_spoken_digits.npz"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(npz_path or Path(tmp) / "digits.npz")
        if not path.is_file():
            subprocess.run([sys.executable, "-m", "helpers.speech_synthesis", str(path)], check=True)
        if check:
            problem = speech_synthesis.check(path, reference)
            print(problem or f"matches {reference.name}")
            return 1 if problem else 0
        with np.load(path) as stored:
            prints = speech_synthesis.fingerprints(stored["audio"])
    np.savez_compressed(reference, fingerprints=prints)
    print(f"wrote {reference} ({prints.shape})")
    return 0


def main(argv: list[str]) -> int:
    check = "--check" in argv
    args = [arg for arg in argv if arg != "--check"]
    what, given = (args + [None, None])[:2]
    if what == "tensors":
        return tensors(check)
    if what in ("detector", "digits"):
        return (detector if what == "detector" else digits)(check, given)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
