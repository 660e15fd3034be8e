//! Decoding a stage's images ahead of the step that needs them. The batches a stage will visit
//! are known when it starts (the order is a pure function of seed and stage), so one thread
//! decodes them in order into a bounded queue while the training thread computes: the step
//! never waits on image files unless decoding is slower than training, and at most `DEPTH`
//! decoded batches are held at once, whatever the size of the split.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::visual::PixelBatch;
use crate::data::ImageTable;
use crate::{Error, Result};

/// Decoded batches queued ahead of the step.
const DEPTH: usize = 2;

/// The decoding thread and the queue it fills.
pub struct Prefetch {
    rx: Option<Receiver<Result<PixelBatch>>>,
    worker: Option<JoinHandle<()>>,
}

impl Prefetch {
    /// Starts decoding `batches` (each the image index of every record of one step, in step
    /// order) from `images`.
    pub fn start(images: Arc<ImageTable>, batches: Vec<Vec<Option<usize>>>) -> Self {
        let (tx, rx) = sync_channel(DEPTH);
        let worker = std::thread::Builder::new()
            .name("condenser-prefetch".into())
            .spawn(move || decode_all(&images, batches, tx))
            .expect("spawning the prefetch thread");
        Prefetch {
            rx: Some(rx),
            worker: Some(worker),
        }
    }

    /// The next batch's pixels, waiting for the decoder if it is behind.
    pub fn next(&mut self) -> Result<PixelBatch> {
        let rx = self
            .rx
            .as_ref()
            .expect("the queue lives as long as the prefetch");
        rx.recv().unwrap_or_else(|_| {
            Err(Error::Invalid(
                "the image decoding thread stopped before the stage's last step".into(),
            ))
        })
    }
}

impl Drop for Prefetch {
    /// Closing the queue makes the decoder's next send fail, so it stops; then it is joined.
    fn drop(&mut self) {
        self.rx.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// The thread's work: decode each batch in order (on this thread: the rayon pool belongs to the
/// step's matmuls) and queue it; stop at the first error, after queueing it, or when the
/// queue is closed.
fn decode_all(
    images: &ImageTable,
    batches: Vec<Vec<Option<usize>>>,
    tx: SyncSender<Result<PixelBatch>>,
) {
    for ks in batches {
        let decoded = images.decode_batch_serial(&ks).map(|pixels| PixelBatch {
            images: ks,
            pixels,
            size: images.image_size(),
        });
        let failed = decoded.is_err();
        if tx.send(decoded).is_err() || failed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VisionConfig;

    /// A table of `n` small PNG files in a fresh folder.
    fn table(n: usize, dir: &std::path::Path) -> ImageTable {
        std::fs::create_dir_all(dir).unwrap();
        let cfg: VisionConfig = toml::from_str(
            "image_size = 8\npatch_size = 4\nhidden = 8\nlayers = 1\nheads = 1\nmlp_hidden = 8",
        )
        .unwrap();
        let mut t = ImageTable::new(&cfg);
        for i in 0..n {
            let p = dir.join(format!("{i}.png"));
            image::RgbImage::from_pixel(8, 8, image::Rgb([i as u8 * 40, 0, 0]))
                .save(&p)
                .unwrap();
            t.push(p).unwrap();
        }
        t
    }

    /// Batches arrive in order with their own pixels, zeros for text-only records.
    #[test]
    fn batches_arrive_in_order() {
        let dir = std::env::temp_dir().join(format!("condenser-prefetch-{}", std::process::id()));
        let t = Arc::new(table(3, &dir));
        let batches = vec![vec![Some(2), None], vec![Some(0)], vec![Some(1), Some(2)]];
        let mut p = Prefetch::start(t.clone(), batches.clone());
        for ks in &batches {
            let b = p.next().unwrap();
            assert_eq!(&b.images, ks);
            let want: Vec<f32> = ks
                .iter()
                .flat_map(|k| match k {
                    Some(k) => t.decode(*k).unwrap(),
                    None => vec![0.0; t.image_len()],
                })
                .collect();
            assert_eq!(b.pixels, want);
        }
        assert!(p.next().is_err(), "past the last batch is an error");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A file that breaks after the table was checked is an error naming it, not a hang.
    #[test]
    fn a_file_that_breaks_later_is_an_error_naming_it() {
        let dir =
            std::env::temp_dir().join(format!("condenser-prefetch-bad-{}", std::process::id()));
        let t = Arc::new(table(2, &dir));
        std::fs::write(dir.join("1.png"), b"not a png").unwrap();
        let mut p = Prefetch::start(t, vec![vec![Some(0)], vec![Some(1)], vec![Some(0)]]);
        assert!(p.next().is_ok());
        let err = p.next().err().expect("the broken file").to_string();
        assert!(err.contains("1.png"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Dropping the prefetch mid-stage stops and joins the thread.
    #[test]
    fn dropping_stops_the_thread() {
        let dir =
            std::env::temp_dir().join(format!("condenser-prefetch-drop-{}", std::process::id()));
        let t = Arc::new(table(1, &dir));
        let p = Prefetch::start(t, vec![vec![Some(0)]; 100]);
        drop(p);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
