//! `condenser bench`: Condenser's WGSL kernels against the burn-ops compositions they replace,
//! on one wgpu device in one run, written as a generated results file.

use std::path::PathBuf;

use anyhow::{Context, bail};
use condenser_engine::backend::{self, BackendChoice};
use condenser_engine::bench;

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// `step`: training steps of a recipe (tokens/s, MFU, start-up, peak memory) instead of
    /// the kernel sweeps.
    #[command(subcommand)]
    pub what: Option<What>,
    /// Distillation-loss sizes as TOKENSxVOCAB, comma-separated. The burn-ops reference binds
    /// each logit tensor whole, so a size must fit the adapter's largest storage binding
    /// (lavapipe: 128 MiB, i.e. 1048 x 32000). `none` skips the distillation sweep.
    #[arg(long, value_delimiter = ',', default_value = "256x32000,1024x32000")]
    pub distill: Vec<String>,
    /// Attention sizes as BATCHxHEADSxKV_HEADSxSEQxHEAD_DIM (causal), comma-separated, in f32;
    /// a `:f16` suffix (e.g. 1x8x2x512x64:f16) runs kernel and reference with q, k and v in f16
    /// (left out, with a message, on an adapter without shader-f16). `none` skips the sweep.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1x8x2x128x64,1x8x2x256x64,1x8x2x512x64,1x8x2x1024x64,1x8x2x512x64:f16,1x8x2x1024x64:f16"
    )]
    pub attention: Vec<String>,
    /// Fused-linear sizes as TOKENSxHIDDENxVOCAB, comma-separated; `none` skips the sweep.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "512x256x8000,2048x256x8000,1024x256x32000"
    )]
    pub fused_linear: Vec<String>,
    /// MoE layer sizes as TOKENSxHIDDENxINTERMEDIATExEXPERTSxTOP_K (SwiGLU experts),
    /// comma-separated; `none` skips the MoE sweep.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "512x256x688x8x2,2048x256x688x8x2"
    )]
    pub moe: Vec<String>,
    /// Language-model head-loss sizes as POSITIONSxLABELLEDxHIDDENxVOCAB (a batch of POSITIONS
    /// tokens, LABELLED of them with a label), comma-separated: the fused-linear cross-entropy
    /// kernel against chunked burn ops and full logits. The defaults are an SFT batch of the
    /// real teacher (16 examples of 70 tokens, 3 labelled each) and a vocabulary series at 512
    /// labelled rows. `none` skips the sweep.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1120x48x576x49152,512x512x256x8000,512x512x256x32000,512x512x256x65536,512x512x256x151936"
    )]
    pub head_loss: Vec<String>,
    /// Where to run: `wgpu` (every sweep) or `cpu` (only the head-loss sweep, without the
    /// kernel column: the other sweeps measure kernels, which run on wgpu alone).
    #[arg(long, default_value = "wgpu")]
    pub backend: BackendChoice,
    /// Token rows per chunk of the fused-linear path (rounded up to a multiple of 64).
    #[arg(long, default_value_t = 256)]
    pub chunk: usize,
    /// Timed repetitions per size (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Internal: measure one pass's peak memory in this fresh process and print it (MiB). The
    /// sweeps run every memory measurement this way, since a memory pool only grows.
    #[arg(long, hide = true)]
    pub probe: Option<String>,
    /// Write the generated markdown here (e.g. docs/results/kernels.md); printed either way.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn parse_size(s: &str) -> anyhow::Result<(usize, usize)> {
    let (a, b) = s
        .split_once('x')
        .with_context(|| format!("size {s:?}: expected TOKENSxVOCAB, e.g. 4096x32000"))?;
    let n: usize = a
        .trim()
        .parse()
        .with_context(|| format!("size {s:?}: tokens"))?;
    let v: usize = b
        .trim()
        .parse()
        .with_context(|| format!("size {s:?}: vocab"))?;
    if n == 0 || v == 0 {
        bail!("size {s:?}: tokens and vocab must be positive");
    }
    Ok((n, v))
}

fn parse_attention(s: &str) -> anyhow::Result<bench::AttentionSize> {
    let (dims, half) = match s.trim().split_once(':') {
        None => (s, false),
        Some((d, "f32")) => (d, false),
        Some((d, "f16")) => (d, true),
        Some((_, other)) => {
            bail!("attention size {s:?}: precision {other:?}, expected f32 or f16")
        }
    };
    let parts: Vec<usize> = dims
        .split('x')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .with_context(|| {
            format!("attention size {s:?}: expected BxHxHKVxTxD[:f16], e.g. 1x8x2x512x64")
        })?;
    let [b, h, hk, t, d] = parts[..] else {
        bail!("attention size {s:?}: expected five numbers BxHxHKVxTxD, e.g. 1x8x2x512x64");
    };
    if let Some(why) =
        condenser_engine::backend::kernels::flash_attention_unsupported(b, h, hk, t, t, d, true)
    {
        bail!("attention size {s:?}: {why}");
    }
    Ok(bench::AttentionSize {
        batch: b,
        heads: h,
        kv_heads: hk,
        seq: t,
        head_dim: d,
        half,
    })
}

fn parse_linear(s: &str) -> anyhow::Result<(usize, usize, usize)> {
    let parts: Vec<usize> = s
        .split('x')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("fused-linear size {s:?}: expected NxHxV, e.g. 1024x256x32000"))?;
    match parts[..] {
        [n, h, v] if n > 0 && h > 0 && v > 0 => Ok((n, h, v)),
        _ => bail!("fused-linear size {s:?}: expected three positive numbers NxHxV"),
    }
}

fn parse_head_loss(s: &str) -> anyhow::Result<bench::HeadLossSize> {
    let parts: Vec<usize> = s
        .split('x')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .with_context(|| {
            format!("head-loss size {s:?}: expected PxLxHxV, e.g. 1120x48x576x49152")
        })?;
    let [positions, labelled, hidden, vocab] = parts[..] else {
        bail!("head-loss size {s:?}: expected four numbers POSITIONSxLABELLEDxHIDDENxVOCAB");
    };
    if positions == 0 || hidden == 0 || vocab == 0 || !(1..=positions).contains(&labelled) {
        bail!("head-loss size {s:?}: sizes must be positive, with 1 <= labelled <= positions");
    }
    Ok(bench::HeadLossSize {
        positions,
        labelled,
        hidden,
        vocab,
    })
}

fn parse_moe(s: &str) -> anyhow::Result<bench::MoeSize> {
    let parts: Vec<usize> = s
        .split('x')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("MoE size {s:?}: expected NxDxIxExK, e.g. 2048x256x688x8x2"))?;
    let [tokens, hidden, intermediate, experts, top_k] = parts[..] else {
        bail!("MoE size {s:?}: expected five numbers NxDxIxExK, e.g. 2048x256x688x8x2");
    };
    let max = condenser_engine::backend::kernels::MOE_MAX_EXPERTS;
    if tokens == 0 || hidden == 0 || intermediate == 0 {
        bail!("MoE size {s:?}: tokens, hidden and intermediate sizes must be positive");
    }
    if !(1..=max).contains(&experts) || !(1..=experts).contains(&top_k) {
        bail!("MoE size {s:?}: the kernels take 1..={max} experts and 1 <= top-k <= experts");
    }
    Ok(bench::MoeSize {
        tokens,
        hidden,
        intermediate,
        experts,
        top_k,
    })
}

/// A sweep's sizes: none when the list holds `none`, else each one parsed.
fn sweep<T>(list: &[String], parse: fn(&str) -> anyhow::Result<T>) -> anyhow::Result<Vec<T>> {
    if list.iter().any(|s| s == "none") {
        return Ok(Vec::new());
    }
    list.iter().map(|s| parse(s)).collect()
}

/// Runs `probe` in a fresh `condenser bench --probe` process and returns its MiB.
fn probe_mib(probe: bench::MemoryProbe) -> anyhow::Result<f64> {
    let text = serde_json::to_string(&probe)?;
    let exe = std::env::current_exe().context("locating the condenser binary")?;
    let out = std::process::Command::new(exe)
        .args(["bench", "--probe", &text])
        .output()
        .context("starting a memory probe")?;
    if !out.status.success() {
        bail!(
            "memory probe {text} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let s = String::from_utf8_lossy(&out.stdout);
    s.trim()
        .parse::<f64>()
        .with_context(|| format!("memory probe {text} printed {s:?}"))
}

/// What else `bench` measures.
#[derive(clap::Subcommand, Debug)]
pub enum What {
    /// Run N training steps of one stage of a recipe and print tokens/s, MFU, start-up time
    /// and peak memory per device (`--json` also writes every step's batch shapes, which
    /// scripts/peer-bench.sh hands to a PyTorch peer).
    Step(super::bench_step::Args),
}

pub fn main(args: Args) -> anyhow::Result<()> {
    if let Some(What::Step(a)) = args.what {
        return super::bench_step::main(a);
    }
    if let Some(text) = &args.probe {
        let probe: bench::MemoryProbe =
            serde_json::from_str(text).with_context(|| format!("--probe {text:?}"))?;
        let (device, _) = backend::select(probe.backend())?;
        println!("{}", bench::run_probe(&device, probe));
        return Ok(());
    }
    let heads = sweep(&args.head_loss, parse_head_loss)?;
    if args.repeats == 0 {
        bail!("--repeats must be at least 1");
    }
    match args.backend {
        BackendChoice::Wgpu => {}
        BackendChoice::Cpu => return cpu_main(&args, &heads),
        BackendChoice::Auto => bail!("--backend must be wgpu or cpu"),
    }
    let linear = sweep(&args.fused_linear, parse_linear)?;
    let attention = sweep(&args.attention, parse_attention)?;
    let moe = sweep(&args.moe, parse_moe)?;
    let sizes = sweep(&args.distill, parse_size)?;
    // the kernels only exist on wgpu: no CPU fallback here
    let (device, info) = backend::select(BackendChoice::Wgpu)?;
    // f16 sizes need shader-f16; on an adapter without it they are left out, saying so
    let f16 = backend::adapters().first().is_some_and(|a| a.shader_f16);
    let attention: Vec<bench::AttentionSize> = attention
        .into_iter()
        .filter(|a| {
            if a.half && !f16 {
                eprintln!(
                    "skipping attention {a}: {} does not offer shader-f16",
                    info.name
                );
            }
            f16 || !a.half
        })
        .collect();
    // the burn-ops reference binds each [tokens, vocab] tensor whole: refuse sizes the adapter
    // cannot bind rather than fail inside the device
    if let Some(limit) = backend::adapters()
        .first()
        .map(|a| a.max_storage_buffer_binding_size)
    {
        for (n, v) in &sizes {
            let bytes = (n * v * 4) as u64;
            if bytes > limit {
                bail!(
                    "size {n}x{v}: its logits ({} MiB) exceed this adapter's largest storage \
                     binding ({} MiB), which the burn-ops reference needs; use fewer tokens",
                    bytes >> 20,
                    limit >> 20
                );
            }
        }
    }
    eprintln!("benchmarking on {}", info.name);
    // memory: each pass alone in a fresh process (a memory pool only grows, so in-process
    // figures after the first see pages their predecessors left)
    let mut memory = |p: bench::MemoryProbe| {
        probe_mib(p).map_err(|e| condenser_engine::Error::Device(format!("{e:#}")))
    };
    let rows = bench::distill_sweep(&device, &sizes, args.repeats, &mut memory, &mut |r| {
        eprintln!(
            "  distill {}x{}: kernel {:.2} ms / burn ops {:.2} ms = {:.2}x faster, memory {:.1} / {:.1} MiB = {:.2}x less",
            r.tokens,
            r.vocab,
            r.kernel_ms,
            r.reference_ms,
            r.speedup(),
            r.kernel_mib,
            r.reference_mib,
            r.memory_ratio()
        );
    })?;
    let att = bench::attention_sweep(&device, &attention, args.repeats, &mut memory, &mut |r| {
        eprintln!(
            "  attention {} ({}): kernel {:.2} ms / burn ops {:.2} ms = {:.2}x faster, memory {:.1} / {:.1} MiB = {:.2}x less",
            r.size,
            r.size.dtype_name(),
            r.kernel_ms,
            r.reference_ms,
            r.speedup(),
            r.kernel_mib,
            r.reference_mib,
            r.memory_ratio()
        );
    })?;
    let lin = bench::fused_linear_sweep(
        &device,
        &linear,
        args.chunk,
        args.repeats,
        &mut memory,
        &mut |r| {
            eprintln!(
                "  fused-linear {}x{}x{}: fused {:.2} ms / burn ops {:.2} ms, memory {:.1} / {:.1} MiB (weight gradient {:.1} MiB)",
                r.tokens,
                r.hidden,
                r.vocab,
                r.fused_ms,
                r.reference_ms,
                r.fused_mib,
                r.reference_mib,
                r.weight_grad_mib
            );
        },
    )?;
    let experts = bench::moe_sweep(&device, &moe, args.repeats, &mut memory, &mut |r| {
        let s = r.size;
        eprintln!(
            "  moe {}x{}x{} top-{} of {}: kernels {:.2} ms / sparse {:.2} ms / dense {:.2} ms = {:.2}x of dense, memory {:.1} / {:.1} / {:.1} MiB",
            s.tokens,
            s.hidden,
            s.intermediate,
            s.top_k,
            s.experts,
            r.kernel_ms,
            r.sparse_ms,
            r.dense_ms,
            r.dense_ratio(),
            r.kernel_mib,
            r.sparse_mib,
            r.dense_mib
        );
    })?;
    let max_buffer = backend::max_buffer_bytes(&device).unwrap_or(u64::MAX);
    let head = bench::head_loss_sweep(
        &device,
        &heads,
        max_buffer,
        args.repeats,
        &mut memory,
        &mut report_head_loss,
    )?;
    let command = format!(
        "condenser bench --distill {} --attention {} --fused-linear {} --head-loss {} --moe {} --chunk {} --repeats {}",
        args.distill.join(","),
        args.attention.join(","),
        args.fused_linear.join(","),
        args.head_loss.join(","),
        args.moe.join(","),
        args.chunk,
        args.repeats
    );
    let mut sections = Vec::new();
    if !rows.is_empty() {
        sections.push(bench::distill_table(&info.name, &rows, &command));
    }
    if !lin.is_empty() {
        sections.push(bench::fused_linear_table(&info.name, &lin, &command));
    }
    if !head.is_empty() {
        sections.push(bench::head_loss_table(&info.name, &head, &command));
    }
    if !att.is_empty() {
        sections.push(bench::attention_table(&info.name, &att, &command));
    }
    if !experts.is_empty() {
        sections.push(bench::moe_table(&info.name, &experts, &command));
    }
    write_results(args.out.as_deref(), &sections)
}

fn report_head_loss(r: &bench::HeadLossBenchRow) {
    let opt = |x: Option<f64>| x.map_or("-".into(), |v| format!("{v:.1}"));
    eprintln!(
        "  head loss {}: fused {} ms / chunked ops {:.1} ms / full {} ms, memory {} / {:.1} / {} MiB (weight gradient {:.1} MiB)",
        r.size,
        opt(r.fused_ms),
        r.chunked_ms,
        opt(r.full_ms),
        opt(r.fused_mib),
        r.chunked_mib,
        opt(r.full_mib),
        r.weight_grad_mib
    );
}

/// `--backend cpu`: the head-loss sweep alone, on the CPU backend.
fn cpu_main(args: &Args, heads: &[bench::HeadLossSize]) -> anyhow::Result<()> {
    let (device, info) = backend::select(BackendChoice::Cpu)?;
    eprintln!(
        "benchmarking the head loss on the CPU ({}); the kernel sweeps run on wgpu only",
        info.name
    );
    let mut memory = |p: bench::MemoryProbe| {
        probe_mib(p).map_err(|e| condenser_engine::Error::Device(format!("{e:#}")))
    };
    let head = bench::head_loss_sweep(
        &device,
        heads,
        u64::MAX,
        args.repeats,
        &mut memory,
        &mut report_head_loss,
    )?;
    let command = format!(
        "condenser bench --backend cpu --head-loss {} --repeats {}",
        args.head_loss.join(","),
        args.repeats
    );
    let sections = if head.is_empty() {
        Vec::new()
    } else {
        vec![bench::head_loss_table("CPU (flex)", &head, &command)]
    };
    write_results(args.out.as_deref(), &sections)
}

/// Prints the generated markdown and writes it to `out` when given.
fn write_results(out: Option<&std::path::Path>, sections: &[String]) -> anyhow::Result<()> {
    let md = format!(
        "# Kernel benchmarks\n\nGenerated by `condenser bench`; do not edit by hand.\n\n{}",
        sections.join("\n")
    );
    print!("{md}");
    if let Some(out) = out {
        condenser_engine::error::write_atomic(out, md.as_bytes())
            .with_context(|| format!("writing {}", out.display()))?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}
