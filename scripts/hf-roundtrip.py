"""The export round trip, checked with transformers itself: a folder written by
`condenser export` must load with `AutoModelForCausalLM.from_pretrained` and give the logits
transformers computed for the original fixture (tests/fixtures/hf/<name>/expected.json).
CI cannot run this (no torch there); run it by hand with torch + transformers installed:

    condenser export tests/fixtures/hf/llama --out target/export-llama --backend cpu
    python scripts/hf-roundtrip.py target/export-llama llama
"""

import json
import pathlib
import sys

import torch
import transformers

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    exported, name = pathlib.Path(sys.argv[1]), sys.argv[2]
    expected = json.loads((ROOT / "tests" / "fixtures" / "hf" / name / "expected.json").read_text())
    model = transformers.AutoModelForCausalLM.from_pretrained(exported).eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(expected["input_ids"])).logits
    diff = (logits - torch.tensor(expected["logits"])).abs().max().item()
    print(f"{name}: {type(model).__name__} from {exported}, max |logits - fixture| = {diff:.2e}")
    if diff >= 1e-4:
        raise SystemExit(f"{name}: the exported model does not give the fixture's logits")


if __name__ == "__main__":
    main()
