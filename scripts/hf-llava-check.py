"""Checks a `condenser export --format hf-llava` folder with transformers: the folder loads as
LlavaForConditionalGeneration with no missing or unexpected tensors, AutoProcessor builds the
inputs from its own files (chat template, image processor, tokenizer), and greedy generation
gives the answers `condenser chat` gave (CASES.json: [{"image", "prompt", "answer"}]).

    python scripts/hf-llava-check.py LLAVA_DIR CASES.json

Needs torch and transformers (scripts/peer-setup.sh installs both in .cache/peer-venv).
Exits 1 when a check fails. scripts/hf-llava-check.sh runs the whole comparison.
"""
import json
import sys

import torch
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration


def main():
    folder, cases_file = sys.argv[1], sys.argv[2]
    cases = json.load(open(cases_file))
    model, info = LlavaForConditionalGeneration.from_pretrained(
        folder, output_loading_info=True, dtype=torch.float32)
    model.eval()
    problems = {k: v for k, v in info.items() if v and k != "error_msgs"}
    if problems or info.get("error_msgs"):
        print(f"loading reported {info}")
        sys.exit(1)
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
