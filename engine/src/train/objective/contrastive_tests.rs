//! Tests of the contrastive objective: InfoNCE against a direct f64 evaluation and finite
//! differences, region targets, and the region term against a host cross-entropy.

use super::*;

fn host_info_nce(a: &[f64], b: &[f64], n: usize, d: usize, t: f64) -> f64 {
    let norm = |v: &[f64]| -> Vec<f64> {
        v.chunks(d)
            .flat_map(|r| {
                let l = r.iter().map(|x| x * x).sum::<f64>().sqrt();
                r.iter().map(move |x| x / l)
            })
            .collect()
    };
    let (a, b) = (norm(a), norm(b));
    let s = |i: usize, j: usize| (0..d).map(|k| a[i * d + k] * b[j * d + k]).sum::<f64>() / t;
    let mut loss = 0.0;
    for i in 0..n {
        let row: f64 = (0..n).map(|j| s(i, j).exp()).sum();
        let col: f64 = (0..n).map(|j| s(j, i).exp()).sum();
        loss += -(s(i, i) - row.ln()) - (s(i, i) - col.ln());
    }
    loss / (2.0 * n as f64)
}

#[test]
fn info_nce_matches_direct_formula_and_finite_differences() {
    let device = Device::flex().autodiff();
    let (n, d, t) = (3, 4, 0.5);
    let mut rng = crate::rng::Rng::new(9);
    let a: Vec<f64> = (0..n * d).map(|_| rng.normal()).collect();
    let b: Vec<f64> = (0..n * d).map(|_| rng.normal()).collect();
    let ta = Tensor::<2>::from_data(
        TensorData::new(a.iter().map(|x| *x as f32).collect::<Vec<_>>(), [n, d]),
        &device,
    )
    .require_grad();
    let tb = Tensor::<2>::from_data(
        TensorData::new(b.iter().map(|x| *x as f32).collect::<Vec<_>>(), [n, d]),
        &device,
    );
    let loss = info_nce(ta.clone(), tb, t);
    let got: f32 = loss.clone().into_scalar();
    let want = host_info_nce(&a, &b, n, d, t);
    assert!((got as f64 - want).abs() < 1e-5, "{got} vs {want}");
    let grads = loss.backward();
    let g: Vec<f32> = ta
        .grad(&grads)
        .unwrap()
        .into_data()
        .convert::<f32>()
        .try_to_vec()
        .unwrap();
    for k in 0..n * d {
        let (mut up, mut dn) = (a.clone(), a.clone());
        up[k] += 1e-5;
        dn[k] -= 1e-5;
        let fd = (host_info_nce(&up, &b, n, d, t) - host_info_nce(&dn, &b, n, d, t)) / 2e-5;
        assert!(
            (g[k] as f64 - fd).abs() < 1e-3,
            "grad {k}: {} vs {fd}",
            g[k]
        );
    }
}

fn shapes_tokenizer(dir: &std::path::Path) -> TextTokenizer {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("tokenizer.json");
    let doc = crate::data::shapes::tokenizer_json();
    std::fs::write(&path, serde_json::to_string(&doc).unwrap()).unwrap();
    TextTokenizer::load(&path).unwrap()
}

/// A vision config for a split without images.
fn tiny_vision() -> crate::config::VisionConfig {
    toml::from_str(
        "image_size = 8\npatch_size = 4\nhidden = 8\nlayers = 1\nheads = 1\nmlp_hidden = 8",
    )
    .unwrap()
}

fn records(regions: &[Option<Vec<&str>>]) -> Dataset {
    let records = regions
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let c = crate::data::Conversation::single(
                format!("r{i}"),
                "x.png",
                "<image>\ndescribe the image .".into(),
                "a red circle at top left .".into(),
                None,
            );
            match r {
                Some(r) => c.with_regions(r.iter().map(|s| s.to_string()).collect()),
                None => c,
            }
        })
        .collect();
    Dataset {
        path: "captions.json".into(),
        records,
        encoded: Vec::new(),
        image_of: Vec::new(),
        images: std::sync::Arc::new(crate::data::ImageTable::new(&tiny_vision())),
        paired: false,
    }
}

#[test]
fn region_targets_reject_missing_or_misaligned_phrases() {
    let tok = shapes_tokenizer(&std::env::temp_dir().join("condenser-region-targets"));
    let good = records(&[
        Some(vec!["red circle", "nothing", "nothing", "blue square"]),
        Some(vec!["nothing", "blue square", "green diamond", "nothing"]),
    ]);
    let t = ContrastiveTargets::build(&good, &tok, Some(4)).unwrap();
    assert_eq!(t.num_phrases(), 4);
    let one = |v: &[usize]| v.iter().map(|k| vec![*k]).collect::<Vec<_>>();
    assert_eq!(t.cells, vec![one(&[0, 1, 1, 2]), one(&[1, 2, 3, 1])]);
    // several views per region: classes are per view, so "nothing" in view 0 and view 1
    // are two phrases
    let views = records(&[Some(vec![
        "red circle | red",
        "nothing | nothing",
        "blue square | blue",
        "nothing | nothing",
    ])]);
    let t = ContrastiveTargets::build(&views, &tok, Some(4)).unwrap();
    assert_eq!(t.views, 2);
    assert_eq!(t.num_phrases(), 6);
    assert_eq!(t.cells[0][1], vec![2, 3]);
    let ragged = records(&[Some(vec![
        "red circle | red",
        "nothing",
        "nothing",
        "nothing",
    ])]);
    let err = ContrastiveTargets::build(&ragged, &tok, Some(4))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("region 1 has 1 views"), "{err}");
    // without the region term, phrases are neither needed nor read
    let t = ContrastiveTargets::build(&records(&[None]), &tok, None).unwrap();
    assert_eq!(t.num_phrases(), 0);

    let err = ContrastiveTargets::build(&good, &tok, Some(9))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("captions.json") && err.contains("expected 9"),
        "{err}"
    );
    let err = ContrastiveTargets::build(&records(&[None]), &tok, Some(4))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("record 0") && err.contains("regions"), "{err}");
}

#[test]
fn region_term_is_patch_cross_entropy_over_the_batch_phrases() {
    let device = Device::flex().autodiff();
    let tok = shapes_tokenizer(&std::env::temp_dir().join("condenser-region-loss"));
    let mut config = crate::model::tests::tiny_config();
    config.llm.vocab_size = tok.vocab_size();
    let model = Mllm::new(&config, 3, &device);
    let data = records(&[
        Some(vec!["red circle", "nothing", "nothing", "blue square"]),
        Some(vec!["nothing", "cyan triangle", "nothing", "nothing"]),
        Some(vec!["nothing", "blue square", "green diamond", "nothing"]),
    ]);
    let targets = ContrastiveTargets::build(&data, &tok, Some(4)).unwrap();
    let s = config.vision.image_size;
    let mut rng = crate::rng::Rng::new(4);
    // records 2 and 0: "cyan triangle" (record 1 only) must not be a candidate
    let batch = [2usize, 0];
    let px: Vec<f32> = (0..batch.len() * 3 * s * s)
        .map(|_| rng.normal() as f32)
        .collect();
    let px = Tensor::<4>::from_data(TensorData::new(px, [batch.len(), 3, s, s]), &device);
    let temperature = 0.5;
    let out = contrastive_loss(
        &model,
        Visual::Pixels(px.clone()),
        &targets,
        &batch,
        tok.special.pad,
        temperature,
        1.0,
        &device,
    );
    let got: f32 = out.terms["region"];

    // independent: host cross-entropy over the phrases present in the batch
    let host = |t: Tensor<2>| -> Vec<Vec<f64>> {
        let d = t.dims()[1];
        let v: Vec<f32> = t.into_data().convert::<f32>().try_to_vec().unwrap();
        v.chunks(d)
            .map(|r| {
                let n = r.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
                r.iter().map(|x| *x as f64 / n).collect()
            })
            .collect()
    };
    let tokens = model.visual_tokens(Visual::Pixels(px));
    let [b, np, d] = tokens.dims();
    let patches = host(tokens.reshape([b * np, d]));
    // phrase ids in order of first appearance: red circle, nothing, blue square, cyan
    // triangle, green diamond
    let present = [0usize, 1, 2, 4];
    let seqs: Vec<&Vec<u32>> = present.iter().map(|&p| &targets.phrases[p]).collect();
    let phrases = host(encode_texts(&model, &seqs, tok.special.pad, &device));
    assert_eq!(targets.phrases[3], tok_ids(&tok, "cyan triangle"));
    let mut want = 0.0;
    let mut n = 0.0;
    for (bi, &rec) in batch.iter().enumerate() {
        for k in 0..np {
            let p = &patches[bi * np + k];
            let logits: Vec<f64> = phrases
                .iter()
                .map(|q| p.iter().zip(q).map(|(a, b)| a * b).sum::<f64>() / temperature)
                .collect();
            let lse = logits.iter().map(|x| x.exp()).sum::<f64>().ln();
            let label = present
                .iter()
                .position(|&x| x == targets.cells[rec][k][0])
                .unwrap();
            want += lse - logits[label];
            n += 1.0;
        }
    }
    want /= n;
    assert!((got as f64 - want).abs() < 1e-4, "{got} vs {want}");
}

fn tok_ids(tok: &TextTokenizer, s: &str) -> Vec<u32> {
    let mut ids = vec![tok.special.bos];
    ids.extend(tok.encode(s).unwrap());
    ids.push(tok.special.end);
    ids
}
