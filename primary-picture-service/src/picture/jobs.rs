//! How the actor waits without going deaf: for a scheduler slot ([`Actor::permit`]), for CPU
//! work off the async threads ([`Actor::blocking`]) and for a job on the raster
//! ([`Actor::with_raster`]), all through [`Actor::while_handling`], which takes messages in
//! while it waits (so batches are acknowledged and snapshot requests queued while a long job
//! runs).
//!
//! Touches the mailbox, and the raster only to lend it to a job and put it back (or to lose the
//! picture when the job panicked and took the raster with it).

use std::future::Future;

use protocol::Raster;

use super::{Actor, Mailbox};
use crate::scheduler::{Permit, Priority};

impl Actor {
    /// Waits for `fut`, handling messages meanwhile. Biased towards `fut`: once it is ready,
    /// no further message is taken in before its output is returned.
    pub(super) async fn while_handling<F: Future>(
        &mut self,
        mailbox: &mut Mailbox,
        fut: F,
    ) -> F::Output {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                biased;
                output = &mut fut => return output,
                Some(msg) = mailbox.recv() => self.on_msg(msg),
            }
        }
    }

    /// Acquires a scheduler slot, handling messages while waiting for it.
    pub(super) async fn permit(&mut self, priority: Priority, mailbox: &mut Mailbox) -> Permit {
        let scheduler = self.shared.scheduler.clone();
        self.while_handling(mailbox, scheduler.acquire(priority))
            .await
    }

    /// Runs CPU work off the async threads, handling messages meanwhile (so batches are
    /// acknowledged and snapshot requests queued while a long job runs).
    pub(super) async fn blocking<T: Send + 'static>(
        &mut self,
        mailbox: &mut Mailbox,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, tokio::task::JoinError> {
        let handle = tokio::task::spawn_blocking(work);
        self.while_handling(mailbox, handle).await
    }

    /// Runs `work` on the raster in `spawn_blocking` (messages are handled meanwhile) and puts
    /// the raster back. `None` when there is no raster, or when `work` panicked: the raster
    /// went with it, so the picture is dropped from memory (`lose`; storage and the broadcast
    /// service's log still have everything).
    pub(super) async fn with_raster<T: Send + 'static>(
        &mut self,
        mailbox: &mut Mailbox,
        what: &str,
        work: impl FnOnce(&mut Raster) -> T + Send + 'static,
    ) -> Option<T> {
        let mut raster = self.picture.loaded_mut()?.raster.take()?;
        let result = self
            .blocking(mailbox, move || {
                let out = work(&mut raster);
                (raster, out)
            })
            .await;
        match result {
            Ok((raster, out)) => {
                // Messages handled meanwhile never change the state: the picture is still
                // loaded, waiting for its raster.
                if let Some(loaded) = self.picture.loaded_mut() {
                    loaded.raster = Some(raster);
                }
                Some(out)
            }
            Err(error) => {
                tracing::error!(picture = %self.id, %error, "{what} failed; dropping the picture from memory");
                self.lose(&format!("{what} failed"));
                None
            }
        }
    }
}
