//! The step queue: at most `limit` holders at once, the lowest priority value (the oldest target
//! snapshot) first, FIFO among equals.

use std::collections::BTreeSet;
use std::sync::Mutex;

use tokio::sync::Notify;

pub(crate) struct StepQueue {
    limit: usize,
    state: Mutex<State>,
    notify: Notify,
}

#[derive(Default)]
struct State {
    running: usize,
    waiting: BTreeSet<(i64, u64)>,
    seq: u64,
}

/// A slot in the queue; dropping it frees the slot.
pub(crate) struct Slot<'a> {
    queue: &'a StepQueue,
}

/// Removes an abandoned waiter (its future was dropped) from the queue.
struct Waiter<'a> {
    queue: &'a StepQueue,
    key: (i64, u64),
    done: bool,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.queue.lock().waiting.remove(&self.key);
            self.queue.notify.notify_waiters();
        }
    }
}

impl StepQueue {
    pub(crate) fn new(limit: usize) -> Self {
        StepQueue {
            limit,
            state: Mutex::new(State::default()),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) async fn acquire(&self, priority: i64) -> Slot<'_> {
        let key = {
            let mut s = self.lock();
            s.seq += 1;
            let k = (priority, s.seq);
            s.waiting.insert(k);
            k
        };
        let mut waiter = Waiter {
            queue: self,
            key,
            done: false,
        };
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                if s.running < self.limit && s.waiting.first() == Some(&key) {
                    s.waiting.remove(&key);
                    s.running += 1;
                    waiter.done = true;
                    drop(s);
                    // Others may fit too (limit > 1): let them check.
                    self.notify.notify_waiters();
                    return Slot { queue: self };
                }
            }
            notified.await;
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.queue.lock().running -= 1;
        self.queue.notify.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn oldest_first_and_bounded() {
        let q = Arc::new(StepQueue::new(1));
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = q.acquire(0).await;
        let mut handles = Vec::new();
        for prio in [30i64, 10, 20] {
            let q = q.clone();
            let order = order.clone();
            handles.push(tokio::spawn(async move {
                let _s = q.acquire(prio).await;
                order.lock().unwrap().push(prio);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }));
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        drop(first);
        for h in handles {
            h.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![10, 20, 30]);
    }

    #[tokio::test]
    async fn dropped_waiter_does_not_block_others() {
        let q = StepQueue::new(1);
        let held = q.acquire(0).await;
        {
            let fut = q.acquire(1);
            tokio::pin!(fut);
            assert!(futures::poll!(fut.as_mut()).is_pending());
        }
        drop(held);
        let _again = tokio::time::timeout(std::time::Duration::from_secs(1), q.acquire(5))
            .await
            .expect("queue free again");
    }
}
