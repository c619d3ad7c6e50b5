//! The one retry policy: a delay that doubles from `min` up to `max` with every failure, back
//! to `min` on success, each delay jittered so that many rooms, pictures or links failing
//! together do not all retry in the same instant.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Delays between the attempts of one thing that fails and retries.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    /// The base of the next delay.
    next: Duration,
}

impl Backoff {
    /// Starts at `min`; never beyond `max` (a `max` below `min` is `min`).
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            next: min,
        }
    }

    /// After a failure: the delay before the next attempt (the current base, jittered), and
    /// the base doubles for the failure after.
    pub fn next_delay(&mut self) -> Duration {
        let delay = jittered(self.next);
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }

    /// After a success: the next failure waits `min` again.
    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// The base of the next delay (for logs).
    pub fn current(&self) -> Duration {
        self.next
    }
}

/// `base` give or take a quarter, uniformly.
pub fn jittered(base: Duration) -> Duration {
    let quarter = base / 4;
    let span = (quarter * 2).as_nanos() as u64;
    if span == 0 {
        return base;
    }
    // A random number without a dependency: std's hasher keys are drawn from the OS's
    // randomness (and differ on every call). Jitter needs no more than that.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    base - quarter + Duration::from_nanos(random % span)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(100), ms(450));
        let bases: Vec<Duration> = (0..5)
            .map(|_| {
                let base = backoff.current();
                let delay = backoff.next_delay();
                assert!(
                    delay >= base * 3 / 4 && delay <= base * 5 / 4,
                    "{delay:?} for {base:?}"
                );
                base
            })
            .collect();
        assert_eq!(bases, [ms(100), ms(200), ms(400), ms(450), ms(450)]);
        backoff.reset();
        assert_eq!(backoff.current(), ms(100));
        assert_eq!(jittered(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn jitter_spreads() {
        let base = Duration::from_secs(1);
        let delays: std::collections::HashSet<Duration> = (0..50).map(|_| jittered(base)).collect();
        assert!(delays.len() > 40, "jitter does not spread: {delays:?}");
    }
}
