use super::*;

fn drain(spool: &mut Spool, mut pos: Pos) -> Vec<Piece> {
    let mut out = Vec::new();
    while let Some(chunk) = spool.read(pos, 1 << 20).unwrap() {
        pos = chunk.end;
        out.push(chunk.piece);
    }
    out
}

#[test]
fn reads_back_records_merged_per_stream_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::create(dir.path().join("s"), 64 << 20).unwrap();
    spool.append(Stream::Stdout, b"a").unwrap();
    spool.append(Stream::Stdout, b"b\r").unwrap();
    spool.append(Stream::Stderr, b"E").unwrap();
    spool.append(Stream::Stdout, b"\xff").unwrap();
    let start = spool.start();
    assert_eq!(
        drain(&mut spool, start),
        [
            Piece::Data { stream: Stream::Stdout, bytes: b"ab\r".to_vec() },
            Piece::Data { stream: Stream::Stderr, bytes: b"E".to_vec() },
            Piece::Data { stream: Stream::Stdout, bytes: b"\xff".to_vec() },
        ]
    );
}

#[test]
fn over_the_cap_the_middle_is_dropped_and_marked() {
    let dir = tempfile::tempdir().unwrap();
    let cap = 1 << 20; // segments of 64 KiB
    let mut spool = Spool::create(dir.path().join("s"), cap).unwrap();
    let block = vec![b'x'; 16 * 1024];
    for i in 0..200u32 {
        let mut b = block.clone();
        b[..4].copy_from_slice(&i.to_be_bytes());
        spool.append(Stream::Stdout, &b).unwrap();
    }
    assert!(spool.on_disk() <= cap + 64 * 1024, "{}", spool.on_disk());
    let start = spool.start();
    let pieces = drain(&mut spool, start);
    let gaps: Vec<u64> = pieces
        .iter()
        .filter_map(|p| if let Piece::Gap { dropped } = p { Some(*dropped) } else { None })
        .collect();
    assert_eq!(gaps.len(), 1, "one marker where the middle was");
    let data: Vec<u8> = pieces
        .iter()
        .flat_map(|p| if let Piece::Data { bytes, .. } = p { bytes.clone() } else { Vec::new() })
        .collect();
    assert_eq!(data.len() as u64 + gaps[0], 200 * 16 * 1024);
    assert_eq!(spool.dropped, gaps[0]);
    // The head (block 0) and the tail (block 199) survive.
    assert_eq!(&data[..4], &0u32.to_be_bytes());
    assert_eq!(&data[data.len() - 16 * 1024..][..4], &199u32.to_be_bytes());
}

#[test]
fn released_segments_are_deleted_and_reading_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::create(dir.path().join("s"), 1 << 20).unwrap();
    for _ in 0..10 {
        spool.append(Stream::Stdout, &[b'y'; 40 * 1024]).unwrap();
    }
    let files = || std::fs::read_dir(dir.path().join("s")).unwrap().count();
    let before = files();
    let mut pos = spool.start();
    for _ in 0..6 {
        pos = spool.read(pos, 40 * 1024).unwrap().unwrap().end;
    }
    spool.release(pos).unwrap();
    assert!(files() < before);
    let rest: usize = drain(&mut spool, pos)
        .iter()
        .map(|p| if let Piece::Data { bytes, .. } = p { bytes.len() } else { 0 })
        .sum();
    assert_eq!(rest, 4 * 40 * 1024);
}
