//! TensorBoard scalars: every run also writes its losses (each term apart), learning rate,
//! gradient norm, tokens/s, MFU and evaluation accuracy as a TensorBoard event file in its run
//! folder, so `tensorboard --logdir runs/` shows every run side by side.
//!
//! The format is small and stable, so it is written here rather than through a crate (the
//! TensorBoard crates on the registry are unmaintained and pull in a protobuf toolchain): a
//! file of records, each `length (u64 LE), masked CRC-32C of the length, an `Event` protocol
//! buffer, masked CRC-32C of it`; the first event names the file version, each later one holds
//! a `Summary` of `(tag, simple_value)` pairs at a step. A resumed run starts a new file, as
//! TensorBoard's own writers do; TensorBoard reads every file of a folder as one run.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::events::Event;
use crate::{Error, Result};

/// The file-name prefix TensorBoard looks for.
pub const FILE_PREFIX: &str = "events.out.tfevents.";

/// An open event file.
pub struct TensorBoard {
    path: PathBuf,
    file: std::fs::File,
    /// The last step written: an evaluation is placed there, at the end of training.
    step: i64,
}

impl TensorBoard {
    /// Starts a new event file in `dir`, named as TensorBoard's writers name theirs.
    pub fn create(dir: &Path) -> Result<Self> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let path = dir.join(format!(
            "{FILE_PREFIX}{}.condenser.{}.{}",
            now.as_secs(),
            std::process::id(),
            now.subsec_nanos()
        ));
        let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut tb = TensorBoard {
            path,
            file,
            step: 0,
        };
        tb.write(&version_event(now.as_secs_f64()))?;
        Ok(tb)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the scalars of `event`, if it has any.
    pub fn on_event(&mut self, event: &Event) -> Result<()> {
        let (step, values) = scalars(event);
        if values.is_empty() {
            return Ok(());
        }
        let step = step.unwrap_or(self.step);
        self.step = step;
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        self.write(&scalar_event(wall, step, &values))
    }

    fn write(&mut self, event: &[u8]) -> Result<()> {
        self.file
            .write_all(&record(event))
            .map_err(|e| Error::io(&self.path, e))
    }
}

/// The scalars an event carries, with their step when it has one: a step's loss
/// (`loss/total`, `loss/<term>`) and `train/` figures; an evaluation's accuracy
/// (`eval/<split>_accuracy`, in percent), which the writer places at the last step.
pub fn scalars(event: &Event) -> (Option<i64>, Vec<(String, f32)>) {
    match event {
        Event::Step {
            global_step,
            loss,
            terms,
            lr,
            grad_norm,
            tokens_per_s,
            mfu,
            ..
        } => {
            let mut v = vec![("loss/total".to_string(), *loss)];
            v.extend(terms.iter().map(|(k, x)| (format!("loss/{k}"), *x)));
            v.push(("train/lr".into(), *lr as f32));
            v.push(("train/grad_norm".into(), *grad_norm));
            v.push(("train/tokens_per_s".into(), *tokens_per_s as f32));
            if let Some(m) = mfu {
                v.push(("train/mfu".into(), *m as f32));
            }
            (Some(*global_step as i64), v)
        }
        Event::Eval {
            split, accuracy, ..
        } => (
            None,
            vec![(format!("eval/{split}_accuracy"), (100.0 * accuracy) as f32)],
        ),
        _ => (None, Vec::new()),
    }
}

/// The first event of a file: `Event { wall_time, file_version: "brain.Event:2" }`.
fn version_event(wall_time: f64) -> Vec<u8> {
    let mut e = Vec::new();
    field_f64(&mut e, 1, wall_time);
    field_bytes(&mut e, 3, b"brain.Event:2");
    e
}

/// `Event { wall_time, step, summary: Summary { value: [Value { tag, simple_value }] } }`.
fn scalar_event(wall_time: f64, step: i64, values: &[(String, f32)]) -> Vec<u8> {
    let mut summary = Vec::new();
    for (tag, x) in values {
        let mut value = Vec::new();
        field_bytes(&mut value, 1, tag.as_bytes());
        key(&mut value, 2, 5);
        value.extend(x.to_le_bytes());
        field_bytes(&mut summary, 1, &value);
    }
    let mut e = Vec::new();
    field_f64(&mut e, 1, wall_time);
    key(&mut e, 2, 0);
    varint(&mut e, step as u64);
    field_bytes(&mut e, 5, &summary);
    e
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A protocol-buffer field key: field number and wire type (0 varint, 1 64-bit, 2 length-
/// delimited, 5 32-bit).
fn key(out: &mut Vec<u8>, field: u32, wire: u32) {
    varint(out, u64::from(field << 3 | wire));
}

fn field_f64(out: &mut Vec<u8>, field: u32, v: f64) {
    key(out, field, 1);
    out.extend(v.to_le_bytes());
}

fn field_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    key(out, field, 2);
    varint(out, bytes.len() as u64);
    out.extend(bytes);
}

/// One TFRecord: length, its masked CRC, the data, its masked CRC.
fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend(len);
    out.extend(masked_crc(&len).to_le_bytes());
    out.extend(data);
    out.extend(masked_crc(data).to_le_bytes());
    out
}

/// TFRecord's CRC mask: rotated and offset, so a CRC of data holding CRCs stays strong.
fn masked_crc(data: &[u8]) -> u32 {
    let c = crc32c(data);
    (c.rotate_right(15)).wrapping_add(0xa282_ead8)
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bitwise over a 256-entry table.
fn crc32c(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0x82f6_3b78 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    let mut c = !0u32;
    for &b in data {
        c = table[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // the check value of CRC-32C (RFC 3720's iSCSI CRC) over the ASCII digits 1 to 9
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn step_events_become_loss_and_train_scalars() {
        let e = Event::Step {
            stage: 0,
            name: "dft".into(),
            step: 3,
            steps: 10,
            global_step: 13,
            loss: 2.5,
            terms: [("vis".to_string(), 0.5f32), ("res".to_string(), 2.0)]
                .into_iter()
                .collect(),
            lr: 1e-3,
            grad_norm: 1.0,
            tokens_per_s: 100.0,
            elapsed_s: 1.0,
            tokens: 10,
            step_s: 0.1,
            mfu: None,
            routing: Vec::new(),
        };
        let (step, v) = scalars(&e);
        assert_eq!(step, Some(13));
        let tags: Vec<&str> = v.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            tags,
            [
                "loss/total",
                "loss/res",
                "loss/vis",
                "train/lr",
                "train/grad_norm",
                "train/tokens_per_s"
            ]
        );
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The bytes TensorBoard's own Python writer produces for the same events (its protocol
    /// buffers and `RecordWriter`, tensorboard 2.21, written once and pasted here).
    #[test]
    fn records_are_byte_identical_to_tensorboards_writer() {
        let values = [
            ("loss/total".to_string(), 2.5f32),
            ("train/lr".to_string(), 0.001),
        ];
        assert_eq!(
            hex(&record(&scalar_event(1.5, 13, &values))),
            "31000000000000009d8383e909000000000000f83f100d2a240a110a0a6c6f73732f746f74616c1500\
             0020400a0f0a08747261696e2f6c72156f12833aa86a8994"
        );
        assert_eq!(
            hex(&record(&version_event(1.5))),
            "1800000000000000a37f4b2209000000000000f83f1a0d627261696e2e4576656e743a322a28646c"
        );
    }
}
