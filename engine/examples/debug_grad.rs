use condenser_engine::burn::optim::GradientsParams;
use condenser_engine::burn::prelude::*;
use condenser_engine::data::*;
use condenser_engine::model::*;
use condenser_engine::train::checkpoint;
use std::path::Path;

fn main() {
    let device = Device::flex().autodiff();
    let cfg = checkpoint::load_config(Path::new("runs/shapes-vision/checkpoints/final")).unwrap();
    let model = Mllm::new(&cfg, 1, &device);
    let tok = TextTokenizer::load(Path::new("data/shapes/tokenizer.json")).unwrap();
    let ds = Dataset::load(
        Path::new("data/shapes"),
        "captions.json",
        &tok,
        &cfg.vision,
        512,
        true,
    )
    .unwrap();
    let px = ds.images[..2 * ds.image_len].to_vec();
    let img = Tensor::<4>::from_data(TensorData::new(px, [2, 3, 32, 32]), &device);
    let e: Vec<_> = ds.encoded[..2].iter().collect();
    let b = host_batch(&e, 16, 0, Padding::Right).to_device(Visual::Pixels(img), &device);
    let loss = model.loss(&b);
    let g = loss.backward();
    let pw = model.projector.linear_1.weight.val();
    println!(
        "proj grad {:?}",
        pw.grad(&g).map(|t| t.abs().mean().into_scalar::<f32>())
    );
    println!(
        "patch grad {:?}",
        model
            .vision
            .patch_embedding
            .weight
            .val()
            .grad(&g)
            .map(|t| t.abs().mean().into_scalar::<f32>())
    );
    println!(
        "embed grad {:?}",
        model
            .llm
            .embed_tokens
            .weight
            .val()
            .grad(&g)
            .map(|t| t.abs().mean().into_scalar::<f32>())
    );
    println!(
        "q grad {:?}",
        model.llm.layers[0]
            .self_attn
            .q_proj
            .weight
            .val()
            .grad(&g)
            .map(|t| t.abs().mean().into_scalar::<f32>())
    );
    // isolate select
    let x = Tensor::<2>::from_data(
        TensorData::new(vec![1.0f32, 2., 3., 4., 5., 6.], [3, 2]),
        &device,
    )
    .require_grad();
    let idx = Tensor::<1, Int>::from_data(TensorData::new(vec![2i64, 0, 2], [3]), &device);
    let y = x.clone().select(0, idx).sum();
    let g2 = y.backward();
    println!(
        "select grad {:?}",
        x.grad(&g2)
            .map(|t| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap())
    );
    let before = model.vision.patch_embedding.weight.val().inner();
    let pbefore = model.projector.linear_1.weight.val().inner();
    let qbefore = model.llm.layers[0].self_attn.q_proj.weight.val().inner();
    let model2 = condenser_engine::train::freeze::apply(
        model,
        &condenser_engine::config::StageFreeze {
            vision: condenser_engine::config::FreezeSpec::Named(
                condenser_engine::config::FreezePolicy::Full,
            ),
            projector: condenser_engine::config::FreezeSpec::Named(
                condenser_engine::config::FreezePolicy::Full,
            ),
            llm: condenser_engine::config::FreezeSpec::Named(
                condenser_engine::config::FreezePolicy::Full,
            ),
        },
    );
    let loss = model2.loss(&b);
    let grads = GradientsParams::from_grads(loss.backward(), &model2);
    println!("grads in params: {}", grads.len());
    let mut optim = condenser_engine::burn::optim::AdamWConfig::new().init();
    let m3 = optim.step(1e-2, model2, grads);
    println!(
        "patch delta {}",
        (m3.vision.patch_embedding.weight.val().inner() - before)
            .abs()
            .mean()
            .into_scalar::<f32>()
    );
    println!(
        "proj delta {}",
        (m3.projector.linear_1.weight.val().inner() - pbefore)
            .abs()
            .mean()
            .into_scalar::<f32>()
    );
    println!(
        "q delta {}",
        (m3.llm.layers[0].self_attn.q_proj.weight.val().inner() - qbefore)
            .abs()
            .mean()
            .into_scalar::<f32>()
    );
    println!(
        "num params {}",
        condenser_engine::train::freeze::trainable_ids(&m3).len()
    );
}
