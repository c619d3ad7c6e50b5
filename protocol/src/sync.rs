//! Locking a std [`Mutex`] whose state survives a panic.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, also when a thread panicked while holding it (the lock is then "poisoned").
///
/// Only for state whose every change under the lock is one step that cannot stop half-way (a
/// push, a map insert or remove, a counter): a panic elsewhere cannot have left such state
/// inconsistent, so it stays usable instead of taking every later caller down with it. Each
/// caller says in a comment why its state qualifies.
pub fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
