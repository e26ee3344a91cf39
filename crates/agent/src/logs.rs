//! Task logs on disk: one append-only file per task, one line per output line.
//!
//! Format of `data_root/tasks/<task id>/log`: `<secs>.<nanos> <o|e> <line>\n`,
//! the Unix time the line was read at nanosecond precision (`nanos` is nine
//! digits); a timestamp without a dot is Unix milliseconds, as older files
//! hold. Beside it, `meta.json` keeps what a `LogMessage` needs (service, slot), so
//! logs of finished tasks still carry their names.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

// === impl LogStream ===

impl LogStream {
    fn tag(self) -> u8 {
        match self {
            LogStream::Stdout => b'o',
            LogStream::Stderr => b'e',
        }
    }

    /// The name used on the wire ("stdout" | "stderr").
    pub fn name(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

/// One stored line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When the line was read, Unix nanoseconds.
    pub timestamp_ns: i64,
    pub stream: LogStream,
    /// The line without its newline.
    pub data: Vec<u8>,
}

/// Which lines a reader wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogQuery {
    /// Last N lines (after `since_ns`); negative = all.
    pub tail: i64,
    /// Only lines at or after this Unix nanosecond; 0 = from the beginning.
    pub since_ns: i64,
}

/// Task metadata kept beside the log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLogMeta {
    pub task_id: String,
    pub service_id: String,
    pub service_name: String,
    pub slot: u64,
    pub node_id: String,
}

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// The current Unix time in nanoseconds (0 before the epoch; saturates in 2262).
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Encodes one stored line.
pub fn format_line(timestamp_ns: i64, stream: LogStream, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 24);
    let secs = timestamp_ns.div_euclid(NANOS_PER_SEC);
    let nanos = timestamp_ns.rem_euclid(NANOS_PER_SEC);
    out.extend_from_slice(format!("{secs}.{nanos:09}").as_bytes());
    out.push(b' ');
    out.push(stream.tag());
    out.push(b' ');
    out.extend_from_slice(data);
    out.push(b'\n');
    out
}

/// Decodes one stored line (without its newline).
pub fn parse_line(line: &[u8]) -> Option<LogLine> {
    let sp = line.iter().position(|&b| b == b' ')?;
    let timestamp_ns = parse_timestamp(std::str::from_utf8(&line[..sp]).ok()?)?;
    let rest = &line[sp + 1..];
    let stream = match rest.first()? {
        b'o' => LogStream::Stdout,
        b'e' => LogStream::Stderr,
        _ => return None,
    };
    let data = match rest.get(1) {
        Some(b' ') => rest[2..].to_vec(),
        None => Vec::new(),
        _ => return None,
    };
    Some(LogLine {
        timestamp_ns,
        stream,
        data,
    })
}

/// `<secs>.<nanos>` (nine digits) as Unix nanoseconds; a bare integer is
/// Unix milliseconds. `None` when out of range or malformed.
fn parse_timestamp(s: &str) -> Option<i64> {
    let Some((secs, nanos)) = s.split_once('.') else {
        return s.parse::<i64>().ok()?.checked_mul(1_000_000);
    };
    if nanos.len() != 9 || !nanos.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i128 = secs.parse::<i64>().ok()?.into();
    let nanos: i128 = nanos.parse::<i64>().ok()?.into();
    i64::try_from(secs * i128::from(NANOS_PER_SEC) + nanos).ok()
}

/// Parses complete lines from `buf`; returns them and the bytes consumed
/// (a trailing partial line is left for later).
pub fn parse_lines(buf: &[u8]) -> (Vec<LogLine>, usize) {
    let mut lines = Vec::new();
    let mut start = 0;
    while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
        if let Some(l) = parse_line(&buf[start..start + nl]) {
            lines.push(l);
        }
        start += nl + 1;
    }
    (lines, start)
}

/// Applies `since_ns` then `tail`.
pub fn select(lines: Vec<LogLine>, query: LogQuery) -> Vec<LogLine> {
    let mut lines: Vec<_> = if query.since_ns > 0 {
        lines
            .into_iter()
            .filter(|l| l.timestamp_ns >= query.since_ns)
            .collect()
    } else {
        lines
    };
    if query.tail >= 0 {
        let keep = query.tail as usize;
        if lines.len() > keep {
            lines.drain(..lines.len() - keep);
        }
    }
    lines
}

/// Reads task logs under `data_root/tasks`.
#[derive(Debug, Clone)]
pub struct LogStore {
    root: PathBuf,
}

// === impl LogStore ===

impl LogStore {
    pub fn new(data_root: &Path) -> Self {
        Self {
            root: data_root.join("tasks"),
        }
    }

    pub fn task_dir(&self, task_id: &str) -> PathBuf {
        self.root.join(task_id)
    }

    pub fn log_path(&self, task_id: &str) -> PathBuf {
        self.task_dir(task_id).join("log")
    }

    /// The task has logs on this node.
    pub fn has_task(&self, task_id: &str) -> bool {
        valid_id(task_id) && self.task_dir(task_id).is_dir()
    }

    /// Every task with logs on this node.
    pub async fn task_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        let Ok(mut dir) = tokio::fs::read_dir(&self.root).await else {
            return ids;
        };
        while let Ok(Some(entry)) = dir.next_entry().await {
            if let Some(id) = entry.file_name().to_str().filter(|id| valid_id(id)) {
                ids.push(id.to_string());
            }
        }
        ids
    }

    pub async fn write_meta(&self, meta: &TaskLogMeta) -> io::Result<()> {
        let dir = self.task_dir(&meta.task_id);
        create_private_dir(&dir).await?;
        let json = serde_json::to_vec(meta).map_err(io::Error::other)?;
        let mut file = open_private(
            dir.join("meta.json"),
            tokio::fs::OpenOptions::new().write(true).truncate(true),
        )
        .await?;
        file.write_all(&json).await?;
        file.flush().await
    }

    pub async fn read_meta(&self, task_id: &str) -> TaskLogMeta {
        let path = self.task_dir(task_id).join("meta.json");
        tokio::fs::read(path)
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| TaskLogMeta {
                task_id: task_id.to_string(),
                ..Default::default()
            })
    }

    /// Lines matching `query`, and the file offset to follow from.
    pub async fn read(&self, task_id: &str, query: LogQuery) -> io::Result<(Vec<LogLine>, u64)> {
        let buf = match tokio::fs::read(self.log_path(task_id)).await {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let (lines, used) = parse_lines(&buf);
        Ok((select(lines, query), used as u64))
    }

    /// Lines appended after `offset`, and the new offset. Partial lines wait.
    pub async fn read_from(&self, task_id: &str, offset: u64) -> io::Result<(Vec<LogLine>, u64)> {
        let mut file = match tokio::fs::File::open(self.log_path(task_id)).await {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
            Err(e) => return Err(e),
        };
        let len = file.metadata().await?.len();
        if len <= offset {
            return Ok((Vec::new(), offset));
        }
        file.seek(io::SeekFrom::Start(offset)).await?;
        let mut buf = Vec::with_capacity((len - offset) as usize);
        file.take(len - offset).read_to_end(&mut buf).await?;
        let (lines, used) = parse_lines(&buf);
        Ok((lines, offset + used as u64))
    }
}

/// Mode of the task log directories: logs and metadata can hold secrets
/// (services' environment values, whatever a task prints).
const PRIVATE_DIR_MODE: u32 = 0o700;

/// Mode of the task log files, whatever the umask.
const PRIVATE_FILE_MODE: u32 = 0o600;

/// Creates `dir` (and missing parents) readable by its owner only.
pub(crate) async fn create_private_dir(dir: &Path) -> io::Result<()> {
    tokio::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
        .await?;
    tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(PRIVATE_DIR_MODE)).await
}

/// Opens (creating) `path` with `options`, readable by its owner only.
async fn open_private(
    path: impl AsRef<Path>,
    options: &mut tokio::fs::OpenOptions,
) -> io::Result<tokio::fs::File> {
    let file = options
        .create(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)
        .await?;
    file.set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE_MODE))
        .await?;
    Ok(file)
}

/// Task ids are used as directory names: refuse anything path-like.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Appends the output of one task to its log file.
pub(crate) struct LogWriter {
    /// Lines as read: when (Unix ns), from which stream, without the newline.
    tx: mpsc::UnboundedSender<(i64, LogStream, Vec<u8>)>,
    done: tokio::task::JoinHandle<()>,
}

// === impl LogWriter ===

impl LogWriter {
    /// Opens (creates) the log file for appending.
    pub(crate) async fn open(path: &Path) -> io::Result<Self> {
        let mut file = open_private(path, tokio::fs::OpenOptions::new().append(true)).await?;
        let (tx, mut rx) = mpsc::unbounded_channel::<(i64, LogStream, Vec<u8>)>();
        let done = tokio::spawn(async move {
            while let Some((timestamp_ns, stream, data)) = rx.recv().await {
                let line = format_line(timestamp_ns, stream, &data);
                if let Err(e) = file.write_all(&line).await {
                    tracing::warn!(error = %e, "writing task log");
                }
            }
            let _ = file.flush().await;
        });
        Ok(Self { tx, done })
    }

    /// Copies lines from `reader` into the log until it ends, each stamped
    /// with the time it was read.
    pub(crate) fn attach<R: AsyncRead + Unpin + Send + 'static>(
        &self,
        stream: LogStream,
        reader: R,
    ) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(reader);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if buf.last() == Some(&b'\n') {
                            buf.pop();
                        }
                        let line = (now_ns(), stream, std::mem::take(&mut buf));
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }

    /// Waits until every attached stream has ended and its lines are written.
    pub(crate) async fn finish(self) {
        drop(self.tx);
        let _ = self.done.await;
    }
}

#[cfg(test)]
mod tests;
