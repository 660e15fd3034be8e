"""Checks a `condenser export --format hf-llava` folder with transformers: the folder loads as
LlavaForConditionalGeneration with no missing or unexpected tensors, AutoProcessor builds the
inputs from its own files (chat template, image processor, tokenizer), and greedy generation
gives the answers `condenser chat` gave (CASES.json: [{"image", "prompt", "answer"}]).

    python scripts/hf-llava-check.py LLAVA_DIR CASES.json
    python scripts/hf-llava-check.py --fixtures   # after cargo test --test hf_parity

The second form loads the CLIP + Llama and SigLIP + Qwen2 exports the parity tests write
(target/test-scratch/hf-llava-export*) in transformers and compares their logits with the ones
transformers computed for the fixtures they came from.

Needs torch and transformers (scripts/peer-setup.sh installs both in .cache/peer-venv).
Exits 1 when a check fails. scripts/hf-llava-check.sh runs the whole comparison.
"""
import json
import sys

import torch
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration


def load(folder):
    model, info = LlavaForConditionalGeneration.from_pretrained(
        folder, output_loading_info=True, dtype=torch.float32)
    problems = {k: v for k, v in info.items() if v}
    if problems:
        print(f"{folder}: loading reported {problems}")
        sys.exit(1)
    return model.eval()


def fixtures():
    ok = True
    for fixture, folder in [("llava", "hf-llava-export"), ("tinyllava", "hf-llava-export-siglip")]:
        expected = json.load(open(f"tests/fixtures/hf/{fixture}/expected.json"))
        model = load(f"target/test-scratch/{folder}")
        with torch.no_grad():
            logits = model(input_ids=torch.tensor(expected["input_ids"]),
                           pixel_values=torch.tensor(expected["pixel_values"])).logits
        want = torch.tensor(expected["logits"]).reshape(logits.shape)
        err = (logits - want).abs().max().item()
        print(f"{folder} ({fixture}): max |logits - transformers' own| = {err:.2e}")
        ok &= err < 1e-4
    sys.exit(0 if ok else 1)


def main():
    if sys.argv[1] == "--fixtures":
        return fixtures()
    folder, cases_file = sys.argv[1], sys.argv[2]
    cases = json.load(open(cases_file))
    model = load(folder)
    processor = AutoProcessor.from_pretrained(folder)
    stop = model.generation_config.eos_token_id
    same = 0
    print("| image | prompt | condenser chat | transformers | same |\n|---|---|---|---|---|")
    for c in cases:
        messages = [{"role": "user", "content": [
            {"type": "image"}, {"type": "text", "text": c["prompt"]}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=False)
        image = Image.open(c["image"]).convert("RGB")
        inputs = processor(images=image, text=text, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=32, do_sample=False,
                                 eos_token_id=stop, pad_token_id=processor.tokenizer.pad_token_id)
        new = out[0, inputs["input_ids"].shape[1]:]
        answer = processor.tokenizer.decode(new, skip_special_tokens=True).strip()
        ok = answer == c["answer"].strip()
        same += ok
        print(f"| {c['image'].split('/')[-1]} | {c['prompt']} | {c['answer'].strip()} | {answer} | {'yes' if ok else 'NO'} |")
    print(f"\n{same} of {len(cases)} answers equal (transformers {__import__('transformers').__version__}, torch {torch.__version__})")
    sys.exit(0 if same == len(cases) else 1)


if __name__ == "__main__":
    main()
