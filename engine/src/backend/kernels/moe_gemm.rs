//! The expert GEMMs of the MoE kernels (`shaders/moe_gemm*.wgsl`, `moe_weight_grad.wgsl`):
//! their generated per-row code, their launch, and their autodiff wiring (the backward is the
//! same GEMM on transposed weights plus a per-expert weight-gradient GEMM over the same
//! segments). Routing and the sort are in `moe.rs`.

use burn::backend::ops::FloatTensorOps;
use burn::backend::wgpu::{CubeBackend, CubeTensor, into_contiguous};
use burn::tensor::{DType, IndexingUpdateOp, Shape};

use super::buffers::{as_f32, empty_f32};

type B = CubeBackend;
use super::moe_kernel::{GEMM_LANES, GEMM_ROWS, MoeKernel, as_i32, dims2, launch};

// ---------------------------------------------------------------------------------------------
// expert GEMM

/// `c [S, Nd]`, row s = `a[src(s)] @ W[e(s)]` for `w [E, Kd, Nd]` (see
/// `shaders/moe_gemm.wgsl`).
fn gemm(
    a: &CubeTensor,
    rows: &CubeTensor,
    w: &CubeTensor,
    offsets: &CubeTensor,
    gather: bool,
) -> CubeTensor {
    let ws = w.meta.shape();
    assert_eq!(ws.num_dims(), 3, "MoE expert weights must be [E, in, out]");
    let (e, kd, nd) = (ws[0], ws[1], ws[2]);
    let s = rows.meta.shape().num_elements();
    let (m, ak) = dims2(a, "the MoE expert input");
    assert_eq!(ak, kd, "MoE expert input width {ak} vs weights' {kd}");
    assert!(
        gather || m == s,
        "an ungathered MoE input has one row per sorted row"
    );
    assert_eq!(
        offsets.meta.shape().num_elements(),
        e + 1,
        "offsets are [E + 1]"
    );
    let c = empty_f32(a, Shape::new([s, nd]));
    if s > 0 && nd > 0 {
        launch(
            MoeKernel::Gemm {
                e: e as u32,
                kd: kd as u32,
                nd: nd as u32,
                gather,
            },
            GEMM_LANES,
            (
                s.div_ceil(GEMM_ROWS as usize),
                nd.div_ceil(4 * GEMM_LANES as usize),
                1,
            ),
            &[a, rows, w, offsets, &c],
            &[s as u32],
        );
    }
    c
}

/// `dW [E, Kd, Nd]` = per expert, the sum over its rows of `a[src(s)]^T g[s]`.
fn weight_grad(
    a: &CubeTensor,
    rows: &CubeTensor,
    g: &CubeTensor,
    offsets: &CubeTensor,
    e: usize,
    gather: bool,
) -> CubeTensor {
    let (_, kd) = dims2(a, "the MoE expert input");
    let (s, nd) = dims2(g, "the MoE expert output gradient");
    let dw = empty_f32(a, Shape::new([e, kd, nd]));
    launch(
        MoeKernel::WeightGrad {
            kd: kd as u32,
            nd: nd as u32,
            gather,
        },
        GEMM_LANES,
        (
            kd.div_ceil(GEMM_ROWS as usize),
            nd.div_ceil(4 * GEMM_LANES as usize),
            e,
        ),
        &[a, rows, g, offsets, &dw],
        &[s as u32],
    );
    dw
}

/// The inputs of one expert GEMM, as the backward needs them.
#[derive(Debug, Clone)]
pub(super) struct GemmInputs {
    a: CubeTensor,
    rows: CubeTensor,
    w: CubeTensor,
    offsets: CubeTensor,
    gather: bool,
}

impl GemmInputs {
    pub(super) fn new(
        a: CubeTensor,
        rows: CubeTensor,
        w: CubeTensor,
        offsets: CubeTensor,
        gather: u32,
    ) -> Self {
        GemmInputs {
            a: as_f32(a, "the MoE expert input"),
            rows: as_i32(rows, "the MoE sorted rows"),
            w: as_f32(w, "the MoE expert weights"),
            offsets: as_i32(offsets, "the MoE expert offsets"),
            gather: gather == 1,
        }
    }

    pub(super) fn forward(&self) -> CubeTensor {
        gemm(&self.a, &self.rows, &self.w, &self.offsets, self.gather)
    }

    /// `(da, dw)` from the output gradient `[S, Nd]`.
    pub(super) fn backward(&self, grad: CubeTensor) -> (CubeTensor, CubeTensor) {
        let g = as_f32(grad, "the MoE expert output gradient");
        let e = self.w.meta.shape()[0];
        // sorted-order input gradient, then (gathered inputs) summed back onto the tokens
        // (the transposed weights as a contiguous copy: E Kd Nd floats, small beside the GEMMs)
        let wt = into_contiguous(B::float_swap_dims(self.w.clone(), 1, 2));
        let da_sorted = gemm(&g, &self.rows, &wt, &self.offsets, false);
        let da = if self.gather {
            let zeros = B::float_zeros(
                self.a.meta.shape().clone(),
                &self.a.device,
                DType::F32.into(),
            );
            B::float_select_assign(
                zeros,
                0,
                self.rows.clone(),
                da_sorted,
                IndexingUpdateOp::Add,
            )
        } else {
            da_sorted
        };
        let dw = weight_grad(&self.a, &self.rows, &g, &self.offsets, e, self.gather);
        (da, dw)
    }
}
