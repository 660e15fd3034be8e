use condenser_engine::burn::optim::{AdamWConfig, GradientsParams};
use condenser_engine::burn::prelude::*;
use condenser_engine::config::load_recipe;
use condenser_engine::data::*;
use condenser_engine::model::*;
use std::path::Path;

fn main() {
    let device = Device::flex().autodiff();
    let r = load_recipe("/tmp/vis-one.toml").unwrap();
    let mut model = Mllm::new(&r.model, 1, &device);
    let tok = TextTokenizer::load(Path::new("data/one/tokenizer.json")).unwrap();
    let ds = Dataset::load(
        Path::new("data/one"),
        "captions.json",
        &tok,
        &r.model.vision,
        512,
        true,
    )
    .unwrap();
    let k = 8;
    let il = ds.image_len;
    let img = Tensor::<4>::from_data(
        TensorData::new(ds.images[..k * il].to_vec(), [k, 3, 32, 32]),
        &device,
    );
    let e: Vec<_> = ds.encoded[..k].iter().collect();
    let hb = host_batch(&e, 16, 0, Padding::Right);
    let mut optim = AdamWConfig::new().init();
    for step in 0..300 {
        let b = hb.to_device(Visual::Pixels(img.clone()), &device);
        let loss = model.loss(&b);
        let lv: f32 = loss.clone().into_scalar();
        let g = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(3e-3, model, g);
        if step % 50 == 0 {
            println!("step {step} loss {lv}");
        }
    }
}
