use condenser_engine::burn::prelude::*;
use condenser_engine::data::*;
use condenser_engine::model::*;
use condenser_engine::train::checkpoint;
use std::path::Path;

fn main() {
    let device = Device::flex();
    let model =
        checkpoint::load_full(Path::new("runs/shapes-teacher/checkpoints/final"), &device).unwrap();
    let tok = TextTokenizer::load(Path::new("data/shapes/tokenizer.json")).unwrap();
    let nv = model.config.vision.num_visual_tokens();
    let ds = Dataset::load(
        Path::new("data/shapes"),
        "test.json",
        &tok,
        &model.config.vision,
        512,
        true,
    )
    .unwrap();
    let s = 32;
    for i in 0..3 {
        let e = &ds.encoded[i];
        let k = ds.image_of[i].unwrap();
        let px = ds.images[k * ds.image_len..(k + 1) * ds.image_len].to_vec();
        let img = Tensor::<4>::from_data(TensorData::new(px, [1, 3, s, s]), &device);
        let hb = host_batch(&[e], nv, tok.special.pad, Padding::Right);
        let b = hb.to_device(Visual::Pixels(img.clone()), &device);
        let logits = model.logits(&b);
        let am: Vec<i64> = logits
            .argmax(2)
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .unwrap();
        println!("ids     {:?}", &e.ids[nv..]);
        println!("argmax  {:?}", &am[nv..]);
        let turns = &ds.records[i].conversations;
        let p = encode_prompt(&tok, &turns[..1], nv).unwrap();
        let hb = host_batch(&[&p], nv, tok.special.pad, Padding::Left);
        let b = hb.to_device(Visual::Pixels(img), &device);
        println!("prompt ids {:?}", &p.ids[nv..]);
        let am: Vec<i64> = model
            .logits(&b)
            .argmax(2)
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .unwrap();
        println!("prompt argmax {:?}", &am[nv..]);
        let mut cache = KvCache::default();
        let l = model.prefill(&b, &mut cache);
        println!(
            "prefill argmax {:?}",
            l.argmax(1)
                .into_data()
                .convert::<i64>()
                .try_to_vec::<i64>()
                .unwrap()
        );
    }
}
