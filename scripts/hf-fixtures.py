"""Writes the HF parity fixtures (tests/fixtures/hf/), tiny random-config models made with
transformers and saved with save_pretrained, plus the outputs transformers computes for fixed
inputs:

- llama, qwen2: decoders (the Llama one sharded, to cover the index file); final hidden states
  and logits for fixed token ids;
- clip, siglip: vision towers; every hidden state for fixed pixels;
- dinov2: a DINOv2 tower (CLS token, layer scale, learned positions for a larger grid than the
  pixels', so its bicubic interpolation is exercised) as a HF folder, and the same model exported
  to ONNX the way the DINOv2-S file of docs/ASSETS.md was (TorchScript exporter, opset 14, wrapped as
  `backbone`, so its MatMul weights are anonymous `onnx::MatMul_N` initializers); every hidden
  state for fixed pixels;
- llava: LlavaForConditionalGeneration (CLIP tower, Llama decoder, penultimate layer, CLS
  dropped); logits for a prompt holding the expanded image tokens;
- tinyllava: a SigLIP + Qwen2 LLaVA computed by transformers, its tensors written under
  TinyLLaVA Factory's names (`vision_tower._vision_tower.`, `connector._connector.0/2`,
  `language_model.`) with a TinyLLaVA config.json: TinyLLaVA's forward with an mlp2x_gelu
  connector and the `patch` strategy is LLaVA's, first token sliced off included.

The Rust tests (tests/tests/hf_parity.rs) load the folders by their tensor names and must match
within 1e-4, so CI needs no Python. Run once with torch + transformers installed:

    python scripts/hf-fixtures.py [name ...]
"""

import json
import pathlib
import sys

import safetensors.torch
import torch
import transformers
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    Qwen2Config,
    Qwen2ForCausalLM,
    SiglipVisionConfig,
    SiglipVisionModel,
)

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "hf"

COMMON = dict(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    hidden_act="silu",
)

MODELS = {
    # untied head, sharded files
    "llama": (
        LlamaForCausalLM,
        LlamaConfig(**COMMON, rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=False),
        "20KB",
    ),
    # tied head, q/k/v biases, a large RoPE base
    "qwen2": (
        Qwen2ForCausalLM,
        Qwen2Config(**COMMON, rope_theta=1000000.0, rms_norm_eps=1e-5, tie_word_embeddings=True),
        None,
    ),
}

IDS = [[1, 5, 17, 42, 3, 88, 9], [60, 2, 2, 31, 95, 14, 7]]


VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    image_size=32,
    patch_size=8,
)

TOWERS = {
    "clip": (CLIPVisionModel, CLIPVisionConfig(**VISION, hidden_act="quick_gelu", layer_norm_eps=1e-5)),
    "siglip": (SiglipVisionModel, SiglipVisionConfig(**VISION, layer_norm_eps=1e-6)),
}

IMAGE_TOKEN = 95


def randomised(model):
    """Random biases and norm parameters (zero/one by default), so a missed one would show."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def fresh_dir(name):
    d = OUT / name
    d.mkdir(parents=True, exist_ok=True)
    for f in d.iterdir():
        f.unlink()
    return d


def pixels():
    torch.manual_seed(99)
    return torch.randn(2, 3, VISION["image_size"], VISION["image_size"])


def tower(name):
    cls, config = TOWERS[name]
    torch.manual_seed(1234)
    model = randomised(cls(config).eval())
    d = fresh_dir(name)
    model.save_pretrained(d, safe_serialization=True)
    px = pixels()
    with torch.no_grad():
        out = model(pixel_values=px, output_hidden_states=True)
    expected = {
        "generator": f"transformers {transformers.__version__}, torch {torch.__version__}",
        "pixel_values": px.tolist(),
        "hidden_states": [h.tolist() for h in out.hidden_states],
    }
    (d / "expected.json").write_text(json.dumps(expected))
    print(name, sorted(p.name for p in d.iterdir()))


def dinov2_fixture():
    """A tiny DINOv2, as a HF folder and as an ONNX graph, with its hidden states for 32 px."""
    config = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        mlp_ratio=2,
        image_size=40,  # a 5 x 5 position grid; the 32 px pixels make 4 x 4 patches
        patch_size=8,
        layerscale_value=0.5,
    )
    torch.manual_seed(4321)
    model = randomised(Dinov2Model(config).eval())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_scale" in name:
                p.add_(0.1 * torch.randn_like(p))
    d = fresh_dir("dinov2")
    model.save_pretrained(d, safe_serialization=True)
    px = pixels()
    with torch.no_grad():
        out = model(pixel_values=px, output_hidden_states=True)

    class Wrapped(torch.nn.Module):
        def __init__(self, backbone):
            super().__init__()
            self.backbone = backbone

        def forward(self, input_image):
            return self.backbone(pixel_values=input_image).last_hidden_state

    torch.onnx.export(
        Wrapped(model),
        (px,),
        str(d / "model.onnx"),
        dynamo=False,
        opset_version=14,
        input_names=["input_image"],
        output_names=["features"],
        dynamic_axes={"input_image": {0: "batch_size"}},
    )
    expected = {
        "generator": f"transformers {transformers.__version__}, torch {torch.__version__}",
        "pixel_values": px.tolist(),
        "hidden_states": [h.tolist() for h in out.hidden_states],
        "last_hidden_state": out.last_hidden_state.tolist(),
    }
    (d / "expected.json").write_text(json.dumps(expected))
    print("dinov2", sorted(p.name for p in d.iterdir()))


def llava(vision, text, strategy):
    """A LLaVA model and its logits for a prompt with the image tokens in the middle."""
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=IMAGE_TOKEN,
        vision_feature_layer=-2,
        vision_feature_select_strategy=strategy,
        projector_hidden_act="gelu",
    )
    torch.manual_seed(1234)
    model = randomised(LlavaForConditionalGeneration(config).eval())
    grid = VISION["image_size"] // VISION["patch_size"]
    n_image = grid * grid + (1 if isinstance(vision, CLIPVisionConfig) else 0) - 1
    ids = [[1, 5] + [IMAGE_TOKEN] * n_image + [17, 42, 3], [60, 2] + [IMAGE_TOKEN] * n_image + [31, 94, 14]]
    px = pixels()
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids), pixel_values=px, output_hidden_states=True)
    expected = {
        "generator": f"transformers {transformers.__version__}, torch {torch.__version__}",
        "input_ids": ids,
        "image_token_id": IMAGE_TOKEN,
        "pixel_values": px.tolist(),
        "last_hidden_state": out.hidden_states[-1].tolist(),
        "logits": out.logits.tolist(),
    }
    return model, expected


def llava_fixture():
    text = LlamaConfig(**COMMON, rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=False)
    vision = TOWERS["clip"][1]
    model, expected = llava(vision, text, "default")
    d = fresh_dir("llava")
    model.save_pretrained(d, safe_serialization=True)
    (d / "expected.json").write_text(json.dumps(expected))
    print("llava", sorted(p.name for p in d.iterdir()))


def tinyllava_fixture():
    text = Qwen2Config(**COMMON, rope_theta=1000000.0, rms_norm_eps=1e-5, tie_word_embeddings=True)
    vision = TOWERS["siglip"][1]
    model, expected = llava(vision, text, "default")
    # TinyLLaVA Factory's module names for the same weights
    renames = [
        # transformers 5 keeps a tower's modules at its top; TinyLLaVA's checkpoints (and
        # transformers 4's) have them under `vision_model.`
        ("model.vision_tower.", "vision_tower._vision_tower.vision_model."),
        ("model.multi_modal_projector.linear_1.", "connector._connector.0."),
        ("model.multi_modal_projector.linear_2.", "connector._connector.2."),
        ("model.language_model.", "language_model.model."),
        ("lm_head.", "language_model.lm_head."),
    ]
    tensors = {}
    for name, value in model.state_dict().items():
        for old, new in renames:
            if name.startswith(old):
                name = new + name[len(old):]
                break
        else:
            raise SystemExit(f"unexpected tensor {name}")
        tensors[name] = value.contiguous()
    # tied head: TinyLLaVA saves the decoder's own tied weights; keep one copy
    tensors.pop("language_model.lm_head.weight", None)
    d = fresh_dir("tinyllava")
    safetensors.torch.save_file(tensors, d / "model.safetensors", metadata={"format": "pt"})
    config = {
        "architectures": ["TinyLlavaForConditionalGeneration"],
        "model_type": "tinyllava",
        "connector_type": "mlp2x_gelu",
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "patch",
        "image_token_index": -200,
        "text_config": text.to_dict(),
        "vision_config": vision.to_dict(),
    }
    (d / "config.json").write_text(json.dumps(config, indent=2))
    (d / "expected.json").write_text(json.dumps(expected))
    print("tinyllava", sorted(p.name for p in d.iterdir()))


def decoder(name):
    cls, config, shard = MODELS[name]
    torch.manual_seed(1234)
    model = randomised(cls(config).eval())
    d = fresh_dir(name)
    kwargs = {"safe_serialization": True}
    if shard:
        kwargs["max_shard_size"] = shard
    model.save_pretrained(d, **kwargs)
    ids = torch.tensor(IDS)
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True)
    expected = {
        "generator": f"transformers {transformers.__version__}, torch {torch.__version__}",
        "input_ids": IDS,
        "last_hidden_state": out.hidden_states[-1].tolist(),
        "logits": out.logits.tolist(),
    }
    (d / "expected.json").write_text(json.dumps(expected))
    print(name, sorted(p.name for p in d.iterdir()))


FIXTURES = {
    "llama": lambda: decoder("llama"),
    "qwen2": lambda: decoder("qwen2"),
    "clip": lambda: tower("clip"),
    "siglip": lambda: tower("siglip"),
    "dinov2": dinov2_fixture,
    "llava": llava_fixture,
    "tinyllava": tinyllava_fixture,
}


def main():
    # the decoders' committed outputs stay as first written (a rerun moves the last digits:
    # CPU thread scheduling); name them to rewrite them
    names = sys.argv[1:] or ["clip", "siglip", "dinov2", "llava", "tinyllava"]
    for name in names:
        if name not in FIXTURES:
            raise SystemExit(f"unknown fixture {name!r}: one of {', '.join(FIXTURES)}")
        FIXTURES[name]()


if __name__ == "__main__":
    main()
