//! A module's parameters by dotted path, as the import, export and bundle code name them.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;

use super::safetensors::HostTensor;

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
