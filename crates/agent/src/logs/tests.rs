use super::*;

fn line(ts: i64, s: &str) -> LogLine {
    LogLine {
        timestamp_ns: ts,
        stream: LogStream::Stdout,
        data: s.as_bytes().to_vec(),
    }
}

#[test]
fn line_format_round_trips() {
    let raw = format_line(1_700_000_000_123_456_789, LogStream::Stderr, b"hello world");
    assert_eq!(raw, b"1700000000.123456789 e hello world\n");
    let parsed = parse_line(&raw[..raw.len() - 1]).unwrap();
    assert_eq!(parsed.timestamp_ns, 1_700_000_000_123_456_789);
    assert_eq!(parsed.stream, LogStream::Stderr);
    assert_eq!(parsed.data, b"hello world");
    let empty = format_line(5, LogStream::Stdout, b"");
    assert_eq!(parse_line(&empty[..empty.len() - 1]).unwrap().data, b"");
    assert!(parse_line(b"garbage").is_none());
    assert!(parse_line(b"12 x hi").is_none());
}

#[test]
fn partial_lines_wait() {
    let (lines, used) = parse_lines(b"1 o a\n2 e b\n3 o par");
    assert_eq!(
        lines[1].timestamp_ns, 2_000_000,
        "a bare integer is Unix ms"
    );
    assert_eq!(lines.len(), 2);
    assert_eq!(used, 12);
}

#[test]
fn tail_and_since() {
    let all: Vec<_> = (1..=10).map(|i| line(i * 100, &format!("l{i}"))).collect();
    let q = |tail, since_ns| LogQuery { tail, since_ns };
    assert_eq!(select(all.clone(), q(-1, 0)).len(), 10);
    assert_eq!(select(all.clone(), q(0, 0)).len(), 0);
    let last3 = select(all.clone(), q(3, 0));
    assert_eq!(last3[0].data, b"l8");
    let since = select(all.clone(), q(-1, 750));
    assert_eq!(since.len(), 3);
    assert_eq!(since[0].data, b"l8");
    let both = select(all, q(2, 350));
    assert_eq!(
        both.iter().map(|l| l.data.clone()).collect::<Vec<_>>(),
        [b"l9".to_vec(), b"l10".to_vec()]
    );
}

#[tokio::test]
async fn store_reads_tail_and_follows_growth() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::new(dir.path());
    assert!(!store.has_task("t1"));
    assert!(!store.has_task("../x"));
    std::fs::create_dir_all(store.task_dir("t1")).unwrap();
    assert!(store.has_task("t1"));
    let mut body = Vec::new();
    for i in 1..=5 {
        body.extend(format_line(
            i * 10,
            LogStream::Stdout,
            format!("l{i}").as_bytes(),
        ));
    }
    std::fs::write(store.log_path("t1"), &body).unwrap();
    let (lines, off) = store
        .read(
            "t1",
            LogQuery {
                tail: 2,
                since_ns: 0,
            },
        )
        .await
        .unwrap();
    assert_eq!(lines.len(), 2);
    assert_eq!(off, body.len() as u64);
    let (none, same) = store.read_from("t1", off).await.unwrap();
    assert!(none.is_empty());
    assert_eq!(same, off);
    let mut more = format_line(60, LogStream::Stderr, b"l6");
    let l6 = more.len() as u64;
    more.extend_from_slice(b"0.000000070 o partial");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(store.log_path("t1"))
        .unwrap();
    std::io::Write::write_all(&mut f, &more).unwrap();
    let (new, off2) = store.read_from("t1", off).await.unwrap();
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].stream, LogStream::Stderr);
    assert_eq!(off2, off + l6);

    let meta = TaskLogMeta {
        task_id: "t1".into(),
        service_name: "web".into(),
        slot: 2,
        ..Default::default()
    };
    store.write_meta(&meta).await.unwrap();
    assert_eq!(store.read_meta("t1").await, meta);
    assert_eq!(store.read_meta("nope").await.task_id, "nope");
}

#[tokio::test]
async fn writer_appends_timestamped_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let w = LogWriter::open(&path).await.unwrap();
    w.attach(LogStream::Stdout, &b"one\ntwo\n"[..]);
    w.attach(LogStream::Stderr, &b"err"[..]);
    w.finish().await;
    let body = std::fs::read(&path).unwrap();
    let (lines, _) = parse_lines(&body);
    assert_eq!(lines.len(), 3);
    let outs: Vec<_> = lines
        .iter()
        .filter(|l| l.stream == LogStream::Stdout)
        .map(|l| l.data.clone())
        .collect();
    assert_eq!(outs, [b"one".to_vec(), b"two".to_vec()]);
    assert!(lines
        .iter()
        .all(|l| l.timestamp_ns > 1_600_000_000_000_000_000));
}

#[tokio::test]
async fn task_log_directories_and_files_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::new(dir.path());
    let meta = TaskLogMeta {
        task_id: "t1".into(),
        ..Default::default()
    };
    store.write_meta(&meta).await.unwrap();
    // An existing log file from before keeps its lines but loses its mode.
    std::fs::write(store.log_path("t1"), b"").unwrap();
    std::fs::set_permissions(store.log_path("t1"), std::fs::Permissions::from_mode(0o644)).unwrap();
    LogWriter::open(&store.log_path("t1"))
        .await
        .unwrap()
        .finish()
        .await;
    assert_eq!(mode(&store.task_dir("t1")), 0o700);
    assert_eq!(mode(&dir.path().join("tasks")), 0o700);
    assert_eq!(mode(&store.task_dir("t1").join("meta.json")), 0o600);
    assert_eq!(mode(&store.log_path("t1")), 0o600);
}

// === property tests ===

fn any_stream() -> impl proptest::strategy::Strategy<Value = LogStream> {
    proptest::prop_oneof![
        proptest::strategy::Just(LogStream::Stdout),
        proptest::strategy::Just(LogStream::Stderr),
    ]
}

proptest::proptest! {
    /// Whatever a log file holds (a torn write, another program's bytes),
    /// reading it never panics and never consumes more than it was given.
    #[test]
    fn any_bytes_parse_without_panic(buf in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
        let (lines, used) = parse_lines(&buf);
        proptest::prop_assert!(used <= buf.len());
        proptest::prop_assert!(lines.len() <= buf.iter().filter(|&&b| b == b'\n').count());
        let _ = parse_line(&buf);
    }

    /// Lines written by `format_line` read back as they were, in order.
    #[test]
    fn written_lines_read_back(
        lines in proptest::collection::vec(
            (proptest::prelude::any::<i64>(), any_stream(), "[^\n]{0,40}"),
            0..8,
        ),
        partial in "[^\n]{0,10}",
    ) {
        let mut buf = Vec::new();
        for (ts, stream, data) in &lines {
            buf.extend(format_line(*ts, *stream, data.as_bytes()));
        }
        let whole = buf.len();
        buf.extend_from_slice(partial.as_bytes());
        let (parsed, used) = parse_lines(&buf);
        proptest::prop_assert_eq!(used, whole);
        let want: Vec<LogLine> = lines
            .into_iter()
            .map(|(timestamp_ns, stream, data)| LogLine { timestamp_ns, stream, data: data.into_bytes() })
            .collect();
        proptest::prop_assert_eq!(parsed, want);
    }
}

#[test]
fn timestamps_keep_their_nanoseconds_and_old_millisecond_lines_still_read() {
    let at = |raw: &[u8]| parse_line(raw).map(|l| l.timestamp_ns);
    assert_eq!(
        at(b"1700000000.000000001 o x"),
        Some(1_700_000_000_000_000_001)
    );
    assert_eq!(at(b"1700000000123 o x"), Some(1_700_000_000_123_000_000));
    assert_eq!(at(b"-1.999999999 o x"), Some(-1));
    assert_eq!(at(b"1.5 o x"), None, "nine digits of nanoseconds");
    assert_eq!(at(b"1.-00000001 o x"), None);
    assert_eq!(at(b"99999999999999999.000000000 o x"), None, "out of range");
}
