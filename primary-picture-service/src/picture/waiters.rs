//! [`Waiters`]: requests parked until the picture gets somewhere (loaded, a seq applied, a seq
//! in storage), each with the channel its answer goes to, and the one way they are answered:
//! take the ones a condition selects, in arrival order, and reply to each.
//!
//! Touches nothing but its own list: the conditions and the answers are the caller's.

use protocol::pps::PpsError;

use super::Reply;

/// Requests waiting for something (`W` says what), each answered with a `T` or an error.
pub(super) struct Waiters<W, T> {
    /// In arrival order, which is the order the replies go out in.
    waiting: Vec<(W, Reply<T>)>,
}

impl<W, T> Default for Waiters<W, T> {
    fn default() -> Self {
        Self {
            waiting: Vec::new(),
        }
    }
}

impl<W, T> Waiters<W, T> {
    pub(super) fn push(&mut self, waiter: W, reply: Reply<T>) {
        self.waiting.push((waiter, reply));
    }

    pub(super) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.waiting.len()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &W> {
        self.waiting.iter().map(|(waiter, _)| waiter)
    }

    /// Removes every waiter, to be answered by the caller, in arrival order.
    pub(super) fn take_all(&mut self) -> impl Iterator<Item = (W, Reply<T>)> {
        std::mem::take(&mut self.waiting).into_iter()
    }

    /// Removes the waiters `ready` selects and sends each the answer `answer` makes for it, in
    /// arrival order. A requester that has gone away is skipped silently.
    pub(super) fn reply_where(
        &mut self,
        mut ready: impl FnMut(&W) -> bool,
        mut answer: impl FnMut(W) -> Result<T, PpsError>,
    ) {
        for (waiter, reply) in self.waiting.extract_if(.., |(waiter, _)| ready(waiter)) {
            let _ = reply.send(answer(waiter));
        }
    }

    /// Removes every waiter and sends each the answer `answer` makes for it, in arrival order.
    pub(super) fn reply_all(&mut self, answer: impl FnMut(W) -> Result<T, PpsError>) {
        self.reply_where(|_| true, answer);
    }
}
