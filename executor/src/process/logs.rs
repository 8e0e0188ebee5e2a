//! An attempt's output, read from `output.log` from an offset and followed while its shim lives.

use super::*;

/// How often a follower of a running attempt's output looks for more.
pub(super) const LOG_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Reads `output.log` from an offset, following it while the shim lives.
pub(super) struct OutputFollower {
    pub(super) dir: AttemptDir,
    /// The end of the shim, when this executor started it: the follower then looks once more at
    /// once rather than at its next poll.
    pub(super) exit: Option<watch::Receiver<bool>>,
    pub(super) offset: u64,
    pub(super) buffer: Vec<u8>,
    pub(super) pending: std::collections::VecDeque<LogChunk>,
    pub(super) finished: bool,
}

impl OutputFollower {
    pub(super) async fn next(&mut self) -> Option<Result<LogChunk, ExecutorError>> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Some(Ok(chunk));
            }
            if self.finished {
                return None;
            }
            // Decide whether the attempt is over *before* reading, so that a final read after the
            // shim is gone sees everything it wrote.
            let over = match shim_alive(&self.dir) {
                Ok(alive) => !alive,
                Err(ExecutorError::UnknownAttempt { .. }) => true,
                Err(error) => return Some(Err(error)),
            };
            match self.read_available() {
                Ok(0) if over => self.finished = true,
                Ok(0) => self.pause().await,
                Ok(_) => {}
                Err(error) => return Some(Err(error)),
            }
        }
    }

    /// Until the next look: the poll interval, or less if the shim exits first.
    async fn pause(&mut self) {
        match &mut self.exit {
            Some(exit) => {
                let gone = tokio::time::timeout(LOG_POLL_INTERVAL, exit.wait_for(|exited| *exited))
                    .await
                    .is_ok_and(|result| result.is_err());
                if gone {
                    // The watching task is gone without a word: poll from now on.
                    self.exit = None;
                }
            }
            None => tokio::time::sleep(LOG_POLL_INTERVAL).await,
        }
    }

    /// Reads what is in the file past the offset and decodes every whole record into `pending`.
    fn read_available(&mut self) -> Result<usize, ExecutorError> {
        let path = self.dir.output();
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(error) => return Err(io_error(&path, error)),
        };
        let read_from = self.offset + self.buffer.len() as u64;
        file.seek(SeekFrom::Start(read_from))
            .map_err(|error| io_error(&path, error))?;
        let n = file
            .take(4 * Frame::MAX_DATA_LEN as u64)
            .read_to_end(&mut self.buffer)
            .map_err(|error| io_error(&path, error))?;
        let mut consumed = 0;
        while let Some((stream, data)) =
            Frame::decode(&self.buffer[consumed..]).map_err(|r| ExecutorError::CorruptRecord {
                path: path.display().to_string(),
                reason: r,
            })?
        {
            consumed += Frame::HEADER_LEN + data.len();
            self.pending.push_back(LogChunk {
                stream,
                data: Bytes::copy_from_slice(data),
                next: LogCursor(self.offset + consumed as u64),
            });
        }
        self.buffer.drain(..consumed);
        self.offset += consumed as u64;
        Ok(n)
    }
}
