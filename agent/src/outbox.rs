//! One run's side of the protocol, without I/O on the socket: what to send next, what is in
//! flight, what an ack or nack means. A sliding window (not the original's stop-and-wait) of
//! sequenced messages per run; on a new connection everything unacknowledged is sent again with
//! the same numbers and the same contents, so the sidecar can drop duplicates by `seq`.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use saltpeter_protocol::{
    AgentMessage, Armed, Complete, DispatchId, EndReason, MAX_OUTPUT_CHUNK, OutputHeader, RunKey,
    Seq, Start, Stream, Timestamp,
};

use tokio::sync::Notify;

use crate::rundir::{RunDir, RunResult};
use crate::spool::{Piece, Pos, Spool};

/// At most this many sequenced messages unacknowledged per run...
pub const WINDOW_MESSAGES: usize = 64;
/// ...and at most this many output bytes.
pub const WINDOW_BYTES: usize = 4 << 20;
/// While connected, the job's pipes are not read when this much output waits to be sent: the
/// job writes at the pace the sidecar takes, instead of outrunning it into the spool's cap.
/// While disconnected the pipes are always drained (a job must never block on a lost sidecar).
pub const HIGH_WATER: u64 = 8 << 20;

/// What to send next: a message, or a chunk of output whose encoding (a binary frame, or a
/// JSON text `output` for peers older than version 2) the connection chooses.
#[derive(Debug)]
pub enum Outgoing {
    Message(AgentMessage),
    Output { header: OutputHeader, bytes: Vec<u8> },
}

#[derive(Debug)]
enum Sent {
    Chunk { seq: Seq, start: Pos, end: Pos, bytes: usize },
    Complete { seq: Seq },
}

impl Sent {
    fn seq(&self) -> Seq {
        match self {
            Sent::Chunk { seq, .. } | Sent::Complete { seq } => *seq,
        }
    }
}

/// How the run ended, once it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ending {
    pub retcode: i32,
    pub reason: EndReason,
    pub finished: Timestamp,
}

#[derive(Debug)]
pub struct Outbox {
    pub run: RunKey,
    version: String,
    dir: RunDir,
    spool: Option<Spool>,
    interval: Duration,
    pid: Option<u32>,
    /// A manifest entry waiting for its instant: announced by `armed` until acknowledged.
    armed: Option<(DispatchId, Timestamp)>,
    armed_sent: bool,
    armed_acked: bool,
    start_sent: bool,
    start_acked: bool,
    in_flight: VecDeque<Sent>,
    /// How many of `in_flight` went out on the current connection; the rest go again.
    resent: usize,
    cursor: Pos,
    next_seq: Seq,
    consumed: u64,
    unsent_since: Option<Instant>,
    pub ending: Option<Ending>,
    complete_queued: bool,
    pub delivered: bool,
    /// The sidecar said it does not know the run: stop sending it; the result stays local.
    pub abandoned: bool,
    connected: bool,
    /// Signalled when output leaves (acked) or the connection drops: a paused reader resumes.
    pub drained: Arc<Notify>,
}

impl Outbox {
    pub fn new(run: RunKey, dir: RunDir, spool: Spool, interval: Duration) -> Outbox {
        let cursor = spool.start();
        Outbox {
            run,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            dir,
            spool: Some(spool),
            interval,
            pid: None,
            armed: None,
            armed_sent: false,
            armed_acked: false,
            start_sent: false,
            start_acked: false,
            in_flight: VecDeque::new(),
            resent: 0,
            cursor,
            next_seq: Seq::ZERO,
            consumed: 0,
            unsent_since: None,
            ending: None,
            complete_queued: false,
            delivered: false,
            abandoned: false,
            connected: false,
            drained: Arc::new(Notify::new()),
        }
    }

    pub fn append(&mut self, stream: Stream, bytes: &[u8]) -> io::Result<()> {
        let Some(spool) = self.spool.as_mut() else { return Ok(()) };
        spool.append(stream, bytes)?;
        self.unsent_since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// The run will start at `scheduled` (coalesced dispatch with a lead time).
    pub fn arm(&mut self, dispatch: DispatchId, scheduled: Timestamp) {
        self.armed = Some((dispatch, scheduled));
    }

    pub fn ack_armed(&mut self) {
        self.armed_acked = true;
    }

    pub fn started(&mut self, pid: u32) {
        self.pid = Some(pid);
    }

    /// Records the end; `complete` follows the last output. Writes `result.json`.
    pub fn finish(&mut self, retcode: i32, reason: EndReason) -> io::Result<()> {
        let ending = Ending { retcode, reason, finished: Timestamp::now() };
        self.ending = Some(ending);
        self.dir.write_result(&RunResult { retcode, finished: ending.finished, delivered: false })
    }

    fn unsent_bytes(&self) -> u64 {
        self.spool.as_ref().map_or(0, |s| s.appended - s.dropped).saturating_sub(self.consumed)
    }

    fn in_flight_bytes(&self) -> usize {
        self.in_flight
            .iter()
            .map(|s| if let Sent::Chunk { bytes, .. } = s { *bytes } else { 0 })
            .sum()
    }

    /// When buffered output becomes due even though no chunk is full.
    pub fn deadline(&self) -> Option<Instant> {
        self.unsent_since.map(|t| t + self.interval)
    }

    /// Whether the reader should leave the pipes alone for now (see [`HIGH_WATER`]).
    pub fn congested(&self) -> bool {
        self.connected && !self.is_settled() && self.unsent_bytes() >= HIGH_WATER
    }

    pub fn set_connected(&mut self, connected: bool) {
        if self.connected && !connected {
            self.drained.notify_one();
        }
        self.connected = connected;
    }

    /// A new connection: everything unacknowledged goes again.
    pub fn rewind(&mut self) {
        self.resent = 0;
        self.start_sent = self.start_acked;
        self.armed_sent = self.armed_acked;
    }

    /// The next message to send now, if any and if the window allows.
    pub fn next_message(&mut self, now: Instant) -> io::Result<Option<Outgoing>> {
        if self.is_settled() {
            return Ok(None);
        }
        if let (Some((dispatch, scheduled)), false) = (&self.armed, self.armed_sent) {
            self.armed_sent = true;
            let armed = Armed {
                run: self.run.clone(),
                timestamp: Timestamp::now(),
                dispatch: dispatch.clone(),
                scheduled: *scheduled,
            };
            return Ok(Some(Outgoing::Message(AgentMessage::Armed(armed))));
        }
        if let (Some(pid), false) = (self.pid, self.start_sent) {
            self.start_sent = true;
            let start = Start {
                run: self.run.clone(),
                timestamp: Timestamp::now(),
                pid,
                version: self.version.clone(),
            };
            return Ok(Some(Outgoing::Message(AgentMessage::Start(start))));
        }
        if self.resent < self.in_flight.len() {
            self.resent += 1;
            return self.message_for(self.resent - 1).map(Some);
        }
        if self.in_flight.len() >= WINDOW_MESSAGES || self.in_flight_bytes() >= WINDOW_BYTES {
            return Ok(None);
        }
        let unsent = self.unsent_bytes();
        let due = self.ending.is_some()
            || unsent >= MAX_OUTPUT_CHUNK as u64
            || self.deadline().is_some_and(|d| d <= now);
        if due && let Some(message) = self.next_chunk()? {
            return Ok(Some(message));
        }
        if self.ending.is_some() && !self.complete_queued && self.unsent_bytes() == 0 {
            self.complete_queued = true;
            let seq = self.take_seq();
            self.in_flight.push_back(Sent::Complete { seq });
            self.resent += 1;
            return self.message_for(self.in_flight.len() - 1).map(Some);
        }
        Ok(None)
    }

    fn take_seq(&mut self) -> Seq {
        let seq = self.next_seq;
        self.next_seq = seq.next();
        seq
    }

    fn next_chunk(&mut self) -> io::Result<Option<Outgoing>> {
        let Some(spool) = self.spool.as_mut() else { return Ok(None) };
        let Some(chunk) = spool.read(self.cursor, MAX_OUTPUT_CHUNK)? else {
            self.unsent_since = None;
            return Ok(None);
        };
        let (stream, bytes) = piece_bytes(chunk.piece);
        if stream.is_some() {
            self.consumed += bytes.len() as u64;
        }
        self.cursor = chunk.end;
        if self.unsent_bytes() == 0 {
            self.unsent_since = None;
        }
        let seq = self.take_seq();
        let len = bytes.len();
        self.in_flight.push_back(Sent::Chunk {
            seq,
            start: chunk.start,
            end: chunk.end,
            bytes: len,
        });
        self.resent += 1;
        Ok(Some(self.output(stream, seq, bytes)))
    }

    /// Rebuilds the message of `in_flight[i]` exactly as first sent.
    fn message_for(&mut self, i: usize) -> io::Result<Outgoing> {
        match self.in_flight[i] {
            Sent::Complete { seq } => {
                let ending = self.ending.expect("complete is queued only after the end");
                let dropped = self.spool.as_ref().map_or(0, |s| s.dropped);
                Ok(Outgoing::Message(AgentMessage::Complete(Complete {
                    run: self.run.clone(),
                    timestamp: ending.finished,
                    retcode: ending.retcode,
                    seq: Some(seq),
                    reason: Some(ending.reason),
                    dropped_bytes: (dropped > 0).then_some(dropped),
                })))
            }
            Sent::Chunk { seq, start, end, .. } => {
                let spool = self.spool.as_mut().ok_or_else(|| io::Error::other("spool removed"))?;
                let chunk =
                    spool.read_until(start, MAX_OUTPUT_CHUNK, Some(end))?.ok_or_else(|| {
                        io::Error::other("unacknowledged output missing from the spool")
                    })?;
                let (stream, bytes) = piece_bytes(chunk.piece);
                Ok(self.output(stream, seq, bytes))
            }
        }
    }

    /// A chunk of output (a gap marker goes on stderr).
    fn output(&self, stream: Option<Stream>, seq: Seq, bytes: Vec<u8>) -> Outgoing {
        let header = OutputHeader {
            run: self.run.clone(),
            timestamp: Timestamp::now(),
            stream: stream.unwrap_or(Stream::Stderr),
            seq,
        };
        Outgoing::Output { header, bytes }
    }

    pub fn ack_start(&mut self) {
        self.start_acked = true;
    }

    /// The sidecar holds every message up to `seq`. Returns true when this delivered the run.
    pub fn ack(&mut self, seq: Seq) -> io::Result<bool> {
        let mut released = None;
        while self.in_flight.front().is_some_and(|s| s.seq() <= seq) {
            match self.in_flight.pop_front() {
                Some(Sent::Chunk { end, .. }) => released = Some(end),
                Some(Sent::Complete { .. }) => self.delivered = true,
                None => {}
            }
            self.resent = self.resent.saturating_sub(1);
        }
        if let (Some(end), Some(spool)) = (released, self.spool.as_mut()) {
            spool.release(end)?;
            self.drained.notify_one();
        }
        if self.delivered {
            if let Some(spool) = self.spool.take() {
                spool.remove()?;
            }
            if let Some(e) = self.ending {
                self.dir.write_result(&RunResult {
                    retcode: e.retcode,
                    finished: e.finished,
                    delivered: true,
                })?;
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// The sidecar is missing `expected` onwards: it holds what came before; resend the rest.
    pub fn nack(&mut self, expected: Seq) -> io::Result<()> {
        self.drained.notify_one();
        if let Some(before) = expected.0.checked_sub(1) {
            self.ack(Seq(before))?;
        }
        self.resent = 0;
        Ok(())
    }

    /// Delivered, or given up on: nothing more to send.
    pub fn is_settled(&self) -> bool {
        self.delivered || self.abandoned
    }

    pub fn next_seq(&self) -> Seq {
        self.next_seq
    }
}

fn piece_bytes(piece: Piece) -> (Option<Stream>, Vec<u8>) {
    match piece {
        Piece::Data { stream, bytes } => (Some(stream), bytes),
        Piece::Gap { dropped } => (
            None,
            format!(
                "\n[saltpeter-agent: {dropped} bytes of output dropped here: the spool was full]\n"
            )
            .into_bytes(),
        ),
    }
}

#[cfg(test)]
mod tests;
