use condenser_engine::burn::prelude::*;
use condenser_engine::data::*;
use condenser_engine::model::*;
use condenser_engine::train::checkpoint;
use std::path::Path;

fn main() {
    let device = Device::flex();
    let model =
        checkpoint::load_full(Path::new("runs/shapes-vision/checkpoints/final"), &device).unwrap();
    let tok = TextTokenizer::load(Path::new("data/shapes/tokenizer.json")).unwrap();
    let ds = Dataset::load(
        Path::new("data/shapes"),
        "captions.json",
        &tok,
        &model.config.vision,
        512,
        true,
    )
    .unwrap();
    let px = ds.images[..2 * ds.image_len].to_vec();
    let img = Tensor::<4>::from_data(TensorData::new(px, [2, 3, 32, 32]), &device);
    println!(
        "pixel diff {}",
        (img.clone().narrow(0, 0, 1) - img.clone().narrow(0, 1, 1))
            .abs()
            .mean()
            .into_scalar::<f32>()
    );
    let patches = model
        .vision
        .patch_embedding
        .forward(model.vision.patchify(img.clone()));
    println!(
        "patch emb diff {}",
        (patches.clone().narrow(0, 0, 1) - patches.narrow(0, 1, 1))
            .abs()
            .mean()
            .into_scalar::<f32>()
    );
    let f = model.vision.forward(img.clone());
    println!(
        "feat diff {} feat mean abs {}",
        (f.clone().narrow(0, 0, 1) - f.clone().narrow(0, 1, 1))
            .abs()
            .mean()
            .into_scalar::<f32>(),
        f.clone().abs().mean().into_scalar::<f32>()
    );
    let v = model.visual_tokens(Visual::Pixels(img.clone()));
    println!(
        "vis tok diff {} mean abs {}",
        (v.clone().narrow(0, 0, 1) - v.clone().narrow(0, 1, 1))
            .abs()
            .mean()
            .into_scalar::<f32>(),
        v.abs().mean().into_scalar::<f32>()
    );
    let e: Vec<_> = ds.encoded[..2].iter().collect();
    let hb = host_batch(&e, 16, 0, Padding::Right);
    println!("gather {:?}", &hb.gather[..24]);
    let b = hb.to_device(Visual::Pixels(img), &device);
    let emb = model.input_embeddings(&b);
    println!(
        "emb diff at visual {}",
        (emb.clone().narrow(0, 0, 1) - emb.narrow(0, 1, 1))
            .narrow(1, 2, 16)
            .abs()
            .mean()
            .into_scalar::<f32>()
    );
    println!(
        "cls {:?}",
        model
            .vision
            .class_embedding
            .val()
            .abs()
            .mean()
            .into_scalar::<f32>()
    );
    println!(
        "pos {:?}",
        model
            .vision
            .position_embedding
            .val()
            .abs()
            .mean()
            .into_scalar::<f32>()
    );
    println!(
        "patch w {:?}",
        model
            .vision
            .patch_embedding
            .weight
            .val()
            .abs()
            .mean()
            .into_scalar::<f32>()
    );
}
