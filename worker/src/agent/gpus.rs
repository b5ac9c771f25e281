//! Which running attempt holds which GPU. The agent owns one [`GpuPool`] of the device indices
//! it offered; an attempt asking for `resources.gpus = n` takes `n` free ones (lowest first) as
//! a [`GpuLease`] and gives them back when the lease drops, however the attempt ends. A GPU is
//! never in two leases at once. When too few are free (the engine should have prevented it),
//! taking fails with a reason and the attempt fails rather than sharing a device.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// The free GPUs of this worker.
#[derive(Debug, Default)]
pub(crate) struct GpuPool {
    free: Mutex<BTreeSet<u32>>,
    total: usize,
}

impl GpuPool {
    pub fn new(indices: impl IntoIterator<Item = u32>) -> Arc<GpuPool> {
        let free: BTreeSet<u32> = indices.into_iter().collect();
        Arc::new(GpuPool { total: free.len(), free: Mutex::new(free) })
    }

    /// `n` free GPUs, held until the lease drops; none taken when `n` is 0.
    pub fn take(self: &Arc<Self>, n: u32) -> Result<GpuLease, String> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        let n = n as usize;
        if n > free.len() {
            return Err(format!(
                "the step asks for {n} GPUs and this worker has {} free of {}: not sharing a GPU between steps",
                free.len(),
                self.total
            ));
        }
        let indices: Vec<u32> = free.iter().take(n).copied().collect();
        for i in &indices {
            free.remove(i);
        }
        Ok(GpuLease { pool: self.clone(), indices })
    }

    /// Exactly the GPUs `indices` (a resumed container's, which has them already); fails when
    /// one is not this worker's or not free.
    pub fn take_exact(self: &Arc<Self>, indices: &[u32]) -> Result<GpuLease, String> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = indices.iter().find(|i| !free.contains(i)) {
            return Err(format!("GPU {i} is not free on this worker"));
        }
        for i in indices {
            free.remove(i);
        }
        Ok(GpuLease { pool: self.clone(), indices: indices.to_vec() })
    }
}

/// GPUs held by one attempt; returned to the pool on drop.
#[derive(Debug)]
pub(crate) struct GpuLease {
    pool: Arc<GpuPool>,
    indices: Vec<u32>,
}

impl GpuLease {
    pub fn indices(&self) -> &[u32] {
        &self.indices
    }
}

impl Drop for GpuLease {
    fn drop(&mut self) {
        let mut free = self.pool.free.lock().unwrap_or_else(|p| p.into_inner());
        free.extend(self.indices.drain(..));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpus_go_to_one_attempt_at_a_time_and_come_back() {
        let pool = GpuPool::new([3, 1, 0]);
        let a = pool.take(2).unwrap();
        assert_eq!(a.indices(), [0, 1]);
        let none = pool.take(0).unwrap();
        assert!(none.indices().is_empty());
        let err = pool.take(2).unwrap_err();
        assert!(err.contains("asks for 2 GPUs and this worker has 1 free of 3"), "{err}");
        let b = pool.take(1).unwrap();
        assert_eq!(b.indices(), [3]);
        drop(a);
        assert_eq!(pool.take(2).unwrap().indices(), [0, 1]);
        drop(b);
        assert_eq!(pool.take(3).unwrap().indices(), [0, 1, 3]);
        assert!(GpuPool::new([]).take(1).is_err());
    }
}
