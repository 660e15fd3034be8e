//! Global gradient-norm clipping (torch's `clip_grad_norm_`): all gradients are scaled by
//! `min(1, max_norm / ||g||)` where `||g||` is the norm over every trainable parameter together.
//! burn's own clipping works per parameter, which is not what the papers' recipes mean.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;

/// Clips in place and returns the norm before clipping.
pub fn clip_global_norm<M: Module>(model: &M, grads: &mut GradientsParams, max_norm: f64) -> f32 {
    struct SumSq<'a> {
        grads: &'a GradientsParams,
        total: Option<Tensor<1>>,
    }
    impl ModuleVisitor for SumSq<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(p.id) {
                let s = g.square().sum();
                self.total = Some(match self.total.take() {
                    Some(t) => t + s,
                    None => s,
                });
            }
        }
    }
    let mut s = SumSq { grads, total: None };
    model.visit(&mut s);
    let Some(total) = s.total else { return 0.0 };
    let norm: f32 = total.sqrt().into_scalar::<f32>();
    if max_norm > 0.0 && norm.is_finite() && norm as f64 > max_norm {
        let scale = (max_norm / (norm as f64 + 1e-6)) as f32;
        struct Scale<'a> {
            grads: &'a mut GradientsParams,
            scale: f32,
        }
        impl ModuleVisitor for Scale<'_> {
            fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
                if let Some(g) = self.grads.remove::<D>(p.id) {
                    self.grads.register::<D>(p.id, g.mul_scalar(self.scale));
                }
            }
        }
        model.visit(&mut Scale { grads, scale });
    }
    norm
}
