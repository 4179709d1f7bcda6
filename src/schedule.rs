//! When to take the next sample.
//!
//! Deadlines are computed from the start, never from the previous sample, so slow samples
//! do not make the run drift or last longer than asked. Each deadline falls at a random
//! point of its own slot (`start + (k + u) × period`, `u` uniform in [0, 1)): the mean rate
//! is exact, and a program whose work repeats at the sampling period is not sampled at the
//! same phase every time (which would show one part of its cycle and hide the rest).

use std::time::{Duration, Instant};

/// Longest single sleep, so that a stop request is noticed promptly even at low rates.
const MAX_SLEEP: Duration = Duration::from_millis(20);

/// What [`Schedule::wait`] ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Time for a sample; it stands for `ticks` slots of the schedule (more than one when
    /// the sampler fell behind and slots were skipped).
    Sample {
        /// Slots this sample stands for.
        ticks: u64,
    },
    /// The duration is over.
    Finished,
    /// The stop condition became true.
    Stopped,
}

/// A deadline schedule with per-slot jitter.
#[derive(Debug)]
pub struct Schedule {
    start: Instant,
    period: Duration,
    end: Option<Instant>,
    /// The next slot to sample.
    slot: u64,
    /// The slot of the previous sample.
    last_slot: Option<u64>,
    next_deadline: Instant,
    rng: u64,
    late: u64,
    skipped: u64,
}

impl Schedule {
    /// A schedule of `rate` samples per second from now, for `duration` if given.
    pub fn new(rate: f64, duration: Option<Duration>) -> Self {
        let start = Instant::now();
        let seed = start.elapsed().subsec_nanos() as u64 ^ u64::from(std::process::id());
        let mut schedule = Schedule {
            start,
            period: Duration::from_secs_f64(1.0 / rate),
            end: duration.map(|d| start + d),
            slot: 0,
            last_slot: None,
            next_deadline: start,
            // xorshift must not start at zero.
            rng: (seed ^ 0x9e37_79b9_7f4a_7c15) | 1,
            late: 0,
            skipped: 0,
        };
        schedule.next_deadline = schedule.deadline(0);
        schedule
    }

    /// When sampling started.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// The asked interval between samples.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Samples taken more than one period after their deadline.
    pub fn late(&self) -> u64 {
        self.late
    }

    /// Slots skipped because the sampler was still busy with an earlier one.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    fn random_unit(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    fn deadline(&mut self, slot: u64) -> Instant {
        let at = (slot as f64 + self.random_unit()) * self.period.as_secs_f64();
        self.start + Duration::from_secs_f64(at)
    }

    /// Sleeps until the next deadline, the end of the duration, or until `stop()` says so
    /// (checked at least every 20 ms).
    pub fn wait(&mut self, mut stop: impl FnMut() -> bool) -> Wake {
        loop {
            if stop() {
                return Wake::Stopped;
            }
            let now = Instant::now();
            if self.end.is_some_and(|end| now >= end) {
                return Wake::Finished;
            }
            if now >= self.next_deadline {
                break;
            }
            let mut until = self.next_deadline;
            if let Some(end) = self.end {
                until = until.min(end);
            }
            // Held threads' signals and exits are handled while we sleep.
            crate::process::sleep((until - now).min(MAX_SLEEP));
        }
        let now = Instant::now();
        if now - self.next_deadline > self.period {
            self.late += 1;
        }
        let ticks = match self.last_slot {
            Some(last) => self.slot - last,
            None => 1,
        };
        self.last_slot = Some(self.slot);
        // The next slot is the following one, or the one we are in now if that is later:
        // slots that passed entirely while this sample was late are skipped, not made up
        // for with a burst. (If the next deadline already passed within the current slot,
        // the sample is taken at once, and is not late.)
        let current = ((now - self.start).as_secs_f64() / self.period.as_secs_f64()) as u64;
        let next = (self.slot + 1).max(current);
        self.skipped += next - self.slot - 1;
        self.slot = next;
        self.next_deadline = self.deadline(next);
        Wake::Sample { ticks }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_fall_in_their_slots() {
        let mut s = Schedule::new(1000.0, None);
        for slot in 0..10_000u64 {
            let d = s.deadline(slot) - s.start;
            let period = s.period.as_secs_f64();
            assert!(d.as_secs_f64() >= slot as f64 * period - 1e-9);
            assert!(d.as_secs_f64() < (slot + 1) as f64 * period + 1e-9);
        }
    }

    #[test]
    fn a_slow_sampler_skips_slots_instead_of_bursting() {
        let mut s = Schedule::new(1000.0, Some(Duration::from_millis(300)));
        let mut samples = 0;
        let mut ticks = 0;
        loop {
            match s.wait(|| false) {
                Wake::Sample { ticks: t } => {
                    samples += 1;
                    ticks += t;
                    // Every sample takes five periods.
                    std::thread::sleep(Duration::from_millis(5));
                }
                Wake::Finished => break,
                Wake::Stopped => unreachable!(),
            }
        }
        // However slow the machine, no more samples than fit, and the ticks account for
        // the duration, skipped slots included.
        assert!(samples <= 61, "{samples} samples");
        assert!((200..=301).contains(&ticks), "{ticks} ticks");
        // Slots skipped after the last sample belong to no sample.
        assert!(s.skipped() >= ticks - samples, "{} skipped", s.skipped());
        assert!(
            s.skipped() <= ticks - samples + 10,
            "{} skipped",
            s.skipped()
        );
    }

    #[test]
    fn stop_is_noticed_promptly() {
        let mut s = Schedule::new(0.5, None);
        let t = Instant::now();
        assert_eq!(
            s.wait(|| t.elapsed() > Duration::from_millis(30)),
            Wake::Stopped
        );
        // The period is two seconds; the stop is seen long before.
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
