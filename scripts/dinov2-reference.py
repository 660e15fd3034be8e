"""Writes tests/fixtures/dinov2-s/expected.json: what onnxruntime computes inside the real
DINOv2-S ONNX file of docs/ASSETS.md (fetched by scripts/fetch-dinov2.sh) for a fixed 224 x 224
input, read at the outputs of the last two encoder blocks (hidden_states[-2], LLaVA's feature
layer, and hidden_states[-1]). The graph resizes its 37 x 37 position grid to 16 x 16 with its
own Resize op, so the Rust test (tests/tests/dinov2.rs) checks the walked weight names, the
layer scale and our bicubic position resize against the file's own computation. Kept small:
the first tokens in full and every channel's mean over all tokens. Run once with onnx and
onnxruntime installed:

    python scripts/dinov2-reference.py
"""

import json
import pathlib

import numpy as np
import onnx
import onnxruntime

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODEL = ROOT / ".cache" / "dinov2" / "vit_s_focus.onnx"
OUT = ROOT / "tests" / "fixtures" / "dinov2-s"
FIRST = 6  # tokens kept in full: CLS and the first five patches
BLOCKS = {"hidden_states[-2]": 10, "hidden_states[-1]": 11}


def pixels():
    """The fixed input, exact in f32 in any language: ((7x + 13y + 29c) mod 256) / 128 - 1."""
    c, y, x = np.meshgrid(np.arange(3), np.arange(224), np.arange(224), indexing="ij")
    return (((7 * x + 13 * y + 29 * c) % 256).astype(np.float32) / 128.0 - 1.0)[None]


def main():
    model = onnx.load(str(MODEL))
    names = {k: f"/backbone/encoder/layer.{i}/Add_1_output_0" for k, i in BLOCKS.items()}
    for name in names.values():
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    outs = session.run(list(names.values()), {"input_image": pixels()})
    expected = {"generator": f"onnxruntime {onnxruntime.__version__}, onnx {onnx.__version__}"}
    for key, h in zip(names, outs):
        h = h[0]
        assert h.shape == (257, 384), h.shape
        expected[key] = {"first_tokens": h[:FIRST].tolist(), "channel_means": h.mean(axis=0).tolist()}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "expected.json").write_text(json.dumps(expected))
    print("wrote", OUT / "expected.json")


if __name__ == "__main__":
    main()
