//! `condenser info`: what wgpu can see, and the device a run would use.

use condenser_engine::backend;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    device: super::DeviceArgs,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    println!("condenser {} (burn 0.22.1)", env!("CARGO_PKG_VERSION"));
    let adapters = backend::adapters();
    if adapters.is_empty() {
        println!("wgpu adapters: none (runs use burn's CPU backend, flex)");
    }
    for (i, a) in adapters.iter().enumerate() {
        println!("adapter {i}: {}", a.name);
        println!(
            "  api: {}   type: {}   driver: {}",
            a.api, a.device_type, a.driver
        );
        println!(
            "  limits: storage buffer {} MiB, workgroup x {} / {} invocations, shared memory {} KiB",
            a.max_storage_buffer_binding_size >> 20,
            a.max_compute_workgroup_size_x,
            a.max_compute_invocations_per_workgroup,
            a.max_compute_workgroup_storage_size >> 10
        );
        println!(
            "  features: shader-f16 {}, subgroups {}",
            a.shader_f16, a.subgroups
        );
    }
    let (_, info) = args.device.device()?;
    println!(
        "selected ({:?}): {} ({})",
        args.device.backend, info.backend, info.name
    );
    Ok(())
}
