//! A run's output on disk until the sidecar acknowledges it. The job's pipes are drained into
//! the spool always, connected or not, so a full pipe never blocks the job and a reconnect
//! loses nothing. Records (`stream`, length, bytes) are appended to segment files; segments
//! the sidecar has acknowledged are deleted. Above the cap, whole unsent segments are dropped
//! from the middle, keeping the oldest pending half and the newest output, and the reader
//! sees a [`Piece::Gap`] where they were.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, FileExt as _};
use std::path::PathBuf;

use saltpeter_protocol::Stream;

/// Bytes of record header: stream tag and little-endian u32 length.
const HEADER: u64 = 5;

/// A place in the spool. At a segment's start, `past_gap` tells apart "before the marker of
/// the bytes dropped here" and "after it".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    segment: u64,
    offset: u64,
    past_gap: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    Data {
        stream: Stream,
        bytes: Vec<u8>,
    },
    /// This many bytes of output were dropped here because the spool was full.
    Gap {
        dropped: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub piece: Piece,
    pub start: Pos,
    pub end: Pos,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    file: File,
    len: u64,
    /// Output dropped just before this segment, shown to the reader as a gap.
    dropped_before: u64,
}

#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    cap: u64,
    segment_size: u64,
    segments: VecDeque<Segment>,
    next_id: u64,
    /// The newest segment the reader has entered; it and older ones are never dropped.
    read_segment: u64,
    pub appended: u64,
    pub dropped: u64,
}

impl Spool {
    /// A fresh spool in `dir` (created 0700), holding at most about `cap` bytes.
    pub fn create(dir: PathBuf, cap: u64) -> io::Result<Spool> {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        let mut spool = Spool {
            dir,
            cap,
            segment_size: (cap / 16).clamp(64 * 1024, 4 << 20),
            segments: VecDeque::new(),
            next_id: 0,
            read_segment: 0,
            appended: 0,
            dropped: 0,
        };
        spool.open_segment()?;
        Ok(spool)
    }

    fn open_segment(&mut self) -> io::Result<()> {
        let id = self.next_id;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.dir.join(format!("{id:08}.seg")))?;
        self.segments.push_back(Segment { id, file, len: 0, dropped_before: 0 });
        self.next_id += 1;
        Ok(())
    }

    /// Appends one read from a pipe (at most 4 GiB; the agent reads 64 KiB at a time).
    pub fn append(&mut self, stream: Stream, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let len = u32::try_from(bytes.len()).map_err(io::Error::other)?;
        let need = HEADER + u64::from(len);
        if self.last().len > 0 && self.last().len + need > self.segment_size {
            self.open_segment()?;
        }
        let mut record = Vec::with_capacity(bytes.len() + 5);
        record.push(match stream {
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        });
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(bytes);
        let seg = self.last_mut();
        seg.file.write_all_at(&record, seg.len)?;
        seg.len += need;
        self.appended += u64::from(len);
        self.enforce_cap()
    }

    fn last(&self) -> &Segment {
        self.segments.back().expect("a spool always has a segment to write to")
    }

    fn last_mut(&mut self) -> &mut Segment {
        self.segments.back_mut().expect("a spool always has a segment to write to")
    }

    fn on_disk(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Drops the oldest unsent segment past the first half of the cap, until under the cap.
    fn enforce_cap(&mut self) -> io::Result<()> {
        while self.on_disk() > self.cap {
            let mut head = 0;
            let victim = self.segments.iter().position(|s| {
                let past_head = head >= self.cap / 2;
                head += s.len;
                past_head && s.id > self.read_segment
            });
            // Never the segment being written (the last one).
            let Some(i) = victim.filter(|i| i + 1 < self.segments.len()) else { break };
            let seg = self.segments.remove(i).expect("index from position");
            let lost = seg.dropped_before + data_bytes(&seg)?;
            self.dropped += data_bytes(&seg)?;
            std::fs::remove_file(self.dir.join(format!("{:08}.seg", seg.id)))?;
            self.segments[i].dropped_before += lost;
        }
        Ok(())
    }

    /// The spool's start: where a reader begins.
    pub fn start(&self) -> Pos {
        Pos { segment: self.segments.front().map_or(0, |s| s.id), offset: 0, past_gap: false }
    }

    /// Reads from `from` the next gap, or records of one stream up to `max` bytes (at least
    /// one record); `None` at the end of what was written.
    pub fn read(&mut self, from: Pos, max: usize) -> io::Result<Option<Chunk>> {
        self.read_until(from, max, None)
    }

    /// [`Spool::read`], stopping at `until` too: re-reads a chunk exactly as first read.
    pub fn read_until(
        &mut self,
        from: Pos,
        max: usize,
        until: Option<Pos>,
    ) -> io::Result<Option<Chunk>> {
        let Some(mut i) = self.segments.iter().position(|s| s.id >= from.segment) else {
            return Ok(None);
        };
        let mut pos = if self.segments[i].id == from.segment {
            from
        } else {
            Pos { segment: self.segments[i].id, offset: 0, past_gap: false }
        };
        // Step over the ends of sealed segments.
        while pos.offset >= self.segments[i].len && i + 1 < self.segments.len() {
            i += 1;
            pos = Pos { segment: self.segments[i].id, offset: 0, past_gap: false };
        }
        self.read_segment = self.read_segment.max(pos.segment);
        let seg = &self.segments[i];
        if pos.offset == 0 && !pos.past_gap && seg.dropped_before > 0 {
            let end = Pos { past_gap: true, ..pos };
            return Ok(Some(Chunk {
                piece: Piece::Gap { dropped: seg.dropped_before },
                start: pos,
                end,
            }));
        }
        let mut stream = None;
        let mut bytes = Vec::new();
        let mut offset = pos.offset;
        while offset < seg.len {
            if until.is_some_and(|u| u.segment == pos.segment && offset >= u.offset) {
                break;
            }
            let mut header = [0u8; 5];
            seg.file.read_exact_at(&mut header, offset)?;
            let this = if header[0] == 2 { Stream::Stderr } else { Stream::Stdout };
            let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
            if stream.is_some_and(|s| s != this) || (!bytes.is_empty() && bytes.len() + len > max) {
                break;
            }
            stream = Some(this);
            let at = bytes.len();
            bytes.resize(at + len, 0);
            seg.file.read_exact_at(&mut bytes[at..], offset + HEADER)?;
            offset += HEADER + len as u64;
        }
        let Some(stream) = stream else { return Ok(None) };
        let end = Pos { segment: pos.segment, offset, past_gap: false };
        Ok(Some(Chunk { piece: Piece::Data { stream, bytes }, start: pos, end }))
    }

    /// Forgets everything before `upto` (acknowledged by the sidecar).
    pub fn release(&mut self, upto: Pos) -> io::Result<()> {
        while self.segments.len() > 1 {
            let front = &self.segments[0];
            let done =
                front.id < upto.segment || (front.id == upto.segment && upto.offset >= front.len);
            if !done {
                break;
            }
            let id = front.id;
            self.segments.pop_front();
            std::fs::remove_file(self.dir.join(format!("{id:08}.seg")))?;
        }
        Ok(())
    }

    /// Removes the spool's files (after the run is delivered).
    pub fn remove(self) -> io::Result<()> {
        std::fs::remove_dir_all(&self.dir)
    }
}

/// Output bytes in a segment (without record headers).
fn data_bytes(seg: &Segment) -> io::Result<u64> {
    let (mut offset, mut total) = (0, 0);
    while offset < seg.len {
        let mut header = [0u8; 5];
        seg.file.read_exact_at(&mut header, offset)?;
        let len = u64::from(u32::from_le_bytes([header[1], header[2], header[3], header[4]]));
        total += len;
        offset += HEADER + len;
    }
    Ok(total)
}

#[cfg(test)]
mod tests;
