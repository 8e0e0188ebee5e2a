//! A bound on long-lived answers (log follows, event streams): each holds a slot for as long as
//! it is open, per caller and in all, so no caller can tie up the server with thousands of them.
//! A caller is its bearer token (by digest), or "anyone" on an open server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

/// Open streams one caller may hold.
pub const MAX_STREAMS_PER_CALLER: usize = 32;
/// Open streams the server holds in all.
pub const MAX_STREAMS: usize = 256;

#[derive(Clone, Default)]
pub struct StreamSlots {
    open: Arc<Mutex<Counts>>,
}

#[derive(Default)]
struct Counts {
    per_caller: HashMap<[u8; 32], usize>,
    total: usize,
}

/// An open stream's slot, given back when dropped (when the answer's body ends or is dropped).
pub struct StreamSlot {
    open: Arc<Mutex<Counts>>,
    caller: [u8; 32],
}

/// Why no slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSlot {
    CallerFull,
    ServerFull,
}

impl StreamSlots {
    /// A slot for the caller presenting `authorization` (the header's value, if any).
    pub fn take(&self, authorization: Option<&str>) -> Result<StreamSlot, NoSlot> {
        let caller: [u8; 32] = Sha256::digest(authorization.unwrap_or_default().as_bytes()).into();
        let mut counts = self
            .open
            .lock()
            .expect("the slot counts are never poisoned");
        if counts.total >= MAX_STREAMS {
            return Err(NoSlot::ServerFull);
        }
        let held = counts.per_caller.entry(caller).or_default();
        if *held >= MAX_STREAMS_PER_CALLER {
            return Err(NoSlot::CallerFull);
        }
        *held += 1;
        counts.total += 1;
        Ok(StreamSlot {
            open: Arc::clone(&self.open),
            caller,
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut counts = self
            .open
            .lock()
            .expect("the slot counts are never poisoned");
        counts.total -= 1;
        if let Some(held) = counts.per_caller.get_mut(&self.caller) {
            *held -= 1;
            if *held == 0 {
                counts.per_caller.remove(&self.caller);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_per_caller_and_in_all_and_come_back() {
        let slots = StreamSlots::default();
        let mine: Vec<StreamSlot> = (0..MAX_STREAMS_PER_CALLER)
            .map(|_| slots.take(Some("Bearer a")).unwrap())
            .collect();
        assert_eq!(slots.take(Some("Bearer a")).err(), Some(NoSlot::CallerFull));
        assert!(slots.take(Some("Bearer b")).is_ok());
        drop(mine);
        assert!(slots.take(Some("Bearer a")).is_ok());
        let many: Vec<StreamSlot> = (0..MAX_STREAMS)
            .map(|n| slots.take(Some(&format!("Bearer {}", n % 16))).unwrap())
            .collect();
        assert_eq!(slots.take(Some("Bearer z")).err(), Some(NoSlot::ServerFull));
        drop(many);
        assert!(slots.take(None).is_ok());
    }
}
