//! Devices and kernels. Condenser runs on the first wgpu adapter (Vulkan, Metal, DX12; Mesa's
//! lavapipe on GPU-less machines) and falls back to burn's pure-Rust CPU backend `flex` when no
//! adapter exists. `kernels/` holds the WGSL kernels as a burn backend extension
//! ([`kernels::KernelOps`]) and [`kernels::Kernels`], the one value that says whether a run uses
//! them.

mod host;
pub mod kernels;
pub mod peak;

#[cfg(not(target_family = "wasm"))]
pub use host::set_cpu_threads;
pub use host::{cpu_threads, tune_allocator};

use burn::prelude::{Device, DeviceKind};

/// Which backend the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// First wgpu adapter; `flex` when none exists.
    #[default]
    Auto,
    /// wgpu, failing if there is no adapter.
    Wgpu,
    /// burn's CPU backend `flex`.
    Cpu,
}

impl std::str::FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "wgpu" => Ok(Self::Wgpu),
            "cpu" | "flex" => Ok(Self::Cpu),
            other => Err(format!(
                "unknown backend {other:?}: expected auto, wgpu or cpu"
            )),
        }
    }
}

/// What a resolved device is, for logs and reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceInfo {
    /// `wgpu` or `cpu`.
    pub backend: &'static str,
    /// Adapter name (e.g. "llvmpipe (LLVM 15.0.6, 256 bits)") or "flex".
    pub name: String,
    /// Whether its tensors live in host memory: the CPU backend, or a wgpu adapter that is a
    /// CPU (Mesa's lavapipe), so that host memory bounds a run's peak.
    pub host_memory: bool,
}

/// One adapter wgpu can see.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdapterSummary {
    pub name: String,
    pub api: String,
    pub device_type: String,
    /// A software adapter running on the CPU (lavapipe): its memory is the host's.
    pub cpu: bool,
    pub driver: String,
    pub max_storage_buffer_binding_size: u64,
    pub max_compute_workgroup_size_x: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroup_storage_size: u32,
    pub shader_f16: bool,
    pub subgroups: bool,
}

/// Lists the adapters of the primary graphics APIs (Vulkan, Metal, DX12); GL is left out: raw
/// WGSL compute kernels are not reliable there.
pub fn adapters() -> Vec<AdapterSummary> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::PRIMARY,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY))
        .iter()
        .map(|a| {
            let info = a.get_info();
            let limits = a.limits();
            let features = a.features();
            AdapterSummary {
                name: info.name,
                api: format!("{:?}", info.backend),
                device_type: format!("{:?}", info.device_type),
                cpu: info.device_type == wgpu::DeviceType::Cpu,
                driver: format!("{} {}", info.driver, info.driver_info)
                    .trim()
                    .to_string(),
                max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
                max_compute_workgroup_size_x: limits.max_compute_workgroup_size_x,
                max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
                max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
                shader_f16: features.contains(wgpu::Features::SHADER_F16),
                subgroups: features.contains(wgpu::Features::SUBGROUP),
            }
        })
        .collect()
}

/// Resolves the user's choice to a device (without autodiff). `Auto` picks wgpu's default
/// adapter when any exists and logs one line when it falls back to the CPU.
pub fn select(choice: BackendChoice) -> crate::Result<(Device, DeviceInfo)> {
    let cpu = || {
        (
            Device::flex(),
            DeviceInfo {
                backend: "cpu",
                name: "flex".into(),
                host_memory: true,
            },
        )
    };
    match choice {
        BackendChoice::Cpu => Ok(cpu()),
        BackendChoice::Auto | BackendChoice::Wgpu => {
            let found = adapters();
            let Some(first) = found.first() else {
                if choice == BackendChoice::Wgpu {
                    return Err(crate::Error::Device(
                        "--backend wgpu asked for, but wgpu finds no adapter (install a Vulkan \
                         driver, e.g. Debian's mesa-vulkan-drivers for lavapipe)"
                            .into(),
                    ));
                }
                log::warn!("no wgpu adapter found: running on burn's CPU backend (flex)");
                return Ok(cpu());
            };
            Ok((
                Device::wgpu(DeviceKind::DefaultDevice),
                DeviceInfo {
                    backend: "wgpu",
                    name: format!("{} ({})", first.name, first.api),
                    host_memory: first.cpu,
                },
            ))
        }
    }
}

/// The largest single buffer `device` can allocate, in bytes; `None` where only host memory
/// bounds it (the CPU backend). On wgpu this is what CubeCL's allocator refuses beyond: the
/// adapter's largest storage binding (and buffer), or a whole memory heap where the driver
/// indexes buffers with 64 bits. Every tensor a run forms must fit it.
pub fn max_buffer_bytes(device: &Device) -> Option<u64> {
    match device.clone().inner().as_dispatch() {
        burn::backend::DispatchDevice::Cube(d) => {
            Some(d.client().properties().memory.max_page_size)
        }
        _ => None,
    }
}
