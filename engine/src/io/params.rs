//! A module's parameters by dotted path, as the import, export and bundle code name them.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;

use super::safetensors::{HostTensor, TensorFolder};

/// A parameter's dotted path as a module visitor walks the tree (`layers.0.mlp.gate_proj.weight`).
/// An enum's variant adds a level HF does not have (`mlp.Dense.gate_proj`): it is left out.
#[derive(Default)]
pub(crate) struct ParamPath(Vec<String>);

impl ParamPath {
    pub(crate) fn enter(&mut self, name: &str, container_type: &str) {
        self.0.push(if container_type.starts_with("Enum:") {
            String::new()
        } else {
            name.to_string()
        });
    }

    pub(crate) fn exit(&mut self) {
        self.0.pop();
    }

    pub(crate) fn current(&self) -> String {
        self.0
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join(".")
    }
}

/// Every float parameter of `module` by its [`ParamPath`], read back to the host.
pub(crate) fn host_params<M: Module>(module: &M) -> BTreeMap<String, HostTensor> {
    struct Collect {
        path: ParamPath,
        out: BTreeMap<String, HostTensor>,
    }
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.enter(name, container_type);
        }

        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.exit();
        }

        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let t = p.val();
            let shape = t.dims().to_vec();
            let values = t
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .expect("f32 data");
            self.out
                .insert(self.path.current(), HostTensor { shape, values });
        }
    }
    let mut v = Collect {
        path: ParamPath::default(),
        out: BTreeMap::new(),
    };
    module.visit(&mut v);
    v.out
}

/// How a checkpoint stores a tensor relative to our parameter of the same meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Same shape, same order.
    Same,
    /// A 2-D matrix stored `[out, in]` (PyTorch's `Linear`) where burn's `Linear` holds
    /// `[in, out]`.
    Transposed,
    /// The same values with unit axes added or dropped (`[C]` for our `[1, 1, C]`).
    Reshaped,
    /// A patch convolution `[C, 3, p, p]` for our linear map over unfolded patches
    /// `[3 p p, C]` (flattened channel-major, as [`crate::model::VisionEncoder::patchify`] cuts).
    Conv,
}

impl Layout {
    /// Whether a stored shape holds our parameter of shape `want`.
    fn fits(self, stored: &[usize], want: &[usize]) -> bool {
        let squeeze = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
        match self {
            Layout::Same => stored == want,
            Layout::Transposed => {
                stored.len() == 2 && want.len() == 2 && stored[0] == want[1] && stored[1] == want[0]
            }
            Layout::Reshaped => squeeze(stored) == squeeze(want),
            Layout::Conv => {
                stored.len() == 4
                    && want.len() == 2
                    && stored[0] == want[1]
                    && stored[1] * stored[2] * stored[3] == want[0]
            }
        }
    }

    /// The stored tensor as our parameter of shape `want` (which it [`fits`](Self::fits)).
    fn convert<const D: usize>(
        self,
        t: HostTensor,
        want: [usize; D],
        device: &Device,
    ) -> Tensor<D> {
        match self {
            Layout::Same => Tensor::from_data(TensorData::new(t.values, t.shape), device),
            Layout::Reshaped => Tensor::from_data(TensorData::new(t.values, want.to_vec()), device),
            // a conv `[C, 3, p, p]` is, row-major, the matrix `[C, 3 p p]`
            Layout::Transposed | Layout::Conv => Tensor::<D>::from_data(
                TensorData::new(t.values, [want[1], want[0]].to_vec()),
                device,
            )
            .transpose(),
        }
    }
}

/// What [`load_named`] found wrong, all at once.
#[derive(Debug, Default)]
pub(crate) struct LoadReport {
    /// Checkpoint names our model needs that the files lack.
    pub missing: Vec<String>,
    /// `name: file has [..], model needs [..]` lines.
    pub mismatched: Vec<String>,
}

impl LoadReport {
    /// An error listing every missing and misshapen tensor, or `Ok` when there are none.
    pub fn into_result(self, source: &std::path::Path) -> crate::Result<()> {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!(
                "{} tensors missing: {}",
                self.missing.len(),
                self.missing.join(", ")
            ));
        }
        if !self.mismatched.is_empty() {
            parts.push(format!("shape mismatches: {}", self.mismatched.join("; ")));
        }
        if parts.is_empty() {
            return Ok(());
        }
        Err(crate::Error::Checkpoint {
            path: source.into(),
            message: parts.join("; "),
        })
    }
}

/// Replaces every float parameter of `module` by the tensor `name(path)` names in `folder`
/// (taken out of it, so what is left afterwards was not used). A parameter the map lacks
/// or holds in another shape keeps its value and is recorded in `report`.
pub(crate) fn load_named<M: Module>(
    module: M,
    folder: &mut TensorFolder,
    name: &dyn Fn(&str) -> (String, Layout),
    device: &Device,
    report: &mut LoadReport,
) -> M {
    struct Loader<'a> {
        path: ParamPath,
        folder: &'a mut TensorFolder,
        name: &'a dyn Fn(&str) -> (String, Layout),
        device: Device,
        report: &'a mut LoadReport,
    }
    impl burn::module::ModuleMapper for Loader<'_> {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.enter(name, container_type);
        }

        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.exit();
        }

        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (name, layout) = (self.name)(&self.path.current());
            let want: [usize; D] = param.val().dims();
            let Some(t) = self.folder.take(&name) else {
                self.report.missing.push(name);
                return param;
            };
            if !layout.fits(&t.shape, &want) {
                self.report.mismatched.push(format!(
                    "{name}: file has {:?}, model needs {want:?}{}",
                    t.shape,
                    match layout {
                        Layout::Same => "",
                        Layout::Transposed => " (stored transposed)",
                        Layout::Reshaped => " (any unit axes)",
                        Layout::Conv => " (as a [C, 3, p, p] convolution)",
                    }
                ));
                return param;
            }
            let value = layout.convert(t, want, &self.device);
            param.map(|_| value)
        }
    }
    let mut loader = Loader {
        path: ParamPath::default(),
        folder,
        name,
        device: device.clone(),
        report,
    };
    module.map(&mut loader)
}

/// The layer index `i` of a tensor name `{prefix}{i}.…`, if it is one.
pub(crate) fn layer_index(name: &str, prefix: &str) -> Option<usize> {
    name.strip_prefix(prefix)?.split('.').next()?.parse().ok()
}
