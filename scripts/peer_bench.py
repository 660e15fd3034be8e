#!/usr/bin/env python3
"""PyTorch peer of `condenser bench step`: the same training steps, same shapes, on the CPU.

Reads the shapes JSON that `condenser bench step ... --json FILE` writes (model config, what is
frozen, optimizer, warmup_steps, and per step one {text_len, labels} per batch row), builds the
same architecture with HF transformers (random init: weights do not matter for speed) and runs
the steps: vision tower (Dinov2Model) -> drop CLS -> mlp2x_gelu projector -> LlamaForCausalLM fed
`inputs_embeds` = [visual tokens, text embeddings], right-padded with an attention mask, loss =
mean next-token cross-entropy over the last `labels` real text tokens of each row, AdamW (fp32).
The first `warmup_steps` steps run but are not timed.

tokens/s = sum over timed steps and rows of the row's real length (visual + text) / timed wall time.

PyTorch is a peer, not a dependency of Condenser: install it into .cache/peer-venv with
`bash scripts/peer-setup.sh`. Run with that venv's python, or with any python3: when torch is
missing and the venv exists, the script re-runs itself with the venv's python.

    bash scripts/peer-setup.sh
    python3 scripts/peer_bench.py SHAPES.json [--threads N] [--json OUT] [--loss labels|hf]
                                              [--adamw fused|foreach] [--warmup N] [--seed S]

--loss labels (default) applies the LM head to the labelled positions only, as Condenser does
(engine/src/model/head_loss.rs); --loss hf is the stock HF path (logits at every position,
labels shifted inside HF's loss). Both count exactly `labels` positions per row.
--adamw fused (default) is torch.optim.AdamW(fused=True); foreach is its default implementation.
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VENV_PY = os.path.join(ROOT, ".cache", "peer-venv", "bin", "python")
REEXEC_GUARD = "CONDENSER_PEER_REEXEC"


def die(msg, code=1):
    print(f"peer_bench: {msg}", file=sys.stderr)
    sys.exit(code)


def import_peer():
    """Imports torch and transformers, or re-runs under the peer venv, or exits 2 with one line."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except Exception as e:  # ImportError, or a broken install raising something else
        venv = os.path.dirname(os.path.dirname(VENV_PY))
        if (
            os.path.exists(VENV_PY)
            and not os.environ.get(REEXEC_GUARD)
            and os.path.realpath(sys.prefix) != os.path.realpath(venv)
        ):
            os.environ[REEXEC_GUARD] = "1"
            os.execv(VENV_PY, [VENV_PY, os.path.abspath(__file__)] + sys.argv[1:])
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        die(
            f"needs torch and transformers, not importable here ({reason}); "
            f"install them with `bash scripts/peer-setup.sh` (a venv at .cache/peer-venv)",
            2,
        )


def parse_args():
    p = argparse.ArgumentParser(
        description="PyTorch peer of `condenser bench step`: same steps and shapes, tokens/s on the CPU."
    )
    p.add_argument("shapes", nargs="?", help="shapes JSON written by `condenser bench step ... --json FILE`")
    p.add_argument("--shapes", dest="shapes_opt", metavar="FILE", help="the same, as an option")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="torch intra-op threads (default: os.cpu_count())")
    p.add_argument("--json", dest="json_out", metavar="OUT", help="write the result as JSON here")
    p.add_argument("--loss", choices=["labels", "hf"], default="labels",
                   help="labels: LM head at the labelled positions only, as Condenser (default); "
                        "hf: the model's own loss over full logits")
    p.add_argument("--adamw", choices=["fused", "foreach"], default="fused",
                   help="torch.optim.AdamW implementation: fused (default; PyTorch's fastest on the "
                        "CPU) or foreach (its plain default, several times slower on a big embedding)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed steps (default: the file's warmup_steps)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if (a.shapes is None) == (a.shapes_opt is None):
        p.error("give the shapes JSON once: SHAPES or --shapes SHAPES")
    a.shapes = a.shapes or a.shapes_opt
    return a


def load_shapes(path):
    try:
        with open(path) as f:
            s = json.load(f)
    except (OSError, ValueError) as e:
        die(f"cannot read shapes {path}: {e}")
    try:
        m = s["model"]
        v, llm = m["vision"], m["llm"]
        freeze = s.get("freeze", {})
        for part in ("vision", "projector", "llm"):
            mode = freeze.get(part, "full")
            if mode not in ("frozen", "full"):
                die(f"freeze.{part} is {mode!r}; this peer knows only 'frozen' and 'full'")
        if m.get("projector", "mlp2x_gelu") != "mlp2x_gelu":
            die(f"projector {m['projector']!r} unsupported; this peer knows only mlp2x_gelu")
        if v.get("act", "gelu") != "gelu":
            die(f"vision act {v['act']!r} unsupported; this peer knows only gelu")
        if v["image_size"] % v["patch_size"]:
            die("vision.image_size must be a multiple of vision.patch_size")
        steps = s["steps"]
        if not steps:
            die("the shapes file has no steps")
        for i, st in enumerate(steps):
            if not st["rows"]:
                die(f"step {i} has no rows")
            for r in st["rows"]:
                if not (0 <= r["labels"] <= r["text_len"]):
                    die(f"step {i}: labels {r['labels']} not within text_len {r['text_len']}")
        _ = (llm["vocab_size"], llm["hidden"], llm["layers"], llm["heads"], llm["intermediate"])
    except (KeyError, TypeError) as e:
        die(f"shapes {path} lacks {e} (see the schema in this script's docstring / the brief)")
    return s


def build(s, torch, transformers):
    from torch import nn

    m = s["model"]
    v, l = m["vision"], m["llm"]
    freeze = {k: s.get("freeze", {}).get(k, "full") for k in ("vision", "projector", "llm")}

    vcfg = transformers.Dinov2Config(
        hidden_size=v["hidden"],
        num_hidden_layers=v["layers"],
        num_attention_heads=v["heads"],
        mlp_ratio=v["mlp_hidden"] // v["hidden"] if v["mlp_hidden"] % v["hidden"] == 0
        else v["mlp_hidden"] / v["hidden"],
        hidden_act="gelu",
        layer_norm_eps=v.get("layer_norm_eps", 1e-6),
        image_size=v["image_size"],
        patch_size=v["patch_size"],
        qkv_bias=True,
        layerscale_value=1.0,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        drop_path_rate=0.0,
        attn_implementation="sdpa",
    )
    vision = transformers.Dinov2Model(vcfg)
    lcfg = transformers.LlamaConfig(
        vocab_size=l["vocab_size"],
        hidden_size=l["hidden"],
        num_hidden_layers=l["layers"],
        num_attention_heads=l["heads"],
        num_key_value_heads=l.get("kv_heads", l["heads"]),
        intermediate_size=l["intermediate"],
        rope_theta=float(l.get("rope_theta", 10000.0)),
        rms_norm_eps=l.get("rms_eps", 1e-5),
        tie_word_embeddings=bool(l.get("tie_embeddings", False)),
        max_position_embeddings=l.get("max_positions", 8192),
        attention_bias=bool(l.get("qkv_bias", False)),
        attention_dropout=0.0,
        use_cache=False,
        attn_implementation="sdpa",
    )
    llm = transformers.LlamaForCausalLM(lcfg)
    projector = nn.Sequential(
        nn.Linear(v["hidden"], l["hidden"]), nn.GELU(), nn.Linear(l["hidden"], l["hidden"])
    )
    parts = {"vision": vision, "projector": projector, "llm": llm}
    trained = []
    for name, mod in parts.items():
        mod.float()
        if freeze[name] == "frozen":
            mod.eval()
            mod.requires_grad_(False)
        else:
            mod.train()
            mod.requires_grad_(True)
            trained += [p for p in mod.parameters() if p.requires_grad]
    # tied embeddings appear once in parameters(); dedupe anyway across modules
    seen, params = set(), []
    for p in trained:
        if id(p) not in seen:
            seen.add(id(p))
            params.append(p)
    return vision, projector, llm, freeze, params, vcfg, lcfg


def make_batches(s, torch, seed):
    """All steps' inputs, made before timing: pixels, text ids, attention mask, label targets."""
    v, l = s["model"]["vision"], s["model"]["llm"]
    grid = v["image_size"] // v["patch_size"]
    drop_cls = v.get("drop_cls", True) or not v.get("class_token", True)
    num_visual = grid * grid + (0 if drop_cls else 1)
    g = torch.Generator().manual_seed(seed + 1)
    batches = []
    for st in s["steps"]:
        rows = st["rows"]
        b = len(rows)
        real = [num_visual + r["text_len"] for r in rows]
        t_max = max(real)
        text_max = t_max - num_visual
        pixels = torch.randn(b, 3, v["image_size"], v["image_size"], generator=g)
        ids = torch.randint(0, l["vocab_size"], (b, max(text_max, 1)), generator=g)[:, :text_max]
        mask = torch.zeros(b, t_max, dtype=torch.long)
        labels = torch.full((b, t_max), -100, dtype=torch.long)
        for i, r in enumerate(rows):
            mask[i, : real[i]] = 1
            ids[i, r["text_len"]:] = 0  # padding text ids (masked, never labelled)
            n = r["labels"]
            if n:
                labels[i, real[i] - n : real[i]] = ids[i, r["text_len"] - n : r["text_len"]]
        # --loss labels: hidden at p-1 predicts the token at p (the same pairs HF's shift makes)
        pos = (labels != -100).nonzero(as_tuple=False)
        assert pos.shape[0] == sum(r["labels"] for r in rows)
        batches.append({
            "pixels": pixels, "ids": ids, "mask": mask, "labels": labels,
            "lab_b": pos[:, 0], "lab_t": pos[:, 1] - 1, "lab_y": labels[pos[:, 0], pos[:, 1]],
            "tokens": sum(real), "num_labels": int(pos.shape[0]),
        })
    return batches, num_visual


def main():
    args = parse_args()
    import_peer()
    import torch
    import transformers
    from torch.nn import functional as F

    transformers.logging.set_verbosity_error()
    if args.threads < 1:
        die("--threads must be at least 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    s = load_shapes(args.shapes)
    warmup = s.get("warmup_steps", 0) if args.warmup is None else args.warmup
    n_steps = len(s["steps"])
    if not (0 <= warmup < n_steps):
        die(f"{n_steps} steps with warmup {warmup}: no step left to time")

    vision, projector, llm, freeze, params, vcfg, lcfg = build(s, torch, transformers)
    opt_cfg = s.get("optimizer", {})
    opt = torch.optim.AdamW(
        params,
        lr=opt_cfg.get("lr", 5e-5),
        betas=tuple(opt_cfg.get("betas", (0.9, 0.999))),
        eps=opt_cfg.get("eps", 1e-8),
        weight_decay=opt_cfg.get("weight_decay", 0.0),
        **({"fused": True} if args.adamw == "fused" else {"foreach": True}),
    )
    batches, num_visual = make_batches(s, torch, args.seed)
    drop_cls = num_visual == (vcfg.image_size // vcfg.patch_size) ** 2
    embed = llm.get_input_embeddings()

    n_params = sum(p.numel() for p in params)
    if lcfg.tie_word_embeddings and llm.lm_head.weight is not embed.weight:
        die("tie_embeddings is set but transformers did not tie lm_head to embed_tokens")
    print(
        f"peer_bench: torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{args.threads} threads; vision {vcfg.num_hidden_layers}L ({freeze['vision']}), "
        f"llm {lcfg.num_hidden_layers}L vocab {lcfg.vocab_size} ({freeze['llm']}), "
        f"projector ({freeze['projector']}); {n_params / 1e6:.1f}M trained params; "
        f"{n_steps} steps, {warmup} warmup; loss={args.loss}, adamw={args.adamw}; "
        f"attn vision={vision.config._attn_implementation} llm={llm.config._attn_implementation}",
        file=sys.stderr, flush=True,
    )

    def vision_features(pixels):
        # embeddings + encoder: the last layer's output before the final LayerNorm ("post_norm": false)
        h = vision.encoder(vision.embeddings(pixels)).last_hidden_state
        return h[:, 1:, :] if drop_cls else h

    def step(bt):
        opt.zero_grad(set_to_none=True)
        if freeze["vision"] == "frozen":
            with torch.no_grad():
                feats = vision_features(bt["pixels"])
        else:
            feats = vision_features(bt["pixels"])
        vis = projector(feats)
        emb = torch.cat([vis, embed(bt["ids"])], dim=1)
        if args.loss == "hf":
            out = llm(inputs_embeds=emb, attention_mask=bt["mask"], labels=bt["labels"], use_cache=False)
            loss = out.loss
        else:
            hidden = llm.model(inputs_embeds=emb, attention_mask=bt["mask"], use_cache=False).last_hidden_state
            if bt["num_labels"]:
                h = hidden[bt["lab_b"], bt["lab_t"]]
                loss = F.cross_entropy(llm.lm_head(h), bt["lab_y"])
            else:
                loss = hidden.sum() * 0.0
        loss.backward()
        opt.step()
        return float(loss.detach())

    timed_s, timed_tokens, times = 0.0, 0, []
    for i, bt in enumerate(batches):
        t0 = time.perf_counter()
        loss = step(bt)
        dt = time.perf_counter() - t0
        tag = "warmup" if i < warmup else "timed"
        if i >= warmup:
            timed_s += dt
            timed_tokens += bt["tokens"]
            times.append(dt)
        rows = len(s["steps"][i]["rows"])
        print(
            f"peer_bench: step {i + 1}/{n_steps} ({tag}) {dt:.3f} s, {rows} rows x "
            f"{bt['mask'].shape[1]} max, {bt['tokens']} tokens, {bt['tokens'] / dt:.1f} tokens/s, "
            f"loss {loss:.4f}",
            file=sys.stderr, flush=True,
        )

    tps = timed_tokens / timed_s
    result = {
        "tokens_per_s": tps,
        "step_s_mean": timed_s / len(times),
        "timed_steps": len(times),
        "tokens": timed_tokens,
        "threads": args.threads,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "loss": args.loss,
        "adamw": args.adamw,
    }
    print(
        f"peer_bench (PyTorch {torch.__version__}, transformers {transformers.__version__}, "
        f"{args.threads} threads, loss={args.loss}, adamw={args.adamw}): {tps:.1f} tokens/s ({timed_tokens} tokens in {len(times)} timed "
        f"steps, {result['step_s_mean']:.3f} s/step mean)"
    )
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
