//! Reading a run's `events.jsonl`, also while another process is still appending to it (the
//! desktop app follows CLI runs this way). Complete lines are parsed as they arrive; an
//! unfinished last line waits for its newline; a line that is not a valid event is reported
//! with its line number and skipped, never fatal: a run folder copied while it was written, or
//! a disk that filled up, must still open.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::Event;
use crate::{Error, Result};

/// A line of `events.jsonl` that is not a valid event.
#[derive(Debug, Clone, PartialEq)]
pub struct BadLine {
    /// 1-based line number in the file.
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// What one [`EventTail::poll`] found.
#[derive(Debug, Default)]
pub struct Polled {
    /// The file was replaced or truncated since the last poll (e.g. the run was restarted with
    /// `--fresh`): everything read before is void and `events` starts from its first line.
    pub reset: bool,
    pub events: Vec<Event>,
    pub bad: Vec<BadLine>,
}

/// Follows one `events.jsonl` from where the last poll stopped.
#[derive(Debug)]
pub struct EventTail {
    path: PathBuf,
    offset: u64,
    pending: Vec<u8>,
    /// Lines consumed so far (complete lines only).
    lines: usize,
}

impl EventTail {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        EventTail {
            path: path.into(),
            offset: 0,
            pending: Vec::new(),
            lines: 0,
        }
    }

    /// An unfinished line is waiting for its newline.
    pub fn has_pending(&self) -> bool {
        !self.pending.iter().all(u8::is_ascii_whitespace)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads what was appended since the last call. A missing file is not an error (the run
    /// has not written its first event yet).
    pub fn poll(&mut self) -> Result<Polled> {
        let mut out = Polled::default();
        let mut file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io(&self.path, e)),
        };
        let len = file.metadata().map_err(|e| Error::io(&self.path, e))?.len();
        if len < self.offset {
            *self = EventTail::new(self.path.clone());
            out.reset = true;
        }
        file.seek(SeekFrom::Start(self.offset))
            .map_err(|e| Error::io(&self.path, e))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)
            .map_err(|e| Error::io(&self.path, e))?;
        self.offset += buf.len() as u64;
        self.pending.extend_from_slice(&buf);
        let Some(last_newline) = self.pending.iter().rposition(|&b| b == b'\n') else {
            return Ok(out);
        };
        let rest = self.pending.split_off(last_newline + 1);
        let complete = std::mem::replace(&mut self.pending, rest);
        // `complete` ends with its newline: the slice before it splits into exactly its lines
        for raw in complete[..complete.len() - 1].split(|&b| b == b'\n') {
            self.lines += 1;
            match parse_line(raw, self.lines) {
                Ok(Some(e)) => out.events.push(e),
                Ok(None) => {}
                Err(bad) => out.bad.push(bad),
            }
        }
        Ok(out)
    }

    /// Call when the writer is known to be gone (the run ended or the file is read once): an
    /// unfinished last line is then a truncated event, reported as bad, or a complete one
    /// that only missed its newline, returned.
    pub fn finish(&mut self) -> std::result::Result<Option<Event>, BadLine> {
        if self.pending.iter().all(u8::is_ascii_whitespace) {
            self.pending.clear();
            return Ok(None);
        }
        let raw = std::mem::take(&mut self.pending);
        self.lines += 1;
        parse_line(&raw, self.lines)
    }
}

/// Parses one line; blank lines are skipped.
fn parse_line(raw: &[u8], line: usize) -> std::result::Result<Option<Event>, BadLine> {
    let text = std::str::from_utf8(raw).map_err(|e| BadLine {
        line,
        message: format!("not UTF-8 ({e})"),
    })?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(text).map(Some).map_err(|e| BadLine {
        line,
        message: format!("not a valid event: {e}"),
    })
}

/// Reads a whole `events.jsonl` once (a finished or stopped run).
pub fn read_events(path: &Path) -> Result<(Vec<Event>, Vec<BadLine>)> {
    if !path.exists() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such events file"),
        ));
    }
    let mut tail = EventTail::new(path);
    let Polled {
        mut events,
        mut bad,
        ..
    } = tail.poll()?;
    match tail.finish() {
        Ok(Some(e)) => events.push(e),
        Ok(None) => {}
        Err(b) => bad.push(b),
    }
    Ok((events, bad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn step(global: usize) -> String {
        let e = Event::Checkpoint {
            path: format!("ck-{global}"),
            global_step: global,
        };
        serde_json::to_string(&e).unwrap()
    }

    #[test]
    fn follows_appends_skips_bad_lines_and_waits_for_unfinished_ones() {
        let dir = std::env::temp_dir().join(format!("condenser-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        let _ = std::fs::remove_file(&path);
        let mut tail = EventTail::new(&path);
        assert!(
            tail.poll().unwrap().events.is_empty(),
            "missing file is empty"
        );

        let mut f = std::fs::File::create(&path).unwrap();
        let half = step(2);
        write!(
            f,
            "{}\n{{\"type\": \"nonsense\"}}\n\n{}",
            step(1),
            &half[..10]
        )
        .unwrap();
        f.flush().unwrap();
        let p = tail.poll().unwrap();
        assert_eq!(p.events.len(), 1);
        assert_eq!(p.bad.len(), 1);
        assert_eq!(p.bad[0].line, 2, "{:?}", p.bad);
        assert!(!p.reset);

        writeln!(f, "{}", &half[10..]).unwrap();
        f.flush().unwrap();
        let p = tail.poll().unwrap();
        assert_eq!(
            p.events,
            vec![Event::Checkpoint {
                path: "ck-2".into(),
                global_step: 2
            }]
        );
        assert!(p.bad.is_empty());

        // truncated for good: the final fragment is a bad line when the file is read once
        write!(f, "{}", &step(3)[..7]).unwrap();
        f.flush().unwrap();
        let (events, bad) = read_events(&path).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(bad.iter().map(|b| b.line).collect::<Vec<_>>(), vec![2, 5]);

        // replaced by a shorter file: the tail starts over
        std::fs::write(&path, format!("{}\n", step(9))).unwrap();
        let p = tail.poll().unwrap();
        assert!(p.reset);
        assert_eq!(p.events.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
