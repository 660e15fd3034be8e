//! `condenser data easy-vqa`: easy-VQA's layout (questions.json triples + images per split)
//! converted to LLaVA JSON, images and a word-level tokenizer that the engine's dataset loader
//! and chat template accept as they are. A tiny folder in easy-VQA's layout stands in for the
//! 3 MB package here; scripts/fetch-easy-vqa.sh converts the real one.

use std::path::Path;

use condenser_engine::data::easy_vqa::{Subset, convert};
use condenser_engine::data::{Dataset, TextTokenizer};
use condenser_tests::{repo, scratch, smoke_recipe};

fn png(to: &Path) {
    let first = repo().join("app/tests/fixtures/runs/smoke-kd/images/test_00000.png");
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(first, to).unwrap();
}

#[test]
fn converts_to_data_the_engine_loads() {
    let dir = scratch("easy-vqa");
    let src = dir.join("easy_vqa/data");
    for (split, triples) in [
        (
            "train",
            r#"[["what is the blue shape?", "rectangle", 0], ["does the image contain a circle?", "no", 0], ["what color is the shape?", "red", 1]]"#,
        ),
        (
            "test",
            r#"[["is there a triangle in the image?", "yes", 7]]"#,
        ),
    ] {
        std::fs::create_dir_all(src.join(split)).unwrap();
        std::fs::write(src.join(split).join("questions.json"), triples).unwrap();
    }
    for p in [
        "train/images/0.png",
        "train/images/1.png",
        "test/images/7.png",
    ] {
        png(&src.join(p));
    }
    let out = dir.join("out");
    let c = convert(&src, &out, Subset::default()).unwrap();
    assert_eq!((c.train, c.test, c.images), (3, 1, 3));
    // a caption per training image, from what its questions state
    assert_eq!(c.captions, 2);

    // a subset keeps every question about the first N images of a split, and only their images
    let first = Subset {
        train_images: Some(1),
        test_images: None,
    };
    let c = convert(&src, &dir.join("first"), first).unwrap();
    assert_eq!((c.train, c.test, c.images), (2, 1, 2));
    assert!(!dir.join("first/images/train/1.png").exists());
    // a subset of no images is refused, naming the split's file
    let none = Subset {
        train_images: Some(0),
        test_images: None,
    };
    let e = convert(&src, &dir.join("none"), none)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("train/questions.json") && e.contains("no train questions"),
        "{e}"
    );
    let tok = TextTokenizer::load(&out.join("tokenizer.json")).unwrap();
    // every word of every question and answer is in the vocabulary
    let ids = tok.encode("is there a triangle in the image ?").unwrap();
    assert_eq!(ids.len(), 8);
    assert!(!ids.contains(&1), "no <unk> in {ids:?}");
    let recipe = smoke_recipe(&out);
    for file in ["train.json", "test.json", "captions.json"] {
        let ds = Dataset::load(
            &out,
            file,
            &out,
            &tok,
            &recipe.model.vision,
            recipe.model.llm.max_positions,
            true,
        )
        .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(!ds.is_empty());
    }
    let captions: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("captions.json")).unwrap()).unwrap();
    let said: Vec<(&str, &str)> = captions
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["image"].as_str().unwrap(),
                c["conversations"][1]["value"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        said,
        vec![
            ("images/train/0.png", "a blue rectangle ."),
            ("images/train/1.png", "a red shape ."),
        ]
    );

    // a question whose image is missing is an error naming the record
    std::fs::remove_file(src.join("test/images/7.png")).unwrap();
    let e = convert(&src, &dir.join("out2"), Subset::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("questions.json") && e.contains("7.png"), "{e}");
}
