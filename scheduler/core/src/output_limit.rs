//! The bound on what one attempt's output may take in the database, as Kubernetes' log rotation
//! bounds a container's log: the first half of the limit (the head) and the last half (the tail)
//! are kept, with a marker between them saying how much was dropped. Pure: the supervisor keeps
//! the counts, the store the bytes.

use std::collections::VecDeque;

/// The server's default limit per attempt (`--max-log-bytes-per-attempt`).
pub const DEFAULT_MAX_LOG_BYTES: u64 = 100 * 1024 * 1024;
/// The smallest limit a definition may set: room for a head, a marker and a tail.
pub const MIN_MAX_LOG_BYTES: u64 = 1024;

/// What an attempt has stored, by the rule above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOutput {
    pub limit: u64,
    /// Bytes in the head.
    pub head: u64,
    /// Whether the marker exists (the head has filled).
    pub marked: bool,
    /// The tail's chunks, oldest first: (their key in the store, their length).
    pub tail: VecDeque<(i64, u64)>,
    /// Bytes dropped between head and tail so far.
    pub dropped: u64,
}

/// How a flush of new output is stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutputPlan {
    /// Of each new chunk (in order): how many of its first bytes go to the head.
    pub to_head: Vec<usize>,
    /// Of each new chunk: the byte range (start, end) that goes to the tail, if any.
    pub to_tail: Vec<Option<(usize, usize)>>,
    /// Whether the marker is to be written now (the head has just filled).
    pub add_marker: bool,
    /// Keys of stored tail chunks to delete, oldest first.
    pub drop_stored: Vec<i64>,
}

impl StoredOutput {
    pub fn new(limit: u64) -> StoredOutput {
        StoredOutput {
            limit: limit.max(MIN_MAX_LOG_BYTES),
            head: 0,
            marked: false,
            tail: VecDeque::new(),
            dropped: 0,
        }
    }

    pub fn head_limit(&self) -> u64 {
        self.limit / 2
    }

    pub fn tail_limit(&self) -> u64 {
        self.limit - self.head_limit()
    }

    fn tail_bytes(&self) -> u64 {
        self.tail.iter().map(|(_, len)| len).sum()
    }

    /// Plans storing new chunks of these lengths, and counts what the plan drops. The caller
    /// stores the plan, then records the new tail chunks' keys with `tail_stored`.
    pub fn plan(&mut self, lengths: &[usize]) -> OutputPlan {
        let mut plan = OutputPlan::default();
        // What the new tail chunks will hold, before trimming: (index, start, end).
        let mut new_tail: Vec<(usize, usize, usize)> = Vec::new();
        for (index, &len) in lengths.iter().enumerate() {
            let room = self.head_limit().saturating_sub(self.head) as usize;
            let head_part = if self.marked { 0 } else { room.min(len) };
            self.head += head_part as u64;
            plan.to_head.push(head_part);
            if head_part < len {
                if !self.marked {
                    self.marked = true;
                    plan.add_marker = true;
                }
                new_tail.push((index, head_part, len));
            }
        }
        // Trim from the oldest: stored tail chunks first, then the new ones' fronts.
        let limit = self.tail_limit();
        let new_bytes: u64 = new_tail.iter().map(|(_, s, e)| (e - s) as u64).sum();
        let mut excess = (self.tail_bytes() + new_bytes).saturating_sub(limit);
        while excess > 0 {
            let Some(&(key, len)) = self.tail.front() else {
                break;
            };
            self.tail.pop_front();
            plan.drop_stored.push(key);
            self.dropped += len;
            excess = excess.saturating_sub(len);
        }
        plan.to_tail = vec![None; lengths.len()];
        for (index, start, end) in new_tail {
            let cut = (excess as usize).min(end - start);
            excess -= cut as u64;
            self.dropped += cut as u64;
            if start + cut < end {
                plan.to_tail[index] = Some((start + cut, end));
            }
        }
        plan
    }

    /// Records a tail chunk the store now holds under `key`.
    pub fn tail_stored(&mut self, key: i64, len: u64) {
        self.tail.push_back((key, len));
    }

    /// The marker's text for what has been dropped so far.
    pub fn marker(&self) -> String {
        format!(
            "\n[batchctl: {} bytes of output dropped here; an attempt keeps its first {} and last {} bytes (maxLogBytesPerAttempt {})]\n",
            self.dropped,
            self.head_limit(),
            self.tail_limit(),
            self.limit
        )
    }
}

/// Parses a size in bytes: a whole number, optionally followed by `K`, `M` or `G` (or `KiB`,
/// `MiB`, `GiB`; powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits.parse().map_err(|_| {
        format!("{text:?} is not a size; write a whole number of bytes, or with K, M or G (100M)")
    })?;
    let factor: u64 = match unit.trim() {
        "" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "{text:?} has the unit {other:?}; use K, M or G (powers of 1024), such as 100M"
            ))
        }
    };
    let bytes = number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))?;
    if bytes < MIN_MAX_LOG_BYTES {
        return Err(format!(
            "{text:?} is below {MIN_MAX_LOG_BYTES} bytes, too little for the start and the end of the output"
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(parse_size("100M"), Ok(100 << 20));
        assert_eq!(parse_size("100MiB"), Ok(100 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert!(parse_size("10").unwrap_err().contains("below 1024"));
        assert!(parse_size("5MB").unwrap_err().contains("use K, M or G"));
    }

    #[test]
    fn output_under_the_head_limit_is_all_kept() {
        let mut stored = StoredOutput::new(2048);
        let plan = stored.plan(&[100, 200]);
        assert_eq!(plan.to_head, [100, 200]);
        assert_eq!(plan.to_tail, [None, None]);
        assert!(!plan.add_marker);
        assert_eq!(stored.head, 300);
    }

    #[test]
    fn the_head_fills_then_the_tail_keeps_the_newest_bytes() {
        let mut stored = StoredOutput::new(2048);
        // 1,500 bytes: 1,024 to the head, the marker, 476 to the tail.
        let plan = stored.plan(&[1500]);
        assert_eq!(plan.to_head, [1024]);
        assert_eq!(plan.to_tail, [Some((1024, 1500))]);
        assert!(plan.add_marker);
        stored.tail_stored(7, 476);
        // 1,000 more: the tail is 1,024 at most, so 452 of the oldest go.
        let plan = stored.plan(&[1000]);
        assert_eq!(plan.to_head, [0]);
        assert!(!plan.add_marker);
        assert_eq!(plan.drop_stored, [7], "the stored chunk goes whole");
        assert_eq!(plan.to_tail, [Some((0, 1000))]);
        assert_eq!(stored.dropped, 476);
        stored.tail_stored(8, 1000);
        // A chunk larger than the tail keeps only its end.
        let plan = stored.plan(&[5000]);
        assert_eq!(plan.drop_stored, [8]);
        assert_eq!(plan.to_tail, [Some((5000 - 1024, 5000))]);
        assert_eq!(stored.dropped, 476 + 1000 + (5000 - 1024));
        assert!(stored
            .marker()
            .contains("5452 bytes of output dropped here"));
        // Never more than the limit kept.
        stored.tail_stored(9, 1024);
        assert_eq!(stored.head + stored.tail_bytes(), 2048);
    }

    #[test]
    fn a_limit_below_the_minimum_is_raised() {
        assert_eq!(StoredOutput::new(10).limit, MIN_MAX_LOG_BYTES);
    }
}
