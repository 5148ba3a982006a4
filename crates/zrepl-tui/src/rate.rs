//! Transfer rates from successive status samples (the daemon reports byte counts; the rate is
//! what the client saw them move, as in zrepl's client).

use std::collections::{BTreeMap, VecDeque};

/// How far back the rate looks.
const WINDOW_SECS: f64 = 10.0;

#[derive(Debug, Default, Clone)]
pub struct RateTracker {
    jobs: BTreeMap<String, JobSamples>,
}

#[derive(Debug, Default, Clone)]
struct JobSamples {
    /// Identifies the run the samples belong to (its start time).
    run: String,
    samples: VecDeque<(f64, u64)>,
}

impl RateTracker {
    /// Records `bytes` replicated so far by `job`'s run `run` at time `now` (seconds on any
    /// monotonic clock). A new run or a smaller count restarts the history.
    pub fn record(&mut self, job: &str, run: &str, now: f64, bytes: u64) {
        let js = self.jobs.entry(job.to_string()).or_default();
        if js.run != run || js.samples.back().is_some_and(|&(_, b)| b > bytes) {
            js.run = run.to_string();
            js.samples.clear();
        }
        js.samples.push_back((now, bytes));
        while js
            .samples
            .front()
            .is_some_and(|&(t, _)| now - t > WINDOW_SECS)
            && js.samples.len() > 2
        {
            js.samples.pop_front();
        }
    }

    /// Bytes per second over the window, once two samples at least 0.5 s apart exist.
    pub fn rate(&self, job: &str) -> Option<f64> {
        let s = &self.jobs.get(job)?.samples;
        let (&(t0, b0), &(t1, b1)) = (s.front()?, s.back()?);
        (t1 - t0 >= 0.5).then(|| (b1 - b0) as f64 / (t1 - t0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_over_window_and_reset() {
        let mut r = RateTracker::default();
        r.record("j", "run1", 0.0, 0);
        assert_eq!(r.rate("j"), None, "one sample has no rate");
        r.record("j", "run1", 1.0, 1000);
        r.record("j", "run1", 2.0, 3000);
        assert_eq!(r.rate("j"), Some(1500.0));
        // Old samples fall out of the window.
        r.record("j", "run1", 12.0, 13000);
        assert_eq!(r.rate("j"), Some(1000.0));
        // A new run starts over.
        r.record("j", "run2", 13.0, 10);
        assert_eq!(r.rate("j"), None);
        // A smaller count (a new attempt) starts over too.
        r.record("j", "run2", 14.0, 5000);
        r.record("j", "run2", 15.0, 100);
        assert_eq!(r.rate("j"), None);
        assert_eq!(r.rate("other"), None);
    }
}
